"""法大大 callbacks: form `bizContent` + `X-FASC-Event`, FASC HMAC chain, ±5 min timestamp."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from connectors.esign.fadada import fasc_sign, signed_headers
from tests.provider_cases import Delivery, ProviderCase

APP_ID, APP_SECRET = "case-fadada-app", "case-fadada-secret"
EVENTS = {"signed": "sign-task-signed", "declined": "sign-task-sign-rejected"}


def delivery(event: str, biz: dict[str, Any], *, timestamp: str | None = None, secret: str = APP_SECRET) -> Delivery:
    content = json.dumps(biz, ensure_ascii=False)
    headers = signed_headers(APP_ID, secret, content, token=None, extra={"X-FASC-Event": event}, timestamp=timestamp)
    headers.pop("X-FASC-Grant-Type")
    headers["X-FASC-Sign"] = fasc_sign(secret, {**headers, "bizContent": content})
    body = httpx.Request("POST", "http://x", data={"bizContent": content}).read()
    return {**headers, "content-type": "application/x-www-form-urlencoded"}, body


def _biz(flow_id: str, signer_id: str, kind: str) -> dict[str, Any]:
    biz: dict[str, Any] = {"signTaskId": flow_id, "actorId": signer_id, "signTaskStatus": "sign_progress",
                           "eventTime": "1764000000000"}
    if kind == "declined":
        biz.update(rejectReason="价格不对", signTaskStatus="task_terminated")
    return biz


def valid(flow_id: str, signer_id: str, kind: str) -> Delivery:
    return delivery(EVENTS[kind], _biz(flow_id, signer_id, kind))


def tampered(flow_id: str, signer_id: str, kind: str) -> Delivery:
    headers, body = valid(flow_id, signer_id, kind)
    return headers, body.replace(signer_id.encode(), b"u-666")


def unsigned(flow_id: str, signer_id: str, kind: str) -> Delivery:
    headers, body = valid(flow_id, signer_id, kind)
    return {k: v for k, v in headers.items() if k != "X-FASC-Sign"}, body


def stale(flow_id: str, signer_id: str, kind: str) -> Delivery:
    return delivery(EVENTS[kind], _biz(flow_id, signer_id, kind), timestamp=str(int(time.time() * 1000) - 600_000))


def unknown(flow_id: str) -> Delivery:
    return delivery("sign-task-read", {"signTaskId": flow_id, "actorId": "u-1"})


CASE = ProviderCase(
    name="fadada",
    env={"SIGNBRIDGE_FADADA_APP_ID": APP_ID, "SIGNBRIDGE_FADADA_APP_SECRET": APP_SECRET},
    valid=valid,
    tampered=tampered,
    unsigned=unsigned,
    stale=stale,
    unknown=unknown,
    reply=(200, b'{"msg": "success"}'),
)
