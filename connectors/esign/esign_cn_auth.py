"""e签宝 (open.esign.cn, SaaS API v3) request and callback signatures.

Kept apart from the connector so the simulator, the connector and the tests share one
implementation of each formula (and the vectors in tests/test_esign_cn.py pin it down):

- Request: `X-Tsign-Open-Ca-Signature = base64(HMAC-SHA256(app_secret,
  METHOD\\nAccept\\nContent-MD5\\nContent-Type\\nDate\\n + path-with-sorted-query))`, with
  `Content-MD5 = base64(md5(body))` (empty when there is no body). The body is serialised once
  (`encode_body`) and those exact bytes are both hashed and sent: re-serialising would change
  key order or spacing and the gateway would refuse the call.
- Callback: `X-Tsign-Open-SIGNATURE = hex(HMAC-SHA256(app_secret, timestamp + values of the
  notify URL's query parameters sorted by key + raw body))`.
- Signed file: when the operator configures e签宝's CA certificates, every PAdES signature in
  the download must be intact, valid and chain to them (`verify_signed_pdf`) — the finish step
  only checks the original-bytes prefix for external providers, so this is the connector's part.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from asn1crypto import pem as asn1_pem
from asn1crypto import x509 as asn1_x509

from connectors.esign.base import WebhookRejected
from signbridge.core.untrusted import is_stale, same, unix_time

ACCEPT = "*/*"
CONTENT_TYPE = "application/json; charset=UTF-8"
REQUEST_WINDOW_MS = 15 * 60 * 1000  # the gateway refuses timestamps older (or newer) than this


def encode_body(data: Mapping[str, Any] | None) -> bytes:
    """The one serialisation of a request body: compact, UTF-8 (Chinese names stay readable)."""
    if data is None:
        return b""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def content_md5(body: bytes) -> str:
    return base64.b64encode(hashlib.md5(body).digest()).decode() if body else ""  # noqa: S324  # the API's choice


def path_with_query(path: str, query: Mapping[str, str] | None = None) -> str:
    """`/path?a=1&b=2` with keys sorted; a key with an empty value appears bare, as the gateway does."""
    if not query:
        return path
    parts = [k if v == "" else f"{k}={v}" for k, v in sorted(query.items())]
    return f"{path}?{'&'.join(parts)}"


def string_to_sign(method: str, md5: str, signed_path: str, *, accept: str = ACCEPT,
                   content_type: str = CONTENT_TYPE, date: str = "") -> str:
    return f"{method.upper()}\n{accept}\n{md5}\n{content_type}\n{date}\n{signed_path}"


def request_signature(secret: str, method: str, md5: str, signed_path: str, **kwargs: str) -> str:
    digest = hmac.new(secret.encode(), string_to_sign(method, md5, signed_path, **kwargs).encode(),
                      hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_headers(app_id: str, secret: str, method: str, path: str, body: bytes,
                   query: Mapping[str, str] | None = None, now_ms: int | None = None) -> dict[str, str]:
    """Every header e签宝's gateway checks, for this exact body."""
    md5 = content_md5(body)
    headers = {
        "X-Tsign-Open-App-Id": app_id,
        "X-Tsign-Open-Auth-Mode": "Signature",
        "X-Tsign-Open-Ca-Timestamp": str(now_ms if now_ms is not None else int(time.time() * 1000)),
        "Accept": ACCEPT,
        "Content-Type": CONTENT_TYPE,
        "X-Tsign-Open-Ca-Signature": request_signature(secret, method, md5, path_with_query(path, query)),
    }
    if md5:
        headers["Content-MD5"] = md5
    return headers


def verify_callback(secret: str, app_id: str, headers: Mapping[str, str], query: Mapping[str, str], body: bytes,
                    tolerance_ms: int) -> None:
    """Raise `WebhookRejected` unless e签宝 signed this callback (constant-time compare) recently enough."""
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp, given = lower.get("x-tsign-open-timestamp", ""), lower.get("x-tsign-open-signature", "")
    if not (timestamp and given):
        raise WebhookRejected("missing e签宝 callback signature")
    sender = lower.get("x-tsign-open-app-id")
    if sender is not None and sender != app_id:
        raise WebhookRejected("callback for another e签宝 app")
    expected = callback_signature(secret, timestamp, dict(query), body)
    if not same(given.lower(), expected):
        raise WebhookRejected("bad e签宝 callback signature")
    if unix_time(timestamp, millis=True) is None:
        raise WebhookRejected("bad e签宝 callback timestamp")
    if tolerance_ms and is_stale(timestamp, tolerance_ms / 1000, millis=True):
        raise WebhookRejected("stale e签宝 callback")


def callback_signature(secret: str, timestamp: str, query: Mapping[str, str], body: bytes) -> str:
    """Lower-case hex; `query` = the notify URL's own parameters (their values, sorted by key)."""
    message = timestamp.encode() + "".join(v for _, v in sorted(query.items())).encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class SignatureCheckFailed(Exception):
    """The signed file's signatures are missing, broken, or do not chain to the configured roots."""


def load_trust_roots(pem_bytes: bytes) -> list[asn1_x509.Certificate]:
    return [asn1_x509.Certificate.load(der) for _, _, der in asn1_pem.unarmor(pem_bytes, multiple=True)]


def verify_signed_pdf(data: bytes, roots: list[asn1_x509.Certificate], at_least: int) -> list[dict[str, Any]]:
    """Validate every signature offline (CPU-bound: call in a thread); the reports, or raise."""
    from signbridge.pdf.pades import validate_pdf  # pyHanko is heavy: only when a check is configured

    reports = validate_pdf(data, roots)
    bad = [r.field_name for r in reports if not (r.intact and r.valid and r.trusted)]
    if len(reports) < at_least or bad:
        raise SignatureCheckFailed(f"{len(reports)} signatures (expected at least {at_least}); "
                                   f"not intact/valid/trusted: {', '.join(bad) or 'none'}")
    return [{"field": r.field_name, "signer": r.signer_name, "coverage": r.coverage} for r in reports]
