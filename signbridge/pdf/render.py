"""Page rendering and text extraction with pdfium (pypdfium2).

pdfium is a different PDF engine from the one that writes our signatures (pyHanko), so
rendering a stamped page and reading its text back is an independent check that the stamp and
its embedded CJK font work in a real viewer, not merely that the file is well-formed.
"""

from __future__ import annotations

import struct
import threading
import zlib

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

# pdfium is not thread-safe, and callers run these functions in worker threads.
_PDFIUM_LOCK = threading.Lock()


def _check_index(doc: pdfium.PdfDocument, page_index: int) -> None:
    count = len(doc)
    if not 0 <= page_index < count:
        raise IndexError(f"page {page_index} out of range: the document has {count} page(s)")


def _png(width: int, height: int, stride: int, rgb: bytes) -> bytes:
    """Encode 8-bit RGB rows as PNG (kept in-house: Pillow is not a dependency)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row_len = width * 3
    raw = b"".join(b"\x00" + rgb[y * stride:y * stride + row_len] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def render_page_png(data: bytes, page_index: int, scale: float = 1.5) -> bytes:
    """Render one page (0-based), annotations and signature stamps included, to PNG bytes.

    `scale` 1.0 is 72 dpi. Raises IndexError for a page out of range.
    """
    with _PDFIUM_LOCK:
        doc = pdfium.PdfDocument(data)
        try:
            doc.init_forms()  # stamps are form widgets, drawn only with forms (init before len())
            _check_index(doc, page_index)
            page = doc[page_index]
            try:
                bitmap = page.render(
                    scale=scale,
                    force_bitmap_format=pdfium_c.FPDFBitmap_BGR,
                    rev_byteorder=True,  # pdfium writes RGB order instead of BGR
                )
                width, height, stride = bitmap.width, bitmap.height, bitmap.stride
                pixels = bytes(bitmap.buffer)
                bitmap.close()
            finally:
                page.close()
        finally:
            doc.close()
    return _png(width, height, stride, pixels)


def page_text(data: bytes, page_index: int) -> str:
    """The text of one page (0-based) as pdfium maps it back to Unicode, stamps included.

    Signature stamps live in annotation appearances, not in the page's content stream, so the
    page is flattened first (in memory only) to read what a person looking at it would see.
    Raises IndexError for a page out of range.
    """
    with _PDFIUM_LOCK:
        doc = pdfium.PdfDocument(data)
        try:
            doc.init_forms()  # flattening needs the form environment, set up before len()
            _check_index(doc, page_index)
            text = _read_page(doc, page_index)
        finally:
            doc.close()
    return text


def _read_page(doc: pdfium.PdfDocument, index: int) -> str:
    """One page's text, stamps included: a document with a form is flattened first (its
    `formenv` is None when it has none, so no stamps to flatten)."""
    if doc.formenv is not None:
        flat = doc[index]
        flat.flatten()
        flat.close()  # pdfium only sees the flattened content in a fresh page handle
    page = doc[index]
    try:
        textpage = page.get_textpage()
        try:
            text: str = textpage.get_text_bounded()
        finally:
            textpage.close()
    finally:
        page.close()
    return text


def page_texts(data: bytes, limit: int | None = None) -> list[str]:
    """The text of every page, as `page_text` reads one (stamps included), with the document
    opened once; each page's text cut to `limit` characters. A page pdfium cannot read is ""."""
    texts: list[str] = []
    with _PDFIUM_LOCK:
        doc = pdfium.PdfDocument(data)
        try:
            doc.init_forms()
            for index in range(len(doc)):
                try:
                    text = _read_page(doc, index)
                except pdfium.PdfiumError:
                    text = ""
                texts.append(text[:limit] if limit else text)
        finally:
            doc.close()
    return texts
