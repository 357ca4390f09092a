"""Signed, expiring download URLs for stored documents (the signed file posted to the chat).

The chat platform fetches the file without an account, so the URL itself is the credential:
HMAC over the blob key and expiry, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import quote, urlencode

from signbridge.core.settings import Settings


def _mac(settings: Settings, key: str, expires: int) -> str:
    secret = settings.link_secret.get_secret_value().encode()
    return hmac.new(secret, f"file:{key}:{expires}".encode(), hashlib.sha256).hexdigest()


def file_url(settings: Settings, key: str, name: str, now: float | None = None) -> str:
    expires = int((now or time.time()) + settings.download_url_ttl.total_seconds())
    query = urlencode({"expires": expires, "sig": _mac(settings, key, expires), "name": name})
    return f"{settings.public_url}/files/{quote(key)}?{query}"


def verify_file(settings: Settings, key: str, expires: int, sig: str, now: float | None = None) -> bool:
    if expires < (now or time.time()):
        return False
    return hmac.compare_digest(_mac(settings, key, expires), sig)
