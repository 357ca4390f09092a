"""Documents as people send them: Office files converted by real LibreOffice, several documents in
one request, templates filled and flattened, signatures at role fields and anchors — each signed
by the built-in provider and read back from the signed PDFs.

The LibreOffice conversions are real (`soffice` from Debian's packages; `.ci/run` installs it and
a missing one fails CI): two in this module, shared by the tests that need them.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import pytest
from pypdf import PdfReader
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from connectors.convert.libreoffice import find_soffice
from signbridge.core.cards import build_card
from signbridge.core.models import ChatRef, DocumentSource, Person, SigningRequest, StatusView, TemplateUse
from signbridge.core.settings import Settings
from signbridge.core.temporal import start_signing
from signbridge.intake.templates import TemplateProblem, register
from signbridge.pdf.anchors import beside, find_anchors
from signbridge.pdf.pades import validate_pdf
from signbridge.pdf.pki import InstallationCA
from signbridge.pdf.render import page_text
from signbridge.pdf.sample import sample_contract
from store.blob_factory import make_blob_store
from store.db import get_engine
from store.repos import documents
from tests.harness import INITIATOR, A, C, Harness, harness
from tests.office_files import CONTRACT_TEXT, chinese_docx, chinese_xlsx
from tests.template_pdfs import SLOTS, anchor_pdf, template_pdf

ANCHORED = [(72, 300, "甲方：【甲方签章】"), (72, 150, "乙方：{{sign:乙方}}")]


def test_libreoffice_is_installed() -> None:
    """CI installs it (`.ci/run`); without it the conversion tests would test nothing."""
    assert find_soffice(), "LibreOffice (soffice) is missing: apt-get install libreoffice-writer-nogui …"


def _put(h: Harness, name: str, data: bytes) -> DocumentSource:
    return DocumentSource(name=name, blob_key=make_blob_store(h.settings).put(data))


async def _start(h: Harness, documents: list[DocumentSource], groups: list[list[Person]],
                 **extra: Any) -> WorkflowHandle[Any, Any]:
    request_id = f"sign:test:{uuid.uuid4().hex[:12]}"
    req = SigningRequest(request_id=request_id, title="销售合同", initiator=INITIATOR,
                         chat=ChatRef(chat_id="g-1", source_event_id=request_id), documents=documents,
                         groups=groups, timing=h.timing(), **extra)
    handle, _ = await start_signing(h.client, req, h.settings.task_queue)
    return handle


def _blob(h: Harness, key: str) -> bytes:
    return make_blob_store(h.settings).get(key)


async def _reports(h: Harness, pdf: bytes) -> list[Any]:
    ca = InstallationCA.load_or_create(h.settings.data_dir / "ca")
    reports = await asyncio.to_thread(validate_pdf, pdf, [ca.certificate])
    assert reports and all(r.intact and r.valid and r.trusted for r in reports)
    return reports


def _signature_rects(pdf: bytes) -> dict[str, tuple[float, ...]]:
    """Signature field name -> its widget's rectangle, from the signed file."""
    rects: dict[str, tuple[float, ...]] = {}
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for ref in page.get("/Annots") or []:
            annot = ref.get_object()
            if annot.get("/FT") == "/Sig":
                rects[str(annot["/T"])] = tuple(round(float(v)) for v in annot["/Rect"])
    return rects


async def _sign_all(h: Harness, handle: WorkflowHandle[Any, Any], *people: Person) -> StatusView:
    for person in people:
        await h.sign(handle, person)
    view: StatusView = await handle.result()
    assert view.status == "COMPLETED", view.reason
    return view


async def test_three_documents_word_excel_and_anchored_pdf_are_signed_in_one_flow(
        ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        docs = [_put(h, "合同.docx", chinese_docx()), _put(h, "报价.xlsx", chinese_xlsx()),
                _put(h, "附件.pdf", anchor_pdf(ANCHORED))]
        handle = await _start(h, docs, [[A, C]])  # roles in order: the anchors' 甲方 → 李四, 乙方 → 客户A
        page = (await h.http.get(h.path(await h.link(handle, A)), headers={"Accept": "application/json"})).json()
        assert [d["name"] for d in page["documents"]] == ["合同.pdf", "报价.pdf", "附件.pdf"]
        view = await _sign_all(h, handle, A, C)

        assert len(view.signed_documents) == 3 and len(view.documents) == 3
        assert build_card(view).document_name == "3 份文件：合同.signed.pdf、报价.signed.pdf、附件.signed.pdf"
        word, sheet, anchored = (_blob(h, d.blob_key) for d in view.signed_documents)
        for pdf in (word, sheet, anchored):  # one PAdES signature per document per signer
            assert [r.signer_name for r in await _reports(h, pdf)] == ["李四", "客户A"]
        assert CONTRACT_TEXT[:10] in page_text(word, 0).replace(" ", "")  # CJK glyphs map back to the text
        assert "货物1号" in page_text(sheet, 0)
        # The converted PDF is what was signed; the Office original is kept beside it.
        converted = view.documents[0]
        assert converted.converted_from == "合同.docx" and converted.original_sha256
        assert documents.get(get_engine(h.settings.sqlalchemy_url), converted.original_sha256) is not None
        assert _blob(h, converted.original_sha256)[:2] == b"PK"
        # In the anchored PDF each role signs beside its anchor; elsewhere in the automatic slots.
        anchors = {a.role: a for a in find_anchors(_blob(h, view.documents[2].blob_key))}
        expected = {role: tuple(round(v) for v in beside(anchors[role].box, (0, 0, 595.28, 841.89)))
                    for role in ("甲方", "乙方")}
        assert sorted(_signature_rects(anchored).values()) == sorted(expected.values())
        assert sorted(_signature_rects(word).values()) != sorted(expected.values())
        # The record outlives Temporal: every signed file is downloadable from the database.
        for index, doc in enumerate(view.signed_documents):
            resp = await h.http.get(f"/api/v1/signing-requests/{handle.id}/signed-file?document={index}",
                                    headers={"Authorization": "Bearer test-api-key"})
            assert resp.status_code == 200 and resp.content == _blob(h, doc.blob_key)


async def test_template_is_filled_flattened_and_signed_in_its_role_fields(
        ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        engine = get_engine(h.settings.sqlalchemy_url)
        await register(h.settings, engine, make_blob_store(h.settings), name="销售合同", file_name="t.pdf",
                       data=template_pdf(), by="test")
        handle = await _start(h, [], [[C], [A]], roles={"甲方": A.id, "乙方": C.id},
                              template=TemplateUse(name="销售合同", fields={"客户名称": "某某公司", "金额": "120000"}))
        view = await _sign_all(h, handle, C, A)
        signed = _blob(h, view.signed_document.blob_key if view.signed_document else "")
        reader = PdfReader(io.BytesIO(signed))
        assert {name: f.get("/FT") for name, f in (reader.get_fields() or {}).items()} == {
            "Signature1": "/Sig", "Signature2": "/Sig"}  # no text field left, only the two signatures
        text = page_text(signed, 0)
        assert "某某公司" in text and "120000" in text
        assert sorted(_signature_rects(signed).values()) == sorted(SLOTS.values())
        assert [r.signer_name for r in await _reports(h, signed)] == ["客户A", "李四"]


async def _rejected(h: Harness, handle: WorkflowHandle[Any, Any]) -> str:
    view: StatusView = await handle.result()
    assert view.status == "REJECTED"
    assert not h.provider.calls, "nothing may be created at the provider for a rejected request"
    return view.reason or ""


@pytest.mark.parametrize(("case", "needle"), [
    ("macro", "contains macros"),
    ("password", "password-protected"),
    ("one_not_a_document", "notes.txt: 文件不是 PDF"),
    ("anchor_twice", "appears 2 times"),
    ("role_without_place", "No signing place for “丙方”"),
    ("unknown_field", "no field 颜色"),
    ("missing_field", "Missing template fields: 金额"),
    ("overflow", "too long for its box"),
    ("unknown_template", "No template called “没有”"),
])
async def test_bad_documents_are_refused_with_a_reason_and_nothing_half_done(
        ts_env: WorkflowEnvironment, settings: Settings, case: str, needle: str) -> None:
    async with harness(ts_env, settings) as h:
        engine = get_engine(h.settings.sqlalchemy_url)
        await register(h.settings, engine, make_blob_store(h.settings), name="销售合同", file_name="t.pdf",
                       data=template_pdf(), by="test")
        fields = {"客户名称": "某某公司", "金额": "120000"}
        pdf = _put(h, "c.pdf", sample_contract("ok"))
        extra: dict[str, Any] = {}
        docs = [pdf]
        if case == "macro":
            docs = [_put(h, "合同.docm", chinese_docx())]
        elif case == "password":
            docs = [_put(h, "合同.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 64
                         + "EncryptionInfo".encode("utf-16-le") + b"\0" * 64)]
        elif case == "one_not_a_document":
            docs = [pdf] * 6 + [_put(h, "notes.txt", b"just some notes")]
        elif case == "anchor_twice":
            docs = [_put(h, "a.pdf", anchor_pdf([(72, 300, "【甲方签章】"), (72, 100, "【甲方签章】")]))]
        elif case == "role_without_place":
            extra = {"roles": {"丙方": A.id}}
        else:
            values = {"unknown_field": {**fields, "颜色": "红"}, "missing_field": {"客户名称": "某某公司"},
                      "overflow": {**fields, "金额": "1" * 80}}.get(case, fields)
            name = "没有" if case == "unknown_template" else "销售合同"
            docs, extra = [], {"template": TemplateUse(name=name, fields=values), "roles": {"甲方": A.id, "乙方": C.id}}
        handle = await _start(h, docs, [[A, C]], **extra)
        assert needle in await _rejected(h, handle)


async def test_a_template_without_signature_fields_is_refused(settings: Settings) -> None:
    engine = get_engine(settings.sqlalchemy_url)
    from store.db import create_all

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    create_all(engine)
    with pytest.raises(TemplateProblem, match="no signature field"):
        await register(settings, engine, make_blob_store(settings), name="空", file_name="t.pdf",
                       data=template_pdf(slots={}), by="test")


async def test_a_company_seal_is_stamped_over_its_anchor(ts_env: WorkflowEnvironment, settings: Settings) -> None:
    """【乙方盖章】 places the company's seal (centred on the anchor); the person signs beside 【乙方签章】."""
    from signbridge.core.models import OrgParty
    from signbridge.intake.orgs import add
    from store.repos.organisations import Keeper

    async with harness(ts_env, settings) as h:
        add(get_engine(h.settings.sqlalchemy_url), name="乙方科技有限公司", credit_code="91350100M000100Y43",
            keepers=[Keeper(C.id, C.name)])
        pdf = anchor_pdf([(72, 300, "乙方：【乙方签章】"), (360, 300, "【乙方盖章】")])
        sealing = C.model_copy(update={"org": OrgParty(name="乙方科技有限公司", seal=True)})
        handle = await _start(h, [_put(h, "合同.pdf", pdf)], [[sealing]])
        view = await _sign_all(h, handle, C)
        signed = _blob(h, view.signed_document.blob_key) if view.signed_document else b""
        assert [r.signer_name for r in await _reports(h, signed)] == ["客户A", "乙方科技有限公司"]
        anchors = {(a.role, a.kind): a for a in find_anchors(pdf)}
        rects = _signature_rects(signed)
        seal_anchor = anchors[("乙方", "seal")].box
        x1, y1, x2, y2 = rects["Seal1"]
        assert x1 < seal_anchor[0] and x2 > seal_anchor[2] and y1 < seal_anchor[1] and y2 > seal_anchor[3]
        assert rects["Signature1"] == tuple(round(v) for v in beside(anchors[("乙方", "sign")].box,
                                                                      (0, 0, 595.28, 841.89)))
