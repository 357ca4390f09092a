"""`POST /im/webhook/events`: a company's own chat tool talking to SignBridge.

The handler only verifies, normalises and hands over to Temporal (DESIGN.md, "Generic webhook
IM protocol"):

* The signature is checked on the raw bytes before anything is parsed; a forged, unsigned or
  stale request gets 401 and starts nothing.
* `type: "message"` → the shared command grammar (`signbridge.core.commands`). Ordinary chat is
  acknowledged and ignored. A command starts `SigningWorkflow` with id
  `sign:webhook:{tenant}:{event_id}`, so a redelivered event finds the running flow instead of
  starting a second one. A command the sender must fix (unknown @name, no file, …) still starts
  the flow with `problem` set: the flow posts the reason in the chat and ends REJECTED, so every
  refusal is visible there and recorded in Temporal.
* `type: "action"` (card buttons) → the workflow update of the same name, with the event id as
  update id so a redelivered click is applied once. The validator's refusal comes back as 409
  (403 when it is a permission refusal).

Replies go out only after Temporal holds the request (workflow started / update accepted).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.service import RPCError, RPCStatusCode

from api.deps import ClientDep, SettingsDep
from api.errors import ApiError
from connectors.chat.webhook import signature as webhook_signature
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

router = APIRouter(tags=["webhook IM"])

MAX_BODY_BYTES = 1024 * 1024
ACTIONS = ("remind", "cancel", "retry")
# Chat platforms give us ~3–5 s to answer. An update must be *accepted* (durable) within
# ACCEPT_TIMEOUT, else 503 and the IM redelivers (same update id, applied once); its result is
# awaited a little longer, else the reply is 202 and the card shows the outcome later.
ACCEPT_TIMEOUT = 3.0
RESULT_WAIT = 1.0

NO_FILE = ("没有找到要签署的文件：请在同一条消息里附上合同文件"
           "（No document to sign: attach the contract to the same message）")


# ---- inbound shapes ---------------------------------------------------------------------------

class ChatIn(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    kind: Literal["group", "direct"] = "group"


class SenderIn(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    name: str = Field(default="", max_length=200)
    email: str | None = None
    mobile: str | None = None


class FileIn(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    url: str = Field(min_length=1, max_length=2000)
    sha256: str | None = None


class _Event(BaseModel):
    event_id: str = Field(min_length=1, max_length=200)
    tenant: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    sender: SenderIn


class MessageEvent(_Event):
    type: Literal["message"]
    chat: ChatIn
    text: str = Field(default="", max_length=10_000)
    mentions: list[Person] = Field(default_factory=list)
    files: list[FileIn] = Field(default_factory=list)


class ActionIn(BaseModel):
    request_id: str = Field(min_length=1, max_length=300)
    name: str
    reason: str | None = Field(default=None, max_length=500)
    signer_ids: list[str] = Field(default_factory=list)


class ActionEvent(_Event):
    type: Literal["action"]
    action: ActionIn


_EVENT: TypeAdapter[MessageEvent | ActionEvent] = TypeAdapter(
    Annotated[MessageEvent | ActionEvent, Field(discriminator="type")]
)


# ---- the endpoint -----------------------------------------------------------------------------

@router.post("/im/webhook/events")
async def webhook_events(request: Request, settings: SettingsDep, client: ClientDep) -> JSONResponse:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"Event bodies are limited to {MAX_BODY_BYTES} bytes")
    try:
        webhook_signature.verify(
            settings.webhook_secret.get_secret_value(),
            request.headers.get(webhook_signature.TIMESTAMP_HEADER),
            request.headers.get(webhook_signature.SIGNATURE_HEADER),
            raw,
            tolerance=settings.webhook_tolerance_seconds,
        )
    except webhook_signature.SignatureError as e:
        raise ApiError(401, "bad_signature", f"Rejected: {e.reason}") from e
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"The body is not JSON: {e}") from e
    try:
        event = _EVENT.validate_python(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5])
        raise ApiError(400, "invalid_event", f"Invalid event: {problems}") from e
    if isinstance(event, MessageEvent):
        return await _message(event, settings, client)
    return await _action(event, settings, client)


async def _message(event: MessageEvent, settings: Settings, client: Client) -> JSONResponse:
    bot_name = settings.bot_name or commands.DEFAULT_BOT_NAME
    problem: str | None = None
    try:
        parsed = commands.parse(event.text, event.mentions, bot_name=bot_name)
    except commands.CommandProblem as e:
        parsed, problem = None, e.message
    else:
        if parsed is None:
            return JSONResponse({"ok": True, "ignored": "not a command"}, status_code=200)
    if problem is None and not event.files:
        problem = NO_FILE
    req = build_request(event, settings, parsed, problem)
    _, started = await start_signing(client, req, settings.task_queue)
    body: dict[str, Any] = {"ok": True, "request_id": req.request_id, "started": started}
    if problem is not None:
        body.update(status="rejected", reason=problem)
    return JSONResponse(body, status_code=202 if started else 200)


def build_request(event: MessageEvent, settings: Settings, parsed: commands.ParsedCommand | None,
                  problem: str | None) -> SigningRequest:
    """The workflow input for one chat command (with `problem` set when it cannot go ahead)."""
    request_id = f"sign:webhook:{event.tenant}:{event.event_id}"
    title = (parsed.title if parsed else None) or (event.files[0].name if event.files else None) \
        or "签署请求 (signing request)"
    return SigningRequest(
        request_id=request_id,
        title=title,
        initiator=Person(id=event.sender.id, name=event.sender.name or event.sender.id,
                         email=event.sender.email, mobile=event.sender.mobile),
        chat=ChatRef(platform="webhook", tenant=event.tenant, chat_id=event.chat.id, chat_kind=event.chat.kind,
                     source_event_id=event.event_id),
        documents=[DocumentSource(name=f.name, url=f.url, sha256=f.sha256) for f in event.files],
        groups=parsed.groups if parsed else [],
        provider=(parsed.provider if parsed else None) or settings.default_provider,
        timing=Timing(
            deadline=settings.deadline,
            reminder_first_after=settings.reminder_first_after,
            reminder_every=settings.reminder_every,
            reminder_max=settings.reminder_max,
            poll_after=settings.poll_after,
            step_retry_window=settings.step_retry_window,
        ),
        problem=problem,
    )


async def _action(event: ActionEvent, settings: Settings, client: Client) -> JSONResponse:
    action = event.action
    if action.name not in ACTIONS:
        raise ApiError(400, "unknown_action", f"Unknown action {action.name!r}; expected one of {', '.join(ACTIONS)}")
    arg = ActionInput(
        actor=Actor(id=event.sender.id, name=event.sender.name, is_operator=event.sender.id in settings.operator_list),
        reason=action.reason,
        signer_ids=action.signer_ids,
    )
    handle = client.get_workflow_handle(action.request_id)
    try:
        async with asyncio.timeout(ACCEPT_TIMEOUT):
            update = await handle.start_update(action.name, arg, id=event.event_id, result_type=StatusView,
                                               wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        try:
            async with asyncio.timeout(RESULT_WAIT):
                view: StatusView = await update.result()
        except TimeoutError:
            return JSONResponse({"ok": True, "request_id": action.request_id, "action": action.name,
                                 "accepted": True}, status_code=202)
    except WorkflowUpdateFailedError as e:
        code = getattr(e.cause, "type", None) or "rejected"
        message = getattr(e.cause, "message", None) or str(e.cause or e)
        raise ApiError(403 if code == "PermissionDenied" else 409, code, message) from e
    except TimeoutError as e:
        raise ApiError(503, "unavailable", "SignBridge could not accept the action in time; please retry") from e
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            if "completed" in e.message.lower():
                raise ApiError(409, "already_ended", f"The request {action.request_id} has already ended") from e
            raise ApiError(404, "not_found", f"No signing request {action.request_id}") from e
        raise
    return JSONResponse({"ok": True, "request_id": action.request_id, "action": action.name,
                         "status": view.status.value}, status_code=200)
