"""A company chat's outbound endpoint, for tests: real HTTP, real signature checks, no dedupe.

`WebhookSink(secret)` serves a FastAPI app with uvicorn on a free loopback port in a background
thread. Every POST is verified with `connectors.chat.webhook.signature.verify`; a bad or missing
signature gets 401 and counts in `rejected`. Verified requests are answered 200 and appended to
`messages` in arrival order — duplicates included, because tests count them — unless the sink
was told to fail (`fail_next`, `outage`) or to rate-limit (`rate_limit_next`), in which case the
request is recorded only in `attempts`, as a real receiver that failed would not have acted on it.

A slow chat (`slow`): each request is acted on (appended to `messages`) and answered only after
a delay, whether or not the caller still waits — what a chat under load does. `honour_keys`
makes the sink behave as the protocol asks a receiver to: a request whose `Idempotency-Key` it
has already acted on is answered 200 at once and not acted on again (a request still being
processed does not count: the key is recorded when the message is posted).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from fastapi import FastAPI, Request, Response

from connectors.chat.webhook import signature as webhook_signature
from tests.sim.servers import serve


@dataclass
class Attempt:
    """One verified request as it arrived, with the status the sink answered."""

    body: dict[str, Any]
    headers: dict[str, str]
    status: int


class WebhookSink:
    def __init__(self, secret: str, path: str = "/outbound") -> None:
        self.secret = secret
        self.path = path
        self.messages: list[dict[str, Any]] = []
        self.attempts: list[Attempt] = []
        self.rejected = 0
        self.arrivals: list[dict[str, Any]] = []  # every verified request, on arrival (before any delay)
        self.url = ""
        self.down: int | None = None
        self.answer_after = 0.0
        self.honour_keys = False
        self._acted_keys: set[str] = set()
        self._lock = threading.Lock()
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._cm: AbstractContextManager[str] | None = None
        self.app = FastAPI()
        self.app.post(path)(self._receive)

    # ---- control ----------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 503) -> None:
        """Answer the next `n` verified requests with `status` (outage, or a 4xx refusal)."""
        with self._lock:
            self._failures.extend([(status, {})] * n)

    def rate_limit_next(self, n: int, retry_after: float = 1) -> None:
        """Answer the next `n` verified requests with 429 and `Retry-After: retry_after`."""
        with self._lock:
            self._failures.extend([(429, {"Retry-After": str(retry_after)})] * n)

    def outage(self, status: int = 503) -> None:
        """Answer every verified request with `status` until `recover()`."""
        self.down = status

    def recover(self) -> None:
        with self._lock:
            self.down = None
            self._failures.clear()

    def slow(self, seconds: float, honour_keys: bool = True) -> None:
        """Act on each request and answer it only after `seconds` (see the module docstring)."""
        self.answer_after = seconds
        self.honour_keys = honour_keys

    # ---- reading ----------------------------------------------------------------------------

    def cards(self, card_key: str) -> list[dict[str, Any]]:
        """Every accepted version of one card, oldest first."""
        return [m["card"] for m in list(self.messages)
                if m.get("type") == "card.upsert" and m.get("card_key") == card_key]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in list(self.messages) if m.get("type") == kind]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> None:
        """Poll `predicate` until it holds; `AssertionError` after `timeout` seconds."""
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f"webhook sink: condition not met within {timeout} s "
                                     f"({len(self.messages)} messages, {self.rejected} rejected)")
            await asyncio.sleep(0.05)

    # ---- server -----------------------------------------------------------------------------

    async def _receive(self, request: Request) -> Response:
        raw = await request.body()
        try:
            webhook_signature.verify(self.secret, request.headers.get(webhook_signature.TIMESTAMP_HEADER),
                                     request.headers.get(webhook_signature.SIGNATURE_HEADER), raw)
            body = json.loads(raw)
        except (webhook_signature.SignatureError, ValueError) as e:
            with self._lock:
                self.rejected += 1
            return Response(json.dumps({"error": str(e)}), status_code=401, media_type="application/json")
        key = request.headers.get("Idempotency-Key", "")
        with self._lock:
            self.arrivals.append(body)
            if self.honour_keys and key in self._acted_keys:
                self.attempts.append(Attempt(body=body, headers=dict(request.headers), status=200))
                return Response(json.dumps({"ok": True, "duplicate": True}), media_type="application/json")
            headers: dict[str, str]
            if self.down is not None:
                status, headers = self.down, {}
            else:
                status, headers = self._failures.pop(0) if self._failures else (200, {})
        if status == 200 and self.answer_after:
            await asyncio.sleep(self.answer_after)
        with self._lock:
            self.attempts.append(Attempt(body=body, headers=dict(request.headers), status=status))
            if status == 200:
                self.messages.append(body)
                self._acted_keys.add(key)
        return Response(json.dumps({"ok": status == 200}), status_code=status, headers=headers,
                        media_type="application/json")

    def __enter__(self) -> WebhookSink:
        self._cm = serve(self.app)
        base = self._cm.__enter__()
        self.url = f"{base}{self.path}"
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._cm is not None:
            self._cm.__exit__(exc_type, exc, tb)
            self._cm = None
