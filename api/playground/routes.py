"""The playground: a small company chat in the browser, for trying SignBridge in development.

It is what a company's own chat tool would be to SignBridge, and nothing more: it sends signed
webhook IM events to `POST /im/webhook/events` over HTTP like any chat would (no back door into the
intake), receives SignBridge's signed outbound calls at `POST /playground/outbound` (the default
`SIGNBRIDGE_WEBHOOK_OUTBOUND_URL` of `signbridge run`), and serves dropped files to SignBridge's
signed `GET`s. A person picks who they are, drops a file, types `/sign @李四 > @客户A`, watches the
card change (server-sent events), opens each signer's link and gets the signed file back.

Only mounted when `SIGNBRIDGE_ENVIRONMENT=development` (`api.main`); it keeps its transcript and
files under `<data dir>/playground/`. `signbridge demo` plays it from the command line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from fastapi import APIRouter, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field

from api.deps import SettingsDep
from api.errors import ApiError
from api.playground.transcript import Transcript
from connectors.chat.webhook import signature
from connectors.notify.dev import read_outbox
from signbridge.core.settings import PLAYGROUND_FILES_PATH, Settings

HERE = Path(__file__).parent
ASSETS = HERE / "assets"
OUTBOUND_PATH = "/playground/outbound"
UPLOAD_PATH = "/playground/api/files"
CHAT = {"id": "g-playground", "kind": "group", "name": "SignBridge 体验群"}
STREAM_SECONDS = 5.0  # a stream ends after this long without news; the browser reconnects at once
SSO_SECONDS = 600  # how long a signing link opened from the playground vouches for who opened it

# Who one can be in the playground. Mentions carry their contact data, as the protocol says.
PEOPLE: list[dict[str, Any]] = [
    {"id": "u-zhangsan", "name": "张三", "email": "zs@corp.example", "role": "销售经理"},
    {"id": "u-lisi", "name": "李四", "email": "ls@corp.example", "role": "法务"},
    {"id": "u-wangwu", "name": "王五", "email": "ww@corp.example", "role": "财务"},
    {"id": "u-zhaoliu", "name": "赵六", "email": "zl@corp.example", "role": "总经理"},
    {"id": "x-kehu", "name": "客户A", "email": "a@customer.example", "external": True, "role": "外部客户"},
]
BY_ID = {p["id"]: p for p in PEOPLE}

router = APIRouter(prefix="/playground", include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
                               "form-action 'self'",
}


def is_upload(path: str) -> bool:
    """The route that takes a whole document (see the request limits in `api.main`)."""
    return path == UPLOAD_PATH


def transcript(request: Request) -> Transcript:
    return request.app.state.playground  # type: ignore[no-any-return]


def person(person_id: str) -> dict[str, Any]:
    try:
        return BY_ID[person_id]
    except KeyError:
        raise ApiError(400, "unknown_person", f"Nobody called {person_id!r} is in the playground") from None


def mentions(text: str) -> list[dict[str, Any]]:
    """The people `@name`d in `text`, first mention first, with what the chat knows about them;
    an `@name` of nobody here is left to SignBridge, which says so in the chat."""
    found: list[dict[str, Any]] = []
    for match in sorted((m for p in PEOPLE for m in re.finditer(re.escape("@" + p["name"]), text)),
                        key=lambda m: m.start()):
        who = next(p for p in PEOPLE if "@" + p["name"] == match.group(0))
        if who not in found:
            found.append(who)
    return [{k: v for k, v in p.items() if k != "role"} for p in found]


def own_base(request: Request) -> str:
    """Where this server listens, as SignBridge's worker reaches it (loopback for a wildcard bind)."""
    host, port = request.scope.get("server") or ("127.0.0.1", 80)
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"  # noqa: S104 (a bind, read)


def sso(secret: str, user_id: str, now: float | None = None, audience: str | None = None) -> str:
    """`<payload>.<sig>`: the company chat vouches that `user_id` opened the link (base64url JSON
    `{"sub", "exp"}`, plus `"aud"`: the link it is for, hex HMAC-SHA256 with the webhook secret) —
    appended to a signing link as `sso=`. SignBridge redeems each assertion once."""
    body: dict[str, Any] = {"sub": user_id, "exp": int((now or time.time()) + SSO_SECONDS)}
    if audience:
        body["aud"] = audience
    claims = json.dumps(body, separators=(",", ":"))
    payload = base64.urlsafe_b64encode(claims.encode()).rstrip(b"=").decode()
    return f"{payload}.{hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()}"


def outbound_here(settings: Settings) -> bool:
    """SignBridge's chat is this playground (else cards and links go to another chat)."""
    return urlsplit(settings.webhook_outbound_url).path == OUTBOUND_PATH


async def _send(request: Request, settings: Settings, event: dict[str, Any]) -> dict[str, Any]:
    """POST one signed event to SignBridge as the company chat does; SignBridge's answer."""
    raw = json.dumps(event, ensure_ascii=False).encode()
    headers = {**signature.headers(settings.webhook_secret.get_secret_value(), raw),
               "Content-Type": "application/json"}
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(f"{own_base(request)}/im/webhook/events", content=raw, headers=headers)
    except httpx.HTTPError as e:
        return {"status": 0, "body": {"error": {"code": "unreachable", "message": str(e)}}}
    try:
        body = resp.json()
    except ValueError:
        body = {"text": resp.text[:500]}
    return {"status": resp.status_code, "body": body}


# ---- the page ------------------------------------------------------------------------------


@router.get("", response_class=HTMLResponse)
async def page(request: Request, settings: SettingsDep) -> Response:
    response = templates.TemplateResponse(request, "playground.html", {
        "people": PEOPLE, "chat": CHAT, "outbound_here": outbound_here(settings),
        "outbound_url": settings.webhook_outbound_url})
    response.headers.update(PAGE_HEADERS)
    return response


# ---- the chat's API (the page's script and `signbridge demo` use it) -----------------------


@router.get("/api/state")
async def state(request: Request, settings: SettingsDep) -> dict[str, Any]:
    return {"people": PEOPLE, "chat": CHAT, "outbound_here": outbound_here(settings),
            "entries": transcript(request).entries}


@router.get("/api/entries")
async def entries(request: Request, after: Annotated[int, Query(ge=0)] = 0,
                  wait: Annotated[float, Query(ge=0, le=30)] = 0) -> list[dict[str, Any]]:
    """Entries after `after`; with `wait`, up to that many seconds for the first new one."""
    chat = transcript(request)
    await chat.wait(after, wait)
    return chat.since(after)


@router.get("/api/mailbox")
async def mailbox(settings: SettingsDep, after: Annotated[int, Query(ge=0)] = 0) -> list[dict[str, Any]]:
    """The development mailbox: the emails and SMS SignBridge would have sent (one-time codes,
    external signers' links) while no email or SMS service is configured (`connectors.notify.dev`)."""
    return read_outbox(settings, after=after)


@router.get("/api/stream")
async def stream(request: Request, after: Annotated[int, Query(ge=0)] = 0) -> StreamingResponse:
    """New entries as server-sent events (`id` = seq, so a reconnecting browser resumes)."""
    chat = transcript(request)
    resume = request.headers.get("last-event-id", "")
    start = int(resume) if resume.isdigit() else after

    async def events() -> AsyncIterator[str]:
        yield "retry: 300\n\n"
        sent, end = start, time.monotonic() + STREAM_SECONDS
        while time.monotonic() < end:
            await chat.wait(sent, end - time.monotonic())
            for entry in chat.since(sent):
                yield f"id: {entry['seq']}\nevent: entry\ndata: {json.dumps(entry, ensure_ascii=False)}\n\n"
                sent = entry["seq"]

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


@router.post("/api/files")
async def upload(request: Request, settings: SettingsDep, file: UploadFile) -> dict[str, Any]:
    data = await file.read(settings.max_document_bytes + 1)
    if len(data) > settings.max_document_bytes:
        raise ApiError(413, "too_large", f"The file is larger than {settings.max_document_bytes} bytes")
    return transcript(request).keep_file(file.filename or "file.pdf", data)


class Dropped(BaseModel):
    id: str = Field(min_length=32, max_length=32)
    name: str = Field(min_length=1, max_length=255)


class Say(BaseModel):
    by: str = Field(description="who is speaking: a person's id")
    text: str = Field(default="", max_length=10_000)
    files: list[Dropped] = Field(default_factory=list, max_length=10, description="from /playground/api/files")


@router.post("/api/say")
async def say(request: Request, settings: SettingsDep, body: Say) -> dict[str, Any]:
    """A chat message: to SignBridge as a signed `message` event, then into the transcript."""
    chat = transcript(request)
    sender = person(body.by)
    files = []
    for dropped in body.files:
        data = chat.file(dropped.id)
        if data is None:
            raise ApiError(404, "no_such_file", f"No dropped file {dropped.id}")
        files.append(chat.keep_file(dropped.name, data))
    event_id = f"pg-{uuid.uuid4().hex[:16]}"
    event = {"event_id": event_id, "type": "message", "chat": {"id": CHAT["id"], "kind": CHAT["kind"]},
             "sender": {k: sender[k] for k in ("id", "name", "email") if k in sender}, "text": body.text,
             "mentions": mentions(body.text),
             "files": [{"name": f["name"], "sha256": f["sha256"],
                        "url": f"{own_base(request)}{PLAYGROUND_FILES_PATH}{f['id']}"} for f in files]}
    answer = await _send(request, settings, event)
    return chat.append("said", by=sender["id"], text=body.text, files=files, event_id=event_id, answer=answer)


class Press(BaseModel):
    by: str
    request_id: str = Field(max_length=255)
    action: str = Field(pattern=r"^(remind|cancel|retry)$")


@router.post("/api/press")
async def press(request: Request, settings: SettingsDep, body: Press) -> dict[str, Any]:
    """A card button: a signed `action` event as the person who pressed it."""
    who = person(body.by)
    event_id = f"pg-{uuid.uuid4().hex[:16]}"
    event = {"event_id": event_id, "type": "action", "sender": {"id": who["id"], "name": who["name"]},
             "action": {"request_id": body.request_id, "name": body.action}}
    answer = await _send(request, settings, event)
    return transcript(request).append("pressed", by=who["id"], request_id=body.request_id, action=body.action,
                                      answer=answer)


@router.get("/open/{seq}")
async def open_link(request: Request, settings: SettingsDep, seq: int,
                    by: Annotated[str, Query(alias="as")]) -> Response:
    """A signing link opened from the chat by the person it was sent to: on to SignBridge's page,
    with the chat's word for who opened it (`sso=`), as a company chat's in-app browser would."""
    entry = transcript(request).get(seq)
    body = entry.get("body", {}) if entry else {}
    if not body.get("sign_url") or body.get("to") != by:
        raise ApiError(404, "not_found", "No signing link for this person here")
    url = body["sign_url"]
    joiner = "&" if "?" in url else "?"
    assertion = sso(settings.webhook_secret.get_secret_value(), by, audience=url.split("?", 1)[0])
    return RedirectResponse(f"{url}{joiner}sso={assertion}", 303)


# ---- what SignBridge calls -----------------------------------------------------------------


@router.post("/outbound")
async def outbound(request: Request, settings: SettingsDep) -> JSONResponse:
    """SignBridge's cards, messages and files: verified like any company chat must, kept once."""
    raw = await request.body()
    try:
        signature.verify(settings.webhook_secret.get_secret_value(), request.headers.get(signature.TIMESTAMP_HEADER),
                         request.headers.get(signature.SIGNATURE_HEADER), raw)
        body = json.loads(raw)
    except (signature.SignatureError, ValueError) as e:
        return JSONResponse({"ok": False, "error": str(e)}, status_code=401)
    chat = transcript(request)
    key = str(body.get("idempotency_key") or request.headers.get("Idempotency-Key") or "")
    if key and chat.seen(key):
        return JSONResponse({"ok": True, "duplicate": True})
    chat.append("outbound", body=body)
    return JSONResponse({"ok": True})


@router.get(PLAYGROUND_FILES_PATH.removeprefix("/playground").rstrip("/") + "/{file_id}")
async def serve_file(request: Request, settings: SettingsDep, file_id: str) -> Response:
    """A dropped file, for SignBridge's signed `GET` only (a chat's files are not public)."""
    try:
        signature.verify(settings.webhook_secret.get_secret_value(), request.headers.get(signature.TIMESTAMP_HEADER),
                         request.headers.get(signature.SIGNATURE_HEADER), b"")
    except signature.SignatureError as e:
        return JSONResponse({"ok": False, "error": e.reason}, status_code=401)
    data = transcript(request).file(file_id)
    if data is None:
        return JSONResponse({"ok": False, "error": "no such file"}, status_code=404)
    return Response(data, media_type="application/octet-stream")
