"""Slack as a chat platform: the outbound `SlackChat` connector and the shared `SlackConfig`.

Outbound calls go to the Slack Web API (`SIGNBRIDGE_SLACK_API_BASE`, default
https://slack.com/api/) with the bot token, over the worker's shared `httpx.AsyncClient`.
Failures are split the way the workflow's retry policy needs them: HTTP 429 (and
`ok:false, error: ratelimited`), 5xx and network errors raise `ChatUnavailable` (with the
`Retry-After` delay), any other `ok:false` raises `ChatRejected` (retrying can't help).

Idempotency: the card's `ChatMessage` row holds its channel + ts, and later upserts
`chat.update` that ts. Other messages are sent once per key by the activity
(`activities/chat.py`). Slack has no idempotency key, so a post whose *answer* was lost
(`maybe_delivered`) can still appear twice: it is posted again only after a pause.

Files (the signed PDF, the certificate) go up the way `slack_sdk`'s `files_upload_v2` sends them —
`files.getUploadURLExternal`, the bytes to the upload URL, `files.completeUploadExternal` — over
the same httpx client and error mapping as every other call (the retired `files.upload` is not used).

Document sources use two URL forms made by `connectors/chat/slack/inbound.py`:
`slack:file:<file id>` (a file in the message) and `slack:latest:<channel>:<user>` (a slash
command: the user's most recent file in that channel, looked up when the flow runs, so the
HTTP handler never calls Slack).
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import Engine

from connectors.chat.base import (
    MB,
    ChatRejected,
    ChatUnavailable,
    InputProblem,
    OutboundFile,
    unreachable,
    upload_failed,
)
from connectors.chat.directory import Directory
from connectors.chat.slack.cards import link_blocks, render_card
from connectors.http import read_within, retry_after
from signbridge.core.cards import Card
from signbridge.core.models import ChatRef, DocumentSource, Person
from signbridge.core.settings import Settings
from store.db import get_engine
from store.repos import chat_messages
from store.repos.identities import Contact

log = logging.getLogger(__name__)

PLATFORM = "slack"
DEFAULT_API_BASE = "https://slack.com/api/"
DEFAULT_TIMEOUT = 10.0
IDENTITY_TTL = timedelta(hours=1)
SLACK_MAX_UPLOAD = 1024 * MB  # files.getUploadURLExternal: 1 GB per file (unconfirmed)
# ok:false codes that mean "try again later" rather than "this request is wrong".
TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout"})


class SlackConfig(BaseSettings):
    """`SIGNBRIDGE_SLACK_*`; Slack is enabled when both the signing secret and the bot token are set."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_SLACK_", env_file=None, extra="ignore")

    signing_secret: SecretStr = SecretStr("")
    bot_token: SecretStr = SecretStr("")
    api_base: str = DEFAULT_API_BASE
    bot_user_id: str | None = None  # else taken from each event's `authorizations`

    @property
    def enabled(self) -> bool:
        return bool(self.signing_secret.get_secret_value() and self.bot_token.get_secret_value())

    @property
    def base(self) -> str:
        return self.api_base.rstrip("/") + "/"


def file_source_url(file_id: str) -> str:
    return f"slack:file:{file_id}"


def is_connect_user(user: dict[str, Any], team: str) -> bool:
    """A Slack Connect user: `users.info` gives their home workspace's `team_id`, not ours (or marks
    them `is_stranger`)."""
    home = str(user.get("team_id") or "")
    return bool(user.get("is_stranger")) or bool(home and team and home != team)


def latest_file_url(channel: str, user: str) -> str:
    return f"slack:latest:{channel}:{user}"


class SlackChat:
    """`ChatConnector` for Slack (Web API over httpx; see the module docstring)."""

    platform = PLATFORM
    max_file_bytes = SLACK_MAX_UPLOAD

    def __init__(self, config: SlackConfig, engine: Engine, http: httpx.AsyncClient | None = None,
                 timeout: float = DEFAULT_TIMEOUT, lang: str = "en") -> None:
        self.config = config
        self.engine = engine
        self.directory = Directory(engine, PLATFORM, IDENTITY_TTL, lang)
        self._http = http
        self._timeout = timeout

    def __repr__(self) -> str:  # never show the token
        return f"SlackChat(api_base={self.config.base!r})"

    # ---- the ChatConnector protocol -------------------------------------------------------------

    async def upsert_card(self, chat: ChatRef, card_key: str, card: Card) -> None:
        blocks = render_card(card)
        text = f"{card.title}: {card.status_text}"
        ref = self._ref(card_key)
        if ref is not None:
            try:
                await self.call("chat.update", {"channel": ref["channel"], "ts": ref["ts"], "text": text,
                                                "blocks": blocks})
                self._touch(card_key)
                return
            except ChatRejected as e:
                if e.code != "message_not_found":
                    raise
                log.warning("the card for %s was deleted in Slack; posting it again", card_key)
        data = await self.call("chat.postMessage", {"channel": chat.chat_id, "text": text, "blocks": blocks,
                                                    "unfurl_links": False})
        self._remember(card_key, chat.chat_id, str(data["channel"]), str(data["ts"]))

    async def send_link(self, chat: ChatRef, to: Person, text: str, sign_url: str | None, key: str) -> None:
        await self._dm(to, text, link_blocks(text, sign_url))

    async def send_text(self, chat: ChatRef, to: Person | None, text: str, key: str) -> None:
        if to is not None:
            await self._dm(to, text, None)
        else:
            await self.call("chat.postMessage", {"channel": chat.chat_id, "text": text})

    async def send_file(self, chat: ChatRef, to: Person | None, file: OutboundFile, key: str) -> None:
        """The three steps of `files_upload_v2`: `files.getUploadURLExternal` (name, length), the bytes
        POSTed to the upload URL it hands out, `files.completeUploadExternal` sharing the file into
        the channel (or the person's DM) with a comment. Over the size limit: a link and the reason."""
        channel = chat.chat_id if to is None else await self._dm_channel(to)
        what = "Certificate of completion" if file.kind == "certificate" else "Signed document"
        comment = f"{what}: {file.name} (SHA-256 {file.sha256[:16]}…)"
        if file.data is None:
            note = f"\n{_esc(file.note)}" if file.note else ""
            blocks = link_blocks(f"*{what}:* {_esc(file.name)}\nSHA-256 `{file.sha256}`{note}", file.url,
                                 label="Download PDF")
            await self.call("chat.postMessage", {"channel": channel, "text": comment, "blocks": blocks,
                                                 "unfurl_links": False})
            return
        try:
            ticket = await self.call("files.getUploadURLExternal",
                                     {"filename": file.name, "length": str(len(file.data))}, form=True)
            await self._put_bytes(str(ticket["upload_url"]), file.name, file.data)
        except ChatUnavailable as e:
            raise upload_failed(e) from e
        await self.call("files.completeUploadExternal", {
            "files": json.dumps([{"id": ticket["file_id"], "title": file.name}], ensure_ascii=False),
            "channel_id": channel, "initial_comment": comment}, form=True)

    async def _put_bytes(self, upload_url: str, name: str, data: bytes) -> None:
        """Step 2: the upload URL is pre-authorised; Slack answers 200 when it has the bytes."""
        try:
            resp = await self._client().post(upload_url, content=data, timeout=self._timeout * 6,
                                             headers={"Content-Type": "application/octet-stream"})
        except httpx.HTTPError as e:
            raise unreachable(f"Slack upload of {name}", e) from e
        if resp.status_code == 429 or resp.status_code >= 500:
            raise ChatUnavailable(f"Slack upload of {name} failed (HTTP {resp.status_code})", retry_after(resp))
        if resp.status_code != 200:
            raise ChatRejected(f"Slack refused the upload of {name} (HTTP {resp.status_code})", resp.status_code)

    async def download(self, chat: ChatRef, source: DocumentSource, max_bytes: int) -> bytes:
        url = source.url or ""
        if url.startswith("slack:latest:"):
            _, _, channel, user = url.split(":", 3)
            file_id = await self._latest_file(channel, user)
        elif url.startswith("slack:file:"):
            file_id = url.removeprefix("slack:file:")
        else:
            raise InputProblem(f"{source.name} is not a Slack file; attach the PDF to your message")
        try:
            info = await self.call("files.info", {"file": file_id}, form=True)
        except ChatRejected as e:
            raise InputProblem(f"Cannot read the file {source.name} from Slack ({e}); share it again") from e
        meta = info.get("file") or {}
        mb = max_bytes // (1024 * 1024)
        if int(meta.get("size") or 0) > max_bytes:
            raise InputProblem(f"{source.name}: the file is larger than the {mb} MB limit")
        link = meta.get("url_private_download") or meta.get("url_private")
        if not link:
            raise InputProblem(f"{source.name} cannot be downloaded from Slack (no download URL)")
        return await self._fetch(str(link), source.name, max_bytes)

    async def resolve(self, chat: ChatRef, person: Person) -> Person:
        """users.info → name and email; kept in the directory cache for an hour (a deactivation shows
        within it). A Slack Connect user (their `team_id` is another workspace's) comes back
        `external`: a signer from outside the company, reached by the contact the command gives or
        the email their profile shares."""
        async def lookup() -> Contact:
            try:
                data = await self.call("users.info", {"user": person.id}, form=True)
            except ChatRejected as e:
                raise InputProblem(f"{person.name} is not a Slack user SignBridge can see ({e})") from e
            user = data.get("user") or {}
            profile = user.get("profile") or {}
            name = profile.get("real_name") or profile.get("display_name") or user.get("real_name") \
                or user.get("name") or person.name
            return Contact(name=name, email=profile.get("email"), active=not user.get("deleted"),
                           external=is_connect_user(user, chat.tenant))

        return await self.directory.resolve(chat, person, lookup)

    # ---- Web API --------------------------------------------------------------------------------

    async def call(self, method: str, payload: dict[str, Any], form: bool = False) -> dict[str, Any]:
        """One Web API call; the `ok:true` body, or `ChatUnavailable` / `ChatRejected`."""
        headers = {"Authorization": f"Bearer {self.config.bot_token.get_secret_value()}"}
        url = self.config.base + method
        try:
            if form:
                resp = await self._client().post(url, data=payload, headers=headers, timeout=self._timeout)
            else:
                resp = await self._client().post(url, json=payload, headers={
                    **headers, "Content-Type": "application/json; charset=utf-8"}, timeout=self._timeout)
        except httpx.HTTPError as e:
            raise unreachable(f"Slack {method}", e) from e
        if resp.status_code == 429:
            wait = retry_after(resp)
            raise ChatUnavailable(f"Slack rate-limited {method} (retry after {wait} s)", wait)
        if resp.status_code >= 500 or resp.status_code == 408:
            raise ChatUnavailable(f"Slack {method} failed (HTTP {resp.status_code})")
        try:
            data = resp.json()
        except ValueError as e:
            raise ChatRejected(f"Slack {method}: not JSON (HTTP {resp.status_code})", resp.status_code) from e
        if not isinstance(data, dict) or not data.get("ok"):
            error = str(data.get("error") if isinstance(data, dict) else "unknown_error")
            if error in TRANSIENT_ERRORS:
                raise ChatUnavailable(f"Slack {method}: {error}", retry_after(resp))
            # A permanent error code (`invalid_auth`, `channel_not_found`, …).
            raise ChatRejected(f"Slack {method} refused: {error}", resp.status_code if resp.status_code >= 400 else 400,
                               error)
        return data

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        return self._http

    async def _dm_channel(self, to: Person) -> str:
        opened = await self.call("conversations.open", {"users": to.id})
        return str((opened.get("channel") or {}).get("id"))

    async def _dm(self, to: Person, text: str, blocks: list[dict[str, Any]] | None) -> dict[str, Any]:
        channel = await self._dm_channel(to)
        payload: dict[str, Any] = {"channel": channel, "text": text, "unfurl_links": False}
        if blocks:
            payload["blocks"] = blocks
        return await self.call("chat.postMessage", payload)

    async def _latest_file(self, channel: str, user: str) -> str:
        try:
            data = await self.call("conversations.history", {"channel": channel, "limit": "100"}, form=True)
        except ChatRejected as e:
            raise InputProblem(f"Cannot read this channel's history to find your file ({e})") from e
        for message in data.get("messages") or []:  # newest first
            files = message.get("files") or []
            if message.get("user") == user and files:
                return str(files[0]["id"])
        raise InputProblem("No document to sign: attach the PDF to a message in this channel "
                           "(or mention SignBridge in the message that carries it), then run /sign again")

    async def _fetch(self, url: str, name: str, max_bytes: int) -> bytes:
        headers = {"Authorization": f"Bearer {self.config.bot_token.get_secret_value()}"}
        mb = max_bytes // (1024 * 1024)
        try:
            async with self._client().stream("GET", url, headers=headers, timeout=self._timeout * 3) as resp:
                if resp.status_code in (401, 403, 404, 410):
                    raise InputProblem(f"Slack refused to hand out {name} (HTTP {resp.status_code}); share it again")
                if resp.status_code == 429 or resp.status_code >= 500:
                    raise ChatUnavailable(f"Slack file download failed (HTTP {resp.status_code})", retry_after(resp))
                return await read_within(resp, max_bytes,
                                         InputProblem(f"{name}: the file is larger than the {mb} MB limit"))
        except httpx.HTTPError as e:
            raise unreachable(f"Slack download of {name}", e) from e

    # ---- where the card lives --------------------------------------------------------------------

    def _ref(self, key: str) -> dict[str, str] | None:
        return chat_messages.ref(self.engine, PLATFORM, key)

    def _remember(self, key: str, chat_id: str, channel: str, ts: str) -> None:
        chat_messages.save(self.engine, PLATFORM, key, chat_id, {"channel": channel, "ts": ts})

    def _touch(self, key: str) -> None:
        chat_messages.touch(self.engine, PLATFORM, key)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def load_config() -> SlackConfig:
    return SlackConfig()


def build(settings: Settings, http: httpx.AsyncClient) -> SlackChat | None:
    """Enabled only when `SIGNBRIDGE_SLACK_SIGNING_SECRET` and `SIGNBRIDGE_SLACK_BOT_TOKEN` are set."""
    config = load_config()
    if not config.enabled:
        return None
    return SlackChat(config, get_engine(settings.sqlalchemy_url), http, lang=settings.language_for(PLATFORM))
