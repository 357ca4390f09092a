"""Every input error is a 4xx: a table of hostile and malformed requests over real HTTP.

Each row is one request to the real API under uvicorn (`tests/api_stack.py`: real Temporal dev
server, every platform and provider configured) and the exact status and error code it must get.
Among them every 500 found before this suite existed: a 400-digit `X-SignBridge-Timestamp`, a
download `sig=%C3%A9`, 100,000-deep JSON on the webhook and REST, a 5,000-character
`Idempotency-Key`, a 3,000-character initiator id, a 5,000-digit page number. Where a request
could have started a flow, the test also checks that none started. Inputs that are well-formed
but cannot be signed are accepted and end REJECTED with their reason (the last tests here;
`test_prepare.py` and `test_fetch.py` hold many more of those).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from connectors.chat.dingtalk.inbound import robot_sign
from connectors.chat.feishu.inbound import signature as feishu_signature
from connectors.chat.webhook import signature as webhook_signature
from signbridge.core.settings import Settings
from tests.api_stack import AUTH, PLATFORM_ENV, UPLOAD_LIMIT, ApiStack, api_stack
from tests.provider_cases import docuseal, docusign, dropbox_sign, esign_cn, fadada
from tests.sim.servers import serve
from tests.sim.tcp_proxy import TcpProxy

WEBHOOK = "/im/webhook/events"
REST = "/api/v1/signing-requests"
JSON = {"Content-Type": "application/json"}
PAGE_JSON = {"Accept": "application/json"}
DEEP = b"[" * 100_000 + b"]" * 100_000
BIG = 400 * "9"  # digits: more than a float holds
HUGE = 5000 * "9"  # digits: more than Python turns into an int from text


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    starts: str | None = None  # the flow this request would start if it were accepted


Build = Callable[[ApiStack], Req]


def _event_id() -> str:
    return f"bad-{uuid.uuid4().hex[:12]}"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def message(**overrides: Any) -> dict[str, Any]:
    event = {"event_id": _event_id(), "type": "message", "chat": {"id": "g-1", "kind": "group"},
             "sender": {"id": "u-0", "name": "张三"}, "text": "/sign @李四",
             "mentions": [{"id": "u-1", "name": "李四"}], "files": []}
    return {**event, **overrides}


def webhook(event: dict[str, Any] | bytes, **headers: str) -> Build:
    """A webhook IM event signed with the stack's secret (headers override the signature's)."""
    raw = event if isinstance(event, bytes) else json.dumps(event, ensure_ascii=False).encode()
    starts = None if isinstance(event, bytes) else f"sign:webhook:default:{str(event.get('event_id'))[:200]}"

    def build(s: ApiStack) -> Req:
        signed = webhook_signature.headers(s.settings.webhook_secret.get_secret_value(), raw)
        return Req("POST", WEBHOOK, {**JSON, **signed, **headers}, raw, starts)
    return build


def webhook_ts(timestamp: str) -> Build:
    """A genuine signature over an absurd timestamp: the timestamp is what must be refused."""
    def build(s: ApiStack) -> Req:
        raw = json.dumps(message()).encode()
        sig = webhook_signature.sign(s.settings.webhook_secret.get_secret_value(), 0, raw)
        return Req("POST", WEBHOOK, {**JSON, webhook_signature.TIMESTAMP_HEADER: timestamp,
                                     webhook_signature.SIGNATURE_HEADER: sig}, raw)
    return build


def new_request(**overrides: Any) -> dict[str, Any]:
    return {"title": "合同", "initiator": {"id": "u-0", "name": "张三"},
            "groups": [[{"id": "u-1", "name": "李四"}]], **overrides}


def rest(body: dict[str, Any] | bytes, **headers: str) -> Build:
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return lambda s: Req("POST", REST, {**AUTH, **JSON, **headers}, raw)


def get(path: str | Callable[[ApiStack], str], **headers: str) -> Build:
    return lambda s: Req("GET", path(s) if callable(path) else path, dict(headers))


def post(path: str | Callable[[ApiStack], str], body: bytes | None = None, **headers: str) -> Build:
    return lambda s: Req("POST", path(s) if callable(path) else path, dict(headers), body)


def slack(timestamp: str, sig: str | None = None) -> Build:
    body = json.dumps({"type": "event_callback", "event": {"type": "app_mention"}}).encode()
    secret = PLATFORM_ENV["SIGNBRIDGE_SLACK_SIGNING_SECRET"]
    signature = sig or SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body) or ""
    return post("/im/slack/events", body, **JSON, **{"X-Slack-Request-Timestamp": timestamp,
                                                       "X-Slack-Signature": signature})


def slack_signed(body: bytes) -> Build:
    ts = str(int(time.time()))
    sig = SignatureVerifier(PLATFORM_ENV["SIGNBRIDGE_SLACK_SIGNING_SECRET"]).generate_signature(timestamp=ts, body=body)
    return post("/im/slack/events", body, **JSON, **{"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig or ""})


def feishu(timestamp: str) -> Build:
    body = json.dumps({"encrypt": "AAAA"}).encode()
    key = PLATFORM_ENV["SIGNBRIDGE_FEISHU_ENCRYPT_KEY"]
    return post("/im/feishu/events", body, **JSON, **{
        "X-Lark-Request-Timestamp": timestamp, "X-Lark-Request-Nonce": "n1",
        "X-Lark-Signature": feishu_signature(timestamp, "n1", key, body)})


def dingtalk(timestamp: str) -> Build:
    sign = robot_sign(PLATFORM_ENV["SIGNBRIDGE_DINGTALK_APP_SECRET"], timestamp)
    return post("/im/dingtalk/events", b"{}", **JSON, timestamp=timestamp, sign=sign)


def provider(name: str, delivery: tuple[dict[str, str], bytes]) -> Build:
    headers, body = delivery
    return post(f"/esign/{name}/webhook", body, **headers)


def dropbox(data: dict[str, Any]) -> Build:
    return provider("dropbox_sign", dropbox_sign.encode(data))


def file_link(s: ApiStack, **replace: str) -> str:
    path, _, query = s.file_link().partition("?")
    params = dict(p.split("=", 1) for p in query.split("&"))
    return f"{path}?" + "&".join(f"{k}={v}" for k, v in {**params, **replace}.items())


def page(number: str) -> Build:
    return get(lambda s: f"/sign/{s.tokens[0]}/pages/{number}.png", **PAGE_JSON)


def form(path: Callable[[ApiStack], str], fields: dict[str, str]) -> Build:
    body = httpx.Request("POST", "http://x", data=fields).read()
    return post(path, body, **PAGE_JSON, **{"Content-Type": "application/x-www-form-urlencoded"})


def sign_path(s: ApiStack) -> str:
    return f"/sign/{s.tokens[0]}"


def decline_path(s: ApiStack) -> str:
    return f"/sign/{s.tokens[1]}/decline"


def act(action: str, body: bytes | None = None, **headers: str) -> Build:
    return post(lambda s: f"{REST}/{s.request_id}/{action}", body, **AUTH, **JSON, **headers)


CASES: list[tuple[str, Build, int, str]] = [
    # ---- the generic webhook IM: authentication first, then the shape of the event ---------------
    ("webhook: 400-digit timestamp", webhook_ts(BIG), 401, "bad_signature"),
    ("webhook: 5,000-digit timestamp", webhook_ts(HUGE), 401, "bad_signature"),
    ("webhook: superscript digit timestamp", webhook_ts("²"), 401, "bad_signature"),
    ("webhook: Arabic-Indic digit timestamp", webhook_ts("١٧٠٠٠٠٠٠٠٠"), 401, "bad_signature"),
    ("webhook: negative timestamp", webhook_ts("-1"), 401, "bad_signature"),
    ("webhook: stale timestamp", webhook_ts(str(int(time.time()) - 3600)), 401, "bad_signature"),
    ("webhook: no signature", lambda s: Req("POST", WEBHOOK, JSON, json.dumps(message()).encode()), 401,
     "bad_signature"),
    ("webhook: non-ASCII signature", webhook(message(), **{"X-SignBridge-Signature": "v1=é"}), 401,
     "bad_signature"),
    ("webhook: 2,000 signature candidates", webhook(message(), **{"X-SignBridge-Signature": "v1=00," * 2000}),
     401, "bad_signature"),
    ("webhook: 100,000-deep JSON", webhook(DEEP), 400, "too_deep"),
    ("webhook: 33-deep JSON", webhook(message(text=nested(32))), 400, "too_deep"),
    ("webhook: 5,000-digit number", webhook(b'{"event_id": ' + HUGE.encode() + b"}"), 400, "invalid_json"),
    ("webhook: not JSON", webhook(b"{nope"), 400, "invalid_json"),
    ("webhook: invalid UTF-8", webhook(b'{"a": "\xff"}'), 400, "invalid_json"),
    ("webhook: a JSON array", webhook(b"[]"), 400, "invalid_json"),
    ("webhook: unknown type", webhook(message(type="poll")), 400, "invalid_event"),
    ("webhook: 3,000-character event id", webhook(message(event_id="e" * 3000)), 400, "invalid_event"),
    ("webhook: NUL in the event id", webhook(message(event_id="e\x00vil")), 400, "invalid_event"),
    ("webhook: 3,000-character sender id", webhook(message(sender={"id": "u" * 3000, "name": "x"})), 400,
     "invalid_event"),
    ("webhook: 10 KB mention id", webhook(message(mentions=[{"id": "m" * 10_000, "name": "李四"}])), 400,
     "invalid_event"),
    ("webhook: 101 mentions", webhook(message(mentions=[{"id": f"u-{i}", "name": f"n{i}"} for i in range(101)])),
     400, "invalid_event"),
    ("webhook: 20,000-character text", webhook(message(text="签" * 20_000)), 400, "invalid_event"),
    ("webhook: tenant with a slash", webhook(message(tenant="a/b")), 400, "invalid_event"),
    ("webhook: 3,000-character file URL", webhook(message(files=[{"name": "c.pdf", "url": "https://x/" + "a" * 3000}])),
     400, "invalid_event"),
    ("webhook: action on a 300-character request id",
     webhook({"event_id": _event_id(), "type": "action", "sender": {"id": "u-0"},
              "action": {"request_id": "r" * 300, "name": "cancel"}}), 400, "invalid_event"),
    ("webhook: 2 MB body", webhook(json.dumps(message(text="x" * 2_000_000)).encode()), 413, "too_large"),
    # ---- the other chat platforms: timestamps and signatures that overflow or are not ASCII ---------
    ("slack: 400-digit timestamp", slack(BIG), 401, "bad_signature"),
    ("slack: superscript digit timestamp", slack("²"), 401, "bad_signature"),
    ("slack: non-ASCII signature", slack(str(int(time.time())), sig="v0=é"), 401, "bad_signature"),
    ("slack: 100,000-deep JSON", slack_signed(DEEP), 400, "too_deep"),
    ("feishu: 100,000-deep JSON", post("/im/feishu/events", DEEP, **JSON), 400, "too_deep"),
    ("feishu: genuinely signed 400-digit timestamp", feishu(BIG), 401, "stale"),
    ("dingtalk: genuinely signed 400-digit timestamp", dingtalk(BIG), 401, "stale"),
    ("wecom: 400-digit timestamp", post(f"/im/wecom/events?timestamp={BIG}&nonce=n&msg_signature=s", b"<xml/>"),
     401, "stale"),
    ("wecom: an entity declaration", post(f"/im/wecom/events?timestamp={int(time.time())}&nonce=n&msg_signature=s",
                                          b'<!DOCTYPE x [<!ENTITY a "aaaa">]><xml>&a;</xml>'), 400, "invalid_xml"),
    # ---- provider webhooks ---------------------------------------------------------------------------
    ("provider: unknown", post("/esign/nosuch/webhook", b"{}"), 404, "unknown_provider"),
    ("provider: 100-character name", post(f"/esign/{'p' * 100}/webhook", b"{}"), 422, "invalid_request"),
    ("dropbox sign: 100,000-deep JSON before any check", provider("dropbox_sign", ({**JSON}, DEEP)), 401,
     "bad_signature"),
    ("dropbox sign: event is a list", dropbox({"event": []}), 401, "bad_signature"),
    ("dropbox sign: signed, but the request is a string",
     dropbox({**dropbox_sign.payload("f-1", "u-1", "signature_request_signed"), "signature_request": "x"}), 400,
     "invalid_payload"),
    ("dropbox sign: signed 400-digit event time",
     dropbox(dropbox_sign.payload("f-1", "u-1", "signature_request_signed", event_time=BIG)), 400, "invalid_payload"),
    ("docuseal: signed 400-digit timestamp", provider("docuseal", docuseal._signed(b"{}", ts=10**400)), 401,
     "bad_signature"),
    ("docusign: non-ASCII signature", provider("docusign", ({"X-DocuSign-Signature-1": "é", **JSON}, b"{}")), 401,
     "bad_signature"),
    ("docusign: signed 100,000-deep JSON", provider("docusign", docusign.signed(DEEP)), 401, "bad_signature"),
    ("e签宝: signed 400-digit timestamp", provider("esign_cn", esign_cn._signed({"action": "x"}, ts=10**400)), 401,
     "bad_signature"),
    ("法大大: signed 400-digit timestamp", provider("fadada", fadada.delivery("sign-task-signed", {}, timestamp=BIG)),
     401, "bad_signature"),
    # ---- REST ------------------------------------------------------------------------------------------
    ("rest: no API key", lambda s: Req("GET", REST), 401, "unauthorized"),
    ("rest: non-ASCII API key", get(REST, Authorization="Bearer é"), 401, "unauthorized"),
    ("rest: 100,000-deep JSON", rest(DEEP), 400, "too_deep"),
    ("rest: not JSON", rest(b"{nope"), 400, "invalid_request"),
    ("rest: 5,000-digit number", rest(b'{"reminder_max": ' + HUGE.encode() + b"}"), 400, "invalid_request"),
    ("rest: 5,000-character Idempotency-Key", rest(new_request(), **{"Idempotency-Key": "k" * 5000}), 400,
     "invalid_idempotency_key"),
    ("rest: Idempotency-Key with a space", rest(new_request(), **{"Idempotency-Key": "a b"}), 400,
     "invalid_idempotency_key"),
    ("rest: 3,000-character initiator id", rest(new_request(initiator={"id": "u" * 3000, "name": "张三"})), 400,
     "invalid_request"),
    ("rest: NUL in a signer id", rest(new_request(groups=[[{"id": "u\x00", "name": "李四"}]])), 400,
     "invalid_request"),
    ("rest: 300-character title", rest(new_request(title="题" * 300)), 400, "invalid_request"),
    ("rest: 101 signers", rest(new_request(groups=[[{"id": f"u-{i}", "name": "n"}] for i in range(101)])), 400,
     "invalid_request"),
    ("rest: 101 signers in one group", rest(new_request(groups=[[{"id": f"u-{i}", "name": "n"} for i in range(101)]])),
     400, "invalid_request"),
    ("rest: sha256 that is not hex", rest(new_request(file_sha256="z" * 64)), 400, "invalid_request"),
    ("rest: provider ../x", rest(new_request(provider="../x")), 400, "invalid_request"),
    ("rest: infinite deadline", rest(b'{"title": "t", "initiator": {"id": "u", "name": "n"}, "groups": [],'
                                     b' "deadline_days": 1e999}'), 400, "invalid_request"),
    ("rest: multipart without the request field",
     lambda s: Req("POST", REST, {**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
                   b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--b--\r\n"), 400, "invalid_request"),
    ("rest: upload past the size limit", lambda s: Req("POST", REST, {**AUTH, "Content-Type": "application/pdf"},
                                                       b"%PDF" + b"0" * (UPLOAD_LIMIT + 1024 * 1024)), 413,
     "too_large"),
    ("rest: 300-character request id", get(f"{REST}/{'r' * 300}", **AUTH), 422, "invalid_request"),
    ("rest: unknown request", get(f"{REST}/sign:api:default:nosuch", **AUTH), 404, "not_found"),
    ("rest: unknown action", act("approve"), 422, "invalid_request"),
    ("rest: action with 100,000-deep JSON", act("remind", DEEP), 400, "too_deep"),
    ("rest: action naming 101 signers", act("remind", json.dumps({"signer_ids": [str(i) for i in range(101)]})
                                            .encode()), 422, "invalid_request"),
    ("rest: action with a 5,000-character Idempotency-Key", act("remind", **{"Idempotency-Key": "k" * 5000}), 400,
     "invalid_idempotency_key"),
    ("rest: list limit 0", get(f"{REST}?limit=0", **AUTH), 422, "invalid_request"),
    ("rest: list limit of 5,000 digits", get(f"{REST}?limit={HUGE}", **AUTH), 422, "invalid_request"),
    ("rest: list unknown status", get(f"{REST}?status=HAPPY", **AUTH), 422, "invalid_request"),
    # ---- download links ----------------------------------------------------------------------------------
    ("file: sig=%C3%A9", get(lambda s: file_link(s, sig="%C3%A9")), 403, "invalid_link"),
    ("file: name changed to ../../x.sh", get(lambda s: file_link(s, name="..%2F..%2Fx.sh")), 403, "invalid_link"),
    ("file: 400-digit expiry", get(lambda s: file_link(s, expires=BIG)), 422, "invalid_request"),
    ("file: negative expiry", get(lambda s: file_link(s, expires="-1")), 422, "invalid_request"),
    ("file: 65-character sig", get(lambda s: file_link(s, sig="a" * 65)), 422, "invalid_request"),
    ("file: 2,000-character name", get(lambda s: file_link(s, name="n" * 2000)), 422, "invalid_request"),
    ("file: key with a path", get("/files/..%2F..%2Fetc%2Fpasswd?expires=99999999999&sig=" + "a" * 64), 404,
     "not_found"),
    ("file: key of another file", get(lambda s: file_link(s).replace(s.file_key, "ab" * 32)), 403, "invalid_link"),
    # ---- signing pages -----------------------------------------------------------------------------------
    ("page: 5,000-digit page number", page(HUGE), 404, "page_not_found"),
    ("page: superscript digit", page("²"), 404, "page_not_found"),
    ("page: page 0", page("0"), 404, "page_not_found"),
    ("page: 5,000-character token", get(f"/sign/{'t' * 5000}", **PAGE_JSON), 404, "link_not_found"),
    ("sign: no consent", form(sign_path, {"name": "李四"}), 400, "consent_required"),
    ("sign: someone else's name", form(sign_path, {"name": "王五", "consent": "yes"}), 400, "name_mismatch"),
    ("sign: 2 MB form", form(sign_path, {"name": "x" * 2_000_000}), 413, "too_large"),
    ("code: for an unknown link", form(lambda s: "/sign/not-a-link/code", {}), 404, "link_not_found"),
    ("code: for a signer who needs none", form(lambda s: f"{sign_path(s)}/code", {}), 400, "code_not_needed"),
    ("decline: 600-character reason", form(decline_path, {"reason": "因" * 600}), 400, "reason_too_long"),
    ("decline: no reason", form(decline_path, {"reason": ""}), 400, "reason_required"),
    # ---- any route: URL and headers ------------------------------------------------------------------------
    ("any: a 20 KB header", get("/healthz", **{"X-Padding": "p" * 20_000}), 431, "headers_too_large"),
    ("any: 150 headers", get("/healthz", **{f"X-H{i}": "1" for i in range(150)}), 431, "headers_too_large"),
    ("any: a 10 KB URL", get("/healthz?q=" + "q" * 10_000), 414, "uri_too_long"),
]


@pytest.fixture(scope="module")
async def stack(dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiStack]:
    async with api_stack(dev_env, tmp_path_factory.mktemp("bad-input") / "data") as s:
        yield s


@pytest.fixture(scope="module")
async def http(stack: ApiStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        yield client


async def _exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError:
        return False
    return True


def test_the_table_covers_at_least_60_cases() -> None:
    assert len(CASES) >= 60 and len({name for name, *_ in CASES}) == len(CASES)


@pytest.mark.parametrize("name, build, status, code", CASES, ids=[c[0] for c in CASES])
async def test_bad_input_is_a_4xx_with_its_code(stack: ApiStack, http: httpx.AsyncClient, name: str, build: Build,
                                                status: int, code: str) -> None:
    req = build(stack)
    # Non-ASCII header values go out as the raw UTF-8 bytes an attacker would send.
    headers = {k: v if v.isascii() else v.encode() for k, v in req.headers.items()}
    resp = await http.request(req.method, req.path, headers=headers, content=req.body)
    assert (resp.status_code, resp.headers.get("content-type", "").split(";")[0]) == (status, "application/json"), \
        resp.text[:500]
    assert resp.json()["error"]["code"] == code, resp.text[:500]
    if req.starts:
        assert not await _exists(stack.h.client, req.starts)


async def test_a_body_streamed_without_length_is_cut_at_the_limit(stack: ApiStack, http: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536  # 2.5 MB in all, announced by no Content-Length

    resp = await http.post(WEBHOOK, content=chunks(), headers=JSON)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_large", resp.text


async def test_the_first_signer_s_pages_still_work(stack: ApiStack, http: httpx.AsyncClient) -> None:
    """The table's refusals changed nothing: the link they hammered still opens its page."""
    resp = await http.get(f"/sign/{stack.tokens[0]}/pages/1.png")
    assert resp.status_code == 200 and resp.content.startswith(b"\x89PNG")


# ---- accepted, then REJECTED with the reason the chat is shown ------------------------------------


async def _rejected(stack: ApiStack, request_id: str) -> str:
    view = await stack.h.wait_status(stack.h.client.get_workflow_handle(request_id), "REJECTED", timeout=30)
    return view.reason or ""


async def test_rest_requests_that_cannot_be_signed_end_rejected(stack: ApiStack, http: httpx.AsyncClient) -> None:
    cases = [
        (new_request(groups=[]), "No signers"),
        (new_request(file_url="http://169.254.169.254/latest/meta-data/"), "SIGNBRIDGE_API_FILE_HOSTS"),
        (new_request(groups=[[{"id": "x-1", "name": "客户", "email": "not-an-email", "external": True}]]),
         "not-an-email"),
    ]
    for body, reason in cases:
        resp = await http.post(REST, json=body, headers=AUTH)
        assert resp.status_code == 202, resp.text
        assert reason in await _rejected(stack, resp.json()["request_id"])


async def test_a_rest_upload_that_is_no_pdf_ends_rejected(stack: ApiStack, http: httpx.AsyncClient) -> None:
    resp = await http.post(REST, headers=AUTH, data={"request": json.dumps(new_request())},
                           files={"file": ("合同.pdf", b"GIF89a not a pdf", "application/pdf")})
    assert resp.status_code == 202, resp.text
    assert "PDF" in await _rejected(stack, resp.json()["request_id"])


async def test_webhook_commands_that_cannot_be_signed_end_rejected(stack: ApiStack, http: httpx.AsyncClient) -> None:
    cases = [
        (message(files=[{"name": "c.pdf", "url": "file:///etc/passwd"}]), "c.pdf"),
        (message(mentions=[{"id": "x-1", "name": "客户", "email": "not-an-email", "external": True}],
                 text="/sign @客户", files=[{"name": "c.pdf", "url": "https://im.corp.example/f/1"}]), "not-an-email"),
    ]
    for event, reason in cases:
        req = webhook(event)(stack)
        resp = await http.post(req.path, content=req.body, headers=req.headers)
        assert resp.status_code == 202, resp.text
        assert reason in await _rejected(stack, resp.json()["request_id"])


# ---- Temporal out of reach: REST answers 503 + Retry-After within a chat platform's deadline --------


async def test_rest_answers_503_with_retry_after_while_temporal_is_unreachable(
        dev_env: WorkflowEnvironment, settings: Settings, stack: ApiStack) -> None:
    host, port = dev_env.client.service_client.config.target_host.rsplit(":", 1)
    with TcpProxy(host, int(port)) as proxy:
        client = await Client.connect(proxy.address, data_converter=pydantic_data_converter)
        with serve(create_app(settings, client)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30, headers=AUTH) as http:
                proxy.cut()
                flow = f"{REST}/{stack.request_id}"
                calls = [("POST", REST, new_request()), ("GET", flow, None), ("POST", f"{flow}/remind", None)]
                for method, path, body in calls:
                    began = time.monotonic()
                    resp = await http.request(method, path, json=body)
                    took = time.monotonic() - began
                    assert resp.status_code == 503, (path, resp.text)
                    assert resp.json()["error"]["code"] == "unavailable" and int(resp.headers["Retry-After"]) > 0
                    assert took < 3.5, f"{method} {path} answered after {took:.1f} s"
                listed = await http.get(REST)  # the list reads the database: Temporal is not needed
                assert listed.status_code == 200 and isinstance(listed.json(), list)
                proxy.restore()
