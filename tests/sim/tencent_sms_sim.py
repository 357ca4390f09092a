"""A Tencent Cloud SMS (API 3.0, `SendSms` 2021-01-11) stand-in over real HTTP.

- TC3-HMAC-SHA256 is recomputed from the request as received (the `content-type` and `host`
  headers, the raw JSON body); `X-TC-Timestamp` must be within 5 minutes. Every answer is HTTP 200
  with `Response`, as Tencent answers: refusals of the request as `Response.Error{Code, Message}`
  (`AuthFailure.SecretIdNotFound`, `AuthFailure.SignatureFailure`, `AuthFailure.SignatureExpire`,
  `InvalidParameterValue.TemplateParameterFormatError` — a code template takes 0–6 digits per
  parameter), the outcome per number in `SendStatusSet[].Code`: "Ok", or
  `InvalidParameterValue.IncorrectPhoneNumber`, or the 30-second limit for the same content to one
  number, `LimitExceeded.PhoneNumberThirtySecondLimit`.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from connectors.notify.tencent_sms import ALGORITHM, SERVICE, signature
from tests.sim.servers import serve

SECRET_ID, SECRET_KEY = "AKIDtestSecretId", "tencent-test-secret-key"
APP_ID, SIGN_NAME, CODE_TEMPLATE, LINK_TEMPLATE = "1400006666", "签桥", "1000001", "1000002"


@dataclass
class TencentSms:
    sent: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    last_sent: dict[tuple[str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def codes_to(self, phone: str) -> list[str]:
        return [m["params"][0] for m in self.sent if m["phone"] == phone and m["template"] == CODE_TEMPLATE]

    def links_to(self, phone: str) -> list[str]:
        return [m["params"][2] for m in self.sent if m["phone"] == phone and m["template"] == LINK_TEMPLATE]


def _error(sim: TencentSms, code: str, message: str) -> JSONResponse:
    with sim.lock:
        sim.refused.append(code)
    return JSONResponse({"Response": {"Error": {"Code": code, "Message": message},
                                      "RequestId": secrets.token_hex(16)}})


def _auth(value: str) -> dict[str, str]:
    if not value.startswith(ALGORITHM + " "):
        return {}
    return dict(part.strip().split("=", 1) for part in value[len(ALGORITHM) + 1:].split(",") if "=" in part)


def build_app(sim: TencentSms) -> FastAPI:
    app = FastAPI()

    @app.post("/")
    async def api(request: Request) -> JSONResponse:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        auth = _auth(headers.get("authorization", ""))
        credential = auth.get("Credential", "").split("/")
        if len(credential) != 4 or credential[0] != SECRET_ID:
            return _error(sim, "AuthFailure.SecretIdNotFound", "The SecretId is not found")
        try:
            timestamp = int(headers.get("x-tc-timestamp", ""))
        except ValueError:
            return _error(sim, "MissingParameter", "The request is missing a required parameter `X-TC-Timestamp`.")
        if abs(time.time() - timestamp) > 300:
            return _error(sim, "AuthFailure.SignatureExpire", "Signature expired.")
        if auth.get("SignedHeaders") != "content-type;host" or credential[2:] != [SERVICE, "tc3_request"] or \
                headers.get("content-type") != "application/json; charset=utf-8":
            return _error(sim, "AuthFailure.SignatureFailure", "The provided credentials could not be validated.")
        expected = signature(SECRET_KEY, SERVICE, headers.get("host", ""), timestamp, body)
        if not secrets.compare_digest(expected, auth.get("Signature", "")):
            return _error(sim, "AuthFailure.SignatureFailure", "The provided credentials could not be validated.")
        if (headers.get("x-tc-action"), headers.get("x-tc-version")) != ("SendSms", "2021-01-11") or \
                not headers.get("x-tc-region"):
            return _error(sim, "InvalidAction", "The action is not found.")
        req = json.loads(body)
        if req.get("SmsSdkAppId") != APP_ID:
            return _error(sim, "FailedOperation.SmsSdkAppIdVerifyFail", "SmsSdkAppId verification failed.")
        if req.get("SignName") != SIGN_NAME:
            return _error(sim, "FailedOperation.SignatureIncorrectOrUnapproved", "The signature is unapproved.")
        template, params = req.get("TemplateId"), req.get("TemplateParamSet") or []
        if template not in (CODE_TEMPLATE, LINK_TEMPLATE):
            return _error(sim, "FailedOperation.TemplateIncorrectOrUnapproved", "The template is unapproved.")
        if template == CODE_TEMPLATE and not all(isinstance(p, str) and p.isdigit() and len(p) <= 6 for p in params):
            return _error(sim, "InvalidParameterValue.TemplateParameterFormatError",
                          "Verification code templates accept only 0-6 digits.")
        statuses = []
        with sim.lock:
            for number in req.get("PhoneNumberSet") or []:
                digits = number.removeprefix("+86")
                status = {"SerialNo": secrets.token_hex(8), "PhoneNumber": number, "Fee": 1,
                          "SessionContext": req.get("SessionContext", ""), "IsoCode": "CN"}
                key = (digits, json.dumps([template, params]))
                if not (len(digits) == 11 and digits.isdigit() and digits.startswith("1")):
                    status.update(Code="InvalidParameterValue.IncorrectPhoneNumber", Message="手机号格式错误", Fee=0)
                elif time.monotonic() - sim.last_sent.get(key, -1e9) < 30:
                    status.update(Code="LimitExceeded.PhoneNumberThirtySecondLimit",
                                  Message="单个手机号30秒内下发短信条数超过设定的上限", Fee=0)
                else:
                    sim.last_sent[key] = time.monotonic()
                    sim.sent.append({"phone": digits, "template": template, "params": params})
                    status.update(Code="Ok", Message="send success")
                if status["Code"] != "Ok":
                    sim.refused.append(str(status["Code"]))
                statuses.append(status)
        return JSONResponse({"Response": {"SendStatusSet": statuses, "RequestId": secrets.token_hex(16)}})

    return app


@contextmanager
def tencent_sms() -> Iterator[tuple[str, TencentSms]]:
    sim = TencentSms()
    with serve(build_app(sim)) as url:
        yield url, sim
