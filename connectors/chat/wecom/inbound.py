"""`GET`+`POST /im/wecom/events`: the WeCom self-built app's callback URL.

* `GET` is WeCom's URL check: the signature over the (URL-decoded) `echostr` is verified and
  the decrypted echostr is returned as plain text. It has no timestamp window: WeCom sends it
  once when the admin saves the URL, and replaying it reveals nothing and starts nothing.
* `POST` carries encrypted XML. Signature and a 300 s timestamp window are checked before
  anything is decrypted; a forged or stale callback gets 401 and starts nothing.
  - a `file` message carries a file (media id + name), kept for a later command — WeCom
    delivers the file and the command as separate messages;
  - a `text` command becomes a `ChatEvent` with id `MsgId`; WeCom text has no structured
    mentions, so each `@token` is matched against the directory cache (userid or name) and,
    within a small time budget, `user/get`; the flow's `resolve` step checks every signer again.
    External contacts (客户联系) are external signers, never looked up in the directory: an
    `external_userid` (`wo…`/`wm…`) as sender or `@token`, and, in a customer group (`wr…`),
    anyone `user/get` does not know; they are reached by the contact the command gives
    (`@wmXXXX 13812341234`) or the one `signbridge identities import` recorded;
  - a `template_card_event` (button click) stores its fresh `ResponseCode` for the card's next
    update, then becomes a `ChatAction` with an update id derived from the event
    (`FromUserName` + `CreateTime`), so WeCom's retries apply it once.
  - `change_contact` with `ChangeType` `delete_user` (someone left) becomes a `Departure`: the
    intake flags them on every open flow still waiting for them.
  The reply is empty (which stops WeCom's retries) and is sent only after Temporal holds the
  request; WeCom's deadline is 5 s. Temporal out of reach: 503, and WeCom delivers again.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import xmltodict
from sqlalchemy.engine import Engine
from wechatpy.enterprise.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException

from connectors.chat.base import ChatConnector, InputProblem
from connectors.chat.callback import Callback, CallbackRejected, DirectoryInbound, Received, Reply, Route, Rules
from connectors.chat.directory import Departed, resolve_within
from connectors.chat.wecom.client import PLATFORM, WeComConfig, card_key_for, media_source, store_response_code
from signbridge.core import commands
from signbridge.core.chat import (
    ACTIONS,
    ApprovalEvent,
    Busy,
    ChatAction,
    ChatEvent,
    Deadline,
    Departure,
    FileRef,
    Incoming,
    Mention,
    Outcome,
)
from signbridge.core.models import Actor, ChatRef, Person
from signbridge.core.settings import Settings
from signbridge.core.untrusted import is_stale
from store.repos import identities

ROUTES = (Route("/im/wecom/events", ("GET", "POST")),)
TOLERANCE_SECONDS = 300
RESOLVE_BUDGET = 1.5  # seconds of the 5 s deadline spent on user/get at most
NO_FILE = ("没有找到要签署的文件：请先把合同文件发给应用，再发送 /sign 命令"
           "（No document: send the contract file to the app first, then the /sign command）")
RULES = Rules(deadline=Deadline(accept=3.0), no_file=NO_FILE, file_lookback=timedelta(days=3))  # media: 3 days
APPROVAL_EVENT = "sys_approval_change"
APPROVED = "2"  # SpStatus: 1 in progress, 2 approved, 3 rejected, 4 withdrawn, 6 withdrawn after approval, 7 deleted
REVOKED = frozenset({"4", "6", "7"})


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tree(text: str | bytes) -> dict[str, Any]:
    """Nested XML → dict, for events whose fields are nested (`ApprovalInfo`); no DTDs (see `_xml`)."""
    _xml(text)  # refuses DTDs and malformed XML the same way
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    doc = xmltodict.parse(raw, disable_entities=True)
    root = doc.get("xml") if isinstance(doc, dict) else None
    return root if isinstance(root, dict) else {}


# 客户联系: an external contact's `external_userid` starts `wo`/`wm`, a customer group's chat id `wr`
# (the prefixes are what WeCom's ids look like, not a documented contract).
_EXTERNAL_USER = re.compile(r"^w[om][A-Za-z0-9_\-]{8,}$")
_CUSTOMER_GROUP = re.compile(r"^wr[A-Za-z0-9_\-]{8,}$")


def is_external_user(user_id: str) -> bool:
    return bool(_EXTERNAL_USER.match(user_id))


def _xml(text: str | bytes) -> dict[str, str]:
    """Flat XML → dict. Entity declarations are refused outright (no expansion attacks)."""
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    if "<!DOCTYPE" in raw.upper() or "<!ENTITY" in raw.upper():
        raise CallbackRejected(400, "invalid_xml", "DTDs are not accepted")
    try:
        doc = xmltodict.parse(raw, disable_entities=True)
    except Exception as e:  # expat errors
        raise CallbackRejected(400, "invalid_xml", f"The body is not XML: {e}") from e
    root = doc.get("xml") if isinstance(doc, dict) else None
    if not isinstance(root, dict):
        raise CallbackRejected(400, "invalid_xml", "Expected <xml>…</xml>")
    return {k: v.strip() if isinstance(v, str) else "" for k, v in root.items()}


class WeComInbound(DirectoryInbound[WeComConfig]):
    platform = PLATFORM
    rules = RULES

    def _crypto(self) -> WeChatCrypto:
        return WeChatCrypto(self.config.token.get_secret_value(), self.config.encoding_aes_key.get_secret_value(),
                            self.config.corp_id)

    async def receive(self, call: Callback) -> Received:
        q = call.query
        if call.method == "GET":
            return self._url_check(q.get("msg_signature", ""), q.get("timestamp", ""), q.get("nonce", ""),
                                   q.get("echostr", ""))
        timestamp = q.get("timestamp", "")
        if is_stale(timestamp, TOLERANCE_SECONDS):
            raise CallbackRejected(401, "stale", "Rejected: the timestamp is missing or outside the 300 s window")
        outer = _xml(call.body)
        if not outer.get("Encrypt"):
            raise CallbackRejected(400, "invalid_event", "No Encrypt element")
        try:
            plain = self._crypto().decrypt_message(outer, q.get("msg_signature", ""), timestamp, q.get("nonce", ""))
            inner = _xml(plain)
        except InvalidSignatureException as e:
            raise CallbackRejected(401, "bad_signature", "Rejected: the signature does not match") from e
        except CallbackRejected:
            raise
        except Exception as e:  # wrong key, corp id mismatch, bad padding
            raise CallbackRejected(401, "bad_payload",
                                   f"Rejected: the payload does not decrypt ({type(e).__name__})") from e
        kind = inner.get("MsgType", "")
        if kind in ("file", "text"):
            return await self._message(inner)
        if kind == "event" and inner.get("Event") == "template_card_event":
            return self._click(inner)
        if kind == "event" and inner.get("Event") == APPROVAL_EVENT:
            return self._approval(_tree(plain))
        if kind == "event" and inner.get("Event") == "change_contact" and inner.get("ChangeType") == "delete_user" \
                and inner.get("UserID"):
            return Departure(platform=PLATFORM, tenant=self.config.corp_id, user_ids=(inner["UserID"],),
                             event_id=f"delete_user:{inner['UserID']}:{inner.get('CreateTime', '')}")
        return Reply(200, "")

    def _approval(self, event: dict[str, Any]) -> Received:
        """`sys_approval_change`: approved (`SpStatus` 2) starts signing; the flow reads the detail
        (`oa/getapprovaldetail`). There is no event id: the flow's id comes from the approval number,
        so WeCom's retries and later changes of the same approval start nothing new."""
        info = _dict(event.get("ApprovalInfo"))
        sp_no = str(info.get("SpNo") or info.get("SpNoStr") or "")
        if not sp_no:
            raise CallbackRejected(400, "invalid_event", "The approval event lacks ApprovalInfo.SpNo")
        applyer = _dict(info.get("Applyer"))
        status = str(info.get("SpStatus") or "")
        return ApprovalEvent(platform=PLATFORM, tenant=self.config.corp_id, instance_id=sp_no,
                             event_id=f"{sp_no}:{status}", approved=status == APPROVED, revoked=status in REVOKED,
                             definition=str(info.get("TemplateId") or ""), status=status,
                             title=str(info.get("SpName") or ""),
                             initiator=self._known(str(applyer.get("UserId") or "")))

    def _url_check(self, signature: str, timestamp: str, nonce: str, echostr: str) -> Reply:
        try:
            plain = self._crypto().check_signature(signature, timestamp, nonce, echostr)
        except InvalidSignatureException as e:
            raise CallbackRejected(401, "bad_signature", "Rejected: the signature does not match") from e
        except Exception as e:  # signed with our token but not decryptable for our corp
            raise CallbackRejected(401, "bad_payload",
                                   f"Rejected: the echostr does not decrypt ({type(e).__name__})") from e
        return Reply(200, plain if isinstance(plain, str) else plain.decode())

    async def _message(self, msg: dict[str, str]) -> Received:
        """The flow's chat is the app conversation with the sender: `chat_id` is their userid."""
        sender = msg.get("FromUserName", "")
        if not sender:
            return Reply(200, "")
        event_id = msg.get("MsgId") or f"{sender}-{msg.get('CreateTime', '')}"
        common = {"platform": PLATFORM, "tenant": self.config.corp_id, "chat_id": sender, "event_id": event_id,
                  "chat_kind": "group" if msg.get("ChatId") else "direct", "sender": self._known(sender)}
        customers = bool(_CUSTOMER_GROUP.match(msg.get("ChatId", "")))
        if msg.get("MsgType") == "file":
            source = media_source(msg.get("MediaId", ""), msg.get("FileName") or msg.get("Title") or "document.pdf")
            files = (FileRef(source.name, str(source.url)),) if msg.get("MediaId") else ()
            return ChatEvent(**common, files=files)  # type: ignore[arg-type]
        text = msg.get("Content", "")
        mentions: tuple[Mention, ...] = ()
        if commands.is_command(text, self.bot_name):  # only a command is worth directory calls
            chat = ChatRef(platform=PLATFORM, tenant=self.config.corp_id, chat_id=sender, source_event_id=event_id)
            mentions = await self._mentions(chat, text, customers)
        return ChatEvent(**common, text=text, mentions=mentions)  # type: ignore[arg-type]

    def _known(self, user_id: str, name: str = "") -> Person:
        """What the identities table knows (an import may give an external contact's name and
        mobile); an external contact (`wo…`/`wm…`) is marked so, whatever it says."""
        external = is_external_user(user_id)
        row = identities.find(self.engine, PLATFORM, self.config.corp_id, user_id)
        if row is None:
            return Person(id=user_id, name=name, external=external)
        return Person(id=user_id, name=row.name, email=row.email, mobile=row.mobile,
                      external=external or row.external)

    async def _mentions(self, chat: ChatRef, text: str, customers: bool = False) -> tuple[Mention, ...]:
        """Each typed `@token`: an external contact's id (`wo…`/`wm…`) is external and never looked
        up in the directory; else a userid, else a name (active people before departed ones), else
        `user/get` within the budget. In a customer group (`wr…`) someone `user/get` does not know
        is a customer: external, named as typed. Still unknown, the token is taken as a userid and
        the flow's resolve step decides."""
        tokens = commands.typed_mentions(text, self.bot_name)
        people: dict[str, Person] = {}
        for token in tokens:
            if is_external_user(token):
                people[token] = self._known(token, token)
                continue
            row = identities.find(self.engine, PLATFORM, chat.tenant, token) \
                or identities.find_by_name(self.engine, PLATFORM, chat.tenant, token)
            if row is not None:
                people[token] = Person(id=row.user_id, name=row.name, email=row.email, mobile=row.mobile,
                                       external=row.external)
        unknown = [Person(id=t, name=t) for t in tokens if t not in people]
        for token, result in (await resolve_within(self.directory, chat, unknown, RESOLVE_BUDGET)).items():
            if isinstance(result, Person):
                people[token] = result
            elif customers and isinstance(result, InputProblem) and not isinstance(result, Departed):
                people[token] = Person(id=token, name=token, external=True)
        return tuple(Mention(people.get(t, Person(id=t, name=t)), typed=t) for t in tokens)

    def _click(self, msg: dict[str, str]) -> Received:
        user, action, task_id = msg.get("FromUserName", ""), msg.get("EventKey", ""), msg.get("TaskId", "")
        if not (user and task_id) or not store_response_code(self.engine, task_id, msg.get("ResponseCode", "")):
            return Reply(200, "")  # a card we never sent
        if action not in ACTIONS:
            return Reply(200, "")  # "status": the click only refreshed the response code
        return ChatAction(request_id=card_key_for(task_id), name=action, actor=Actor(id=user),
                          update_id=f"wecom:{user}:{msg.get('CreateTime')}:{action}", platform=PLATFORM,
                          tenant=self.config.corp_id)

    def reply(self, received: Incoming, outcome: Outcome) -> Reply:
        """Empty stops WeCom's retries; a refused click leaves the card as it is."""
        return Reply.busy(outcome) if isinstance(outcome, Busy) else Reply(200, "")


def build(settings: Settings, engine: Engine, chat: ChatConnector | None) -> WeComInbound | None:
    config = WeComConfig()
    if not config.enabled or chat is None:
        return None
    return WeComInbound(config, engine, chat, settings.bot_name)


__all__ = ["WeComInbound", "build"]
