"""e签宝 callbacks: JSON body, `X-Tsign-Open-SIGNATURE` = hex HMAC-SHA256(secret, ts + query values + body)."""

from __future__ import annotations

import json
import time
from typing import Any

from connectors.esign.esign_cn import REPLY, biz_num
from connectors.esign.esign_cn_auth import callback_signature
from tests.provider_cases import Delivery, ProviderCase

APP_ID = "case-esign-app"
SECRET = "case-esign-secret"
RESULTS = {"signed": (2, "签署完成"), "declined": (4, "价格不对")}


def _payload(flow_id: str, signer_id: str, kind: str) -> dict[str, Any]:
    result, description = RESULTS[kind]
    return {"action": "SIGN_MISSON_COMPLETE", "signFlowId": flow_id,
            "customBizNum": biz_num(signer_id, f"req-of-{flow_id}"), "signOrder": 1,
            "operateTime": 1767323045000, "signResult": result, "resultDescription": description,
            "operator": {"psnId": "psn-1", "psnAccount": {"accountMobile": "13800000000"}},
            "timestamp": int(time.time() * 1000)}


def _signed(payload: dict[str, Any], ts: int | None = None, secret: str = SECRET) -> Delivery:
    body = json.dumps(payload, ensure_ascii=False).encode()
    timestamp = str(int(time.time() * 1000) if ts is None else ts)
    return {"content-type": "application/json", "x-tsign-open-app-id": APP_ID, "x-tsign-open-timestamp": timestamp,
            "x-tsign-open-signature": callback_signature(secret, timestamp, {}, body)}, body


def valid(flow_id: str, signer_id: str, kind: str) -> Delivery:
    return _signed(_payload(flow_id, signer_id, kind))


def tampered(flow_id: str, signer_id: str, kind: str) -> Delivery:
    headers, body = valid(flow_id, signer_id, kind)
    return headers, body.replace(b'"signResult": 4', b'"signResult": 2').replace(flow_id.encode(), b"flow-evil")


def unsigned(flow_id: str, signer_id: str, kind: str) -> Delivery:
    headers, body = valid(flow_id, signer_id, kind)
    del headers["x-tsign-open-signature"]
    return headers, body


def stale(flow_id: str, signer_id: str, kind: str) -> Delivery:
    return _signed(_payload(flow_id, signer_id, kind), ts=int(time.time() * 1000) - 16 * 60 * 1000)


def unknown(flow_id: str) -> Delivery:
    return _signed({"action": "OPERATOR_READ", "signFlowId": flow_id, "timestamp": int(time.time() * 1000)})


CASE = ProviderCase(
    name="esign_cn",
    env={"SIGNBRIDGE_ESIGN_CN_APP_ID": APP_ID, "SIGNBRIDGE_ESIGN_CN_APP_SECRET": SECRET},
    valid=valid,
    tampered=tampered,
    unsigned=unsigned,
    stale=stale,
    unknown=unknown,
    reply=(200, REPLY.body),
)
