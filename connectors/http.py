"""HTTP details every connector reads the same way: when to retry, how long to wait, how much to read.

Chat platforms and e-signature providers answer in their own shapes, but an outage, a rate limit
and a refusal look alike on the wire; these helpers decide them once, so a 429 is retried after
the same `Retry-After` whichever API sent it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


def may_heal(status: int) -> bool:
    """5xx, 408 (timeout) and 429 (rate limit): another attempt later may succeed."""
    return status >= 500 or status in (408, 429)


def json_object(resp: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object; empty when it has none (an error page, a proxy's HTML, a list)."""
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` is either delta-seconds or an HTTP date; `None` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_after(resp: httpx.Response) -> float | None:
    """The response's own `Retry-After`, in seconds."""
    return retry_after_seconds(resp.headers.get("Retry-After"))


async def read_within(resp: httpx.Response, limit: int, too_big: Exception) -> bytes:
    """The streamed body, refused with `too_big` as soon as it (or its declared length) passes
    `limit` — a file is never held whole before its size is known. Chunks are decoded, so a
    compressed bomb counts at its real size."""
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)
