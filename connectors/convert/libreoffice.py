"""LibreOffice headless on this host: `soffice --headless --convert-to pdf`.

Each conversion gets its own user profile directory (`-env:UserInstallation`): with a shared
profile, simultaneous conversions lose their output now and then — sometimes with exit code 0 —
so success is judged by the output file (present, a PDF), never by the exit code alone. A
conversion that runs past its timeout is killed with its whole process group (soffice starts a
child) and refused with a clear message: it is the document that hangs it, retrying won't help.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path

from connectors.convert.base import ConversionProblem, extension

CANDIDATES = ("soffice", "libreoffice")


def find_soffice(configured: str = "") -> str | None:
    if configured:
        return configured if Path(configured).exists() else shutil.which(configured)
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


class LibreOfficeConverter:
    name = "libreoffice"

    def __init__(self, soffice: str, timeout_seconds: float) -> None:
        self.soffice = soffice
        self.timeout = timeout_seconds

    async def to_pdf(self, name: str, data: bytes) -> bytes:
        with tempfile.TemporaryDirectory(prefix="sb-convert-") as tmp:
            work = Path(tmp)
            source = work / f"input{extension(name)}"
            source.write_bytes(data)
            out = work / "out"
            argv = [self.soffice, f"-env:UserInstallation={(work / 'profile').as_uri()}", "--headless", "--norestore",
                    "--nolockcheck", "--convert-to", "pdf", "--outdir", str(out), str(source)]
            proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                                                        env={**os.environ, "HOME": tmp})
            try:
                output, _ = await asyncio.wait_for(proc.communicate(), self.timeout)
            except TimeoutError:
                _kill(proc)
                await proc.wait()
                raise ConversionProblem(
                    f"{name} 转换超时（超过 {self.timeout:.0f} 秒），请先转换为 PDF 再发送"
                    f"（Converting {name} took longer than {self.timeout:.0f} s; convert it to PDF and send that)"
                ) from None
            result = out / "input.pdf"
            if not result.exists() or not result.read_bytes().startswith(b"%PDF-"):
                detail = output.decode(errors="replace").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
                raise ConversionProblem(f"{name} 无法转换为 PDF，文件可能已损坏或设有密码（{name} could not be "
                                        "converted to PDF; it may be damaged or password-protected: "
                                        f"{detail[0][:200]}）")
            return result.read_bytes()


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
