"""Faults on the real Temporal dev server: no infrastructure fault fails a flow, nothing is sent twice.

A chat outage longer than the step retry window used to end every flow FAILED ("webhook chat
failed card.upsert (HTTP 503)"): showing STUCK itself needed the chat, and a local activity
that ran out of attempts raised a bare ApplicationError nothing caught. Now a flow shows STUCK
where no chat is needed (search attributes, current details, the database), keeps retrying by
itself and carries on when the chat is back — or at once on `retry`. Each scenario ends with
one link per signer, one card, one signed file and every signature valid.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from connectors.chat.webhook.client import WebhookChat
from signbridge.core.models import ActionInput, Actor, StatusView
from signbridge.core.settings import Settings
from signbridge.core.temporal import SA_STATUS
from signbridge.pdf.pades import validate_pdf
from signbridge.pdf.pki import InstallationCA
from store.blobs import FileBlobStore
from store.db import get_engine
from store.tables import SigningLinkRecord, SigningRequestRecord
from tests.harness import A, B, Harness, harness
from tests.test_e2e import MENTIONS, ROOT, _terminate_running, _worker_env, _worker_log, stack

OPERATOR = Actor(id="ops-1", name="Ops", is_operator=True)
HISTORIES = Path(__file__).parent / "histories"


async def _until(probe: Any, what: str, timeout: float = 30) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _details(handle: WorkflowHandle[Any, Any]) -> str:
    meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(meta.current_details)


async def _details_say(handle: WorkflowHandle[Any, Any], *parts: str) -> bool:
    text = await _details(handle)
    return all(part in text for part in parts)


def _db_status(h: Harness, request_id: str) -> str | None:
    with Session(get_engine(h.settings.sqlalchemy_url)) as session:
        row = session.get(SigningRequestRecord, request_id)
        return row.status if row else None


async def _shows_stuck(h: Harness, handle: WorkflowHandle[Any, Any]) -> bool:
    """STUCK in every place that needs no chat: search attribute, current details, database."""
    described = await handle.describe()
    return (described.status == WorkflowExecutionStatus.RUNNING
            and described.typed_search_attributes.get(SA_STATUS) == "STUCK"
            and (await _details(handle)).startswith("**STUCK** 卡在：")
            and _db_status(h, handle.id) == "STUCK")


async def _longest_workflow_task(handle: WorkflowHandle[Any, Any]) -> timedelta:
    started: dict[int, Any] = {}
    longest = timedelta()
    async for e in handle.fetch_history_events():
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            started[e.event_id] = e.event_time.ToDatetime()
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            began = started[e.workflow_task_completed_event_attributes.started_event_id]
            longest = max(longest, e.event_time.ToDatetime() - began)
    return longest


async def _record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With SIGNBRIDGE_RECORD_HISTORIES=1, keep this run's history for tests/test_replay.py."""
    if os.environ.get("SIGNBRIDGE_RECORD_HISTORIES") == "1":
        (HISTORIES / f"{name}.json").write_text((await handle.fetch_history()).to_json())


async def assert_delivered_once(h: Harness, handle: WorkflowHandle[Any, Any], signers: list[Any]) -> None:
    """One link per signer, one card (one card_key), one signed file, every signature valid."""
    view: StatusView = await handle.result()
    assert view.status == "COMPLETED", view
    for person in signers:
        assert len(h.links_for(handle, person)) == 1, h.links_for(handle, person)
    mine = [m for m in h.sink.messages if handle.id in m.get("idempotency_key", "") or m.get("card_key") == handle.id]
    assert {m["card_key"] for m in mine if m["type"] == "card.upsert"} == {handle.id}
    files = [m for m in mine if m["type"] == "file" and m.get("kind") == "signed"]
    assert len(files) == 1 and files[0]["sha256"] == view.signed_document.sha256  # type: ignore[union-attr]
    pdf = FileBlobStore(h.settings.data_dir / "blobs").get(view.signed_document.blob_key)  # type: ignore[union-attr]
    ca = InstallationCA.load_or_create(h.settings.data_dir / "ca")
    reports = await asyncio.to_thread(validate_pdf, pdf, [ca.certificate])
    assert len(reports) == len(signers) and all(r.intact and r.valid and r.trusted for r in reports)


async def test_chat_outage_longer_than_the_window_is_stuck_then_heals_by_itself(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(dev_env, settings) as h:
        h.sink.outage(503)
        handle = await h.start([[A], [B]], timing=h.timing(step_retry_window=timedelta(seconds=2)))
        await _until(lambda: _shows_stuck(h, handle), "STUCK without the chat")
        assert "HTTP 503" in (await h.status(handle)).reason  # type: ignore[operator]
        tried = len(h.sink.attempts)
        await _until(lambda: asyncio.sleep(0, len(h.sink.attempts) > tried + 2), "more tries while STUCK")
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING  # never FAILED

        assert f"`signbridge requests retry {handle.id}`" in await _details(handle)
        h.sink.recover()  # the chat is back: the flow carries on by itself, no operator
        await _until(lambda: _details_say(handle, "**等待签署** 第 1/2 组：李四", "重试"), "where it is, in words")
        await h.sign(handle, A)
        await h.sign(handle, B)
        await assert_delivered_once(h, handle, [A, B])
        assert _db_status(h, handle.id) == "COMPLETED"
        assert await _longest_workflow_task(handle) < timedelta(seconds=3)  # no 8 s tasks while retrying
        await _record(handle, "chat-outage-recovered")


async def test_chat_refusing_with_4xx_is_stuck_and_retry_tries_at_once(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    """A 4xx is a misconfiguration (a revoked app permission): STUCK, never FAILED; once the
    operator fixed it, `retry` goes through now instead of at the next pause (a minute here)."""
    async with harness(dev_env, settings) as h:
        handle = await h.start([[A]], timing=h.timing(step_retry_window=timedelta(minutes=5)))
        await h.link(handle, A)
        h.sink.outage(403)
        await handle.execute_update("remind", ActionInput(actor=OPERATOR), result_type=StatusView)
        await _until(lambda: _shows_stuck(h, handle), "STUCK after a 403")
        view = await h.status(handle)
        assert view.stuck_step == f"send link to {A.name}" and "HTTP 403" in (view.reason or "")
        h.sink.recover()
        await handle.execute_update("retry", ActionInput(actor=OPERATOR), result_type=StatusView)
        await h.sink.wait_for(lambda: len(h.links_for(handle, A)) == 2, timeout=10)  # the reminder, now
        assert (await h.wait_status(handle, "IN_PROGRESS")).reason is None
        await h.sign(handle, A)
        view = await handle.result()
        assert view.status == "COMPLETED"


async def test_a_slow_chat_gets_the_signed_file_once(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    """The chat answers after the client's timeout: every message is re-sent once, after the
    pause and with the same key, so a chat honouring keys shows each once (it got the file 6
    times when retries raced the first request)."""
    settings = settings.model_copy(update={"resend_pause": timedelta(seconds=2)})
    async with httpx.AsyncClient() as http:
        chats: dict[str, Any] = {}
        async with harness(dev_env, settings, chats=chats) as h:
            chats["webhook"] = WebhookChat(h.settings.webhook_outbound_url, "test-webhook-secret", http, timeout=0.5)
            h.sink.slow(1.0)
            handle = await h.start([[A]], timing=h.timing(step_retry_window=timedelta(seconds=30)))
            await h.sign(handle, A)
            await assert_delivered_once(h, handle, [A])
    sent = [m for m in h.sink.arrivals if m["type"] == "file" and m.get("kind") == "signed"]
    assert len(sent) == 2 and len({m["idempotency_key"] for m in sent}) == 1  # sent again once, same key


async def test_a_chat_slower_than_usual_gets_every_message_in_one_post(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    """A chat that takes its time but answers within the timeout (30 s by default; scaled down
    here) gets each card update, link and file in one POST: nothing is sent a second time."""
    async with httpx.AsyncClient() as http:
        chats: dict[str, Any] = {}
        async with harness(dev_env, settings, chats=chats) as h:
            chats["webhook"] = WebhookChat(h.settings.webhook_outbound_url, "test-webhook-secret", http, timeout=3.0)
            h.sink.slow(1.0)
            handle = await h.start([[A]], timing=h.timing(step_retry_window=timedelta(seconds=30)))
            await h.sign(handle, A)
            await assert_delivered_once(h, handle, [A])
    mine = [m for m in h.sink.arrivals if handle.id in m.get("idempotency_key", "")]
    keys = [m["idempotency_key"] for m in mine]
    assert len(keys) == len(set(keys)) and any(m["type"] == "file" for m in mine)


async def test_no_signing_link_reaches_temporal(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    """Anyone with the Temporal UI could sign as anyone when `open_group` returned the links.
    Now they are sealed in the database, read where they are sent (reminders too), and dropped
    when the flow ends: not in any activity input or result, state, search attribute or query."""
    async with harness(dev_env, settings) as h:
        handle = await h.start([[A, B]])
        await h.link(handle, A)
        await h.link(handle, B)
        await handle.execute_update("remind", ActionInput(actor=OPERATOR), result_type=StatusView)
        await h.sink.wait_for(lambda: len(h.links_for(handle, A)) == len(h.links_for(handle, B)) == 2)
        sent = {m["sign_url"] for p in (A, B) for m in h.links_for(handle, p)}
        assert len(sent) == 2  # a reminder resends the same link
        view = await h.status(handle)
        await h.sign(handle, A)
        await h.sign(handle, B)
        assert (await handle.result()).status == "COMPLETED"
        history = b"".join(e.SerializeToString() for e in (await handle.fetch_history()).events)
        described = (await handle.describe()).raw_description.SerializeToString()
    tokens = [url.rsplit("/", 1)[1] for url in sent]
    for where in (history, described, view.model_dump_json().encode()):
        assert b"/sign/" not in where and not any(t.encode() in where for t in tokens)
    with Session(get_engine(h.settings.sqlalchemy_url)) as session:
        assert session.exec(select(SigningLinkRecord)).all() == []  # forgotten once the flow ended


# ---- a real worker process, SIGKILLed during each step ----------------------------------------

STARTED = 2  # PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


async def test_worker_killed_during_every_step_carries_on(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    """SIGKILL while each step runs — prepare, create, open the group, the card, the link, finish,
    the signed file — and start a new worker: each time the flow goes on within a minute (the
    activities heartbeat; a local activity reruns with the next workflow task), and the chat
    still sees one link, one card and one file (re-sent messages carry the same key)."""
    file_delays: dict[str, float] = {}
    with stack(dev_env, settings, file_delays) as s:
        control = s.settings.data_dir / "delays.json"
        rig = _KillRig(s, dev_env.client, control)
        try:
            await rig.scenario(file_delays)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- worker log ---\n{_worker_log(s.settings)}") from e
        finally:
            rig.stop()
            await _terminate_running(dev_env.client, s.sink)


class _KillRig:
    def __init__(self, s: Any, client: Any, control: Path) -> None:
        self.s, self.client, self.control = s, client, control
        self.worker: subprocess.Popen[bytes] | None = None
        self.request_id = ""

    def start(self) -> None:
        env = {**_worker_env(self.s.settings), "SIGNBRIDGE_TEST_DELAYS": str(self.control),
               "SIGNBRIDGE_RESEND_PAUSE": "PT4S", "SIGNBRIDGE_STEP_RETRY_WINDOW": "PT20S"}
        log = (self.s.settings.data_dir / "worker.log").open("ab")
        self.worker = subprocess.Popen([sys.executable, "-m", "tests.fault_worker"], cwd=ROOT, env=env,
                                       stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker.wait(timeout=10)

    def slow_provider(self, **delays: float) -> None:
        self.control.write_text(json.dumps(delays))

    async def running(self, activity: str) -> bool:
        described = await self.client.get_workflow_handle(self.request_id).describe()
        return any(a.activity_type.name == activity and a.state == STARTED
                   for a in described.raw_description.pending_activities)

    async def attempts(self) -> dict[str, int]:
        """Activity type -> the attempt that completed it."""
        scheduled: dict[int, str] = {}
        done: dict[str, int] = {}
        async for e in self.client.get_workflow_handle(self.request_id).fetch_history_events():
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
            elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                a = e.activity_task_started_event_attributes
                done[scheduled[a.scheduled_event_id]] = a.attempt
        return done

    def arrived(self, kind: str, before: int) -> bool:
        return len([m for m in self.s.sink.arrivals if m["type"] == kind]) > before

    async def kill_when(self, what: str, probe: Any) -> None:
        """Wait (at most a minute since the last restart) until `probe` holds, then SIGKILL and restart."""
        await _until(probe, f"{what} running", timeout=60)
        self.stop()
        self.start()

    async def scenario(self, file_delays: dict[str, float]) -> None:
        s, sink = self.s, self.s.sink
        file_delays["contract.pdf"] = 60
        self.slow_provider(create_flow=60)
        self.start()
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await s.send(http, s.command("/sign @李四", MENTIONS[:1]))
            self.request_id = resp.json()["request_id"]
            await self.kill_when("prepare", lambda: self.running("prepare"))
            file_delays.clear()
            await self.kill_when("create_flow", lambda: self.running("create_flow"))
            self.slow_provider(open_group=60)
            await self.kill_when("open_group", lambda: self.running("open_group"))
            self.slow_provider()
            sink.slow(3)  # acts on each message 3 s after it arrived: the worker dies before
            await self.kill_when("the card", lambda: asyncio.sleep(0, self.arrived("card.upsert", 0)))
            await self.kill_when("the link", lambda: asyncio.sleep(0, self.arrived("message", 0)))
            sink.slow(0)
            self.slow_provider(download_signed=60)  # before signing: `finish` starts as soon as it is signed
            await s.sign(http, self.request_id, "u-1", "李四")
            await self.kill_when("finish", lambda: self.running("finish"))
            self.slow_provider()
            sink.slow(3)
            await self.kill_when("the signed file", lambda: asyncio.sleep(0, self.arrived("file", 0)))
            sink.slow(0)
            view = await s.wait_status(http, self.request_id, "COMPLETED", timeout=60)
            file_msg = next(m for m in sink.messages if m["type"] == "file" and m.get("kind") == "signed")
            signed = (await http.get(file_msg["url"])).content
        assert file_msg["sha256"] == view["signed_document"]["sha256"]
        # Each killed activity went through on its second attempt, on the next worker. (The chat steps
        # and the certificate of completion are local activities: no attempts of their own in history.)
        assert await self.attempts() == {"prepare": 2, "create_flow": 2, "open_group": 2, "finish": 2}
        assert {m["card_key"] for m in sink.messages if m["type"] == "card.upsert"} == {self.request_id}
        assert len([m for m in sink.messages if m["type"] == "message" and m.get("to") == "u-1"]) == 1
        assert len([m for m in sink.messages if m["type"] == "file" and m.get("kind") == "signed"]) == 1
        assert len([m for m in sink.messages if m["type"] == "file" and m.get("kind") == "certificate"]) == 1
        ca = InstallationCA.load_or_create(s.settings.data_dir / "ca")
        reports = await asyncio.to_thread(validate_pdf, signed, [ca.certificate])
        assert len(reports) == 1 and all(r.intact and r.valid and r.trusted for r in reports)
