"""`GET`+`POST /im/wecom/events`: the WeCom self-built app's callback URL.

* `GET` is WeCom's URL check: the signature over the (URL-decoded) `echostr` is verified and
  the decrypted echostr is returned as plain text. It has no timestamp window: WeCom sends it
  once when the admin saves the URL, and replaying it reveals nothing and starts nothing.
* `POST` carries encrypted XML. Signature and a 300 s timestamp window are checked before
  anything is decrypted; a forged or stale callback gets 401 and starts nothing.
  - a `file` message is remembered (`InboundEvent`, platform "wecom": media id + name) —
    WeCom delivers the file and the command as separate messages;
  - a `text` command (`signbridge.core.commands`) starts `SigningWorkflow` with id
    `sign:wecom:{corp_id}:{MsgId}`; WeCom text has no structured mentions, so each `@token` is
    matched against the identity cache (userid or name) and, within a small time budget,
    `user/get`; the flow's `resolve` step checks every signer again (departed → REJECTED);
  - a `template_card_event` (button click) stores its fresh `ResponseCode` for the card's next
    update, then runs the workflow update (`remind`/`cancel`/`retry`) with an update id derived
    from the event (`FromUserName` + `CreateTime`), so WeCom's retries apply it once.
  The reply is empty (which stops WeCom's retries) and is sent only after Temporal holds the
  request; WeCom's deadline is 5 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from datetime import timedelta

import xmltodict
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.service import RPCError
from wechatpy.enterprise.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException

from api.deps import ClientDep, SettingsDep
from api.errors import ApiError
from connectors.chat.wecom.client import (
    PLATFORM,
    WeComChat,
    WeComConfig,
    card_key_for,
    find_identity,
    media_source,
    store_response_code,
)
from signbridge.core import commands
from signbridge.core.models import ActionInput, Actor, ChatRef, DocumentSource, Person, SigningRequest, Timing
from signbridge.core.settings import Settings
from signbridge.core.temporal import start_signing
from store.tables import InboundEvent, utcnow

log = logging.getLogger(__name__)
router = APIRouter(tags=["WeCom"])

MAX_BODY_BYTES = 256 * 1024
TOLERANCE_SECONDS = 300
FILE_LOOKBACK = timedelta(days=3)  # WeCom keeps media for 3 days
RESOLVE_BUDGET = 1.5  # seconds of the 5 s deadline spent on user/get at most
ACCEPT_TIMEOUT = 3.0
ACTIONS = ("remind", "cancel", "retry")
_MENTION = re.compile(r"[@＠]([^\s@＠>＞→,，、;；:：()（）]+)")
NO_FILE = ("没有找到要签署的文件：请先把合同文件发给应用，再发送 /sign 命令"
           "（No document: send the contract file to the app first, then the /sign command）")


def _config() -> WeComConfig:
    config = WeComConfig()
    if not config.enabled:
        raise ApiError(404, "not_configured", "WeCom is not configured on this SignBridge")
    return config


def _crypto(config: WeComConfig) -> WeChatCrypto:
    return WeChatCrypto(config.token.get_secret_value(), config.encoding_aes_key.get_secret_value(), config.corp_id)


def _xml(text: str | bytes) -> dict[str, str]:
    """Flat XML → dict. Entity declarations are refused outright (no expansion attacks)."""
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    if "<!DOCTYPE" in raw.upper() or "<!ENTITY" in raw.upper():
        raise ApiError(400, "invalid_xml", "DTDs are not accepted")
    try:
        doc = xmltodict.parse(raw, disable_entities=True)
    except Exception as e:  # expat errors
        raise ApiError(400, "invalid_xml", f"The body is not XML: {e}") from e
    root = doc.get("xml") if isinstance(doc, dict) else None
    if not isinstance(root, dict):
        raise ApiError(400, "invalid_xml", "Expected <xml>…</xml>")
    return {k: v.strip() if isinstance(v, str) else "" for k, v in root.items()}


@router.get("/im/wecom/events")
async def url_check(msg_signature: str, timestamp: str, nonce: str, echostr: str) -> PlainTextResponse:
    config = _config()
    try:
        plain = _crypto(config).check_signature(msg_signature, timestamp, nonce, echostr)
    except InvalidSignatureException as e:
        raise ApiError(401, "bad_signature", "Rejected: the signature does not match") from e
    except Exception as e:  # signed with our token but not decryptable for our corp
        raise ApiError(401, "bad_payload", f"Rejected: the echostr does not decrypt ({type(e).__name__})") from e
    return PlainTextResponse(plain if isinstance(plain, str) else plain.decode())


@router.post("/im/wecom/events")
async def events(request: Request, settings: SettingsDep, client: ClientDep, msg_signature: str = "",
                 timestamp: str = "", nonce: str = "") -> Response:
    config = _config()
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"Callbacks are limited to {MAX_BODY_BYTES} bytes")
    try:
        stale = abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS
    except ValueError:
        stale = True
    if stale:
        raise ApiError(401, "stale", "Rejected: the timestamp is missing or outside the 300 s window")
    outer = _xml(raw)
    if not outer.get("Encrypt"):
        raise ApiError(400, "invalid_event", "No Encrypt element")
    try:
        inner = _xml(_crypto(config).decrypt_message(outer, msg_signature, timestamp, nonce))
    except InvalidSignatureException as e:
        raise ApiError(401, "bad_signature", "Rejected: the signature does not match") from e
    except ApiError:
        raise
    except Exception as e:  # wrong key, corp id mismatch, bad padding
        raise ApiError(401, "bad_payload", f"Rejected: the payload does not decrypt ({type(e).__name__})") from e
    kind = inner.get("MsgType", "")
    if kind == "file":
        _remember_file(request, config, inner)
    elif kind == "text" and commands.is_command(inner.get("Content", ""), settings.bot_name):
        await _command(request, settings, client, config, inner)
    elif kind == "event" and inner.get("Event") == "template_card_event":
        await _click(request, settings, client, config, inner)
    return PlainTextResponse("")  # empty reply: WeCom stops retrying


# ---- files and commands -----------------------------------------------------------------------

def _conversation(msg: dict[str, str]) -> str:
    return msg.get("ChatId") or msg.get("FromUserName", "")


def _remember_file(request: Request, config: WeComConfig, msg: dict[str, str]) -> None:
    media_id, sender = msg.get("MediaId", ""), msg.get("FromUserName", "")
    if not (media_id and sender):
        return
    event = msg.get("MsgId") or f"{sender}-{msg.get('CreateTime', '')}"
    payload = json.dumps({"media_id": media_id, "name": msg.get("FileName") or msg.get("Title") or "document.pdf",
                          "corp_id": config.corp_id}, ensure_ascii=False)
    with Session(request.app.state.engine) as session:
        session.add(InboundEvent(platform=PLATFORM, event_id=f"file:{_conversation(msg)}/{sender}/{event}",
                                 payload=payload, status="handled", handled_at=utcnow()))
        try:
            session.commit()
        except IntegrityError:  # WeCom redelivered the file message
            session.rollback()


def _last_file(request: Request, msg: dict[str, str]) -> DocumentSource | None:
    prefix = f"file:{_conversation(msg)}/{msg.get('FromUserName', '')}/"
    with Session(request.app.state.engine) as session:
        row = session.exec(select(InboundEvent).where(InboundEvent.platform == PLATFORM)
                           .where(col(InboundEvent.event_id).startswith(prefix))
                           .where(col(InboundEvent.received_at) >= utcnow() - FILE_LOOKBACK)
                           .order_by(col(InboundEvent.id).desc())).first()
    if row is None:
        return None
    file = json.loads(row.payload)
    return media_source(file["media_id"], file["name"])


async def _mentions(request: Request, config: WeComConfig, chat: ChatRef, text: str,
                    bot_name: str) -> tuple[list[Person], dict[str, Person]]:
    """Mentions named as typed (what the grammar matches) and the person each one stands for."""
    tokens = []
    for m in _MENTION.finditer(text):
        token = re.split(r"然后|then$", m.group(1))[0]
        if token and token.casefold() != bot_name.casefold() and token not in tokens:
            tokens.append(token)
    people: dict[str, Person] = {}
    with Session(request.app.state.engine) as session:
        for token in tokens:  # a userid first, else a name (active people before departed ones)
            row = find_identity(session, config.corp_id, user_id=token) or find_identity(
                session, config.corp_id, name=token)
            if row is not None:
                people[token] = Person(id=row.user_id, name=row.name, email=row.email, mobile=row.mobile)
    unknown = [t for t in tokens if t not in people]
    if unknown:
        chat_api = _chat(request, config)
        tasks = {asyncio.ensure_future(chat_api.resolve(chat, Person(id=t, name=t))): t for t in unknown}
        done, pending = await asyncio.wait(tasks, timeout=RESOLVE_BUDGET)
        for task in pending:
            task.cancel()
        for task in done:
            if task.exception() is None:
                people[tasks[task]] = task.result()
            else:
                log.info("WeCom user/get for %s: %s", tasks[task], task.exception())
    # unknown or departed: the typed token is taken as a userid; the flow's resolve step decides
    resolved = {t: people.get(t, Person(id=t, name=t)) for t in tokens}
    return [Person(id=p.id, name=t) for t, p in resolved.items()], {p.id: p for p in resolved.values()}


def _chat(request: Request, config: WeComConfig) -> WeComChat:
    """One connector per app: its access token is cached across requests."""
    chat: WeComChat | None = getattr(request.app.state, "wecom_chat", None)
    if chat is None or chat.config != config:
        chat = WeComChat(config, request.app.state.engine)
        request.app.state.wecom_chat = chat
    return chat


async def _command(request: Request, settings: Settings, client: Client, config: WeComConfig,
                   msg: dict[str, str]) -> None:
    sender = msg.get("FromUserName", "")
    event = msg.get("MsgId") or f"{sender}-{msg.get('CreateTime', '')}"
    chat = ChatRef(platform=PLATFORM, tenant=config.corp_id, chat_id=sender,
                   chat_kind="group" if msg.get("ChatId") else "direct", source_event_id=event)
    text = msg.get("Content", "")
    mentions, people = await _mentions(request, config, chat, text, settings.bot_name)
    problem: str | None = None
    try:
        parsed = commands.parse(text, mentions, bot_name=settings.bot_name)
    except commands.CommandProblem as e:
        parsed, problem = None, e.message
    document = _last_file(request, msg)
    if problem is None and document is None:
        problem = NO_FILE
    groups = [[people[p.id] for p in g] for g in parsed.groups] if parsed else []
    with Session(request.app.state.engine) as session:
        me = find_identity(session, config.corp_id, user_id=sender)
    initiator = Person(id=sender, name=me.name if me else sender, email=me.email if me else None,
                       mobile=me.mobile if me else None)
    req = SigningRequest(
        request_id=f"sign:wecom:{config.corp_id}:{event}",
        title=(parsed.title if parsed else None) or (document.name if document else None) or "签署请求",
        initiator=initiator, chat=chat, documents=[document] if document else [], groups=groups,
        provider=(parsed.provider if parsed else None) or settings.default_provider,
        timing=Timing(deadline=settings.deadline, reminder_first_after=settings.reminder_first_after,
                      reminder_every=settings.reminder_every, reminder_max=settings.reminder_max,
                      poll_after=settings.poll_after, step_retry_window=settings.step_retry_window),
        problem=problem,
    )
    await start_signing(client, req, settings.task_queue)


# ---- card buttons -----------------------------------------------------------------------------

async def _click(request: Request, settings: Settings, client: Client, config: WeComConfig,
                 msg: dict[str, str]) -> None:
    user, action, task_id = msg.get("FromUserName", ""), msg.get("EventKey", ""), msg.get("TaskId", "")
    card_key = card_key_for(task_id)
    code = msg.get("ResponseCode", "")
    if not (user and task_id) or not store_response_code(request.app.state.engine, task_id, code):
        log.info("WeCom click on unknown card %r ignored", task_id)
        return
    if action not in ACTIONS:
        return  # "status": the click only refreshed the response code
    with Session(request.app.state.engine) as session:
        me = find_identity(session, config.corp_id, user_id=user)
    actor = Actor(id=user, name=me.name if me else user, is_operator=user in settings.operator_list)
    handle = client.get_workflow_handle(card_key)
    try:
        async with asyncio.timeout(ACCEPT_TIMEOUT):
            await handle.start_update(action, ActionInput(actor=actor),
                                      id=f"wecom:{user}:{msg.get('CreateTime')}:{action}",
                                      wait_for_stage=WorkflowUpdateStage.ACCEPTED)
    except WorkflowUpdateFailedError as e:  # refused by the validator: the card stays as it is
        log.info("WeCom %s by %s on %s refused: %s", action, user, card_key, e.cause or e)
    except TimeoutError as e:
        raise ApiError(503, "unavailable", "Could not hand the click to Temporal in time; WeCom retries") from e
    except RPCError as e:
        log.info("WeCom %s on %s: %s", action, card_key, e.message)

