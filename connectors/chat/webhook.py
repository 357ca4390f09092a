"""The generic webhook IM: SignBridge talks to a company's own chat tool by signed JSON POSTs.

Every outbound request goes to one configured URL, is signed like the inbound direction
(`signbridge.webhook_signature`), and carries an `idempotency_key` (body) and `Idempotency-Key`
(header). The key is the activity's key, so when Temporal retries an activity whose first POST
did arrive, the receiver can drop the duplicate; for cards the key also hashes the card content,
so a real change to a card is never mistaken for a duplicate of its previous version.

Failures are split the way the workflow's retry policy needs them: outages, timeouts and rate
limits raise `ChatUnavailable` (a retryable `ChatError`, with `retry_after` for 429), any other
4xx raises `ChatRejected` (`non_retryable = True`: retrying the same request cannot help).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from connectors.chat.base import ChatRejected, ChatUnavailable, InputProblem
from signbridge import webhook_signature
from signbridge.cards import Card
from signbridge.models import ChatRef, DocumentInfo, DocumentSource, Person
from signbridge.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0


def card_idempotency_key(card_key: str, card: Card) -> str:
    """Same card content → same key (a retry); changed content → new key (a real update)."""
    canonical = json.dumps(card.as_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return f"{card_key}:card:{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


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


class WebhookChat:
    """`ChatConnector` for the generic webhook IM (see DESIGN.md, "Generic webhook IM protocol")."""

    platform = "webhook"

    def __init__(self, outbound_url: str, secret: str, http: httpx.AsyncClient | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.outbound_url = outbound_url
        self._secret = secret
        self._http = http
        self._timeout = timeout
        self._warned = False

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookChat(outbound_url={self.outbound_url!r})"

    async def upsert_card(self, chat: ChatRef, card_key: str, card: Card) -> None:
        await self._post({"type": "card.upsert", "chat_id": chat.chat_id, "card_key": card_key,
                          "card": card.as_dict()}, card_idempotency_key(card_key, card))

    async def send_link(self, chat: ChatRef, to: Person, text: str, sign_url: str | None, key: str) -> None:
        await self._post({"type": "message", "chat_id": chat.chat_id, "to": to.id, "text": text,
                          "sign_url": sign_url}, key)

    async def send_text(self, chat: ChatRef, to: Person | None, text: str, key: str) -> None:
        await self._post({"type": "message", "chat_id": chat.chat_id, "to": to.id if to else None,
                          "text": text}, key)

    async def send_file(self, chat: ChatRef, name: str, url: str, document: DocumentInfo, key: str) -> None:
        await self._post({"type": "file", "chat_id": chat.chat_id, "name": name, "url": url,
                          "sha256": document.sha256}, key)

    async def download(self, chat: ChatRef, source: DocumentSource, max_bytes: int) -> bytes:
        """GET the file URL the chat sent, signed like every other call so the IM can authorise it."""
        if not source.url:
            raise InputProblem(f"文件 {source.name} 没有下载地址（{source.name} has no URL to fetch it from）")
        headers = webhook_signature.headers(self._secret, b"")
        mb = max_bytes // (1024 * 1024)
        try:
            async with self._client() as http, http.stream("GET", source.url, headers=headers,
                                                          timeout=self._timeout * 3) as resp:
                if resp.status_code in (401, 403, 404, 410):
                    raise InputProblem(f"无法下载 {source.name}（HTTP {resp.status_code}: the chat refused to hand "
                                       "out the file; send it again）")
                self._check(resp, "download")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise InputProblem(f"{source.name}: 文件超过 {mb} MB 的上限（The file is larger than the "
                                           f"{mb} MB limit）")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as e:
            raise ChatUnavailable(f"could not download {source.name} ({type(e).__name__}: {e})") from e

    async def resolve(self, chat: ChatRef, person: Person) -> Person:
        """The webhook IM sends contact data with each mention; there is no directory to ask."""
        return person

    def _client(self) -> Any:
        from contextlib import nullcontext

        if self._http is not None:
            return nullcontext(self._http)
        return httpx.AsyncClient(timeout=self._timeout)

    async def _post(self, payload: dict[str, Any], key: str) -> None:
        if not self.outbound_url:
            if not self._warned:
                log.warning("SIGNBRIDGE_WEBHOOK_OUTBOUND_URL is not set: webhook chat messages are dropped")
                self._warned = True
            return
        payload = {**payload, "idempotency_key": key}
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {**webhook_signature.headers(self._secret, body), "Content-Type": "application/json",
                   "Idempotency-Key": key}
        try:
            if self._http is not None:
                resp = await self._http.post(self.outbound_url, content=body, headers=headers, timeout=self._timeout)
            else:
                async with httpx.AsyncClient(timeout=self._timeout) as http:
                    resp = await http.post(self.outbound_url, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            raise ChatUnavailable(f"webhook chat unreachable ({type(e).__name__}: {e})") from e
        except httpx.HTTPError as e:  # sent, but no answer: it may have arrived
            raise ChatUnavailable(f"webhook chat did not answer ({type(e).__name__}: {e})",
                                  maybe_delivered=True) from e
        self._check(resp, payload["type"])

    @staticmethod
    def _check(resp: httpx.Response, kind: str) -> None:
        status = resp.status_code
        if 200 <= status < 300:
            return
        detail = resp.text[:200]
        if status == 429:
            retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            raise ChatUnavailable(f"webhook chat rate-limited {kind} (HTTP 429, retry after {retry_after} s)",
                                  retry_after=retry_after)
        if status == 408 or status >= 500:
            raise ChatUnavailable(f"webhook chat failed {kind} (HTTP {status}): {detail}")
        raise ChatRejected(f"webhook chat rejected {kind} (HTTP {status}): {detail}", status)


def build(settings: Settings, http: httpx.AsyncClient) -> WebhookChat:
    """Always on: without an outbound URL it only warns (development without a chat)."""
    return WebhookChat(settings.webhook_outbound_url, settings.webhook_secret.get_secret_value(), http)
