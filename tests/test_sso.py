"""One-tap signing by chat single sign-on, over real HTTP, against each platform's OAuth simulator.

The signing page (ASGI) and the platforms' simulators (real loopback HTTP) play the browser's
round trip by hand: the link opened in the chat's in-app browser → `/sign/<t>/sso` → the
platform's authorize URL → `/sso/<platform>/callback` with the code → back to the page, verified
→ one tap (consent only) signs. A real Temporal dev server receives the signature's event.
Also: someone else's account, a missing/reused/expired state, a callback in another browser, the
webhook IM's assertion (forged, expired, for another link, reused) — each a clear page, nothing
signed, the attempt in the audit trail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlmodel import Session, select
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api.main import create_app
from connectors.chat.webhook import sso as webhook_sso
from connectors.esign.local import LocalProvider
from signbridge.core.models import CreateFlowInput, DocumentInfo, OpenGroupInput, Person, ProviderEvent
from signbridge.core.settings import Settings
from signbridge.core.sso import in_app_browser
from signbridge.pdf.sample import sample_contract
from store import audit
from store.tables import Document, LocalFlow, LocalSigner, SigningRequestRecord, SsoTicket, utcnow
from tests.chat_cases.wecom import AES_KEY
from tests.conftest import make_settings
from tests.sim import oauth
from tests.sim.dingtalk_sim import DingTalkSim, running
from tests.sim.feishu_sim import FeishuSim
from tests.sim.slack_sim import SlackSim
from tests.sim.wecom_sim import WeComSim
from tests.sim.wecom_sim import running as wecom_running

PUBLIC = "http://signbridge.test"
UA = {"feishu": "Mozilla/5.0 (iPhone) AppleWebKit Mobile Lark/7.20.0 LarkLocale/zh_CN",
      "dingtalk": "Mozilla/5.0 (Linux; Android 13) AppleWebKit Mobile AliApp(DingTalk/7.5.0) DingTalk/7.5.0",
      "wecom": "Mozilla/5.0 (iPhone) AppleWebKit Mobile wxwork/4.1.20 MicroMessenger/7.0.1",
      "slack": "Mozilla/5.0 (Macintosh) AppleWebKit Chrome Slack/4.36.140 Electron/28 Slack_SSB/4.36.140"}
WORDS = {"feishu": "飞书", "dingtalk": "钉钉", "wecom": "企业微信", "slack": "Slack"}


@workflow.defn(name="RecordingWorkflow")
class RecordingWorkflow:
    def __init__(self) -> None:
        self.events: list[ProviderEvent] = []

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False, timeout=timedelta(minutes=10))

    @workflow.signal(name="provider_event")
    def provider_event(self, event: ProviderEvent) -> None:
        self.events.append(event)

    @workflow.query(name="events")
    def recorded(self) -> list[ProviderEvent]:
        return self.events


@dataclass
class Platform:
    """A chat platform's simulator with its sign-in desk; `user(n)` is what `Person.id` is there."""

    name: str
    desk: oauth.Desk
    tenant: str
    sim: Any

    def user(self, n: int) -> str:
        return {"feishu": f"ou_{n:04d}", "dingtalk": f"staff{n}", "wecom": f"user{n}", "slack": f"U{n:05d}"}[self.name]


@pytest.fixture(scope="module")
def platforms() -> Iterator[dict[str, Platform]]:
    feishu, dingtalk = FeishuSim("cli_sso", "feishu-secret"), DingTalkSim("ding-key", "ding-secret", "ding-key")
    wecom, slack = WeComSim("wwssocorp", "wecom-secret"), SlackSim("xoxb-sso")
    found = {"feishu": Platform("feishu", oauth.attach_feishu(feishu, tenant_key="tk-1"), "tk-1", feishu),
             "dingtalk": Platform("dingtalk", oauth.attach_dingtalk(dingtalk, corp_id="ding-corp"), "ding-corp",
                                  dingtalk),
             "wecom": Platform("wecom", oauth.attach_wecom(wecom, agent_id=1000002), "wwssocorp", wecom),
             "slack": Platform("slack", oauth.attach_slack(slack, "111.222", "slack-oauth-secret", "T0SSO"), "T0SSO",
                               slack)}
    with feishu, running(dingtalk) as dingtalk_url, wecom_running(wecom) as wecom_url, slack:
        dingtalk.url, wecom.url = dingtalk_url, wecom_url
        for n, name in ((1, "李四"), (2, "王五")):
            feishu.add_user(found["feishu"].user(n), name)
            slack.add_user(found["slack"].user(n), name)
            found["dingtalk"].desk.people[found["dingtalk"].user(n)] = (name, f"union-{n}")  # type: ignore[attr-defined]
            found["dingtalk"].desk.members[f"union-{n}"] = found["dingtalk"].user(n)  # type: ignore[attr-defined]
        yield found


def _environment(monkeypatch: pytest.MonkeyPatch, p: dict[str, Platform]) -> None:
    feishu, dingtalk, wecom, slack = (p[n].sim for n in ("feishu", "dingtalk", "wecom", "slack"))
    for key, value in {
        "FEISHU_APP_ID": "cli_sso", "FEISHU_APP_SECRET": "feishu-secret", "FEISHU_API_BASE": feishu.url,
        "FEISHU_SSO_ENABLED": "true", "FEISHU_SSO_AUTHORIZE_URL": f"{feishu.url}/open-apis/authen/v1/authorize",
        "DINGTALK_APP_KEY": "ding-key", "DINGTALK_APP_SECRET": "ding-secret", "DINGTALK_API_BASE": dingtalk.url,
        "DINGTALK_OAPI_BASE": dingtalk.url, "DINGTALK_SSO_ENABLED": "true",
        "DINGTALK_SSO_AUTHORIZE_URL": f"{dingtalk.url}/oauth2/auth",
        "WECOM_CORP_ID": "wwssocorp", "WECOM_CORP_SECRET": "wecom-secret", "WECOM_AGENT_ID": "1000002",
        "WECOM_TOKEN": "tok", "WECOM_ENCODING_AES_KEY": AES_KEY, "WECOM_API_BASE": wecom.url,
        "WECOM_SSO_ENABLED": "true", "WECOM_SSO_AUTHORIZE_URL": f"{wecom.url}/connect/oauth2/authorize",
        "SLACK_SIGNING_SECRET": "slack-signing", "SLACK_BOT_TOKEN": "xoxb-sso", "SLACK_API_BASE": slack.api_base,
        "SLACK_SSO_CLIENT_ID": "111.222", "SLACK_SSO_CLIENT_SECRET": "slack-oauth-secret",
        "SLACK_SSO_AUTHORIZE_URL": f"{slack.url}/openid/connect/authorize",
        "SLACK_SSO_KEYS_URL": f"{slack.url}/openid/connect/keys",
    }.items():
        monkeypatch.setenv(f"SIGNBRIDGE_{key}", value)


@dataclass
class Stack:
    http: httpx.AsyncClient  # the signer's browser on SignBridge (keeps cookies)
    settings: Settings
    provider: LocalProvider
    env: WorkflowEnvironment

    def browser(self) -> httpx.AsyncClient:
        """Another browser: no cookies of the first."""
        return httpx.AsyncClient(transport=self.http._transport, base_url=PUBLIC, timeout=60)

    async def flow(self, platform: str, tenant: str, signers: list[Person], external: bool = False) -> tuple[str, str]:
        """A request from `platform` with `signers` in one group; (request id, path of the first signer's link)."""
        request_id = f"sign:{platform}:{tenant}:{uuid.uuid4().hex[:10]}"
        pdf = sample_contract(f"SSO {request_id[-10:]}")
        key = self.provider.blobs.put(pdf)
        with Session(self.provider.engine) as s:
            if s.get(Document, key) is None:
                s.add(Document(sha256=key, name="采购合同.pdf", size=len(pdf), blob_key=key))
            s.commit()
        expires = utcnow() + timedelta(days=3)
        flow_id = await self.provider.create_flow(CreateFlowInput(
            request_id=request_id, provider="local", title="采购合同",
            document=DocumentInfo(name="采购合同.pdf", sha256=key, blob_key=key, size=len(pdf), pages=1),
            groups=[signers], expires_at=expires))
        with Session(self.provider.engine) as s:
            s.add(SigningRequestRecord(request_id=request_id, title="采购合同", provider="local",
                                       provider_flow_id=flow_id, chat_platform=platform, tenant=tenant, chat_id="c-1",
                                       source_event_id=request_id, card_key=request_id, initiator_id="u-0"))
            s.commit()
        await self.env.client.start_workflow("RecordingWorkflow", id=request_id, task_queue=self.settings.task_queue,
                                             execution_timeout=timedelta(minutes=10))
        links = await self.provider.open_group(OpenGroupInput(request_id=request_id, provider="local", flow_id=flow_id,
                                                              group=0, signers=signers, expires_at=expires))
        return request_id, urlsplit(links[0].url or "").path

    def trail(self, request_id: str) -> list[tuple[str, dict[str, Any]]]:
        with Session(self.provider.engine) as s:
            return [(r.action, json.loads(r.detail)) for r in audit.trail(s, request_id)]

    def signer(self, request_id: str) -> LocalSigner:
        with Session(self.provider.engine) as s:
            flow = s.exec(select(LocalFlow).where(LocalFlow.request_id == request_id)).one()
            return s.exec(select(LocalSigner).where(LocalSigner.flow_id == flow.flow_id)).first()  # type: ignore[return-value]

    async def events(self, request_id: str) -> list[ProviderEvent]:
        handle = self.env.client.get_workflow_handle(request_id)
        for _ in range(100):
            events: list[ProviderEvent] = await handle.query("events", result_type=list[ProviderEvent])
            if events:
                return events
            await self.http.get("/healthz")  # yield to the event loop without sleeping as an assertion
        return []


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, tmp_path: Any, platforms: dict[str, Platform],
                monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    _environment(monkeypatch, platforms)
    for p in platforms.values():
        p.desk.signed_in = None
    settings = make_settings(tmp_path / "data", public_url=PUBLIC)
    app = create_app(settings, dev_env.client)
    async with app.router.lifespan_context(app), Worker(
        dev_env.client, task_queue=settings.task_queue, workflows=[RecordingWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ), httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("198.51.100.4", 5000)), base_url=PUBLIC,
                         timeout=60) as http:
        assert set(app.state.ssos) == {"feishu", "dingtalk", "wecom", "slack"}
        yield Stack(http, settings, LocalProvider(settings, app.state.engine, app.state.blobs), dev_env)


async def _round_trip(stack: Stack, p: Platform, link: str, browser: httpx.AsyncClient | None = None,
                      keep: list[str] | None = None) -> httpx.Response:
    """Open `link` in the platform's in-app browser and follow the sign-in to its end."""
    http = browser or stack.http
    opened = await http.get(link, headers={"User-Agent": UA[p.name]})
    assert opened.status_code == 303 and opened.headers["location"] == f"{link}/sso", opened.text
    started = await http.get(f"{link}/sso", headers={"User-Agent": UA[p.name]})
    assert started.status_code == 303
    authorize = started.headers["location"]
    async with httpx.AsyncClient(timeout=30) as platform_side:
        back = await platform_side.get(authorize)
    assert back.status_code == 302, back.text
    callback = back.headers["location"]
    assert callback.startswith(f"{PUBLIC}/sso/{p.name}/callback?")
    if keep is not None:
        keep.append(callback)
    return await http.get(callback.removeprefix(PUBLIC), headers={"User-Agent": UA[p.name]})


# ---- one tap, on every platform ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["feishu", "dingtalk", "wecom", "slack"])
async def test_an_internal_signer_signs_with_one_tap(stack: Stack, platforms: dict[str, Platform], name: str) -> None:
    p = platforms[name]
    lisi = Person(id=p.user(1), name="李四")
    request_id, link = await stack.flow(name, p.tenant, [lisi])
    p.desk.signed_in = lisi.id

    done = await _round_trip(stack, p, link)
    assert done.status_code == 303 and done.headers["location"] == link
    cookie = done.headers["set-cookie"]
    assert f"Path={link}" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    page = await stack.http.get(link, headers={"User-Agent": UA[name]})
    assert page.status_code == 200
    assert f"已通过{WORDS[name]}身份验证：李四" in page.text
    assert 'name="name"' not in page.text  # nothing to type

    signed = await stack.http.post(link, data={"consent": "yes"}, headers={"User-Agent": UA[name]})
    assert signed.status_code == 200 and "已签署" in signed.text, signed.text
    [event] = await stack.events(request_id)
    assert (event.kind, event.signer_id) == ("signed", lisi.id)
    actions = stack.trail(request_id)
    [verified] = [d for a, d in actions if a == "signer.sso_verified"]
    assert (verified["method"], verified["subject"], verified["via"]) == (f"chat_sso:{name}", lisi.id, "oauth")
    [signature] = [d for a, d in actions if a == "signer.signed"]
    assert signature["verification"] == f"chat_sso:{name}" and signature["sso_subject"] == lisi.id
    with Session(stack.provider.engine) as s:  # only hashes of the state and the session are kept
        tickets = s.exec(select(SsoTicket).where(SsoTicket.flow_id == stack.signer(request_id).flow_id)).all()
    assert {t.kind for t in tickets} == {"state", "session"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", t.key_hash) for t in tickets)
    session_value = re.search(r"sb_sso=([^;]+)", cookie)
    assert session_value is not None and session_value.group(1) not in {t.key_hash for t in tickets}


@pytest.mark.parametrize("name", ["feishu", "dingtalk", "wecom", "slack"])
async def test_someone_elses_account_is_refused_and_recorded(stack: Stack, platforms: dict[str, Platform],
                                                            name: str) -> None:
    p = platforms[name]
    request_id, link = await stack.flow(name, p.tenant, [Person(id=p.user(1), name="李四")])
    p.desk.signed_in = p.user(2)  # 王五 opened 李四's forwarded link
    refused = await _round_trip(stack, p, link)
    assert refused.status_code == 403
    assert "不是此链接的签署人" in refused.text and "Only 李四 can sign with it" in refused.text
    assert f'href="{link}?manual=1"' in refused.text  # the way on: sign by typed name (李四 only)
    assert "sb_sso=" not in refused.headers.get("set-cookie", "")
    page = await stack.http.get(link + "?manual=1")
    assert page.status_code == 200 and "身份验证：" not in page.text
    assert (await stack.http.post(link, data={"consent": "yes"})).status_code == 400  # no session: a name is needed
    [refusal] = [d for a, d in stack.trail(request_id) if a == "signer.sso_refused"]
    assert (refusal["code"], refusal["subject"], refusal["platform"]) == ("sso_wrong_user", p.user(2), name)
    assert stack.signer(request_id).status == "open"


async def test_another_tenant_with_the_same_user_id_is_refused(stack: Stack, platforms: dict[str, Platform]) -> None:
    """A Feishu open_id is per app, but the request's tenant is checked too: tenant_key must match."""
    p = platforms["feishu"]
    request_id, link = await stack.flow("feishu", "tk-other", [Person(id=p.user(1), name="李四")])
    p.desk.signed_in = p.user(1)
    assert (await _round_trip(stack, p, link)).status_code == 403
    [refusal] = [d for a, d in stack.trail(request_id) if a == "signer.sso_refused"]
    assert refusal["code"] == "sso_wrong_user" and refusal["tenant"] == "tk-1"


async def test_missing_reused_and_expired_state_and_another_browser(stack: Stack,
                                                                    platforms: dict[str, Platform]) -> None:
    p = platforms["feishu"]
    request_id, link = await stack.flow("feishu", p.tenant, [Person(id=p.user(1), name="李四")])
    p.desk.signed_in = p.user(1)
    callbacks: list[str] = []
    assert (await _round_trip(stack, p, link, keep=callbacks)).status_code == 303
    used = callbacks[0].removeprefix(PUBLIC)

    # The same callback again (a replay, or the back button): the state is spent.
    again = await stack.http.get(used)
    assert again.status_code == 403 and "此验证请求已使用过" in again.text
    # No state at all.
    missing = await stack.http.get(re.sub(r"state=[^&]+", "", used))
    assert missing.status_code == 403 and "验证请求无效" in missing.text
    # A fresh round trip finished in another browser (no link cookie): not bound to it, refused.
    other = stack.browser()
    opened = await stack.http.get(f"{link}/sso")
    async with httpx.AsyncClient() as platform_side:
        callback = (await platform_side.get(opened.headers["location"])).headers["location"]
    stolen = await other.get(callback.removeprefix(PUBLIC))
    assert stolen.status_code == 403 and "同一浏览器" in stolen.text
    # A state older than its lifetime.
    opened = await stack.http.get(f"{link}/sso")
    with Session(stack.provider.engine) as s:
        for ticket in s.exec(select(SsoTicket).where(SsoTicket.kind == "state", SsoTicket.used_at == None)).all():  # noqa: E711
            ticket.expires_at = utcnow() - timedelta(seconds=1)
            s.add(ticket)
        s.commit()
    async with httpx.AsyncClient() as platform_side:
        callback = (await platform_side.get(opened.headers["location"])).headers["location"]
    late = await stack.http.get(callback.removeprefix(PUBLIC))
    assert late.status_code == 403 and "验证超时" in late.text

    codes = [d["code"] for a, d in stack.trail(request_id) if a == "signer.sso_refused"]
    assert codes == ["sso_state_used", "sso_state_invalid", "sso_other_browser", "sso_state_expired"]
    assert stack.signer(request_id).status == "open"


async def test_a_used_or_expired_code_at_the_platform_is_refused(stack: Stack, platforms: dict[str, Platform]) -> None:
    """The platform refuses the exchange (Slack `invalid_code`, Feishu `invalid_grant`, …): a clear page."""
    for name in ("slack", "feishu", "dingtalk", "wecom"):
        p = platforms[name]
        request_id, link = await stack.flow(name, p.tenant, [Person(id=p.user(1), name="李四")])
        p.desk.signed_in = p.user(1)
        await stack.http.get(link, headers={"User-Agent": UA[name]})
        started = await stack.http.get(f"{link}/sso")
        async with httpx.AsyncClient() as platform_side:
            callback = (await platform_side.get(started.headers["location"])).headers["location"]
        p.desk.expire_codes()
        refused = await stack.http.get(callback.removeprefix(PUBLIC))
        assert refused.status_code == 403 and "登录凭证无效或已使用" in refused.text, (name, refused.text)
        assert [d["code"] for a, d in stack.trail(request_id) if a == "signer.sso_refused"] == ["sso_code_invalid"]


async def test_people_outside_the_organisation_are_refused(stack: Stack, platforms: dict[str, Platform]) -> None:
    wecom, dingtalk, feishu = platforms["wecom"], platforms["dingtalk"], platforms["feishu"]
    wecom.desk.outsiders.add("guest")  # type: ignore[attr-defined]
    dingtalk.desk.people["guest"] = ("访客", "union-guest")  # type: ignore[attr-defined]
    feishu.sim.no_permission.add(feishu.user(1))
    try:
        for p, signed_in, code in ((wecom, "guest", "sso_not_member"), (dingtalk, "guest", "sso_not_member"),
                                   (feishu, feishu.user(1), "sso_no_permission")):
            request_id, link = await stack.flow(p.name, p.tenant, [Person(id=p.user(1), name="李四")])
            p.desk.signed_in = signed_in
            refused = await _round_trip(stack, p, link)
            assert refused.status_code == 403, (p.name, refused.text)
            assert [d["code"] for a, d in stack.trail(request_id) if a == "signer.sso_refused"] == [code]
    finally:
        feishu.sim.no_permission.clear()


async def test_no_chat_sign_in_where_it_does_not_fit(stack: Stack, platforms: dict[str, Platform]) -> None:
    """An external signer, or a link opened in an ordinary browser: no automatic redirect; in an
    ordinary browser the page offers the sign-in as a button instead; `manual=1` stays put."""
    p = platforms["feishu"]
    _, external = await stack.flow("feishu", p.tenant, [Person(id="ext-1", name="王总", external=True,
                                                               email="wang@customer.example")])
    page = await stack.http.get(external, headers={"User-Agent": UA["feishu"]})
    assert page.status_code == 200 and "通过飞书验证身份" not in page.text
    assert (await stack.http.get(f"{external}/sso")).status_code == 404
    _, internal = await stack.flow("feishu", p.tenant, [Person(id=p.user(1), name="李四")])
    plain = await stack.http.get(internal, headers={"User-Agent": "Mozilla/5.0 (X11; Linux) Chrome/120"})
    assert plain.status_code == 200 and f'href="{internal}/sso"' in plain.text and "通过飞书验证身份" in plain.text
    assert (await stack.http.get(internal + "?manual=1", headers={"User-Agent": UA["feishu"]})).status_code == 200
    assert (await stack.http.get(internal + "?via=feishu")).status_code == 303  # the chat link's own flag
    view = (await stack.http.get(internal, headers={"Accept": "application/json"})).json()
    assert view["verified"] is None and view["sso"]["url"] == f"{internal}/sso"


def test_in_app_browsers_are_recognised() -> None:
    assert {name: in_app_browser(ua) for name, ua in UA.items()} == {n: n for n in UA}
    assert in_app_browser("Mozilla/5.0 (iPhone) Safari/604.1") is None and in_app_browser(None) is None


# ---- the webhook IM's signed assertion ---------------------------------------------------------------


def _assertion(secret: str, claims: dict[str, Any]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{payload}.{hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()}"


async def test_the_webhook_assertion_signs_with_one_tap_once(stack: Stack) -> None:
    secret = stack.settings.webhook_secret.get_secret_value()
    request_id, link = await stack.flow("webhook", "default", [Person(id="u-lisi", name="李四")])
    good = _assertion(secret, {"sub": "u-lisi", "exp": int(time.time()) + 300, "aud": f"{PUBLIC}{link}"})
    opened = await stack.http.get(f"{link}?sso={good}")
    assert opened.status_code == 303 and opened.headers["location"] == link
    page = await stack.http.get(link)
    assert "已通过公司聊天工具身份验证：李四" in page.text and 'name="name"' not in page.text
    # The same assertion in another browser: used once already.
    reused = await stack.browser().get(f"{link}?sso={good}")
    assert reused.status_code == 403 and "此身份凭证已使用过" in reused.text
    # In this browser (a reload of the address the chat opened): the session is there, back to the page.
    assert (await stack.http.get(f"{link}?sso={good}")).status_code == 303
    signed = await stack.http.post(link, data={"consent": "yes"})
    assert signed.status_code == 200 and "已签署" in signed.text
    actions = stack.trail(request_id)
    assert [d["code"] for a, d in actions if a == "signer.sso_refused"] == ["sso_assertion_used"]
    [signature] = [d for a, d in actions if a == "signer.signed"]
    assert signature["verification"] == "chat_sso:webhook"


async def test_forged_expired_misdirected_and_wrong_user_assertions_are_refused(stack: Stack) -> None:
    secret = stack.settings.webhook_secret.get_secret_value()
    request_id, link = await stack.flow("webhook", "default", [Person(id="u-lisi", name="李四")])
    now = int(time.time())
    cases = {
        "forged": (_assertion("not-the-secret", {"sub": "u-lisi", "exp": now + 300}), "sso_assertion_invalid"),
        "expired": (_assertion(secret, {"sub": "u-lisi", "exp": now - 1}), "sso_assertion_expired"),
        "far future": (_assertion(secret, {"sub": "u-lisi", "exp": now + 86400}), "sso_assertion_invalid"),
        "other link": (_assertion(secret, {"sub": "u-lisi", "exp": now + 300, "aud": f"{PUBLIC}/sign/other"}),
                       "sso_assertion_invalid"),
        "wrong user": (_assertion(secret, {"sub": "u-wangwu", "exp": now + 300}), "sso_wrong_user"),
        "garbage": ("not-an-assertion", "sso_assertion_invalid"),
    }
    for what, (assertion, _) in cases.items():
        resp = await stack.http.get(link, params={"sso": assertion})
        assert resp.status_code == 403, what
        assert "sb_sso=" not in resp.headers.get("set-cookie", ""), what
        assert f'href="{link}?manual=1"' in resp.text
    codes = [d["code"] for a, d in stack.trail(request_id) if a == "signer.sso_refused"]
    assert codes == [code for _, code in cases.values()]
    assert (await stack.http.post(link, data={"consent": "yes"})).status_code == 400  # nothing verified
    assert stack.signer(request_id).status == "open"


async def test_an_assertion_for_an_external_signer_is_not_a_verification(stack: Stack) -> None:
    secret = stack.settings.webhook_secret.get_secret_value()
    request_id, link = await stack.flow("webhook", "default", [Person(id="x-kehu", name="客户A", external=True,
                                                                      email="a@customer.example")])
    opened = await stack.http.get(link, params={"sso": _assertion(secret, {"sub": "x-kehu",
                                                                           "exp": int(time.time()) + 60})})
    assert opened.status_code == 303 and "sb_sso=" not in opened.headers.get("set-cookie", "")
    page = await stack.http.get(link)
    assert "身份验证：" not in page.text and 'name="name"' in page.text
    assert [a for a, _ in stack.trail(request_id) if a.startswith("signer.sso")] == ["signer.sso_not_used"]


def test_assertion_check_vectors() -> None:
    """The assertion format company chats use: base64url JSON (padding optional), hex HMAC-SHA256."""
    payload = "eyJzdWIiOiJ1LWxpc2kiLCJleHAiOjE2MDB9"  # {"sub":"u-lisi","exp":1600}
    sig = hmac.new(b"s3cret", payload.encode(), hashlib.sha256).hexdigest()
    identity, exp = webhook_sso.verify("s3cret", f"{payload}.{sig}", now=1000, audience="x")
    assert (identity.user_id, exp) == ("u-lisi", 1600)
    with pytest.raises(Exception, match="signature"):
        webhook_sso.verify("s3cret", f"{payload}.{sig[:-1]}0", now=1000, audience="x")
    with pytest.raises(Exception, match="expired"):
        webhook_sso.verify("s3cret", f"{payload}.{sig}", now=1600, audience="x")


def test_slack_authorize_url_matches_the_sdk_vector() -> None:
    """slack_sdk's OpenIDConnectAuthorizeUrlGenerator test vector, parameter for parameter."""
    from connectors.chat.slack.client import SlackConfig
    from connectors.chat.slack.sso import SlackSso, SlackSsoConfig

    sso = SlackSso(SlackConfig(), SlackSsoConfig(client_id="111.222", client_secret="x"),  # type: ignore[call-arg]
                   httpx.AsyncClient())
    url = sso.authorize_url("https://www.example.com/oidc/callback", "state-value", "nnn", tenant="T12345")
    expected = ("https://slack.com/openid/connect/authorize?response_type=code&state=state-value&client_id=111.222"
                "&scope=openid&redirect_uri=https://www.example.com/oidc/callback&team=T12345&nonce=nnn")
    ours, theirs = parse_qs(urlsplit(url).query), parse_qs(urlsplit(expected).query)
    assert url.split("?")[0] == expected.split("?")[0]
    assert {k: v for k, v in ours.items() if k != "scope"} == {k: v for k, v in theirs.items() if k != "scope"}
    assert ours["scope"] == ["openid,profile"]  # we ask for the name too (comma separated, as the SDK joins)
