"""What the clients of DingTalk, Feishu/Lark and WeCom share: an app API behind an access token.

These platforms hand an app a token for about two hours and refuse it early when a secret is
rotated or the token revoked. So one token is shared by every concurrent call (one fetch at a
time), kept until a minute before it expires, and fetched anew — once — when an API refuses it.
Their error codes are settings (`Codes`: comma-separated in the environment), since the
platforms document some of them only loosely.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Annotated, Any, Generic, Protocol, TypeVar

import httpx
from pydantic import BeforeValidator
from pydantic_settings import NoDecode
from sqlalchemy.engine import Engine

from connectors.chat.base import ChatUnavailable, session, unreachable
from connectors.chat.directory import Directory

T = TypeVar("T")


def _comma_separated(value: Any) -> Any:
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


Codes = Annotated[frozenset[str], NoDecode, BeforeValidator(_comma_separated)]
NumericCodes = Annotated[frozenset[int], NoDecode, BeforeValidator(_comma_separated)]
MARGIN = 60.0  # seconds before its expiry a token is no longer handed out


class TokenRefused(Exception):
    """An API refused the token it was given (expired, revoked): fetch a new one and call again."""


class AppToken:
    def __init__(self, who: str, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> None:
        """`fetch` asks the platform for a token and its lifetime in seconds."""
        self.who = who
        self._fetch = fetch
        self._value: str | None = None
        self._until = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def get(self, refused: str | None = None) -> str:
        """The current token; a fresh one when `refused` is the current one. Calls that saw the
        same token refused concurrently cause one fetch, not one each."""
        async with self._lock:
            if self._value and self._value != refused and time.monotonic() < self._until:
                return self._value
            value, lifetime = await self._fetch()
            self.fetches += 1
            self._value, self._until = value, time.monotonic() + max(0.0, lifetime - MARGIN)
            return value

    async def call(self, send: Callable[[str], Awaitable[T]]) -> T:
        """`send(token)`, and once more with a fresh token when it raises `TokenRefused`."""
        token = await self.get()
        try:
            return await send(token)
        except TokenRefused:
            pass
        try:
            return await send(await self.get(refused=token))
        except TokenRefused as e:
            raise ChatUnavailable(f"{self.who} refused a freshly fetched access token too ({e})") from e


class AppConfig(Protocol):
    timeout_seconds: float
    directory_cache_seconds: int


C = TypeVar("C", bound=AppConfig)


class AppChat(Generic[C]):
    """The base of an app API's `ChatConnector`: its settings, the worker's HTTP client, the app's
    token (the subclass says how to fetch one) and the shared user directory. One per worker (or
    API app): the token is shared."""

    platform: str
    name: str  # as people write it, for messages

    def __init__(self, config: C, engine: Engine, http: httpx.AsyncClient | None = None, lang: str = "zh") -> None:
        self.config = config
        self.engine = engine
        self.lang = lang
        self._http = http
        self.token = AppToken(self.name, self._fetch_token)
        self.directory = Directory(engine, self.platform, timedelta(seconds=config.directory_cache_seconds), lang)

    def _session(self) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return session(self._http, self.config.timeout_seconds)

    async def _http_call(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        """One request; no answer is `ChatUnavailable` (`maybe_delivered` once it went out)."""
        try:
            async with self._session() as http:
                return await http.request(method, url, timeout=self.config.timeout_seconds, **kwargs)
        except httpx.HTTPError as e:
            raise unreachable(f"{self.name} {what}", e) from e

    async def _fetch_token(self) -> tuple[str, float]:
        """A new token from the platform and its lifetime in seconds."""
        raise NotImplementedError
