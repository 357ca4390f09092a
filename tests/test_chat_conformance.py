"""Every chat platform's callbacks, over real HTTP, through the real API app and intake, against a
real Temporal dev server.

Parametrised over the `Case` of every module in `tests/chat_cases/` (see its docstring for the
contract). A stand-in `SigningWorkflow` with the real update names and validators shows what
reached Temporal — the started flow's input, the updates it accepted and from whom — without
signing anything; the platforms' simulators answer the directory lookups the callbacks make.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

import tests.chat_cases
from api.main import create_app
from signbridge.core.settings import Settings
from store.db import get_engine
from tests.chat_cases import ChatCase, Rig, rig_for
from tests.sim.servers import serve
from tests.sim.tcp_proxy import TcpProxy

CASES = sorted(info.name for info in pkgutil.iter_modules(tests.chat_cases.__path__))


def _case(name: str) -> ChatCase:
    case: ChatCase = importlib.import_module(f"tests.chat_cases.{name}").Case()
    return case


@pytest.fixture(params=CASES)
async def rig(request: pytest.FixtureRequest, dev_env: WorkflowEnvironment, settings: Settings,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    async with rig_for(_case(request.param), dev_env, settings, monkeypatch) as r:
        yield r


def _event_id() -> str:
    return f"e{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("name", [n for n in CASES if _case(n).has_handshake])
async def test_the_platforms_url_check_is_answered(name: str, dev_env: WorkflowEnvironment, settings: Settings,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    async with rig_for(_case(name), dev_env, settings, monkeypatch) as r:
        call, check = r.case.handshake()
        check(await r.send(call))


@pytest.mark.parametrize("name", [n for n in CASES if not _case(n).always_on])
async def test_a_platform_without_its_secrets_is_not_there(name: str, dev_env: WorkflowEnvironment,
                                                           settings: Settings) -> None:
    """Nothing configured (this process's environment has no SIGNBRIDGE_<PLATFORM>_*): 404."""
    case = _case(name)
    with case.simulator(), serve(create_app(settings, dev_env.client)) as url:
        async with httpx.AsyncClient(timeout=10) as http:
            call = case.command(_event_id())
            resp = await http.request(call.method, url + call.path, content=call.body, headers=dict(call.headers),
                                      params=dict(call.params))
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_configured", resp.text


async def test_forged_stale_and_unsigned_callbacks_start_nothing(rig: Rig) -> None:
    for signing in ("forged", "stale", "unsigned"):
        event_id = _event_id()
        resp = await rig.send(rig.case.command(event_id, signing))
        assert resp.status_code == 401, (signing, resp.text)
        assert not await rig.exists(rig.case.request_id(event_id)), signing
    event_id = _event_id()  # the same command, genuine
    rig.case.accepted(await rig.send(rig.case.command(event_id)))
    assert await rig.exists(rig.case.request_id(event_id))


async def test_a_command_starts_one_flow_however_often_it_is_delivered(rig: Rig) -> None:
    event_id = _event_id()
    call = rig.case.command(event_id)
    first, again = await asyncio.gather(rig.send(call), rig.send(call))  # a redelivery racing the first one
    rig.case.accepted(first)
    rig.case.accepted(again)
    rig.case.accepted(await rig.send(call))
    request_id = rig.case.request_id(event_id)
    assert await rig.runs(request_id) == 1
    req = await rig.started_input(request_id)
    assert (req.chat.platform, req.chat.tenant, req.chat.source_event_id) == (rig.case.platform, rig.case.tenant,
                                                                               event_id)
    assert req.initiator.id == rig.case.initiator and req.initiator.name
    assert [[p.id for p in group] for group in req.groups] == [[rig.case.signers[0]], [rig.case.signers[1]]]
    assert req.timing == rig.settings.timing() and req.provider == rig.settings.default_provider
    assert req.documents == [] and req.problem == rig.case.no_file  # no file seen: the flow only says so


async def test_a_file_then_a_command_signs_that_file(rig: Rig) -> None:
    file_event = _event_id()
    rig.case.accepted(await rig.send(rig.case.file(file_event)))
    assert not await rig.exists(rig.case.request_id(file_event))  # a file alone is no command
    event_id = _event_id()
    rig.case.accepted(await rig.send(rig.case.command(event_id)))
    req = await rig.started_input(rig.case.request_id(event_id))
    assert req.documents == [rig.case.file_source] and req.problem is None
    assert req.title == rig.case.file_source.name


async def test_card_buttons_act_as_the_clicker(rig: Rig) -> None:
    event_id = _event_id()
    rig.case.accepted(await rig.send(rig.case.command(event_id)))
    request_id = rig.case.request_id(event_id)
    assert await rig.exists(request_id)
    rig.case.prepare_card(get_engine(rig.settings.sqlalchemy_url), request_id)

    rig.case.refused(await rig.send(rig.case.click(request_id, "cancel", rig.case.stranger)))
    click = rig.case.click(request_id, "remind", rig.case.initiator)
    rig.case.accepted(await rig.send(click))
    rig.case.accepted(await rig.send(click))  # the platform delivers the click again: applied once
    assert await rig.applied(request_id) == [("remind", rig.case.initiator)]


async def test_temporal_out_of_reach_is_busy_then_the_redelivery_starts_one_flow(
        dev_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = dev_env.client.service_client.config.target_host.rsplit(":", 1)
    for name in CASES:
        with TcpProxy(host, int(port)) as proxy:
            async with rig_for(_case(name), dev_env, settings, monkeypatch, temporal_address=proxy.address) as r:
                event_id = _event_id()
                call = r.case.command(event_id)
                proxy.cut()
                began = time.monotonic()
                resp = await r.send(call)
                took = time.monotonic() - began
                assert took < r.case.answer_within, f"{name} answered after {took:.1f} s"
                r.case.busy(resp)
                assert not await r.exists(r.case.request_id(event_id))
                proxy.restore()
                for _ in range(40):  # the platform delivers again until it is taken
                    resp = await r.send(call)
                    if resp.status_code != 503:
                        break
                    await asyncio.sleep(0.5)
                r.case.accepted(resp)
                assert await r.runs(r.case.request_id(event_id)) == 1


async def test_someone_from_outside_the_company_becomes_an_external_signer(rig: Rig) -> None:
    """Each platform's way of marking people of another company (a Feishu external group's tenant,
    a DingTalk cross-org group, a WeCom customer, a Slack Connect user) ends as `Person(external=True)`
    reached by the contact given — never looked up in the company directory."""
    event_id = _event_id()
    rig.case.accepted(await rig.send(rig.case.external_command(event_id)))
    req = await rig.started_input(rig.case.request_id(event_id))
    assert req.problem in (None, rig.case.no_file), req.problem
    assert [[p.id for p in g] for g in req.groups] == [[rig.case.signers[0]], [rig.case.outsider]]
    (inside,), (outside,) = req.groups
    assert not inside.external
    field, value = rig.case.outsider_contact
    assert outside.external and getattr(outside, field) == value, outside
    assert (outside.name and outside.name != outside.id) or rig.case.platform == "wecom", outside
    asked = rig.case.looked_up()
    assert asked is None or rig.case.outsider not in asked, asked


@pytest.mark.parametrize("name", [n for n in CASES if _case(n).departure("x") is not None])
async def test_a_departure_event_flags_the_signer_on_open_flows(name: str, dev_env: WorkflowEnvironment,
                                                               settings: Settings,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Feishu `contact.user.deleted_v3`, DingTalk `user_leave_org`, WeCom `change_contact`/`delete_user`:
    the person is departed in the directory cache and every open flow waiting for them is told."""
    from store.repos import identities

    async with rig_for(_case(name), dev_env, settings, monkeypatch) as r:
        event_id = _event_id()
        r.case.accepted(await r.send(r.case.command(event_id)))
        request_id = r.case.request_id(event_id)
        assert await r.exists(request_id)
        first = r.case.signers[0]
        for _ in range(100):  # visibility shows the flow's pending signers
            if [w async for w in r.client.list_workflows(f"WorkflowId = '{request_id}' AND PendingSigners = "
                                                          f"'{first}'")]:
                break
            await asyncio.sleep(0.1)
        call = r.case.departure(first)
        assert call is not None
        r.case.departure_answered(await r.send(call))
        handle = r.client.get_workflow_handle(request_id)
        for _ in range(100):
            if await handle.query("departed") == [first]:
                break
            await asyncio.sleep(0.1)
        assert await handle.query("departed") == [first]
        row = identities.find(get_engine(r.settings.sqlalchemy_url), r.case.platform, r.case.tenant, first)
        assert row is not None and not row.active


async def test_a_wecom_customer_group_and_a_dingtalk_sender_from_another_org(
        dev_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform-specific marks beside the shared test: in a WeCom customer group (`wr…`) a name
    the directory does not know is a customer (external, named as typed); a DingTalk sender of
    another org (no `senderStaffId`, another `senderCorpId`) is an external initiator."""
    import time as clock

    from tests.chat_cases import dingtalk, wecom

    async with rig_for(_case("wecom"), dev_env, settings, monkeypatch) as r:
        event_id = _event_id()
        inner = (f"<xml><ToUserName><![CDATA[{wecom.CORP}]]></ToUserName><FromUserName><![CDATA[zhangsan]]>"
                 f"</FromUserName><CreateTime>{int(clock.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                 "<Content><![CDATA[/sign @lisi > @王总 wang@customer.example]]></Content>"
                 f"<ChatId><![CDATA[wrCustomerGroup0001]]></ChatId><MsgId>{event_id}</MsgId></xml>")
        r.case.accepted(await r.send(wecom.posted(inner)))
        req = await r.started_input(r.case.request_id(event_id))
        (inside,), (customer,) = req.groups
        assert (inside.id, inside.external) == ("lisi", False)
        assert (customer.id, customer.name, customer.email, customer.external) == (
            "王总", "王总", "wang@customer.example", True)

    async with rig_for(_case("dingtalk"), dev_env, settings, monkeypatch) as r:
        event_id = _event_id()
        body = dingtalk.text_message("@SignBridge sign @李四 13812341234", event_id, sender="", at=("lisi",))
        body.update(senderId="$:LWCP_v1:$partner", senderNick="合作方王经理", senderCorpId="dingpartnercorp")
        r.case.accepted(await r.send(dingtalk.robot(body)))
        req = await r.started_input(r.case.request_id(event_id))
        assert (req.initiator.id, req.initiator.external) == ("$:LWCP_v1:$partner", True)
        assert [[p.id for p in g] for g in req.groups] == [["lisi"]]
        assert "$:LWCP_v1:$partner" not in r.case.looked_up()  # type: ignore[operator]
