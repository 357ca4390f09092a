"""DocuSeal: the connector against its simulator over real HTTP, and whole flows end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from connectors.esign import docuseal
from connectors.esign.base import ProviderError, WebhookRejected
from connectors.esign.docuseal import DocuSealConfig, DocuSealProvider, DocuSealWebhook, area, signature
from signbridge.core.models import CreateFlowInput, DocumentInfo, OpenGroupInput, Person
from signbridge.core.settings import Settings
from signbridge.pdf.anchors import find_anchors
from signbridge.pdf.pades import validate_pdf
from signbridge.pdf.sample import sample_contract
from store.blobs import FileBlobStore, sha256_hex
from tests.provider_cases import E2E, A, B, C, FlowCase, SimSigning, e2e_fixture, provider_e2e, refused_seal
from tests.sim.docuseal_sim import DocuSealSim
from tests.template_pdfs import anchor_pdf

KEY, SECRET = "sim-docuseal-key", "sim-docuseal-secret"


def test_published_vector() -> None:
    assert signature("whsec_test", "1700000000", b'{"event_type":"form.completed"}') == \
        "1700000000.9904aa5843da90cce5ee8be1b332851a0b760615404a3cb553253ceaca3c27dd"


def test_settings_enable_separately(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for name in ("API_KEY", "WEBHOOK_SECRET"):
        monkeypatch.delenv(f"SIGNBRIDGE_DOCUSEAL_{name}", raising=False)
    assert docuseal.webhook(settings) is None
    assert docuseal.build(settings, None, FileBlobStore(settings.data_dir), httpx.AsyncClient()) is None
    monkeypatch.setenv("SIGNBRIDGE_DOCUSEAL_WEBHOOK_SECRET", "s-123")
    assert docuseal.webhook(settings) is not None and "s-123" not in repr(DocuSealConfig())


def test_webhook_window_and_submission_events() -> None:
    sim = DocuSealSim(KEY, SECRET)
    hook = DocuSealWebhook(SecretStr(SECRET))
    headers, body = sim.delivery("submission.completed", {"id": 55, "completed_at": "2026-01-01T00:00:00Z"})
    events, _ = hook.parse(headers, {}, body)
    assert [(e.event_id, e.kind, e.flow_id) for e in events] == [("docuseal:55:completed", "completed", "55")]
    future, body2 = sim.delivery("submission.expired", {"id": 55}, ts=int(datetime.now(UTC).timestamp()) + 400)
    with pytest.raises(WebhookRejected):
        hook.parse(future, {}, body2)


@pytest.fixture
def sim() -> Iterator[DocuSealSim]:
    with DocuSealSim(KEY, SECRET).running() as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def _provider(sim: DocuSealSim, blobs: FileBlobStore, http: httpx.AsyncClient, key: str = KEY,
              send_email: bool = False) -> DocuSealProvider:
    return DocuSealProvider(DocuSealConfig(api_key=SecretStr(key), api_base=sim.api_base, send_email=send_email),
                            blobs, http)


def _create_input(blobs: FileBlobStore, groups: list[list[Person]], request_id: str = "req-1") -> CreateFlowInput:
    data = sample_contract("unit")
    return CreateFlowInput(request_id=request_id, provider="docuseal", title="合同",
                           document=DocumentInfo(name="c.pdf", sha256=sha256_hex(data), blob_key=blobs.put(data),
                                                 size=len(data), pages=1),
                           groups=groups, expires_at=datetime.now(UTC) + timedelta(days=3))


async def test_connector_over_http(sim: DocuSealSim, http: httpx.AsyncClient, settings: Settings) -> None:
    blobs = FileBlobStore(settings.data_dir / "blobs")
    provider = _provider(sim, blobs, http, send_email=True)
    req = _create_input(blobs, [[A], [B, C]])
    flow = await provider.create_flow(req)
    assert await provider.create_flow(req) == flow and len(sim.submissions) == 1  # idempotent per request id
    sid = int(flow)
    assert sim.submissions[sid]["order"] == "preserved"
    assert [s["external_id"] for s in sim.submissions[sid]["submitters"]] == ["u-1", "u-2", "x-9"]
    slug = sim.submitter(sid, "x-9").pop("embed_src") and sim.submitter(sid, "x-9")["slug"]  # older DocuSeal
    links = await provider.open_group(OpenGroupInput(request_id="req-1", provider="docuseal", flow_id=flow,
                                                     group=1, signers=[B, C], expires_at=req.expires_at))
    assert [(x.signer_id, x.url) for x in links] == [("u-2", sim.submitter(sid, "u-2")["embed_src"]),
                                                     ("x-9", f"{sim.url}/s/{slug}")]
    sim.hold()  # no SignBridge here: keep the webhooks
    assert not sim.may_sign(sid, "u-2")
    await sim.sign(sid, "u-1")
    assert [(e.kind, e.signer_id) for e in await provider.poll(flow)] == [("signed", "u-1")]
    with pytest.raises(ProviderError) as not_done:
        await provider.download_signed(flow)
    assert not not_done.value.non_retryable
    await provider.remind(flow, ["u-2"])
    assert sim.reminded == [sim.submitter(sid, "u-2")["id"]]
    await provider.revoke(flow, "changed")
    assert sim.submissions[sid]["archived_at"]
    assert [e.kind for e in await provider.poll(flow)] == ["signed", "cancelled"]

    parallel = await provider.create_flow(_create_input(blobs, [[A, B]], "req-2"))
    assert sim.submissions[int(parallel)]["order"] == "random"
    await _provider(sim, blobs, http).remind(parallel, [])  # DocuSeal sends no email: the chat reminds
    assert len(sim.reminded) == 1
    await sim.sign(int(parallel), "u-2")
    await sim.sign(int(parallel), "u-1")
    signed = await provider.download_signed(parallel)
    assert not signed.startswith(blobs.get(req.document.blob_key))  # re-rendered: not incremental
    reports = await asyncio.to_thread(validate_pdf, signed, [sim.ca.certificate])
    assert [(r.intact, r.valid, r.trusted) for r in reports] == [(True, True, True)]
    evidence = await provider.evidence(parallel)
    assert evidence["signed_sha256"] == sha256_hex(signed) and evidence["audit_log_url"]


async def test_errors_are_classified(sim: DocuSealSim, http: httpx.AsyncClient, settings: Settings) -> None:
    blobs = FileBlobStore(settings.data_dir / "blobs")
    with pytest.raises(ProviderError) as bad_key:
        await _provider(sim, blobs, http, key="wrong").poll("1")
    assert bad_key.value.non_retryable
    with pytest.raises(ProviderError) as invalid:
        await _provider(sim, blobs, http).create_flow(_create_input(blobs, [[Person(id="u-5", name="无邮箱")]]))
    assert invalid.value.non_retryable
    sim.down = True
    with pytest.raises(ProviderError) as outage:
        await _provider(sim, blobs, http).poll("1")
    assert not outage.value.non_retryable and outage.value.retry_after == 1.0
    sim.down = False
    sim.throttle = 1
    with pytest.raises(ProviderError) as limited:
        await _provider(sim, blobs, http).poll("1")
    assert not limited.value.non_retryable and limited.value.retry_after == 7.0


# ---- end to end -------------------------------------------------------------------------------


async def _flow_of(rig: E2E, sim: DocuSealSim, handle: Any) -> int:
    view = await rig.wait(handle, lambda v: v.provider_flow_id is not None and v.status.value == "IN_PROGRESS")
    assert int(str(view.provider_flow_id)) in sim.submissions
    return int(str(view.provider_flow_id))


@asynccontextmanager
async def _rig(env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch,
               sim: DocuSealSim) -> AsyncIterator[E2E]:
    monkeypatch.setenv("SIGNBRIDGE_DOCUSEAL_API_KEY", KEY)
    monkeypatch.setenv("SIGNBRIDGE_DOCUSEAL_WEBHOOK_SECRET", SECRET)
    async with provider_e2e(env, settings, "docuseal", lambda blobs, http: _provider(sim, blobs, http),
                            ) as (rig, callback):
        sim.callback_url = callback("/esign/docuseal/webhook")
        yield rig


FLOW = FlowCase(  # the shared flows: tests/test_provider_flows.py
    "docuseal", simulator=lambda settings: DocuSealSim(KEY, SECRET).running(),
    rig=_rig, signing=lambda sim: SimSigning(sim, lambda: sim.submissions, who=lambda p: p.id, flow_key=int))


e2e = e2e_fixture(FLOW)


async def test_e2e_mixed_groups_complete(e2e: E2E, sim: DocuSealSim) -> None:
    handle = await e2e.start([[A], [B, C]])
    sid = await _flow_of(e2e, sim, handle)
    await e2e.sink.wait_for(lambda: bool(e2e.links(handle, A)), timeout=20)
    assert e2e.links(handle, A)[0]["sign_url"] == sim.submitter(sid, "u-1")["embed_src"]
    assert not e2e.links(handle, B)
    sim.duplicate = True
    await sim.sign(sid, "u-1")
    await e2e.sink.wait_for(lambda: bool(e2e.links(handle, B)) and bool(e2e.links(handle, C)), timeout=20)
    sim.duplicate = False
    sim.hold()
    await sim.sign(sid, "u-2")
    await sim.sign(sid, "x-9")
    await sim.flush(reverse=True)  # submission.completed first, then the forms
    view = await e2e.result(handle)
    assert view.status.value == "COMPLETED" and all(s.status == "signed" for s in view.signers)
    assert view.signed_document is not None
    assert e2e.blobs.get(view.signed_document.blob_key) == sim.files[sid]
    assert [f["sha256"] for f in e2e.sink.of_type("file") if f["kind"] == "signed"] == [view.signed_document.sha256]


async def test_e2e_anchor_roles_become_signature_areas(e2e: E2E, sim: DocuSealSim) -> None:
    """【甲方签章】 / 【乙方签章】: each submitter's signature area sits beside their role's anchor, as
    fractions of the page from its top left."""
    pdf = anchor_pdf([(72, 300, "甲方：【甲方签章】"), (72, 420, "乙方：【乙方签章】")])
    handle = await e2e.start([[A, B]], documents=[pdf], roles={"甲方": B.id, "乙方": A.id})
    sid = await _flow_of(e2e, sim, handle)
    template = sim.templates[sim.submissions[sid]["template_id"]]
    by_person = {s["external_id"]: s["role"] for s in sim.submissions[sid]["submitters"]}
    areas = {f["role"]: f["areas"][0] for f in template["fields"]}
    anchors = {a.role: a.box for a in find_anchors(pdf)}
    for person, role in ((B, "甲方"), (A, "乙方")):
        _, y1, x2, y2 = anchors[role]
        where = areas[by_person[person.id]]
        assert where["page"] == 1
        assert abs(where["x"] * 595 - (x2 + 4)) <= 1
        assert abs((1 - where["y"] - where["h"] / 2) * 842 - (y1 + y2) / 2) <= 1


def test_an_unplaced_submitter_gets_an_automatic_slot_on_the_last_page() -> None:
    assert area(None, 3, 1) == {"page": 3, "x": 0.55, "y": 0.7, "w": 0.35, "h": 0.06}


async def test_e2e_an_organisation_seal_is_refused_at_prepare(e2e: E2E, sim: DocuSealSim) -> None:
    await refused_seal(e2e)
    assert not sim.submissions  # nothing was created at the provider
