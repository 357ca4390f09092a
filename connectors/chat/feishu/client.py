"""Feishu/Lark `ChatConnector`: tenant token, cards updated in place, DMs, files, directory.

Why it is built this way:

* **One card per request.** The first `upsert_card` posts the card and stores its message_id in
  `ChatMessage` (platform "feishu", card_key); every later call PATCHes that message. The post
  carries Feishu's `uuid` (send dedupe, 1 h) derived from the card key, so an activity retried
  after a post whose answer was lost gets the same message back instead of a second card.
  Feishu only updates messages up to 14 days old: older ones (by our record, or by the update
  error code) get a fresh card whose id replaces the stored one.
* **Messages** carry the same `uuid` derived from their idempotency key, so a message the
  activity sends again after an unanswered attempt (`maybe_delivered`) is dropped by Feishu.
* **Tokens**: `connectors.chat.app_api` (refetched when an API answers with a token error).
* **Errors** split the way the workflow's retry policy needs them: 429 / code 99991400 →
  `ChatUnavailable(retry_after=x-ogw-ratelimit-reset)`, 5xx and network errors →
  `ChatUnavailable`, any other error code → `ChatRejected` (retrying cannot fix it).
* **Signers** are checked against the contact directory; resigned or frozen users are an
  `InputProblem`. Results are kept in the shared directory cache for `directory_cache_seconds`.

Error codes marked "unconfirmed" are configurable (`SIGNBRIDGE_FEISHU_*_CODES`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.chat.app_api import AppChat, NumericCodes, TokenRefused
from connectors.chat.base import (
    MB,
    ChatRejected,
    ChatUnavailable,
    InputProblem,
    OutboundFile,
    unreachable,
    upload_failed,
)
from connectors.chat.feishu.cards import card_content, file_card, link_card, render_card
from connectors.http import json_object, read_within
from signbridge.core.cards import Card
from signbridge.core.models import ChatRef, DocumentSource, Person
from signbridge.core.settings import Settings
from store.db import get_engine
from store.repos import chat_messages
from store.repos.identities import Contact

PLATFORM = "feishu"
FEISHU_MAX_FILE = 100 * 1024 * 1024
FEISHU_MAX_UPLOAD = 30 * MB  # `im/v1/files`: non-empty, at most 30 MB
UPDATE_WINDOW = timedelta(days=14)
RATE_LIMITED = 99991400


class FeishuConfig(BaseSettings):
    """`SIGNBRIDGE_FEISHU_*`. Enabled when app_id and app_secret are set (Lark: api_base
    https://open.larksuite.com)."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_FEISHU_", env_file=None, extra="ignore")

    app_id: str = ""
    app_secret: SecretStr = SecretStr("")
    encrypt_key: SecretStr = SecretStr("")
    verification_token: SecretStr = SecretStr("")
    api_base: str = "https://open.feishu.cn"
    # The bot's display name in Feishu, when it differs from SIGNBRIDGE_BOT_NAME (`@<name> sign`).
    bot_name: str = ""
    timestamp_tolerance_seconds: int = 300
    directory_cache_seconds: int = 600
    timeout_seconds: float = 10.0
    # Token errors: invalid/expired/missing tenant_access_token (unconfirmed beyond 99991663/99991661).
    token_error_codes: NumericCodes = frozenset({99991661, 99991663, 99991664, 99991665, 99991668, 99991677})
    # PATCH refused for good on that message — past the 14-day update window (unconfirmed codes)
    # or recalled by someone (230011): post a fresh card instead.
    update_expired_codes: NumericCodes = frozenset({230031, 230110, 230011})
    # Retry-worthy per-message limits (230020: too many updates of one message).
    transient_codes: NumericCodes = frozenset({230020, 99991400, 1000004, 1000005})

    @property
    def enabled(self) -> bool:
        return bool(self.app_id and self.app_secret.get_secret_value())

    @property
    def base(self) -> str:
        return self.api_base.rstrip("/")


def source_url(message_id: str, file_key: str) -> str:
    """`DocumentSource.url` for a file in a Feishu message (the resource API needs both ids)."""
    return f"feishu://{message_id}/{file_key}"


def parse_source(url: str | None) -> tuple[str, str] | None:
    if not url or not url.startswith("feishu://"):
        return None
    message_id, _, file_key = url.removeprefix("feishu://").partition("/")
    return (message_id, file_key) if message_id else None


def _uuid(key: str) -> str:
    """Feishu's send-dedupe `uuid` (≤ 50 chars) for an idempotency key."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


class FeishuChat(AppChat[FeishuConfig]):
    """`ChatConnector` for Feishu/Lark."""

    platform, name = PLATFORM, "Feishu"
    max_file_bytes = FEISHU_MAX_UPLOAD

    def __repr__(self) -> str:  # never the secret
        return f"FeishuChat(app_id={self.config.app_id!r}, api_base={self.config.api_base!r})"

    # ---- ChatConnector --------------------------------------------------------------------------

    async def upsert_card(self, chat: ChatRef, card_key: str, card: Card) -> None:
        content = card_content(render_card(card))
        row = chat_messages.get(self.engine, PLATFORM, card_key)
        if row is None:
            message_id = await self._send(chat, "chat_id", chat.chat_id, "interactive", content, f"card:{card_key}")
            self._store_message(card_key, chat.chat_id, message_id)
            return
        message_id = json.loads(row.ref)["message_id"]
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        if datetime.now(UTC) - created < UPDATE_WINDOW - timedelta(hours=1):
            try:
                await self._call("PATCH", f"/open-apis/im/v1/messages/{message_id}", json_body={"content": content})
                return
            except ChatRejected as e:
                if e.code not in self.config.update_expired_codes:
                    raise
        # The update window closed (or the card was recalled): a fresh card, from now on the one we update.
        fresh = await self._send(chat, "chat_id", chat.chat_id, "interactive", content,
                                 f"card:{card_key}:after:{message_id}")
        self._store_message(card_key, chat.chat_id, fresh)

    async def send_link(self, chat: ChatRef, to: Person, text: str, sign_url: str | None, key: str) -> None:
        id_type, receive_id = self._receiver(to)
        if sign_url:
            await self._send(chat, id_type, receive_id, "interactive",
                             card_content(link_card(text, sign_url, self.lang)), key)
        else:
            await self._send(chat, id_type, receive_id, "text", json.dumps({"text": text}, ensure_ascii=False), key)

    async def send_text(self, chat: ChatRef, to: Person | None, text: str, key: str) -> None:
        id_type, receive_id = self._receiver(to) if to else ("chat_id", chat.chat_id)
        await self._send(chat, id_type, receive_id, "text", json.dumps({"text": text}, ensure_ascii=False), key)

    async def send_file(self, chat: ChatRef, to: Person | None, file: OutboundFile, key: str) -> None:
        """`im/v1/files` (multipart, `file_type` pdf), then a `file` message with the `file_key`; a
        file over the 30 MB limit goes as a card with its download link and the reason."""
        id_type, receive_id = self._receiver(to) if to else ("chat_id", chat.chat_id)
        if file.data is None:
            await self._send(chat, id_type, receive_id, "interactive",
                             card_content(file_card(file.name, file.sha256, file.url, self.lang, file.note)), key)
            return
        try:
            file_key = await self._upload(file.name, file.data)
        except ChatUnavailable as e:
            raise upload_failed(e) from e
        await self._send(chat, id_type, receive_id, "file", json.dumps({"file_key": file_key}), key)

    async def _upload(self, name: str, data: bytes) -> str:
        path = "/open-apis/im/v1/files"
        file_type = "pdf" if name.lower().endswith(".pdf") else "stream"

        async def send(token: str) -> dict[str, Any]:
            resp = await self._http_call("POST", self.config.base + path, f"POST {path}",
                                         data={"file_type": file_type, "file_name": name},
                                         files={"file": (name, data, "application/pdf")},
                                         headers={"Authorization": f"Bearer {token}"})
            return self._check(resp, f"POST {path}")

        result = await self.token.call(send)
        return str(result["file_key"])

    async def download(self, chat: ChatRef, source: DocumentSource, max_bytes: int) -> bytes:
        ids = parse_source(source.url)
        if ids is None:
            raise InputProblem(f"文件 {source.name} 不是飞书消息中的文件（{source.name} is not a file in a Feishu "
                               "message）")
        message_id, file_key = ids
        if not file_key:  # a reply to a file the bot never saw: ask Feishu which file that message holds
            file_key = await self._file_key_of(message_id, source.name)
        limit = min(max_bytes, FEISHU_MAX_FILE)
        mb = limit // (1024 * 1024)
        too_big = InputProblem(f"{source.name}: 文件超过 {mb} MB 的上限（The file is larger than the {mb} MB limit）")
        path = f"/open-apis/im/v1/messages/{message_id}/resources/{file_key}"

        async def get(token: str) -> bytes:
            try:
                async with self._session() as http, http.stream(
                    "GET", self.config.base + path, params={"type": "file"},
                    headers={"Authorization": f"Bearer {token}"}, timeout=self.config.timeout_seconds * 6,
                ) as resp:
                    if resp.status_code != 200 or "json" in resp.headers.get("content-type", ""):
                        await resp.aread()
                        try:
                            self._check(resp, "download")
                        except ChatRejected as e:
                            raise InputProblem(f"无法下载 {source.name}（Feishu refused the file: {e}; send it "
                                               "again）") from e
                    return await read_within(resp, limit, too_big)
            except httpx.HTTPError as e:
                raise unreachable("Feishu file download", e) from e

        return await self.token.call(get)

    async def _file_key_of(self, message_id: str, name: str) -> str:
        try:
            data = await self._call("GET", f"/open-apis/im/v1/messages/{message_id}")
        except ChatRejected as e:
            raise InputProblem(f"无法读取 {name} 所在的消息（Feishu refused the message holding the file: {e}）") from e
        items = data.get("items") or [{}]
        try:
            content = json.loads((items[0].get("body") or {}).get("content") or "{}")
        except json.JSONDecodeError:
            content = {}
        if items[0].get("msg_type") != "file" or not content.get("file_key"):
            raise InputProblem("回复的消息不是文件：请回复合同文件本身"
                               "（The message you replied to is not a file: reply to the contract file itself）")
        return str(content["file_key"])

    async def resolve(self, chat: ChatRef, person: Person) -> Person:
        async def lookup() -> Contact:
            try:
                data = await self._call("GET", f"/open-apis/contact/v3/users/{person.id}",
                                        params={"user_id_type": "open_id"})
            except ChatRejected as e:
                raise InputProblem(f"在通讯录中找不到 {person.name}（{person.name} is not in the Feishu directory "
                                   f"visible to SignBridge: {e}）") from e
            user = data.get("user") or {}
            status = user.get("status") or {}
            active = not (user.get("is_resigned") or status.get("is_resigned")
                          or user.get("is_frozen") or status.get("is_frozen"))
            return Contact(name=user.get("name") or person.name, mobile=user.get("mobile"), active=active,
                           email=user.get("email") or user.get("enterprise_email"))

        return await self.directory.resolve(chat, person, lookup)

    def _store_message(self, card_key: str, chat_id: str, message_id: str) -> None:
        """The card we update from now on; its 14-day update window starts now."""
        chat_messages.save(self.engine, PLATFORM, card_key, chat_id, {"message_id": message_id}, restart=True)

    # ---- HTTP -----------------------------------------------------------------------------------

    @staticmethod
    def _receiver(to: Person) -> tuple[str, str]:
        if not to.id.startswith("ou_") and to.email:
            return "email", to.email
        return "open_id", to.id

    async def _send(self, chat: ChatRef, id_type: str, receive_id: str, msg_type: str, content: str,
                    key: str) -> str:
        data = await self._call("POST", "/open-apis/im/v1/messages", params={"receive_id_type": id_type},
                                json_body={"receive_id": receive_id, "msg_type": msg_type, "content": content,
                                           "uuid": _uuid(key)})
        return str(data.get("message_id") or "")

    async def _fetch_token(self) -> tuple[str, float]:
        body = {"app_id": self.config.app_id, "app_secret": self.config.app_secret.get_secret_value()}
        resp = await self._http_call("POST", self.config.base + "/open-apis/auth/v3/tenant_access_token/internal",
                                     "token endpoint", json=body)
        data = self._check(resp, "tenant_access_token", token_call=True)
        return str(data["tenant_access_token"]), float(data.get("expire", 0))

    async def _call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                    json_body: dict[str, Any] | None = None) -> dict[str, Any]:
        async def send(token: str) -> dict[str, Any]:
            resp = await self._http_call(method, self.config.base + path, f"{method} {path}", params=params,
                                         json=json_body, headers={"Authorization": f"Bearer {token}"})
            return self._check(resp, f"{method} {path}")

        return await self.token.call(send)

    def _check(self, resp: httpx.Response, what: str, token_call: bool = False) -> dict[str, Any]:
        """Feishu answers `{code, msg, data}`; 0 is success whatever else the body holds."""
        body = json_object(resp)
        code = body.get("code")
        msg = body.get("msg") or resp.text[:200]
        if resp.status_code == 429 or code == RATE_LIMITED:
            reset = resp.headers.get("x-ogw-ratelimit-reset")
            retry_after = float(reset) if reset and reset.replace(".", "", 1).isdigit() else None
            raise ChatUnavailable(f"Feishu rate-limited {what} (code {code}, retry after {retry_after} s)",
                                  retry_after=retry_after)
        if code in self.config.token_error_codes and not token_call:
            raise TokenRefused(f"{what}: {code} {msg}")
        if resp.status_code >= 500 or code in self.config.transient_codes:
            raise ChatUnavailable(f"Feishu failed {what} (HTTP {resp.status_code}, code {code}): {msg}")
        if resp.status_code == 200 and code == 0:
            return body.get("data") or (body if token_call else {})
        raise ChatRejected(f"Feishu rejected {what} (HTTP {resp.status_code}, code {code}): {msg}",
                             resp.status_code, code if isinstance(code, int) else None)


def build(settings: Settings, http: httpx.AsyncClient) -> FeishuChat | None:
    config = FeishuConfig()
    if not config.enabled:
        return None
    return FeishuChat(config, get_engine(settings.sqlalchemy_url), http, lang=settings.language_for(PLATFORM))
