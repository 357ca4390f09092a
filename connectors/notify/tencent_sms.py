"""Tencent Cloud SMS (API 3.0, `SendSms` version 2021-01-11) with the TC3-HMAC-SHA256 signature.

Why no SDK: `tencentcloud-sdk-python` is synchronous (`requests`); the call is one signed JSON POST,
made here with the shared async `httpx` client and checked against Tencent's published signature
example (tests/test_notify.py).

Tencent answers HTTP 200 either way: a request-level refusal is `Response.Error{Code, Message}`,
and each number has its own `SendStatusSet[].Code` ("Ok" when accepted). The per-number frequency
limits (`LimitExceeded.PhoneNumberThirtySecondLimit`, `…OneHourLimit`, `…DailyLimit`) become
"try again in N s".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from connectors.notify.base import Channel, Notice, NotifyError
from signbridge.core.settings import Settings

ALGORITHM = "TC3-HMAC-SHA256"
SERVICE = "sms"
ACTION, VERSION = "SendSms", "2021-01-11"
CONTENT_TYPE = "application/json; charset=utf-8"
RETRY_AFTER = {
    "LimitExceeded.PhoneNumberThirtySecondLimit": 30.0,
    "LimitExceeded.DeliveryFrequencyLimit": 30.0,
    "LimitExceeded.PhoneNumberOneHourLimit": 3600.0,
    "LimitExceeded.PhoneNumberDailyLimit": 86400.0,
    "LimitExceeded.PhoneNumberSameContentDailyLimit": 86400.0,
    "LimitExceeded.AppDailyLimit": 86400.0,
    "LimitExceeded.DailyLimit": 86400.0,
    "RequestLimitExceeded": 1.0,
}
PERMANENT_PREFIXES = ("FailedOperation.", "InvalidParameterValue.", "AuthFailure.", "UnauthorizedOperation.",
                      "MissingParameter", "InvalidParameter")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signature(secret_key: str, service: str, host: str, timestamp: int, payload: bytes) -> str:
    """Hex signature over `content-type;host` and the payload, as Tencent's "签名方法 v3" describes."""
    canonical = (f"POST\n/\n\ncontent-type:{CONTENT_TYPE}\nhost:{host}\n\ncontent-type;host\n"
                 f"{_sha256(payload)}")
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    to_sign = f"{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{_sha256(canonical.encode())}"
    k_date = _hmac(("TC3" + secret_key).encode(), date)
    k_signing = _hmac(_hmac(k_date, service), "tc3_request")
    return hmac.new(k_signing, to_sign.encode(), hashlib.sha256).hexdigest()


def authorization(secret_id: str, secret_key: str, service: str, host: str, timestamp: int, payload: bytes) -> str:
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    return (f"{ALGORITHM} Credential={secret_id}/{date}/{service}/tc3_request, SignedHeaders=content-type;host, "
            f"Signature={signature(secret_key, service, host, timestamp, payload)}")


def _refusal(code: str, message: str) -> NotifyError:
    return NotifyError(f"Tencent Cloud SMS refused the message: {code} {message}".strip(),
                       retry_after=RETRY_AFTER.get(code),
                       permanent=code not in RETRY_AFTER and code.startswith(PERMANENT_PREFIXES))


class TencentSms:
    name = "tencent_sms"
    channel: Channel = "sms"

    def __init__(self, http: httpx.AsyncClient, *, secret_id: str, secret_key: str, app_id: str, sign_name: str,
                 code_template: str, link_template: str, region: str, endpoint: str) -> None:
        self.http = http
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.app_id = app_id
        self.sign_name = sign_name
        self.templates = {"code": code_template, "link": link_template}
        self.region = region
        self.endpoint = endpoint.rstrip("/")

    def _params(self, notice: Notice) -> list[str]:
        """Template parameters in order: the code alone; or name, title, link."""
        if notice.purpose == "code":
            return [notice.params["code"]]
        return [notice.params.get("name", ""), notice.params.get("title", ""), notice.params.get("url", "")]

    async def send(self, to: str, notice: Notice, *, key: str) -> None:
        template = self.templates[notice.purpose]
        if not template:
            raise NotifyError(f"no Tencent Cloud SMS template for {notice.purpose} messages "
                              f"(SIGNBRIDGE_TENCENT_SMS_{notice.purpose.upper()}_TEMPLATE_ID)", permanent=True)
        body: dict[str, Any] = {"PhoneNumberSet": [to], "SmsSdkAppId": self.app_id, "SignName": self.sign_name,
                                "TemplateId": template, "TemplateParamSet": self._params(notice),
                                "SessionContext": key[-128:]}
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        host = urlsplit(self.endpoint).netloc
        timestamp = int(time.time())
        headers = {"Content-Type": CONTENT_TYPE, "Host": host, "X-TC-Action": ACTION, "X-TC-Version": VERSION,
                   "X-TC-Region": self.region, "X-TC-Timestamp": str(timestamp),
                   "Authorization": authorization(self.secret_id, self.secret_key, SERVICE, host, timestamp, payload)}
        try:
            resp = await self.http.post(f"{self.endpoint}/", content=payload, headers=headers)
        except httpx.TimeoutException as e:
            raise NotifyError(f"Tencent Cloud SMS did not answer: {e}", maybe_delivered=True) from e
        except httpx.HTTPError as e:
            raise NotifyError(f"Tencent Cloud SMS unreachable: {e}") from e
        if resp.status_code >= 500:
            raise NotifyError(f"Tencent Cloud SMS answered HTTP {resp.status_code}")
        try:
            answer = resp.json().get("Response", {})
        except ValueError:
            raise NotifyError(f"Tencent Cloud SMS answered HTTP {resp.status_code} without JSON") from None
        if error := answer.get("Error"):
            raise _refusal(str(error.get("Code", "")), str(error.get("Message", "")))
        statuses = answer.get("SendStatusSet") or []
        if not statuses:
            raise NotifyError("Tencent Cloud SMS answered without a send status")
        status = statuses[0]
        code = str(status.get("Code", ""))
        if code.lower() != "ok":  # documented as "Ok"; accept any case
            raise _refusal(code, str(status.get("Message", "")))


def build(settings: Settings, http: httpx.AsyncClient) -> TencentSms | None:
    """None until the key, the SMS app id, the signature name and the code template are set."""
    key = settings.tencent_sms_secret_key.get_secret_value()
    if not (settings.tencent_sms_secret_id and key and settings.tencent_sms_sdk_app_id
            and settings.tencent_sms_sign_name and settings.tencent_sms_code_template_id):
        return None
    return TencentSms(http, secret_id=settings.tencent_sms_secret_id, secret_key=key,
                      app_id=settings.tencent_sms_sdk_app_id, sign_name=settings.tencent_sms_sign_name,
                      code_template=settings.tencent_sms_code_template_id,
                      link_template=settings.tencent_sms_link_template_id, region=settings.tencent_sms_region,
                      endpoint=settings.tencent_sms_endpoint)
