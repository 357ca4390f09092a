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
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

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
from signbridge.core.models import (
    ChatRef,
    CreateFlowInput,
    DocumentInfo,
    OpenGroupInput,
    Person,
    ProviderEvent,
    StatusView,
)
from signbridge.core.settings import Settings
from signbridge.pdf.pades import validate_pdf
from signbridge.pdf.pki import InstallationCA
from signbridge.pdf.render import page_text
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
    assert 'name="consent" value="yes"' in resp.text and f'action="{flow.links["u-1"]}/decline"' in resp.text
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
    signed = resp.json()
    assert {k: signed[k] for k in ("status", "signer_id", "document_sha256", "complete")} == {
        "status": "signed", "signer_id": "x-9", "document_sha256": local_flow(pages, flow.flow_id).current_sha256,
        "complete": True}  # the only signer: the flow is complete, and the signed file is theirs to download
    download = await pages.http.get(signed["download_url"].removeprefix(pages.settings.public_url))
    assert download.status_code == 200 and download.content == await pages.provider.download_signed(flow.flow_id)
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


# ---- the page on a phone -------------------------------------------------------------------------


def _with_snapshot(p: Pages, flow: Flow, initiator: str) -> None:
    """What the workflow publishes: the request as the card shows it (who asked, by when)."""
    with Session(p.provider.engine) as s:
        record = s.get(SigningRequestRecord, flow.request_id)
        assert record is not None
        lf = s.get(LocalFlow, flow.flow_id)
        assert lf is not None
        record.snapshot = StatusView(
            request_id=flow.request_id, title=lf.title, status="IN_PROGRESS", provider="local",
            initiator=Person(id="u-0", name=initiator),
            chat=ChatRef(chat_id="g-1", source_event_id=flow.request_id)).model_dump_json()
        lf.expires_at = datetime(2026, 12, 11, 9, 30, tzinfo=UTC)  # 17:30 in Beijing
        s.add(record)
        s.add(lf)
        s.commit()


async def test_first_screen_says_who_asks_what_and_by_when(pages: Pages) -> None:
    flow = await pages.flow([[A, B]], title="服务器设备采购合同")
    _with_snapshot(pages, flow, "张三")
    resp = secure(await pages.http.get(flow.links["u-2"]))
    assert resp.status_code == 200
    h1 = re.search(r"<h1>(.*?)</h1>", resp.text, re.S)
    assert h1 is not None
    assert re.sub(r"<[^>]+>", "", h1.group(1)) == "张三 请您签署《服务器设备采购合同》，截止 12月11日 17:30"
    assert "张三 asks you to sign “服务器设备采购合同” by 11 Dec 17:30 (UTC+8)" in resp.text
    # The hashes are there, but under the "文件详情" disclosure, not on the first screen.
    sha = hashlib.sha256(flow.original).hexdigest()
    details = resp.text.index("<summary>文件详情")
    assert resp.text.index(sha) > details and resp.text.index("<details") < details
    view = (await pages.http.get(flow.links["u-2"], headers=JSON)).json()
    assert view["initiator"] == "张三" and view["deadline_words"]["zh"] == "12月11日 17:30"


async def test_name_field_is_empty_with_the_expected_name_as_a_hint_kept_across_errors(pages: Pages) -> None:
    flow = await pages.flow([[B]])
    url = flow.links["u-2"]
    page = (await pages.http.get(url)).text
    name_input = re.search(r'<input type="text" id="name"[^>]*>', page, re.S)
    assert name_input is not None and 'value=""' in name_input.group(0) and "placeholder" not in name_input.group(0)
    assert 'aria-describedby="name-hint"' in name_input.group(0)
    assert re.search(r'id="name-hint">应填写：<strong>王五</strong>', page)

    wrong = secure(await pages.http.post(url, data={"name": "王 六<b>", "consent": "yes"}))
    assert wrong.status_code == 400 and 'role="alert"' in wrong.text
    assert "请输入您的姓名「王五」以确认签署" in wrong.text
    assert 'value="王 六&lt;b&gt;"' in wrong.text  # what was typed stays, escaped
    assert re.search(r'name="consent" value="yes" required checked', wrong.text)
    no_consent = secure(await pages.http.post(url, data={"name": "王五"}))
    assert no_consent.status_code == 400 and 'value="王五"' in no_consent.text and "checked" not in no_consent.text
    no_reason = secure(await pages.http.post(url + "/decline", data={"reason": "x" * 501}))
    assert no_reason.status_code == 400 and "<details open>" in no_reason.text
    assert "x" * 501 + "</textarea>" in no_reason.text
    assert local_flow(pages, flow.flow_id).version == 0


async def test_pages_come_at_every_pixel_ratio_with_their_text(pages: Pages) -> None:
    flow = await pages.flow([[A]], pages=2)
    url = flow.links["u-1"]
    page = (await pages.http.get(url)).text
    img = re.search(r"<img [^>]*>", page, re.S)
    assert img is not None
    srcset = re.search(r'srcset="([^"]+)"', img.group(0))
    assert srcset is not None
    candidates = [c.strip().split(" ") for c in srcset.group(1).split(",")]
    assert [c[0] for c in candidates] == [f"{url}/pages/1.png", f"{url}/pages/1@2x.png", f"{url}/pages/1@3x.png"]
    widths = [int(c[1].removesuffix("w")) for c in candidates]
    assert abs(widths[1] - 2 * widths[0]) <= 1 and abs(widths[2] - 3 * widths[0]) <= 2
    assert f'href="{url}/pages/1@3x.png"' in page  # a tap opens the sharpest rendering
    # The page's text for screen readers, tied to its image.
    described = re.search(r'aria-describedby="([^"]+)"', img.group(0))
    assert described is not None
    text = re.search(rf'id="{described.group(1)}">([^<]*)<', page)
    assert text is not None and f"Contract {flow.request_id[-12:]}" in text.group(1)

    def png_width(data: bytes) -> int:
        assert data.startswith(b"\x89PNG")
        return int.from_bytes(data[16:20], "big")

    one = png_width((await pages.http.get(f"{url}/pages/1.png")).content)
    three = secure(await pages.http.get(f"{url}/pages/1@3x.png"))
    assert three.status_code == 200 and abs(png_width(three.content) - 3 * one) <= 2 and one == widths[0]
    for bad in ("1@4x", "1@x", "1@2", "@2x", "1@2x@2x"):
        assert (await pages.http.get(f"{url}/pages/{bad}.png")).status_code == 404, bad


async def test_the_last_signer_is_told_it_is_complete_and_gets_the_signed_file(pages: Pages) -> None:
    flow = await pages.flow([[A, B]])
    first = secure(await pages.http.post(flow.links["u-1"], data={"name": "Alice Chen", "consent": "yes"}))
    assert first.status_code == 200 and "其他签署人完成后" in first.text and "下载已签文件" not in first.text
    last = secure(await pages.http.post(flow.links["u-2"], data={"name": "王五", "consent": "yes"}))
    assert last.status_code == 200 and "所有签署人都已完成签署" in last.text and "下载已签文件" in last.text
    href = re.search(r'<a class="button" href="([^"]+)" download>下载已签文件', last.text)
    assert href is not None
    signed = await pages.http.get(href.group(1).replace("&amp;", "&").removeprefix(pages.settings.public_url))
    assert signed.status_code == 200 and signed.content == await pages.provider.download_signed(flow.flow_id)
    # Opening the link again later: the link is used up, the signed file is still there for them.
    again = secure(await pages.http.get(flow.links["u-1"]))
    assert again.status_code == 410 and "下载已签文件" in again.text


async def test_the_stamp_shows_the_signers_time_zone_and_says_it_is_an_electronic_signature(pages: Pages) -> None:
    flow = await pages.flow([[B]])
    before = utcnow().astimezone(ZoneInfo("Asia/Shanghai"))
    assert (await pages.http.post(flow.links["u-2"], data={"name": "王五", "consent": "yes"})).status_code == 200
    signed = await pages.provider.download_signed(flow.flow_id)
    text = page_text(signed, 1)
    assert "电子签名 / Signed electronically" in text and "王五" in text
    assert f"{before:%Y-%m-%d} " in text and " UTC+8" in text
