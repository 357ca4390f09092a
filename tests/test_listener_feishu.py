"""Feishu/Lark long connection (`signbridge chat-listener --platform feishu`) over a real WebSocket.

The unmodified `lark_oapi.ws.Client` talks to the long-connection simulator
(`tests/sim/feishu_ws.py`: endpoint bootstrap, pbbp2 frames, pings, acks, redelivery); the flows
run on the real Temporal dev server, with the real worker against the Open API simulator
(`tests/sim/feishu_sim.py`) where a flow must move. Checked: the ack leaves only after the
`InboundEvent` row is committed, a redelivered event (sent twice, or again because its ack came
late) is stored and handled once, a card button reaches the flow as an update and its toast
rides on the ack, wrong credentials are one clear error, and the CLI process receives an event
and stops on SIGTERM with exit code 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from connectors.chat.feishu import stream as feishu_stream
from connectors.chat.feishu.client import FeishuChat, FeishuConfig
from connectors.chat.feishu.inbound import FeishuInbound
from connectors.chat.feishu.stream import CredentialsRejected, FeishuListener
from connectors.chat.inbox import Inbox
from signbridge.cli import chat_listener as listener_run
from signbridge.core.models import DocumentSource, SigningRequest, StatusView
from signbridge.core.settings import Settings
from signbridge.intake import Intake
from signbridge.pdf.sample import sample_contract
from store.db import create_all, get_engine
from store.repos import chat_files
from store.tables import InboundEvent
from tests.chat_cases import exists
from tests.chat_cases.feishu import TENANT, card_event, command_event, file_event
from tests.listener_process import listener_process
from tests.sim.feishu_sim import FeishuSim
from tests.sim.feishu_ws import Ack, FeishuWsSim, running
from tests.test_feishu import feishu_config
from worker import build_worker

APP_ID, APP_SECRET = "cli_test", "secret"  # what tests.test_feishu's FeishuSim and feishu_config use


def inbound(engine: Engine, event_id: str, platform: str = "feishu") -> list[InboundEvent]:
    with Session(engine) as session:
        return list(session.exec(select(InboundEvent).where(InboundEvent.platform == platform,
                                                            InboundEvent.event_id == event_id)))


async def started_request(client: Client, request_id: str, timeout: float = 20) -> SigningRequest:
    """The `SigningRequest` the flow was started with, once it exists."""
    end = time.monotonic() + timeout
    while not await exists(client, request_id):
        assert time.monotonic() < end, f"no workflow {request_id}"
        await asyncio.sleep(0.05)
    history = await client.get_workflow_handle(request_id).fetch_history()
    attrs = history.events[0].workflow_execution_started_event_attributes
    return SigningRequest.model_validate_json(attrs.input.payloads[0].data)


async def wait_status(client: Client, request_id: str, status: str, timeout: float = 30) -> StatusView:
    handle = client.get_workflow_handle(request_id)
    end = time.monotonic() + timeout
    while True:
        view: StatusView = await handle.query("status", result_type=StatusView)
        if view.status.value == status:
            return view
        assert time.monotonic() < end, f"{request_id} is {view.status.value}, expected {status}"
        await asyncio.sleep(0.1)


async def flows(client: Client, request_id: str) -> int:
    return len([w async for w in client.list_workflows(f"WorkflowId = '{request_id}'")])


@dataclass
class Stack:
    ws: FeishuWsSim
    engine: Engine
    settings: Settings
    client: Client
    listener: FeishuListener
    inbox: Inbox | None = None
    calls: list[str] = field(default_factory=list)  # event ids the handler was called with

    def committed_when_acked(self, ack: Ack) -> str | None:
        """`on_ack`: the InboundEvent row's status when the ack arrived (None: not committed)."""
        checker = create_engine(self.settings.sqlalchemy_url)  # a connection of the simulator's own
        try:
            rows = inbound(checker, ack.event_id)
        finally:
            checker.dispose()
        return rows[0].status if rows else None

    async def send(self, event: dict[str, Any]) -> Ack:
        """Deliver one event over the long connection; its first ack."""
        event_id = feishu_stream.event_id(event)
        self.ws.deliver(event)
        return await self.ws.wait_ack(event_id)


@asynccontextmanager
async def ws_stack(dev_env: WorkflowEnvironment, settings: Settings, *, contract: bytes | None = None,
                   ack_timeout: float = 3.0, inbox_class: type[Inbox] = Inbox) -> AsyncIterator[Stack]:
    """The long-connection simulator + the listener (with its inbox and drain loop, as the CLI serves it).

    With `contract`, also the Open API simulator and the real worker, so flows move.
    """
    ws = FeishuWsSim(APP_ID, APP_SECRET, ack_timeout=ack_timeout)
    async with AsyncExitStack() as stack:
        base = stack.enter_context(running(ws))
        settings = settings.model_copy(update={"step_retry_window": timedelta(seconds=20),
                                               "public_url": "http://127.0.0.1:9"})
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = get_engine(settings.sqlalchemy_url)
        create_all(engine)
        config = FeishuConfig(app_id=APP_ID, app_secret=SecretStr(APP_SECRET), api_base=base)
        s = Stack(ws, engine, settings, dev_env.client, FeishuListener(config))
        ws.on_ack = s.committed_when_acked
        if contract is not None:
            api = stack.enter_context(FeishuSim())
            api.add_user("ou_init", "张三", email="zs@corp.example")
            api.add_user("ou_a", "李四", email="ls@corp.example")
            api.add_file("om_file", "file_v2_1", contract)
            chat = FeishuChat(feishu_config(api.url), engine)
            worker = await stack.enter_async_context(build_worker(dev_env.client, settings, chats={"feishu": chat}))
            await stack.enter_async_context(worker)
        real = listener_run.handler_for(FeishuInbound(config), feishu_stream.parse,
                                        Intake(dev_env.client, settings, engine))

        async def counting(payload: dict[str, Any]) -> Any:
            s.calls.append(feishu_stream.event_id(payload))
            return await real(payload)

        s.inbox = inbox_class(engine, {"feishu": counting})
        stop = asyncio.Event()
        served = asyncio.create_task(listener_run.serve([s.listener], s.inbox, stop))
        try:
            await ws.wait_for(lambda: ws.connected or served.done(), 15)
            assert ws.connected, served
            yield s
        finally:
            stop.set()
            await asyncio.wait_for(served, 20)  # a listener crash fails the test here
            await ws.wait_for(lambda: not ws.connected, 5)  # the socket was closed on stop


async def test_file_then_sign_command_over_the_long_connection(dev_env: WorkflowEnvironment,
                                                               settings: Settings) -> None:
    async with ws_stack(dev_env, settings) as s:
        file = file_event("oc_ws1", "ou_init", "om_f1", "file_1", name="采购合同.pdf")
        file_ack = await s.send(file)
        command = command_event("oc_ws1", "ou_init", "@_user_1 sign @_user_2 > @_user_3 title:采购合同",
                                [("@_user_2", "ou_a", "李四"), ("@_user_3", "ou_b", "王五")])
        command_ack = await s.send(command)
        request_id = f"sign:feishu:{TENANT}:{command['header']['event_id']}"
        req = await started_request(s.client, request_id)
        assert req.documents == [DocumentSource(name="采购合同.pdf", url="feishu://om_f1/file_1")]
        assert [[p.id for p in g] for g in req.groups] == [["ou_a"], ["ou_b"]]
        assert req.title == "采购合同" and req.initiator.id == "ou_init" and req.problem is None
        assert req.chat.chat_id == "oc_ws1" and req.chat.source_event_id == command["header"]["event_id"]
        # each ack left only after its row was committed (checked by the simulator on arrival)
        assert file_ack.code == command_ack.code == 200
        assert file_ack.checked in ("stored", "handled") and command_ack.checked in ("stored", "handled")
        await s.ws.wait_for(lambda: inbound(s.engine, command["header"]["event_id"])[0].status == "handled")
        assert inbound(s.engine, file["header"]["event_id"])[0].status == "handled"
        assert chat_files.in_message(s.engine, platform="feishu", tenant=TENANT, chat_id="oc_ws1",
                                     message_id="om_f1") == [chat_files.Posted("采购合同.pdf", "feishu://om_f1/file_1")]
        assert s.ws.pings >= 1 and s.ws.endpoint_calls[0]["body"] == {"AppID": APP_ID, "AppSecret": APP_SECRET}
        await s.client.get_workflow_handle(request_id).terminate("test done")

        # the server drops the socket: the SDK fetches a new endpoint and reconnects; events flow again
        s.ws.drop()
        await s.ws.wait_for(lambda: s.ws.connections == 2 and s.ws.connected)
        again = file_event("oc_ws1", "ou_init", "om_f2", "file_2")
        assert (await s.send(again)).checked in ("stored", "handled")
        assert len(s.ws.endpoint_calls) == 2


class SlowInbox(Inbox):
    """Commits `slow_id` only after the simulator redelivered it (its ack was too late)."""

    slow_id = ""
    sim: FeishuWsSim | None = None

    def store(self, platform: str, event_id: str, payload: dict[str, Any]) -> bool:
        if event_id == self.slow_id and self.sim is not None:
            sim, self.sim = self.sim, None  # only the first delivery is slow
            end = time.monotonic() + 10
            while len(sim.deliveries_of(event_id)) < 2:  # blocks the listener, as a stuck database would
                assert time.monotonic() < end, "the simulator did not redeliver"
                time.sleep(0.02)
        return super().store(platform, event_id, payload)


async def test_redelivered_events_are_stored_and_handled_once(dev_env: WorkflowEnvironment,
                                                              settings: Settings) -> None:
    async with ws_stack(dev_env, settings, ack_timeout=0.5, inbox_class=SlowInbox) as s:
        mentions = [("@_user_2", "ou_a", "李四")]
        # 1. Feishu delivers the same event twice: both acked, one row, one flow, handled once
        twice = command_event("oc_ws2", "ou_init", "@_user_1 sign @_user_2", mentions)
        event_id = twice["header"]["event_id"]
        s.ws.deliver(twice)
        s.ws.deliver(twice)
        await s.ws.wait_for(lambda: len(s.ws.acks_for(event_id)) == 2)
        request_id = f"sign:feishu:{TENANT}:{event_id}"
        await started_request(s.client, request_id)
        await s.ws.wait_for(lambda: inbound(s.engine, event_id)[0].status == "handled")
        assert [a.code for a in s.ws.acks_for(event_id)] == [200, 200]
        assert all(a.checked is not None for a in s.ws.acks_for(event_id))

        # 2. the ack comes late (the commit was slow): the simulator redelivers; still one flow
        late = command_event("oc_ws3", "ou_init", "@_user_1 sign @_user_2", mentions)
        late_id = late["header"]["event_id"]
        assert isinstance(s.inbox, SlowInbox)
        s.inbox.slow_id, s.inbox.sim = late_id, s.ws
        s.ws.deliver(late)
        await s.ws.wait_for(lambda: len(s.ws.acks_for(late_id)) == 2)
        late_request = f"sign:feishu:{TENANT}:{late_id}"
        await started_request(s.client, late_request)
        await s.ws.wait_for(lambda: inbound(s.engine, late_id)[0].status == "handled")
        assert [d.attempt for d in s.ws.deliveries_of(late_id)] == [1, 2]
        assert all(a.checked is not None for a in s.ws.acks_for(late_id))  # both after the commit

        assert len(inbound(s.engine, event_id)) == len(inbound(s.engine, late_id)) == 1
        assert await flows(s.client, request_id) == await flows(s.client, late_request) == 1
        assert s.calls.count(event_id) == s.calls.count(late_id) == 1
        for rid in (request_id, late_request):
            await s.client.get_workflow_handle(rid).terminate("test done")


async def test_an_approval_event_over_the_long_connection_starts_one_flow(dev_env: WorkflowEnvironment,
                                                                         settings: Settings) -> None:
    """`approval_instance` is a v1 event (keyed by `uuid`, no header): stored, acked, started once."""
    from store.repos import approval_mappings
    from store.tables import ApprovalMapping
    from tests.test_approvals_platforms import feishu_event

    async with ws_stack(dev_env, settings) as s:
        approval_mappings.save(s.engine, ApprovalMapping(platform="feishu", definition="DEF-WS", document_fields="合同",
                                                         signer_field="签署人"))
        event = feishu_event("INST-WS", "DEF-WS")
        assert (await s.send(event)).code == 200
        s.ws.deliver(event)  # delivered again: acked, stored once, handled once
        await s.ws.wait_for(lambda: len(s.ws.acks_for(event["uuid"])) == 2)
        request_id = f"sign:feishu:{TENANT}:approval-INST-WS"
        started = await started_request(s.client, request_id)
        assert started.approval is not None and started.approval.instance_id == "INST-WS"
        assert started.approval.document_fields == ["合同"] and started.chat.chat_id == ""  # the initiator, once read
        await s.ws.wait_for(lambda: inbound(s.engine, event["uuid"])[0].status == "handled")
        assert len(inbound(s.engine, event["uuid"])) == 1 and s.calls.count(event["uuid"]) == 1
        assert await flows(s.client, request_id) == 1
        await s.client.get_workflow_handle(request_id).terminate("test done")


async def test_card_action_over_the_long_connection_updates_the_flow(dev_env: WorkflowEnvironment,
                                                                     settings: Settings) -> None:
    contract = sample_contract("Feishu long connection", pages=1)
    async with ws_stack(dev_env, settings, contract=contract) as s:
        await s.send(file_event("oc_ws4", "ou_init", "om_file", "file_v2_1"))
        command = command_event("oc_ws4", "ou_init", "@_user_1 sign @_user_2", [("@_user_2", "ou_a", "李四")])
        await s.send(command)
        request_id = f"sign:feishu:{TENANT}:{command['header']['event_id']}"
        await started_request(s.client, request_id)
        await wait_status(s.client, request_id, "IN_PROGRESS")

        stranger = await s.send(card_event(request_id, "cancel", "ou_x"))
        assert stranger.code == 200 and stranger.data["toast"]["type"] == "error", stranger.data
        assert "发起人" in stranger.data["toast"]["content"]
        click = card_event(request_id, "cancel", "ou_init")
        ack = await s.send(click)
        assert ack.code == 200 and ack.checked == "handled"  # committed and handled before the ack
        assert ack.data["toast"]["type"] == "success" and "已撤销" in ack.data["toast"]["content"], ack.data
        view = await wait_status(s.client, request_id, "CANCELLED")
        assert view.status.value == "CANCELLED"
        assert inbound(s.engine, click["header"]["event_id"])[0].status == "handled"
        # the same click again (Feishu redelivers): acked, not applied a second time
        s.ws.deliver(click)
        await s.ws.wait_for(lambda: len(s.ws.acks_for(click["header"]["event_id"])) == 2)
        assert s.calls.count(click["header"]["event_id"]) == 1


@pytest.mark.parametrize("status", [200, 400])
async def test_wrong_app_secret_is_one_clear_error(settings: Settings, status: int) -> None:
    ws = FeishuWsSim(APP_ID, APP_SECRET, reject_status=status)
    settings.data_dir.mkdir(parents=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    with running(ws) as base:
        wrong = FeishuConfig(app_id=APP_ID, app_secret=SecretStr("not-the-secret"), api_base=base)
        started = time.monotonic()
        with pytest.raises(CredentialsRejected) as rejected:
            await asyncio.wait_for(FeishuListener(wrong).run(Inbox(engine, {}), asyncio.Event()), 10)
        assert time.monotonic() - started < 5
    message = str(rejected.value)
    code = 1000040345 if status == 200 else status  # on an HTTP error the SDK keeps only the status and msg
    assert f"({code}: app_id or app_secret is invalid)" in message and APP_ID in message
    assert "SIGNBRIDGE_FEISHU_APP_SECRET" in message and "not-the-secret" not in message
    assert ws.rejected == len(ws.endpoint_calls) == 1 and ws.connections == 0  # tried once, no loop


async def test_busy_endpoint_is_retried_and_stop_still_ends_the_listener(settings: Settings) -> None:
    ws = FeishuWsSim(APP_ID, APP_SECRET, busy_next=100)
    settings.data_dir.mkdir(parents=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    with running(ws) as base:
        config = FeishuConfig(app_id=APP_ID, app_secret=SecretStr(APP_SECRET), api_base=base)
        stop = asyncio.Event()
        task = asyncio.create_task(FeishuListener(config).run(Inbox(engine, {}), stop))
        await ws.wait_for(lambda: bool(ws.endpoint_calls) or task.done())
        assert not task.done()  # "system busy" is not fatal: the SDK backs off and retries
        stop.set()  # while the SDK sleeps in its backoff
        await asyncio.wait_for(task, 10)  # returns, no error
    assert ws.connections == 0


def listener_env(base: str, dev_env: WorkflowEnvironment, tmp: Path, secret: str = APP_SECRET) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNBRIDGE_")}
    env.update({"SIGNBRIDGE_ENVIRONMENT": "development",  # the listener creates its tables
                "SIGNBRIDGE_FEISHU_APP_ID": APP_ID, "SIGNBRIDGE_FEISHU_APP_SECRET": secret,
                "SIGNBRIDGE_FEISHU_API_BASE": base,
                "SIGNBRIDGE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
                "SIGNBRIDGE_TASK_QUEUE": f"tq-cli-{uuid.uuid4().hex[:8]}",
                "SIGNBRIDGE_DATA_DIR": str(tmp / "data"),
                "SIGNBRIDGE_DATABASE_URL": f"sqlite:///{tmp / 'listener.db'}"})
    return env


async def test_chat_listener_command_receives_and_stops_on_sigterm(dev_env: WorkflowEnvironment,
                                                                    tmp_path: Path) -> None:
    ws = FeishuWsSim(APP_ID, APP_SECRET)
    with running(ws) as base:
        async with listener_process("feishu", listener_env(base, dev_env, tmp_path)) as proc:
            await ws.wait_for(lambda: ws.connected or proc.returncode is not None, 30)
            assert proc.returncode is None, (await proc.communicate())[1].decode()
            command = command_event("oc_cli", "ou_init", "@_user_1 sign @_user_2", [("@_user_2", "ou_a", "李四")])
            event_id = command["header"]["event_id"]
            ws.deliver(command)
            ack = await ws.wait_ack(event_id)
            assert ack.code == 200
            request_id = f"sign:feishu:{TENANT}:{event_id}"
            req = await started_request(dev_env.client, request_id)
            assert [[p.id for p in g] for g in req.groups] == [["ou_a"]]
            rows = inbound(get_engine(f"sqlite:///{tmp_path / 'listener.db'}"), event_id)
            assert len(rows) == 1
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 0, stderr.decode()
            await ws.wait_for(lambda: not ws.connected, 5)
            await dev_env.client.get_workflow_handle(request_id).terminate("test done")


async def test_chat_listener_command_with_a_wrong_secret_exits_with_the_reason(dev_env: WorkflowEnvironment,
                                                                             tmp_path: Path) -> None:
    ws = FeishuWsSim(APP_ID, APP_SECRET)
    with running(ws) as base:
        async with listener_process("feishu", listener_env(base, dev_env, tmp_path, secret="wrong-secret")) as proc:
            _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode not in (0, None)
    said = " ".join(stderr.decode().split())  # the traceback is wrapped to the terminal width
    assert "Feishu refused the long connection for app id" in said and "1000040345" in said
    assert "wrong-secret" not in said
    assert ws.rejected == len(ws.endpoint_calls) == 1
