"""Dropbox Sign callbacks: multipart field `json`, `event_hash` over event_time + event_type."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from tests.provider_cases import Delivery, ProviderCase

API_KEY = "case-dropbox-sign-api-key"
EVENT_TYPES = {"signed": "signature_request_signed", "declined": "signature_request_declined"}


def payload(flow_id: str, signer_id: str, event_type: str, *, key: str = API_KEY,
            event_time: str | None = None, status: str = "signed") -> dict[str, Any]:
    event_time = event_time or str(int(time.time()))
    email = f"{signer_id}@example.test"
    return {
        "event": {"event_time": event_time, "event_type": event_type,
                  "event_hash": hmac.new(key.encode(), (event_time + event_type).encode(),
                                         hashlib.sha256).hexdigest(),
                  "event_metadata": {"related_signature_id": f"sig-{signer_id}"}},
        "signature_request": {
            "signature_request_id": flow_id, "metadata": {"sb_signers": json.dumps({email: signer_id})},
            "signatures": [{"signature_id": f"sig-{signer_id}", "signer_email_address": email,
                            "status_code": status, "signed_at": int(event_time),
                            "decline_reason": "价格不对" if status == "declined" else None}],
        },
    }


def encode(data: dict[str, Any]) -> Delivery:
    """Multipart form with one field `json`, as Dropbox Sign posts it."""
    request = httpx.Request("POST", "http://x", files={"json": (None, json.dumps(data))})
    body = request.read()
    return {"content-type": request.headers["content-type"]}, body


def valid(flow_id: str, signer_id: str, kind: str) -> Delivery:
    return encode(payload(flow_id, signer_id, EVENT_TYPES[kind], status=kind))


def tampered(flow_id: str, signer_id: str, kind: str) -> Delivery:
    data = payload(flow_id, signer_id, EVENT_TYPES[kind], status=kind)
    data["event"]["event_type"] = "signature_request_canceled"  # hash was made for another type
    return encode(data)


def unsigned(flow_id: str, signer_id: str, kind: str) -> Delivery:
    data = payload(flow_id, signer_id, EVENT_TYPES[kind], status=kind)
    del data["event"]["event_hash"]
    return encode(data)


def unknown(flow_id: str) -> Delivery:
    return encode(payload(flow_id, "u-1", "signature_request_viewed", status="awaiting_signature"))


CASE = ProviderCase(
    name="dropbox_sign",
    env={"SIGNBRIDGE_DROPBOX_SIGN_API_KEY": API_KEY},
    valid=valid,
    tampered=tampered,
    unsigned=unsigned,
    stale=None,  # Dropbox Sign retries for days with the original event_time: no window to check
    unknown=unknown,
    reply=(200, b"Hello API Event Received"),
)
