"""The certificate of completion as a PDF: laid-out bilingual text, signed by the installation CA.

What goes into it is decided by the caller (the request's record and audit trail); this module
only lays out lines on A4 pages and signs the result. The text is drawn with the same embedded
CJK font as the signature stamps (`signbridge.pdf.pades`), shaped by HarfBuzz and embedded as a
subset with a ToUnicode map, so 张三 renders in any viewer and extracts as text — a certificate
whose Chinese came out as empty boxes, or could not be searched, would be worth little.

The signature is an ordinary PAdES signature by an end-entity certificate the installation CA
issues for SignBridge itself (the CA's own key only certifies), so the certificate validates
offline against `/ca.pem` like every signed document this installation produces.

Synchronous and CPU-bound: call from a worker thread.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.api import FontEngine
from pyhanko.pdf_utils.writer import PageObject, PdfFileWriter

from signbridge.pdf.pades import sign_pdf, stamp_font
from signbridge.pdf.pki import InstallationCA

PAGE_WIDTH, PAGE_HEIGHT = 595.0, 842.0  # A4 in points
MARGIN_X = 50.0
MARGIN_TOP = 60.0
# The last page keeps the bottom free for the signature stamp (`pades.stamp_box` slot 1: 36-84 pt).
MARGIN_BOTTOM = 100.0
LEADING = 1.35
FONT_KEY = "/F1"
SIGNER_ID = "signbridge:certificate-of-completion"
SIGNER_NAME = "SignBridge 签署完成证明 Certificate of Completion"


@dataclass(frozen=True)
class Line:
    """One paragraph: wrapped to the page width, `indent` points from the left margin."""

    text: str
    size: float = 9.0
    indent: float = 0.0
    space_before: float = 0.0
    grey: bool = False


class _Measure:
    """Advance widths per character from the shaping engine (cached): enough to wrap lines."""

    def __init__(self, font: FontEngine) -> None:
        self.font = font
        self._widths: dict[str, float] = {}

    def width(self, text: str, size: float) -> float:
        total = 0.0
        for ch in text:
            if ch not in self._widths:
                self._widths[ch] = self.font.shape(ch).x_advance
            total += self._widths[ch]
        return total * size


def _wrap(text: str, width: float, size: float, measure: _Measure) -> list[str]:
    """Greedy wrapping: break after the last space that fits (Latin words stay whole), else
    anywhere (CJK text, hashes, long user agents)."""
    lines: list[str] = []
    rest = text
    while rest:
        if measure.width(rest, size) <= width:
            lines.append(rest)
            break
        cut, used = 0, 0.0
        for i, ch in enumerate(rest):
            used += measure.width(ch, size)
            if used > width:
                break
            cut = i + 1
        cut = max(cut, 1)
        space = rest.rfind(" ", 0, cut + 1)
        if space > 0 and rest[cut:cut + 1] not in ("", " ") and not _wide(rest[cut - 1]):
            cut = space
        lines.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return lines or [""]


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def layout_pdf(lines: list[Line], *, title: str, footer: str, font_path: Path | None = None) -> bytes:
    """`lines` on as many A4 pages as they need; every page carries `footer` and its number."""
    writer = PdfFileWriter(stream_xrefs=False)
    all_text = "".join(line.text for line in lines) + footer + "0123456789/ 第页"
    font = stamp_font(font_path, 9, all_text).create_font_engine(writer)
    measure = _Measure(font)
    resources = generic.DictionaryObject({
        generic.pdf_name("/Font"): generic.DictionaryObject({generic.pdf_name(FONT_KEY): font.as_resource()})})
    usable = PAGE_WIDTH - 2 * MARGIN_X
    pages: list[list[bytes]] = [[]]
    y = PAGE_HEIGHT - MARGIN_TOP

    def draw(text: str, x: float, y: float, size: float, grey: bool = False) -> bytes:
        colour = b"0.35 g" if grey else b"0 g"
        return b"BT %s %s %g Tf %g %g Td %s ET" % (colour, FONT_KEY.encode(), size, x, y, font.shape(text).graphics_ops)

    for line in lines:
        y -= line.space_before
        for part in _wrap(line.text, usable - line.indent, line.size, measure):
            y -= line.size * LEADING
            if y < MARGIN_BOTTOM:
                pages.append([])
                y = PAGE_HEIGHT - MARGIN_TOP - line.size * LEADING
            pages[-1].append(draw(part, MARGIN_X + line.indent, y, line.size, line.grey))
    for number, ops in enumerate(pages, start=1):
        ops.append(draw(f"{footer}    第 {number}/{len(pages)} 页 Page {number}/{len(pages)}", MARGIN_X, 24, 7,
                        grey=True))
        contents = writer.add_object(generic.StreamObject(stream_data=b"\n".join(ops)))
        writer.insert_page(PageObject(contents, (0, 0, PAGE_WIDTH, PAGE_HEIGHT), resources))
    writer.set_info(generic.DictionaryObject({generic.pdf_name("/Title"): generic.TextStringObject(title),
                                              generic.pdf_name("/Producer"): generic.TextStringObject("SignBridge")}))
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def signed_certificate(lines: list[Line], ca: InstallationCA, *, title: str, footer: str,
                       issued_at: dt.datetime, font_path: Path | None = None) -> bytes:
    """The laid-out certificate, PAdES-signed by SignBridge's own certificate from `ca`."""
    pdf = layout_pdf(lines, title=title, footer=footer, font_path=font_path)
    credential = ca.issue(SIGNER_ID, SIGNER_NAME)
    return sign_pdf(pdf, credential, signer_name="SignBridge", position=1, signed_at=issued_at,
                    reason="签署完成证明 Certificate of completion", font_path=font_path)
