"""Signed, expiring download URLs for stored documents (the signed file posted to the chat).

The chat platform fetches the file without an account, so the URL itself is the credential:
HMAC over the blob key, the expiry and the file name, compared in constant time. The name is
inside the MAC so nobody can hand out a genuine link that saves as `../../.bashrc` or as a name
with a right-to-left override; it is also cleaned when the link is made and when it is served.

Links made before the name went into the MAC (`sig` over key and expiry only) stay valid until
they expire — they were handed out as valid — but their `name` parameter is not trusted: such a
download is named after the stored document instead.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from signbridge.core.settings import Settings
from signbridge.core.signers import clean_name
from signbridge.core.untrusted import same

MAX_NAME_CHARS = 200
_SIG = re.compile(r"[0-9a-f]{64}")
_UNSAFE_IN_NAMES = re.compile(r'[<>:"|?*]')  # what Windows refuses in a file name


def download_name(name: str, fallback: str = "document.pdf") -> str:
    """A name a browser may save under: the last path segment, no control, invisible or bidi
    characters, no leading dots, at most `MAX_NAME_CHARS` (CJK and other letters kept)."""
    last = re.split(r"[/\\]", clean_name(name))[-1]
    safe = _UNSAFE_IN_NAMES.sub("_", last).strip().lstrip(".").strip()
    return safe[:MAX_NAME_CHARS] or fallback


def _mac(settings: Settings, key: str, expires: int, name: str | None) -> str:
    secret = settings.link_secret.get_secret_value().encode()
    message = f"file:{key}:{expires}" if name is None else f"file-named:{key}:{expires}:{name}"
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def file_url(settings: Settings, key: str, name: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + settings.download_url_ttl.total_seconds())
    name = download_name(name)
    query = urlencode({"expires": expires, "sig": _mac(settings, key, expires, name), "name": name})
    return f"{settings.public_url}/files/{quote(key)}?{query}"


@dataclass(frozen=True)
class GenuineLink:
    """A download link we made and that has not expired. `name`: the (cleaned) name its MAC
    covers; None for a link made before names were signed."""

    name: str | None


def verify_file(settings: Settings, key: str, expires: int, sig: str, name: str | None = None,
                now: float | None = None) -> GenuineLink | None:
    """The link if we made it and it has not expired; None for a forged, altered or expired one."""
    if expires < (now or time.time()) or not _SIG.fullmatch(sig):
        return None
    if name is not None and same(sig, _mac(settings, key, expires, name)):
        return GenuineLink(download_name(name))
    return GenuineLink(None) if same(sig, _mac(settings, key, expires, None)) else None
