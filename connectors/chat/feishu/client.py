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
from urllib.parse import urlsplit

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
    raise_for_status,
    unreachable,
    upload_failed,
)
from connectors.chat.feishu.cards import card_content, file_card, link_card, render_card
from connectors.http import json_object, read_within
from signbridge.core.approvals import ApprovalForm, ApprovalResult, FormField
from signbridge.core.cards import Card
from signbridge.core.models import ApprovalRef, ChatRef, DocumentSource, Person
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


APPROVAL_SCHEME = "feishu-approval://"
ALREADY_SUBSCRIBED = 1390007
APPROVED = "APPROVED"
FILE_WIDGETS = ("attachmentV2", "attachment")
CONTACT_WIDGETS = ("contact",)
TABLE_WIDGETS = ("fieldList",)


def approval_file_url(instance_code: str, widget_id: str, index: int) -> str:
    """`DocumentSource.url` of an approval attachment: its URL is valid 12 h only, so the download
    reads the instance again for a fresh one."""
    return f"{APPROVAL_SCHEME}{instance_code}/{widget_id}/{index}"


def _listed(value: Any) -> list[str]:
    """A widget value that may be a list or a comma-separated string (unconfirmed: both are seen)."""
    if isinstance(value, list):
        return [str(v) for v in value if v]
    if isinstance(value, str) and value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return []


def _widgets(items: Any) -> list[dict[str, Any]]:
    """Every widget of a form, table (`fieldList`) rows walked recursively."""
    found: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            found.append(item)
            if item.get("type") in TABLE_WIDGETS:
                for row in item.get("value") or []:
                    found += _widgets(row)
        elif isinstance(item, list):
            found += _widgets(item)
    return found


def form_fields(instance_code: str, form: list[dict[str, Any]]) -> list[FormField]:
    """Feishu widgets as neutral fields: attachments as sources, contacts as people, the rest as text."""
    fields: list[FormField] = []
    for w in _widgets(form):
        wid, kind = str(w.get("id") or ""), str(w.get("type") or "")
        keys = [wid, str(w.get("custom_id") or ""), str(w.get("name") or "")]
        if kind in FILE_WIDGETS:
            urls, names = _listed(w.get("value")), _listed(w.get("ext"))
            files = [DocumentSource(name=names[i] if i < len(names) else f"attachment-{i + 1}.pdf",
                                    url=approval_file_url(instance_code, wid, i)) for i in range(len(urls))]
            fields.append(FormField(keys=keys, kind="file", files=files))
        elif kind in CONTACT_WIDGETS:
            ids = _listed(w.get("open_ids")) or _listed(w.get("value"))
            fields.append(FormField(keys=keys, kind="contact", people=[Person(id=i, name=i) for i in ids]))
        else:
            value = w.get("value")
            fields.append(FormField(keys=keys, kind="text", text=value if isinstance(value, str) else
                                    json.dumps(value, ensure_ascii=False) if value is not None else ""))
    return fields


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
            message_id = await self._send(chat, *self._chat_target(chat), "interactive", content, f"card:{card_key}")
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
        fresh = await self._send(chat, *self._chat_target(chat), "interactive", content,
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
        id_type, receive_id = self._receiver(to) if to else self._chat_target(chat)
        await self._send(chat, id_type, receive_id, "text", json.dumps({"text": text}, ensure_ascii=False), key)

    async def send_file(self, chat: ChatRef, to: Person | None, file: OutboundFile, key: str) -> None:
        """`im/v1/files` (multipart, `file_type` pdf), then a `file` message with the `file_key`; a
        file over the 30 MB limit goes as a card with its download link and the reason."""
        id_type, receive_id = self._receiver(to) if to else self._chat_target(chat)
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
        if (source.url or "").startswith(APPROVAL_SCHEME):
            return await self._approval_file(source, max_bytes)
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

    # ---- approvals (approval v4) ----------------------------------------------------------------

    async def _instance(self, instance_code: str) -> dict[str, Any]:
        try:
            return await self._call("GET", f"/open-apis/approval/v4/instances/{instance_code}",
                                    params={"user_id_type": "open_id"})
        except ChatRejected as e:
            raise InputProblem(f"飞书找不到审批实例 {instance_code}"
                               f"（Feishu refused the approval instance: {e}）") from e

    async def read_approval(self, ref: ApprovalRef) -> ApprovalForm:
        """`GET /open-apis/approval/v4/instances/{code}`: status, initiator (`open_id`), `form` (a JSON
        array string of widgets)."""
        data = await self._instance(ref.instance_id)
        try:
            form = json.loads(data.get("form") or "[]")
        except json.JSONDecodeError:
            form = []
        status = str(data.get("status") or "")
        return ApprovalForm(instance_id=ref.instance_id, definition=str(data.get("approval_code") or ref.definition),
                            approved=status == APPROVED, status=status, title=str(data.get("approval_name") or ""),
                            initiator_id=str(data.get("open_id") or ""),
                            fields=form_fields(ref.instance_id, form if isinstance(form, list) else []))

    async def subscribe_approval(self, definition: str) -> bool:
        """Feishu sends `approval_instance` events only for definitions the app subscribed to, once
        each (`POST /open-apis/approval/v4/approvals/{code}/subscribe`; 1390007: already)."""
        try:
            await self._call("POST", f"/open-apis/approval/v4/approvals/{definition}/subscribe")
        except ChatRejected as e:
            if e.code == ALREADY_SUBSCRIBED:
                return False
            raise
        return True

    async def _approval_file(self, source: DocumentSource, max_bytes: int) -> bytes:
        """An attachment: a fresh URL from the instance (they last 12 h), fetched without our token
        first, then with it — whether Feishu wants one is unconfirmed."""
        instance, _, rest = (source.url or "").removeprefix(APPROVAL_SCHEME).partition("/")
        widget_id, _, index = rest.rpartition("/")
        data = await self._instance(instance)
        try:
            form = json.loads(data.get("form") or "[]")
        except json.JSONDecodeError:
            form = []
        widget = next((w for w in _widgets(form) if str(w.get("id") or "") == widget_id), {})
        urls = _listed(widget.get("value"))
        if not index.isdigit() or int(index) >= len(urls):
            raise InputProblem(f"审批中的附件 {source.name} 已不存在（The attachment {source.name} is no longer in the "
                               "approval）")
        url = urls[int(index)]
        mb = max_bytes // (1024 * 1024)
        too_big = InputProblem(f"{source.name}: 文件超过 {mb} MB 的上限（The file is larger than the {mb} MB limit）")

        async def get(token: str | None) -> bytes | None:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            try:
                async with self._session() as http, http.stream("GET", url, headers=headers,
                                                                timeout=self.config.timeout_seconds * 6) as resp:
                    if resp.status_code in (401, 403) and token is None:
                        return None
                    if resp.status_code in (403, 404, 410):
                        raise InputProblem(f"审批附件 {source.name} 无法下载（Feishu refused the attachment: HTTP "
                                           f"{resp.status_code}）")
                    raise_for_status(resp, "Feishu approval attachment")
                    return await read_within(resp, max_bytes, too_big)
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
                raise InputProblem(f"审批附件 {source.name} 的地址无效"
                                   f"（The attachment's URL is not usable: {e}）") from e
            except httpx.HTTPError as e:
                raise unreachable("Feishu approval attachment", e) from e

        plain = await get(None)
        if plain is not None:
            return plain
        if urlsplit(url).hostname != urlsplit(self.config.base).hostname:
            raise InputProblem(f"审批附件 {source.name} 无法下载（Feishu refused the attachment without a token, and "
                               "the app's token is sent to Feishu's own API host only）")
        with_token = await self.token.call(get)
        assert with_token is not None
        return with_token

    async def write_back(self, chat: ChatRef, ref: ApprovalRef, result: ApprovalResult, key: str) -> None:
        """A comment on the instance, authored by its initiator (Feishu requires a user), with the
        signed files attached by URL."""
        content = {"text": result.text, "files": [{"url": url, "fileSize": 0, "title": name, "type": "attachment",
                                                   "extra": sha} for name, url, sha in result.files]}
        author = result.initiator_id or ref.initiator_id
        await self._call("POST", f"/open-apis/approval/v4/instances/{ref.instance_id}/comments",
                         params={"user_id": author, "user_id_type": "open_id"},
                         json_body={"content": json.dumps(content, ensure_ascii=False)})

    @staticmethod
    def _chat_target(chat: ChatRef) -> tuple[str, str]:
        """A group by its chat id; an approval's flow without a configured chat is the initiator's DM."""
        if chat.chat_kind == "direct" and chat.chat_id.startswith("ou_"):
            return "open_id", chat.chat_id
        return "chat_id", chat.chat_id

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
