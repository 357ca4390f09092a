"""One-tap signing for the generic webhook IM: the signed `sso` assertion.

The company's chat opens a `sign_url` with `sso=<payload>.<sig>` appended: `payload` is base64url
(padding optional) of JSON `{"sub": "<chat user id>", "exp": <unix seconds>}`, `sig` the hex
HMAC-SHA256 of the payload text under the webhook secret (`SIGNBRIDGE_WEBHOOK_SECRET`). Checked
here: the signature (constant time), `exp` in the future and at most `MAX_LIFETIME` ahead (an
assertion is minted when the link is opened, not in advance), and, when the chat adds it,
`"aud"` — the signing link it vouches for (the `sign_url` as SignBridge sent it). The caller
(`signbridge/intake/sso.py`) checks that `sub` is the link's signer and that the assertion is
used once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re

from signbridge.core.sso import ChatIdentity, SsoRefused
from signbridge.core.untrusted import same

PLATFORM = "webhook"
MAX_LIFETIME = 15 * 60  # seconds: an `exp` further ahead than this is refused
MAX_ASSERTION = 2048
_SIG = re.compile(r"[0-9a-f]{64}")


def _forged(detail: str) -> SsoRefused:
    return SsoRefused("sso_assertion_invalid", "聊天工具的身份凭证无效，请回到聊天中重新打开签署链接",
                      f"The chat's sign-in assertion is not valid ({detail}); "
                      "open the signing link from the chat again")


def assertion_digest(assertion: str) -> str:
    """What is stored to refuse a second use (never the assertion itself)."""
    return hashlib.sha256(assertion.encode()).hexdigest()


def verify(secret: str, assertion: str, now: float, audience: str) -> tuple[ChatIdentity, int]:
    """The chat user the assertion names and its `exp`; `SsoRefused` for anything else."""
    if not assertion or len(assertion) > MAX_ASSERTION or assertion.count(".") != 1:
        raise _forged("malformed")
    payload, sig = assertion.split(".")
    if not _SIG.fullmatch(sig.lower()) or not same(
            sig.lower(), hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()):
        raise _forged("signature")
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error) as e:
        raise _forged("payload") from e
    if not isinstance(claims, dict) or not isinstance(claims.get("sub"), str) or not claims["sub"] \
            or isinstance(claims.get("exp"), bool) or not isinstance(claims.get("exp"), int):
        raise _forged("claims")
    exp = int(claims["exp"])
    if exp <= now:
        raise SsoRefused("sso_assertion_expired", "聊天工具的身份凭证已过期，请回到聊天中重新打开签署链接",
                         "The chat's sign-in assertion has expired; open the signing link from the chat again")
    if exp > now + MAX_LIFETIME:
        raise _forged("exp too far ahead")
    aud = claims.get("aud")
    if aud is not None and aud != audience:
        raise _forged("for another link")
    return ChatIdentity(PLATFORM, claims["sub"][:160], str(claims.get("name") or "")[:200]), exp
