"""`POST /im/feishu/events` and `POST /im/feishu/card`: Feishu/Lark callbacks into Temporal.

Verification happens on the raw bytes before anything is trusted (PROTOCOLS.md, Feishu/Lark):

* With an Encrypt Key, `X-Lark-Signature = sha256(timestamp + nonce + encrypt_key + raw_body)`
  is checked first, on the raw bytes, in constant time, with the timestamp inside
  `timestamp_tolerance_seconds` (a Feishu retry is assumed to be re-signed with a fresh
  timestamp — unconfirmed, hence configurable). The body must be `{"encrypt": …}` (AES-256-CBC,
  key = SHA-256(encrypt key), lark-oapi's `AESCipher`). Only `url_verification` may come
  unsigned (Feishu does not sign it); it is answered after it decrypted and its token matched.
* The verification token (`header.token` in schema 2.0, `token` in 1.0) must match.
  Anything that fails gets 401 and starts nothing.

Then, as thin as `connectors/chat/webhook/inbound.py`:

* A file message is remembered (`InboundEvent`, platform "feishu:file") — Feishu cannot put
  a file and text in one message, so the command names the file by replying to it or by
  following it. A reply to a file we never received (groups without the read-all scope) is
  passed on as `feishu://{message_id}/` and the download activity asks Feishu for its file.
* A text message starting with the sign command starts `SigningWorkflow` with id
  `sign:feishu:{tenant_key}:{event_id}`: Feishu redelivers for hours, and a redelivery finds
  the running flow. The ack goes out only after the start returned. A command to fix (no
  file, unknown @name) still starts the flow with `problem` set, so the reason shows in chat.
* A card button (`card.action.trigger`) becomes the workflow update of the same name, with the
  callback's event id as update id; Feishu wants an answer within 3 s, so we wait for
  ACCEPTED only and answer with a toast.

The handling after verification (`handle_event`, `handle_card_action`) takes the engine, config,
settings and Temporal client and the decrypted event dict, not the Request: the long connection
(`connectors.chat.feishu.stream`) runs the same code for the events it receives.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from lark_oapi.core.utils import AESCipher
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.service import RPCError, RPCStatusCode

from api.deps import ClientDep, SettingsDep
from api.errors import ApiError
from connectors.chat.feishu.client import PLATFORM, FeishuConfig, source_url
from signbridge.core import commands
from signbridge.core.models import (
    ActionInput,
    Actor,
    ChatRef,
    DocumentSource,
    Person,
    SigningRequest,
    StatusView,
    Timing,
)
from signbridge.core.settings import Settings
from signbridge.core.temporal import start_signing
from store.tables import Identity, InboundEvent, utcnow

router = APIRouter(tags=["Feishu/Lark"])

MAX_BODY_BYTES = 1024 * 1024
ACTIONS = ("remind", "cancel", "retry")
ACCEPT_TIMEOUT = 2.5  # Feishu's card deadline is 3 s
RESULT_WAIT = 0.3
FILE_LOOKBACK = timedelta(hours=24)
FILES = "feishu:file"
REPLIED_FILE = "document.pdf"  # name of a replied-to file we never saw; Feishu's message API has no name
NO_FILE = ("没有找到要签署的文件：请先发送合同文件，再回复该文件 @机器人 签署"
           "（No document to sign: send the contract file first, then reply to it with the sign command）")


# ---- crypto -----------------------------------------------------------------------------------

def decrypt(encrypt_key: str, encrypted: str) -> str:
    """Feishu's `encrypt` field → plaintext JSON (lark-oapi's AESCipher: key = SHA-256(key), IV prefix)."""
    return AESCipher(encrypt_key).decrypt_str(encrypted)


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def config_for(request: Request) -> FeishuConfig:
    """Tests (and embedders) may put a `FeishuConfig` on `app.state.feishu_config`; else the env."""
    config = getattr(request.app.state, "feishu_config", None)
    if not isinstance(config, FeishuConfig):
        config = FeishuConfig()
        request.app.state.feishu_config = config
    if not config.enabled:
        raise ApiError(404, "not_configured", "Feishu/Lark is not configured on this SignBridge")
    return config


async def verified_payload(request: Request, config: FeishuConfig) -> dict[str, Any]:
    """The decrypted, authenticated callback body; `ApiError(401)` for anything forged or stale."""
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"Callback bodies are limited to {MAX_BODY_BYTES} bytes")
    outer = _json(raw)
    key = config.encrypt_key.get_secret_value()
    signed = "X-Lark-Signature" in request.headers
    if key and signed:  # checked on the raw bytes, before we decrypt anything
        _check_signature(request, key, raw, config.timestamp_tolerance_seconds)
    if key:
        if not isinstance(outer.get("encrypt"), str):
            raise ApiError(401, "not_encrypted", "An Encrypt Key is configured: callbacks must be encrypted")
        try:
            data = json.loads(decrypt(key, outer["encrypt"]))
        except (ValueError, binascii.Error, UnicodeDecodeError) as e:
            raise ApiError(401, "bad_encryption", "The callback could not be decrypted with our Encrypt Key") from e
        if not isinstance(data, dict):
            raise ApiError(401, "bad_encryption", "The decrypted callback is not a JSON object")
    elif "encrypt" in outer:
        raise ApiError(401, "bad_encryption", "Encrypted callback but no Encrypt Key is configured")
    else:
        data = outer
    if key and not signed and data.get("type") != "url_verification":
        raise ApiError(401, "bad_signature", "Rejected: missing X-Lark-Signature")
    header = data.get("header") if isinstance(data.get("header"), dict) else {}
    token = str(header.get("token") or data.get("token") or "")
    expected = config.verification_token.get_secret_value()
    if expected and not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(401, "bad_token", "Rejected: the verification token does not match")
    return data


def _check_signature(request: Request, key: str, raw: bytes, tolerance: int) -> None:
    ts = request.headers.get("X-Lark-Request-Timestamp", "")
    nonce = request.headers.get("X-Lark-Request-Nonce", "")
    given = request.headers.get("X-Lark-Signature", "")
    if not (ts and given):
        raise ApiError(401, "bad_signature", "Rejected: missing X-Lark-Signature or timestamp")
    if not hmac.compare_digest(signature(ts, nonce, key, raw).encode(), given.lower().encode()):
        raise ApiError(401, "bad_signature", "Rejected: X-Lark-Signature does not match")
    try:
        stale = abs(time.time() - int(ts)) > tolerance
    except ValueError:
        stale = True
    if stale:
        raise ApiError(401, "stale", f"Rejected: the request timestamp is more than {tolerance} s off")


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"The body is not JSON: {e}") from e
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "The body is not a JSON object")
    return data


# ---- endpoints --------------------------------------------------------------------------------

@router.post("/im/feishu/events")
async def feishu_events(request: Request, settings: SettingsDep, client: ClientDep) -> JSONResponse:
    config = config_for(request)
    data = await verified_payload(request, config)
    if data.get("type") == "url_verification":
        return JSONResponse({"challenge": data.get("challenge", "")})
    return JSONResponse(await handle_event(request.app.state.engine, config, settings, client, data))


@router.post("/im/feishu/card")
async def feishu_card(request: Request, settings: SettingsDep, client: ClientDep) -> JSONResponse:
    config = config_for(request)
    data = await verified_payload(request, config)
    if data.get("type") == "url_verification":
        return JSONResponse({"challenge": data.get("challenge", "")})
    return JSONResponse(await handle_card_action(request.app.state.engine, config, settings, client, data))


# ---- the core: one verified, decrypted event (HTTP callback or long connection) ----------------

class InvalidEvent(ApiError):
    """The event lacks what it needs (HTTP: 400; long connection: the inbox marks it failed)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "invalid_event", message)


async def handle_event(engine: Engine, config: FeishuConfig, settings: Settings, client: Client,
                       data: dict[str, Any]) -> dict[str, Any]:
    """An event callback (schema 2.0): a message is remembered (file) or starts a flow (command).

    Returns the HTTP route's answer body; raises `InvalidEvent` for a message event missing its ids.
    """
    header = data.get("header") or {}
    if header.get("event_type") != "im.message.receive_v1":
        return {"ok": True, "ignored": header.get("event_type")}
    return await _message(engine, config, header, data.get("event") or {}, settings, client)


async def handle_card_action(engine: Engine, config: FeishuConfig, settings: Settings, client: Client,
                             data: dict[str, Any]) -> dict[str, Any]:
    """A card button (`card.action.trigger`) → the workflow update; returns Feishu's answer (a toast)."""
    header = data.get("header") or {}
    event = data.get("event") or {}
    value = (event.get("action") or {}).get("value") or {}
    operator = (event.get("operator") or {}).get("open_id") or ""
    name, request_id = str(value.get("action") or ""), str(value.get("request_id") or "")
    if name not in ACTIONS or not request_id.startswith(f"sign:{PLATFORM}:") or not operator:
        return toast("error", "无法识别的操作", "Unknown action")
    actor = Actor(id=operator, name=_known_name(engine, header.get("tenant_key") or "", operator),
                  is_operator=operator in settings.operator_list)
    return await _action(client, request_id, name, actor, str(header.get("event_id") or ""))


# ---- messages ---------------------------------------------------------------------------------

async def _message(engine: Engine, config: FeishuConfig, header: dict[str, Any], event: dict[str, Any],
                   settings: Settings, client: Client) -> dict[str, Any]:
    message = event.get("message") or {}
    sender = ((event.get("sender") or {}).get("sender_id") or {}).get("open_id") or ""
    tenant = str(header.get("tenant_key") or (event.get("sender") or {}).get("tenant_key") or "default")
    event_id = str(header.get("event_id") or "")
    chat_id = str(message.get("chat_id") or "")
    if not (event_id and chat_id and sender):
        raise InvalidEvent("The message event lacks event_id, chat_id or sender")
    try:
        content = json.loads(message.get("content") or "{}")
    except json.JSONDecodeError:
        content = {}
    if message.get("message_type") == "file":
        _remember_file(engine, chat_id, sender, str(message.get("message_id") or ""), content, event_id)
        return {"ok": True, "stored": "file"}
    if message.get("message_type") != "text":
        return {"ok": True, "ignored": message.get("message_type")}
    mentions = [Person(id=(m.get("id") or {}).get("open_id") or m.get("key", ""), name=m.get("name") or "")
                for m in message.get("mentions") or []]
    text = str(content.get("text") or "")
    # `@_user_1` placeholders → `@name`, as people typed them (longest key first: `@_user_10`).
    for m in sorted(message.get("mentions") or [], key=lambda m: -len(m.get("key") or "")):
        if m.get("key"):
            text = text.replace(m["key"], f"@{m.get('name') or ''}")
    bot_name = config.bot_name or settings.bot_name or commands.DEFAULT_BOT_NAME
    problem: str | None = None
    try:
        parsed = commands.parse(text, mentions, bot_name=bot_name)
    except commands.CommandProblem as e:
        parsed, problem = None, e.message
    else:
        if parsed is None:
            return {"ok": True, "ignored": "not a command"}
    document = _find_file(engine, chat_id, sender, message.get("parent_id"))
    if problem is None and document is None:
        problem = NO_FILE
    req = SigningRequest(
        request_id=f"sign:{PLATFORM}:{tenant}:{event_id}",
        title=(parsed.title if parsed else None) or (document.name if document else None)
        or "签署请求 (signing request)",
        initiator=Person(id=sender, name=_known_name(engine, tenant, sender) or sender),
        chat=ChatRef(platform=PLATFORM, tenant=tenant, chat_id=chat_id,
                     chat_kind="direct" if message.get("chat_type") == "p2p" else "group", source_event_id=event_id),
        documents=[document] if document else [],
        groups=parsed.groups if parsed else [],
        provider=(parsed.provider if parsed else None) or settings.default_provider,
        timing=Timing(deadline=settings.deadline, reminder_first_after=settings.reminder_first_after,
                      reminder_every=settings.reminder_every, reminder_max=settings.reminder_max,
                      poll_after=settings.poll_after, step_retry_window=settings.step_retry_window),
        problem=problem,
    )
    _, started = await start_signing(client, req, settings.task_queue)
    return {"ok": True, "request_id": req.request_id, "started": started}


def _remember_file(engine: Engine, chat_id: str, sender: str, message_id: str, content: dict[str, Any],
                   event_id: str) -> None:
    """Keyed `{chat}/{sender}/{message}` so a later command can find the sender's last file."""
    if not (message_id and content.get("file_key")):
        return
    payload = json.dumps({"event_id": event_id, "message_id": message_id, "file_key": content["file_key"],
                          "file_name": content.get("file_name") or "document.pdf"}, ensure_ascii=False)
    with Session(engine) as session:
        session.add(InboundEvent(platform=FILES, event_id=f"{chat_id}/{sender}/{message_id}", payload=payload,
                                 status="handled", handled_at=utcnow()))
        try:
            session.commit()
        except IntegrityError:  # a redelivered file message
            session.rollback()


def _find_file(engine: Engine, chat_id: str, sender: str, parent_id: Any) -> DocumentSource | None:
    """The file the command replies to, else the sender's latest file in this chat."""
    with Session(engine) as session:
        query = select(InboundEvent).where(InboundEvent.platform == FILES)
        if parent_id:
            query = query.where(col(InboundEvent.event_id).startswith(f"{chat_id}/")) \
                .where(col(InboundEvent.event_id).endswith(f"/{parent_id}"))
        else:
            query = query.where(col(InboundEvent.event_id).startswith(f"{chat_id}/{sender}/")) \
                .where(col(InboundEvent.received_at) >= utcnow() - FILE_LOOKBACK)
        row = session.exec(query.order_by(col(InboundEvent.id).desc())).first()
    if row is None:
        # A reply to a file we never received (group without the read-all-messages scope): the
        # activity asks Feishu which file that message holds.
        return DocumentSource(name=REPLIED_FILE, url=source_url(str(parent_id), "")) if parent_id else None
    file = json.loads(row.payload)
    return DocumentSource(name=file["file_name"], url=source_url(file["message_id"], file["file_key"]))


def _known_name(engine: Engine, tenant: str, open_id: str) -> str:
    """Feishu events carry ids only; a name we learned from the directory makes cards readable."""
    with Session(engine) as session:
        row = session.exec(select(Identity).where(Identity.platform == PLATFORM, Identity.tenant == tenant,
                                                  Identity.user_id == open_id)).first()
    return row.name if row else ""


# ---- card actions -----------------------------------------------------------------------------

def toast(kind: str, zh: str, en: str) -> dict[str, Any]:
    return {"toast": {"type": kind, "content": f"{zh}（{en}）", "i18n": {"zh_cn": zh, "en_us": en}}}


async def _action(client: Client, request_id: str, name: str, actor: Actor, event_id: str) -> dict[str, Any]:
    handle = client.get_workflow_handle(request_id)
    try:
        async with asyncio.timeout(ACCEPT_TIMEOUT):
            update = await handle.start_update(name, ActionInput(actor=actor), id=event_id or None,
                                               result_type=StatusView, wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        try:
            async with asyncio.timeout(RESULT_WAIT):
                await update.result()
        except TimeoutError:
            pass
    except WorkflowUpdateFailedError as e:
        message = getattr(e.cause, "message", None) or str(e.cause or e)
        if getattr(e.cause, "type", None) == "PermissionDenied":
            return toast("error", "只有发起人或运维人员可以执行此操作", message)
        return toast("warning", "当前状态下无法执行此操作", message)
    except TimeoutError:
        return toast("error", "系统繁忙，请稍后重试", "SignBridge could not accept the action in time; retry")
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return toast("warning", "该签署流程已结束或不存在", "The signing request has ended or does not exist")
        raise
    done = {"remind": ("已发送催签提醒", "Reminders sent"), "cancel": ("已撤销签署", "The request is cancelled"),
            "retry": ("正在重试", "Retrying")}[name]
    return toast("success", *done)


__all__ = ["InvalidEvent", "decrypt", "handle_card_action", "handle_event", "router", "signature",
           "toast", "verified_payload"]
