"""Template and anchor PDFs built in code (reportlab for text and form fields, pyHanko for the
empty signature fields), so the tests can read the exact positions back."""

from __future__ import annotations

from io import BytesIO

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.sign import fields
from pypdf import PdfReader, PdfWriter
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen import canvas

pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))

TEXT_FIELDS = {"客户名称": (150, 700, 350, 720), "金额": (150, 660, 260, 680)}
SLOTS = {"sign:甲方": (72, 200, 232, 248), "sign:乙方": (320, 200, 480, 248)}


def _canvas(buf: BytesIO, lines: list[tuple[float, float, str]], pages: int = 1) -> canvas.Canvas:
    c = canvas.Canvas(buf, pagesize=A4)
    for page in range(pages):
        c.setFont("STSong-Light", 14)
        for x, y, text in lines if page == 0 else []:
            c.drawString(x, y, text)
        if page < pages - 1:
            c.showPage()
    return c


def template_pdf(text_fields: dict[str, tuple[float, float, float, float]] | None = None,
                 slots: dict[str, tuple[float, float, float, float]] | None = None) -> bytes:
    text_fields = TEXT_FIELDS if text_fields is None else text_fields
    slots = SLOTS if slots is None else slots
    buf = BytesIO()
    c = _canvas(buf, [(72, 770, "销售合同"), (72, 705, "客户名称："), (72, 665, "金额：")])
    for name, (x1, y1, x2, y2) in text_fields.items():
        c.acroForm.textfield(name=name, x=x1, y=y1, width=x2 - x1, height=y2 - y1, borderWidth=0)
    c.save()
    writer = IncrementalPdfFileWriter(BytesIO(buf.getvalue()))
    for name, box in slots.items():
        fields.append_signature_field(writer, fields.SigFieldSpec(name, on_page=0, box=tuple(int(v) for v in box)))
    out = BytesIO()
    writer.write(out)
    flat = BytesIO()
    PdfWriter(clone_from=PdfReader(BytesIO(out.getvalue()))).write(flat)
    return flat.getvalue()


def anchor_pdf(lines: list[tuple[float, float, str]], pages: int = 1) -> bytes:
    buf = BytesIO()
    c = _canvas(buf, lines, pages)
    c.save()
    return buf.getvalue()
