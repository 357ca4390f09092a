"""Every error leaves as `{"error": {"code", "message"}}` with a fitting status, and every route
declares the errors it can answer (`responses(...)`), so the OpenAPI document is a contract a
client — and the schemathesis run in the tests — can hold the API to."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = {"Retry-After": str(retry_after)} if retry_after is not None else None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


WHY = {
    400: "Malformed input: not JSON, nested too deep, a field too long or of the wrong form",
    401: "Not authenticated: a missing or wrong API key, or a callback whose signature does not verify",
    403: "Not allowed, or a download link that is forged or expired",
    404: "No such request, file, page or configured platform",
    409: "Not possible in the request's current state",
    410: "The link no longer works",
    413: "The body is larger than this route accepts",
    414: "The URL is too long",
    422: "A parameter or field fails validation",
    429: "Too many requests (a one-time code a minute; a link locked after wrong codes); retry after `Retry-After`",
    431: "The request's headers are too large",
    502: "The e-signature provider did not answer; try again",
    503: "Temporal did not answer in time; retry after `Retry-After` seconds",
}
PLAIN_CODES = {404: "not_found", 405: "method_not_allowed"}  # Starlette's own: no such route, or method
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}}
# Answered by the request limits (api/limits.py) on any route, before the route runs.
ALWAYS = (413, 414, 431)


def responses(*statuses: int, media_type: str = "application/json") -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status with its reason and the error body (and
    `Retry-After` for 503). Pages that answer HTML pass `media_type="text/html"`."""
    declared: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, *ALWAYS}):
        declared[status] = {"description": WHY[status], "model": ErrorBody}
        if media_type != "application/json" and status not in ALWAYS:
            declared[status]["content"] = {media_type: {"schema": {"type": "string"}}}
        if status in (429, 503):
            declared[status]["headers"] = RETRY_AFTER
    return declared


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = getattr(exc, "code", None) or PLAIN_CODES.get(exc.status_code, f"http_{exc.status_code}")
        if isinstance(exc.__cause__, RecursionError):  # FastAPI parsing a body nested past the parser's limit
            code = "too_deep"
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors()[:5])
        return JSONResponse(error_body("invalid_request", problems), status_code=422)
