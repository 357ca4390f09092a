"""A Gotenberg stand-in: `POST /forms/libreoffice/convert` and `GET /health`, over real HTTP.

Documented behaviour kept: the file in a multipart part named `files`; one file answers
`application/pdf`; an extension LibreOffice does not take answers 400; a full queue 429; a
conversion past `--api-timeout` 503. The PDF it returns is a small generated one naming the file
(the real conversion is tested against real LibreOffice). `mode` switches the answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePath
from typing import Literal

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from signbridge.pdf.sample import sample_contract
from tests.sim.servers import serve

ALLOWED = {".doc", ".docx", ".odt", ".rtf", ".xls", ".xlsx", ".ods", ".ppt", ".pptx", ".ppsx", ".odp", ".txt"}


class GotenbergSim:
    def __init__(self) -> None:
        self.mode: Literal["ok", "queue_full", "timeout"] = "ok"
        self.received: list[tuple[str, int]] = []
        self.app = FastAPI()

        @self.app.get("/health")
        async def health() -> JSONResponse:
            return JSONResponse({"status": "up", "details": {"libreoffice": {"status": "up"}}})

        @self.app.post("/forms/libreoffice/convert")
        async def convert(request: Request) -> Response:
            form = await request.form()
            files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
            if not files:
                return Response("Invalid form data: no form file found for extensions: [...]", status_code=400)
            name = files[0].filename or ""
            self.received.append((name, len(await files[0].read())))
            if PurePath(name).suffix.lower() not in ALLOWED:
                return Response(f"Invalid form data: no form file found for extensions: {name}", status_code=400)
            if self.mode == "queue_full":
                return Response("The request queue is full. Please try again later.", status_code=429,
                                headers={"Retry-After": "3"})
            if self.mode == "timeout":
                return Response("Service Unavailable: context deadline exceeded (timeout)", status_code=503)
            return Response(sample_contract("Converted by Gotenberg"), media_type="application/pdf")


@contextmanager
def gotenberg() -> Iterator[tuple[GotenbergSim, str]]:
    sim = GotenbergSim()
    with serve(sim.app) as url:
        yield sim, url
