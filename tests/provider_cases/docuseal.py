"""DocuSeal webhooks: JSON body, `X-Docuseal-Signature: "<ts>.<hex HMAC>"`, 300 s window."""

from __future__ import annotations

import json
import time
from typing import Any

from connectors.esign.docuseal import signature
from tests.provider_cases import Delivery, ProviderCase

SECRET = "case-docuseal-webhook-secret"
EVENT_TYPES = {"signed": "form.completed", "declined": "form.declined"}


def _body(flow_id: str, signer_id: str, event_type: str) -> bytes:
    data: dict[str, Any] = {
        "id": 7000 + sum(map(ord, signer_id)), "submission_id": flow_id, "external_id": signer_id,
        "email": f"{signer_id}@example.test", "status": "declined" if event_type == "form.declined" else "completed",
        "completed_at": "2026-01-02T03:04:05Z", "declined_at": "2026-01-02T03:04:05Z", "decline_reason": "价格不对",
        "submission": {"id": flow_id},
    }
    return json.dumps({"event_type": event_type, "timestamp": "2026-01-02T03:04:05Z", "data": data}).encode()


def _signed(body: bytes, ts: int | None = None, secret: str = SECRET) -> Delivery:
    ts = int(time.time()) if ts is None else ts
    return {"content-type": "application/json", "x-docuseal-signature": signature(secret, str(ts), body)}, body


def valid(flow_id: str, signer_id: str, kind: str) -> Delivery:
    return _signed(_body(flow_id, signer_id, EVENT_TYPES[kind]))


def tampered(flow_id: str, signer_id: str, kind: str) -> Delivery:
    headers, body = valid(flow_id, signer_id, kind)
    return headers, body.replace(signer_id.encode(), b"u-evil")


def unsigned(flow_id: str, signer_id: str, kind: str) -> Delivery:
    headers, body = valid(flow_id, signer_id, kind)
    del headers["x-docuseal-signature"]
    return headers, body


def stale(flow_id: str, signer_id: str, kind: str) -> Delivery:
    return _signed(_body(flow_id, signer_id, EVENT_TYPES[kind]), ts=int(time.time()) - 301)


def unknown(flow_id: str) -> Delivery:
    return _signed(json.dumps({"event_type": "form.viewed", "timestamp": "2026-01-02T03:04:05Z",
                               "data": {"id": 1, "submission_id": flow_id, "external_id": "u-1"}}).encode())


CASE = ProviderCase(
    name="docuseal",
    env={"SIGNBRIDGE_DOCUSEAL_API_KEY": "case-docuseal-api-key", "SIGNBRIDGE_DOCUSEAL_WEBHOOK_SECRET": SECRET},
    valid=valid,
    tampered=tampered,
    unsigned=unsigned,
    stale=stale,
    unknown=unknown,
    reply=(200, None),
)
