"""法大大: the signature vector, the connector against its simulator over real HTTP, flows end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from connectors.esign import fadada
from connectors.esign.base import ProviderError, WebhookRejected
from connectors.esign.fadada import FadadaConfig, FadadaProvider, FadadaWebhook, doc_field, fasc_sign
from signbridge.core.models import CreateFlowInput, DocumentInfo, OpenGroupInput, OrgParty, Person, Placement
from signbridge.core.settings import Settings
from signbridge.pdf.anchors import find_anchors
from signbridge.pdf.sample import sample_contract
from store.blobs import FileBlobStore, sha256_hex
from tests.provider_cases import E2E, A, B, C, FlowCase, SimSigning, e2e_fixture, provider_e2e
from tests.provider_cases.fadada import delivery
from tests.sim.fadada_sim import FadadaSim
from tests.template_pdfs import anchor_pdf

APP_ID, SECRET = "sim-fadada-app", "sim-fadada-secret"


def test_vector() -> None:
    assert fasc_sign("app-secret", {
        "X-FASC-App-Id": "app-id", "X-FASC-Sign-Type": "HMAC-SHA256", "X-FASC-Timestamp": "1660000000123",
        "X-FASC-Nonce": "0123456789abcdef0123456789abcdef", "X-FASC-Api-SubVersion": "5.1",
        "X-FASC-AccessToken": "token", "bizContent": "Alice"}) == \
        "37e2dd3277c7fd3618257b09a7cde544f7d07208fb2791666738236dd3aeabde"


def test_callbacks_normalise_and_refuse_other_secrets() -> None:
    hook = FadadaWebhook("case-fadada-app", SecretStr("case-fadada-secret"))
    headers, body = delivery("sign-task-signed", {"signTaskId": "t1", "actorId": "u-1",
                                                  "signTaskStatus": "task_finished", "eventTime": "1764000000000"})
    events, reply = hook.parse({k.lower(): v for k, v in headers.items()}, {}, body)  # HTTP lowercases names
    assert [(e.kind, e.signer_id) for e in events] == [("signed", "u-1"), ("completed", None)]
    assert reply.body == b'{"msg": "success"}'
    with pytest.raises(WebhookRejected):
        FadadaWebhook("case-fadada-app", SecretStr("other")).parse(headers, {}, body)
    for event, kind in [("sign-task-canceled", "cancelled"), ("sign-task-expire", "expired")]:
        h, b = delivery(event, {"signTaskId": "t1"})
        assert [e.kind for e in hook.parse(h, {}, b)[0]] == [kind]


def test_settings_enable_only_with_secrets(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.delenv("SIGNBRIDGE_FADADA_APP_ID", raising=False)
    monkeypatch.delenv("SIGNBRIDGE_FADADA_APP_SECRET", raising=False)
    blobs = FileBlobStore(settings.data_dir)
    assert fadada.build(settings, None, blobs, httpx.AsyncClient()) is None and fadada.webhook(settings) is None
    monkeypatch.setenv("SIGNBRIDGE_FADADA_APP_ID", "a")
    monkeypatch.setenv("SIGNBRIDGE_FADADA_APP_SECRET", "s-very-secret")
    assert fadada.build(settings, None, blobs, httpx.AsyncClient()) is not None and fadada.webhook(settings)
    assert "s-very-secret" not in repr(FadadaConfig())


@pytest.fixture
def sim() -> Iterator[FadadaSim]:
    with FadadaSim(APP_ID, SECRET).running() as s:
        yield s


def _provider(sim: FadadaSim, blobs: FileBlobStore, http: httpx.AsyncClient, secret: str = SECRET) -> FadadaProvider:
    return FadadaProvider(FadadaConfig(app_id=APP_ID, app_secret=SecretStr(secret), api_base=sim.api_base,
                                       open_corp_id="corp-1"), blobs, http)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def _create_input(blobs: FileBlobStore, groups: list[list[Person]], request_id: str = "req-1") -> CreateFlowInput:
    data = sample_contract("unit")
    return CreateFlowInput(request_id=request_id, provider="fadada", title="合同",
                           document=DocumentInfo(name="c.pdf", sha256=sha256_hex(data), blob_key=blobs.put(data),
                                                 size=len(data), pages=1),
                           groups=groups, expires_at=datetime.now(UTC) + timedelta(days=3))


async def test_connector_over_http(sim: FadadaSim, http: httpx.AsyncClient, settings: Settings) -> None:
    blobs = FileBlobStore(settings.data_dir / "blobs")
    provider = _provider(sim, blobs, http)
    req = _create_input(blobs, [[A], [B, C]])
    flow = await provider.create_flow(req)
    assert await provider.create_flow(req) == flow and len(sim.tasks) == 1  # idempotent per request id
    assert sim.grants == 1 and sim.tasks[flow]["signInOrder"]
    assert [a["orderNo"] for a in sim.tasks[flow]["actors"]] == [1, 2, 2]
    links = await provider.open_group(OpenGroupInput(request_id="req-1", provider="fadada", flow_id=flow, group=0,
                                                     signers=[A], expires_at=req.expires_at))
    assert [link.signer_id for link in links] == ["u-1"] and str(links[0].url).startswith(sim.url)
    assert not sim.may_sign(flow, "u-2")  # order 2 waits for order 1
    await sim.sign(flow, "u-1")
    sim.expire_tokens()  # code 100002: the connector fetches a new token once
    assert [(e.kind, e.signer_id) for e in await provider.poll(flow)] == [("signed", "u-1")]
    assert sim.grants == 2
    with pytest.raises(ProviderError) as not_ready:
        await provider.download_signed(flow)
    assert not not_ready.value.non_retryable
    await provider.remind(flow, ["u-2"])
    assert sim.urged == [flow]
    await sim.sign(flow, "u-2")
    await sim.sign(flow, "x-9")
    signed = await provider.download_signed(flow)
    assert signed == sim.files[flow] and (await provider.evidence(flow))["signed_sha256"] == sha256_hex(signed)
    assert [e.kind for e in await provider.poll(flow)][-1] == "completed"
    await provider.revoke(flow, "late")  # finished: no-op

    parallel = await provider.create_flow(_create_input(blobs, [[A, B]], "req-2"))
    assert not sim.tasks[parallel]["signInOrder"] and sim.may_sign(parallel, "u-2")
    await provider.revoke(parallel, "changed our mind")
    assert [e.kind for e in await provider.poll(parallel)] == ["cancelled"]


async def test_corp_actors_carry_seal_ids(sim: FadadaSim, http: httpx.AsyncClient, settings: Settings) -> None:
    """A company party reaches 法大大 as a `corp` actor matched on name and credit code, with a
    `corp_seal` field and the company's `sealId`; the person operates it as a corp member."""
    blobs = FileBlobStore(settings.data_dir / "blobs")
    provider = _provider(sim, blobs, http)
    corp = A.model_copy(update={"org": OrgParty(name="乙方科技有限公司", seal=True, credit_code="91350100M000100Y43",
                                                provider_ids={"fadada.open_corp_id": "oc-7", "fadada.seal_id": "s-1"})})
    flow = await provider.create_flow(_create_input(blobs, [[corp], [B]]))
    first, second = sim.tasks[flow]["actors"]
    assert (first["actorType"], first["actorName"], first["certNoForMatch"], first["sealIds"]) == \
        ("corp", "乙方科技有限公司", "91350100M000100Y43", ["s-1"])
    assert first["accountName"] == A.email  # the member who operates the company's seal
    assert (second["actorType"], second["sealIds"]) == ("person", [])
    links = await provider.open_group(OpenGroupInput(request_id="req-1", provider="fadada", flow_id=flow, group=0,
                                                     signers=[corp], expires_at=datetime.now(UTC)))
    assert [link.signer_id for link in links] == ["u-1"]
    await sim.sign(flow, "u-1")
    assert [(e.kind, e.signer_id) for e in await provider.poll(flow)] == [("signed", "u-1")]
    # the simulator holds 法大大's rules: a corp never signs into a person's field, nor has accountName
    doc = {"docId": "1", "docName": "c.pdf", "docFileId": "x",
           "docFields": [{"fieldId": "p1", "fieldType": "person_sign"}]}
    for actor, code in (({"actorId": "c", "actorType": "corp", "actorName": "乙方", "permissions": ["sign"]},
                         "211027"),
                        ({"actorId": "c", "actorType": "corp", "actorName": "乙方", "accountName": "1380"}, "210002")):
        with pytest.raises(ProviderError):
            await provider.call("/sign-task/create", {"transReferenceId": "bad", "docs": [doc], "actors": [
                {"actor": actor, "orderNo": 1, "signFields": [{"fieldDocId": "1", "fieldId": "p1"}]}]}, "create")
        assert sim.failures[-1] == code


async def test_errors_are_classified(sim: FadadaSim, http: httpx.AsyncClient, settings: Settings) -> None:
    blobs = FileBlobStore(settings.data_dir / "blobs")
    with pytest.raises(ProviderError) as bad_secret:
        await _provider(sim, blobs, http, secret="wrong").poll("x")
    assert bad_secret.value.non_retryable and "100003" in str(bad_secret.value)
    with pytest.raises(ProviderError) as missing:
        await _provider(sim, blobs, http).poll("no-such-task")
    assert missing.value.non_retryable
    with pytest.raises(ProviderError) as no_account:
        await _provider(sim, blobs, http).create_flow(_create_input(blobs, [[Person(id="u-5", name="无账号")]]))
    assert no_account.value.non_retryable
    sim.busy = 1
    with pytest.raises(ProviderError) as busy:
        await _provider(sim, blobs, http).poll("x")
    assert not busy.value.non_retryable
    sim.down = True
    with pytest.raises(ProviderError) as outage:
        await _provider(sim, blobs, http).poll("x")
    assert not outage.value.non_retryable and outage.value.retry_after == 1.0


# ---- end to end -------------------------------------------------------------------------------


async def _flow_of(rig: E2E, sim: FadadaSim, handle: Any) -> str:
    view = await rig.wait(handle, lambda v: v.provider_flow_id is not None and v.status.value == "IN_PROGRESS")
    assert view.provider_flow_id in sim.tasks
    return str(view.provider_flow_id)


@asynccontextmanager
async def _rig(env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch,
               sim: FadadaSim) -> AsyncIterator[E2E]:
    monkeypatch.setenv("SIGNBRIDGE_FADADA_APP_ID", APP_ID)
    monkeypatch.setenv("SIGNBRIDGE_FADADA_APP_SECRET", SECRET)
    async with provider_e2e(env, settings, "fadada", lambda blobs, http: _provider(sim, blobs, http),
                            ) as (rig, callback):
        sim.callback_url = callback("/esign/fadada/webhook")
        yield rig


FLOW = FlowCase(  # the shared flows: tests/test_provider_flows.py
    "fadada", simulator=lambda settings: FadadaSim(APP_ID, SECRET).running(),
    rig=_rig, signing=lambda sim: SimSigning(sim, lambda: sim.tasks, who=lambda p: p.id))


e2e = e2e_fixture(FLOW)


async def test_e2e_groups_in_order_complete(e2e: E2E, sim: FadadaSim) -> None:
    handle = await e2e.start([[A], [B, C]])
    flow = await _flow_of(e2e, sim, handle)
    await e2e.sink.wait_for(lambda: bool(e2e.links(handle, A)), timeout=20)
    assert not e2e.links(handle, B)
    sim.duplicate = True
    await sim.sign(flow, "u-1")
    await e2e.sink.wait_for(lambda: bool(e2e.links(handle, B)) and bool(e2e.links(handle, C)), timeout=20)
    sim.duplicate = False
    sim.hold()
    await sim.sign(flow, "u-2")
    await sim.sign(flow, "x-9")
    await sim.flush(reverse=True)  # finished first, then the signatures
    view = await e2e.result(handle)
    assert view.status.value == "COMPLETED" and all(s.status == "signed" for s in view.signers)
    assert view.signed_document is not None
    assert e2e.blobs.get(view.signed_document.blob_key) == sim.files[flow]
    assert [f["sha256"] for f in e2e.sink.of_type("file") if f["kind"] == "signed"] == [view.signed_document.sha256]
    assert all(d.attempts and d.attempts[-1] == 200 for d in sim.deliveries)


async def test_e2e_anchor_roles_use_fadada_keyword_positioning(e2e: E2E, sim: FadadaSim) -> None:
    """【甲方签章】 / 【乙方签章】: each actor's person_sign field is found by 法大大's keyword
    positioning, offset from the keyword to beside it; the actor is bound to its own field."""
    pdf = anchor_pdf([(72, 300, "甲方：【甲方签章】"), (72, 420, "乙方：【乙方签章】")])
    handle = await e2e.start([[A, B]], documents=[pdf], roles={"甲方": B.id, "乙方": A.id})
    flow = await _flow_of(e2e, sim, handle)
    task = sim.tasks[flow]
    fields = {f["fieldId"]: f for f in task["docFields"]}
    actors = {a["actorId"]: a["signFields"] for a in task["actors"]}
    anchors = {a.role: a.box for a in find_anchors(pdf)}
    for person, role in ((B, "甲方"), (A, "乙方")):
        [bound] = actors[person.id]
        where = fields[bound["fieldId"]]["position"]
        assert where["positionMode"] == "keyword" and where["positionKeyword"] == f"【{role}签章】"
        x1, _, x2, _ = anchors[role]
        # the stamp's centre: 4 pt right of the text, half a stamp (80 pt) further
        assert int(where["keywordOffsetX"]) == round((x2 + 4 + 80) - (x1 + x2) / 2)
        assert int(where["keywordOffsetY"]) == 0


def test_template_fields_are_pixel_positions() -> None:
    field = Placement(role="甲方", signer_id="u-1", page=0, box=(72, 200, 232, 248), page_size=(595, 842))
    assert doc_field(field) == {"fieldId": "sign-甲方", "fieldName": "sign:甲方", "fieldType": "person_sign",
                                "position": {"positionMode": "pixel", "positionPageNo": 1, "positionX": "72",
                                             "positionY": str(842 - 248)}}
