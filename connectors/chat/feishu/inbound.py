"""Feishu/Lark callbacks (`POST /im/feishu/events`, `POST /im/feishu/card`) and long-connection frames.

Verification happens on the raw bytes before anything is trusted:

* With an Encrypt Key, `X-Lark-Signature = sha256(timestamp + nonce + encrypt_key + raw_body)`
  is checked first, in constant time, with the timestamp inside `timestamp_tolerance_seconds`
  (a Feishu retry is assumed to be re-signed with a fresh timestamp — unconfirmed, hence
  configurable). The body must be `{"encrypt": …}` (AES-256-CBC, key = SHA-256(encrypt key),
  lark-oapi's `AESCipher`). Only `url_verification` may come unsigned (Feishu does not sign
  it); it is answered after it decrypted and its token matched.
* The verification token (`header.token` in schema 2.0, `token` in 1.0) must match.
  Anything that fails gets 401 and starts nothing.

Then `parse` (shared with the long connection, which receives the same JSON already
authenticated by the connection itself):

* A file message is a `ChatEvent` with the file: Feishu cannot put a file and text in one
  message, so a command names the file by replying to it or by following it. A reply to a file
  we never received (groups without the read-all scope) becomes `feishu://{message_id}/` and the
  download asks Feishu for its file.
* A text message becomes a `ChatEvent`: `@_user_1` placeholders back to `@name`, as typed. A
  sender or mention whose `tenant_key` differs from the header's (the tenant that installed the
  app) is someone of another company — a customer in an external group, an external contact —
  and becomes `Person(external=True)`: never looked up in our directory, reached by the contact
  the command gives (`@王总 13812341234`).
* `contact.user.deleted_v3` (someone left the company) becomes a `Departure`: the intake flags
  them on every open flow still waiting for them ("replace signer" on the card).
* A card button (`card.action.trigger`) becomes a `ChatAction` with the callback's event id as
  update id; Feishu wants an answer within 3 s, and it is a toast.
"""

from __future__ import annotations

import binascii
import hashlib
from typing import Any

from lark_oapi.core.utils import AESCipher
from sqlalchemy.engine import Engine

from connectors.chat.base import ChatConnector
from connectors.chat.callback import (
    Callback,
    CallbackRejected,
    Received,
    Reply,
    Route,
    Rules,
    embedded_object,
    invalid,
    json_object,
)
from connectors.chat.feishu.client import PLATFORM, FeishuConfig, source_url
from signbridge.core import chat
from signbridge.core.models import Actor, Person
from signbridge.core.settings import Settings
from signbridge.core.untrusted import is_stale, load_json, same

ROUTES = (Route("/im/feishu/events"), Route("/im/feishu/card"))
MAX_BODY_BYTES = 1024 * 1024
MESSAGE_EVENT = "im.message.receive_v1"
DEPARTED_EVENT = "contact.user.deleted_v3"  # someone left the company (a signer to flag on open flows)
CARD_EVENT = "card.action.trigger"
APPROVAL_EVENT = "approval_instance"  # v1 envelope (`type: event_callback`)
APPROVAL_EVENT_V2 = "approval.instance.status_changed_v4"  # schema 2.0, as the SDK names it
APPROVED = "APPROVED"
REVOKED = frozenset({"REVERTED", "CANCELED", "DELETED"})  # taken back: a flow it started is cancelled
REPLIED_FILE = "document.pdf"  # name of a replied-to file we never saw; Feishu's message API has no name
NO_FILE = ("没有找到要签署的文件：请先发送合同文件，再回复该文件 @机器人 签署"
           "（No document to sign: send the contract file first, then reply to it with the sign command）")
DONE = {"remind": ("已发送催签提醒", "Reminders sent"), "cancel": ("已撤销签署", "The request is cancelled"),
        "retry": ("正在重试", "Retrying"), "approve_seal": ("已同意用印", "Seal use approved"),
        "refuse_seal": ("已拒绝用印", "Seal use refused")}


def _replied_file(event: chat.ChatEvent) -> tuple[chat.FileRef, ...]:
    """A reply to a file we never received: the download asks Feishu which file that message holds."""
    return (chat.FileRef(REPLIED_FILE, source_url(event.reply_to, "")),) if event.reply_to else ()


RULES = Rules(deadline=chat.Deadline(accept=2.5, result=0.3), no_file=NO_FILE, fallback_files=_replied_file)


# ---- crypto -----------------------------------------------------------------------------------

def decrypt(encrypt_key: str, encrypted: str) -> str:
    """Feishu's `encrypt` field → plaintext JSON (lark-oapi's AESCipher: key = SHA-256(key), IV prefix)."""
    return AESCipher(encrypt_key).decrypt_str(encrypted)


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def toast(kind: str, zh: str, en: str) -> dict[str, Any]:
    return {"toast": {"type": kind, "content": f"{zh}（{en}）", "i18n": {"zh_cn": zh, "en_us": en}}}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


UNKNOWN_ACTION = toast("error", "无法识别的操作", "Unknown action")


def _outside(who: Any, ours: str) -> bool:
    """Someone of another tenant (an external group's customer, an external contact): their
    `tenant_key` differs from the event header's, the tenant that installed the app."""
    theirs = str(_dict(who).get("tenant_key") or "")
    return bool(ours and theirs and theirs != ours)


class FeishuInbound:
    platform = PLATFORM
    rules = RULES
    max_body = MAX_BODY_BYTES

    def __init__(self, config: FeishuConfig) -> None:
        self.config = config

    def __repr__(self) -> str:  # never the secrets
        return f"FeishuInbound(app_id={self.config.app_id!r})"

    async def receive(self, call: Callback) -> Received:
        data = self.verified(call)
        if data.get("type") == "url_verification":
            return Reply(200, {"challenge": data.get("challenge", "")})
        return self.parse(data)

    def verified(self, call: Callback) -> dict[str, Any]:
        """The decrypted, authenticated callback body; `CallbackRejected(401)` for anything forged or stale."""
        outer = json_object(call.body)
        key = self.config.encrypt_key.get_secret_value()
        signed = "X-Lark-Signature" in call.headers
        if key and signed:  # checked on the raw bytes, before we decrypt anything
            self._check_signature(call, key)
        if key:
            if not isinstance(outer.get("encrypt"), str):
                raise CallbackRejected(401, "not_encrypted",
                                       "An Encrypt Key is configured: callbacks must be encrypted")
            try:
                data = load_json(decrypt(key, outer["encrypt"]))
            except (ValueError, binascii.Error, UnicodeDecodeError) as e:  # UntrustedInputError included
                raise CallbackRejected(401, "bad_encryption",
                                       "The callback could not be decrypted with our Encrypt Key") from e
            if not isinstance(data, dict):
                raise CallbackRejected(401, "bad_encryption", "The decrypted callback is not a JSON object")
        elif "encrypt" in outer:
            raise CallbackRejected(401, "bad_encryption", "Encrypted callback but no Encrypt Key is configured")
        else:
            data = outer
        if key and not signed and data.get("type") != "url_verification":
            raise CallbackRejected(401, "bad_signature", "Rejected: missing X-Lark-Signature")
        header = _dict(data.get("header"))
        token = str(header.get("token") or data.get("token") or "")
        expected = self.config.verification_token.get_secret_value()
        if expected and not same(token, expected):
            raise CallbackRejected(401, "bad_token", "Rejected: the verification token does not match")
        return data

    def _check_signature(self, call: Callback, key: str) -> None:
        ts = call.headers.get("X-Lark-Request-Timestamp", "")
        nonce = call.headers.get("X-Lark-Request-Nonce", "")
        given = call.headers.get("X-Lark-Signature", "")
        if not (ts and given):
            raise CallbackRejected(401, "bad_signature", "Rejected: missing X-Lark-Signature or timestamp")
        if not same(given.lower(), signature(ts, nonce, key, call.body)):
            raise CallbackRejected(401, "bad_signature", "Rejected: X-Lark-Signature does not match")
        tolerance = self.config.timestamp_tolerance_seconds
        if is_stale(ts, tolerance):
            raise CallbackRejected(401, "stale", f"Rejected: the request timestamp is more than {tolerance} s off")

    # ---- an authenticated event (HTTP callback or long connection) -------------------------------

    def parse(self, data: dict[str, Any]) -> Received:
        header, event = _dict(data.get("header")), _dict(data.get("event"))
        if data.get("type") == "event_callback" and event.get("type") == APPROVAL_EVENT:
            return self._approval(str(data.get("uuid") or ""), event)
        kind = header.get("event_type")
        if kind == APPROVAL_EVENT_V2:
            return self._approval(str(header.get("event_id") or ""), {"tenant_key": header.get("tenant_key"),
                                                                      **_dict(event.get("object")), **event})
        if kind == CARD_EVENT:
            return self._card(header, event)
        if kind == DEPARTED_EVENT:
            user = _dict(event.get("object"))
            ids = tuple(i for i in (str(user.get("open_id") or ""), str(user.get("user_id") or "")) if i)
            return chat.Departure(platform=PLATFORM, tenant=str(header.get("tenant_key") or "default"), user_ids=ids,
                                  event_id=str(header.get("event_id") or ""))
        if kind != MESSAGE_EVENT:
            return Reply(200, {"ok": True, "ignored": kind})
        return self._message(header, event)

    def _message(self, header: dict[str, Any], event: dict[str, Any]) -> Received:
        message = event.get("message") or {}
        sender = ((event.get("sender") or {}).get("sender_id") or {}).get("open_id") or ""
        ours = str(header.get("tenant_key") or "")  # the tenant that installed the app
        tenant = str(ours or (event.get("sender") or {}).get("tenant_key") or "default")
        event_id, chat_id = str(header.get("event_id") or ""), str(message.get("chat_id") or "")
        if not (event_id and chat_id and sender):
            raise invalid("The message event lacks event_id, chat_id or sender")
        content = embedded_object(message.get("content"))
        message_id = str(message.get("message_id") or "")
        common: dict[str, Any] = {
            "platform": PLATFORM, "tenant": tenant, "chat_id": chat_id,
            "sender": Person(id=sender, name="", external=_outside(event.get("sender"), ours)),
            "event_id": event_id, "message_id": message_id,
            "chat_kind": "direct" if message.get("chat_type") == "p2p" else "group"}
        if message.get("message_type") == "file":
            files = (chat.FileRef(str(content.get("file_name") or "document.pdf"), source_url(message_id,
                                                                                      content["file_key"])),) \
                if message_id and content.get("file_key") else ()
            return chat.ChatEvent(**common, files=files)
        if message.get("message_type") != "text":
            return Reply(200, {"ok": True, "ignored": message.get("message_type")})
        raw = message.get("mentions") or []
        text = str(content.get("text") or "")
        # `@_user_1` placeholders → `@name`, as people typed them (longest key first: `@_user_10`).
        for m in sorted(raw, key=lambda m: -len(m.get("key") or "")):
            if m.get("key"):
                text = text.replace(m["key"], f"@{m.get('name') or ''}")
        mentions = tuple(chat.Mention(Person(id=(m.get("id") or {}).get("open_id") or m.get("key", ""),
                                             name=m.get("name") or "", external=_outside(m, ours))) for m in raw)
        return chat.ChatEvent(**common, text=text, mentions=mentions, reply_to=message.get("parent_id") or None,
                         bot_name=self.config.bot_name or None)

    def _approval(self, event_id: str, event: dict[str, Any]) -> Received:
        """`approval_instance`: ids and a status only — the flow reads the instance (and learns who
        started it) through the approval API. Other statuses than APPROVED start nothing."""
        instance, code = str(event.get("instance_code") or ""), str(event.get("approval_code") or "")
        if not (instance and code):
            raise invalid("The approval event lacks instance_code or approval_code")
        status = str(event.get("status") or "")
        return chat.ApprovalEvent(platform=PLATFORM, tenant=str(event.get("tenant_key") or "default"),
                                  instance_id=instance, event_id=event_id or instance, approved=status == APPROVED,
                                  revoked=status in REVOKED,
                                  initiator=Person(id=str(event.get("open_id") or ""), name=""), definition=code,
                                  status=status)

    def _card(self, header: dict[str, Any], event: dict[str, Any]) -> Received:
        value = (event.get("action") or {}).get("value") or {}
        operator = (event.get("operator") or {}).get("open_id") or ""
        name, request_id = str(value.get("action") or ""), str(value.get("request_id") or "")
        if name not in chat.ACTIONS or not request_id.startswith(f"sign:{PLATFORM}:") or not operator:
            return Reply(200, UNKNOWN_ACTION)
        return chat.ChatAction(request_id=request_id, name=name, actor=Actor(id=operator),
                          update_id=str(header.get("event_id") or "") or None, platform=PLATFORM,
                          tenant=str(header.get("tenant_key") or ""))

    # ---- answers ---------------------------------------------------------------------------------

    def reply(self, received: chat.Incoming, outcome: chat.Outcome) -> Reply:
        if isinstance(received, chat.ChatAction):
            return Reply(200, self.toast_for(received, outcome))
        match outcome:
            case chat.Started() | chat.Duplicate():
                return Reply(200, {"ok": True, "request_id": outcome.request_id,
                                   "started": isinstance(outcome, chat.Started)})
            case chat.Busy():
                return Reply.busy(outcome)  # Feishu delivers the event again
            case chat.Ignored():
                return Reply(200, {"ok": True, "ignored": outcome.reason})
        return Reply(200, {"ok": True})

    @staticmethod
    def toast_for(action: chat.ChatAction, outcome: chat.Outcome) -> dict[str, Any]:
        """A card answer is a toast: Feishu shows it to the person who clicked."""
        match outcome:
            case chat.Applied() | chat.Accepted():
                return toast("success", *DONE[action.name])
            case chat.Refused(code="unknown_action"):
                return UNKNOWN_ACTION
            case chat.Refused():
                return toast("error" if outcome.permission else "warning", outcome.zh, outcome.en)
            case chat.NotFound():
                return toast("warning", "该签署流程已结束或不存在", "The signing request has ended or does not exist")
        return toast("error", "系统繁忙，请稍后重试", "SignBridge could not accept the action in time; retry")


def build(settings: Settings, engine: Engine, chat: ChatConnector | None) -> FeishuInbound | None:
    config = FeishuConfig()
    return FeishuInbound(config) if config.enabled else None


__all__ = ["CARD_EVENT", "MESSAGE_EVENT", "FeishuInbound", "build", "decrypt", "signature", "toast"]
