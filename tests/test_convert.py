"""The converter interface: Gotenberg's HTTP API (against its simulator), LibreOffice's failure
modes (a hang is killed and refused), no converter at all, and what is refused before converting."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest

from connectors.convert.base import ConversionProblem, ConverterUnavailable, NoConverter, is_office
from connectors.convert.gotenberg import GotenbergConverter
from connectors.convert.libreoffice import LibreOfficeConverter
from connectors.convert.registry import build_converter
from signbridge.core.settings import Settings
from tests.office_files import chinese_docx
from tests.sim.gotenberg_sim import gotenberg


async def test_gotenberg_converts_and_its_failures_are_told_apart(settings: Settings) -> None:
    with gotenberg() as (sim, url):
        async with httpx.AsyncClient() as http:
            converter = build_converter(settings.model_copy(update={"gotenberg_url": url}), http)
            assert isinstance(converter, GotenbergConverter)
            pdf = await converter.to_pdf("合同.docx", chinese_docx())
            assert pdf.startswith(b"%PDF-") and sim.received[-1][0] == "合同.docx"
            with pytest.raises(ConversionProblem, match="could not be converted"):
                await converter.to_pdf("合同.xyz", b"data")  # Gotenberg's 400: the document's fault
            sim.mode = "queue_full"
            with pytest.raises(ConverterUnavailable) as busy:
                await converter.to_pdf("合同.docx", chinese_docx())
            assert busy.value.retry_after == 3.0  # retried after what Gotenberg asked for
            sim.mode = "timeout"
            with pytest.raises(ConversionProblem, match="timed out"):
                await converter.to_pdf("合同.docx", chinese_docx())
    async with httpx.AsyncClient() as http:  # the sim is gone: an outage, retried
        with pytest.raises(ConverterUnavailable, match="unreachable"):
            await GotenbergConverter(url, http, 5).to_pdf("合同.docx", chinese_docx())


async def test_a_hanging_libreoffice_is_killed_and_the_document_refused(tmp_path: Path) -> None:
    hang = tmp_path / "soffice"
    hang.write_text("#!/bin/sh\nsleep 60\n")
    hang.chmod(hang.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(ConversionProblem, match="took longer than 1 s"):
        await LibreOfficeConverter(str(hang), 1).to_pdf("合同.docx", chinese_docx())
    silent = tmp_path / "silent"  # exit code 0 and no output file: still a failure
    silent.write_text("#!/bin/sh\nexit 0\n")
    silent.chmod(silent.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(ConversionProblem, match="could not be converted"):
        await LibreOfficeConverter(str(silent), 5).to_pdf("合同.docx", chinese_docx())


async def test_without_a_converter_the_message_names_what_to_install() -> None:
    with pytest.raises(ConversionProblem) as err:
        await NoConverter().to_pdf("合同.docx", b"PK")
    assert "libreoffice-writer-nogui" in err.value.message and "SIGNBRIDGE_GOTENBERG_URL" in err.value.message


def test_what_is_refused_before_converting() -> None:
    assert not is_office("c.pdf", b"%PDF-1.7")
    assert is_office("合同.docx", chinese_docx())
    with pytest.raises(ConversionProblem, match="macros"):
        is_office("合同.docm", chinese_docx())
    with pytest.raises(ConversionProblem, match="macros"):  # a macro project inside, whatever the name
        import io
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("word/document.xml", "<w/>")
            z.writestr("word/vbaProject.bin", b"\0")
        is_office("合同.docx", buf.getvalue())
    with pytest.raises(ConversionProblem, match="password-protected"):
        is_office("合同.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + "EncryptionInfo".encode("utf-16-le"))
