"""The generic webhook IM: SignBridge talks to a company's own chat tool by signed JSON POSTs.

Every outbound request goes to one configured URL, is signed like the inbound direction
(`connectors.chat.webhook.signature`), and carries an `idempotency_key` (body) and `Idempotency-Key`
(header; percent-encoded as UTF-8 when the key has non-ASCII characters, e.g. a chat's event id
in Chinese, since a header carries ASCII only). The key is the activity's key, so when Temporal
retries an activity whose first POST did arrive, the receiver can drop the duplicate; for cards
the key also hashes the card content, so a real change to a card is never mistaken for a
duplicate of its previous version.

Failures are split the way the workflow's retry policy needs them: outages, timeouts and rate
limits raise `ChatUnavailable` (a retryable `ChatError`, with `retry_after` for 429), any other
4xx raises `ChatRejected` (`non_retryable = True`: retrying the same request cannot help).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any
from urllib.parse import quote

import httpx

from connectors.chat.base import ChatUnavailable, InputProblem, OutboundFile, raise_for_status, session, unreachable
from connectors.chat.webhook import signature as webhook_signature
from connectors.fetch import FetchFailed, FetchPolicy, FetchRefused, fetch
from signbridge.core.approvals import ApprovalForm, ApprovalResult
from signbridge.core.cards import Card
from signbridge.core.models import ApprovalRef, ChatRef, DocumentSource, Person
from signbridge.core.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
FILE_HOSTS_SETTING = "SIGNBRIDGE_WEBHOOK_FILE_HOSTS"


def card_idempotency_key(card_key: str, card: Card) -> str:
    """Same card content → same key (a retry); changed content → new key (a real update)."""
    canonical = json.dumps(card.as_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return f"{card_key}:card:{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


class WebhookChat:
    """`ChatConnector` for the generic webhook IM (see README, "Generic webhook IM protocol")."""

    platform = "webhook"
    max_file_bytes = 0  # never uploads: the IM fetches each file from its signed link

    def __init__(self, outbound_url: str, secret: str, http: httpx.AsyncClient | None = None,
                 timeout: float = DEFAULT_TIMEOUT, files: FetchPolicy | None = None) -> None:
        self.outbound_url = outbound_url
        self.files = files or FetchPolicy(hosts=(), hosts_setting=FILE_HOSTS_SETTING)  # none: fetch nothing
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

    async def send_file(self, chat: ChatRef, to: Person | None, file: OutboundFile, key: str) -> None:
        """The IM fetches the file from `url` (signed, expiring) and shows it as a file: `to` set is a
        private copy (a CC recipient), `kind` tells the signed document from the certificate."""
        await self._post({"type": "file", "chat_id": chat.chat_id, "to": to.id if to else None, "name": file.name,
                          "url": file.url, "sha256": file.sha256, "size": file.size, "kind": file.kind}, key)

    async def download(self, chat: ChatRef, source: DocumentSource, max_bytes: int) -> bytes:
        """GET the file URL the chat sent, signed like every other call so the IM can authorise it.

        Only from the IM's file hosts (`SIGNBRIDGE_WEBHOOK_FILE_HOSTS`), and the signature goes to
        that URL's origin only, never to where a redirect points (see `connectors.fetch`)."""
        if not source.url:
            raise InputProblem(f"文件 {source.name} 没有下载地址（{source.name} has no URL to fetch it from）")
        try:
            return await fetch(source.url, name=source.name, policy=self.files, max_bytes=max_bytes,
                               credentials=webhook_signature.headers(self._secret, b""))
        except FetchRefused as e:
            raise InputProblem(e.message) from e
        except FetchFailed as e:
            raise ChatUnavailable(str(e)) from e

    async def resolve(self, chat: ChatRef, person: Person) -> Person:
        """The webhook IM sends contact data with each mention; there is no directory to ask."""
        return person

    async def read_approval(self, ref: ApprovalRef) -> ApprovalForm:
        """Never needed: `approval.approved` carries its documents and signers (`self_contained`)."""
        raise InputProblem("webhook IM approvals carry their documents and signers in the event itself")

    async def write_back(self, chat: ChatRef, ref: ApprovalRef, result: ApprovalResult, key: str) -> None:
        """Outbound `approval.update` {approval_id, status, request_id, file: {url, sha256}, text}."""
        first = result.files[0] if result.files else None
        await self._post({"type": "approval.update", "approval_id": ref.instance_id, "status": result.status,
                          "request_id": result.request_id, "text": result.text,
                          "file": {"name": first[0], "url": first[1], "sha256": first[2]} if first else None,
                          "files": [{"name": n, "url": u, "sha256": h} for n, u, h in result.files]}, key)

    async def _post(self, payload: dict[str, Any], key: str) -> None:
        if not self.outbound_url:
            if not self._warned:
                log.warning("SIGNBRIDGE_WEBHOOK_OUTBOUND_URL is not set: webhook chat messages are dropped")
                self._warned = True
            return
        payload = {**payload, "idempotency_key": key}
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {**webhook_signature.headers(self._secret, body), "Content-Type": "application/json",
                   "Idempotency-Key": header_key(key)}
        try:
            async with session(self._http, self._timeout) as http:
                resp = await http.post(self.outbound_url, content=body, headers=headers, timeout=self._timeout)
        except httpx.HTTPError as e:
            raise unreachable("webhook chat", e) from e
        raise_for_status(resp, f"webhook chat {payload['type']}")


def header_key(key: str) -> str:
    """The key as an HTTP header can carry it: as it is when ASCII, else percent-encoded UTF-8."""
    return key if key.isascii() else quote(key, safe="!#$&'()*+,/:;=?@[]~")


def build(settings: Settings, http: httpx.AsyncClient) -> WebhookChat:
    """Always on: without an outbound URL it only warns (development without a chat)."""
    files = FetchPolicy.from_settings(settings, settings.webhook_file_host_list, FILE_HOSTS_SETTING)
    return WebhookChat(settings.webhook_outbound_url, settings.webhook_secret.get_secret_value(), http,
                       timeout=settings.webhook_timeout_seconds, files=files)
