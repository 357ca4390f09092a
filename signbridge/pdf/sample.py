"""A small, valid contract PDF generated in code, for tests and the `signbridge demo` command.

Written as hand-made PDF objects rather than through a library so the bytes are fully
deterministic (no timestamps, no random /ID): the same arguments always give the same file,
which keeps SHA-256 based checks and recorded test expectations stable.
"""

from __future__ import annotations

import hashlib
import textwrap

PAGE_WIDTH = 595  # A4 in points
PAGE_HEIGHT = 842

_CLAUSES = [
    "The Supplier agrees to deliver the goods described in Schedule A to the Customer "
    "at the agreed address, in the agreed quantities and within the agreed time.",
    "The Customer agrees to pay the price stated in Schedule B within thirty (30) days "
    "of receiving a correct invoice. Late payments carry interest at the statutory rate.",
    "Each party keeps the other party's confidential information secret and uses it only "
    "to perform this contract, during its term and for three years after it ends.",
    "Either party may end this contract with thirty days' written notice, or at once if the "
    "other party materially breaches it and does not remedy the breach within fourteen days.",
    "This contract is governed by the laws of the place where the Supplier is registered. "
    "Disputes are first discussed in good faith between the parties' representatives.",
    "This contract is signed electronically. Each electronic signature has the same effect "
    "as a handwritten one, and the signed PDF is the authoritative copy.",
]


def _escape(text: str) -> str:
    """Escape a Latin-1 string for a PDF literal string."""
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _page_lines(title: str, page_no: int, pages: int) -> list[tuple[int, str]]:
    """(font size, text) lines for one page: the title on page 1, clauses, signature note last."""
    lines: list[tuple[int, str]] = []
    if page_no == 1:
        lines.append((18, title))
        lines.append((11, "between the Supplier and the Customer named in the cover message."))
        lines.append((11, ""))
    per_page = max(1, -(-len(_CLAUSES) // pages))  # ceiling division
    start = (page_no - 1) * per_page
    for offset, clause in enumerate(_CLAUSES[start:start + per_page]):
        lines.append((12, f"{start + offset + 1}. Clause {start + offset + 1}"))
        lines.extend((11, part) for part in textwrap.wrap(clause, 86))
        lines.append((11, ""))
    if page_no == pages:
        lines.append((11, "Signatures of the parties appear below."))
    lines.append((9, f"Page {page_no} of {pages}"))
    return lines


def _content_stream(title: str, page_no: int, pages: int) -> bytes:
    ops = ["BT", "72 770 Td"]
    for size, text in _page_lines(title, page_no, pages):
        ops.append(f"/F1 {size} Tf")
        ops.append(f"({_escape(text)}) Tj")
        ops.append(f"0 -{size + 6} Td")
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


def sample_contract(title: str = "Sample Contract", pages: int = 2) -> bytes:
    """Return a small unencrypted `pages`-page PDF with readable English contract text.

    The title must be Latin-1 (the sample uses the standard Helvetica font, no embedding).
    """
    if pages < 1:
        raise ValueError("a sample contract needs at least one page")
    title.encode("latin-1")  # fail early, with the codec's clear message, on non-Latin-1 titles

    # object numbers: 1 catalog, 2 page tree, 3 font, then (page, content) pairs
    page_ids = [4 + 2 * i for i in range(pages)]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: ("<< /Type /Pages /Kids [" + " ".join(f"{p} 0 R" for p in page_ids)
            + f"] /Count {pages} >>").encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for i, page_id in enumerate(page_ids):
        stream = _content_stream(title, i + 1, pages)
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>"
        ).encode()
        objects[page_id + 1] = (
            f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream"
        )

    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets: dict[int, int] = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += f"{num} 0 obj\n".encode() + objects[num] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objects) + 1
    out += f"xref\n0 {size}\n0000000000 65535 f \n".encode()
    for num in range(1, size):
        out += f"{offsets[num]:010d} 00000 n \n".encode()
    # A fixed /ID derived from the arguments: deterministic, yet distinct per document.
    doc_id = hashlib.md5(f"{title}\x00{pages}".encode(), usedforsecurity=False).hexdigest()
    out += (
        f"trailer\n<< /Size {size} /Root 1 0 R /ID [<{doc_id}> <{doc_id}>] >>\n"
        f"startxref\n{xref_at}\n%%EOF\n"
    ).encode()
    return bytes(out)
