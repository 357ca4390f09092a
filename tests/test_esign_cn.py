"""e签宝: signature vectors, the connector against its simulator over real HTTP, whole flows end to end."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from connectors.esign import esign_cn
from connectors.esign.base import ProviderError, WebhookRejected
from connectors.esign.esign_cn import (
    KEYWORD_OFFSET_X,
    REPLY,
    EsignCnConfig,
    EsignCnProvider,
    EsignCnWebhook,
    _field_config,
)
from connectors.esign.esign_cn_auth import callback_signature, content_md5, request_signature, signed_headers
from signbridge.core.models import (
    ActionInput,
    Actor,
    CreateFlowInput,
    DocumentInfo,
    OpenGroupInput,
    OrgParty,
    Person,
    Placement,
)
from signbridge.core.settings import Settings
from signbridge.pdf.anchors import find_anchors
from signbridge.pdf.pades import validate_pdf
from signbridge.pdf.pki import CERT_FILE, InstallationCA
from signbridge.pdf.sample import sample_contract
from store.blobs import FileBlobStore, sha256_hex
from store.db import get_engine
from store.tables import AuditEvent
from tests.provider_cases import E2E, A, B, C, FlowCase, SimSigning, e2e_fixture, provider_e2e
from tests.sim.esign_cn_sim import FLOW_STATE, PARAM_ERROR, EsignCnSim
from tests.template_pdfs import anchor_pdf

APP_ID, SECRET = "sim-app-id", "sim-app-secret"
OPERATOR = Actor(id="ops-1", name="Ops", is_operator=True)
# e签宝 identifies people by mobile (or email): give the shared test people mobiles.
A_ = A.model_copy(update={"mobile": "+86 138-0000-0001"})  # sent to e签宝 as 13800000001
B_ = B.model_copy(update={"mobile": "13800000002"})
C_ = C.model_copy(update={"mobile": None})  # external customer: by email


# ---- vectors (e签宝's documented examples, derived) ---------------------------------------------------------


def test_request_signature_vector() -> None:
    body = b'{"a":1}'
    assert content_md5(body) == "u2y1xo30ZSlByvZSo2by2A=="
    assert request_signature("secret", "POST", content_md5(body), "/v3/sign-flow/create-by-file") == \
        "zyuzOdsFgvREoutcc6rz8Ngz3xmSRCuoCaDE53AwMdY="
    headers = signed_headers("app", "secret", "POST", "/v3/sign-flow/create-by-file", body, now_ms=1)
    assert headers["X-Tsign-Open-Ca-Signature"] == "zyuzOdsFgvREoutcc6rz8Ngz3xmSRCuoCaDE53AwMdY="
    assert headers["Content-MD5"] == "u2y1xo30ZSlByvZSo2by2A==" and headers["X-Tsign-Open-Auth-Mode"] == "Signature"
    assert "Content-MD5" not in signed_headers("app", "secret", "GET", "/v3/files/x", b"")


def test_callback_signature_vector() -> None:
    body = b'{"action":"SIGN_FLOW_COMPLETE","signFlowId":"f1","signFlowStatus":"2"}'
    assert callback_signature("secret", "1700000000000", {}, body) == \
        "83e97518d6d119e5149ea36df3143af2a61ed934ea27d6e8b66c52af5f0c3eb6"


def test_settings_enable_only_with_id_and_secret(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.delenv("SIGNBRIDGE_ESIGN_CN_APP_SECRET", raising=False)
    monkeypatch.setenv("SIGNBRIDGE_ESIGN_CN_APP_ID", "app-1")
    assert esign_cn.webhook(settings) is None
    assert esign_cn.build(settings, None, FileBlobStore(settings.data_dir), httpx.AsyncClient()) is None
    monkeypatch.setenv("SIGNBRIDGE_ESIGN_CN_APP_SECRET", "s3cret-value")
    assert esign_cn.webhook(settings) is not None
    provider = esign_cn.build(settings, None, FileBlobStore(settings.data_dir), httpx.AsyncClient())
    assert provider is not None and provider.notify_url == f"{settings.public_url}/esign/esign_cn/webhook"
    assert "s3cret-value" not in repr(EsignCnConfig()) and "s3cret-value" not in str(EsignCnConfig().model_dump())


def test_webhook_actions_and_refusals(tmp_path: Path) -> None:
    sim = EsignCnSim(APP_ID, SECRET, tmp_path / "ca")
    hook = EsignCnWebhook(EsignCnConfig(app_id=APP_ID, app_secret=SecretStr(SECRET)))
    url = "https://sb.example/esign/esign_cn/webhook?tenant=t1&k=v"  # the notify URL's own query is signed too
    query = {"tenant": "t1", "k": "v"}
    flow = {"id": "f1", "title": "t", "description": "完成", "startTime": 1, "finishTime": 1767323045000}
    signer = {"account": "13800000001", "order": 1, "signTime": 1767323045000, "bizNums": ["u-1@abc"]}
    cases = [(sim._mission(flow, signer, 2, "ok"), [("signed", "u-1")]),
             (sim._mission(flow, signer, 4, "价格不对"), [("declined", "u-1")]),
             (sim._mission(flow, signer, 3, "失败"), []),
             (sim._flow_complete(flow, "2"), [("completed", None)]),
             (sim._flow_complete(flow, "3"), [("cancelled", None)]),
             (sim._flow_complete(flow, "5"), [("expired", None)]),
             (sim._flow_complete(flow, "7"), []),  # the refusal itself came as SIGN_MISSON_COMPLETE
             ({"action": "SIGN_FLOW_START", "signFlowId": "f1"}, [])]
    for payload, expected in cases:
        headers, body = sim.signed_request(url, payload)
        events, reply = hook.parse(headers, query, body)
        assert reply == REPLY
        assert [(e.kind, e.signer_id) for e in events] == expected, payload
        assert all(e.raw == payload and e.flow_id == "f1" for e in events)
    headers, body = sim.signed_request(url, sim._mission(flow, signer, 4, "价格不对"))
    declined = hook.parse(headers, query, body)[0][0]
    assert declined.reason == "价格不对" and declined.event_id == "esign_cn:f1:u-1:declined"
    foreign = {**sim._mission(flow, signer, 2, "ok"), "customBizNum": None}
    headers, body = sim.signed_request(url, foreign)
    [unmapped] = hook.parse(headers, query, body)[0]
    assert unmapped.signer_id is None and unmapped.event_id == "esign_cn:f1:account:13800000001:signed"
    headers, body = sim.signed_request(url, {"action": "SIGN_FLOW_COMPLETE"})
    assert hook.parse(headers, query, body) == ([], REPLY)
    headers, body = sim.signed_request(url, sim._flow_complete(flow, "2"))
    with pytest.raises(WebhookRejected):
        hook.parse(headers, {}, body)  # query values are part of what is signed
    forged_headers, forged_body = sim.signed_request(url, sim._flow_complete(flow, "2"), secret="other")
    with pytest.raises(WebhookRejected):
        hook.parse(forged_headers, query, forged_body)
    stale_h, stale_b = sim.signed_request(url, sim._flow_complete(flow, "2"), ts=int(time.time() * 1000) - 901_000)
    with pytest.raises(WebhookRejected):
        hook.parse(stale_h, query, stale_b)


# ---- connector over HTTP -----------------------------------------------------------------------


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[EsignCnSim]:
    with EsignCnSim(APP_ID, SECRET, tmp_path / "sim-ca").running() as s:
        yield s


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def _provider(sim: EsignCnSim, settings: Settings, blobs: FileBlobStore, http: httpx.AsyncClient,
              secret: str = SECRET, roots: Path | None = None) -> EsignCnProvider:
    """Signatures in downloads are checked against the simulator's CA (as against e签宝's in production)."""
    config = EsignCnConfig(app_id=APP_ID, app_secret=SecretStr(secret), api_base=sim.url,
                           trust_roots_file=str(roots or sim.ca_dir / CERT_FILE))
    return EsignCnProvider(config, settings, blobs, http)


def _create_input(blobs: FileBlobStore, groups: list[list[Person]], request_id: str = "req-1") -> CreateFlowInput:
    data = sample_contract("unit")
    return CreateFlowInput(request_id=request_id, provider="esign_cn", title="合同",
                           document=DocumentInfo(name="c.pdf", sha256=sha256_hex(data), blob_key=blobs.put(data),
                                                 size=len(data), pages=1),
                           groups=groups, expires_at=datetime.now(UTC) + timedelta(days=3))


async def test_connector_over_http(sim: EsignCnSim, http: httpx.AsyncClient, settings: Settings,
                                   tmp_path: Path) -> None:
    blobs = FileBlobStore(settings.data_dir / "blobs")
    provider = _provider(sim, settings, blobs, http)
    req = _create_input(blobs, [[A_], [B_, C_]])
    flow = await provider.create_flow(req)
    assert await provider.create_flow(req) == flow and len(sim.flows) == 1  # idempotent per request id
    f = sim.flows[flow]
    assert [(s["account"], s["order"]) for s in f["signers"]] == \
        [("13800000001", 1), ("13800000002", 2), ("a@customer.example", 2)]  # groups → signOrder
    assert f["notifyUrl"] == f"{settings.public_url}/esign/esign_cn/webhook" and f["autoFinish"]
    assert f["original"] == blobs.get(req.document.blob_key)
    links = await provider.open_group(OpenGroupInput(request_id="req-1", provider="esign_cn", flow_id=flow,
                                                     group=0, signers=[A_], expires_at=req.expires_at))
    assert [link.signer_id for link in links] == ["u-1"] and str(links[0].url).startswith(sim.url)
    sim.mute = True  # no SignBridge here
    assert not sim.may_sign(flow, "13800000002")  # B's turn comes after A
    await sim.sign(flow, "13800000001")
    assert [(e.kind, e.signer_id, e.event_id) for e in await provider.poll(flow)] == \
        [("signed", "u-1", f"esign_cn:{flow}:u-1:signed")]
    with pytest.raises(ProviderError) as not_ready:
        await provider.download_signed(flow)
    assert not not_ready.value.non_retryable  # "not finished yet" heals by itself
    assert sim.refusals[-1] == (f"/v3/sign-flow/{flow}/file-download-url", FLOW_STATE)
    await provider.remind(flow, ["u-2"])
    assert sim.urged == ["13800000002"]
    await provider.revoke(flow, "changed our mind")
    await provider.revoke(flow, "again")  # a revoked flow: no-op, no error
    assert sim.flows[flow]["status"] == 3
    assert [e.kind for e in await provider.poll(flow)] == ["signed", "cancelled"]

    parallel = await provider.create_flow(_create_input(blobs, [[A_, B_]], request_id="req-2"))
    await sim.sign(parallel, "13800000002")
    await sim.sign(parallel, "13800000001")
    signed = await provider.download_signed(parallel)
    original = sim.flows[parallel]["original"]
    assert signed.startswith(original) and len(signed) > len(original)  # incremental, like e签宝
    reports = await asyncio.to_thread(validate_pdf, signed, [sim.ca.certificate])
    assert len(reports) == 2 and all(r.intact and r.valid and r.trusted for r in reports)
    evidence = await provider.evidence(parallel)
    assert evidence["sign_flow_id"] == parallel and len(evidence["signatures"]) == 2
    InstallationCA.load_or_create(tmp_path / "other-ca")
    stranger = _provider(sim, settings, blobs, http, roots=tmp_path / "other-ca" / CERT_FILE)
    with pytest.raises(ProviderError) as untrusted:  # signatures that don't chain to e签宝's CA
        await stranger.download_signed(parallel)
    assert untrusted.value.non_retryable and "trusted" in str(untrusted.value)
    digest = hashlib.sha256(signed).hexdigest()
    assert evidence["files"][0]["reported_sha256"] == evidence["downloaded_sha256"] == digest
    assert [e.kind for e in await provider.poll(parallel)] == ["signed", "signed", "completed"]


async def test_organisation_signers_carry_transactor_and_seal(sim: EsignCnSim, http: httpx.AsyncClient,
                                                                settings: Settings) -> None:
    """A company party reaches e签宝 as `signerType` 1 with `orgSignerInfo` (name or org id, USCC,
    the person as transactor) and the seal: the registered seal id, else the seal kind."""
    blobs = FileBlobStore(settings.data_dir / "blobs")
    provider = _provider(sim, settings, blobs, http)
    ours = A_.model_copy(update={"org": OrgParty(name="乙方科技有限公司", seal=True, credit_code="91350100M000100Y43",
                                                 provider_ids={"esign_cn.seal_id": "seal-42"})})
    theirs = C_.model_copy(update={"org": OrgParty(name="丙方贸易有限公司", seal=True, seal_kind="合同专用章",
                                                   provider_ids={"esign_cn.org_id": "org-9"})})
    flow = await provider.create_flow(_create_input(blobs, [[ours], [B_, theirs]]))
    people = sim.flows[flow]["signers"]
    assert people[0]["org"] == {"orgName": "乙方科技有限公司", "orgId": None, "orgIDCardNum": "91350100M000100Y43",
                                "sealId": "seal-42", "sealBizTypes": None}
    assert people[0]["account"] == "13800000001"  # the transactor signs in e签宝 for the company
    assert people[1]["org"] is None  # a person stays a person
    assert people[2]["org"]["orgId"] == "org-9" and people[2]["org"]["sealBizTypes"] == "CONTRACT"
    detail = await provider._detail(flow)
    assert [s["signerType"] for s in detail["signers"]] == [1, 0, 1]
    links = await provider.open_group(OpenGroupInput(request_id="req-1", provider="esign_cn", flow_id=flow,
                                                     group=0, signers=[ours], expires_at=datetime.now(UTC)))
    assert [link.signer_id for link in links] == ["u-1"]
    # the simulator holds e签宝's rules: an organisation signer needs orgSignerInfo and a transactor
    for signer in ({"signerType": 1},  # no orgSignerInfo
                   {"signerType": 1, "orgSignerInfo": {"orgName": "乙方", "transactorInfo": {}}},  # no transactor
                   {"signerType": 0, "psnSignerInfo": {"psnAccount": "13800000001"}}):  # a seal for a person
        fields = [{"fileId": sim.flows[flow]["fileId"],
                   "normalSignFieldConfig": {"availableSealIds": ["seal-42"]} if signer["signerType"] == 0 else {}}]
        with pytest.raises(ProviderError):
            await provider.call("POST", "/v3/sign-flow/create-by-file", "create flow", {
                "docs": [{"fileId": sim.flows[flow]["fileId"]}], "signFlowConfig": {"signFlowTitle": "x"},
                "signers": [{**signer, "signConfig": {"signOrder": 1}, "signFields": fields}]})
        assert sim.refusals[-1] == ("/v3/sign-flow/create-by-file", PARAM_ERROR)


async def test_signers_confirm_by_the_configured_willingness_modes(sim: EsignCnSim, http: httpx.AsyncClient,
                                                                   settings: Settings) -> None:
    """SIGNBRIDGE_ESIGN_CN_WILLINGNESS_AUTH_MODES goes to e签宝 as the flow's 意愿认证 modes; unset, the
    account's default applies (nothing sent); a mode e签宝 does not know stops the service at start."""
    blobs = FileBlobStore(settings.data_dir / "blobs")
    plain = await _provider(sim, settings, blobs, http).create_flow(_create_input(blobs, [[A_]], "req-plain"))
    assert sim.flows[plain]["willingnessAuthModes"] is None
    provider = _provider(sim, settings, blobs, http)
    provider.config = provider.config.model_copy(update={"willingness_auth_modes": "CODE_SMS, PSN_FACE_ESIGN"})
    flow = await provider.create_flow(_create_input(blobs, [[A_]], "req-sms"))
    assert sim.flows[flow]["willingnessAuthModes"] == ["CODE_SMS", "PSN_FACE_ESIGN"]
    with pytest.raises(ValueError, match="CODE_SMSS"):
        EsignCnConfig(app_id=APP_ID, app_secret=SecretStr(SECRET), willingness_auth_modes="CODE_SMSS")


async def test_errors_are_classified(sim: EsignCnSim, http: httpx.AsyncClient, settings: Settings) -> None:
    blobs = FileBlobStore(settings.data_dir / "blobs")
    with pytest.raises(ProviderError) as bad_secret:
        await _provider(sim, settings, blobs, http, secret="wrong").poll("x")
    assert bad_secret.value.non_retryable and sim.refusals[-1] == ("/v3/sign-flow/x/detail", 401)
    with pytest.raises(ProviderError) as invalid:
        await _provider(sim, settings, blobs, http).create_flow(_create_input(blobs, [[Person(id="u-5", name="无号")]]))
    assert invalid.value.non_retryable
    with pytest.raises(ProviderError) as unknown:
        await _provider(sim, settings, blobs, http).poll("no-such-flow")
    assert unknown.value.non_retryable and "1437001" in str(unknown.value)
    sim.down = True
    with pytest.raises(ProviderError) as outage:
        await _provider(sim, settings, blobs, http).poll("x")
    assert not outage.value.non_retryable
    sim.down = False
    sim.throttle = 1
    with pytest.raises(ProviderError) as limited:
        await _provider(sim, settings, blobs, http).poll("x")
    assert not limited.value.non_retryable and limited.value.retry_after == 3.0
    # the simulator's gateway really checks: a body changed after signing is refused
    headers = signed_headers(APP_ID, SECRET, "POST", "/v3/files/file-upload-url", b'{"a":1}')
    resp = await http.post(f"{sim.url}/v3/files/file-upload-url", headers=headers, content=b'{"a":2}')
    assert resp.status_code == 400
    headers["Content-MD5"] = content_md5(b'{"a":2}')
    resp = await http.post(f"{sim.url}/v3/files/file-upload-url", headers=headers, content=b'{"a":2}')
    assert resp.status_code == 401 and resp.json()["code"] == 401
    old = signed_headers(APP_ID, SECRET, "GET", "/v3/files/x", b"", now_ms=int(time.time() * 1000) - 16 * 60_000)
    assert (await http.get(f"{sim.url}/v3/files/x", headers=old)).status_code == 401
    with pytest.raises(ProviderError) as refused:  # a business refusal under HTTP 200: not retried
        await _provider(sim, settings, blobs, http).call("POST", "/v3/sign-flow/create-by-file", "create", {"docs": []})
    assert refused.value.non_retryable and sim.refusals[-1] == ("/v3/sign-flow/create-by-file", PARAM_ERROR)


# ---- end to end ---------------------------------------------------------------------------------


async def _flow_of(rig: E2E, sim: EsignCnSim, handle: Any) -> str:
    view = await rig.wait(handle, lambda v: v.provider_flow_id is not None and v.status.value == "IN_PROGRESS")
    assert view.provider_flow_id in sim.flows
    return str(view.provider_flow_id)


@asynccontextmanager
async def _rig(env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch,
               sim: EsignCnSim) -> AsyncIterator[E2E]:
    monkeypatch.setenv("SIGNBRIDGE_ESIGN_CN_APP_ID", APP_ID)
    monkeypatch.setenv("SIGNBRIDGE_ESIGN_CN_APP_SECRET", SECRET)
    made: list[EsignCnProvider] = []

    def make(blobs: Any, http: httpx.AsyncClient) -> EsignCnProvider:
        made.append(_provider(sim, settings, blobs, http))
        return made[0]

    async with provider_e2e(env, settings, "esign_cn", make) as (rig, callback):
        # In production notifyUrl = public_url + path; here the API runs on a free port chosen inside
        # provider_e2e, so the notify URL is pointed at it once known.
        made[0].notify_url = callback("/esign/esign_cn/webhook")
        yield rig


def _account(person: Person) -> str:
    """How e签宝 knows a person: the mobile number as sent (11 digits, no country code), else email."""
    digits = "".join(ch for ch in person.mobile or "" if ch.isdigit())
    return digits[-11:] if digits else str(person.email)


FLOW = FlowCase(  # the shared flows: tests/test_provider_flows.py
    "esign_cn", simulator=lambda settings: EsignCnSim(APP_ID, SECRET, settings.data_dir / "sim-ca").running(),
    rig=_rig, signing=lambda sim: SimSigning(sim, lambda: sim.flows, who=_account),
    people=(A_, B_))


e2e = e2e_fixture(FLOW)


def _links(rig: E2E, handle: Any, *people: Person) -> bool:
    return all(rig.links(handle, p) for p in people)


async def test_e2e_mixed_groups_complete(e2e: E2E, sim: EsignCnSim) -> None:
    handle = await e2e.start([[A_], [B_, C_]])
    flow = await _flow_of(e2e, sim, handle)
    await e2e.sink.wait_for(lambda: _links(e2e, handle, A_), timeout=20)
    assert e2e.links(handle, A_)[0]["sign_url"].startswith(sim.url) and not e2e.links(handle, B_)
    sim.duplicate = True  # every callback twice
    sim.corrupt_next = 1  # and the first attempt mangled: 401, then e签宝 retries
    await sim.sign(flow, "13800000001")
    await e2e.sink.wait_for(lambda: _links(e2e, handle, B_, C_), timeout=20)
    assert sim.deliveries[0].attempts[:2] == [401, 200]
    sim.duplicate = False
    sim.hold()
    await sim.sign(flow, "13800000002")
    await sim.sign(flow, "a@customer.example")
    await sim.flush(reverse=True)  # flow finished first, then the signatures
    view = await e2e.result(handle)
    assert view.status.value == "COMPLETED" and all(s.status == "signed" for s in view.signers)
    assert view.signed_document is not None
    signed = e2e.blobs.get(view.signed_document.blob_key)
    assert signed == sim.flows[flow]["data"] and signed.startswith(sim.flows[flow]["original"])
    assert [f["sha256"] for f in e2e.sink.of_type("file") if f["kind"] == "signed"] == [view.signed_document.sha256]
    assert all(d.attempts[-1] == 200 for d in sim.deliveries)
    with Session(get_engine(e2e.settings.sqlalchemy_url)) as session:
        row = session.exec(select(AuditEvent).where(AuditEvent.request_id == handle.id,
                                                    AuditEvent.action == "document.signed")).one()
    evidence = json.loads(row.detail)["provider_evidence"]
    assert evidence["sign_flow_id"] == flow and len(evidence["signatures"]) == 3  # each checked against the CA
    assert evidence["files"][0]["reported_sha256"] == view.signed_document.sha256


async def test_e2e_expired_at_the_provider(e2e: E2E, sim: EsignCnSim) -> None:
    handle = await e2e.start([[A_]])
    flow = await _flow_of(e2e, sim, handle)
    await sim.expire(flow)
    assert (await e2e.result(handle)).status.value == "EXPIRED"


async def test_e2e_cancel_revokes_at_the_provider(e2e: E2E, sim: EsignCnSim) -> None:
    handle = await e2e.start([[A_], [B_]])
    flow = await _flow_of(e2e, sim, handle)
    await sim.sign(flow, "13800000001")
    await e2e.sink.wait_for(lambda: _links(e2e, handle, B_), timeout=20)
    sim.hold()  # e签宝's report of the revocation arrives only after the flow has closed
    await handle.execute_update("cancel", ActionInput(actor=OPERATOR, reason="wrong version"))
    view = await e2e.result(handle)
    assert view.status.value == "CANCELLED" and sim.flows[flow]["status"] == 3
    assert not sim.may_sign(flow, "13800000002")
    # The closed flow acknowledges the late report at once (200) and ignores it: no retries.
    await sim.flush()
    late = [d for d in sim.deliveries if d.payload.get("signFlowStatus") == "3"]
    assert late and all(d.attempts == [200] for d in late)


async def test_e2e_anchor_roles_are_placed_by_esign_keyword_search(e2e: E2E, sim: EsignCnSim) -> None:
    """【甲方签章】 / 【乙方签章】 in the PDF: e签宝's own keyword search finds them, each signer's field
    sits beside their role's anchor (not where the first signer would sign by default)."""
    pdf = anchor_pdf([(72, 300, "甲方：【甲方签章】"), (320, 420, "乙方：【乙方签章】")])
    handle = await e2e.start([[A_, B_]], documents=[pdf], roles={"甲方": B_.id, "乙方": A_.id})
    flow = await _flow_of(e2e, sim, handle)
    assert sim.keyword_searches == [["【乙方签章】", "【甲方签章】"]]
    anchors = {a.role: a.box for a in find_anchors(pdf)}
    signers = {s["account"]: s["positions"] for s in sim.flows[flow]["signers"]}
    for person, role in ((B_, "甲方"), (A_, "乙方")):
        x1, y1, x2, y2 = anchors[role]
        [where] = signers[_account(person)]
        assert where["page"] == 1
        assert abs(where["x"] - ((x1 + x2) / 2 + KEYWORD_OFFSET_X)) < 1 and abs(where["y"] - (y1 + y2) / 2) < 1


def test_template_fields_and_unplaced_signers_at_esign() -> None:
    """A template's signature field: its rectangle's centre on its page; no place: free mode."""
    field = Placement(role="甲方", signer_id="u-1", page=1, box=(72, 200, 232, 248))
    assert _field_config(field, {}) == {"freeMode": False, "signFieldStyle": 1, "signFieldPosition": {
        "positionPage": "2", "positionX": 152.0, "positionY": 224.0}}
    assert _field_config(None, {}) == {"freeMode": True, "signFieldStyle": 1}


async def test_e2e_three_documents_in_one_flow(e2e: E2E, sim: EsignCnSim) -> None:
    """Three files in one e签宝 flow: each signer has a sign field in every file (at their anchor
    where the file has one), e签宝 signs each incrementally, and all three come back."""
    docs = [anchor_pdf([(72, 300, f"第{i + 1}份 甲方：【甲方签章】")]) for i in range(3)]
    handle = await e2e.start([[A_], [B_]], documents=docs, roles={"甲方": A_.id})
    flow = await _flow_of(e2e, sim, handle)
    f = sim.flows[flow]
    assert [d["original"] for d in f["docs"]] == docs
    signers = {s["account"]: s for s in f["signers"]}
    assert len(signers["13800000001"]["fileIds"]) == 3 == len(signers["13800000002"]["fileIds"])
    assert all(p is not None for p in signers["13800000001"]["positions"])  # 甲方: at the anchor in each
    assert signers["13800000002"]["positions"] == [None, None, None]  # no place: free mode
    await sim.sign(flow, "13800000001")
    await e2e.sink.wait_for(lambda: _links(e2e, handle, B_), timeout=20)
    await sim.sign(flow, "13800000002")
    view = await e2e.result(handle)
    assert view.status.value == "COMPLETED" and len(view.signed_documents) == 3
    for signed, doc in zip(view.signed_documents, f["docs"], strict=True):
        data = e2e.blobs.get(signed.blob_key)
        assert data == doc["data"] and data.startswith(doc["original"])
    assert len([f for f in e2e.sink.of_type("file") if f["kind"] == "signed"]) == 3
