"""HMAC signatures for the generic webhook IM, the same scheme in both directions.

`X-SignBridge-Timestamp: <unix seconds>` and `X-SignBridge-Signature: v1=<hex>` where the hex is
HMAC-SHA256(secret, "<timestamp>." + raw body). The timestamp is inside the MAC so a captured
request cannot be replayed later than `tolerance` seconds; the raw body (not re-serialised JSON)
is signed so both sides hash exactly the same bytes.

During a secret rotation a sender may put several signatures in one header
(`v1=<old>,v1=<new>`); `verify` accepts the request when any of them matches. Unknown schemes
(`v2=…`) are ignored so a future scheme can be rolled out alongside v1.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from signbridge.core.untrusted import same, unix_time

TIMESTAMP_HEADER = "X-SignBridge-Timestamp"
SIGNATURE_HEADER = "X-SignBridge-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300
MAX_CANDIDATES = 8  # signatures in one header: two during a rotation; a flood of them is work for nothing


class SignatureError(Exception):
    """The request is unsigned, stale or forged. `reason` is safe to return to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for `body` sent at `timestamp`: `v1=<hex>`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Both headers for an outgoing request; `now` (unix seconds) is for tests."""
    ts = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body)}


def verify(
    secret: str,
    timestamp_header: str | None,
    signature_header: str | None,
    body: bytes,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Return quietly for a genuine, fresh request; raise `SignatureError` otherwise."""
    if not timestamp_header or not signature_header:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    ts = unix_time(timestamp_header)
    if ts is None:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not unix seconds")
    if abs((time.time() if now is None else now) - ts) > tolerance:
        raise SignatureError(f"timestamp is more than {tolerance} s off (stale or clock skew)")
    expected = sign(secret, int(ts), body)
    candidates = [part.strip() for part in signature_header.split(",")[:MAX_CANDIDATES]]
    # Compare every v1 candidate (no early exit) so timing does not reveal which one matched.
    matched = False
    for candidate in candidates:
        if candidate.startswith(f"{SCHEME}="):
            matched |= same(candidate, expected)
    if not matched:
        raise SignatureError("signature does not match")
