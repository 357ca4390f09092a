"""One converter interface, two backends (`libreoffice.py` headless on this host, `gotenberg.py`
over HTTP), and what is checked before either is asked: is this an Office file at all, does it
carry macros, is it password-protected.

The checks look at the bytes, not only the name: a `.docx` that is really an encrypted OLE2
container (what Word writes for "Encrypt with password") is refused before a converter could hang
on its password prompt, and a macro project inside an OOXML or ODF zip is refused whatever the
file is called. A macro could run at conversion time, and the PDF would not show what it does.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePath
from typing import Protocol

OFFICE_EXTENSIONS = frozenset({".docx", ".doc", ".xlsx", ".xls", ".pptx", ".ppt", ".ppsx", ".odt", ".ods", ".odp",
                               ".rtf"})
MACRO_EXTENSIONS = frozenset({".docm", ".dotm", ".xlsm", ".xltm", ".xlsb", ".pptm", ".potm", ".ppsm"})
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_OOXML = "EncryptionInfo".encode("utf-16-le")  # the OLE2 stream an encrypted .docx/.xlsx holds
_MACRO_PARTS = ("vbaproject.bin", "basic/", "scripts/")


class ConversionProblem(Exception):
    """The document cannot be converted (the sender must fix it): shown in the chat, REJECTED."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConverterUnavailable(Exception):
    """The converter is down or busy: retried (and STUCK past the step's retry window)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Converter(Protocol):
    name: str

    async def to_pdf(self, name: str, data: bytes) -> bytes:
        """The PDF of `data` (an Office file called `name`); `ConversionProblem` when the document
        can't be converted, `ConverterUnavailable` when trying again later may work."""


def extension(name: str) -> str:
    return PurePath(name.strip().lower()).suffix


def is_office(name: str, data: bytes) -> bool:
    """True for a file to convert; raises `ConversionProblem` for one that must not be converted."""
    ext = extension(name)
    if ext in MACRO_EXTENSIONS:
        raise ConversionProblem(_MACROS.format(name=name))
    if data.startswith(b"%PDF-") or ext not in OFFICE_EXTENSIONS:
        return False
    if data.startswith(_OLE2) and _ENCRYPTED_OOXML in data:
        raise ConversionProblem(f"{name} 设有密码，无法转换；请去掉密码后再发送"
                                f"（{name} is password-protected; remove the password and send it again）")
    if data.startswith(b"PK"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                parts = [info.filename.lower() for info in archive.infolist()]
        except (zipfile.BadZipFile, ValueError) as e:
            raise ConversionProblem(f"{name} 已损坏，无法打开（{name} is damaged and cannot be opened）") from e
        if any(part.rsplit("/", 1)[-1] == "vbaproject.bin" or part.startswith(_MACRO_PARTS[1:]) for part in parts):
            raise ConversionProblem(_MACROS.format(name=name))
    return True


_MACROS = ("{name} 含有宏，出于安全不予转换；请另存为不含宏的文件（如 .docx）或 PDF 后再发送"
           "（{name} contains macros, which are never converted; save it without macros, e.g. as .docx, or as PDF）")


def pdf_name(name: str) -> str:
    """`合同.docx` → `合同.pdf`."""
    stem = PurePath(name).stem or "document"
    return f"{stem}.pdf"


NO_CONVERTER = ("服务器未安装 Office 转换组件，无法转换 {name}：请管理员安装 LibreOffice"
                "（Debian/Ubuntu: apt-get install "
                "libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui fonts-noto-cjk）或设置 "
                "SIGNBRIDGE_GOTENBERG_URL；也可以先转换为 PDF 再发送（{name} cannot be converted: no Office converter "
                "is installed. An administrator can install LibreOffice (Debian/Ubuntu: apt-get install "
                "libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui fonts-noto-cjk) or set "
                "SIGNBRIDGE_GOTENBERG_URL; or send it as PDF）")


class NoConverter:
    """What a worker without LibreOffice and without Gotenberg has: a clear refusal naming both."""

    name = "none"

    async def to_pdf(self, name: str, data: bytes) -> bytes:
        raise ConversionProblem(NO_CONVERTER.format(name=name))
