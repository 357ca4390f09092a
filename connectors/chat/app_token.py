"""An app's access token (DingTalk, Feishu/Lark, WeCom): fetched once, shared, refreshed in time.

These platforms hand an app a token for about two hours and refuse it early when a secret is
rotated or the token revoked. So one token is shared by every concurrent call (one fetch at a
time), kept until a minute before it expires, and fetched anew — once — when an API refuses it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from connectors.chat.base import ChatUnavailable

T = TypeVar("T")
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
