"""The certificate of completion: posted with the signed file, served by REST, read back as text.

End to end over the dev server: a flow signs, the certificate arrives in the chat after the signed
file, `GET …/certificate.pdf` returns the very same file, its text lists every signer with a
masked contact, how they were verified, each step with time and IP, the documents' hashes and
the audit chain's head; its signature validates with pyHanko against the installation CA, and
its Chinese is drawn with real glyphs (not .notdef) that map back to the characters.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from io import BytesIO

import httpx
import pytest
from fontTools.cffLib import CFFFontSet
from pdfminer.high_level import extract_text
from pypdf import PdfReader
from temporalio.testing import WorkflowEnvironment

from activities.certificates import mask_email, mask_mobile, method_label, signer_steps
from connectors.notify.dev import read_outbox
from signbridge.core.models import ChatRef, Person, SignerState, SignStatus, StatusView
from signbridge.core.settings import Settings
from signbridge.pdf.pades import validate_pdf
from signbridge.pdf.pki import InstallationCA
from store import audit
from store.db import get_engine
from store.tables import AuditEvent
from tests.harness import Harness, harness

AUTH = {"Authorization": "Bearer test-api-key"}
SIGNER = Person(id="u-1", name="李四", mobile="+8613812341234")
CUSTOMER = Person(id="x-9", name="客户A", email="wang@customer.example", external=True)


@pytest.fixture
async def h(dev_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Harness]:
    async with harness(dev_env.client, settings) as h:
        yield h


def test_contacts_are_masked_and_methods_labelled() -> None:
    assert mask_mobile("+8613812341234") == "138****1234"
    assert mask_mobile("13812341234") == "138****1234"
    assert mask_email("wang@x.example") == "w***@x.example"
    assert method_label("sms_code", "local") == "短信验证码 SMS one-time code"
    assert method_label("email_code", "local") == "邮箱验证码 Email one-time code"
    assert method_label("chat_sso:feishu", "local") == "飞书 Feishu 单点登录 single sign-on"
    assert method_label(None, "local") == "签署链接 Signing link"
    assert "esign_cn" in method_label(None, "esign_cn")


def test_a_step_recorded_by_the_provider_is_listed_once() -> None:
    """An external provider's callback and the flow both record a signature: the certificate lists
    the provider's (it names the signer), and the flow's only where nothing else was recorded."""
    view = StatusView(request_id="r", title="t", status=SignStatus.COMPLETED, provider="esign_cn",
                      initiator=Person(id="u-0", name="张三"), chat=ChatRef(chat_id="g", source_event_id="e"),
                      signers=[SignerState(person=SIGNER, group=0, status="signed"),
                               SignerState(person=CUSTOMER, group=0, status="signed")])
    rows = [AuditEvent(request_id="r", seq=1, key="a", action="provider.signed", actor="esign_cn",
                       detail=json.dumps({"signer": SIGNER.id}), prev_hash="", hash=""),
            AuditEvent(request_id="r", seq=2, key="b", action="workflow.signed_event", actor=SIGNER.id,
                       detail=json.dumps({"signer": SIGNER.id}), prev_hash="", hash=""),
            AuditEvent(request_id="r", seq=3, key="c", action="workflow.signed_event", actor=CUSTOMER.id,
                       detail=json.dumps({"signer": CUSTOMER.id}), prev_hash="", hash="")]
    steps = signer_steps(view, rows)
    assert [[r.action for r in s.rows] for s in steps] == [["provider.signed"], ["workflow.signed_event"]]
    assert steps[0].method is None and method_label(steps[0].method, "esign_cn").startswith("由服务商 esign_cn")


def cjk_glyphs(pdf: bytes, chars: str) -> dict[str, int]:
    """For each of `chars`: the CID the certificate's font draws it with, after checking that the
    embedded CFF program has a real outline for it (a .notdef box would have CID 0 or no glyph)."""
    font = PdfReader(BytesIO(pdf)).pages[0]["/Resources"]["/Font"]["/F1"].get_object()
    descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
    cff = CFFFontSet()
    cff.decompile(BytesIO(descriptor["/FontFile3"].get_object().get_data()), None)
    charstrings = cff[cff.fontNames[0]].CharStrings
    to_unicode = font["/ToUnicode"].get_object().get_data().decode()
    cid_of: dict[str, int] = {}
    for cid, uni in re.findall(r"^<([0-9a-f]{4})> <([0-9a-f]{4})>$", to_unicode, re.M):
        cid_of[chr(int(uni, 16))] = int(cid, 16)
    for start, _, values in re.findall(r"^<([0-9a-f]{4})> <([0-9a-f]{4})> \[([^\]]*)\]$", to_unicode, re.M):
        for offset, uni in enumerate(re.findall(r"<([0-9a-f]{4})>", values)):
            cid_of[chr(int(uni, 16))] = int(start, 16) + offset
    found = {}
    for ch in chars:
        cid = cid_of[ch]
        assert cid != 0, f"{ch} is drawn as .notdef"
        glyph = charstrings[f"cid{cid:05d}"]
        assert glyph.calcBounds(charstrings) is not None, f"{ch}: the embedded glyph has no outline"
        found[ch] = cid
    return found


async def test_certificate_is_posted_after_the_signed_file_and_served_by_the_api(h: Harness) -> None:
    handle = await h.start([[SIGNER], [CUSTOMER]])
    url = await h.link(handle, SIGNER)
    assert (await h.http.get(h.path(url), headers={"User-Agent": "Mozilla/5.0 (cert test)"})).status_code == 200
    assert (await h.http.get(f"/api/v1/signing-requests/{handle.id}/certificate.pdf",
                             headers=AUTH)).json()["error"]["code"] == "not_finished"  # 409 while open
    await h.sign(handle, SIGNER)
    await h.sign(handle, CUSTOMER)
    view = await h.wait_status(handle, "COMPLETED")

    mine = [m for m in h.sink.of_type("file") if m["idempotency_key"].startswith(handle.id)]
    assert [m["kind"] for m in mine] == ["signed", "certificate"]
    resp = await h.http.get(f"/api/v1/signing-requests/{handle.id}/certificate.pdf", headers=AUTH)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/pdf"
    pdf = resp.content
    assert hashlib.sha256(pdf).hexdigest() == mine[1]["sha256"]  # the file the chat got, not a new one
    again = await h.http.get(f"/api/v1/signing-requests/{handle.id}/certificate.pdf", headers=AUTH)
    assert again.content == pdf

    text = extract_text(BytesIO(pdf))
    for words in ("签署完成证明", "Certificate of Completion", "销售合同", "已完成 Completed",
                  "李四", "138****1234", "客户A（外部 external）", "w***@customer.example",
                  "链接已发送 Link sent", "打开签署页 Opened the signing page", "已签署 Signed",
                  "203.0.113.7", "Mozilla/5.0 (cert test)"):
        assert words in text, words
    # Each signer's one-time code, by the channel that reached them.
    assert "验证方式 Verified by: 短信验证码 SMS one-time code" in text  # 李四, by mobile
    assert "验证方式 Verified by: 邮箱验证码 Email one-time code" in text  # 客户A, by email
    assert "+8613812341234" not in text and "wang@customer.example" not in text  # never the full contact
    assert view.document is not None and view.signed_document is not None
    assert f"签署前 SHA-256 before: {view.document.sha256}" in text
    assert f"签署后 SHA-256 after:  {view.signed_document.sha256}" in text
    engine = get_engine(h.settings.sqlalchemy_url)
    trail = audit.trail_of(engine, handle.id)
    issued = next(r for r in trail if r.action == "certificate.issued")
    head = trail[issued.seq - 2].hash  # the chain's head when the certificate was made
    assert head in text and audit.verify_chain(trail)

    ca = InstallationCA.load_or_create(h.settings.data_dir / "ca")
    [report] = await asyncio.to_thread(validate_pdf, pdf, [ca.certificate])  # pyHanko runs its own loop
    assert (report.intact, report.valid, report.trusted, report.coverage) == (True, True, True, "ENTIRE_FILE")
    assert cjk_glyphs(pdf, "签署完成证明李四客户") and len(set(cjk_glyphs(pdf, "签署李四").values())) == 4

    # The external customer has no chat to get the files in: their copy came by email, once, with the
    # signed file's and the certificate's links; the colleague got theirs in the chat only.
    copies = [e for e in read_outbox(h.settings) if e["purpose"] == "copy"]
    assert [e["to"] for e in copies] == ["wang@customer.example"]
    files = copies[0]["params"]["files"]
    assert mine[0]["url"].split("?", 1)[0] in files and mine[0]["name"] in files and mine[1]["name"] in files
    assert any(r.action == "signer.copy_sent" and json.loads(r.detail)["signer"] == CUSTOMER.id for r in trail)


async def certificate_once_recorded(h: Harness, request_id: str) -> httpx.Response:
    """The route answers from the database, which the flow writes just after its state changes:
    ask until the answer is no longer 409 `not_finished` (at most 10 s)."""
    for _ in range(100):
        resp = await h.http.get(f"/api/v1/signing-requests/{request_id}/certificate.pdf", headers=AUTH)
        if not (resp.status_code == 409 and resp.json()["error"]["code"] == "not_finished"):
            return resp
        await asyncio.sleep(0.1)
    raise AssertionError(f"{request_id}: still not finished in the database")


async def test_declined_request_certificate_shows_the_reason_and_the_recorded_method(h: Harness) -> None:
    """A method recorded by the signing step (a one-time code here) is what the certificate says."""
    handle = await h.start([[SIGNER, CUSTOMER]])
    await h.link(handle, CUSTOMER)
    engine = get_engine(h.settings.sqlalchemy_url)
    audit.record(engine, request_id=handle.id, key="test:code", action="signer.code_verified",
                 actor=CUSTOMER.id, detail={"method": "sms_code"}, ip="198.51.100.4", user_agent="Phone")
    assert (await h.decline(handle, CUSTOMER, "价格不对")).status_code == 200
    await h.wait_status(handle, "DECLINED")
    resp = await certificate_once_recorded(h, handle.id)
    assert resp.status_code == 200
    text = extract_text(BytesIO(resp.content))
    assert "已拒签 Declined" in text and "价格不对" in text
    assert "验证方式 Verified by: 短信验证码 SMS one-time code" in text
    assert "验证码已验证 Code verified" in text and "198.51.100.4" in text
    assert "未签署 Not signed" in text  # 李四 never signed


async def test_rejected_request_has_nothing_to_certify(h: Harness) -> None:
    handle = await h.start([[SIGNER]], document=b"not a PDF at all")  # refused at prepare, recorded
    await h.wait_status(handle, "REJECTED")
    resp = await certificate_once_recorded(h, handle.id)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "rejected"


async def test_unknown_request_has_no_certificate(h: Harness) -> None:
    resp = await h.http.get("/api/v1/signing-requests/sign:test:nothing/certificate.pdf", headers=AUTH)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    assert (await h.http.get("/api/v1/signing-requests/x/certificate.pdf")).status_code == 401
