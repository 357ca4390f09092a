"""The built-in provider's PDF layer: checks, CA, PAdES signing/validation, rendering, sample."""

from __future__ import annotations

import datetime as dt
import stat
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import x509 as asn1_x509
from fontTools import cffLib
from fontTools.ttLib import TTFont
from pypdf import PdfReader, PdfWriter
from pypdf.generic import NameObject, StreamObject

from signbridge.pdf import pades
from signbridge.pdf.check import ACTIVE_CONTENT, DocumentProblem, check_pdf
from signbridge.pdf.pades import (
    _GrowingSubset,
    default_font_path,
    sign_pdf,
    stamp_box,
    stamp_lines,
    stamp_time,
    validate_pdf,
)
from signbridge.pdf.pki import BUNDLE_FILE, CERT_FILE, COMMON_NAME_MAX_BYTES, InstallationCA, subject_full_name
from signbridge.pdf.render import page_text, page_texts, render_page_png
from signbridge.pdf.sample import sample_contract
from tests import hostile_pdfs as hostile

SIGNED_AT = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)
SIGNERS = [
    ("u-1", "张三", "zs@corp.example"),
    ("u-2", "欧阳娜娜·买买提江", None),  # a long Chinese name, with a middle dot
    ("x-9", "Customer A", "a@customer.example"),
]


# ---- helpers ------------------------------------------------------------------------------


def _encrypted(data: bytes) -> bytes:
    return hostile.rewrite(data, lambda w: w.encrypt("secret"))


def _zero_pages() -> bytes:
    out = BytesIO()
    PdfWriter().write(out)
    return out.getvalue()


def _broken_content_stream(data: bytes) -> bytes:
    """Structurally sound file whose first page's content stream is unparseable."""

    def change(w: PdfWriter) -> None:
        stream = StreamObject()
        stream.set_data(b"BT /F1 12 Tf 72 700 Td (never closed Tj ET")
        w.pages[0][NameObject("/Contents")] = w._add_object(stream)

    return hostile.rewrite(data, change)


@dataclass(frozen=True)
class Chain:
    ca: InstallationCA
    steps: list[bytes]  # steps[0] is the unsigned original, steps[i] has i signatures


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    """Three signers signing one after another, as the built-in provider does."""
    ca = InstallationCA.load_or_create(tmp_path_factory.mktemp("ca"))
    steps = [sample_contract()]
    for position, (signer_id, name, email) in enumerate(SIGNERS, start=1):
        credential = ca.issue(signer_id, name, email)
        steps.append(sign_pdf(steps[-1], credential, signer_name=name, position=position,
                              signed_at=SIGNED_AT + dt.timedelta(minutes=position)))
    return Chain(ca=ca, steps=steps)


# ---- check_pdf ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "limit", "code"),
    [
        (lambda: b"", 10_000_000, "empty"),
        (sample_contract, 1024, "too_large"),
        (lambda: b"\x89PNG\r\n\x1a\n" + bytes(200), 10_000_000, "not_pdf"),
        (lambda: "合同正文，不是 PDF".encode(), 10_000_000, "not_pdf"),
        (lambda: _encrypted(sample_contract()), 10_000_000, "encrypted"),
        (lambda: sample_contract()[:700], 10_000_000, "corrupt"),
        (lambda: b"%PDF-1.7\n" + b"garbage " * 100, 10_000_000, "corrupt"),
        (lambda: _broken_content_stream(sample_contract()), 10_000_000, "corrupt"),
        (_zero_pages, 10_000_000, "empty"),
        (lambda: hostile.looping_prev(sample_contract()), 10_000_000, "unsignable"),
        (lambda: hostile.certified_no_changes(sample_contract()), 10_000_000, "locked"),
        (lambda: hostile.ACTIVE["launch"](sample_contract()), 10_000_000, "active_content"),
    ],
    ids=["empty-bytes", "too-large", "png", "text", "encrypted", "truncated", "garbage",
         "bad-content-stream", "zero-pages", "looping-prev", "certified-no-changes", "launch-action"],
)
def test_check_pdf_problems(make: Callable[[], bytes], limit: int, code: str) -> None:
    with pytest.raises(DocumentProblem) as info:
        check_pdf(make(), limit)
    problem = info.value
    assert problem.code == code
    chinese, _, english = problem.message.partition("（")  # "中文（English）"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in chinese), problem.message
    assert english.endswith("）") and len(english.split()) >= 3, problem.message
    assert english[:-1].isascii(), problem.message
    assert str(problem) == problem.message


def test_too_large_message_names_the_limit() -> None:
    with pytest.raises(DocumentProblem, match="20 MB") as info:
        check_pdf(b"%PDF-" + bytes(20 * 1024 * 1024), 20 * 1024 * 1024)
    assert info.value.code == "too_large"


def test_check_pdf_accepts_good_pdfs(chain: Chain) -> None:
    assert check_pdf(sample_contract(pages=3), 10_000_000) == 3
    assert check_pdf(chain.steps[-1], 10_000_000) == 2  # a signed file is still a good PDF


@pytest.mark.parametrize("kind", sorted(hostile.ACTIVE))
def test_active_content_is_refused_naming_what_was_found(kind: str) -> None:
    with pytest.raises(DocumentProblem) as info:
        check_pdf(hostile.ACTIVE[kind](sample_contract()), 10_000_000)
    problem = info.value
    assert (problem.code, problem.found) == ("active_content", hostile.ACTIVE_FOUND[kind])
    [found] = problem.found
    zh, en = ACTIVE_CONTENT[found]
    assert f"PDF 含有可执行或外带的内容：{zh}。" in problem.message
    assert f"（The PDF contains active content: {en}. For safety it cannot be signed;" in problem.message


def test_every_kind_of_active_content_in_one_file_is_named() -> None:
    data = sample_contract()
    for kind in ("launch", "javascript (page action)", "xfa", "embedded file"):
        data = hostile.ACTIVE[kind](data)
    with pytest.raises(DocumentProblem) as info:
        check_pdf(data, 10_000_000)
    assert info.value.found == ("javascript", "launch", "embedded_file", "xfa")  # ACTIVE_CONTENT's order
    assert "JavaScript 脚本、启动其他程序的动作、嵌入的文件、XFA 表单" in info.value.message
    assert "JavaScript, a launch action that starts a program, embedded files, an XFA form." in info.value.message


def test_links_and_plain_form_fields_are_not_active_content() -> None:
    assert check_pdf(hostile.harmless_extras(sample_contract()), 10_000_000) == 2


def test_a_parent_chain_that_loops_does_not_hang_the_check_or_the_signature(chain: Chain) -> None:
    data = hostile.widget_parent_loop(sample_contract())
    assert check_pdf(data, 10_000_000) == 2
    signed = sign_pdf(data, chain.ca.issue("u-1", "张三"), signer_name="张三", position=1, signed_at=SIGNED_AT)
    assert [r.trusted for r in validate_pdf(signed, [chain.ca.certificate])] == [True]


def test_looping_prev_chain_passes_pypdf_but_not_the_dry_run() -> None:
    """pypdf reads the file (so the old check passed it); pyHanko cannot sign it: the dry run finds that."""
    data = hostile.looping_prev(sample_contract())
    assert len(PdfReader(BytesIO(data), strict=True).pages) == 2
    with pytest.raises(DocumentProblem) as info:
        check_pdf(data, 10_000_000)
    assert info.value.code == "unsignable"
    assert info.value.message == ("PDF 文件内部结构有误，无法在其上添加签名，请重新导出 PDF 后发送（The PDF's internal "
                                  "structure is broken, so no signature can be added to it; export the PDF again "
                                  "and send it）")


def test_a_document_signed_elsewhere_is_signed_beside_the_old_signature(chain: Chain) -> None:
    """Acrobat's first field is "Signature1" too: ours takes a free name and a free stamp slot."""
    data = hostile.signed_elsewhere(sample_contract())
    assert check_pdf(data, 10_000_000) == 2
    signed = sign_pdf(data, chain.ca.issue("u-1", "张三"), signer_name="张三", position=1, signed_at=SIGNED_AT)
    reports = validate_pdf(signed, [chain.ca.certificate])
    assert [(r.field_name, r.trusted) for r in reports] == [("Signature1", False), ("Signature1_2", True)]
    assert all(r.intact and r.valid for r in reports)
    annots: Any = PdfReader(BytesIO(signed)).pages[-1]["/Annots"]
    rects = [[float(v) for v in a.get_object()["/Rect"]] for a in annots]
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = rects
    assert ax2 <= bx1 or bx2 <= ax1 or ay2 <= by1 or by2 <= ay1  # the stamps do not overlap


# ---- signing and validation ---------------------------------------------------------------


def test_each_signature_is_an_incremental_update(chain: Chain) -> None:
    for before, after in zip(chain.steps, chain.steps[1:], strict=False):
        assert len(after) > len(before)
        assert after.startswith(before)


def test_three_signatures_validate_against_the_installation_ca(chain: Chain) -> None:
    reports = validate_pdf(chain.steps[-1], [chain.ca.certificate])
    assert [r.field_name for r in reports] == ["Signature1", "Signature2", "Signature3"]
    assert [r.signer_name for r in reports] == [name for _, name, _ in SIGNERS]
    for position, report in enumerate(reports, start=1):
        assert report.intact and report.valid and report.trusted, report
        assert report.modification_ok, report
        assert report.signed_at == SIGNED_AT + dt.timedelta(minutes=position)
    # earlier signatures cover their own revision; the last one covers the whole file
    assert [r.coverage for r in reports] == ["ENTIRE_REVISION", "ENTIRE_REVISION", "ENTIRE_FILE"]


def test_intermediate_steps_validate_too(chain: Chain) -> None:
    assert validate_pdf(chain.steps[0], [chain.ca.certificate]) == []
    one = validate_pdf(chain.steps[1], [chain.ca.certificate])
    assert len(one) == 1 and one[0].coverage == "ENTIRE_FILE" and one[0].trusted


def test_signature_from_another_ca_is_not_trusted(chain: Chain, tmp_path: Path) -> None:
    other = InstallationCA.load_or_create(tmp_path / "other-ca", organisation="Elsewhere")
    signed = sign_pdf(chain.steps[-1], other.issue("u-x", "李四"), signer_name="李四",
                      position=4, signed_at=SIGNED_AT)
    reports = validate_pdf(signed, [chain.ca.certificate])
    assert [r.trusted for r in reports] == [True, True, True, False]
    assert reports[3].intact and reports[3].valid  # cryptographically fine, just not ours
    assert validate_pdf(signed, [other.certificate])[3].trusted


def test_changing_a_signed_byte_breaks_integrity(chain: Chain) -> None:
    signed = bytearray(chain.steps[-1])
    at = bytes(signed).index(b"Supplier")  # contract text, inside every signature's byte range
    signed[at] = ord("T")
    reports = validate_pdf(bytes(signed), [chain.ca.certificate])
    assert reports and not any(r.intact for r in reports)


def test_every_pages_text_at_once_reads_like_one_page_at_a_time(chain: Chain) -> None:
    signed = chain.steps[-1]
    assert page_texts(signed) == [page_text(signed, 0), page_text(signed, 1)]
    assert [len(t) for t in page_texts(signed, limit=5)] == [5, 5]


def test_the_stamp_says_electronic_signature_in_the_signers_time_zone(chain: Chain) -> None:
    from zoneinfo import ZoneInfo

    signed = sign_pdf(chain.steps[0], chain.ca.issue("u-9", "陈经理"), signer_name="陈经理", position=1,
                      signed_at=SIGNED_AT, tz=ZoneInfo("Asia/Shanghai"))
    text = page_text(signed, 1)
    assert "陈经理" in text and "电子签名 / Signed electronically" in text
    local = SIGNED_AT.astimezone(ZoneInfo("Asia/Shanghai"))
    assert f"{local:%Y-%m-%d %H:%M} UTC+8" in text
    assert stamp_time(SIGNED_AT, ZoneInfo("Asia/Kolkata")).endswith(" UTC+5:30")
    assert stamp_time(SIGNED_AT, ZoneInfo("America/New_York")).endswith((" UTC-5", " UTC-4"))
    assert stamp_time(SIGNED_AT, dt.UTC).endswith(" UTC")


def test_stamp_text_maps_back_to_unicode(chain: Chain) -> None:
    text = page_text(chain.steps[-1], 1)
    assert "张三" in text
    assert "欧阳娜娜·买买提江" in text
    assert "2026-11-29 10:01 UTC" in text
    assert "张三" not in page_text(chain.steps[0], 1)


def _embedded_glyph_bounds(data: bytes, text: str) -> dict[str, tuple[int, int, int, int] | None]:
    """Outline bounds, per character of `text`, in the stamp font embedded in `data`."""
    reader = PdfReader(BytesIO(data))
    fonts = [f.get_object() for f in _stamp_fonts(reader)]
    assert fonts, "no embedded stamp font"
    bounds: dict[str, tuple[int, int, int, int] | None] = {}
    seen: dict[int, str] = {}
    for font in fonts:
        descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
        cff = cffLib.CFFFontSet()
        cff.decompile(BytesIO(descriptor["/FontFile3"].get_object().get_data()), None)
        top = cff[cff.fontNames[0]]
        cmap = font["/ToUnicode"].get_object().get_data().decode("latin-1")
        for ch in text:
            cid = _cid_for(cmap, ch)
            if cid is None:
                continue
            assert cid != 0 and seen.setdefault(cid, ch) == ch, f"{ch!r} has no glyph of its own"
            name = f"cid{cid:05d}"
            if name in top.CharStrings:
                bounds[ch] = top.CharStrings[name].calcBounds(top.CharStrings)
    return bounds


def _stamp_fonts(reader: PdfReader) -> list[object]:
    found = []
    for page in reader.pages:
        for annot in page.get("/Annots", []):
            ap = annot.get_object().get("/AP")
            if ap is None:
                continue
            resources = ap["/N"].get_object().get("/Resources", {})
            stack = [resources]
            while stack:
                res = stack.pop().get_object()
                found.extend(res.get("/Font", {}).values())
                for xobj in res.get("/XObject", {}).values():
                    if "/Resources" in xobj.get_object():
                        stack.append(xobj.get_object()["/Resources"])
    return found


def _cid_for(to_unicode: str, ch: str) -> int | None:
    """The CID a ToUnicode CMap maps to `ch` (bfchar entries, as pyHanko writes them)."""
    target = ch.encode("utf-16-be").hex().upper()
    for line in to_unicode.splitlines():
        parts = line.strip().strip("<>").split("> <")
        if len(parts) == 2 and parts[1].upper() == target:
            return int(parts[0], 16)
    return None


def test_stamp_font_holds_real_outlines_for_every_name_character(chain: Chain) -> None:
    """The stamp is drawn, not just mapped to text: each CJK glyph embedded has an outline."""
    name = "欧阳娜娜买买提江"
    bounds = _embedded_glyph_bounds(chain.steps[2], name)
    assert set(bounds) == set(name)
    assert all(b is not None and b[2] > b[0] and b[3] > b[1] for b in bounds.values())


def test_stamp_subset_grows_with_names_and_starts_again_past_its_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = _GrowingSubset(str(default_font_path()))

    def chars(data: bytes) -> set[str]:
        return {chr(c) for c in TTFont(BytesIO(data))["cmap"].getBestCmap()}

    first = cache.covering("张三")
    assert {"张", "三", "2", "U"} <= chars(first)
    assert cache.covering("三张") is first  # nothing new: no new subset
    grown = chars(cache.covering("李四"))
    assert {"张", "三", "李", "四"} <= grown
    monkeypatch.setattr(pades, "MAX_SUBSET_CHARS", len(grown) + 1)
    restarted = chars(cache.covering("王五"))
    assert {"王", "五"} <= restarted and "张" not in restarted


def test_names_beyond_the_subset_cap_still_sign_and_read_back(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pades, "MAX_SUBSET_CHARS", 100)  # every new name restarts the subset
    data = chain.steps[0]
    names = ["诸葛亮", "司马懿", "Zoë Ångström"]
    for position, name in enumerate(names, start=1):
        data = sign_pdf(data, chain.ca.issue(f"cap-{position}", name), signer_name=name,
                        position=position, signed_at=SIGNED_AT)
    text = page_text(data, 1)
    assert all(name in text for name in names)
    reports = validate_pdf(data, [chain.ca.certificate])
    assert len(reports) == 3 and all(r.intact and r.valid and r.trusted for r in reports)


def test_stamp_slots_never_overlap() -> None:
    page = (0.0, 0.0, 595.0, 842.0)
    boxes = [stamp_box(page, n) for n in range(1, 31)]
    rects = [b for b in boxes if b is not None]
    assert len(rects) == 30
    for i, (ax1, ay1, ax2, ay2) in enumerate(rects):
        assert 0 <= ax1 < ax2 <= 595 and 0 <= ay1 < ay2 <= 842
        for bx1, by1, bx2, by2 in rects[i + 1:]:
            assert ax2 <= bx1 or bx2 <= ax1 or ay2 <= by1 or by2 <= ay1
    assert rects[0][1] < 100  # the first slot sits near the bottom of the page
    assert stamp_box(page, 1000) is None  # no room left: invisible signature, not an overlap
    with pytest.raises(ValueError):
        stamp_box(page, 0)


def test_signature_without_room_for_a_stamp_still_validates(chain: Chain) -> None:
    signed = sign_pdf(chain.steps[1], chain.ca.issue("u-7", "赵六"), signer_name="赵六",
                      position=1000, signed_at=SIGNED_AT)
    reports = validate_pdf(signed, [chain.ca.certificate])
    assert [r.field_name for r in reports] == ["Signature1", "Signature1000"]
    assert all(r.intact and r.valid and r.trusted and r.modification_ok for r in reports)


LONG_LATIN = "Bartholomew Alexander Montgomery-Fitzwilliam van der Berg-Oppenheimer III, Esq."
LONG_CHINESE = "欧阳娜娜·买买提江·阿卜杜热合曼·艾尔肯·司马相如"  # 26 characters, 76 UTF-8 bytes


@pytest.mark.parametrize("name", [LONG_LATIN, LONG_CHINESE], ids=["latin-79", "chinese-26"])
def test_a_name_too_long_for_a_common_name_is_folded(chain: Chain, name: str) -> None:
    assert len(name.encode()) > COMMON_NAME_MAX_BYTES
    cert = chain.ca.issue("u-long", name, "long@corp.example").certificate
    subject = cert.subject.native
    cn = subject["common_name"]
    assert len(cn.encode()) <= COMMON_NAME_MAX_BYTES and cn.endswith("…") and name.startswith(cn[:-1].rstrip())
    assert subject["name"] == name and subject_full_name(cert) == name
    assert "name" not in chain.ca.issue("u-1", "张三").certificate.subject.native  # short names: CN only


def test_a_long_name_signs_and_is_whole_in_the_signature_and_on_the_stamp(chain: Chain) -> None:
    data = chain.steps[0]
    for position, name in enumerate([LONG_LATIN, LONG_CHINESE], start=1):
        data = sign_pdf(data, chain.ca.issue(f"u-{position}", name), signer_name=name, position=position,
                        signed_at=SIGNED_AT)
    reports = validate_pdf(data, [chain.ca.certificate])
    assert [r.signer_name for r in reports] == [LONG_LATIN, LONG_CHINESE]
    assert all(r.intact and r.valid and r.trusted and r.modification_ok for r in reports)
    text = page_text(data, 1)
    assert " ".join(LONG_LATIN.split()) in " ".join(text.split())  # wrapped at spaces: the words, in order
    assert LONG_CHINESE in "".join(text.split())
    fields = PdfReader(BytesIO(data)).get_fields() or {}
    names = [fields[f]["/V"]["/Name"] for f in ("Signature1", "Signature2")]
    assert names == [LONG_LATIN, LONG_CHINESE]  # the signature dictionaries' /Name


@pytest.mark.parametrize("name", ["张三", "Zoë Ångström", LONG_LATIN, LONG_CHINESE, "A" * 200])
def test_stamp_lines_give_the_name_back(name: str) -> None:
    lines = stamp_lines(name).split("\n")
    assert (" " if " " in name else "").join(lines) == name
    assert len(lines) == 1 if len(name) <= 12 else len(lines) > 1


# ---- the installation CA ------------------------------------------------------------------


def test_ca_is_created_once_and_loaded_again(tmp_path: Path) -> None:
    first = InstallationCA.load_or_create(tmp_path / "ca")
    again = InstallationCA.load_or_create(tmp_path / "ca")
    assert again.certificate.dump() == first.certificate.dump()
    key_file = tmp_path / "ca" / BUNDLE_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key_file.read_bytes()
    public = (tmp_path / "ca" / CERT_FILE).read_bytes()
    assert b"PRIVATE" not in public and b"BEGIN CERTIFICATE" in public
    cert = first.certificate
    assert cert.ca and cert.self_signed == "maybe"
    assert cert.key_usage_value.native == {"key_cert_sign", "crl_sign"}
    lifetime = cert["tbs_certificate"]["validity"]["not_after"].native - \
        cert["tbs_certificate"]["validity"]["not_before"].native
    assert lifetime > dt.timedelta(days=3640)


def test_racing_first_starts_end_with_one_ca(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)

    def start() -> bytes:
        barrier.wait()
        return bytes(InstallationCA.load_or_create(tmp_path / "ca").certificate.dump())

    with ThreadPoolExecutor(8) as pool:
        certs = set(pool.map(lambda _: start(), range(8)))
    assert len(certs) == 1
    assert [p.name for p in (tmp_path / "ca").iterdir() if p.name.endswith(".tmp")] == []


def test_issued_certificate(chain: Chain) -> None:
    cred = chain.ca.issue("u-1", "张三", "zs@corp.example")
    cert: asn1_x509.Certificate = cred.certificate
    assert cert.subject.native["common_name"] == "张三"
    assert cert.issuer == chain.ca.certificate.subject
    assert cert.subject_alt_name_value.native == ["zs@corp.example"]
    assert cert.key_usage_value.native == {"digital_signature", "non_repudiation"}
    assert not cert.ca
    validity = cert["tbs_certificate"]["validity"]
    lifetime = validity["not_after"].native - validity["not_before"].native
    assert dt.timedelta(days=729) < lifetime < dt.timedelta(days=732)
    again = chain.ca.issue("u-1", "张三")
    assert again.certificate.serial_number != cert.serial_number
    assert again.certificate.public_key.dump() != cert.public_key.dump()  # a fresh key each time
    assert again.certificate.subject_alt_name_value is None


# ---- rendering and the sample -------------------------------------------------------------


def test_render_page_png(chain: Chain) -> None:
    png = render_page_png(chain.steps[-1], 1)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert abs(width - 595 * 1.5) <= 1 and abs(height - 842 * 1.5) <= 1
    assert 5_000 < len(png) < 5_000_000
    small = render_page_png(chain.steps[-1], 0, scale=0.5)
    width, height = struct.unpack(">II", small[16:24])
    assert abs(width - 595 * 0.5) <= 1 and abs(height - 842 * 0.5) <= 1


@pytest.mark.parametrize("index", [2, 99, -1])
def test_page_out_of_range(index: int) -> None:
    data = sample_contract()
    with pytest.raises(IndexError):
        render_page_png(data, index)
    with pytest.raises(IndexError):
        page_text(data, index)


def test_sample_contract_is_deterministic_and_readable() -> None:
    assert sample_contract() == sample_contract()
    assert sample_contract("Other") != sample_contract()
    data = sample_contract("Purchase Agreement", pages=3)
    assert check_pdf(data, 10_000_000) == 3
    assert "Purchase Agreement" in page_text(data, 0)
    assert "Supplier" in page_text(data, 0)
    assert "Page 3 of 3" in page_text(data, 2)
    assert not PdfReader(BytesIO(data)).is_encrypted
