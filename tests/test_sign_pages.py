"""The signing pages over real HTTP (ASGI) with a real Temporal dev server receiving the signals.

A tiny `RecordingWorkflow` stands in for `SigningWorkflow`: it records every `provider_event`
signal, so each test can assert exactly what the page delivered.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select
from temporalio import workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api.main import create_app
from connectors.esign import local
from connectors.esign.local import LocalProvider
from signbridge.core.models import CreateFlowInput, DocumentInfo, OpenGroupInput, Person, ProviderEvent
from signbridge.core.settings import Settings
from signbridge.pdf.pades import validate_pdf
from signbridge.pdf.pki import InstallationCA
from signbridge.pdf.sample import sample_contract
from store import audit
from store.tables import Document, LocalFlow, LocalSigner, SigningRequestRecord, utcnow
from tests import hostile_pdfs as hostile
from tests.codes import sign_with_code

A = Person(id="u-1", name="Alice Chen")
B = Person(id="u-2", name="王五")
C = Person(id="x-9", name="客户A", email="a@customer.example", external=True)
CLIENT_IP = "203.0.113.7"
JSON = {"Accept": "application/json"}
SECURITY = {"cache-control": "no-store", "referrer-policy": "no-referrer", "x-frame-options": "DENY",
            "x-content-type-options": "nosniff"}


@workflow.defn(name="RecordingWorkflow")
class RecordingWorkflow:
    """Records provider events, as `SigningWorkflow` would receive them."""

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
class Flow:
    request_id: str
    flow_id: str
    original: bytes
    links: dict[str, str]  # signer id -> path (/sign/<token>)


@dataclass
class Pages:
    http: httpx.AsyncClient
    client: Client
    settings: Settings
    provider: LocalProvider

    async def flow(self, groups: list[list[Person]], *, title: str = "销售合同", record: bool = True,
                   pages: int = 2, pdf: bytes | None = None) -> Flow:
        """A local flow with its first group open; `record`: a signing request row + a workflow to signal."""
        request_id = f"sign:test:{uuid.uuid4().hex[:12]}"
        original = pdf or sample_contract(f"Contract {request_id[-12:]}", pages=pages)
        key = self.provider.blobs.put(original)
        with Session(self.provider.engine) as s:
            if s.get(Document, key) is None:
                s.add(Document(sha256=key, name="contract.pdf", size=len(original), blob_key=key))
                s.commit()
        document = DocumentInfo(name="contract.pdf", sha256=key, blob_key=key, size=len(original), pages=pages)
        expires = utcnow() + timedelta(days=7)
        flow_id = await self.provider.create_flow(CreateFlowInput(
            request_id=request_id, provider="local", title=title, document=document, groups=groups,
            expires_at=expires))
        if record:
            with Session(self.provider.engine) as s:
                s.add(SigningRequestRecord(
                    request_id=request_id, title=title, provider="local", provider_flow_id=flow_id,
                    chat_platform="webhook", chat_id="g-1", source_event_id=request_id, card_key=request_id,
                    initiator_id="u-0"))
                s.commit()
            await self.client.start_workflow("RecordingWorkflow", id=request_id, task_queue=self.settings.task_queue,
                                             execution_timeout=timedelta(minutes=10))
        links = await self.provider.open_group(OpenGroupInput(
            request_id=request_id, provider="local", flow_id=flow_id, group=0, signers=groups[0],
            expires_at=expires))
        return Flow(request_id, flow_id, original,
                    {link.signer_id: re.sub(r"^https?://[^/]+", "", link.url or "") for link in links})

    async def events(self, flow: Flow, count: int, timeout: float = 15) -> list[ProviderEvent]:
        handle = self.client.get_workflow_handle(flow.request_id)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            events: list[ProviderEvent] = await handle.query("events", result_type=list[ProviderEvent])
            if len(events) >= count or asyncio.get_running_loop().time() > deadline:
                return events
            await asyncio.sleep(0.1)


@pytest.fixture
async def pages(dev_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Pages]:
    app = create_app(settings, dev_env.client)
    async with app.router.lifespan_context(app), Worker(
        dev_env.client, task_queue=settings.task_queue, workflows=[RecordingWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ), httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(CLIENT_IP, 50000)),
                         base_url="http://signbridge.test", timeout=60) as http:
        provider = LocalProvider(settings, app.state.engine, app.state.blobs)
        yield Pages(http=http, client=dev_env.client, settings=settings, provider=provider)


def secure(resp: httpx.Response) -> httpx.Response:
    for name, value in SECURITY.items():
        assert resp.headers.get(name) == value, (name, resp.headers)
    return resp


def local_flow(p: Pages, flow_id: str) -> LocalFlow:
    with Session(p.provider.engine) as s:
        row = s.get(LocalFlow, flow_id)
    assert row is not None
    return row


async def test_page_shows_the_document_and_renders_its_pages(pages: Pages) -> None:
    flow = await pages.flow([[A]], title="年度采购合同", pages=2)
    resp = secure(await pages.http.get(flow.links["u-1"]))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    sha = hashlib.sha256(flow.original).hexdigest()
    assert "年度采购合同" in resp.text and sha in resp.text and "Alice Chen" in resp.text
    imgs = re.findall(r'<img src="([^"]+)"', resp.text)
    assert imgs == [f"{flow.links['u-1']}/pages/{n}.png" for n in (1, 2)]
    assert 'name=consent value=yes' in resp.text and f'action="{flow.links["u-1"]}/decline"' in resp.text
    assert "http://" not in resp.text and "https://" not in resp.text  # nothing loaded from elsewhere

    png = secure(await pages.http.get(imgs[0]))
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert list((pages.settings.data_dir / "pages").glob(f"{sha}-1.png"))
    assert (await pages.http.get(imgs[0])).content == png.content  # from the disk cache
    for missing in ("3", "0", "x"):
        assert secure(await pages.http.get(f"{flow.links['u-1']}/pages/{missing}.png")).status_code == 404


async def test_sign_checks_consent_and_name_then_signs_and_signals(pages: Pages) -> None:
    flow = await pages.flow([[A]])
    url = flow.links["u-1"]
    resp = secure(await pages.http.post(url, data={"name": "Alice Chen"}))
    assert resp.status_code == 400 and "同意" in resp.text
    resp = secure(await pages.http.post(url, data={"name": "Bob", "consent": "yes"}))
    assert resp.status_code == 400 and "请输入您的姓名「Alice Chen」以确认签署" in resp.text
    assert local_flow(pages, flow.flow_id).version == 0

    resp = secure(await pages.http.post(url, data={"name": "  alice   CHEN ", "consent": "yes"},
                                        headers={"User-Agent": "pytest-browser"}))
    assert resp.status_code == 200 and "已签署" in resp.text and "Signed" in resp.text
    [event] = await pages.events(flow, 1)
    assert (event.kind, event.signer_id, event.event_id, event.provider, event.flow_id) == (
        "signed", "u-1", f"{flow.flow_id}:u-1:signed", "local", flow.flow_id)
    assert await pages.provider.poll(flow.flow_id) == [event]

    with Session(pages.provider.engine) as s:
        [row] = [r for r in audit.trail(s, flow.request_id) if r.action == "signer.signed"]
    assert (row.ip, row.user_agent, row.actor) == (CLIENT_IP, "pytest-browser", "u-1")
    assert row.document_sha256 == local_flow(pages, flow.flow_id).current_sha256
    assert hashlib.sha256(flow.original).hexdigest() in row.detail

    # The same link again is gone, for reading and for signing.
    again = secure(await pages.http.get(url))
    assert again.status_code == 410 and "已签署" in again.text
    assert secure(await pages.http.post(url, data={"name": "Alice Chen", "consent": "yes"})).status_code == 410
    assert secure(await pages.http.get(f"{url}/pages/1.png")).status_code == 410


async def test_unknown_and_expired_links(pages: Pages) -> None:
    for resp in [await pages.http.get("/sign/not-a-real-token"),
                 await pages.http.post("/sign/not-a-real-token", data={"name": "x", "consent": "yes"}),
                 await pages.http.get("/sign/not-a-real-token/pages/1.png")]:
        assert secure(resp).status_code == 404 and "链接无效" in resp.text and "This link is not valid" in resp.text

    flow = await pages.flow([[A]], record=False)
    with Session(pages.provider.engine) as s:
        signer = s.exec(select(LocalSigner).where(LocalSigner.flow_id == flow.flow_id)).one()
        signer.token_expires_at = utcnow() - timedelta(minutes=1)
        s.add(signer)
        s.commit()
    resp = secure(await pages.http.get(flow.links["u-1"]))
    assert resp.status_code == 410 and "过期" in resp.text and "expired" in resp.text
    resp = await pages.http.post(flow.links["u-1"], data={"name": "Alice Chen", "consent": "yes"}, headers=JSON)
    assert secure(resp).status_code == 410 and resp.json()["error"]["code"] == "link_expired"


async def test_parallel_signers_both_end_up_in_the_final_pdf(pages: Pages, monkeypatch: pytest.MonkeyPatch) -> None:
    flow = await pages.flow([[A, B]])
    signings: list[str] = []
    real_sign_bytes = local._sign_bytes

    def counting(blobs: Any, blob_key: str, *args: Any) -> str:
        signings.append(blob_key)
        return real_sign_bytes(blobs, blob_key, *args)

    monkeypatch.setattr(local, "_sign_bytes", counting)
    first, second = await asyncio.gather(
        pages.http.post(flow.links["u-1"], data={"name": "Alice Chen", "consent": "yes"}, headers=JSON),
        pages.http.post(flow.links["u-2"], data={"name": "王五", "consent": "yes"}, headers=JSON),
    )
    assert first.status_code == 200 and second.status_code == 200, (first.text, second.text)
    assert {first.json()["signer_id"], second.json()["signer_id"]} == {"u-1", "u-2"}
    # Both read version 0; the loser of the optimistic lock signed again on top of the winner's version.
    original_key = hashlib.sha256(flow.original).hexdigest()
    assert len(signings) == 3 and signings[:2] == [original_key, original_key] and signings[2] != original_key
    row = local_flow(pages, flow.flow_id)
    assert (row.status, row.version) == ("completed", 2)
    signed = await pages.provider.download_signed(flow.flow_id)
    assert signed.startswith(flow.original)
    ca = InstallationCA.load_or_create(pages.settings.data_dir / "ca")
    reports = await asyncio.to_thread(validate_pdf, signed, [ca.certificate])
    assert len(reports) == 2 and all(r.intact and r.valid and r.trusted for r in reports), reports
    assert {r.signer_name for r in reports} == {"Alice Chen", "王五"}
    events = await pages.events(flow, 2)
    assert sorted((e.kind, e.signer_id) for e in events) == [("signed", "u-1"), ("signed", "u-2")]


async def test_decline_needs_a_reason_and_signals_it(pages: Pages) -> None:
    flow = await pages.flow([[A, B]])
    url = flow.links["u-2"] + "/decline"
    resp = secure(await pages.http.post(url, data={"reason": "   "}))
    assert resp.status_code == 400 and "原因" in resp.text
    resp = await pages.http.post(url, data={"reason": "x" * 501}, headers=JSON)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "reason_too_long"
    resp = secure(await pages.http.post(url, data={"reason": "价格条款需要修改"}))
    assert resp.status_code == 200 and "已拒绝签署" in resp.text
    [event] = await pages.events(flow, 1)
    assert (event.kind, event.signer_id, event.reason, event.event_id) == (
        "declined", "u-2", "价格条款需要修改", f"{flow.flow_id}:u-2:declined")
    # The other signer's link died with the flow.
    other = secure(await pages.http.get(flow.links["u-1"]))
    assert other.status_code == 410 and "拒绝" in other.text


async def test_revoked_flow_links_are_gone(pages: Pages) -> None:
    flow = await pages.flow([[A]], record=False)
    await pages.provider.revoke(flow.flow_id, "cancelled")
    resp = secure(await pages.http.get(flow.links["u-1"]))
    assert resp.status_code == 410 and "撤销" in resp.text and "withdrawn" in resp.text
    assert secure(await pages.http.post(flow.links["u-1"] + "/decline", data={"reason": "no"})).status_code == 410


async def test_json_mode(pages: Pages) -> None:
    flow = await pages.flow([[C]])
    url = flow.links["x-9"]
    view = secure(await pages.http.get(url, headers=JSON))
    assert view.status_code == 200 and view.headers["content-type"] == "application/json"
    body = view.json()
    assert (body["status"], body["signer_id"], body["name"]) == ("open", "x-9", "客户A")
    assert body["document"]["sha256"] == hashlib.sha256(flow.original).hexdigest()
    assert len(body["page_urls"]) == body["document"]["pages"] == 2

    refused = await pages.http.post(url, data={"name": "客户B", "consent": "yes"}, headers=JSON)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "name_mismatch"
    assert set(refused.json()["error"]) == {"code", "message"}
    assert body["code_required"] and body["code_channel"] == "email" and body["code_sent_to"] == "a***@customer.example"
    resp = secure(await sign_with_code(pages.http, pages.settings, url, "客户Ａ", headers=JSON))  # full-width
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert resp.json() == {"status": "signed", "signer_id": "x-9",
                           "document_sha256": local_flow(pages, flow.flow_id).current_sha256}
    missing = await pages.http.get("/sign/nope", headers=JSON)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "link_not_found"


async def test_signing_succeeds_when_the_event_cannot_be_delivered(pages: Pages) -> None:
    """No signing-request row (so no workflow to route to): the page still answers success and
    the stored event is there for the workflow's polling fallback."""
    flow = await pages.flow([[A]], record=False)
    resp = await pages.http.post(flow.links["u-1"], data={"name": "Alice Chen", "consent": "yes"}, headers=JSON)
    assert resp.status_code == 200 and resp.json()["status"] == "signed"
    [event] = await pages.provider.poll(flow.flow_id)
    assert (event.kind, event.signer_id) == ("signed", "u-1")


async def test_a_document_that_cannot_take_a_signature_is_a_422_not_a_500(pages: Pages) -> None:
    """A flow started before prepare's dry run existed may hold such a file: the signer is told, in words."""
    flow = await pages.flow([[A]], pdf=hostile.looping_prev(sample_contract("Loop")))
    url = flow.links["u-1"]
    resp = secure(await pages.http.post(url, data={"name": "Alice Chen", "consent": "yes"}))
    assert resp.status_code == 422
    assert "无法签署" in resp.text and "此文件无法添加电子签名，请联系发起人重新发送文件" in resp.text
    assert "A signature cannot be added to this document; ask the sender to send it again" in resp.text
    resp = secure(await pages.http.post(url, data={"name": "Alice Chen", "consent": "yes"}, headers=JSON))
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "document_unsignable"
    assert local_flow(pages, flow.flow_id).version == 0  # nothing was signed or advanced
    assert await pages.provider.poll(flow.flow_id) == []


async def test_a_blob_store_failure_while_signing_is_a_503_to_retry(pages: Pages) -> None:
    flow = await pages.flow([[A]])
    blob = local_flow(pages, flow.flow_id).current_blob_key
    for path in (pages.settings.data_dir / "blobs").rglob(blob + "*"):
        path.unlink()
    resp = secure(await pages.http.post(flow.links["u-1"], data={"name": "Alice Chen", "consent": "yes"},
                                        headers=JSON))
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "temporarily_unavailable"
    assert local_flow(pages, flow.flow_id).version == 0
