"""Up-front checks on a document before anyone is asked to sign it.

A bad file is the sender's input, not a system failure: the workflow turns `DocumentProblem`
into a clear chat message (Chinese, then English) and ends the request as REJECTED. So each
problem carries a stable `code` for programs and a `message` for people.

What passes here can be signed: the last check is a dry run of exactly what the built-in
provider does for each signer (pyHanko appends a signature with its stamp as an incremental
update), with a throwaway key. Without it, a file that pypdf reads but pyHanko cannot (a looping
xref `/Prev` chain, a certification signature that forbids changes, a field named like ours
already filled) was accepted, and then every signer's attempt failed until the deadline.

Active content is refused, not cleaned: a signature over cleaned bytes would be over a document
the sender never sent, and a contract has no need of scripts, launch actions, attachments or
forms that submit data somewhere. The message names what was found.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from io import BytesIO

from pyhanko.sign.general import SigningError
from pypdf import PdfReader
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, PdfObject

from signbridge.pdf.pades import sign_pdf
from signbridge.pdf.pki import InstallationCA, SignerCredential

PROBLEM_CODES = ("empty", "too_large", "not_pdf", "encrypted", "corrupt", "unsignable", "locked", "active_content")

# Kinds of active content, in the order a message lists them: (Chinese, English).
ACTIVE_CONTENT = {
    "javascript": ("JavaScript 脚本", "JavaScript"),
    "launch": ("启动其他程序的动作", "a launch action that starts a program"),
    "embedded_file": ("嵌入的文件", "embedded files"),
    "file_attachment": ("文件附件批注", "file attachment annotations"),
    "xfa": ("XFA 表单", "an XFA form"),
    "submit_form": ("提交表单数据的动作", "a form-submit action"),
    "import_data": ("导入数据的动作", "an import-data action"),
    "rich_media": ("RichMedia 多媒体内容", "rich media (Flash, video)"),
}

logger = logging.getLogger(__name__)


class DocumentProblem(ValueError):
    """The document cannot be signed; `message` says why in words the sender understands.

    `found` lists the kinds of active content (keys of ACTIVE_CONTENT) for "active_content".
    """

    def __init__(self, code: str, message: str, found: tuple[str, ...] = ()) -> None:
        if code not in PROBLEM_CODES:
            raise ValueError(f"unknown document problem code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.found = found

    def __reduce__(self) -> tuple[type[DocumentProblem], tuple[str, str, tuple[str, ...]]]:
        """Pickles whole: `check_pdf` runs in the signing pool and raises this back across processes."""
        return (DocumentProblem, (self.code, self.message, self.found))


def _megabytes(n: int) -> str:
    """The limit in MB as people write it: "20", "0.5"."""
    mb = round(n / (1024 * 1024), 2)
    return str(int(mb)) if mb == int(mb) else str(mb)


def check_pdf(data: bytes, max_bytes: int) -> int:
    """Return the page count of a signable PDF, or raise DocumentProblem.

    Checks run cheapest first: size, magic bytes, a strict pypdf parse of every page and its
    content stream, a walk over every object reachable from the catalog for active content,
    and last the dry-run signature.
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
        found = active_content(reader)
    except Exception as e:  # any parse failure of untrusted input means "corrupt" to the sender
        logger.info("PDF rejected as corrupt while reading pages: %r", e)
        raise corrupt from e
    if pages == 0:
        raise DocumentProblem("empty", "PDF 文件没有任何页面（The PDF has no pages）")
    if found:
        zh = "、".join(ACTIVE_CONTENT[k][0] for k in found)
        en = ", ".join(ACTIVE_CONTENT[k][1] for k in found)
        raise DocumentProblem(
            "active_content",
            f"PDF 含有可执行或外带的内容：{zh}。为安全起见不能签署，请另存或打印为普通 PDF 后重新发送"
            f"（The PDF contains active content: {en}. For safety it cannot be signed; save or print it as a "
            "plain PDF and send it again）",
            found=found,
        )
    _dry_run(data)
    return pages


def _kinds(obj: DictionaryObject) -> set[str]:
    """The kinds of active content one dictionary (an action, annotation, name tree, form…) is.

    Short keys count only where they have their PDF meaning (`/JS` in an action, `/EF` in a file
    specification), since resource dictionaries may use any name for a font or an image.
    """
    action, subtype = obj.get("/S"), obj.get("/Subtype")
    kinds = set()
    if action == "/JavaScript" or (action is not None and "/JS" in obj) or "/JavaScript" in obj:
        kinds.add("javascript")
    if action == "/Launch":
        kinds.add("launch")
    if ("/EmbeddedFiles" in obj or obj.get("/Type") == "/EmbeddedFile"
            or ("/EF" in obj and ("/F" in obj or "/UF" in obj))):
        kinds.add("embedded_file")
    if subtype == "/FileAttachment":
        kinds.add("file_attachment")
    if "/XFA" in obj:
        kinds.add("xfa")
    if action == "/SubmitForm":
        kinds.add("submit_form")
    if action == "/ImportData":
        kinds.add("import_data")
    if subtype == "/RichMedia" or "/RichMediaContent" in obj:
        kinds.add("rich_media")
    return kinds


def active_content(reader: PdfReader) -> tuple[str, ...]:
    """Kinds of active content anywhere a viewer could reach it from the catalog (ACTIVE_CONTENT order).

    Walks every object reachable from the document catalog — the open action, name trees,
    pages, annotations and their actions, the form — so content compressed in object streams
    or spelled with `#xx` name escapes is found as well as plain text would be.
    """
    found: set[str] = set()
    seen: set[tuple[int, int]] = set()
    stack: list[PdfObject | None] = [reader.trailer.raw_get("/Root")]
    while stack:
        obj = stack.pop()
        if isinstance(obj, IndirectObject):
            if (obj.idnum, obj.generation) in seen:
                continue
            seen.add((obj.idnum, obj.generation))
            obj = obj.get_object()
        if isinstance(obj, DictionaryObject):  # streams too: their dictionaries
            found |= _kinds(obj)
            stack.extend(obj.raw_get(key) for key in obj)
        elif isinstance(obj, ArrayObject):
            stack.extend(obj)
    return tuple(kind for kind in ACTIVE_CONTENT if kind in found)


@functools.cache
def _dry_run_credential() -> SignerCredential:
    return InstallationCA.in_memory("SignBridge dry run").issue("dry-run", "SignBridge")


def _dry_run(data: bytes) -> None:
    """Sign `data` the way the built-in provider will, with a throwaway key, and discard the result."""
    try:
        sign_pdf(data, _dry_run_credential(), signer_name="SignBridge", position=1,
                 signed_at=dt.datetime.now(dt.UTC))
    except SigningError as e:
        logger.info("PDF rejected: pyHanko cannot sign it: %r", e)
        if "forbids all changes" in str(e):
            raise DocumentProblem(
                "locked",
                "PDF 带有禁止任何修改的认证签名，不能再签署，请发送未签名的原件（The PDF carries a certification "
                "signature that forbids any change, so it cannot be signed again; send the unsigned original）",
            ) from e
        raise _unsignable() from e
    except Exception as e:  # whatever pyHanko cannot sign, no signer will be able to either
        logger.info("PDF rejected: pyHanko cannot sign it: %r", e)
        raise _unsignable() from e


def _unsignable() -> DocumentProblem:
    return DocumentProblem(
        "unsignable",
        "PDF 文件内部结构有误，无法在其上添加签名，请重新导出 PDF 后发送（The PDF's internal structure is "
        "broken, so no signature can be added to it; export the PDF again and send it）",
    )
