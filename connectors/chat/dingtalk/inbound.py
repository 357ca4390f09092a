"""`POST /im/dingtalk/events`: DingTalk robot messages (HTTP mode) and the encrypted event subscription.

One URL serves both, told apart by how they are authenticated (PROTOCOLS.md, DingTalk):

* **Robot messages** carry headers `timestamp` (ms) and `sign = base64(HMAC-SHA256(app_secret,
  timestamp + "\\n" + app_secret))`. The sign is compared in constant time and the timestamp must
  be within an hour; otherwise 401 and nothing starts.
  - `msgtype: file` is remembered (`InboundEvent`, platform "dingtalk:file", keyed
    `{conversation}/{sender}/{msgId}`): a later command uses the sender's last file there.
  - a text command (`signbridge.core.commands`) starts `SigningWorkflow` with id
    `sign:dingtalk:{corpId or robotCode}:{msgId}`, so a redelivered message finds the running flow.
    DingTalk's `atUsers` carry staffIds but no names: names come from the identity cache or
    `user/get` (within a small budget); mentions still unnamed are matched to the remaining
    `@name`s in the order they were typed. The reply is sent only after the start returned.
* **Event subscription** (query `msg_signature`/`signature`, `timeStamp`/`timestamp`, `nonce`; body
  `{"encrypt"}`): SHA-1 signature over the sorted token, timestamp, nonce and ciphertext, then
  AES (wechatpy's `PrpCrypto`: the same scheme as WeCom, the plaintext ending with the app key).
  `check_url` and every other event are answered with the encrypted `success`. A card button
  callback (`outTrackId` + `content.cardPrivateData`) becomes the workflow update
  (`remind`/`cancel`/`retry`), waiting only until Temporal ACCEPTED it.

The handling core (`handle_robot_message`, `handle_card_callback`) takes the engine, config,
settings and Temporal client and an already-verified payload, so the Stream-mode listener
(`connectors.chat.dingtalk.stream`) runs exactly the same code without an HTTP request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.service import RPCError
from wechatpy.crypto import PrpCrypto

from api.deps import ClientDep, SettingsDep
from api.errors import ApiError
from connectors.chat.base import InputProblem
from connectors.chat.dingtalk.client import PLATFORM, DingTalkChat, DingTalkConfig, card_key_for_track, file_source
from signbridge.core import commands
from signbridge.core.models import ActionInput, Actor, ChatRef, DocumentSource, Person, SigningRequest, Timing
from signbridge.core.settings import Settings
from signbridge.core.temporal import start_signing
from store.tables import Identity, InboundEvent, utcnow

log = logging.getLogger(__name__)
router = APIRouter(tags=["DingTalk"])

MAX_BODY_BYTES = 256 * 1024
FILES = "dingtalk:file"
FILE_LOOKBACK = timedelta(hours=24)
RESOLVE_BUDGET = 1.0
ACCEPT_TIMEOUT = 1.2  # DingTalk's HTTP callbacks want an answer within 1.5 s
ACTIONS = ("remind", "cancel", "retry")
_MENTION = re.compile(r"[@＠]([^\s@＠>＞→,，、;；:：()（）]+)")
_BARE = re.compile(r"^\s*(?:sign|签署)(?=$|[\s@＠>＞])", re.IGNORECASE)
NO_FILE = ("没有找到要签署的文件：请先在群里发送合同文件，再 @机器人 签署"
           "（No document: send the contract file to the chat first, then the sign command）")


# ---- crypto (PROTOCOLS.md, DingTalk) ------------------------------------------------------------

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


def encrypted_reply(config: DingTalkConfig, text: str = "success") -> dict[str, str]:
    """`{msg_signature, timeStamp, nonce, encrypt}` — what DingTalk expects back from a subscription."""
    ts, nonce = str(int(time.time() * 1000)), uuid.uuid4().hex[:8]
    encrypt = encrypt_event(config.aes_key.get_secret_value(), config.owner_key or config.app_key, text)
    return {"msg_signature": event_signature(config.token.get_secret_value(), ts, nonce, encrypt),
            "timeStamp": ts, "nonce": nonce, "encrypt": encrypt}


def config_for(request: Request) -> DingTalkConfig:
    """Tests (and embedders) may put a `DingTalkConfig` on `app.state.dingtalk_config`; else the env."""
    config = getattr(request.app.state, "dingtalk_config", None)
    if not isinstance(config, DingTalkConfig):
        config = DingTalkConfig()
    if not config.enabled:
        raise ApiError(404, "not_configured", "DingTalk is not configured on this SignBridge")
    return config


def _stale(timestamp_ms: str, tolerance: int) -> bool:
    try:
        return abs(time.time() - int(timestamp_ms) / 1000) > tolerance
    except ValueError:
        return True


# ---- the endpoint ------------------------------------------------------------------------------

@router.post("/im/dingtalk/events")
async def dingtalk_events(request: Request, settings: SettingsDep, client: ClientDep) -> JSONResponse:
    config = config_for(request)
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"Callbacks are limited to {MAX_BODY_BYTES} bytes")
    q = request.query_params
    if q.get("msg_signature") or q.get("signature"):
        return await _subscription(request, settings, client, config, raw)
    ts, sign = request.headers.get("timestamp", ""), request.headers.get("sign", "")
    if not (ts and sign):
        raise ApiError(401, "unsigned", "Rejected: neither a robot sign nor an event signature")
    if not hmac.compare_digest(robot_sign(config.app_secret.get_secret_value(), ts).encode(), sign.encode()):
        raise ApiError(401, "bad_signature", "Rejected: the robot sign does not match")
    if _stale(ts, config.robot_tolerance_seconds):
        raise ApiError(401, "stale", "Rejected: the timestamp is more than an hour off")
    return await _robot_message(request, settings, client, config, _json(raw))


def _json(raw: bytes | str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"The body is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body is not a JSON object")
    return data


async def _subscription(request: Request, settings: Settings, client: Client, config: DingTalkConfig,
                        raw: bytes) -> JSONResponse:
    if not config.events_enabled:
        raise ApiError(404, "not_configured", "The DingTalk event subscription (token, AES key) is not configured")
    q = request.query_params
    given = q.get("msg_signature") or q.get("signature") or ""
    ts, nonce = q.get("timeStamp") or q.get("timestamp") or "", q.get("nonce") or ""
    encrypt = _json(raw).get("encrypt")
    if not isinstance(encrypt, str) or not encrypt:
        raise ApiError(400, "invalid_event", "No encrypt field")
    expected = event_signature(config.token.get_secret_value(), ts, nonce, encrypt)
    if not hmac.compare_digest(expected.encode(), given.lower().encode()):
        raise ApiError(401, "bad_signature", "Rejected: the signature does not match")
    if _stale(ts, config.event_tolerance_seconds):
        raise ApiError(401, "stale", "Rejected: the timestamp is missing or too far off")
    try:
        event = _json(decrypt_event(config.aes_key.get_secret_value(), config.owner_key or config.app_key, encrypt))
    except ApiError as e:
        raise ApiError(401, "bad_payload", "Rejected: the event is not JSON after decryption") from e
    except Exception as e:  # wrong key or owner (wechatpy's own exception), bad padding/base64
        raise ApiError(401, "bad_payload", f"Rejected: the event does not decrypt ({type(e).__name__})") from e
    if event.get("outTrackId") and event.get("content"):
        await _card_action(request, settings, client, config, event, encrypt)
    return JSONResponse(encrypted_reply(config))


# ---- robot messages ----------------------------------------------------------------------------

class InvalidMessage(ValueError):
    """A robot message that can never start anything (it lacks the ids every flow needs)."""


Directory = Callable[[], DingTalkChat]


async def _robot_message(request: Request, settings: Settings, client: Client, config: DingTalkConfig,
                         body: dict[str, Any]) -> JSONResponse:
    try:
        await handle_robot_message(request.app.state.engine, config, settings, client, body,
                                   directory=lambda: _chat(request, config))
    except InvalidMessage as e:
        raise ApiError(400, "invalid_message", str(e)) from e
    return JSONResponse({})


async def handle_robot_message(engine: Engine, config: DingTalkConfig, settings: Settings, client: Client,
                               body: dict[str, Any], directory: Directory | None = None) -> None:
    """One verified robot message (HTTP callback or Stream mode): remember a file, start a flow on a command.

    Idempotent: a file is remembered once per msgId and the flow's id comes from the msgId.
    `directory` gives the connector used to name mentioned users (default: a new one for `config`).
    """
    msg_id, conversation = str(body.get("msgId") or ""), str(body.get("conversationId") or "")
    sender = str(body.get("senderStaffId") or "")
    if not (msg_id and conversation and sender):
        raise InvalidMessage("The robot message lacks msgId, conversationId or senderStaffId")
    group = str(body.get("conversationType") or "2") == "2"
    tenant = str(body.get("chatbotCorpId") or body.get("robotCode") or config.robot)
    chat = ChatRef(platform=PLATFORM, tenant=tenant, chat_id=conversation if group else sender,
                   chat_kind="group" if group else "direct", source_event_id=msg_id)
    if body.get("msgtype") == "file":
        _remember_file(engine, conversation, sender, msg_id, body.get("content") or {})
        return
    if body.get("msgtype") != "text":
        return
    bot = config.bot_name or settings.bot_name or commands.DEFAULT_BOT_NAME
    text = str((body.get("text") or {}).get("content") or "").strip()
    if _BARE.match(text):  # DingTalk drops the robot's own @name from the text it forwards
        text = f"@{bot} {text}"
    if not commands.is_command(text, bot):
        return
    mentions = await _mentions(engine, directory or (lambda: DingTalkChat(config, engine)), chat, text, bot,
                               body.get("atUsers") or [])
    problem: str | None = None
    try:
        parsed = commands.parse(text, mentions, bot_name=bot)
    except commands.CommandProblem as e:
        parsed, problem = None, e.message
    document = _last_file(engine, conversation, sender)
    if problem is None and document is None:
        problem = NO_FILE
    req = SigningRequest(
        request_id=f"sign:{PLATFORM}:{tenant}:{msg_id}",
        title=(parsed.title if parsed else None) or (document.name if document else None) or "签署请求",
        initiator=Person(id=sender, name=str(body.get("senderNick") or _known(engine, tenant, sender) or sender)),
        chat=chat, documents=[document] if document else [], groups=parsed.groups if parsed else [],
        provider=(parsed.provider if parsed else None) or settings.default_provider,
        timing=Timing(deadline=settings.deadline, reminder_first_after=settings.reminder_first_after,
                      reminder_every=settings.reminder_every, reminder_max=settings.reminder_max,
                      poll_after=settings.poll_after, step_retry_window=settings.step_retry_window),
        problem=problem,
    )
    await start_signing(client, req, settings.task_queue)


async def _mentions(engine: Engine, directory: Directory, chat: ChatRef, text: str, bot: str,
                    at_users: list[Any]) -> list[Person]:
    ids = [str(u.get("staffId")) for u in at_users if isinstance(u, dict) and u.get("staffId")]
    ids = list(dict.fromkeys(ids))
    names = {i: n for i in ids if (n := _known(engine, chat.tenant, i))}
    unknown = [i for i in ids if i not in names]
    if unknown:
        api = directory()
        tasks = {asyncio.ensure_future(api.resolve(chat, Person(id=i, name=i))): i for i in unknown}
        done, pending = await asyncio.wait(tasks, timeout=RESOLVE_BUDGET)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is None:
                names[tasks[task]] = task.result().name
            elif isinstance(task.exception(), InputProblem) and (n := _known(engine, chat.tenant, tasks[task])):
                names[tasks[task]] = n  # departed: named, so the flow can say who cannot sign
            else:
                log.info("DingTalk user/get for %s: %s", tasks[task], task.exception())
    typed = [t for m in _MENTION.finditer(text) if (t := re.split(r"然后|then$", m.group(1))[0])
             and t.casefold() != bot.casefold()]
    leftover = [t for t in typed if t not in names.values()]
    for i in ids:  # still unnamed: the remaining `@name`s, in the order they were typed
        if i not in names and leftover:
            names[i] = leftover.pop(0)
    return [Person(id=i, name=names.get(i, i)) for i in ids]


def _chat(request: Request, config: DingTalkConfig) -> DingTalkChat:
    """One connector per app on the API side: its access token is cached across requests."""
    chat: DingTalkChat | None = getattr(request.app.state, "dingtalk_chat", None)
    if chat is None or chat.config != config:
        chat = DingTalkChat(config, request.app.state.engine)
        request.app.state.dingtalk_chat = chat
    return chat


def _known(engine: Engine, tenant: str, user_id: str) -> str:
    with Session(engine) as session:
        row = session.exec(select(Identity).where(Identity.platform == PLATFORM,
                                                  col(Identity.tenant).in_([tenant, "default"]),
                                                  Identity.user_id == user_id)).first()
    return row.name if row else ""


def _remember_file(engine: Engine, conversation: str, sender: str, msg_id: str, content: Any) -> None:
    if not isinstance(content, dict) or not content.get("downloadCode"):
        return
    payload = json.dumps({"downloadCode": content["downloadCode"],
                          "fileName": content.get("fileName") or "document.pdf"}, ensure_ascii=False)
    with Session(engine) as session:
        session.add(InboundEvent(platform=FILES, event_id=f"{conversation}/{sender}/{msg_id}", payload=payload,
                                 status="handled", handled_at=utcnow()))
        try:
            session.commit()
        except IntegrityError:  # a redelivered file message
            session.rollback()


def _last_file(engine: Engine, conversation: str, sender: str) -> DocumentSource | None:
    with Session(engine) as session:
        row = session.exec(select(InboundEvent).where(InboundEvent.platform == FILES)
                           .where(col(InboundEvent.event_id).startswith(f"{conversation}/{sender}/"))
                           .where(col(InboundEvent.received_at) >= utcnow() - FILE_LOOKBACK)
                           .order_by(col(InboundEvent.id).desc())).first()
    if row is None:
        return None
    file = json.loads(row.payload)
    return file_source(file["downloadCode"], file["fileName"])


# ---- card buttons ------------------------------------------------------------------------------

async def _card_action(request: Request, settings: Settings, client: Client, config: DingTalkConfig,
                       event: dict[str, Any], encrypt: str) -> None:
    try:
        await handle_card_callback(request.app.state.engine, config, settings, client, event,
                                   fallback_id=hashlib.sha256(encrypt.encode()).hexdigest()[:32])
    except TimeoutError as e:
        raise ApiError(503, "unavailable", "Could not hand the click to Temporal in time; DingTalk retries") from e


async def handle_card_callback(engine: Engine, config: DingTalkConfig, settings: Settings, client: Client,
                               event: dict[str, Any], fallback_id: str,
                               accept_timeout: float = ACCEPT_TIMEOUT) -> None:
    """One verified card button callback (`outTrackId`, `userId`, `content.cardPrivateData`) → workflow update.

    Waits only until Temporal ACCEPTED the update; raises TimeoutError when it did not within
    `accept_timeout` (the caller lets DingTalk retry). The update id comes from the event's
    `eventId`, else `fallback_id`, so a redelivered click is applied once.
    """
    user, track = str(event.get("userId") or ""), str(event.get("outTrackId") or "")
    raw = event.get("content")
    try:
        content = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        content = {}
    private = (content if isinstance(content, dict) else {}).get("cardPrivateData") or {}
    action = str((private.get("params") or {}).get("action") or (private.get("actionIds") or [""])[0])
    card_key = card_key_for_track(engine, track)
    if card_key is None or not user or action not in ACTIONS:
        log.info("DingTalk card callback %r/%r ignored", track, action)
        return
    tenant = str(event.get("corpId") or config.robot)
    actor = Actor(id=user, name=_known(engine, tenant, user) or user, is_operator=user in settings.operator_list)
    update_id = str(event.get("eventId") or "") or fallback_id
    try:
        async with asyncio.timeout(accept_timeout):
            await client.get_workflow_handle(card_key).start_update(
                action, ActionInput(actor=actor), id=f"dingtalk:{user}:{action}:{update_id}",
                wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    except WorkflowUpdateFailedError as e:  # refused by the validator: the card stays as it is
        log.info("DingTalk %s by %s on %s refused: %s", action, user, card_key, e.cause or e)
    except RPCError as e:
        log.info("DingTalk %s on %s: %s", action, card_key, e.message)


__all__ = ["InvalidMessage", "decrypt_event", "encrypt_event", "event_signature", "handle_card_callback",
           "handle_robot_message", "robot_sign", "router"]
