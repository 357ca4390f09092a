"""Every workflow rule, on the time-skipping server with the real activities and provider."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from signbridge.core.models import ActionInput, Actor, Person, ProviderEvent, StatusView
from signbridge.core.settings import Settings
from signbridge.core.temporal import SA_STATUS
from signbridge.pdf.check import DocumentProblem, check_pdf
from signbridge.pdf.pades import validate_pdf
from signbridge.pdf.pki import InstallationCA
from signbridge.pdf.sample import sample_contract
from store import audit
from store.blobs import FileBlobStore
from store.db import get_engine
from tests.harness import INITIATOR, A, B, C, Harness, harness

OPERATOR = Actor(id="ops-1", name="Ops", is_operator=True)
STRANGER = Actor(id="u-77", name="路人")


def _signed_pdf(h: Harness, view: StatusView) -> bytes:
    assert view.signed_document is not None
    return FileBlobStore(h.settings.data_dir / "blobs").get(view.signed_document.blob_key)


async def _record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With SIGNBRIDGE_RECORD_HISTORIES=1, keep this run's history for tests/test_replay.py."""
    if os.environ.get("SIGNBRIDGE_RECORD_HISTORIES") == "1":
        history = await handle.fetch_history()
        (Path(__file__).parent / "histories" / f"{name}.json").write_text(history.to_json())


async def _trusted_signers(h: Harness, pdf: bytes) -> list[str]:
    ca = InstallationCA.load_or_create(h.settings.data_dir / "ca")
    reports = await asyncio.to_thread(validate_pdf, pdf, [ca.certificate])
    assert all(r.intact and r.valid and r.trusted for r in reports)
    return [r.signer_name for r in reports]


async def test_serial_groups_sign_in_order(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A], [B]])
        await h.link(handle, A)
        assert h.links_for(handle, B) == []  # B's turn comes only after A signed
        await h.sign(handle, A)
        await h.sign(handle, B)
        view: StatusView = await handle.result()
        assert view.status == "COMPLETED"
        assert await _trusted_signers(h, _signed_pdf(h, view)) == ["李四", "王五"]
        await _record(handle, "serial-two-signers")
        files = [m for m in h.sink.messages if m["type"] == "file" and m.get("kind") == "signed"]
        assert len(files) == 1 and files[0]["sha256"] == view.signed_document.sha256  # type: ignore[union-attr]
        assert h.cards(handle)[-1]["status"] == "COMPLETED"
        # one link message per signer, no duplicates
        assert len(h.links_for(handle, A)) == 1 and len(h.links_for(handle, B)) == 1


async def test_parallel_group_gets_links_at_once(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A, B]])
        await h.link(handle, A)
        await h.link(handle, B)
        await h.sign(handle, B)  # any order inside a group
        await h.sign(handle, A)
        view: StatusView = await handle.result()
        assert view.status == "COMPLETED"
        assert sorted(await _trusted_signers(h, _signed_pdf(h, view))) == sorted(["李四", "王五"])


async def test_mixed_groups(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A, B], [C]])
        await h.link(handle, A)
        await h.link(handle, B)
        assert h.links_for(handle, C) == []
        await h.sign(handle, A)
        view = await h.status(handle)
        assert [s.status for s in view.signers] == ["signed", "notified", "waiting"]
        assert h.links_for(handle, C) == []
        await h.sign(handle, B)
        await h.sign(handle, C)
        view = await handle.result()
        assert view.status == "COMPLETED"
        assert len(await _trusted_signers(h, _signed_pdf(h, view))) == 3
        await _record(handle, "mixed-groups")


async def test_duplicate_events_count_once(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A], [B]])
        await h.sign(handle, A)
        view = await h.status(handle)
        # the provider redelivers the same event, and a poll reports it under another id
        dup = ProviderEvent(event_id=f"{view.provider_flow_id}:{A.id}:signed", provider="local",
                            flow_id=view.provider_flow_id or "", kind="signed", signer_id=A.id,
                            occurred_at=datetime.now(UTC))
        await handle.signal("provider_event", dup)
        await handle.signal("provider_event", dup)
        await handle.signal("provider_event", dup.model_copy(update={"event_id": "poll-copy"}))
        await h.link(handle, B)
        view = await h.status(handle)
        assert view.events_seen == 2  # the duplicate id was dropped on arrival
        assert len(h.links_for(handle, B)) == 1  # B was announced once
        await h.sign(handle, B)
        view = await handle.result()
        assert view.status == "COMPLETED"
        assert len(await _trusted_signers(h, _signed_pdf(h, view))) == 2


async def test_decline_ends_the_flow_and_tells_the_initiator(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A, B]])
        link_a = await h.link(handle, A)
        resp = await h.decline(handle, B, "价格条款有误")
        assert resp.status_code == 200
        view = await handle.result()
        assert view.status == "DECLINED" and "价格条款有误" in (view.reason or "")
        await _record(handle, "parallel-declined")
        told = [m for m in h.sink.messages if m["type"] == "message" and m.get("to") == INITIATOR.id]
        assert told and "价格条款有误" in told[-1]["text"]
        # the rest of the flow is revoked: A's link is dead
        assert (await h.http.get(h.path(link_a))).status_code == 410
        assert h.cards(handle)[-1]["status"] == "DECLINED"


async def test_expires_after_seven_days(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A], [B]], timing=h.timing(reminder_max=0))
        link_a = await h.link(handle, A)
        await ts_env.sleep(timedelta(days=6, hours=23))
        assert (await h.status(handle)).status == "IN_PROGRESS"
        await ts_env.sleep(timedelta(hours=2))
        view = await handle.result()
        assert view.status == "EXPIRED"
        assert (await h.http.get(h.path(link_a))).status_code == 410
        assert any("期限" in m.get("text", "") for m in h.sink.messages if m["type"] == "message")


async def test_three_reminders_a_day_apart(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A]])
        await h.link(handle, A)

        def reminders() -> int:
            return len([m for m in h.links_for(handle, A) if "提醒" in m["text"]])

        await ts_env.sleep(timedelta(hours=23))
        assert reminders() == 0
        for expected in (1, 2, 3):
            await ts_env.sleep(timedelta(hours=24))
            await h.sink.wait_for(lambda e=expected: reminders() >= e, timeout=10)  # type: ignore[misc]
            assert reminders() == expected
        await ts_env.sleep(timedelta(days=2))
        assert reminders() == 3  # at most three
        await h.sign(handle, A)
        assert (await handle.result()).status == "COMPLETED"
        await _record(handle, "three-reminders")


async def test_cancel_only_by_initiator_or_operator(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    # Updates run on the dev server: the time-skipping test server's update support is partial.
    async with harness(dev_env, settings) as h:
        handle = await h.start([[A]])
        link = await h.link(handle, A)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("cancel", ActionInput(actor=STRANGER), result_type=StatusView)
        assert "Only the initiator" in str(refused.value.cause)
        assert (await h.status(handle)).status == "IN_PROGRESS"
        view = await handle.execute_update(
            "cancel", ActionInput(actor=Actor(id=INITIATOR.id, name=INITIATOR.name), reason="合同作废"),
            result_type=StatusView)
        assert view.status == "CANCELLED"
        assert (await handle.result()).status == "CANCELLED"
        assert (await h.http.get(h.path(link))).status_code == 410
        with pytest.raises(RPCError, match="already completed"):  # an ended flow takes no more updates
            await handle.execute_update("cancel", ActionInput(actor=OPERATOR), result_type=StatusView)


async def test_operator_cancels(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    # Updates run on the dev server: the time-skipping test server's update support is partial.
    async with harness(dev_env, settings) as h:
        handle = await h.start([[A]])
        await h.link(handle, A)
        view = await handle.execute_update("cancel", ActionInput(actor=OPERATOR), result_type=StatusView)
        assert view.status == "CANCELLED"


async def test_stuck_after_provider_outage_then_retry(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    # Updates run on the dev server: the time-skipping test server's update support is partial.
    async with harness(dev_env, settings) as h:
        healthy = await h.start([[A]])
        await h.link(healthy, A)
        with pytest.raises(WorkflowUpdateFailedError) as nothing:  # nothing to retry unless STUCK
            await healthy.execute_update("retry", ActionInput(actor=OPERATOR), result_type=StatusView)
        assert "not STUCK" in str(nothing.value.cause)
        h.provider.down = True
        handle = await h.start([[A], [B]])
        view = await h.wait_status(handle, "STUCK")
        assert view.stuck_step == "create" and "unavailable" in (view.reason or "")
        await h.sink.wait_for(lambda: any(c["status"] == "STUCK" for c in h.cards(handle)), timeout=10)
        described = await handle.describe()
        assert described.typed_search_attributes.get(SA_STATUS) == "STUCK"
        with pytest.raises(WorkflowUpdateFailedError):  # only the initiator or an operator may retry
            await handle.execute_update("retry", ActionInput(actor=STRANGER), result_type=StatusView)
        # Retried while the provider is still down (a STUCK flow also retries by itself: healed
        # first, it would refuse the update); the try fails, and the next, soon after, succeeds.
        await handle.execute_update("retry", ActionInput(actor=OPERATOR), result_type=StatusView)
        h.provider.down = False
        await h.sign(handle, A)
        await h.sign(handle, B)
        view = await handle.result()
        assert view.status == "COMPLETED"
        with Session(get_engine(h.settings.sqlalchemy_url)) as session:
            rows = audit.trail(session, handle.id)
        assert [(r.action, r.actor) for r in rows if r.action == "request.retried"] == [("request.retried", "ops-1")]
        assert audit.verify_chain(rows)


async def test_polling_fallback_when_webhooks_never_come(
    ts_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost_calls: list[object] = []

    async def lost(*args: object, **__: object) -> str:
        lost_calls.append(args[-1])
        raise ConnectionError("webhook lost")

    monkeypatch.setattr("api.sign_pages.deliver", lost)
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A, B]], timing=h.timing(poll_after=timedelta(hours=1), reminder_max=0))
        await h.sign(handle, A)
        await h.sign(handle, B)
        assert len(lost_calls) == 2  # both webhooks were lost on the way
        await ts_env.sleep(timedelta(hours=1, minutes=1))
        view = await handle.result()
        assert view.status == "COMPLETED" and view.events_seen == 2


def _encrypted_pdf() -> bytes:
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(io.BytesIO(sample_contract("Secret"))).pages:
        writer.add_page(page)
    writer.encrypt("pw")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


BAD_DOCUMENTS = {
    "empty": b"",
    "not a pdf": b"hello, not a pdf",
    "corrupt": b"%PDF-1.7\n1 0 obj << /Type /Catalog",
    "encrypted": _encrypted_pdf(),
    "too large": sample_contract("Big", pages=2),
}


@pytest.mark.parametrize("kind", sorted(BAD_DOCUMENTS))
async def test_bad_documents_are_rejected_in_the_chat(
    ts_env: WorkflowEnvironment, settings: Settings, kind: str
) -> None:
    payload = BAD_DOCUMENTS[kind]
    if kind == "too large":
        settings = settings.model_copy(update={"max_document_bytes": len(payload) - 1})
    with pytest.raises(DocumentProblem) as expected:
        check_pdf(payload, settings.max_document_bytes)
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A]], document=payload)
        view = await handle.result()
        assert view.status == "REJECTED"
        assert view.reason and view.reason.endswith(expected.value.message)
        posted = [m for m in h.sink.messages if m["type"] == "message" and m.get("chat_id") == "g-1"]
        assert posted and expected.value.message in posted[-1]["text"]
        assert h.cards(handle)[-1]["status"] == "REJECTED"
        assert h.provider.calls == 0  # nothing was created at the provider


async def test_no_file_and_bad_signers_are_rejected(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        no_file = await h.start([[A]], documents=[])
        twice = await h.start([[A], [A]])
        no_contact = await h.start([[A], [C.model_copy(update={"email": None})]])
        for handle, needle in ((no_file, "No file"), (twice, "twice"), (no_contact, "email")):
            view = await handle.result()
            assert view.status == "REJECTED" and needle in (view.reason or ""), view.reason


async def test_problem_found_by_the_adapter_is_posted(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A]], problem="无法识别 @赵六")
        view = await handle.result()
        assert view.status == "REJECTED" and view.reason == "无法识别 @赵六"
        assert any("赵六" in m.get("text", "") for m in h.sink.messages)


async def test_built_in_flows_poll_only_at_the_deadline(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    """The built-in provider's events arrive durably (page, then relay): no timer polls however long
    the wait, only the last-chance poll before expiring (the old rule: ~10 polls a week)."""
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A]], timing=h.timing(poll_after=timedelta(hours=1), reminder_max=0))
        await h.link(handle, A)
        await ts_env.sleep(timedelta(days=7, hours=1))
        assert (await handle.result()).status == "EXPIRED"
        history = await handle.fetch_history()
        polls = [e for e in history.events
                 if e.activity_task_scheduled_event_attributes.activity_type.name in ("poll", "poll_flow")]
        assert len(polls) == 1, len(polls)


class DirectoryChat:
    """The webhook chat, with a directory that knows people's full names and emails."""

    def __init__(self, inner: Any, directory: dict[str, Person]) -> None:
        self.inner, self.directory, self.platform = inner, directory, inner.platform

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    async def resolve(self, chat: Any, person: Person) -> Person:
        return self.directory.get(person.id, person)


async def test_signers_are_shown_as_the_directory_knows_them(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    import httpx

    from connectors.chat.webhook.client import WebhookChat

    full = A.model_copy(update={"name": "李四（法务部）", "email": "lisi@corp.example"})
    async with httpx.AsyncClient() as http:
        chats: dict[str, Any] = {}
        async with harness(ts_env, settings, chats=chats) as h:
            chats["webhook"] = DirectoryChat(
                WebhookChat(h.settings.webhook_outbound_url, "test-webhook-secret", http),
                {A.id: full, INITIATOR.id: INITIATOR.model_copy(update={"name": "张三（销售部）"})})
            handle = await h.start([[A]])
            await h.link(handle, A)
            assert h.cards(handle)[-1]["signers"][0]["name"] == "李四（法务部）"
            view = await h.status(handle)
            assert view.signers[0].person.email == "lisi@corp.example"
            assert view.initiator.name == "张三（销售部）"


async def test_departed_staff_cannot_be_signers(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    from store.tables import Identity

    async with harness(ts_env, settings) as h:
        with Session(get_engine(h.settings.sqlalchemy_url)) as session:
            session.add(Identity(platform="webhook", tenant="default", user_id=B.id, name=B.name, active=False))
            session.commit()
        handle = await h.start([[A], [B]])
        view = await handle.result()
        assert view.status == "REJECTED" and "left the company" in (view.reason or "")
        assert h.provider.calls == 0


async def test_unconfirmable_events_only_trigger_a_poll(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    """A callback whose signature doesn't cover the body (replayable) can't decline a flow by itself."""
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A]])
        await h.link(handle, A)
        view = await h.status(handle)
        forged = ProviderEvent(event_id="replayed-hash", provider="local", flow_id=view.provider_flow_id or "",
                               kind="declined", signer_id=A.id, reason="forged", occurred_at=datetime.now(UTC),
                               confirm=True)
        await handle.signal("provider_event", forged)

        async def polled() -> bool:
            history = await handle.fetch_history()
            return any(e.activity_task_scheduled_event_attributes.activity_type.name in ("poll", "poll_flow")
                       for e in history.events)

        for _ in range(100):  # the hint makes the workflow ask the provider
            if await polled():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no poll after an unconfirmable event")
        assert (await h.status(handle)).status == "IN_PROGRESS"  # the provider knows of no decline
        await h.sign(handle, A)
        assert (await handle.result()).status == "COMPLETED"
