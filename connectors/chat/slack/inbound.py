"""Slack inbound: `POST /im/slack/events`, `/im/slack/interactions`, `/im/slack/commands`.

Each handler verifies the request signature on the raw bytes first (`SignatureVerifier`,
300 s window): a forged, unsigned or stale request gets 401 and starts nothing. Then it only
normalises and hands over to Temporal — no Slack API calls here, so the 3 s deadline holds:

* `url_verification` → echo the challenge.
* `app_mention` / `message.im` with the sign command → `SigningWorkflow` with id
  `sign:slack:{team_id}:{event_id}`, acknowledged only after the start returned. Slack retries
  (`X-Slack-Retry-Num`, possibly while the first attempt is still running) hit the same id and
  find the running flow. Mentions (`<@U123>`) become `@U123` with `Person(id="U123")`; real
  names and emails are filled in by the flow's `resolve` step (users.info, cached).
* `/sign` slash command → the same, with the user's latest file in the channel as document
  (looked up by the flow, see `connectors.chat.slack.client`), answered with ephemeral text.
* `block_actions` from the card → the workflow update named by the button's `action_id`,
  update id from the action's `action_ts`, answered once the update is ACCEPTED (as
  `connectors/chat/webhook/inbound.py` does, with budgets that fit 3 s); a validator refusal is 403/409 (Slack
  shows the button as failed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook.async_client import AsyncWebhookClient
from sqlmodel import Session, select
from temporalio.client import Client, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.service import RPCError, RPCStatusCode

from api.deps import ClientDep, SettingsDep
from api.errors import ApiError
from connectors.chat.base import InputProblem
from connectors.chat.slack.client import SlackChat, SlackConfig, file_source_url, latest_file_url, load_config
from connectors.chat.webhook.inbound import MessageEvent as WebhookMessageEvent
from connectors.chat.webhook.inbound import build_request
from signbridge.core import commands
from signbridge.core.models import ActionInput, Actor, ChatRef, Person, StatusView
from signbridge.core.settings import Settings
from signbridge.core.temporal import start_signing
from store.tables import Identity

router = APIRouter(tags=["Slack"])
log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
RESOLVE_BUDGET = 1.5  # seconds of the 3 s deadline spent on users.info at most
ACCEPT_TIMEOUT = 2.0  # for an update to be accepted (durable) ...
RESULT_WAIT = 0.5  # ... and then for its result: together under Slack's 3 s
_USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_OTHER_TOKEN = re.compile(r"<[#!][^>]*>")
_LINK = re.compile(r"<(https?://[^>|]+)(?:\|[^>]*)?>")
SLACK_HOOKS = "https://hooks.slack.com/"
NO_FILE = "No document to sign: attach the PDF to the same message that mentions SignBridge."


def _config(request: Request) -> SlackConfig:
    """The same `SIGNBRIDGE_SLACK_*` config the connector reads; 404 while Slack isn't set up."""
    config: SlackConfig | None = getattr(request.app.state, "slack_config", None)
    if config is None:
        config = load_config()
        if config.enabled:
            request.app.state.slack_config = config
    if not config.enabled:
        raise ApiError(404, "not_configured", "Slack is not configured on this SignBridge")
    return config


async def _verified_body(request: Request, config: SlackConfig) -> bytes:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"Bodies are limited to {MAX_BODY_BYTES} bytes")
    verifier = SignatureVerifier(config.signing_secret.get_secret_value())
    timestamp = request.headers.get("X-Slack-Request-Timestamp") or ""
    signature = request.headers.get("X-Slack-Signature") or ""
    if not timestamp.isdigit() or not signature:
        raise ApiError(401, "bad_signature", "Rejected: missing X-Slack-Signature or X-Slack-Request-Timestamp")
    if not verifier.is_valid(raw, timestamp, signature):
        raise ApiError(401, "bad_signature", "Rejected: the signature does not match or the timestamp is "
                                             "more than 300 s off")
    return raw


def slack_text(text: str, bot_user_id: str | None, bot_name: str) -> tuple[str, list[dict[str, Any]]]:
    """Slack's markup → the shared grammar's plain text and structured mentions.

    `<@U123>` → `@U123` (mention named by its id until `resolve` names it), the bot's own
    mention → `@<bot name>`, channel/special mentions dropped, `&gt;` etc. unescaped last so a
    typed `>` is the group separator again."""
    mentions: list[dict[str, Any]] = []
    seen: set[str] = set()

    def user(m: re.Match[str]) -> str:
        uid = m.group(1)
        if uid == bot_user_id:
            return f"@{bot_name}"
        if uid not in seen:
            seen.add(uid)
            mentions.append({"id": uid, "name": uid})
        return f" @{uid} "

    text = _USER_MENTION.sub(user, text or "")
    text = _LINK.sub(lambda m: m.group(1), _OTHER_TOKEN.sub(" ", text))
    text = text.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
    return text.strip(), mentions


def _bot_user_id(config: SlackConfig, envelope: dict[str, Any], text: str) -> str | None:
    if config.bot_user_id:
        return config.bot_user_id
    for auth in envelope.get("authorizations") or []:
        if auth.get("is_bot") and auth.get("user_id"):
            return str(auth["user_id"])
    first = _USER_MENTION.match((text or "").lstrip())  # an app_mention starts with the bot's mention
    return first.group(1) if first else None


def _known_name(request: Request, team: str, user_id: str) -> str:
    """The initiator's name from the identity cache (a DB read, never a Slack call); else the id."""
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        return user_id
    with Session(engine) as session:
        row = session.exec(select(Identity).where(Identity.platform == "slack", Identity.tenant == team,
                                                  Identity.user_id == user_id)).first()
    return row.name if row is not None else user_id


async def _resolve(request: Request, team: str, ids: list[str]) -> tuple[dict[str, Person], str | None]:
    """Names and emails for the initiator and the signers: the identity cache, else users.info.

    The flow shows (and the signing page asks for) the names in the request, so they are looked
    up here, in parallel and within RESOLVE_BUDGET so the 3 s deadline holds. When Slack is slow
    the ids stand in for names and the flow's `resolve` step still checks every signer; a
    deactivated user becomes the request's `problem` (the flow posts it and ends REJECTED)."""
    chat = _slack_chat(request)
    ref = ChatRef(platform="slack", tenant=team, chat_id="-", source_event_id="-")
    unique = list(dict.fromkeys(ids))
    try:
        async with asyncio.timeout(RESOLVE_BUDGET):
            found = await asyncio.gather(*(chat.resolve(ref, Person(id=i, name=i)) for i in unique),
                                         return_exceptions=True)
    except TimeoutError:
        log.warning("users.info did not answer within %.1f s; names resolved later", RESOLVE_BUDGET)
        return {}, None
    people: dict[str, Person] = {}
    for uid, result in zip(unique, found, strict=True):
        if isinstance(result, InputProblem) and "deactivated" in result.message:
            return people, result.message
        if isinstance(result, Person):
            people[uid] = result
        elif isinstance(result, BaseException):
            log.warning("users.info for %s failed: %s", uid, result)
    return people, None


def _slack_chat(request: Request) -> SlackChat:
    chat: SlackChat | None = getattr(request.app.state, "slack_chat", None)
    if chat is None:
        chat = SlackChat(_config(request), request.app.state.engine, httpx.AsyncClient(timeout=RESOLVE_BUDGET))
        request.app.state.slack_chat = chat
    return chat


async def _start(request: Request, settings: Settings, client: Client, *, team: str, event_id: str,
                 channel: str, kind: str, user: str, text: str, mentions: list[dict[str, Any]],
                 files: list[dict[str, str]], trigger_text: str) -> tuple[str, bool, str | None] | None:
    """Parse the command and start the flow; None for ordinary chat."""
    bot_name = settings.bot_name or commands.DEFAULT_BOT_NAME
    problem: str | None = None
    try:
        parsed = commands.parse(trigger_text, mentions, bot_name=bot_name)
    except commands.CommandProblem as e:
        parsed, problem = None, e.message
    else:
        if parsed is None:
            return None
    if problem is None and not files:
        problem = NO_FILE
    names: dict[str, Person] = {}
    if parsed is not None and problem is None:
        names, problem = await _resolve(request, team, [user, *(p.id for p in parsed.signers)])
        parsed = commands.ParsedCommand(groups=[[names.get(p.id, p) for p in g] for g in parsed.groups],
                                        title=parsed.title, provider=parsed.provider)
    initiator = names.get(user)
    event = WebhookMessageEvent(
        type="message", event_id=event_id, tenant=re.sub(r"[^A-Za-z0-9_.\-]", "_", team) or "default",
        sender={"id": user, "name": initiator.name if initiator else _known_name(request, team, user),  # type: ignore[arg-type]
                "email": initiator.email if initiator else None},
        chat={"id": channel, "kind": kind},  # type: ignore[arg-type]
        text=text, mentions=mentions, files=files,  # type: ignore[arg-type]
    )
    req = build_request(event, settings, parsed, problem)
    req = req.model_copy(update={
        "request_id": f"sign:slack:{event.tenant}:{event_id}",
        "chat": req.chat.model_copy(update={"platform": "slack"}),
        "title": (parsed.title if parsed and parsed.title else None)
        or (files[0]["name"] if files and not files[0]["url"].startswith("slack:latest:") else "Signing request"),
    })
    _, started = await start_signing(client, req, settings.task_queue)
    return req.request_id, started, problem


@router.post("/im/slack/events")
async def slack_events(request: Request, settings: SettingsDep, client: ClientDep) -> JSONResponse:
    config = _config(request)
    raw = await _verified_body(request, config)
    try:
        envelope = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, "invalid_json", f"The body is not JSON: {e}") from e
    if envelope.get("type") == "url_verification":
        return JSONResponse({"challenge": envelope.get("challenge", "")})
    if envelope.get("type") != "event_callback":
        return JSONResponse({"ok": True, "ignored": envelope.get("type")})
    event = envelope.get("event") or {}
    kind = event.get("type")
    is_dm = kind == "message" and event.get("channel_type") == "im"
    if kind != "app_mention" and not is_dm:
        return JSONResponse({"ok": True, "ignored": kind})
    if event.get("bot_id") or event.get("subtype") not in (None, "file_share"):
        return JSONResponse({"ok": True, "ignored": "bot or edited message"})
    team = str(envelope.get("team_id") or event.get("team") or "default")
    event_id = str(envelope.get("event_id") or "")
    if not event_id or not event.get("user") or not event.get("channel"):
        raise ApiError(400, "invalid_event", "event_id, event.user and event.channel are required")
    text, mentions = slack_text(event.get("text", ""), _bot_user_id(config, envelope, event.get("text", "")),
                                settings.bot_name or commands.DEFAULT_BOT_NAME)
    files = [{"name": str(f.get("name") or f.get("title") or "document.pdf"), "url": file_source_url(str(f["id"]))}
             for f in event.get("files") or [] if f.get("id")]
    if is_dm and not commands.is_command(text, settings.bot_name or commands.DEFAULT_BOT_NAME):
        if not files:
            return JSONResponse({"ok": True, "ignored": "not a command"})
        text = f"/sign {text}"  # a file sent to the bot in a DM is addressed to it
    result = await _start(request, settings, client, team=team, event_id=event_id, channel=str(event["channel"]),
                          kind="direct" if is_dm else "group", user=str(event["user"]), text=text,
                          mentions=mentions, files=files, trigger_text=text)
    if result is None:
        return JSONResponse({"ok": True, "ignored": "not a command"})
    request_id, started, problem = result
    body: dict[str, Any] = {"ok": True, "request_id": request_id, "started": started}
    if problem:
        body.update(status="rejected", reason=problem)
    return JSONResponse(body)


@router.post("/im/slack/commands")
async def slack_commands(request: Request, settings: SettingsDep, client: ClientDep) -> JSONResponse:
    config = _config(request)
    raw = await _verified_body(request, config)
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
    team, user, channel = form.get("team_id", "default"), form.get("user_id", ""), form.get("channel_id", "")
    trigger = form.get("trigger_id", "")
    if not user or not channel or not trigger:
        raise ApiError(400, "invalid_command", "user_id, channel_id and trigger_id are required")
    bot_name = settings.bot_name or commands.DEFAULT_BOT_NAME
    text, mentions = slack_text(form.get("text", ""), config.bot_user_id, bot_name)
    text = f"/sign {text}"
    kind = "direct" if channel.startswith("D") else "group"
    files = [{"name": "document.pdf", "url": latest_file_url(channel, user)}]
    result = await _start(request, settings, client, team=team, event_id=f"cmd-{trigger}", channel=channel,
                          kind=kind, user=user, text=text, mentions=mentions, files=files, trigger_text=text)
    assert result is not None  # "/sign …" is always a command
    request_id, _, problem = result
    if problem:
        return JSONResponse({"response_type": "ephemeral", "text": problem, "request_id": request_id})
    return JSONResponse({"response_type": "ephemeral", "request_id": request_id,
                         "text": "Starting a signing request with the last file you shared in this channel. "
                                 "If you haven't shared one yet, attach the PDF and mention SignBridge instead."})


@router.post("/im/slack/interactions")
async def slack_interactions(request: Request, settings: SettingsDep, client: ClientDep,
                             background: BackgroundTasks) -> JSONResponse:
    """Card buttons. Slack ignores the body of a block_actions answer and shows a warning icon for
    anything but 200, so a refusal or a status lookup is answered 200 and explained to the
    clicking user in an ephemeral message through the action's `response_url`."""
    config = _config(request)
    raw = await _verified_body(request, config)
    try:
        payload = json.loads(parse_qs(raw.decode("utf-8", "replace")).get("payload", [""])[0])
    except json.JSONDecodeError as e:
        raise ApiError(400, "invalid_payload", f"The payload is not JSON: {e}") from e
    if payload.get("type") != "block_actions" or not payload.get("actions"):
        return JSONResponse({"ok": True, "ignored": payload.get("type")})
    action = payload["actions"][0]
    name, request_id = str(action.get("action_id", "")), str(action.get("value", ""))
    user = payload.get("user") or {}
    reply_to = _response_url(config, payload.get("response_url"))
    if name == "status":
        answer = await _status(client, request_id)
        _reply(background, reply_to, _status_text(answer))
        return JSONResponse({"ok": True, "request_id": request_id, "status": answer.status.value})
    if name not in ("remind", "cancel", "retry") or not request_id.startswith("sign:"):
        return JSONResponse({"ok": True, "ignored": name})  # URL buttons (signing links) report clicks too
    uid = str(user.get("id", ""))
    actor = Actor(id=uid, name=str(user.get("name") or user.get("username") or ""),
                  is_operator=uid in settings.operator_list)
    update_id = f"slack:{action.get('action_ts') or payload.get('trigger_id')}:{name}"
    try:
        return await _update(client, request_id, name, ActionInput(actor=actor), update_id)
    except ApiError as e:
        if e.status not in (403, 409) or reply_to is None:
            raise
        _reply(background, reply_to, f":no_entry: {e.message}")
        return JSONResponse({"ok": False, "request_id": request_id, "action": name,
                             "error": {"code": e.code, "message": e.message}})


def _response_url(config: SlackConfig, url: Any) -> str | None:
    """Only Slack's own hooks host (or the configured API host, for a private Slack/simulator):
    the URL comes from a verified request, but we still never POST wherever a body says."""
    if not isinstance(url, str):
        return None
    api_origin = "/".join(config.api_base.split("/", 3)[:3]) + "/"
    return url if url.startswith((SLACK_HOOKS, api_origin)) else None


def _reply(background: BackgroundTasks, url: str | None, text: str) -> None:
    """After the 200 went out: an ephemeral message only the clicking user sees."""
    if url is None:
        return

    async def send() -> None:
        try:
            resp = await AsyncWebhookClient(url, timeout=5).send(
                text=text, response_type="ephemeral", replace_original=False)
            if resp.status_code != 200:
                log.warning("slack response_url answered %s: %s", resp.status_code, resp.body)
        except Exception:  # the click was handled; only the explanation is lost
            log.warning("slack response_url failed", exc_info=True)

    background.add_task(send)


def _status_text(view: StatusView) -> str:
    pending = ", ".join(s.person.name for s in view.signers if s.status == "notified")
    signed = sum(s.status == "signed" for s in view.signers)
    text = f"*{view.title}*: {view.status.value} — {signed} of {len(view.signers)} signed"
    if pending:
        text += f"; waiting for {pending}"
    if view.reason:
        text += f" ({view.reason})"
    return text


async def _update(client: Client, request_id: str, name: str, arg: ActionInput, update_id: str) -> JSONResponse:
    """The update, answered within Slack's 3 s: accepted (durable) within ACCEPT_TIMEOUT, else 503
    (a click is not redelivered; the user clicks again, same flow, a new update id); the result
    awaited RESULT_WAIT more, else 202 and the card shows the outcome. A validator refusal is
    403 (permission) or 409, which Slack shows as a failed button."""
    handle = client.get_workflow_handle(request_id)
    try:
        async with asyncio.timeout(ACCEPT_TIMEOUT):
            update = await handle.start_update(name, arg, id=update_id, result_type=StatusView,
                                               wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        try:
            async with asyncio.timeout(RESULT_WAIT):
                view: StatusView = await update.result()
        except TimeoutError:
            return JSONResponse({"ok": True, "request_id": request_id, "action": name, "accepted": True},
                                status_code=202)
    except WorkflowUpdateFailedError as e:
        code = getattr(e.cause, "type", None) or "rejected"
        message = getattr(e.cause, "message", None) or str(e.cause or e)
        raise ApiError(403 if code == "PermissionDenied" else 409, code, message) from e
    except TimeoutError as e:
        raise ApiError(503, "unavailable", "SignBridge could not accept the action in time; please retry") from e
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404 if "completed" not in e.message.lower() else 409, "not_found",
                           f"No open signing request {request_id}") from e
        raise
    return JSONResponse({"ok": True, "request_id": request_id, "action": name, "status": view.status.value})


async def _status(client: Client, request_id: str) -> StatusView:
    try:
        return await client.get_workflow_handle(request_id).query(  # type: ignore[no-any-return]
            "status", result_type=StatusView)
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            raise ApiError(404, "not_found", f"No signing request {request_id}") from e
        raise
