"""DingTalk (钉钉) internal app + robot: cards, messages, files and the user directory.

Why it is built this way:

* **One card per request, keyed by a stable `outTrackId`.** The id is derived from the card key
  (`track_id_for`), so a retried activity whose `createAndDeliver` went through but whose answer
  was lost cannot create a second card: DingTalk refuses the repeated outTrackId (codes in
  `duplicate_codes`, unconfirmed → configurable) and we fall through to the update. The id and
  a digest of the last content live in `ChatMessage`; updates `PUT /v1.0/card/instances` on the
  same outTrackId, and only when the content changed.
* **Who receives what.** A group chat (`conversationType` "2") is addressed by its
  `openConversationId` (`ChatRef.chat_id`): the card, plain texts and the signed file go there
  (`groupMessages/send`). A 1:1 chat's `chat_id` is the sender's staffId, reached with
  `oToMessages/batchSend`, as is every signer's link. External signers have no staffId: their
  link goes to the chat to be forwarded.
* **Messages** have no dedupe key at DingTalk: the activity sends each one once per key
  (`activities/chat.py`). A request that went out but got no answer is `maybe_delivered`, so
  it is sent again only after a pause.
* **Tokens** (`/v1.0/oauth2/accessToken`, 7200 s): `connectors.chat.app_api`.
* **Errors.** QPS limits (`Forbidden.AccessDenied.QpsLimitForAppkeyAndApi`, 90018, HTTP 429) and
  5xx → `ChatUnavailable(retry_after=Retry-After or rate_limit_backoff)`; any other refusal →
  `ChatRejected`. The api.dingtalk.com (v1.0) APIs answer errors as HTTP 4xx `{code, message}`,
  the oapi.dingtalk.com (topapi) ones as HTTP 200 `{errcode, errmsg}`: both are handled.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import Engine

from connectors.chat.app_api import AppChat, Codes, TokenRefused
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
from connectors.chat.dingtalk.cards import render_card
from connectors.http import json_object, read_within, retry_after
from signbridge.core.approvals import ApprovalForm, ApprovalResult, FormField
from signbridge.core.cards import Card
from signbridge.core.models import ApprovalRef, ChatRef, DocumentSource, Person
from signbridge.core.settings import Settings
from store.db import get_engine
from store.repos import chat_messages
from store.repos.identities import Contact

PLATFORM = "dingtalk"
FILE_SCHEME = "dingtalk-file:"
APPROVAL_SCHEME = "dingtalk-approval:"
ATTACHMENT = "DDAttachment"
CONTACTS = ("InnerContactField",)


def _json_list(raw: Any) -> list[Any]:
    """A form value DingTalk sends as a JSON array string (attachments, contacts' extValue)."""
    if isinstance(raw, list):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else []
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def form_fields(instance: str, values: list[Any]) -> list[FormField]:
    """`formComponentValues` as neutral fields: a `DDAttachment` value is a JSON array of
    `{spaceId, fileName, fileSize, fileType, fileId}`; a contact's `extValue` a JSON array of
    `{emplId, name}` (unconfirmed beyond third-party samples; its `value` holds the names)."""
    fields: list[FormField] = []
    for v in values:
        if not isinstance(v, dict):
            continue
        keys = [str(v.get("id") or ""), str(v.get("name") or ""), str(v.get("bizAlias") or "")]
        kind = str(v.get("componentType") or "")
        if kind == ATTACHMENT:
            files = [DocumentSource(name=str(f.get("fileName") or "attachment.pdf"),
                                    url=f"{APPROVAL_SCHEME}{instance}/{f.get('fileId')}")
                     for f in _json_list(v.get("value")) if isinstance(f, dict) and f.get("fileId")]
            fields.append(FormField(keys=keys, kind="file", files=files))
        elif kind in CONTACTS:
            people = [Person(id=str(p["emplId"]), name=str(p.get("name") or p["emplId"]))
                      for p in _json_list(v.get("extValue")) if isinstance(p, dict) and p.get("emplId")]
            fields.append(FormField(keys=keys, kind="contact", people=people))
        else:
            fields.append(FormField(keys=keys, kind="text", text=str(v.get("value") or "")))
    return fields
DINGTALK_MAX_UPLOAD = 20 * MB  # media/upload, type file (doc, docx, xls, xlsx, ppt, pptx, zip, pdf, rar)


class DingTalkConfig(BaseSettings):
    """`SIGNBRIDGE_DINGTALK_*`. Enabled when app_key and app_secret are set; the encrypted event
    subscription additionally needs `aes_key` and `token`."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_DINGTALK_", env_file=None, extra="ignore")

    app_key: str = ""
    app_secret: SecretStr = SecretStr("")
    robot_code: str = ""  # empty: the app key (the default robot of an internal app)
    aes_key: SecretStr = SecretStr("")
    token: SecretStr = SecretStr("")
    owner_key: str = ""  # the key the event plaintext ends with; empty: app_key (internal apps)
    card_template_id: str = ""
    callback_route_key: str = ""  # HTTP card callbacks (registered with /v1.0/card/callbacks/register)
    api_base: str = "https://api.dingtalk.com"
    oapi_base: str = "https://oapi.dingtalk.com"
    bot_name: str = ""  # the robot's display name when it differs from SIGNBRIDGE_BOT_NAME
    # Our organisation's corpId: a sender whose `senderCorpId` differs is external (a cross-org
    # group). Empty: the message's `chatbotCorpId` (whether the two compare is unconfirmed).
    corp_id: str = ""
    robot_tolerance_seconds: int = 3600
    event_tolerance_seconds: int = 3600
    rate_limit_backoff: float = 1.0  # DingTalk gives no Retry-After on QPS limits
    directory_cache_seconds: int = 600
    timeout_seconds: float = 10.0
    # unconfirmed beyond the first
    token_codes: Codes = frozenset({"InvalidAuthentication", "Unauthorized", "40014", "42001", "40001", "88"})
    rate_limit_codes: Codes = frozenset({"Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", "90018", "90002", "-1"})
    duplicate_codes: Codes = frozenset({"param.duplicateOutTrackId", "duplicateOutTrackId"})  # unconfirmed
    user_gone_codes: Codes = frozenset({"60121", "33012"})  # user not found / invalid userid

    @property
    def enabled(self) -> bool:
        return bool(self.app_key and self.app_secret.get_secret_value())

    @property
    def events_enabled(self) -> bool:
        return self.enabled and bool(self.aes_key.get_secret_value() and self.token.get_secret_value())

    @property
    def robot(self) -> str:
        return self.robot_code or self.app_key


def file_source(download_code: str, name: str) -> DocumentSource:
    """How a file from a robot message travels through the workflow: its downloadCode."""
    return DocumentSource(name=name, url=f"{FILE_SCHEME}{download_code}")


def track_id_for(card_key: str) -> str:
    """Stable outTrackId for a card key (letters and digits only, well under DingTalk's limit)."""
    return "sb" + hashlib.sha256(card_key.encode()).hexdigest()[:40]


def card_key_for_track(engine: Engine, out_track_id: str) -> str | None:
    """The request a card callback belongs to; None for a card we never sent."""
    return chat_messages.key_by_ref(engine, PLATFORM, "outTrackId", out_track_id)


class DingTalkChat(AppChat[DingTalkConfig]):
    """`ChatConnector` for DingTalk."""

    platform, name = PLATFORM, "DingTalk"
    max_file_bytes = DINGTALK_MAX_UPLOAD

    def __repr__(self) -> str:  # never the secret
        return f"DingTalkChat(app_key={self.config.app_key!r}, api_base={self.config.api_base!r})"

    # ---- ChatConnector ------------------------------------------------------------------------

    async def upsert_card(self, chat: ChatRef, card_key: str, card: Card) -> None:
        params = render_card(card)
        digest = hashlib.sha256(json.dumps(params, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        track = track_id_for(card_key)
        ref = chat_messages.ref(self.engine, PLATFORM, card_key)
        if ref is not None and ref.get("digest") == digest:
            return  # a retried activity, or nothing changed
        if ref is None:
            try:
                body = self._deliver_body(chat, track, params)
                await self._api("POST", "/v1.0/card/instances/createAndDeliver", body)
            except ChatRejected as e:
                if e.code not in self.config.duplicate_codes:
                    raise
                await self._put_card(track, params)  # created by an earlier attempt whose answer was lost
        else:
            await self._put_card(track, params)
        chat_messages.save(self.engine, PLATFORM, card_key, chat.chat_id, {"outTrackId": track, "digest": digest})

    async def send_link(self, chat: ChatRef, to: Person, text: str, sign_url: str | None, key: str) -> None:
        if to.external:  # no staffId to reach them: the chat forwards the link
            text = f"请将签署链接转发给 {to.name}（please forward to {to.name}）：{text}"
            await self._send(chat, None, "sampleText", {"content": text})
        elif sign_url is None:
            await self._send(chat, to.id, "sampleText", {"content": text})
        else:
            title = "签署提醒" if text.startswith(("提醒", "Reminder")) else "请签署文件"
            await self._send(chat, to.id, "sampleLink", {"title": title, "text": text[:500],
                                                         "messageUrl": sign_url, "picUrl": ""})

    async def send_text(self, chat: ChatRef, to: Person | None, text: str, key: str) -> None:
        await self._send(chat, to.id if to and not to.external else None, "sampleText", {"content": text})

    async def send_file(self, chat: ChatRef, to: Person | None, file: OutboundFile, key: str) -> None:
        """oapi `media/upload` (multipart part `media`, type `file`) → `media_id`, then a robot
        `sampleFile` message to the group or the person; over 20 MB a `sampleLink` with the reason."""
        target = to.id if to is not None and not to.external else None
        if file.data is None:
            what = "签署完成证明" if file.kind == "certificate" else "已签署"
            await self._send(chat, target, "sampleLink", {
                "title": f"{what}：{file.name}"[:100],
                "text": (f"{file.note}\n" if file.note else "") + f"SHA-256: {file.sha256}",
                "messageUrl": file.url, "picUrl": ""})
            return
        try:
            media_id = await self._upload_media(file.name, file.data)
        except ChatUnavailable as e:
            raise upload_failed(e) from e
        await self._send(chat, target, "sampleFile", {"mediaId": media_id, "fileName": file.name,
                                                      "fileType": file.name.rsplit(".", 1)[-1].lower() or "pdf"})

    async def _upload_media(self, name: str, data: bytes) -> str:
        url = self.config.oapi_base.rstrip("/") + "/media/upload"

        async def send(token: str) -> dict[str, Any]:
            # `type` in the URL as well as the form: some clients are refused (40004) without it
            resp = await self._http_call("POST", url, "media/upload", params={"access_token": token, "type": "file"},
                                         data={"type": "file"}, files={"media": (name, data, "application/pdf")})
            return self._check(resp, "/media/upload")

        result = await self.token.call(send)
        return str(result["media_id"])

    async def download(self, chat: ChatRef, source: DocumentSource, max_bytes: int) -> bytes:
        """`messageFiles/download` → a short-lived `downloadUrl`, fetched at once (re-asked on retry)."""
        if (source.url or "").startswith(APPROVAL_SCHEME):
            return await self._approval_file(source, max_bytes)
        if not (source.url or "").startswith(FILE_SCHEME):
            raise InputProblem(f"文件 {source.name} 不是钉钉消息中的文件（{source.name} is not a DingTalk file）")
        code = (source.url or "").removeprefix(FILE_SCHEME)
        try:
            data = await self._api("POST", "/v1.0/robot/messageFiles/download",
                                   {"robotCode": self.config.robot, "downloadCode": code})
        except ChatRejected as e:
            raise InputProblem(f"无法获取文件 {source.name}，请重新发送（DingTalk refused the file: {e}; "
                               "send it again）") from e
        return await self._fetch(source, str(data.get("downloadUrl")), max_bytes)

    async def _fetch(self, source: DocumentSource, url: str, max_bytes: int) -> bytes:
        mb = max_bytes // (1024 * 1024)
        too_big = InputProblem(f"{source.name}: 文件超过 {mb} MB 的上限（larger than {mb} MB）")
        try:
            async with self._session() as http, http.stream("GET", url,
                                                            timeout=self.config.timeout_seconds * 6) as resp:
                if resp.status_code in (403, 404, 410):
                    raise InputProblem(f"文件 {source.name} 已过期，请重新发送（the file link expired; send it again）")
                raise_for_status(resp, "DingTalk file download")
                return await read_within(resp, max_bytes, too_big)
        except httpx.HTTPError as e:
            raise unreachable("DingTalk file download", e) from e

    async def resolve(self, chat: ChatRef, person: Person) -> Person:
        """`topapi/v2/user/get`; `active: false` or unknown → `InputProblem`. Kept in the directory cache."""
        async def lookup() -> Contact:
            try:
                result = await self._oapi("/topapi/v2/user/get", {"userid": person.id, "language": "zh_CN"})
            except ChatRejected as e:
                if e.code in self.config.user_gone_codes:
                    raise InputProblem(f"找不到钉钉用户 {person.name}，可能已离职（{person.name} is not a DingTalk "
                                       "user here; they may have left the company）") from e
                raise
            user = result.get("result") or {}
            return Contact(name=str(user.get("name") or person.name), active=bool(user.get("active", True)),
                           email=str(user.get("email") or user.get("org_email") or "") or None,
                           mobile=str(user.get("mobile") or "") or None)

        return await self.directory.resolve(chat, person, lookup)

    # ---- approvals (OA workflow) --------------------------------------------------------------

    async def read_approval(self, ref: ApprovalRef) -> ApprovalForm:
        """`GET /v1.0/workflow/processInstances?processInstanceId=`: passed when COMPLETED and agreed."""
        try:
            data = await self._request("GET", self.config.api_base.rstrip("/") + "/v1.0/workflow/processInstances",
                                       None, header=True, params={"processInstanceId": ref.instance_id})
        except ChatRejected as e:
            raise InputProblem(f"钉钉找不到审批实例 {ref.instance_id}（DingTalk refused the approval instance: "
                               f"{e}）") from e
        result = data.get("result") or {}
        status, outcome = str(result.get("status") or ""), str(result.get("result") or "")
        return ApprovalForm(instance_id=ref.instance_id, definition=ref.definition,
                            approved=status == "COMPLETED" and outcome == "agree", status=f"{status}/{outcome}",
                            title=str(result.get("title") or ""),
                            initiator_id=str(result.get("originatorUserId") or ""),
                            fields=form_fields(ref.instance_id, result.get("formComponentValues") or []))

    async def _approval_file(self, source: DocumentSource, max_bytes: int) -> bytes:
        """A grant for one attachment: its `downloadUri` is valid 15 minutes, so it is asked for anew
        on every try."""
        instance, _, file_id = (source.url or "").removeprefix(APPROVAL_SCHEME).partition("/")
        try:
            data = await self._api("POST", "/v1.0/workflow/processInstances/spaces/files/urls/download",
                                   {"processInstanceId": instance, "fileId": file_id,
                                    "withCommentAttatchment": False})  # sic: DingTalk's spelling
        except ChatRejected as e:
            raise InputProblem(f"无法获取审批附件 {source.name}（DingTalk refused the attachment: {e}）") from e
        return await self._fetch(source, str((data.get("result") or {}).get("downloadUri")), max_bytes)

    async def write_back(self, chat: ChatRef, ref: ApprovalRef, result: ApprovalResult, key: str) -> None:
        """A comment on the instance, in the initiator's name; the signed files as links in its text
        (DingTalk attaches only files already in the approval's space)."""
        await self._api("POST", "/v1.0/workflow/processInstances/comments", {
            "processInstanceId": ref.instance_id, "text": result.text[:2000],
            "commentUserId": result.initiator_id or ref.initiator_id})

    # ---- cards and messages -------------------------------------------------------------------

    def _deliver_body(self, chat: ChatRef, track: str, params: dict[str, str]) -> dict[str, Any]:
        # Button clicks come to the callback route registered for HTTP, or, without one, over
        # the Stream connection of `signbridge chat-listener` (DingTalk sends them only there).
        body: dict[str, Any] = {"cardTemplateId": self.config.card_template_id, "outTrackId": track,
                                "cardData": {"cardParamMap": params},
                                "callbackType": "HTTP" if self.config.callback_route_key else "STREAM",
                                "userIdType": 1}
        if self.config.callback_route_key:
            body["callbackRouteKey"] = self.config.callback_route_key
        if chat.chat_kind == "group":
            body.update(openSpaceId=f"dtv1.card//IM_GROUP.{chat.chat_id}",
                        imGroupOpenSpaceModel={"supportForward": True},
                        imGroupOpenDeliverModel={"robotCode": self.config.robot})
        else:
            body.update(openSpaceId=f"dtv1.card//IM_ROBOT.{chat.chat_id}",
                        imRobotOpenSpaceModel={"supportForward": True},
                        imRobotOpenDeliverModel={"spaceType": "IM_ROBOT", "robotCode": self.config.robot})
        return body

    async def _put_card(self, track: str, params: dict[str, str]) -> None:
        await self._api("PUT", "/v1.0/card/instances", {
            "outTrackId": track, "cardData": {"cardParamMap": params},
            "cardUpdateOptions": {"updateCardDataByKey": True}, "userIdType": 1})

    async def _send(self, chat: ChatRef, to: str | None, msg_key: str, param: dict[str, str]) -> None:
        """To one person (`batchSend`) or to the chat (`groupMessages/send`)."""
        msg_param = json.dumps(param, ensure_ascii=False)
        if to is None and chat.chat_kind != "group":
            to = chat.chat_id  # a 1:1 chat's chat_id is the user's staffId
        if to is None:
            await self._api("POST", "/v1.0/robot/groupMessages/send", {
                "robotCode": self.config.robot, "openConversationId": chat.chat_id,
                "msgKey": msg_key, "msgParam": msg_param})
        else:
            await self._api("POST", "/v1.0/robot/oToMessages/batchSend", {
                "robotCode": self.config.robot, "userIds": [to], "msgKey": msg_key, "msgParam": msg_param})

    # ---- HTTP, token and errors ---------------------------------------------------------------

    async def _fetch_token(self) -> tuple[str, float]:
        body = {"appKey": self.config.app_key, "appSecret": self.config.app_secret.get_secret_value()}
        resp = await self._http_call("POST", self.config.api_base.rstrip("/") + "/v1.0/oauth2/accessToken",
                                     "accessToken", json=body)
        data = self._check(resp, "accessToken", token_call=True)
        return str(data["accessToken"]), float(data.get("expireIn", 7200))

    async def _api(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """api.dingtalk.com (v1.0): token in `x-acs-dingtalk-access-token`."""
        return await self._request(method, self.config.api_base.rstrip("/") + path, body, header=True)

    async def _oapi(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """oapi.dingtalk.com (topapi): token as the `access_token` query parameter."""
        return await self._request("POST", self.config.oapi_base.rstrip("/") + path, body, header=False)

    async def _request(self, method: str, url: str, body: dict[str, Any] | None, header: bool,
                       params: dict[str, str] | None = None) -> dict[str, Any]:
        async def send(token: str) -> dict[str, Any]:
            kwargs: dict[str, Any] = {"headers": {"x-acs-dingtalk-access-token": token}, "params": params} if header \
                else {"params": {**(params or {}), "access_token": token}}
            if body is not None:
                kwargs["json"] = body
            resp = await self._http_call(method, url, f"{method} {url}", **kwargs)
            return self._check(resp, url.split(".com", 1)[-1])

        return await self.token.call(send)

    def _check(self, resp: httpx.Response, what: str, token_call: bool = False) -> dict[str, Any]:
        data = json_object(resp)
        code = str(data.get("code") or data.get("errcode") or "")
        code = "" if code == "0" else code
        message = f"DingTalk {what}: HTTP {resp.status_code} {code} {data.get('message') or data.get('errmsg') or ''}"
        if resp.status_code == 429 or code in self.config.rate_limit_codes:
            retry = retry_after(resp)
            raise ChatUnavailable(message[:300], retry_after=retry if retry is not None
                                  else self.config.rate_limit_backoff)
        if code in self.config.token_codes and not token_call:
            raise TokenRefused(message)
        if resp.status_code >= 500 or resp.status_code == 408:
            raise ChatUnavailable(message[:300])
        if resp.status_code >= 400 or code:
            raise ChatRejected(message[:300], resp.status_code, code)
        return data


def build(settings: Settings, http: httpx.AsyncClient) -> DingTalkChat | None:
    config = DingTalkConfig()
    if not config.enabled:
        return None
    return DingTalkChat(config, get_engine(settings.sqlalchemy_url), http, lang=settings.language_for(PLATFORM))
