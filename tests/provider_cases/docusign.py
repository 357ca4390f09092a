"""DocuSign Connect (JSON SIM): `X-DocuSign-Signature-N` = base64(HMAC-SHA256(key, raw body))."""

from __future__ import annotations

import json
from typing import Any

from connectors.esign.docusign import SIGNER_TAG, connect_signature
from tests.provider_cases import Delivery, ProviderCase

HMAC_KEY = "case-docusign-connect-key"
EVENTS = {"signed": "recipient-completed", "declined": "recipient-declined"}


def message(flow_id: str, signer_id: str, event: str, status: str) -> bytes:
    signer: dict[str, Any] = {"recipientId": "1", "email": f"{signer_id}@example.test", "name": signer_id,
                              "routingOrder": "1", "status": status, "customFields": [SIGNER_TAG + signer_id],
                              "signedDateTime": "2026-11-01T10:00:00.000Z"}
    if status == "declined":
        signer.update(declinedReason="价格不对", declinedDateTime="2026-11-01T10:00:00.000Z")
    return json.dumps({"event": event, "apiVersion": "v2.1", "retryCount": 0,
                       "data": {"envelopeId": flow_id, "recipientId": "1",
                                "envelopeSummary": {"status": "sent", "recipients": {"signers": [signer]}}}},
                      ensure_ascii=False).encode()


def signed(body: bytes) -> Delivery:
    # a rotated-out key first: any one matching header is enough
    return {"content-type": "application/json", "X-DocuSign-Signature-1": connect_signature("old-key", body),
            "X-DocuSign-Signature-2": connect_signature(HMAC_KEY, body)}, body


def valid(flow_id: str, signer_id: str, kind: str) -> Delivery:
    return signed(message(flow_id, signer_id, EVENTS[kind], "completed" if kind == "signed" else "declined"))


def tampered(flow_id: str, signer_id: str, kind: str) -> Delivery:
    headers, body = valid(flow_id, signer_id, kind)
    return headers, body.replace(b'"recipientId": "1"', b'"recipientId": "2"', 1)


def unsigned(flow_id: str, signer_id: str, kind: str) -> Delivery:
    _headers, body = valid(flow_id, signer_id, kind)
    return {"content-type": "application/json"}, body


def unknown(flow_id: str) -> Delivery:
    return signed(message(flow_id, "u-1", "recipient-delivered", "delivered"))


CASE = ProviderCase(
    name="docusign",
    env={"SIGNBRIDGE_DOCUSIGN_HMAC_KEY": HMAC_KEY},
    valid=valid,
    tampered=tampered,
    unsigned=unsigned,
    stale=None,  # Connect signs no timestamp; retries resend the event with the original data
    unknown=unknown,
    reply=(200, None),
)
