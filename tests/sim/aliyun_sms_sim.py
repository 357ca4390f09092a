"""An Aliyun SMS (`dysmsapi` 2017-05-25) stand-in over real HTTP: `SendSms` as the official SDK calls it.

- The V3 signature (`ACS3-HMAC-SHA256`) is recomputed from the request as received (method, path,
  query, the `host`/`x-acs-*` headers, the body hash), `x-acs-date` must be within 15 minutes and
  `x-acs-content-sha256` must match the body; refusals as Aliyun answers them: HTTP 400
  `SignatureDoesNotMatch` / `InvalidTimeStamp.Expired`, 404 `InvalidAccessKeyId.NotFound`.
- Business answers are HTTP 200 `{Code, Message, RequestId, BizId}`: `OK`, `isv.MOBILE_NUMBER_ILLEGAL`,
  `isv.SMS_SIGNATURE_ILLEGAL`, `isv.SMS_TEMPLATE_ILLEGAL`, `isv.TEMPLATE_MISSING_PARAMETERS`, and the
  default frequency limit for verification codes — one a minute per number and signature —
  as `isv.BUSINESS_LIMIT_CONTROL` "触发分钟级流控Permits:1".
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from connectors.notify.aliyun_sms import ALGORITHM, signature
from tests.sim.servers import serve

KEY_ID, KEY_SECRET = "LTAI5tTestKeyId", "aliyun-test-secret"
SIGN_NAME, CODE_TEMPLATE, LINK_TEMPLATE = "签桥", "SMS_100000001", "SMS_100000002"


@dataclass
class AliyunSms:
    sent: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # Codes answered, for the tests' asserts
    last_code_at: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def codes_to(self, phone: str) -> list[str]:
        return [m["params"]["code"] for m in self.sent if m["phone"] == phone and m["template"] == CODE_TEMPLATE]

    def links_to(self, phone: str) -> list[str]:
        return [m["params"]["url"] for m in self.sent if m["phone"] == phone and m["template"] == LINK_TEMPLATE]


def _answer(sim: AliyunSms, code: str, message: str, status: int = 200) -> JSONResponse:
    with sim.lock:
        sim.refused.append(code)
    return JSONResponse({"Code": code, "Message": message, "RequestId": secrets.token_hex(8).upper()},
                        status_code=status)


def _auth_fields(value: str) -> dict[str, str]:
    if not value.startswith(ALGORITHM + " "):
        return {}
    return dict(part.strip().split("=", 1) for part in value[len(ALGORITHM) + 1:].split(",") if "=" in part)


def build_app(sim: AliyunSms) -> FastAPI:
    app = FastAPI()

    @app.post("/")
    async def send_sms(request: Request) -> JSONResponse:
        body = await request.body()
        query = dict(parse_qsl(request.url.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in request.headers.items()}
        auth = _auth_fields(headers.get("authorization", ""))
        if auth.get("Credential") != KEY_ID:
            return _answer(sim, "InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        if headers.get("x-acs-content-sha256") != hashlib.sha256(body).hexdigest():
            return _answer(sim, "SignatureDoesNotMatch", "x-acs-content-sha256 does not match the body", 400)
        try:
            sent_at = datetime.strptime(headers.get("x-acs-date", ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return _answer(sim, "InvalidTimeStamp.Format", "Specified time stamp does not match the format", 400)
        if abs((datetime.now(UTC) - sent_at).total_seconds()) > 900:
            return _answer(sim, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.", 400)
        signed = [h for h in auth.get("SignedHeaders", "").split(";") if h]
        if not {"host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce",
                "x-acs-content-sha256"} <= set(signed):
            return _answer(sim, "IncompleteSignature", "The request signature does not conform to Aliyun standards.",
                           400)
        expected, _ = signature(KEY_SECRET, request.method, request.url.path, query,
                                {h: headers.get(h, "") for h in signed}, body)
        if not secrets.compare_digest(expected, auth.get("Signature", "")):
            return _answer(sim, "SignatureDoesNotMatch",
                           "Specified signature is not matched with our calculation.", 400)
        if (headers.get("x-acs-action"), headers.get("x-acs-version")) != ("SendSms", "2017-05-25"):
            return _answer(sim, "InvalidAction.NotFound", "Specified api is not found", 404)
        phone = query.get("PhoneNumbers", "")
        digits = phone.removeprefix("+").removeprefix("0086").removeprefix("86") if phone.startswith(
            ("+86", "0086", "86")) and len(phone) > 11 else phone
        if not (len(digits) == 11 and digits.isdigit() and digits.startswith("1")):
            return _answer(sim, "isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if query.get("SignName") != SIGN_NAME:
            return _answer(sim, "isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        template = query.get("TemplateCode")
        if template not in (CODE_TEMPLATE, LINK_TEMPLATE):
            return _answer(sim, "isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        try:
            params = json.loads(query.get("TemplateParam", "{}"))
        except ValueError:
            return _answer(sim, "isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        needed = {"code"} if template == CODE_TEMPLATE else {"name", "title", "url"}
        if not needed <= set(params):
            return _answer(sim, "isv.TEMPLATE_MISSING_PARAMETERS", "模板变量缺少对应参数值")
        with sim.lock:
            if template == CODE_TEMPLATE:
                now = time.monotonic()
                if now - sim.last_code_at.get(digits, -1e9) < 60:
                    sim.refused.append("isv.BUSINESS_LIMIT_CONTROL")
                    return JSONResponse({"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控Permits:1",
                                         "RequestId": secrets.token_hex(8).upper()})
                sim.last_code_at[digits] = now
            sim.sent.append({"phone": digits, "template": template, "params": params, "out_id": query.get("OutId")})
        return JSONResponse({"Code": "OK", "Message": "OK", "BizId": f"{secrets.randbelow(10**12)}^0",
                             "RequestId": secrets.token_hex(8).upper()})

    return app


@contextmanager
def aliyun_sms() -> Iterator[tuple[str, AliyunSms]]:
    sim = AliyunSms()
    with serve(build_app(sim)) as url:
        yield url, sim
