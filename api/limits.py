"""Bounds on every request, checked before any route runs: URL length (414), header size (431)
and body size (413, from `Content-Length` at once, else while the body streams in).

uvicorn's httptools parser (the default, for speed) has no header limit of its own and no
server bounds the body, so without this a single request could make a route parse megabytes.
Pure ASGI rather than Starlette's body-limit middleware so that every refusal has the one error
shape of `api/errors.py`. The routes' own, smaller limits (a chat platform's `max_body`) still
apply inside these.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body

MAX_URL_BYTES = 8 * 1024  # path and query; a signed download link with a long CJK name is ~3 KB
MAX_HEADER_BYTES = 16 * 1024  # all names and values together, as h11's default
MAX_HEADERS = 100
MAX_BODY_BYTES = 1024 * 1024  # every JSON or form body; uploads get their own limit (see `create_app`)


class BodyTooLarge(HTTPException):
    """Raised from `receive` once the body passes its limit; answered 413 by the app's handler or,
    when the route never catches it, by the middleware."""

    code = "too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The body is larger than the {limit} bytes this route accepts")


class RequestLimits:
    def __init__(self, app: ASGIApp, max_body: Callable[[Scope], int] = lambda _: MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body(scope)
        refusal = _refusal(scope, limit)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as e:
            if started:
                raise
            await _answer(send, 413, "too_large", str(e.detail))


def _refusal(scope: Scope, body_limit: int) -> tuple[int, str, str] | None:
    url = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
    if url > MAX_URL_BYTES:
        return 414, "uri_too_long", f"The URL is longer than {MAX_URL_BYTES} bytes"
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    if len(headers) > MAX_HEADERS or sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
        return 431, "headers_too_large", f"At most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes together"
    length = next((v for k, v in headers if k == b"content-length"), None)
    if length is not None:
        if not length.isdigit() or len(length) > 15:
            return 400, "invalid_content_length", "Content-Length is not a number of bytes"
        if int(length) > body_limit:
            return 413, "too_large", f"The body is larger than the {body_limit} bytes this route accepts"
    return None


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
