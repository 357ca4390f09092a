"""`POST /im/dingtalk/events`: DingTalk robot messages (HTTP mode) and the encrypted event
subscription; the same parsing serves Stream mode (`stream.py`).

One URL serves both, told apart by how they are authenticated:

* **Robot messages** carry headers `timestamp` (ms) and `sign = base64(HMAC-SHA256(app_secret,
  timestamp + "\\n" + app_secret))`. The sign is compared in constant time and the timestamp must
  be within an hour; otherwise 401 and nothing starts. `msgtype: file` carries a file (kept for a
  later command); a text command becomes a `ChatEvent` with id `msgId`, so a redelivered message
  finds the running flow. DingTalk's `atUsers` carry staffIds but no names: names come from the
  directory cache or `user/get` (within a small budget); mentions still unnamed are matched to
  the remaining `@name`s in the order they were typed.
* **Event subscription** (query `msg_signature`/`signature`, `timeStamp`/`timestamp`, `nonce`;
  body `{"encrypt"}`): SHA-1 signature over the sorted token, timestamp, nonce and ciphertext,
  then AES (wechatpy's `PrpCrypto`: the same scheme as WeCom, the plaintext ending with the app
  key). `check_url` and every other event are answered with the encrypted `success`;
  `user_leave_org` (someone left) becomes a `Departure`: the intake flags them on open flows. A card
  button callback (`outTrackId` + `content.cardPrivateData`) becomes a `ChatAction`, answered
  once Temporal accepted it (DingTalk's HTTP callbacks want an answer within 1.5 s).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from typing import Any

from sqlalchemy.engine import Engine
from wechatpy.crypto import PrpCrypto

from connectors.chat.base import ChatConnector, InputProblem
from connectors.chat.callback import (
    Callback,
    CallbackRejected,
    DirectoryInbound,
    Received,
    Reply,
    Route,
    Rules,
    embedded_object,
    invalid,
    json_object,
)
from connectors.chat.dingtalk.client import PLATFORM, DingTalkConfig, card_key_for_track, file_source
from connectors.chat.directory import resolve_within
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
from signbridge.core.untrusted import is_stale, same
from store.repos import identities

log = logging.getLogger(__name__)

ROUTES = (Route("/im/dingtalk/events"),)
RESOLVE_BUDGET = 1.0
_BARE = re.compile(r"^\s*(?:sign|签署)(?=$|[\s@＠>＞])", re.IGNORECASE)
NO_FILE = ("没有找到要签署的文件：请先在群里发送合同文件，再 @机器人 签署"
           "（No document: send the contract file to the chat first, then the sign command）")
RULES = Rules(deadline=Deadline(accept=1.2), no_file=NO_FILE)  # DingTalk's HTTP callbacks: 1.5 s
APPROVAL_EVENT = "bpms_instance_change"


# ---- crypto ---------------------------------------------------------------------------------------

def robot_sign(app_secret: str, timestamp: str) -> str:
    digest = hmac.new(app_secret.encode(), f"{timestamp}\n{app_secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def event_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    joined = "".join(sorted([token, timestamp, nonce, encrypt])).encode()
    return hashlib.sha1(joined, usedforsecurity=False).hexdigest()  # DingTalk's protocol, not our choice


def _key(aes_key: str) -> bytes:
    key = base64.b64decode(aes_key + "=")
    if len(key) != 32:
        raise ValueError("the AES key must decode to 32 bytes")
    return key


def decrypt_event(aes_key: str, owner_key: str, encrypt: str) -> str:
    """Plaintext of an `encrypt` field; raises when it is not for `owner_key` or not decryptable."""
    return str(PrpCrypto(_key(aes_key)).decrypt(encrypt, owner_key))


def encrypt_event(aes_key: str, owner_key: str, text: str) -> str:
    return bytes(PrpCrypto(_key(aes_key)).encrypt(text, owner_key)).decode()


class DingTalkInbound(DirectoryInbound[DingTalkConfig]):
    platform = PLATFORM
    rules = RULES

    async def receive(self, call: Callback) -> Received:
        q = call.query
        if q.get("msg_signature") or q.get("signature"):
            return self._subscription(call)
        ts, sign = call.headers.get("timestamp", ""), call.headers.get("sign", "")
        if not (ts and sign):
            raise CallbackRejected(401, "unsigned", "Rejected: neither a robot sign nor an event signature")
        if not same(sign, robot_sign(self.config.app_secret.get_secret_value(), ts)):
            raise CallbackRejected(401, "bad_signature", "Rejected: the robot sign does not match")
        if is_stale(ts, self.config.robot_tolerance_seconds, millis=True):
            raise CallbackRejected(401, "stale", "Rejected: the timestamp is more than an hour off")
        return await self.robot_message(json_object(call.body))

    def encrypted_reply(self, text: str = "success") -> dict[str, str]:
        """`{msg_signature, timeStamp, nonce, encrypt}` — what DingTalk expects back from a subscription."""
        ts, nonce = str(int(time.time() * 1000)), uuid.uuid4().hex[:8]
        encrypt = encrypt_event(self.config.aes_key.get_secret_value(), self._owner, text)
        return {"msg_signature": event_signature(self.config.token.get_secret_value(), ts, nonce, encrypt),
                "timeStamp": ts, "nonce": nonce, "encrypt": encrypt}

    @property
    def _owner(self) -> str:
        return self.config.owner_key or self.config.app_key

    def _subscription(self, call: Callback) -> Received:
        if not self.config.events_enabled:
            raise CallbackRejected(404, "not_configured",
                                   "The DingTalk event subscription (token, AES key) is not configured")
        q = call.query
        given = q.get("msg_signature") or q.get("signature") or ""
        ts, nonce = q.get("timeStamp") or q.get("timestamp") or "", q.get("nonce") or ""
        encrypt = json_object(call.body).get("encrypt")
        if not isinstance(encrypt, str) or not encrypt:
            raise invalid("No encrypt field")
        expected = event_signature(self.config.token.get_secret_value(), ts, nonce, encrypt)
        if not same(given.lower(), expected):
            raise CallbackRejected(401, "bad_signature", "Rejected: the signature does not match")
        if is_stale(ts, self.config.event_tolerance_seconds, millis=True):
            raise CallbackRejected(401, "stale", "Rejected: the timestamp is missing or too far off")
        try:
            event = json_object(decrypt_event(self.config.aes_key.get_secret_value(), self._owner, encrypt))
        except CallbackRejected as e:
            raise CallbackRejected(401, "bad_payload", "Rejected: the event is not JSON after decryption") from e
        except Exception as e:  # wrong key or owner (wechatpy's own exception), bad padding/base64
            raise CallbackRejected(401, "bad_payload",
                                   f"Rejected: the event does not decrypt ({type(e).__name__})") from e
        if event.get("outTrackId") and event.get("content"):
            return self.card_action(event, fallback_id=hashlib.sha256(encrypt.encode()).hexdigest()[:32])
        if event.get("EventType") == APPROVAL_EVENT:
            return self.approval(event, fallback_id=hashlib.sha256(encrypt.encode()).hexdigest()[:32])
        if event.get("EventType") == "user_leave_org":  # someone left: flag them on open flows
            users = event.get("UserId") or event.get("UserIds") or []
            ids = tuple(str(u) for u in (users if isinstance(users, list) else [users]) if u)
            return Departure(platform=PLATFORM, tenant=str(event.get("CorpId") or self.config.corp_id
                                                           or self.config.robot), user_ids=ids,
                             event_id=hashlib.sha256(encrypt.encode()).hexdigest()[:32])
        return Reply(200, self.encrypted_reply())

    def approval(self, event: dict[str, Any], fallback_id: str) -> Received:
        """`bpms_instance_change`: an OA approval finished and agreed (`type=finish`, `result=agree`)
        may start signing; the flow reads the instance through the workflow API. Any other change
        (start, refuse, terminate, delete) starts nothing."""
        instance, code = str(event.get("processInstanceId") or ""), str(event.get("processCode") or "")
        if not (instance and code):
            raise invalid("The approval event lacks processInstanceId or processCode")
        kind, result = str(event.get("type") or ""), str(event.get("result") or "")
        return ApprovalEvent(platform=PLATFORM, tenant=str(event.get("corpId") or self.config.robot),
                             instance_id=instance, event_id=str(event.get("eventId") or "") or fallback_id,
                             approved=kind == "finish" and result == "agree", definition=code,
                             revoked=kind in ("terminate", "delete"),
                             status=f"{kind}/{result}" if result else kind, title=str(event.get("title") or ""),
                             initiator=Person(id=str(event.get("staffId") or ""), name=""))

    # ---- authenticated payloads (HTTP callback or Stream mode) -------------------------------------

    async def robot_message(self, body: dict[str, Any]) -> Received:
        """A file is kept, a command starts a flow; idempotent (the flow's id comes from the msgId)."""
        msg_id, conversation = str(body.get("msgId") or ""), str(body.get("conversationId") or "")
        staff = str(body.get("senderStaffId") or "")
        sender = staff or str(body.get("senderId") or "")  # someone of another org has no staffId
        if not (msg_id and conversation and sender):
            raise invalid("The robot message lacks msgId, conversationId or a sender")
        group = str(body.get("conversationType") or "2") == "2"
        tenant = str(body.get("chatbotCorpId") or body.get("robotCode") or self.config.robot)
        ours = self.config.corp_id or str(body.get("chatbotCorpId") or "")
        theirs = str(body.get("senderCorpId") or "")
        common: dict[str, Any] = {
            "platform": PLATFORM, "tenant": tenant, "chat_id": conversation if group else sender,
            "chat_kind": "group" if group else "direct", "event_id": msg_id,
            "sender": Person(id=sender, name=str(body.get("senderNick") or ""),
                             external=not staff or bool(ours and theirs and theirs != ours))}
        if body.get("msgtype") == "file":
            content: dict[str, Any] = body["content"] if isinstance(body.get("content"), dict) else {}
            source = file_source(str(content.get("downloadCode") or ""), str(content.get("fileName") or
                                                                              "document.pdf"))
            files = (FileRef(source.name, str(source.url)),) if content.get("downloadCode") else ()
            return ChatEvent(**common, files=files)
        if body.get("msgtype") != "text":
            return Reply(200, {})
        text = str((body.get("text") or {}).get("content") or "").strip()
        if _BARE.match(text):  # DingTalk drops the robot's own @name from the text it forwards
            text = f"@{self.bot_name} {text}"
        mentions: tuple[Mention, ...] = ()
        if commands.is_command(text, self.bot_name):  # only a command is worth directory calls
            chat = ChatRef(platform=PLATFORM, tenant=tenant, chat_id=common["chat_id"], source_event_id=msg_id)
            mentions = await self._mentions(chat, text, body.get("atUsers") or [], str(body.get("chatbotUserId") or ""))
        return ChatEvent(**common, text=text, mentions=mentions, bot_name=self.bot_name)

    async def _mentions(self, chat: ChatRef, text: str, at_users: list[Any], bot: str) -> tuple[Mention, ...]:
        """Members of our org (a `staffId`) named from the directory; people of another org (a
        cross-org group: a `dingtalkId` and no `staffId`) are external, named by the `@name`s left
        over, never looked up."""
        users = [u for u in at_users if isinstance(u, dict)]
        ids = list(dict.fromkeys(str(u.get("staffId")) for u in users if u.get("staffId")))
        outside = list(dict.fromkeys(str(u.get("dingtalkId")) for u in users if not u.get("staffId")
                                     and u.get("dingtalkId") and str(u.get("dingtalkId")) != bot))
        names = {i: n for i in ids if (n := identities.name_of(self.engine, PLATFORM, chat.tenant, i))}
        found = await resolve_within(self.directory, chat, [Person(id=i, name=i) for i in ids if i not in names],
                                     RESOLVE_BUDGET)
        for user_id, result in found.items():
            if isinstance(result, Person):
                names[user_id] = result.name
            elif isinstance(result, InputProblem) and (n := identities.name_of(self.engine, PLATFORM, chat.tenant,
                                                                              user_id)):
                names[user_id] = n  # departed: named, so the flow can say who cannot sign
            else:
                log.info("DingTalk user/get for %s: %s", user_id, result)
        leftover = [t for t in commands.typed_mentions(text, self.bot_name) if t not in names.values()]
        for i in ids:  # still unnamed: the remaining `@name`s, in the order they were typed
            if i not in names and leftover:
                names[i] = leftover.pop(0)
        # Without `chatbotUserId` the robot's own entry cannot be told apart: it comes first (the
        # message starts with its @), so the external ones are the last as many as names are left.
        outside = outside[max(0, len(outside) - len(leftover)):]
        return (*(Mention(Person(id=i, name=names.get(i, i))) for i in ids),
                *(Mention(Person(id=i, name=name, external=True)) for i, name in zip(outside, leftover, strict=False)))

    def card_action(self, event: dict[str, Any], fallback_id: str) -> Received:
        """A card button (`outTrackId`, `userId`, `content.cardPrivateData`); the update id comes from
        the event's `eventId`, else `fallback_id`, so a redelivered click is applied once."""
        user, track = str(event.get("userId") or ""), str(event.get("outTrackId") or "")
        private = embedded_object(event.get("content")).get("cardPrivateData") or {}
        action = str((private.get("params") or {}).get("action") or (private.get("actionIds") or [""])[0])
        request_id = card_key_for_track(self.engine, track)
        if request_id is None or not user or action not in ACTIONS:
            log.info("DingTalk card callback %r/%r ignored", track, action)
            return Reply(200, self._success())
        update_id = str(event.get("eventId") or "") or fallback_id
        return ChatAction(request_id=request_id, name=action, actor=Actor(id=user),
                          update_id=f"dingtalk:{user}:{action}:{update_id}", platform=PLATFORM,
                          tenant=str(event.get("corpId") or self.config.robot))

    async def from_stream(self, topic: str, data: dict[str, Any], message_id: str) -> Received:
        """A Stream-mode frame's data, already authenticated by the connection."""
        if topic == "card":
            fallback = message_id or hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]
            return self.card_action(data, fallback_id=fallback)
        return await self.robot_message(data)

    def reply(self, received: Incoming, outcome: Outcome) -> Reply:
        """DingTalk retries a 5xx; a refused click leaves the card as it is (the flow updates it)."""
        if isinstance(outcome, Busy):
            return Reply.busy(outcome)
        if isinstance(received, ApprovalEvent):
            log.info("DingTalk approval %s: %s", received.instance_id, outcome)
            return Reply(200, self._success())
        if isinstance(received, Departure):
            return Reply(200, self._success())
        if isinstance(received, ChatAction):
            log.info("DingTalk %s on %s: %s", received.name, received.request_id, type(outcome).__name__)
            return Reply(200, self._success())
        return Reply(200, {})

    def _success(self) -> dict[str, str]:
        """A card callback's answer: encrypted `success` over HTTP; Stream mode acks by itself."""
        return self.encrypted_reply() if self.config.events_enabled else {}


def build(settings: Settings, engine: Engine, chat: ChatConnector | None) -> DingTalkInbound | None:
    config = DingTalkConfig()
    if not config.enabled or chat is None:
        return None
    return DingTalkInbound(config, engine, chat, config.bot_name or settings.bot_name)


__all__ = ["DingTalkInbound", "build", "decrypt_event", "encrypt_event", "event_signature", "robot_sign"]
