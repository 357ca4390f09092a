"""DocuSign: vectors, the connector against its simulator over real HTTP, and whole flows end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from connectors.esign import docusign
from connectors.esign.base import ProviderError, WebhookRejected
from connectors.esign.docusign import (
    DocuSignConfig,
    DocuSignProvider,
    DocuSignWebhook,
    connect_signature,
    sign_here_tab,
)
from signbridge.core.models import CreateFlowInput, DocumentInfo, OpenGroupInput, Person, Placement
from signbridge.core.settings import Settings
from signbridge.pdf.anchors import find_anchors
from signbridge.pdf.sample import sample_contract
from store.blobs import FileBlobStore, sha256_hex
from store.db import create_all, get_engine
from store.tables import ProviderLink
from tests.provider_cases import E2E, A, B, C, FlowCase, SimSigning, e2e_fixture, provider_e2e, refused_seal
from tests.sim.docusign_sim import DocuSignSim, _tab_problem
from tests.template_pdfs import anchor_pdf

IK, USER, ACCOUNT, HMAC_KEY = "ik-123", "user-456", "acct-789", "connect-key"
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()
PUBLIC_PEM = _KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_derived_vector_and_key_rotation() -> None:
    body = b'{"event":"envelope-completed"}'
    assert connect_signature("secret", body) == "eThXMyD1/Zoubgxw4RmYPmCN4tVrpt4HunvHiXcKH/c="
    hook = DocuSignWebhook(SecretStr("secret"))
    good = "eThXMyD1/Zoubgxw4RmYPmCN4tVrpt4HunvHiXcKH/c="
    assert hook.parse({"X-DocuSign-Signature-1": "AAAA", "X-DocuSign-Signature-2": good}, {}, body)[0] == []
    with pytest.raises(WebhookRejected):
        hook.parse({"X-DocuSign-Signature-1": good}, {}, body + b" ")
    with pytest.raises(WebhookRejected):
        hook.parse({}, {}, body)


def test_voided_and_expired_envelopes() -> None:
    hook = DocuSignWebhook(SecretStr("k"))
    for event, reason, kind in [("envelope-voided", "客户撤回", "cancelled"),
                                ("envelope-voided", "Envelope has expired.", "expired"),
                                ("envelope-expired", None, "expired"), ("envelope-completed", None, "completed")]:
        body = (b'{"event":"%s","data":{"envelopeId":"e1","envelopeSummary":{"voidedReason":%s}}}'
                % (event.encode(), b"null" if reason is None else f'"{reason}"'.encode()))
        events, reply = hook.parse({"X-DocuSign-Signature-1": connect_signature("k", body)}, {}, body)
        assert [(e.kind, e.event_id) for e in events] == [(kind, f"docusign:e1:{kind}")] and reply.status == 200


def test_settings_enable_only_with_secrets(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    for name in ("INTEGRATION_KEY", "USER_ID", "ACCOUNT_ID", "PRIVATE_KEY", "HMAC_KEY"):
        monkeypatch.delenv(f"SIGNBRIDGE_DOCUSIGN_{name}", raising=False)
    blobs = FileBlobStore(settings.data_dir)
    assert docusign.build(settings, None, blobs, httpx.AsyncClient()) is None and docusign.webhook(settings) is None
    monkeypatch.setenv("SIGNBRIDGE_DOCUSIGN_INTEGRATION_KEY", IK)
    monkeypatch.setenv("SIGNBRIDGE_DOCUSIGN_USER_ID", USER)
    monkeypatch.setenv("SIGNBRIDGE_DOCUSIGN_ACCOUNT_ID", ACCOUNT)
    assert docusign.build(settings, None, blobs, httpx.AsyncClient()) is None  # no private key yet
    monkeypatch.setenv("SIGNBRIDGE_DOCUSIGN_PRIVATE_KEY", PRIVATE_PEM)
    monkeypatch.setenv("SIGNBRIDGE_DOCUSIGN_HMAC_KEY", "hk-secret")
    assert docusign.build(settings, None, blobs, httpx.AsyncClient()) is not None
    assert docusign.webhook(settings) is not None
    shown = repr(DocuSignConfig())
    assert "hk-secret" not in shown and "PRIVATE KEY" not in shown


def test_assertion_claims() -> None:
    config = DocuSignConfig(integration_key=IK, user_id=USER, account_id=ACCOUNT, private_key=SecretStr(PRIVATE_PEM),
                            oauth_base="https://account-d.docusign.com")
    claims = jwt.decode(docusign.DocuSignAuth(config, httpx.AsyncClient()).assertion(now=1_700_000_000),
                        PUBLIC_PEM, algorithms=["RS256"], audience="account-d.docusign.com",
                        options={"verify_exp": False})
    one_line = config.model_copy(update={"private_key": SecretStr(PRIVATE_PEM.replace("\n", "\\n"))})
    assert jwt.decode(docusign.DocuSignAuth(one_line, httpx.AsyncClient()).assertion(), PUBLIC_PEM,
                      algorithms=["RS256"], audience="account-d.docusign.com")["sub"] == USER
    assert claims == {"iss": IK, "sub": USER, "aud": "account-d.docusign.com", "iat": 1_700_000_000,
                      "exp": 1_700_003_600, "scope": "signature impersonation"}


@pytest.fixture
def sim() -> Iterator[DocuSignSim]:
    with DocuSignSim(IK, USER, ACCOUNT, PUBLIC_PEM, ["rotated-old-key", HMAC_KEY]).running() as s:
        yield s


PUBLIC_URL = "https://signbridge.test"


def _provider(sim: DocuSignSim, blobs: FileBlobStore, http: httpx.AsyncClient, settings: Settings,
              public_url: str = PUBLIC_URL, **over: Any) -> DocuSignProvider:
    fields: dict[str, Any] = dict(integration_key=IK, user_id=USER, account_id=ACCOUNT,
                                  private_key=SecretStr(PRIVATE_PEM), api_base=sim.api_base, oauth_base=sim.url,
                                  poll_min_interval_seconds=900)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    return DocuSignProvider(DocuSignConfig(**{**fields, **over}), blobs, http, engine, public_url)


def docusign_env(monkeypatch: pytest.MonkeyPatch, sim: DocuSignSim) -> None:
    """The API process builds its own DocuSign connector from the environment (link clicks)."""
    for name, value in {"INTEGRATION_KEY": IK, "USER_ID": USER, "ACCOUNT_ID": ACCOUNT, "PRIVATE_KEY": PRIVATE_PEM,
                        "API_BASE": sim.api_base, "OAUTH_BASE": sim.url}.items():
        monkeypatch.setenv(f"SIGNBRIDGE_DOCUSIGN_{name}", value)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def _create_input(blobs: FileBlobStore, groups: list[list[Person]], request_id: str = "req-1") -> CreateFlowInput:
    data = sample_contract("unit")
    return CreateFlowInput(request_id=request_id, provider="docusign", title="合同",
                           document=DocumentInfo(name="c.pdf", sha256=sha256_hex(data), blob_key=blobs.put(data),
                                                 size=len(data), pages=1),
                           groups=groups, expires_at=datetime.now(UTC) + timedelta(days=3))


def _open(flow: str, signers: list[Person], group: int = 0) -> OpenGroupInput:
    return OpenGroupInput(request_id="req-1", provider="docusign", flow_id=flow, group=group, signers=signers,
                          expires_at=datetime.now(UTC) + timedelta(days=3))


async def test_connector_over_http(sim: DocuSignSim, http: httpx.AsyncClient, settings: Settings) -> None:
    blobs = FileBlobStore(settings.data_dir / "blobs")
    provider = _provider(sim, blobs, http, settings)
    req = _create_input(blobs, [[A], [B, C]])
    flow = await provider.create_flow(req)
    assert await provider.create_flow(req) == flow and len(sim.envelopes) == 1  # idempotent per request id
    assert sim.grants == 1  # one token, cached
    signers = sim.envelopes[flow]["recipients"]["signers"]
    assert [(s["routingOrder"], s["clientUserId"]) for s in signers] == [("1", "u-1"), ("2", "u-2"), ("2", "x-9")]
    views_before = sim.calls.count(f"POST /restapi/v2.1/accounts/{ACCOUNT}/envelopes/{flow}/views/recipient")
    links = await provider.open_group(_open(flow, [A]))
    # the chat gets SignBridge's stable link, not DocuSign's 5-minute view (none is made yet)
    assert [link.signer_id for link in links] == ["u-1"]
    token = str(links[0].url).removeprefix(PUBLIC_URL + "/esign/docusign/sign/")
    assert token != str(links[0].url) and len(token) >= 43  # 256 bits, URL-safe base64
    assert sim.calls.count(f"POST /restapi/v2.1/accounts/{ACCOUNT}/envelopes/{flow}/views/recipient") == views_before
    with Session(provider.engine) as session:
        rows = session.exec(select(ProviderLink).where(ProviderLink.flow_id == flow)).all()
    assert [(r.signer_id, r.token_hash) for r in rows] == [("u-1", docusign.link_token_hash(token))]
    assert not sim.may_sign(flow, str(B.email))  # B's routing order comes after A's
    sim.revoke_tokens()  # a 401: the connector fetches a fresh token and carries on
    view = await provider.recipient_view(flow, "u-1", "https://signbridge.test/return")
    assert view.startswith(sim.url + "/signing/")
    async with httpx.AsyncClient() as signer:
        assert (await signer.post(view)).status_code == 200  # A signs through the view
        assert (await signer.post(view)).status_code == 404  # single use
    assert [(e.kind, e.signer_id) for e in await provider.poll(flow)] == [("signed", "u-1")]
    assert sim.grants == 2
    gets = sim.status_gets[flow]
    assert await provider.poll(flow) == [] and sim.status_gets[flow] == gets  # 15-minute rule: no call made
    with pytest.raises(ProviderError) as not_ready:
        await provider.download_signed(flow)
    assert not not_ready.value.non_retryable
    await sim.sign(flow, str(B.email))
    await sim.sign(flow, str(C.email))
    signed = await provider.download_signed(flow)
    assert signed == sim.files[flow] and not signed.startswith(blobs.get(req.document.blob_key)[:-10])
    evidence = await provider.evidence(flow)
    assert evidence["kind"] == "docusign_certificate_of_completion"
    assert blobs.get(evidence["certificate_blob_key"]) == sim.certificate(flow)
    await provider.revoke(flow, "too late")  # completed: a no-op
    assert sim.envelopes[flow]["status"] == "completed"

    emailed = _provider(sim, blobs, http, settings, embedded=False, poll_min_interval_seconds=0)
    parallel = await emailed.create_flow(_create_input(blobs, [[A, B]], "req-2"))
    assert [s["routingOrder"] for s in sim.envelopes[parallel]["recipients"]["signers"]] == ["1", "1"]
    assert [(link.signer_id, link.url) for link in await emailed.open_group(_open(parallel, [A, B]))] == \
        [("u-1", None), ("u-2", None)]
    await emailed.remind(parallel, ["u-2"])
    assert sim.reminded == [B.email]
    await emailed.revoke(parallel, "changed our mind")
    assert [e.kind for e in await emailed.poll(parallel)] == ["cancelled"]


async def test_signers_with_a_mobile_get_docusign_phone_authentication(sim: DocuSignSim, http: httpx.AsyncClient,
                                                                         settings: Settings) -> None:
    """With the account's phone-auth workflow configured, DocuSign verifies each signer who has a
    mobile by a code to it before they sign; the number goes as country code + national number."""
    blobs = FileBlobStore(settings.data_dir / "blobs")
    workflow = next(iter(sim.phone_workflows))
    provider = _provider(sim, blobs, http, settings, phone_auth_workflow_id=workflow)
    wang = Person(id="x-1", name="王总", email="wang@customer.example", mobile="+8613800000001", external=True)
    lisi = Person(id="u-2", name="李四", email="ls@corp.example")
    flow = await provider.create_flow(_create_input(blobs, [[wang, lisi]], request_id="req-phone"))
    signers = {s["name"]: s for s in sim.envelopes[flow]["recipients"]["signers"]}
    assert signers["王总"]["identityVerification"] == {"workflowId": workflow, "inputOptions": [{
        "name": "phone_number_list", "valueType": "PhoneNumberList",
        "phoneNumberList": [{"countryCode": "86", "number": "13800000001"}]}]}
    assert "identityVerification" not in signers["李四"]  # no mobile: nothing DocuSign could send a code to

    wrong = _provider(sim, blobs, http, settings, phone_auth_workflow_id="not-a-workflow-of-this-account")
    with pytest.raises(ProviderError) as refused:
        await wrong.create_flow(_create_input(blobs, [[wang]], request_id="req-phone-2"))
    assert refused.value.non_retryable and "INVALIDAUTHENTICATIONSETUP" in str(refused.value)


async def test_errors_are_classified(sim: DocuSignSim, http: httpx.AsyncClient, settings: Settings) -> None:
    blobs = FileBlobStore(settings.data_dir / "blobs")
    sim.consent = False
    with pytest.raises(ProviderError) as consent:
        await _provider(sim, blobs, http, settings).poll("x")
    assert consent.value.non_retryable and "consent_required" in str(consent.value)
    sim.consent = True
    with pytest.raises(ProviderError) as wrong_user:
        await _provider(sim, blobs, http, settings, user_id="someone-else").poll("x")
    assert wrong_user.value.non_retryable and "invalid_grant" in str(wrong_user.value)
    with pytest.raises(ProviderError) as invalid:
        await _provider(sim, blobs, http, settings).create_flow(
            _create_input(blobs, [[Person(id="u-5", name="无邮箱")]]))
    assert invalid.value.non_retryable
    with pytest.raises(ProviderError) as missing:
        await _provider(sim, blobs, http, settings).poll("no-such-envelope")
    assert missing.value.non_retryable and "ENVELOPE_DOES_NOT_EXIST" in str(missing.value)
    sim.down = True
    with pytest.raises(ProviderError) as outage:
        await _provider(sim, blobs, http, settings).poll("x")
    assert not outage.value.non_retryable and outage.value.retry_after == 1.0
    sim.down = False
    provider = _provider(sim, blobs, http, settings)
    await provider.auth.token()
    sim.throttle = 1
    with pytest.raises(ProviderError) as limited:
        await provider.poll("y")
    assert not limited.value.non_retryable and 5.0 <= (limited.value.retry_after or 0) <= 7.0  # X-RateLimit-Reset


# ---- end to end -------------------------------------------------------------------------------


async def _flow_of(rig: E2E, sim: DocuSignSim, handle: Any) -> str:
    view = await rig.wait(handle, lambda v: v.provider_flow_id is not None and v.status.value == "IN_PROGRESS")
    assert view.provider_flow_id in sim.envelopes
    return str(view.provider_flow_id)


@asynccontextmanager
async def _rig(env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch,
               sim: DocuSignSim) -> AsyncIterator[E2E]:
    monkeypatch.setenv("SIGNBRIDGE_DOCUSIGN_HMAC_KEY", HMAC_KEY)
    # The simulator has no hourly quota; the 0.4/s default cap is tested in test_provider_quota.py.
    monkeypatch.setenv("SIGNBRIDGE_DOCUSIGN_MAX_REQUESTS_PER_SECOND", "0")
    docusign_env(monkeypatch, sim)
    async with provider_e2e(env, settings, "docusign", lambda blobs, http: _provider(sim, blobs, http, settings),
                            ) as (rig, callback):
        sim.callback_url = callback("/esign/docusign/webhook")
        yield rig


FLOW = FlowCase(  # the shared flows: tests/test_provider_flows.py
    "docusign", simulator=lambda settings: DocuSignSim(IK, USER, ACCOUNT, PUBLIC_PEM, [HMAC_KEY]).running(),
    rig=_rig, signing=lambda sim: SimSigning(sim, lambda: sim.envelopes, who=lambda p: str(p.email)))


e2e = e2e_fixture(FLOW)


async def test_e2e_groups_in_order_complete(e2e: E2E, sim: DocuSignSim) -> None:
    handle = await e2e.start([[A], [B, C]])
    flow = await _flow_of(e2e, sim, handle)
    await e2e.sink.wait_for(lambda: bool(e2e.links(handle, A)), timeout=20)
    assert not e2e.links(handle, B)
    sim.duplicate = True  # every Connect message twice
    async with httpx.AsyncClient(timeout=10) as signer:
        # A clicks the chat link: SignBridge mints a fresh view and redirects; A signs there
        token = e2e.links(handle, A)[0]["sign_url"].rsplit("/", 1)[1]
        clicked = await signer.get(f"{e2e.api_url}/esign/docusign/sign/{token}")
        assert clicked.status_code == 303 and clicked.headers["location"].startswith(sim.url + "/signing/")
        assert (await signer.post(clicked.headers["location"])).status_code == 200
    await e2e.sink.wait_for(lambda: bool(e2e.links(handle, B)) and bool(e2e.links(handle, C)), timeout=20)
    sim.duplicate = False
    sim.hold()
    await sim.sign(flow, str(B.email))
    await sim.sign(flow, str(C.email))
    await sim.flush(reverse=True)  # envelope-completed first, then the recipients
    view = await e2e.result(handle)
    assert view.status.value == "COMPLETED" and all(s.status == "signed" for s in view.signers)
    assert view.signed_document is not None
    assert e2e.blobs.get(view.signed_document.blob_key) == sim.files[flow]  # DocuSign's re-rendered file
    assert [f["sha256"] for f in e2e.sink.of_type("file") if f["kind"] == "signed"] == [view.signed_document.sha256]
    assert all(d.attempts and d.attempts[-1] == 200 for d in sim.deliveries)


async def test_e2e_expired_at_the_provider(e2e: E2E, sim: DocuSignSim) -> None:
    handle = await e2e.start([[A, B]])
    flow = await _flow_of(e2e, sim, handle)
    await sim.sign(flow, str(A.email))
    await sim.expire(flow)
    view = await e2e.result(handle)
    assert view.status.value == "EXPIRED" and not sim.may_sign(flow, str(B.email))


async def test_e2e_three_documents_with_anchor_tabs_in_one_envelope(e2e: E2E, sim: DocuSignSim) -> None:
    """Three PDFs in one envelope: 甲方 and 乙方 get anchor tabs where each document says
    【甲方签章】/【乙方签章】 (DocuSign finds the text), and all three signed documents come back."""
    docs = [anchor_pdf([(72, 300, "甲方：【甲方签章】"), (320, 300, f"乙方：【乙方签章】 第{i}份")]) for i in range(3)]
    handle = await e2e.start([[A, B]], documents=docs, roles={"甲方": B.id, "乙方": A.id})
    flow = await _flow_of(e2e, sim, handle)
    assert sorted(sim.documents[flow]) == ["1", "2", "3"]
    tabs = {s["email"]: s["tabs"]["signHereTabs"] for s in sim.envelopes[flow]["recipients"]["signers"]}
    assert [t["documentId"] for t in tabs[str(B.email)]] == ["1", "2", "3"]
    assert {t["anchorString"] for t in tabs[str(B.email)]} == {"【甲方签章】"}
    assert {t["anchorString"] for t in tabs[str(A.email)]} == {"【乙方签章】"}
    anchor = next(a.box for a in find_anchors(docs[0]) if a.role == "甲方")
    first = tabs[str(B.email)][0]
    assert int(first["anchorXOffset"]) == round(anchor[2] - anchor[0] + 4)  # just right of the text
    await sim.sign(flow, str(A.email))
    await sim.sign(flow, str(B.email))
    view = await e2e.result(handle)
    assert view.status.value == "COMPLETED" and len(view.signed_documents) == 3
    assert [e2e.blobs.get(d.blob_key) for d in view.signed_documents] == [sim.documents[flow][k] for k in "123"]
    assert len([f for f in e2e.sink.of_type("file") if f["kind"] == "signed"]) == 3


def test_template_fields_are_absolute_tabs_from_the_top() -> None:
    field = Placement(role="甲方", signer_id="u-1", page=1, box=(72, 200, 232, 248), page_size=(595, 842))
    assert sign_here_tab(field) == {"documentId": "1", "tabLabel": "sign:甲方", "pageNumber": "2",
                                    "xPosition": "72", "yPosition": str(842 - 248)}


async def test_an_anchor_docusign_cannot_find_is_refused_by_the_simulator(sim: DocuSignSim) -> None:
    pdf = anchor_pdf([(72, 300, "no anchors here")])
    assert _tab_problem({"documentId": "1", "anchorString": "【甲方签章】", "anchorIgnoreIfNotPresent": "false"},
                        {"1": pdf}) == ("ANCHOR_TAB_STRING_NOT_FOUND", "【甲方签章】")
    assert _tab_problem({"documentId": "1", "pageNumber": "3", "xPosition": "1", "yPosition": "1"},
                        {"1": pdf}) == ("PAGE_NUMBER_NOT_IN_DOCUMENT", "3")


async def test_e2e_an_organisation_seal_is_refused_at_prepare(e2e: E2E, sim: DocuSignSim) -> None:
    await refused_seal(e2e)
    assert not sim.envelopes  # nothing was created at the provider
