"""Up-front checks on a document before anyone is asked to sign it.

A bad file is the sender's input, not a system failure: the workflow turns `DocumentProblem`
into a clear chat message (Chinese, then English) and ends the request as REJECTED. So each
problem carries a stable `code` for programs and a `message` for people.
"""

from __future__ import annotations

import logging
from io import BytesIO

from pypdf import PdfReader

PROBLEM_CODES = ("empty", "too_large", "not_pdf", "encrypted", "corrupt")

logger = logging.getLogger(__name__)


class DocumentProblem(ValueError):
    """The document cannot be signed; `message` says why in words the sender understands."""

    def __init__(self, code: str, message: str) -> None:
        if code not in PROBLEM_CODES:
            raise ValueError(f"unknown document problem code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message


def _megabytes(n: int) -> str:
    """The limit in MB as people write it: "20", "0.5"."""
    mb = round(n / (1024 * 1024), 2)
    return str(int(mb)) if mb == int(mb) else str(mb)


def check_pdf(data: bytes, max_bytes: int) -> int:
    """Return the page count of a signable PDF, or raise DocumentProblem.

    Checks run cheapest first: size, magic bytes, then a strict pypdf parse of every page and
    its content stream, so a file that opens here also opens for the signer and for pyHanko.
    """
    if not data:
        raise DocumentProblem("empty", "文件是空的（The file is empty）")
    if len(data) > max_bytes:
        mb = _megabytes(max_bytes)
        raise DocumentProblem(
            "too_large",
            f"文件超过 {mb} MB 的大小上限（The file is larger than the {mb} MB limit）",
        )
    if not data.startswith(b"%PDF-"):
        raise DocumentProblem(
            "not_pdf",
            "文件不是 PDF，请转换为 PDF 后再发送（The file is not a PDF; convert it to PDF and send it again）",
        )
    corrupt = DocumentProblem(
        "corrupt", "PDF 文件已损坏，无法打开（The PDF is damaged and cannot be opened; export it again and send it）"
    )
    try:
        reader = PdfReader(BytesIO(data), strict=True)
        encrypted = reader.is_encrypted
    except Exception as e:  # pypdf raises many exception types on malformed input
        logger.info("PDF rejected as corrupt while opening: %r", e)
        raise corrupt from e
    if encrypted:
        raise DocumentProblem(
            "encrypted",
            "文件已加密，无法签署（The PDF is password-protected; remove the password and send it again）",
        )
    try:
        pages = len(reader.pages)
        for page in reader.pages:
            contents = page.get_contents()
            if contents is not None:
                _ = contents.operations  # parsing every operator is the check
    except Exception as e:  # any parse failure of untrusted input means "corrupt" to the sender
        logger.info("PDF rejected as corrupt while reading pages: %r", e)
        raise corrupt from e
    if pages == 0:
        raise DocumentProblem("empty", "PDF 文件没有任何页面（The PDF has no pages）")
    return pages
