"""A small Slack Web API for tests: real HTTP, the methods SignBridge uses, Slack's error shapes.

* Auth: `Authorization: Bearer <bot token>`; missing → `not_authed`, wrong → `invalid_auth`
  (HTTP 200 with `ok:false`, as Slack does). File downloads with a wrong token get 403.
* `rate_limit_next(n)`: the next `n` API calls get HTTP 429 with `Retry-After` and change nothing.
* State: channels (known ids, plus `D…` DMs opened with `conversations.open`), users, files
  (`url_private_download` served here), and messages keyed by (channel, ts). Every accepted
  call is appended to `calls` in arrival order so tests can count posts and updates.
* Uploads as `files_upload_v2` makes them: `files.getUploadURLExternal` (`filename`, `length` > 0,
  at most 1 GB, else `invalid_arguments` / `file_too_large`) hands out an upload URL served here;
  the bytes are POSTed there (raw, or multipart `file`); `files.completeUploadExternal` (`files`
  JSON, `channel_id`) shares them as one message — a file never uploaded, or whose bytes differ
  from the announced `length`, is refused (`file_not_found` / `invalid_upload`, modelled).
* JSON and form bodies are both accepted (Slack takes JSON for write methods, form/query for
  read methods).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from tests.sim.servers import serve

UPLOAD_LIMIT = 1024 * 1024 * 1024  # 1 GB per file (unconfirmed)


@dataclass
class SimFile:
    id: str
    name: str
    data: bytes
    user: str
    channel: str


@dataclass
class SimMessage:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    user: str | None = None
    files: list[str] = field(default_factory=list)
    updates: int = 0
    versions: list[list[dict[str, Any]]] = field(default_factory=list)  # blocks after each post/update


class SlackSim:
    def __init__(self, token: str, bot_user: str = "UBOT") -> None:
        self.token = token
        self.bot_user = bot_user
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: set[str] = set()
        self.files: dict[str, SimFile] = {}
        self.messages: dict[tuple[str, str], SimMessage] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.rate_limited = 0
        self.url = ""
        self._base = ""
        self._lock = threading.Lock()
        self._limit_next = 0
        self._retry_after = 1
        self._ts = itertools.count(1)
        self._cm: AbstractContextManager[str] | None = None
        self.app = FastAPI()
        self.app.post("/api/{method}")(self._api)
        self.app.get("/files/{file_id}/download")(self._download)
        self.app.post("/upload/v1/{file_id}")(self._upload)
        self.pending_uploads: dict[str, tuple[str, int, bytes | None]] = {}  # file id -> (name, length, bytes)
        self.app.post("/actions/{team}/{action}/{token}")(self._respond)
        self.responses: list[dict[str, Any]] = []  # what was posted to response_urls
        self._response_uses: dict[str, int] = {}

    # ---- setup and control --------------------------------------------------------------------

    def add_user(self, uid: str, name: str, email: str | None = None, deleted: bool = False,
                 team: str = "T1") -> None:
        """A user of workspace `team`; one of another workspace is a Slack Connect user (users.info
        shows their home workspace's `team_id`)."""
        self.users[uid] = {"id": uid, "team_id": team, "name": name.lower(), "deleted": deleted, "real_name": name,
                           "profile": {"real_name": name, "display_name": name, **({"email": email} if email else {})}}

    def add_channel(self, channel: str) -> None:
        self.channels.add(channel)

    def share_file(self, file_id: str, name: str, data: bytes, user: str, channel: str) -> None:
        """A user posts a file in a channel (shows up in files.info and conversations.history)."""
        with self._lock:
            self.files[file_id] = SimFile(file_id, name, data, user, channel)
            ts = self._next_ts()
            self.messages[(channel, ts)] = SimMessage(channel, ts, "", user=user, files=[file_id])

    def rate_limit_next(self, n: int, retry_after: int = 1) -> None:
        with self._lock:
            self._limit_next, self._retry_after = n, retry_after

    # ---- queries for assertions ---------------------------------------------------------------

    def posted(self, channel: str | None = None) -> list[SimMessage]:
        return [m for m in self.messages.values()
                if m.user == self.bot_user and (channel is None or m.channel == channel)]

    def cards(self, channel: str) -> list[SimMessage]:
        return [m for m in self.posted(channel) if any(b.get("type") == "header" for b in m.blocks)]

    def dms(self, user: str) -> list[SimMessage]:
        return self.posted(f"D{user}")

    def shared_files(self, channel: str) -> list[SimFile]:
        """Files the bot shared into `channel` (a DM is `D<user>`), in order."""
        return [self.files[f] for m in self.posted(channel) for f in m.files]

    def count(self, method: str) -> int:
        return sum(1 for m, _ in self.calls if m == method)

    async def wait_for(self, check: Callable[[], bool], timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not check():
            if time.monotonic() > end:
                raise AssertionError("the Slack simulator never saw what the test waited for")
            await asyncio.sleep(0.05)

    # ---- the HTTP side ------------------------------------------------------------------------

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    async def _api(self, method: str, request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("application/json"):
            args: dict[str, Any] = json.loads(await request.body() or b"{}")
        else:
            args = {**dict(request.query_params), **dict(await request.form())}
        with self._lock:
            if self._limit_next > 0:
                self._limit_next -= 1
                self.rate_limited += 1
                return JSONResponse({"ok": False, "error": "ratelimited"}, status_code=429,
                                    headers={"Retry-After": str(self._retry_after)})
            auth = request.headers.get("authorization", "")
            if not auth:
                return JSONResponse({"ok": False, "error": "not_authed"})
            if auth != f"Bearer {self.token}":
                return JSONResponse({"ok": False, "error": "invalid_auth"})
            self._base = str(request.base_url).rstrip("/")  # where this server is reached (upload URLs)
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            if handler is None:
                return JSONResponse({"ok": False, "error": "unknown_method"}, status_code=404)
            result: dict[str, Any] = handler(args)
            if result.get("ok"):
                self.calls.append((method, args))
            return JSONResponse(result)

    async def _download(self, file_id: str, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return Response(status_code=403)
        f = self.files.get(file_id)
        if f is None:
            return Response(status_code=404)
        return Response(f.data, media_type="application/pdf")

    async def _upload(self, file_id: str, request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            part = (await request.form()).get("file")
            data = await part.read() if part is not None and not isinstance(part, str) else b""
        else:
            data = await request.body()
        with self._lock:
            pending = self.pending_uploads.get(file_id)
            if pending is None:
                return PlainTextResponse("not_found", status_code=404)
            self.pending_uploads[file_id] = (pending[0], pending[1], data)
        return PlainTextResponse(f"OK - {len(data)}")

    # ---- methods ------------------------------------------------------------------------------

    def _m_files_getUploadURLExternal(self, a: dict[str, Any]) -> dict[str, Any]:
        name, length = str(a.get("filename") or ""), str(a.get("length") or "")
        if not name or not length.isdigit() or int(length) <= 0:
            return {"ok": False, "error": "invalid_arguments"}
        if int(length) > UPLOAD_LIMIT:
            return {"ok": False, "error": "file_too_large"}
        file_id = f"F{uuid.uuid4().hex[:10].upper()}"
        self.pending_uploads[file_id] = (name, int(length), None)
        return {"ok": True, "upload_url": f"{self._base}/upload/v1/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, a: dict[str, Any]) -> dict[str, Any]:
        channel = str(a.get("channel_id") or "")
        try:
            files = json.loads(str(a.get("files") or ""))
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        if not isinstance(files, list) or not files:
            return {"ok": False, "error": "invalid_arguments"}
        if channel and not self._channel_ok(channel):
            return {"ok": False, "error": "channel_not_found"}
        ids = [str(f.get("id")) for f in files]
        for file_id in ids:
            pending = self.pending_uploads.get(file_id)
            if pending is None or pending[2] is None:
                return {"ok": False, "error": "file_not_found"}
            if len(pending[2]) != pending[1]:
                return {"ok": False, "error": "invalid_upload"}
        for f, file_id in zip(files, ids, strict=True):
            name, _, data = self.pending_uploads.pop(file_id)
            assert data is not None
            self.files[file_id] = SimFile(file_id, str(f.get("title") or name), data, self.bot_user, channel)
        if channel:
            ts = self._next_ts()
            self.messages[(channel, ts)] = SimMessage(channel, ts, str(a.get("initial_comment") or ""),
                                                      user=self.bot_user, files=ids)
        return {"ok": True, "files": [{"id": i, "title": self.files[i].name} for i in ids]}

    def _channel_ok(self, channel: str) -> bool:
        return channel in self.channels or (channel.startswith("D") and channel[1:] in self.users)

    def _m_chat_postMessage(self, a: dict[str, Any]) -> dict[str, Any]:
        channel = str(a.get("channel", ""))
        if not self._channel_ok(channel):
            return {"ok": False, "error": "channel_not_found"}
        if not a.get("text") and not a.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        self.messages[(channel, ts)] = SimMessage(channel, ts, str(a.get("text", "")), _blocks(a),
                                                  user=self.bot_user, versions=[_blocks(a)])
        return {"ok": True, "channel": channel, "ts": ts}

    def _m_chat_update(self, a: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(a.get("channel", "")), str(a.get("ts", ""))
        if not self._channel_ok(channel):
            return {"ok": False, "error": "channel_not_found"}
        msg = self.messages.get((channel, ts))
        if msg is None:
            return {"ok": False, "error": "message_not_found"}
        if msg.user != self.bot_user:
            return {"ok": False, "error": "cant_update_message"}
        msg.text, msg.blocks, msg.updates = str(a.get("text", "")), _blocks(a), msg.updates + 1
        msg.versions.append(msg.blocks)
        return {"ok": True, "channel": channel, "ts": ts}

    def _m_conversations_open(self, a: dict[str, Any]) -> dict[str, Any]:
        users = str(a.get("users", ""))
        if users not in self.users:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "channel": {"id": f"D{users}"}}

    def _m_conversations_history(self, a: dict[str, Any]) -> dict[str, Any]:
        channel = str(a.get("channel", ""))
        if not self._channel_ok(channel):
            return {"ok": False, "error": "channel_not_found"}
        found = sorted((m for m in self.messages.values() if m.channel == channel), key=lambda m: m.ts, reverse=True)
        return {"ok": True, "messages": [{"ts": m.ts, "user": m.user, "text": m.text,
                                          **({"files": [{"id": f} for f in m.files]} if m.files else {})}
                                         for m in found[: int(a.get("limit", 100))]]}

    def _m_users_info(self, a: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(a.get("user", "")))
        return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}

    def _m_files_info(self, a: dict[str, Any]) -> dict[str, Any]:
        f = self.files.get(str(a.get("file", "")))
        if f is None:
            return {"ok": False, "error": "file_not_found"}
        return {"ok": True, "file": {"id": f.id, "name": f.name, "size": len(f.data), "mimetype": "application/pdf",
                                     "url_private_download": f"{self.url}/files/{f.id}/download"}}

    def response_url(self, team: str = "T1") -> str:
        """A fresh `response_url` as Slack puts in an interaction payload."""
        return f"{self.url}/actions/{team}/{next(self._ts)}/{uuid.uuid4().hex}"

    async def _respond(self, team: str, action: str, token: str, request: Request) -> Response:
        """Slack's response_url: JSON body, at most 5 uses (then `used_url`)."""
        if not request.headers.get("content-type", "").startswith("application/json"):
            return PlainTextResponse("invalid_payload", status_code=400)
        with self._lock:
            uses = self._response_uses.get(token, 0) + 1
            self._response_uses[token] = uses
        if uses > 5:
            return PlainTextResponse("used_url", status_code=404)
        body = await request.json()
        if not isinstance(body, dict) or not (body.get("text") or body.get("blocks")):
            return PlainTextResponse("no_text", status_code=400)
        self.responses.append(body)
        return PlainTextResponse("ok")

    # ---- context manager ----------------------------------------------------------------------

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/"

    def __enter__(self) -> SlackSim:
        self._cm = serve(self.app)
        self.url = self._cm.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._cm is not None
        self._cm.__exit__(exc_type, exc, tb)


def _blocks(a: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = a.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    return list(blocks)
