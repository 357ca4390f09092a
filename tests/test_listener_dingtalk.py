"""DingTalk Stream mode (`signbridge chat-listener --platform dingtalk`) over a real WebSocket.

The Stream gateway simulator (`tests/sim/dingtalk_stream.py`) and the OpenAPI simulator
(`tests/sim/dingtalk_sim.py`) answer on one loopback URL, as api.dingtalk.com does; flows run on
the real Temporal dev server with the real worker. Checked: the ack leaves only after the
`InboundEvent` row is committed, redeliveries (unacked, lost ack, same msgId under a new
messageId) are handled once, a card button reaches the flow as an update, wrong credentials are
one clear error, and the CLI process runs and stops on SIGTERM with exit code 0.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from pydantic import SecretStr
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from connectors.chat.dingtalk import stream as dingtalk_listener
from connectors.chat.dingtalk.client import DingTalkChat, DingTalkConfig, track_id_for
from connectors.chat.dingtalk.inbound import DingTalkInbound
from connectors.chat.dingtalk.stream import CARD_TOPIC, ROBOT_TOPIC, CredentialsRejected, DingTalkListener
from connectors.chat.inbox import Inbox
from signbridge.cli import chat_listener as listener_run
from signbridge.core.settings import Settings
from signbridge.intake import Intake
from signbridge.pdf.sample import sample_contract
from store.db import create_all, get_engine
from store.tables import InboundEvent
from tests.chat_cases import exists
from tests.chat_cases.dingtalk import APP_KEY, APP_SECRET, CORP, GROUP, ROBOT, file_message, text_message
from tests.listener_process import listener_process
from tests.sim.dingtalk_sim import DingTalkSim
from tests.sim.dingtalk_stream import Ack, StreamSim, running
from tests.test_dingtalk import config, wait_status, world
from worker import build_worker


def inbound(engine: Engine, event_id: str) -> list[InboundEvent]:
    with Session(engine) as session:
        return list(session.exec(select(InboundEvent).where(InboundEvent.platform == "dingtalk",
                                                            InboundEvent.event_id == event_id)))


def card_click(request_id: str, action: str, user: str) -> dict[str, Any]:
    """A card button callback as Stream mode carries it (no eventId: the frame's messageId is the key)."""
    content = {"cardPrivateData": {"actionIds": [action], "params": {"action": action}}}
    return {"outTrackId": track_id_for(request_id), "corpId": CORP, "userId": user, "type": "actionCallback",
            "spaceType": "IM", "spaceId": GROUP, "userIdType": 1, "extension": "{}", "content": json.dumps(content)}


@dataclass
class Stack:
    gateway: StreamSim
    openapi: DingTalkSim
    engine: Engine
    settings: Settings
    listener: DingTalkListener
    calls: list[dict[str, Any]] = field(default_factory=list)  # payloads the handler got

    def committed_when_acked(self, ack: Ack) -> str | None:
        """`on_ack`: the InboundEvent row's status at the moment the ack arrived (None: not committed)."""
        delivery = self.gateway.deliveries.get(ack.message_id)
        key = str((delivery.event_id or delivery.data.get("msgId") if delivery else None) or ack.message_id)
        checker = create_engine(self.settings.sqlalchemy_url)  # a connection of the simulator's own
        try:
            rows = inbound(checker, key)
        finally:
            checker.dispose()
        return rows[0].status if rows else None

    async def acked(self, message_id: str) -> Ack:
        await self.gateway.wait_for(lambda: bool(self.gateway.acks_for(message_id)))
        return self.gateway.acks_for(message_id)[0]


@asynccontextmanager
async def stream_stack(dev_env: WorkflowEnvironment, settings: Settings, contract: bytes, *,
                       listen: bool = True) -> AsyncIterator[tuple[Stack, Callable[[], None]]]:
    """Both simulators on one URL + the real worker; `start()` runs the listener with its inbox and drain loop."""
    gateway, openapi = StreamSim(APP_KEY, APP_SECRET), world(contract)
    with running(gateway, openapi) as base:
        settings = settings.model_copy(update={
            "temporal_address": dev_env.client.service_client.config.target_host,
            "public_url": "http://127.0.0.1:9", "step_retry_window": timedelta(seconds=20)})
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = get_engine(settings.sqlalchemy_url)
        create_all(engine)
        cfg = config(base, rate_limit_backoff=0.2)
        stack = Stack(gateway, openapi, engine, settings, DingTalkListener(cfg))
        gateway.on_ack = stack.committed_when_acked
        real = listener_run.handler_for(DingTalkInbound(cfg, engine, DingTalkChat(cfg, engine), settings.bot_name),
                                        dingtalk_listener.parse, Intake(dev_env.client, settings, engine))

        async def counting(payload: dict[str, Any]) -> Any:
            stack.calls.append(payload)
            return await real(payload)

        stop = asyncio.Event()
        served: list[asyncio.Task[None]] = []

        def start() -> None:
            inbox = Inbox(engine, {"dingtalk": counting})
            served.append(asyncio.create_task(listener_run.serve([stack.listener], inbox, stop)))

        async with build_worker(dev_env.client, settings, chats={"dingtalk": DingTalkChat(cfg, engine)}) as worker, \
                worker:
            if listen:
                start()
            try:
                yield stack, start
            finally:
                stop.set()
                for task in served:
                    await asyncio.wait_for(task, 20)  # a listener crash fails the test here


async def test_file_then_sign_command_over_the_stream(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    contract = sample_contract("DingTalk Stream")
    async with stream_stack(dev_env, settings, contract) as (s, _):
        file_frame = s.gateway.deliver(ROBOT_TOPIC, file_message("dc-1", "合同.pdf", "stream-file-1"))
        command = text_message("@SignBridge sign @李四 > @王五", "stream-cmd-1", at=["lisi", "wangwu"])
        command_frame = s.gateway.deliver(ROBOT_TOPIC, command)
        request_id = f"sign:dingtalk:{CORP}:stream-cmd-1"
        view = await wait_status(dev_env.client, request_id, "IN_PROGRESS", timeout=30)
        assert view.document is not None and view.document.name == "合同.pdf"
        assert view.document.sha256 == hashlib.sha256(contract).hexdigest()
        assert [(p.person.id, p.person.name) for p in view.signers] == [("lisi", "李四"), ("wangwu", "王五")]
        assert view.initiator.id == "zhangsan"
        # each ack came after its InboundEvent row was committed, and only once
        for frame in (file_frame, command_frame):
            ack = await s.acked(frame)
            assert (ack.code, ack.raw["headers"]["messageId"]) == (200, frame)
            assert ack.raw["headers"]["contentType"] == "application/json"
            assert ack.check is not None, f"{frame} was acked before its InboundEvent row was committed"
            assert len(s.gateway.acks_for(frame)) == 1 and s.gateway.deliveries[frame].acked
        await s.gateway.wait_for(lambda: [r.status for r in inbound(s.engine, "stream-cmd-1")] == ["handled"])
        # the connection opened with the app's credentials and both topics; pings were answered
        opened = s.gateway.opens[0]
        assert (opened["clientId"], opened["clientSecret"], opened["status"]) == (APP_KEY, APP_SECRET, 200)
        assert {(t["type"], t["topic"]) for t in opened["subscriptions"]} == {("CALLBACK", ROBOT_TOPIC),
                                                                              ("CALLBACK", CARD_TOPIC),
                                                                              ("EVENT", "*")}
        await s.gateway.wait_for(lambda: len(s.gateway.pongs) >= 1)


async def test_an_approval_event_over_the_stream_starts_one_flow(dev_env: WorkflowEnvironment,
                                                                 settings: Settings) -> None:
    """`bpms_instance_change` as an `EVENT` frame: stored before its ack, redelivered unacked, one flow;
    events SignBridge does not act on are acked and not stored."""
    from store.repos import approval_mappings
    from store.tables import ApprovalMapping
    from tests.test_approvals_platforms import dingtalk_event, dingtalk_values

    contract = sample_contract("DingTalk stream approval")
    async with stream_stack(dev_env, settings, contract) as (s, _):
        s.openapi.add_instance("PI-S1", "PROC-S", "zhangsan", dingtalk_values(contract))
        approval_mappings.save(s.engine, ApprovalMapping(platform="dingtalk", definition="PROC-S",
                                                         document_fields="合同", signer_field="签署人"))
        event = dingtalk_event("PI-S1", "PROC-S", event_id="ev-stream-1")
        first = s.gateway.deliver_event("bpms_instance_change", event, "ev-stream-1")
        again = s.gateway.deliver_event("bpms_instance_change", event, "ev-stream-1")  # the same event twice
        other = s.gateway.deliver_event("user_add_org", {"userId": ["x"]})
        for frame in (first, again, other):
            ack = await s.acked(frame)
            assert ack.code == 200
        assert s.gateway.acks_for(first)[0].check is not None  # committed before the ack
        request_id = f"sign:dingtalk:{CORP}:approval-PI-S1"
        view = await wait_status(dev_env.client, request_id, "IN_PROGRESS", timeout=30)
        assert [p.person.id for p in view.signers] == ["lisi"] and view.initiator.id == "zhangsan"
        assert view.document is not None and view.document.sha256 == hashlib.sha256(contract).hexdigest()
        await s.gateway.wait_for(lambda: [r.status for r in inbound(s.engine, "ev-stream-1")] == ["handled"])
        assert len([w async for w in dev_env.client.list_workflows(f"WorkflowId = '{request_id}'")]) == 1
        assert not [p for p in s.calls if p.get("eventType") == "user_add_org"]
        await dev_env.client.get_workflow_handle(request_id).terminate("test done")


async def test_redeliveries_are_stored_and_handled_once(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    async with stream_stack(dev_env, settings, sample_contract("Twice"), listen=False) as (s, start):
        s.gateway.ack_timeout = 1.0
        # a first client receives the file message and dies before acking it
        file_frame = s.gateway.deliver(ROBOT_TOPIC, file_message("dc-1", "合同.pdf", "twice-file"))
        async with httpx.AsyncClient(timeout=5) as http:
            url = s.listener.config.api_base + "/v1.0/gateway/connections/open"
            opened = (await http.post(url, json={"clientId": APP_KEY, "clientSecret": APP_SECRET,
                                                 "subscriptions": [{"type": "CALLBACK", "topic": ROBOT_TOPIC}]})
                      ).json()
        async with websockets.connect(f"{opened['endpoint']}?ticket={opened['ticket']}") as dying:
            while True:
                frame = json.loads(await asyncio.wait_for(dying.recv(), 5))
                if frame["type"] == "CALLBACK":
                    break
        assert frame["headers"]["messageId"] == file_frame and json.loads(frame["data"])["msgId"] == "twice-file"
        with pytest.raises(websockets.exceptions.InvalidStatus):  # a ticket opens one connection only
            async with websockets.connect(f"{opened['endpoint']}?ticket={opened['ticket']}"):
                pass
        assert not s.gateway.acks
        # the listener starts: the unacked message is delivered again (same messageId) and acked
        start()
        ack = await s.acked(file_frame)
        dead, alive = s.gateway.connections
        sends = [connection for connection, _ in s.gateway.deliveries[file_frame].sends]
        assert sends[0] == dead and sends[-1] == alive and ack.connection_id == alive and ack.check is not None
        # the command: delivered again with the same messageId (its ack was lost) and with a new one
        command = text_message("@SignBridge sign @李四", "twice-cmd", at=["lisi"])
        first = s.gateway.deliver(ROBOT_TOPIC, command)
        await s.acked(first)
        s.gateway.deliver(ROBOT_TOPIC, command, message_id=first)
        await s.gateway.wait_for(lambda: len(s.gateway.acks_for(first)) == 2)
        second = s.gateway.deliver(ROBOT_TOPIC, command)
        assert (await s.acked(second)).code == 200
        request_id = f"sign:dingtalk:{CORP}:twice-cmd"
        await wait_status(dev_env.client, request_id, "IN_PROGRESS", timeout=30)
        await s.gateway.wait_for(lambda: [r.status for r in inbound(s.engine, "twice-cmd")] == ["handled"])
        assert len(inbound(s.engine, "twice-file")) == 1
        assert [c["data"]["msgId"] for c in s.calls] == ["twice-file", "twice-cmd"]  # each handled once
        flows = [w async for w in dev_env.client.list_workflows(f"WorkflowId = '{request_id}'")]
        assert len(flows) == 1


async def test_card_button_over_the_stream_updates_the_flow(dev_env: WorkflowEnvironment,
                                                            settings: Settings) -> None:
    async with stream_stack(dev_env, settings, sample_contract("Card")) as (s, _):
        s.gateway.deliver(ROBOT_TOPIC, file_message("dc-1", "合同.pdf", "card-file"))
        s.gateway.deliver(ROBOT_TOPIC, text_message("@SignBridge sign @李四", "card-cmd", at=["lisi"]))
        request_id = f"sign:dingtalk:{CORP}:card-cmd"
        await wait_status(dev_env.client, request_id, "IN_PROGRESS", timeout=30)
        await s.openapi.wait_for(lambda: track_id_for(request_id) in s.openapi.cards)
        # someone else's cancel is refused by the flow (and still acked: the click was stored)
        refused = s.gateway.deliver(CARD_TOPIC, card_click(request_id, "cancel", "lisi"))
        ack = await s.acked(refused)
        assert ack.code == 200 and ack.check == "handled" and ack.data == {"response": {}}
        assert (await wait_status(dev_env.client, request_id, "IN_PROGRESS", timeout=5)).status == "IN_PROGRESS"
        # DingTalk moves the app to another connection; the click arrives on the new one
        s.gateway.disconnect()
        await s.gateway.wait_for(lambda: len(s.gateway.connections) == 2 and len(s.gateway.open_connections) == 1)
        cancel = s.gateway.deliver(CARD_TOPIC, card_click(request_id, "cancel", "zhangsan"))
        ack = await s.acked(cancel)
        assert ack.connection_id == s.gateway.connections[1]
        assert ack.code == 200 and ack.check == "handled"  # handled inline, before the ack
        view = await wait_status(dev_env.client, request_id, "CANCELLED", timeout=20)
        assert view.status == "CANCELLED"
        assert [c["topic"] for c in s.calls].count(CARD_TOPIC) == 2


async def test_wrong_client_secret_is_one_clear_error(settings: Settings) -> None:
    gateway = StreamSim(APP_KEY, APP_SECRET)
    settings.data_dir.mkdir(parents=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    with running(gateway) as base:
        wrong = DingTalkConfig(app_key=APP_KEY, app_secret=SecretStr("not-the-secret"), robot_code=ROBOT,
                               api_base=base, oapi_base=base)
        started = time.monotonic()
        with pytest.raises(CredentialsRejected) as rejected:
            await asyncio.wait_for(DingTalkListener(wrong).run(Inbox(engine, {}), asyncio.Event()), 10)
        assert time.monotonic() - started < 5
        message = str(rejected.value)
        assert "authFailed" in message and "SIGNBRIDGE_DINGTALK_APP_SECRET" in message and APP_KEY in message
        assert "not-the-secret" not in message
        assert [o["status"] for o in gateway.opens] == [401] and not gateway.connections  # tried once, no loop


async def test_gateway_hiccups_are_retried_with_a_growing_delay(settings: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dingtalk_listener, "RETRY_FIRST", 0.2)
    gateway = StreamSim(APP_KEY, APP_SECRET)
    gateway.fail_next_opens(2)
    settings.data_dir.mkdir(parents=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    with running(gateway) as base:
        stop = asyncio.Event()
        listening = asyncio.create_task(DingTalkListener(config(base)).run(Inbox(engine, {}), stop))
        await gateway.wait_for(lambda: bool(gateway.open_connections) or listening.done(), 10)
        assert [o["status"] for o in gateway.opens] == [503, 503, 200]
        first, second = (gateway.opens[i + 1]["at"] - gateway.opens[i]["at"] for i in range(2))
        assert 0.2 <= first < 1.5 and second >= 0.4 and second > first
        stop.set()
        await asyncio.wait_for(listening, 5)
        await gateway.wait_for(lambda: not gateway.open_connections, 5)


async def test_cards_ask_for_their_button_callbacks_over_the_stream(dev_env: WorkflowEnvironment,
                                                                    settings: Settings) -> None:
    async with stream_stack(dev_env, settings, sample_contract("Callback type")) as (s, _):
        s.gateway.deliver(ROBOT_TOPIC, file_message("dc-1", "合同.pdf", "cbt-file"))
        s.gateway.deliver(ROBOT_TOPIC, text_message("@SignBridge sign @李四", "cbt-cmd", at=["lisi"]))
        await s.gateway.wait_for(lambda: bool(s.gateway.cards_created), 30)
        assert s.gateway.cards_created[0].get("callbackType") == "STREAM"


def listener_env(base: str, dev_env: WorkflowEnvironment, tmp: Path, secret: str = APP_SECRET) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNBRIDGE_")}
    env.update({"SIGNBRIDGE_ENVIRONMENT": "development",  # the listener creates its tables
                "SIGNBRIDGE_DINGTALK_APP_KEY": APP_KEY, "SIGNBRIDGE_DINGTALK_APP_SECRET": secret,
                "SIGNBRIDGE_DINGTALK_ROBOT_CODE": ROBOT, "SIGNBRIDGE_DINGTALK_API_BASE": base,
                "SIGNBRIDGE_DINGTALK_OAPI_BASE": base,
                "SIGNBRIDGE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
                "SIGNBRIDGE_TASK_QUEUE": f"tq-cli-{uuid.uuid4().hex[:8]}",
                "SIGNBRIDGE_DATA_DIR": str(tmp / "data"),
                "SIGNBRIDGE_DATABASE_URL": f"sqlite:///{tmp / 'listener.db'}"})
    return env


async def test_chat_listener_command_receives_and_stops_on_sigterm(dev_env: WorkflowEnvironment,
                                                                    tmp_path: Path) -> None:
    gateway, openapi = StreamSim(APP_KEY, APP_SECRET), world(b"%PDF-1.4 cli")
    with running(gateway, openapi) as base:
        async with listener_process("dingtalk", listener_env(base, dev_env, tmp_path)) as proc:
            await gateway.wait_for(lambda: bool(gateway.open_connections) or proc.returncode is not None, 30)
            assert proc.returncode is None, (await proc.communicate())[1].decode()
            gateway.deliver(ROBOT_TOPIC, file_message("dc-1", "合同.pdf", "cli-file"))
            command = gateway.deliver(ROBOT_TOPIC, text_message("@SignBridge sign @李四", "cli-cmd", at=["lisi"]))
            await gateway.wait_for(lambda: bool(gateway.acks_for(command)))
            request_id = f"sign:dingtalk:{CORP}:cli-cmd"
            end = time.monotonic() + 20
            while not await exists(dev_env.client, request_id):
                assert time.monotonic() < end, "the command did not start a flow"
                await asyncio.sleep(0.1)
            rows = inbound(get_engine(f"sqlite:///{tmp_path / 'listener.db'}"), "cli-cmd")
            assert len(rows) == 1
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 0, stderr.decode()
            await gateway.wait_for(lambda: not gateway.open_connections, 5)


async def test_chat_listener_command_with_a_wrong_secret_exits_with_the_reason(dev_env: WorkflowEnvironment,
                                                                             tmp_path: Path) -> None:
    gateway = StreamSim(APP_KEY, APP_SECRET)
    with running(gateway) as base:
        async with listener_process("dingtalk", listener_env(base, dev_env, tmp_path, secret="wrong-secret")) as proc:
            _, stderr = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode not in (0, None)
        said = " ".join(stderr.decode().split())  # the traceback is wrapped to the terminal width
        assert "DingTalk refused the Stream-mode connection for app key" in said and "authFailed" in said
        assert "wrong-secret" not in said
        assert [o["status"] for o in gateway.opens] == [401]
