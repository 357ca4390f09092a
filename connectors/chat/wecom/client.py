"""WeCom (企业微信) self-built app: outbound messages, cards, files and the user directory.

Choices that follow from how WeCom works:

* **Who receives what.** App messages (`message/send`) go to *users*, not to ordinary group
  chats, so a flow's "chat" is the app conversation with the initiator: `ChatRef.chat_id` is
  the initiator's userid. The status card and the signed file go to the initiator; each signer
  gets their link privately (a `textcard` to their userid). External signers have no userid:
  their link goes to the initiator to forward.
* **Cards are updated with response codes.** `update_template_card` needs a `response_code`
  that WeCom hands out with each button click (single use, 72 h). The API stores the freshest
  code in the card's `ChatMessage` row; `upsert_card` uses it once. Without one (nobody clicked
  yet, or it expired) the fallback is explicit: a new card message is sent and the old one is
  recorded as superseded in the same row (`ref.superseded`).
* **Idempotency.** A card is re-sent only when its content changed (digest in the row). Every
  other message is sent once per key by the activity (`activities/chat.py`); one that went out
  but got no answer is sent again after a pause, and `enable_duplicate_check` asks WeCom to
  drop such a repeat within 5 min (short, so two genuine reminders are never swallowed).
* **Errors.** 45009 (rate limited) and HTTP 429/5xx → `ChatUnavailable` (retry, after
  `retry_after`); an expired/invalid token (42001/40014) is refetched once
  (`connectors.chat.app_api`); any other errcode → `ChatRejected` (retrying cannot help).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import Engine

from connectors.chat.app_api import AppChat, TokenRefused
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
from connectors.chat.wecom.cards import render_card
from connectors.http import read_within
from signbridge.core.approvals import ApprovalForm, ApprovalResult, FormField
from signbridge.core.cards import Card
from signbridge.core.models import ApprovalRef, ChatRef, DocumentSource, Person
from signbridge.core.settings import Settings
from store.db import get_engine
from store.repos import chat_messages
from store.repos.identities import Contact
from store.tables import utcnow

log = logging.getLogger(__name__)

PLATFORM = "wecom"
DEFAULT_API_BASE = "https://qyapi.weixin.qq.com"
MEDIA_SCHEME = "wecom-media:"
WECOM_MAX_UPLOAD = 20 * MB  # media/upload type file: more than 5 bytes, at most 20 MB
TOKEN_ERRORS = frozenset({40014, 42001, 41001})  # invalid / expired / missing access_token
RATE_LIMITED = frozenset({45009, 45033, -1})  # API frequency, concurrency, "system busy"
MEDIA_GONE = frozenset({40007, 40009})  # invalid media_id (expired after 3 days) / too large
USER_UNKNOWN = frozenset({60111, 46004})
CODE_LIFETIME = timedelta(hours=72) - timedelta(minutes=10)  # keep a margin before WeCom's 72 h


class WeComConfig(BaseSettings):
    """`SIGNBRIDGE_WECOM_*`; enabled when corp id, secret, callback token and AES key are all set."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_WECOM_", env_file=None, extra="ignore")

    corp_id: str = ""
    corp_secret: SecretStr = SecretStr("")
    agent_id: int = 0
    token: SecretStr = SecretStr("")
    encoding_aes_key: SecretStr = SecretStr("")
    api_base: str = DEFAULT_API_BASE
    rate_limit_backoff: float = 2.0  # seconds to wait after 45009 (WeCom gives no Retry-After)
    directory_cache_seconds: int = 600
    timeout_seconds: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.corp_id and self.corp_secret.get_secret_value() and self.token.get_secret_value()
                    and self.encoding_aes_key.get_secret_value())


def media_source(media_id: str, name: str) -> DocumentSource:
    """How a WeCom file travels through the workflow: its media id in a private URL scheme."""
    return DocumentSource(name=name, url=f"{MEDIA_SCHEME}{media_id}")


def form_fields(contents: list[Any]) -> list[FormField]:
    """`apply_data.contents` as neutral fields: a File control's value `{"files": [{"file_id"}]}`
    (fetched with `media/get`), a Contact's `{"members": [{"userid", "name"}]}`, text as `text`.
    A file's own name is not in the detail: the field's title names it (`media/get` has the real one)."""
    fields: list[FormField] = []
    for c in contents:
        if not isinstance(c, dict):
            continue
        titles = [str(t.get("text") or "") for t in c.get("title") or [] if isinstance(t, dict)]
        keys = [str(c.get("id") or ""), *titles]
        raw = c.get("value")
        value: dict[str, Any] = raw if isinstance(raw, dict) else {}
        control, label = str(c.get("control") or ""), (titles[0] if titles else "attachment")
        if control == "File":
            files = value.get("files") or []
            fields.append(FormField(keys=keys, kind="file", files=[
                media_source(str(f["file_id"]), f"{label}-{i + 1}.pdf" if len(files) > 1 else f"{label}.pdf")
                for i, f in enumerate(files) if isinstance(f, dict) and f.get("file_id")]))
        elif control == "Contact":
            fields.append(FormField(keys=keys, kind="contact", people=[
                Person(id=str(m["userid"]), name=str(m.get("name") or m["userid"]))
                for m in value.get("members") or [] if isinstance(m, dict) and m.get("userid")]))
        else:
            fields.append(FormField(keys=keys, kind="text", text=str(value.get("text") or "")))
    return fields


def task_id_for(card_key: str, seq: int) -> str:
    """Template card task ids allow letters, digits and `_-@` only; `:` becomes `@` (reversible)."""
    return f"{card_key.replace('@', '_').replace(':', '@')}@{seq}"


def card_key_for(task_id: str) -> str:
    return task_id.rsplit("@", 1)[0].replace("@", ":")


def store_response_code(engine: Engine, task_id: str, code: str) -> bool:
    """Called on a card click: the freshest code is the one the next update uses. False when we
    never sent that card (a forged or foreign task id). A click on a superseded card still counts
    as an action, but its code would update the old message: not kept."""
    card_key = card_key_for(task_id)

    def keep(ref: dict[str, Any]) -> dict[str, Any] | None:
        if not code or task_id_for(card_key, int(ref.get("seq", 1))) != task_id:
            return None
        return {**ref, "response_code": code, "code_at": utcnow().isoformat()}

    return chat_messages.change(engine, PLATFORM, card_key, keep)


class WeComChat(AppChat[WeComConfig]):
    """`ChatConnector` for WeCom."""

    platform, name = PLATFORM, "WeCom"
    max_file_bytes = WECOM_MAX_UPLOAD

    def __repr__(self) -> str:
        return f"WeComChat(corp_id={self.config.corp_id!r}, api_base={self.config.api_base!r})"

    # ---- ChatConnector ------------------------------------------------------------------------

    async def upsert_card(self, chat: ChatRef, card_key: str, card: Card) -> None:
        digest = hashlib.sha256(json.dumps(card.as_dict(), ensure_ascii=False, sort_keys=True).encode()).hexdigest()
        stored = chat_messages.ref(self.engine, PLATFORM, card_key)
        ref: dict[str, Any] = stored or {}
        if ref.get("digest") == digest:
            return  # a retried activity, or nothing changed
        if stored is None:
            ref = {"touser": chat.chat_id, "seq": 1, "superseded": []}
            ref["msgid"], fresh = await self._send_card(chat.chat_id, card_key, card, 1)
            ref["digest"] = digest
            self._save(card_key, chat.chat_id, ref, new=True, fresh=fresh)
            return
        code, at = ref.get("response_code"), ref.get("code_at")
        if code and at and datetime.fromisoformat(at) > utcnow() - CODE_LIFETIME:
            body = {"userids": [ref["touser"]], "atall": 0, "agentid": self.config.agent_id,
                    "response_code": code, "template_card": render_card(card, task_id_for(card_key, ref["seq"]))}
            try:
                await self._call("POST", "/cgi-bin/message/update_template_card", json=body)
            except ChatRejected as e:  # used or expired after all; a rate limit leaves the code unspent
                log.info("card %s: response code refused (%s); sending a new card", card_key, e)
                self._save(card_key, chat.chat_id, ref, spent=code)
            else:
                ref["digest"] = digest
                self._save(card_key, chat.chat_id, ref, spent=code)
                return
        # Fallback: no usable response code → a new card; the old one is marked superseded.
        seq = int(ref.get("seq", 1)) + 1
        msgid, fresh = await self._send_card(ref.get("touser", chat.chat_id), card_key, card, seq)
        ref["superseded"] = [*ref.get("superseded", []), ref.get("msgid")]
        ref.update(msgid=msgid, seq=seq, digest=digest)
        self._save(card_key, chat.chat_id, ref, fresh=fresh)  # the old card's code is useless now

    async def send_link(self, chat: ChatRef, to: Person, text: str, sign_url: str | None, key: str) -> None:
        if to.external:  # no userid to reach them: the initiator forwards the link
            text = f"请将签署链接转发给 {to.name}（please forward to {to.name}）：{text}"
            await self._send(chat.chat_id, {"msgtype": "text", "text": {"content": text}})
            return
        if sign_url is None:
            await self._send(to.id, {"msgtype": "text", "text": {"content": text}})
            return
        await self._send(to.id, {"msgtype": "textcard", "textcard": {
            "title": "请签署文件" if "提醒" not in text else "签署提醒", "description": text[:500],
            "url": sign_url, "btntxt": "去签署"}})

    async def send_text(self, chat: ChatRef, to: Person | None, text: str, key: str) -> None:
        await self._send(to.id if to and not to.external else chat.chat_id,
                         {"msgtype": "text", "text": {"content": text}})

    async def send_file(self, chat: ChatRef, to: Person | None, file: OutboundFile, key: str) -> None:
        """`media/upload?type=file` (multipart part `media`; the file name is what people see) →
        `media_id` (3 days), then `message/send` msgtype `file` to the initiator's conversation or the
        person; over 20 MB a `textcard` with the download link and the reason."""
        touser = to.id if to is not None and not to.external else chat.chat_id
        if file.data is None:
            what = "签署完成证明" if file.kind == "certificate" else "已签署"
            await self._send(touser, {"msgtype": "textcard", "textcard": {
                "title": f"{what}：{file.name}"[:128],
                "description": ((f"{file.note}\n" if file.note else "") + f"SHA-256: {file.sha256}")[:512],
                "url": file.url, "btntxt": "下载"}})
            return
        try:
            media_id = await self._upload_media(file.name, file.data)
        except ChatUnavailable as e:
            raise upload_failed(e) from e
        await self._send(touser, {"msgtype": "file", "file": {"media_id": media_id}})

    async def _upload_media(self, name: str, data: bytes) -> str:
        async def send(token: str) -> dict[str, Any]:
            resp = await self._http_call("POST", self._url("/cgi-bin/media/upload"), "/cgi-bin/media/upload",
                                         params={"access_token": token, "type": "file"},
                                         files={"media": (name, data, "application/pdf")})
            raise_for_status(resp, "WeCom /cgi-bin/media/upload")
            result: dict[str, Any] = resp.json()
            self._refused(result, "/cgi-bin/media/upload")
            return result

        return str((await self.token.call(send))["media_id"])

    async def download(self, chat: ChatRef, source: DocumentSource, max_bytes: int) -> bytes:
        """`media/get`: 3-day-old media is gone (40007) → `InputProblem`; over `max_bytes` → same."""
        if not (source.url or "").startswith(MEDIA_SCHEME):
            raise InputProblem(f"文件 {source.name} 不是企业微信文件（{source.name} is not a WeCom file）")
        media_id = (source.url or "").removeprefix(MEDIA_SCHEME)
        mb = max_bytes // (1024 * 1024)

        async def get(token: str) -> bytes:
            try:
                async with self._session() as http, http.stream(
                        "GET", self._url("/cgi-bin/media/get"), params={"access_token": token, "media_id": media_id},
                        timeout=self.config.timeout_seconds * 3) as resp:
                    if resp.headers.get("content-type", "").startswith(("application/json", "text/plain")):
                        data = json.loads(await resp.aread())
                        if int(data.get("errcode", 0)) in MEDIA_GONE:
                            raise InputProblem(f"文件 {source.name} 已过期或无法获取，请重新发送（WeCom keeps files "
                                               f"for 3 days; send {source.name} again）")
                        self._refused(data, "media/get")
                    raise_for_status(resp, "WeCom media/get")
                    return await read_within(resp, max_bytes, InputProblem(
                        f"{source.name}: 文件超过 {mb} MB 的上限（larger than {mb} MB）"))
            except httpx.HTTPError as e:
                raise unreachable("WeCom media/get", e) from e

        return await self.token.call(get)

    async def resolve(self, chat: ChatRef, person: Person) -> Person:
        """`user/get`; departed/disabled (status != 1) → `InputProblem`. Apps created after 2022-06-20
        get no email/mobile there, so those come from the directory cache (`identities import`)."""
        async def lookup() -> Contact:
            try:
                data = await self._call("GET", "/cgi-bin/user/get", params={"userid": person.id})
            except ChatRejected as e:
                if e.status in USER_UNKNOWN:
                    raise InputProblem(f"找不到企业微信用户 {person.name}（{person.name} is not a WeCom user here）") \
                        from e
                raise
            return Contact(name=str(data.get("name") or person.name), active=int(data.get("status", 1)) == 1,
                           email=str(data.get("email") or data.get("biz_mail") or "") or None,
                           mobile=str(data.get("mobile") or "") or None)

        return await self.directory.resolve(chat, person, lookup)

    # ---- approvals ------------------------------------------------------------------------------

    async def read_approval(self, ref: ApprovalRef) -> ApprovalForm:
        """`POST /cgi-bin/oa/getapprovaldetail {sp_no}`: approved when `sp_status` is 2."""
        try:
            data = await self._call("POST", "/cgi-bin/oa/getapprovaldetail", json={"sp_no": ref.instance_id})
        except ChatRejected as e:
            raise InputProblem(f"企业微信找不到审批单 {ref.instance_id}（WeCom refused the approval: {e}）") from e
        info = data.get("info") or {}
        status = str(info.get("sp_status") or "")
        return ApprovalForm(instance_id=ref.instance_id, definition=str(info.get("template_id") or ref.definition),
                            approved=status == "2", status=status, title=str(info.get("sp_name") or ""),
                            initiator_id=str((info.get("applyer") or {}).get("userid") or ""),
                            fields=form_fields((info.get("apply_data") or {}).get("contents") or []))

    async def write_back(self, chat: ChatRef, ref: ApprovalRef, result: ApprovalResult, key: str) -> None:
        """WeCom has no API to comment on an approval: the initiator gets the result as a message."""
        await self._send(result.initiator_id or ref.initiator_id, {"msgtype": "text", "text": {
            "content": f"审批 {ref.instance_id}：{result.text}"}})

    # ---- cards and messages ---------------------------------------------------------------------

    async def _send_card(self, touser: str, card_key: str, card: Card, seq: int) -> tuple[str, str | None]:
        """Sends the card; WeCom answers with its msgid and a first response code (for one update)."""
        data = await self._send(touser, {"msgtype": "template_card",
                                         "template_card": render_card(card, task_id_for(card_key, seq))})
        return str(data.get("msgid", "")), data.get("response_code") or None

    async def _send(self, touser: str, message: dict[str, Any]) -> dict[str, Any]:
        body = {"touser": touser, "agentid": self.config.agent_id, "enable_duplicate_check": 1,
                "duplicate_check_interval": 300, **message}
        return await self._call("POST", "/cgi-bin/message/send", json=body)

    def _save(self, card_key: str, chat_id: str, ref: dict[str, Any], new: bool = False,
              spent: str | None = None, fresh: str | None = None) -> None:
        """Write our fields. The stored response code may have been replaced by a click meanwhile:
        keep what the row holds now unless it is the code we just `spent` or we got a `fresh` one."""
        current = {} if new else (chat_messages.ref(self.engine, PLATFORM, card_key) or {})
        code, at = current.get("response_code"), current.get("code_at")
        if spent is not None and code == spent:
            code, at = None, None
        if fresh:
            code, at = fresh, utcnow().isoformat()
        chat_messages.save(self.engine, PLATFORM, card_key, chat_id, {**ref, "response_code": code, "code_at": at})

    # ---- HTTP, token and errors -----------------------------------------------------------------

    def _url(self, path: str) -> str:
        return self.config.api_base.rstrip("/") + path

    async def _fetch_token(self) -> tuple[str, float]:
        params = {"corpid": self.config.corp_id, "corpsecret": self.config.corp_secret.get_secret_value()}
        data = await self._request("GET", "/cgi-bin/gettoken", params, None, token_call=True)
        return str(data["access_token"]), float(data.get("expires_in", 7200))

    async def _call(self, method: str, path: str, params: dict[str, Any] | None = None,
                    json: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.token.call(
            lambda token: self._request(method, path, {**(params or {}), "access_token": token}, json))

    async def _request(self, method: str, path: str, params: dict[str, Any], json: dict[str, Any] | None,
                       token_call: bool = False) -> dict[str, Any]:
        resp = await self._http_call(method, self._url(path), path, params=params, json=json)
        raise_for_status(resp, f"WeCom {path}")
        data: dict[str, Any] = resp.json()
        self._refused(data, path, token_call)
        return data

    def _refused(self, data: dict[str, Any], what: str, token_call: bool = False) -> None:
        """Nothing when `errcode` is 0; else the refusal the way the caller's retries need it."""
        errcode = int(data.get("errcode", 0))
        if errcode == 0:
            return
        message = f"WeCom {what}: errcode {errcode} {data.get('errmsg', '')}"[:300]
        if errcode in TOKEN_ERRORS and not token_call:
            raise TokenRefused(message)
        if errcode in RATE_LIMITED or errcode in TOKEN_ERRORS:
            raise ChatUnavailable(message, retry_after=self.config.rate_limit_backoff)
        raise ChatRejected(message, errcode)


def build(settings: Settings, http: httpx.AsyncClient) -> WeComChat | None:
    config = WeComConfig()
    if not config.enabled:
        return None
    return WeComChat(config, get_engine(settings.sqlalchemy_url), http, lang=settings.language_for(PLATFORM))
