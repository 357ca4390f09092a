"""Aliyun SMS (`dysmsapi` 2017-05-25, `SendSms`) with the V3 request signature (ACS3-HMAC-SHA256).

Why no SDK: the official one is synchronous and pulls in its own HTTP stack; the call is one
signed POST, done here with the shared async `httpx` client and checked against Aliyun's published
signature example (tests/test_notify.py).

The request is what the official SDK sends: POST `/` with every business parameter in the query
string and an empty body. Business refusals come back as HTTP 200 with `Code` other than "OK";
`isv.BUSINESS_LIMIT_CONTROL` (the per-number limits: 1 a minute, 5 an hour, 10 a day by default)
becomes "try again in N s".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import httpx

from connectors.notify.base import Channel, Notice, NotifyError
from signbridge.core.settings import Settings

ALGORITHM = "ACS3-HMAC-SHA256"
ACTION, VERSION = "SendSms", "2017-05-25"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# `Code`s that retrying cannot cure (the number, the account's templates or balance).
PERMANENT = ("isv.MOBILE_NUMBER_ILLEGAL", "isv.SMS_SIGNATURE_ILLEGAL", "isv.SMS_TEMPLATE_ILLEGAL",
             "isv.TEMPLATE_MISSING_PARAMETERS", "isv.AMOUNT_NOT_ENOUGH", "isv.BLACK_KEY_CONTROL_LIMIT",
             "isv.INVALID_PARAMETERS", "SignatureDoesNotMatch", "InvalidAccessKeyId.NotFound")


def _encode(value: str) -> str:
    """RFC 3986: unreserved characters stay, everything else (space too) is %XX."""
    return quote(value, safe="-_.~")


def canonical_request(method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str],
                      body: bytes) -> tuple[str, str]:
    """(canonical request, signed headers) per Aliyun's V3 rules: `host`, `content-type` and every
    `x-acs-*` header are signed, lower-cased and sorted."""
    signed = {k.lower(): v.strip() for k, v in headers.items()
              if k.lower() in ("host", "content-type") or k.lower().startswith("x-acs-")}
    names = sorted(signed)
    canonical_query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(query.items()))
    canonical_headers = "".join(f"{n}:{signed[n]}\n" for n in names)
    signed_headers = ";".join(names)
    return (f"{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n"
            f"{hashlib.sha256(body).hexdigest()}"), signed_headers


def signature(secret: str, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str],
              body: bytes) -> tuple[str, str]:
    """(hex signature, signed headers)."""
    request, signed_headers = canonical_request(method, path, query, headers, body)
    to_sign = f"{ALGORITHM}\n{hashlib.sha256(request.encode()).hexdigest()}"
    return hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest(), signed_headers


def authorization(key_id: str, secret: str, method: str, path: str, query: Mapping[str, str],
                  headers: Mapping[str, str], body: bytes) -> str:
    sig, signed_headers = signature(secret, method, path, query, headers, body)
    return f"{ALGORITHM} Credential={key_id},SignedHeaders={signed_headers},Signature={sig}"


def retry_after_for(code: str, message: str) -> float | None:
    """Seconds until Aliyun's frequency limit lets this number get another message."""
    if code == "isv.BUSINESS_LIMIT_CONTROL":
        if "天级" in message or "day" in message.lower():
            return 86400.0
        if "小时级" in message or "hour" in message.lower():
            return 3600.0
        return 60.0
    if code == "isv.DAY_LIMIT_CONTROL":
        return 86400.0
    if code.startswith("Throttling"):
        return 1.0
    return None


class AliyunSms:
    name = "aliyun_sms"
    channel: Channel = "sms"

    def __init__(self, http: httpx.AsyncClient, *, key_id: str, secret: str, sign_name: str, code_template: str,
                 link_template: str, endpoint: str) -> None:
        self.http = http
        self.key_id = key_id
        self.secret = secret
        self.sign_name = sign_name
        self.templates = {"code": code_template, "link": link_template}
        self.endpoint = endpoint.rstrip("/")

    async def send(self, to: str, notice: Notice, *, key: str) -> None:
        template = self.templates[notice.purpose]
        if not template:
            raise NotifyError(f"no Aliyun SMS template for {notice.purpose} messages "
                              f"(SIGNBRIDGE_ALIYUN_SMS_{notice.purpose.upper()}_TEMPLATE)", permanent=True)
        query = {"PhoneNumbers": to, "SignName": self.sign_name, "TemplateCode": template,
                 "TemplateParam": json.dumps(notice.params, ensure_ascii=False, separators=(",", ":")),
                 "OutId": key[-64:]}
        headers = {"host": urlsplit(self.endpoint).netloc, "x-acs-action": ACTION, "x-acs-version": VERSION,
                   "x-acs-date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                   "x-acs-signature-nonce": secrets.token_hex(16), "x-acs-content-sha256": EMPTY_SHA256}
        headers["Authorization"] = authorization(self.key_id, self.secret, "POST", "/", query, headers, b"")
        try:
            resp = await self.http.post(f"{self.endpoint}/", params=query, headers=headers, content=b"")
        except httpx.TimeoutException as e:
            raise NotifyError(f"Aliyun SMS did not answer: {e}", maybe_delivered=True) from e
        except httpx.HTTPError as e:
            raise NotifyError(f"Aliyun SMS unreachable: {e}") from e
        try:
            body = resp.json()
        except ValueError:
            body = {}
        code, message = str(body.get("Code", "")), str(body.get("Message", ""))
        if resp.status_code == 200 and code == "OK":
            return
        if resp.status_code >= 500:
            raise NotifyError(f"Aliyun SMS answered HTTP {resp.status_code} {code}")
        raise NotifyError(f"Aliyun SMS refused the message: {code or resp.status_code} {message}".strip(),
                          retry_after=retry_after_for(code, message), permanent=code in PERMANENT)


def build(settings: Settings, http: httpx.AsyncClient) -> AliyunSms | None:
    """None until the key, the signature name and the code template are set."""
    secret = settings.aliyun_sms_access_key_secret.get_secret_value()
    if not (settings.aliyun_sms_access_key_id and secret and settings.aliyun_sms_sign_name
            and settings.aliyun_sms_code_template):
        return None
    return AliyunSms(http, key_id=settings.aliyun_sms_access_key_id, secret=secret,
                     sign_name=settings.aliyun_sms_sign_name, code_template=settings.aliyun_sms_code_template,
                     link_template=settings.aliyun_sms_link_template, endpoint=settings.aliyun_sms_endpoint)
