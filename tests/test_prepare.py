"""`prepare` finds everything that would make signing impossible, before anyone is asked to sign.

Signer data (names, emails, mobiles) is cleaned and checked in one place (`signbridge.signers`);
documents are dry-run signed and searched for active content (`signbridge.pdf.check`). The bad
inputs go through the real workflow on the time-skipping server, and each must end REJECTED with
exactly the reason the sender reads in the chat.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
from io import BytesIO
from typing import Any

import pytest
from pyhanko.pdf_utils.reader import PdfFileReader
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from signbridge.core.models import Person, StatusView
from signbridge.core.settings import Settings
from signbridge.core.signers import (
    MAX_NAME_CHARS,
    SignerProblem,
    checked_signers,
    clean_name,
    normalised_email,
    normalised_mobile,
)
from signbridge.pdf.pades import validate_pdf
from signbridge.pdf.pki import COMMON_NAME_MAX_BYTES, InstallationCA
from signbridge.pdf.render import page_text
from signbridge.pdf.sample import sample_contract
from store import audit
from store.blobs import FileBlobStore
from store.db import create_all, get_engine
from store.repos import identities
from store.repos.identities import Contact
from tests import hostile_pdfs as hostile
from tests.harness import A, B, C, Harness, harness

LONG_LATIN = "Bartholomew Alexander Montgomery-Fitzwilliam van der Berg-Oppenheimer III, Esq."
LONG_CHINESE = "欧阳娜娜·买买提江·阿卜杜热合曼·艾尔肯·司马相如"  # 26 characters, 76 UTF-8 bytes
INVISIBLE = "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"


# ---- signbridge.signers, on its own ---------------------------------------------------------


@pytest.mark.parametrize("ch", [*INVISIBLE, "\u00ad", "\u2060", "\u0007", "\u001b", "\ue000", "\u3164", "\u2800"],
                         ids=lambda ch: f"U+{ord(ch):04X}")
def test_invisible_and_control_characters_are_removed_from_names(ch: str) -> None:
    assert clean_name(f"{ch}李{ch}四{ch}") == "李四"
    assert clean_name(f"Alice{ch} Chen") == "Alice Chen"


def test_whitespace_is_collapsed_and_the_name_is_nfc() -> None:
    assert clean_name("  Zoe\u0308\u3000\tÅngström\n ") == "Zoë Ångström"
    assert clean_name("\u202eecilA") == "ecilA"  # the override is gone: it reads as written


@pytest.mark.parametrize(("raw", "e164"), [
    ("13800138000", "+8613800138000"),
    ("138 0013 8000", "+8613800138000"),
    ("+86 138-0013-8000", "+8613800138000"),
    ("0086 13800138000", "+8613800138000"),
    ("+1 (415) 555-2671", "+14155552671"),
    ("+44 7911 123456", "+447911123456"),
])
def test_mobiles_are_normalised_to_e164(raw: str, e164: str) -> None:
    assert normalised_mobile(raw) == e164


@pytest.mark.parametrize(("raw", "normal"), [
    ("ls@corp.example", "ls@corp.example"),
    ("LS@Corp.EXAMPLE", "LS@corp.example"),
    ("ls@公司.example", "ls@xn--55qx5d.example"),  # an IDN domain, in the ASCII a certificate takes
])
def test_emails_are_normalised(raw: str, normal: str) -> None:
    assert normalised_email(raw) == normal


def test_checked_signers_returns_clean_people_and_refuses_bad_ones() -> None:
    [[a], [c]] = checked_signers([[A.model_copy(update={"name": "\u202e李四\u200b ", "email": " LS@Corp.Example "})],
                                  [C.model_copy(update={"mobile": "138 0013 8000", "email": None})]])
    assert (a.name, a.email, a.mobile) == ("李四", "LS@corp.example", None)
    assert (c.name, c.email, c.mobile) == ("客户A", None, "+8613800138000")
    with pytest.raises(SignerProblem, match="is named twice"):
        checked_signers([[A], [A.model_copy(update={"name": "李\u200b四"})]])


# ---- through the workflow -------------------------------------------------------------------


def _active(zh: str, en: str) -> str:
    return (f"contract.pdf: PDF 含有可执行或外带的内容：{zh}。为安全起见不能签署，请另存或打印为普通 PDF 后重新发送"
            f"（The PDF contains active content: {en}. For safety it cannot be signed; save or print it as a plain PDF "
            "and send it again）")


def _mobile(raw: str) -> str:
    return (f"李四: 手机号「{raw}」无效，请使用「+国家码」开头的国际格式或 11 位中国大陆手机号"
            f"（The mobile number '{raw}' is not valid: use +<country code><number> or an 11-digit mainland China "
            "mobile number）")


def _email(raw: str, why: str) -> str:
    return f"李四: 邮箱地址「{raw}」无效（The email address '{raw}' is not valid: {why}）"


CONTRACT = sample_contract("Prepare test")
JS = ("JavaScript 脚本", "JavaScript")
# name → (document, signer groups, the exact reason the flow ends REJECTED with)
BAD_INPUTS: dict[str, tuple[bytes, list[list[Person]], str]] = {
    "looping xref /Prev": (hostile.looping_prev(CONTRACT), [[A]],
                           "contract.pdf: PDF 文件内部结构有误，无法在其上添加签名，请重新导出 PDF 后发送"
                           "（The PDF's internal structure is broken, so no signature can be added to it; export the "
                           "PDF again and send it）"),
    "certified, no changes": (hostile.certified_no_changes(CONTRACT), [[A]],
                              "contract.pdf: PDF 带有禁止任何修改的认证签名，不能再签署，请发送未签名的原件"
                              "（The PDF carries a certification signature that forbids any change, so it cannot be "
                              "signed again; send the unsigned original）"),
    "javascript open action": (hostile.ACTIVE["javascript (open action)"](CONTRACT), [[A]], _active(*JS)),
    "javascript name tree": (hostile.ACTIVE["javascript (name tree)"](CONTRACT), [[A]], _active(*JS)),
    "javascript, escaped name": (hostile.ACTIVE["javascript (name escape)"](CONTRACT), [[A]], _active(*JS)),
    "launch": (hostile.ACTIVE["launch"](CONTRACT), [[A]],
               _active("启动其他程序的动作", "a launch action that starts a program")),
    "embedded file": (hostile.ACTIVE["embedded file"](CONTRACT), [[A]], _active("嵌入的文件", "embedded files")),
    "file attachment": (hostile.ACTIVE["file attachment"](CONTRACT), [[A]],
                        _active("文件附件批注", "file attachment annotations")),
    "xfa": (hostile.ACTIVE["xfa"](CONTRACT), [[A]], _active("XFA 表单", "an XFA form")),
    "submit form": (hostile.ACTIVE["submit form"](CONTRACT), [[A]],
                    _active("提交表单数据的动作", "a form-submit action")),
    "import data": (hostile.ACTIVE["import data"](CONTRACT), [[A]], _active("导入数据的动作", "an import-data action")),
    "rich media": (hostile.ACTIVE["rich media"](CONTRACT), [[A]],
                   _active("RichMedia 多媒体内容", "rich media (Flash, video)")),
    "email without @": (CONTRACT, [[A.model_copy(update={"email": "not-an-email"})]],
                        _email("not-an-email", "An email address must have an @-sign.")),
    "email with a display name": (CONTRACT, [[A.model_copy(update={"email": "Li Si <ls@corp.example>"})]],
                                  _email("Li Si <ls@corp.example>", "A display name and angle brackets around the "
                                         "email address are not permitted here.")),
    "email with a space": (CONTRACT, [[A.model_copy(update={"email": "ls @corp.example"})]],
                           _email("ls @corp.example", "The email address contains invalid characters before the "
                                  "@-sign: SPACE.")),
    "email with two @": (CONTRACT, [[A.model_copy(update={"email": "ls@@corp.example"})]],
                         _email("ls@@corp.example", "The part after the @-sign contains invalid characters: '@'.")),
    "email domain without a dot": (CONTRACT, [[A.model_copy(update={"email": "ls@localhost"})]],
                                   _email("ls@localhost", "The part after the @-sign is not valid. It should have a "
                                          "period.")),
    "mobile too short": (CONTRACT, [[A.model_copy(update={"mobile": "12345"})]], _mobile("12345")),
    "mobile is a landline": (CONTRACT, [[A.model_copy(update={"mobile": "010 6552 9988"})]], _mobile("010 6552 9988")),
    "mobile not in the numbering plan": (CONTRACT, [[A.model_copy(update={"mobile": "+8612345678901"})]],
                                         _mobile("+8612345678901")),
    "name only invisible characters": (CONTRACT, [[A.model_copy(update={"name": "\u200b\u202e\u2066 \ufeff"})]],
                                       "签署人 u-1 没有姓名（Signer u-1 has no name: it is empty or made only of "
                                       "invisible characters）"),
    "name too long": (CONTRACT, [[A.model_copy(update={"name": "长" * (MAX_NAME_CHARS + 1)})]],
                      f"签署人姓名超过 200 个字：{'长' * 63}…（The name of signer {'长' * 63}… is longer than 200 "
                      "characters）"),
    "external signer without contact": (CONTRACT, [[A], [C.model_copy(update={"email": None})]],
                                        "外部签署人 客户A 缺少邮箱或手机号（External signer 客户A needs an email or a "
                                        "mobile number to receive the signing link）"),
}


async def test_every_bad_input_is_rejected_at_prepare_with_its_reason(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    assert len(BAD_INPUTS) >= 15
    async with harness(ts_env, settings) as h:
        handles = {name: await h.start(groups, document=document) for name, (document, groups, _) in BAD_INPUTS.items()}
        # Real time while two dozen prepares share two cores: skipping ahead would time them out.
        with ts_env.auto_time_skipping_disabled():
            views: list[StatusView] = await asyncio.gather(*(handle.result() for handle in handles.values()))
        for (name, handle), view in zip(handles.items(), views, strict=True):
            expected = BAD_INPUTS[name][2]
            assert (view.status, view.reason) == ("REJECTED", expected), name
            posted = [m["text"] for m in h.sink.messages
                      if m["type"] == "message" and handle.id in m["idempotency_key"]]
            assert any(expected in text for text in posted), (name, posted)
            assert not h.links_for(handle, A)  # nobody was asked to sign
        assert h.provider.calls == 0  # and nothing was created at the provider


def _signed_pdf(h: Harness, view: StatusView) -> bytes:
    assert view.signed_document is not None
    return FileBlobStore(h.settings.data_dir / "blobs").get(view.signed_document.blob_key)


def _certificates(pdf: bytes) -> list[Any]:
    return [sig.signer_cert for sig in PdfFileReader(BytesIO(pdf)).embedded_regular_signatures]


def _signed_audit(h: Harness, request_id: str) -> dict[str, Any]:
    with Session(get_engine(h.settings.sqlalchemy_url)) as session:
        [row] = [r for r in audit.trail(session, request_id) if r.action == "document.signed"]
    detail: dict[str, Any] = json.loads(row.detail)
    return detail


async def test_names_too_long_for_a_certificate_sign_and_stay_whole(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    latin = A.model_copy(update={"name": LONG_LATIN})
    chinese = C.model_copy(update={"name": LONG_CHINESE})
    async with harness(ts_env, settings) as h:
        handle = await h.start([[latin], [chinese]])
        await h.sign(handle, latin)
        await h.sign(handle, chinese)
        view: StatusView = await handle.result()
        assert view.status == "COMPLETED"
        pdf = _signed_pdf(h, view)
        ca = InstallationCA.load_or_create(h.settings.data_dir / "ca")
        reports = await asyncio.to_thread(validate_pdf, pdf, [ca.certificate])
        assert [r.signer_name for r in reports] == [LONG_LATIN, LONG_CHINESE]
        assert all(r.intact and r.valid and r.trusted and r.modification_ok for r in reports)
        for cert, name in zip(_certificates(pdf), [LONG_LATIN, LONG_CHINESE], strict=True):
            cn = cert.subject.native["common_name"]
            assert len(cn.encode()) <= COMMON_NAME_MAX_BYTES and cn.endswith("…")
            assert cert.subject.native["name"] == name
        stamp = await asyncio.to_thread(page_text, pdf, 1)
        assert " ".join(LONG_LATIN.split()) in " ".join(stamp.split())
        assert LONG_CHINESE in "".join(stamp.split())
        signed = _signed_audit(h, handle.id)
        assert [s["signer"] for s in signed["signatures"]] == [LONG_LATIN, LONG_CHINESE]
        assert [s["name"] for s in h.cards(handle)[-1]["signers"]] == [LONG_LATIN, LONG_CHINESE]


async def test_invisible_characters_never_reach_a_certificate_a_stamp_or_the_card(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    spoof = A.model_copy(update={"name": "\u202e李\u200b四\u2066", "email": " LS@Corp.Example "})
    customer = C.model_copy(update={"name": "\ufeff客户\u200dA\u202c", "email": None, "mobile": "138 0013 8000"})
    async with harness(ts_env, settings) as h:
        handle = await h.start([[spoof, B], [customer]])
        view = await h.wait_status(handle, "IN_PROGRESS")
        people = [s.person for s in view.signers]
        assert [(p.name, p.email, p.mobile) for p in people] == [
            ("李四", "LS@corp.example", None), (B.name, None, None), ("客户A", None, "+8613800138000")]
        await h.sign(handle, spoof)  # types the name as the chat showed it, invisible characters and all
        await h.sign(handle, B)
        await h.sign(handle, customer)
        view = await handle.result()
        assert view.status == "COMPLETED"
        pdf = _signed_pdf(h, view)
        certs = _certificates(pdf)
        assert [c.subject.native["common_name"] for c in certs] == ["李四", B.name, "客户A"]
        assert certs[0].subject_alt_name_value.native == ["LS@corp.example"]
        stamp = await asyncio.to_thread(page_text, pdf, 1)
        texts = [stamp, json.dumps([c.subject.native for c in certs], ensure_ascii=False),
                 json.dumps(h.cards(handle), ensure_ascii=False), json.dumps(_signed_audit(h, handle.id),
                                                                             ensure_ascii=False)]
        for text in texts:
            assert not [ch for ch in text if unicodedata.category(ch) == "Cf" or ch in INVISIBLE], text
        assert "李四" in stamp and "客户A" in stamp


async def test_an_outsiders_imported_contact_reaches_them_without_the_directory(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    """An external signer the command gave no contact for gets the one `signbridge identities import`
    recorded (the chat's directory is never asked about them); with none recorded, REJECTED."""
    known = Person(id="x-77", name="客户Z", external=True)
    unknown = Person(id="x-78", name="客户Y", external=True)
    engine = get_engine(settings.sqlalchemy_url)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    create_all(engine)
    identities.import_rows(engine, [("webhook", "default", "x-77", Contact(name="客户Z", mobile="+8613812341234",
                                                                          external=True))])
    async with harness(ts_env, settings) as h:
        reached = await h.start([[A], [known]])
        refused = await h.start([[A], [unknown]])
        with ts_env.auto_time_skipping_disabled():
            await h.wait_status(reached, "IN_PROGRESS")
            view = await refused.result()
        signer = next(s for s in (await h.status(reached)).signers if s.person.id == "x-77")
        assert (signer.person.mobile, signer.person.external) == ("+8613812341234", True)
        assert view.status == "REJECTED" and "客户Y" in (view.reason or "")
