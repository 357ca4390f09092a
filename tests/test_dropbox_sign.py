"""Dropbox Sign: the connector against its simulator over real HTTP, and whole flows end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from connectors.esign import dropbox_sign
from connectors.esign.base import ProviderError, WebhookRejected
from connectors.esign.dropbox_sign import DropboxSignConfig, DropboxSignProvider, DropboxSignWebhook, event_hash
from signbridge.core.models import CreateFlowInput, DocumentInfo, OpenGroupInput, Person
from signbridge.core.settings import Settings
from signbridge.pdf.anchors import find_anchors
from signbridge.pdf.sample import sample_contract
from store.blobs import FileBlobStore, sha256_hex
from tests.provider_cases import E2E, A, B, C, FlowCase, SimSigning, e2e_fixture, provider_e2e, refused_seal
from tests.provider_cases.dropbox_sign import encode
from tests.sim.dropbox_sign_sim import DropboxSignSim
from tests.template_pdfs import anchor_pdf

KEY = "sim-dropbox-key"


def test_published_vector() -> None:
    assert event_hash("apikey", "1525470811", "signature_request_sent") == \
        "85cec5fb9855bae9cfa4783b6378d68b3d895861794849cc3f5334f0e824f244"


def test_settings_enable_only_with_a_key(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.delenv("SIGNBRIDGE_DROPBOX_SIGN_API_KEY", raising=False)
    assert dropbox_sign.webhook(settings) is None
    assert dropbox_sign.build(settings, None, FileBlobStore(settings.data_dir), httpx.AsyncClient()) is None
    monkeypatch.setenv("SIGNBRIDGE_DROPBOX_SIGN_API_KEY", "k-123")
    hook = dropbox_sign.webhook(settings)
    assert hook is not None and "k-123" not in repr(DropboxSignConfig())


def test_webhook_maps_the_signer_and_refuses_a_foreign_key() -> None:
    sim = DropboxSignSim(KEY)
    sim.requests["r1"] = {"signature_request_id": "r1", "metadata": {"sb_signers": '{"a@x.test": "u-7"}'},
                          "signatures": [{"signature_id": "s1", "signer_email_address": "A@x.test",
                                          "status_code": "signed", "signed_at": 1700000000}]}
    headers, body = encode(sim.payload("signature_request_signed", "r1", "s1"))
    events, reply = DropboxSignWebhook(SecretStr(KEY)).parse(headers, {}, body)
    assert reply.body == b"Hello API Event Received"
    assert [(e.kind, e.signer_id, e.event_id) for e in events] == [("signed", "u-7", "dropbox_sign:r1:s1:signed")]
    with pytest.raises(WebhookRejected):
        DropboxSignWebhook(SecretStr("another-key")).parse(headers, {}, body)
    test_headers, test_body = encode(sim.payload("callback_test", "r1"))
    assert DropboxSignWebhook(SecretStr(KEY)).parse(test_headers, {}, test_body)[0] == []


@pytest.fixture
def sim() -> Iterator[DropboxSignSim]:
    with DropboxSignSim(KEY).running() as s:
        yield s


def _provider(sim: DropboxSignSim, blobs: FileBlobStore, http: httpx.AsyncClient, key: str = KEY,
              client_id: str = "sim-app") -> DropboxSignProvider:
    config = DropboxSignConfig(api_key=SecretStr(key), api_base=sim.api_base, client_id=client_id)
    return DropboxSignProvider(config, blobs, http)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def _create_input(blobs: FileBlobStore, groups: list[list[Person]]) -> CreateFlowInput:
    data = sample_contract("unit")
    key = blobs.put(data)
    return CreateFlowInput(request_id="req-1", provider="dropbox_sign", title="合同",
                           document=DocumentInfo(name="c.pdf", sha256=sha256_hex(data), blob_key=key, size=len(data),
                                                 pages=1),
                           groups=groups, expires_at=datetime.now(UTC) + timedelta(days=3))


async def test_connector_over_http(sim: DropboxSignSim, http: httpx.AsyncClient, settings: Settings) -> None:
    blobs = FileBlobStore(settings.data_dir / "blobs")
    provider = _provider(sim, blobs, http)
    req = _create_input(blobs, [[A], [B, C]])
    flow = await provider.create_flow(req)
    assert await provider.create_flow(req) == flow and len(sim.requests) == 1  # idempotent per request id
    assert [s["order"] for s in sim.requests[flow]["signatures"]] == [0, 1, 2]  # groups flattened in order
    links = await provider.open_group(OpenGroupInput(request_id="req-1", provider="dropbox_sign", flow_id=flow,
                                                     group=0, signers=[A], expires_at=req.expires_at))
    assert [link.signer_id for link in links] == ["u-1"] and links[0].url and links[0].url.startswith(sim.url)
    sim.callback_url = "http://127.0.0.1:9/unused"
    sim.hold()  # no SignBridge here: keep the callbacks
    assert not sim.may_sign(flow, str(B.email))  # B's turn comes after A
    await sim.sign(flow, str(A.email))
    assert [(e.kind, e.signer_id) for e in await provider.poll(flow)] == [("signed", "u-1")]
    with pytest.raises(ProviderError) as not_ready:
        await provider.download_signed(flow)
    assert not not_ready.value.non_retryable  # 409 until downloadable: retry
    await provider.revoke(flow, "changed our mind")
    assert sim.requests[flow]["is_canceled"]
    assert [e.kind for e in await provider.poll(flow)] == ["signed", "cancelled"]

    email = _provider(sim, blobs, http, client_id="")  # no API app: Dropbox Sign emails the signers
    parallel = await email.create_flow(_create_input(blobs, [[A, B]]).model_copy(update={"request_id": "req-2"}))
    assert [s["order"] for s in sim.requests[parallel]["signatures"]] == [None, None]
    await email.remind(parallel, ["u-2"])
    assert sim.reminded == [B.email]
    none = await email.open_group(OpenGroupInput(request_id="req-2", provider="dropbox_sign", flow_id=parallel,
                                                 group=0, signers=[A, B], expires_at=req.expires_at))
    assert [(link.signer_id, link.url) for link in none] == [("u-1", None), ("u-2", None)]


async def test_errors_are_classified(sim: DropboxSignSim, http: httpx.AsyncClient, settings: Settings) -> None:
    blobs = FileBlobStore(settings.data_dir / "blobs")
    with pytest.raises(ProviderError) as bad_key:
        await _provider(sim, blobs, http, key="wrong").poll("x")
    assert bad_key.value.non_retryable
    no_email = Person(id="u-5", name="无邮箱")
    with pytest.raises(ProviderError) as invalid:
        await _provider(sim, blobs, http).create_flow(_create_input(blobs, [[no_email]]))
    assert invalid.value.non_retryable
    sim.down = True
    with pytest.raises(ProviderError) as outage:
        await _provider(sim, blobs, http).poll("x")
    assert not outage.value.non_retryable and outage.value.retry_after == 1.0
    sim.down = False
    sim.throttle = 1
    with pytest.raises(ProviderError) as limited:
        await _provider(sim, blobs, http).poll("x")
    assert not limited.value.non_retryable and limited.value.retry_after == 7.0
    sim.stall = 1.0
    async with httpx.AsyncClient(timeout=0.2) as impatient:
        with pytest.raises(ProviderError) as slow:
            await _provider(sim, blobs, impatient).poll("x")
    assert not slow.value.non_retryable and "timeout" in str(slow.value)
    sim.stall = 0.0


# ---- end to end -------------------------------------------------------------------------------


async def _flow_of(rig: E2E, sim: DropboxSignSim, handle: Any) -> str:
    view = await rig.wait(handle, lambda v: v.provider_flow_id is not None and v.status.value == "IN_PROGRESS")
    assert view.provider_flow_id in sim.requests
    return str(view.provider_flow_id)


@asynccontextmanager
async def _rig(env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch,
               sim: DropboxSignSim) -> AsyncIterator[E2E]:
    monkeypatch.setenv("SIGNBRIDGE_DROPBOX_SIGN_API_KEY", KEY)
    async with provider_e2e(env, settings, "dropbox_sign", lambda blobs, http: _provider(sim, blobs, http),
                            ) as (rig, callback):
        sim.callback_url = callback("/esign/dropbox_sign/webhook")
        yield rig


FLOW = FlowCase(  # the shared flows: tests/test_provider_flows.py
    "dropbox_sign", simulator=lambda settings: DropboxSignSim(KEY).running(),
    rig=_rig, signing=lambda sim: SimSigning(sim, lambda: sim.requests, who=lambda p: str(p.email)))


e2e = e2e_fixture(FLOW)


async def test_e2e_mixed_groups_complete(e2e: E2E, sim: DropboxSignSim) -> None:
    handle = await e2e.start([[A], [B, C]])
    flow = await _flow_of(e2e, sim, handle)
    await e2e.sink.wait_for(lambda: bool(e2e.links(handle, A)), timeout=20)
    assert e2e.links(handle, A)[0]["sign_url"].startswith(sim.url) and not e2e.links(handle, B)
    sim.duplicate = True  # every callback twice
    await sim.sign(flow, str(A.email))
    await e2e.sink.wait_for(lambda: bool(e2e.links(handle, B)) and bool(e2e.links(handle, C)), timeout=20)
    sim.duplicate = False
    sim.hold()
    await sim.sign(flow, str(B.email))
    await sim.sign(flow, str(C.email))
    await sim.flush(reverse=True)  # downloadable first, then the signatures
    view = await e2e.result(handle)
    assert view.status.value == "COMPLETED" and all(s.status == "signed" for s in view.signers)
    assert view.signed_document is not None
    assert e2e.blobs.get(view.signed_document.blob_key) == sim.files[flow]  # the provider's re-rendered file
    files = [f for f in e2e.sink.of_type("file") if f["kind"] == "signed"]
    assert [f["sha256"] for f in files] == [view.signed_document.sha256]
    assert all(d.attempts[-1] == (200, b"Hello API Event Received") for d in sim.deliveries)


async def test_e2e_anchor_roles_become_signature_fields(e2e: E2E, sim: DropboxSignSim) -> None:
    """【甲方签章】 / 【乙方签章】: each signer's `signature` field beside their role's anchor, in
    points from the top left, with the signer index Dropbox Sign gave them."""
    pdf = anchor_pdf([(72, 300, "甲方：【甲方签章】"), (72, 420, "乙方：【乙方签章】")])
    handle = await e2e.start([[A, B]], documents=[pdf], roles={"甲方": B.id, "乙方": A.id})
    flow = await _flow_of(e2e, sim, handle)
    fields = sim.requests[flow]["form_fields"]
    emails = [s["signer_email_address"] for s in sim.requests[flow]["signatures"]]
    by_signer = {emails[f["signer"]]: f for f in fields}
    anchors = {a.role: a.box for a in find_anchors(pdf)}
    for person, role in ((B, "甲方"), (A, "乙方")):
        _, y1, x2, y2 = anchors[role]
        field = by_signer[str(person.email)]
        assert field["type"] == "signature" and field["page"] == 1 and field["name"] == f"sign:{role}"
        assert abs(field["x"] - (x2 + 4)) <= 1  # just right of the anchor text
        assert abs((842 - field["y"] - field["height"] / 2) - (y1 + y2) / 2) <= 1  # level with it


async def test_e2e_an_organisation_seal_is_refused_at_prepare(e2e: E2E, sim: DropboxSignSim) -> None:
    await refused_seal(e2e)
    assert not sim.requests  # nothing was created at the provider
