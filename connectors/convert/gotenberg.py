"""Gotenberg's HTTP API (`SIGNBRIDGE_GOTENBERG_URL`), the production choice: LibreOffice in its own
container, scaled with replicas (each converts one file at a time).

`POST /forms/libreoffice/convert`, multipart, the file in a part named `files`; one file answers
`application/pdf`. A 400 is the document's fault (refused with Gotenberg's reason); a 429 (its
queue is full), another 5xx or no connection is an outage and retried. A 503 after Gotenberg's
own `--api-timeout`, or no answer within ours, means the document hangs LibreOffice: refused.
"""

from __future__ import annotations

import httpx

from connectors.convert.base import ConversionProblem, ConverterUnavailable

CONVERT_PATH = "/forms/libreoffice/convert"


class GotenbergConverter:
    name = "gotenberg"

    def __init__(self, base_url: str, http: httpx.AsyncClient, timeout_seconds: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.timeout = timeout_seconds

    async def to_pdf(self, name: str, data: bytes) -> bytes:
        hang = ConversionProblem(f"{name} 转换超时，请先转换为 PDF 再发送（Converting {name} timed out; convert it to "
                                 "PDF and send that）")
        try:
            resp = await self.http.post(self.base_url + CONVERT_PATH, files={"files": (name, data)},
                                        timeout=self.timeout)
        except httpx.ReadTimeout as e:
            raise hang from e
        except httpx.HTTPError as e:
            raise ConverterUnavailable(f"Gotenberg unreachable ({type(e).__name__})") from e
        if resp.status_code == 200 and resp.content.startswith(b"%PDF-"):
            return resp.content
        if resp.status_code == 400:
            raise ConversionProblem(f"{name} 无法转换为 PDF（{name} could not be converted: {resp.text[:200]}）")
        if resp.status_code == 503 and "timeout" in resp.text.lower():
            raise hang
        raise ConverterUnavailable(f"Gotenberg answered HTTP {resp.status_code}",
                                   retry_after=_seconds(resp.headers.get("Retry-After")))


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
