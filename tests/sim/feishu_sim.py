"""A Feishu/Lark Open API simulator for tests: real HTTP on a loopback port, Feishu's shapes and errors.

Implements only what `connectors.chat.feishu.client` uses, but strictly:

* `POST /open-apis/auth/v3/tenant_access_token/internal` checks app id + secret and issues
  `t-…` tokens that expire after `token_ttl` seconds (or at once through `expire_tokens()`).
  Every other call needs `Authorization: Bearer t-…`: missing → code 99991661, unknown or
  expired → 99991663 (HTTP 400, as Feishu answers them).
* `GET /open-apis/im/v1/messages/{id}` (a user's file message), `POST /open-apis/im/v1/messages`
  (send, with `uuid` dedupe like Feishu's one-hour window),
  `PATCH /open-apis/im/v1/messages/{id}` (cards only, both versions must declare
  `config.update_multi: true`, ≤ 30 KB, only within 14 days of sending: `age()` a message to
  test the fallback, code 230031), `POST /open-apis/im/v1/files` (multipart upload: `file_type`,
  `file_name`, `file`; empty → 234010, over 30 MB → 234006, bad params → 234001; `file`
  messages must name an uploaded `file_key`), message resources (files) and contact users (with
  `status.is_resigned` / `status.is_frozen`).
* `rate_limit_next(n)`: the next n API calls get HTTP 429, code 99991400 and
  `x-ogw-ratelimit-reset`; such calls change nothing (as at Feishu).

Approval v4: `add_instance()` holds an instance (status, initiator `open_id`, widgets);
`GET /open-apis/approval/v4/instances/{code}` answers it with `form` as a JSON array string
(unknown code → 1390001, as "param is invalid" — unconfirmed), attachment widgets carry URLs into
this server's `/approval-files/{key}` (plain GET, no token, like a pre-signed URL), and
`POST /open-apis/approval/v4/instances/{code}/comments` needs `user_id` (the author) and a `content`
that is a JSON *string* with `text` — a comment without them is refused (1390001);
`POST /open-apis/approval/v4/approvals/{code}/subscribe` answers 1390007 the second time.

Also the other direction's tools: `encrypt()` and `push_headers()` build event callbacks the way
Feishu's servers do, so tests can POST them to SignBridge.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tests.sim.servers import serve

EXPIRED_CODE = 230031
CARD_LIMIT = 30 * 1024
UPLOAD_LIMIT = 30 * 1024 * 1024  # im/v1/files: non-empty, at most 30 MB
FILE_TYPES = frozenset({"opus", "mp4", "pdf", "doc", "xls", "ppt", "stream"})
# im/v1/files refusals (the codes are unconfirmed; the limits are Feishu's documented ones)
BAD_PARAM, TOO_LARGE, EMPTY_FILE = 234001, 234006, 234010


def encrypt(encrypt_key: str, plaintext: str) -> str:
    """What Feishu does to a callback body: AES-256-CBC, key SHA-256(encrypt_key), random IV prefix."""
    iv = os.urandom(16)
    cipher = AES.new(hashlib.sha256(encrypt_key.encode()).digest(), AES.MODE_CBC, iv)
    return base64.b64encode(iv + cipher.encrypt(pad(plaintext.encode(), 16))).decode()


def push_headers(encrypt_key: str, body: bytes, timestamp: int | None = None,
                 nonce: str | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or uuid.uuid4().hex[:16]
    sig = hashlib.sha256((ts + nonce + encrypt_key).encode() + body).hexdigest()
    return {"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce, "X-Lark-Signature": sig,
            "Content-Type": "application/json"}


@dataclass
class Message:
    message_id: str
    receive_id_type: str
    receive_id: str
    msg_type: str
    content: str
    created: datetime
    versions: list[str] = field(default_factory=list)  # every content it had, first one included
    recalled: bool = False

    @property
    def card(self) -> dict[str, Any]:
        return json.loads(self.content)  # type: ignore[no-any-return]


class FeishuSim:
    def __init__(self, app_id: str = "cli_test", app_secret: str = "secret", token_ttl: int = 7200) -> None:
        self.app_id, self.app_secret, self.token_ttl = app_id, app_secret, token_ttl
        self.tokens: dict[str, float] = {}
        self.tokens_issued = 0
        self.token_errors = 0
        self.messages: dict[str, Message] = {}
        self.order: list[str] = []  # message ids in send order
        self.patches: list[str] = []  # message id of every accepted PATCH
        self.rate_limited = 0
        self.resources: dict[tuple[str, str], bytes] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.user_messages: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, tuple[str, bytes, str]] = {}  # file_key -> (file_name, bytes, file_type)
        self._uuids: dict[str, str] = {}
        self.instances: dict[str, dict[str, Any]] = {}
        self.approval_files: dict[str, bytes] = {}
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self.instance_reads = 0
        self.subscriptions: set[str] = set()
        self.files_need_token = False  # whether an attachment URL wants the app's token (unconfirmed at Feishu)
        self.file_base = ""  # where attachment URLs point (default: this server as the caller reached it)
        self._rate_limit = 0
        self._lock = threading.Lock()
        self._cm: AbstractContextManager[str] | None = None
        self.url = ""
        self.app = self._build()

    # ---- control ----------------------------------------------------------------------------

    def add_user(self, open_id: str, name: str, email: str | None = None, mobile: str | None = None,
                 resigned: bool = False, frozen: bool = False) -> None:
        self.users[open_id] = {"open_id": open_id, "name": name, "email": email or "", "mobile": mobile or "",
                               "status": {"is_resigned": resigned, "is_frozen": frozen, "is_activated": True}}

    def add_file(self, message_id: str, file_key: str, data: bytes, name: str = "contract.pdf") -> None:
        """A file message some user posted (the bot may or may not have received its event)."""
        self.resources[(message_id, file_key)] = data
        self.user_messages[message_id] = {"message_id": message_id, "msg_type": "file",
                                          "body": {"content": json.dumps({"file_key": file_key, "file_name": name})}}

    def add_instance(self, code: str, approval_code: str, open_id: str, widgets: list[dict[str, Any]],
                     status: str = "APPROVED", name: str = "采购合同审批") -> None:
        """An approval instance; an attachment widget's `files` [(name, bytes)] become URLs on this server."""
        form = []
        for w in widgets:
            w = dict(w)
            if w.get("type") == "attachmentV2":
                keys = []
                for file_name, data in w.pop("files"):
                    key = uuid.uuid4().hex
                    self.approval_files[key] = data
                    keys.append((file_name, key))
                w["ext"] = ",".join(n for n, _ in keys)
                w["value"] = [f"/approval-files/{k}" for _, k in keys]  # made absolute when read
            form.append(w)
        self.instances[code] = {"approval_code": approval_code, "approval_name": name, "instance_code": code,
                                "status": status, "open_id": open_id, "user_id": open_id.removeprefix("ou_"),
                                "form": form}

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    def rate_limit_next(self, n: int) -> None:
        with self._lock:
            self._rate_limit += n

    def recall(self, message_id: str) -> None:
        """Someone recalled (withdrew) the message: Feishu refuses to update it from now on."""
        self.messages[message_id].recalled = True

    def age(self, message_id: str, days: int) -> None:
        self.messages[message_id].created -= timedelta(days=days)

    # ---- reading ----------------------------------------------------------------------------

    def sent_to(self, receive_id: str) -> list[Message]:
        return [self.messages[m] for m in list(self.order) if self.messages[m].receive_id == receive_id]

    def files_in(self, receive_id: str) -> list[tuple[str, bytes]]:
        """(file name, bytes) of every file message sent to a chat or person, in order."""
        found = []
        for m in self.sent_to(receive_id):
            if m.msg_type == "file":
                name, data, _ = self.uploads[json.loads(m.content)["file_key"]]
                found.append((name, data))
        return found

    def cards_in(self, chat_id: str) -> list[Message]:
        return [m for m in self.sent_to(chat_id) if m.msg_type == "interactive"]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f"feishu sim: condition not met within {timeout} s ({len(self.order)} sent)")
            await asyncio.sleep(0.05)

    # ---- server -----------------------------------------------------------------------------

    def __enter__(self) -> FeishuSim:
        self._cm = serve(self.app)
        self.url = self._cm.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        assert self._cm is not None
        self._cm.__exit__(et, ev, tb)

    @staticmethod
    def _error(code: int, msg: str, status: int = 400, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"code": code, "msg": msg}, status_code=status, headers=headers)

    def _gate(self, request: Request) -> JSONResponse | None:
        """Token check, then the rate limiter; `None` lets the call through."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer t-"):
            return self._error(99991661, "Missing access token for authorization")
        with self._lock:
            expiry = self.tokens.get(auth.removeprefix("Bearer "))
            if expiry is None or expiry <= time.monotonic():
                self.token_errors += 1
                return self._error(99991663, "Invalid access token for authorization")
            if self._rate_limit > 0:
                self._rate_limit -= 1
                self.rate_limited += 1
                return self._error(99991400, "request trigger frequency limit", 429, {"x-ogw-ratelimit-reset": "1"})
        return None

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/open-apis/auth/v3/tenant_access_token/internal")
        async def token(request: Request) -> JSONResponse:
            body = await request.json()
            if body.get("app_id") != self.app_id or body.get("app_secret") != self.app_secret:
                return self._error(10014, "app secret invalid")
            tok = f"t-{uuid.uuid4().hex}"
            with self._lock:
                self.tokens[tok] = time.monotonic() + self.token_ttl
                self.tokens_issued += 1
            return JSONResponse({"code": 0, "msg": "ok", "tenant_access_token": tok, "expire": self.token_ttl})

        @app.post("/open-apis/im/v1/messages")
        async def send(request: Request) -> JSONResponse:
            if (denied := self._gate(request)) is not None:
                return denied
            id_type = request.query_params.get("receive_id_type", "")
            body = await request.json()
            if id_type not in ("open_id", "user_id", "union_id", "email", "chat_id"):
                return self._error(230001, "invalid receive_id_type")
            if body.get("msg_type") == "interactive" and len(body.get("content", "").encode()) > CARD_LIMIT:
                return self._error(230025, "message content too long")
            if body.get("msg_type") == "file":
                content = json.loads(body.get("content") or "{}")
                if content.get("file_key") not in self.uploads:
                    return self._error(230001, "invalid file_key: upload the file with im/v1/files first")
            with self._lock:
                dedupe = body.get("uuid")
                if dedupe and dedupe in self._uuids:
                    msg = self.messages[self._uuids[dedupe]]
                else:
                    msg = Message(f"om_{uuid.uuid4().hex[:20]}", id_type, body["receive_id"], body["msg_type"],
                                  body["content"], datetime.now(UTC), [body["content"]])
                    self.messages[msg.message_id] = msg
                    self.order.append(msg.message_id)
                    if dedupe:
                        self._uuids[dedupe] = msg.message_id
            return JSONResponse({"code": 0, "msg": "success", "data": {
                "message_id": msg.message_id, "msg_type": msg.msg_type, "chat_id": msg.receive_id,
                "create_time": str(int(msg.created.timestamp() * 1000))}})

        @app.post("/open-apis/im/v1/files")
        async def upload(request: Request) -> JSONResponse:
            """multipart: file_type, file_name (with extension), file; non-empty, at most 30 MB."""
            if (denied := self._gate(request)) is not None:
                return denied
            if not request.headers.get("content-type", "").startswith("multipart/form-data"):
                return self._error(BAD_PARAM, "Invalid request param: multipart/form-data expected")
            form = await request.form()
            file_type, file_name, part = form.get("file_type"), form.get("file_name"), form.get("file")
            if file_type not in FILE_TYPES or not isinstance(file_name, str) or "." not in file_name \
                    or part is None or isinstance(part, str):
                return self._error(BAD_PARAM, "Invalid request param")
            data = await part.read()
            if not data:
                return self._error(EMPTY_FILE, "File's size can't be 0")
            if len(data) > UPLOAD_LIMIT:
                return self._error(TOO_LARGE, "The file size exceeds the limit (30 MB)")
            file_key = f"file_v2_{uuid.uuid4().hex}"
            with self._lock:
                self.uploads[file_key] = (file_name, data, str(file_type))
            return JSONResponse({"code": 0, "msg": "success", "data": {"file_key": file_key}})

        @app.patch("/open-apis/im/v1/messages/{message_id}")
        async def patch(message_id: str, request: Request) -> JSONResponse:
            if (denied := self._gate(request)) is not None:
                return denied
            body = await request.json()
            with self._lock:
                msg = self.messages.get(message_id)
                if msg is None or msg.recalled:
                    return self._error(230011, "message not found or recalled")
                if msg.msg_type != "interactive":
                    return self._error(230001, "only interactive messages can be patched")
                if datetime.now(UTC) - msg.created > timedelta(days=14):
                    return self._error(EXPIRED_CODE, "the message is older than 14 days and cannot be updated")
                new = body.get("content", "")
                if len(new.encode()) > CARD_LIMIT:
                    return self._error(230025, "message content too long")
                shared = [json.loads(c).get("config", {}).get("update_multi") is True for c in (msg.content, new)]
                if not all(shared):
                    return self._error(230001, "card is not shared: config.update_multi must be true")
                msg.content = new
                msg.versions.append(new)
                self.patches.append(message_id)
            return JSONResponse({"code": 0, "msg": "success", "data": {}})

        @app.get("/open-apis/im/v1/messages/{message_id}")
        async def get_message(message_id: str, request: Request) -> JSONResponse:
            if (denied := self._gate(request)) is not None:
                return denied
            item = self.user_messages.get(message_id)
            if item is None and message_id in self.messages:
                own = self.messages[message_id]
                item = {"message_id": message_id, "msg_type": own.msg_type, "body": {"content": own.content}}
            if item is None:
                return self._error(230011, "message not found or recalled")
            return JSONResponse({"code": 0, "msg": "success", "data": {"items": [item]}})

        @app.get("/open-apis/im/v1/messages/{message_id}/resources/{file_key}")
        async def resource(message_id: str, file_key: str, request: Request) -> Response:
            if (denied := self._gate(request)) is not None:
                return denied
            data = self.resources.get((message_id, file_key))
            if data is None or request.query_params.get("type") not in ("file", "image"):
                return self._error(234003, "file not found in this message")
            return Response(data, media_type="application/octet-stream")

        @app.get("/open-apis/approval/v4/instances/{code}")
        async def instance(code: str, request: Request) -> JSONResponse:
            if (denied := self._gate(request)) is not None:
                return denied
            found = self.instances.get(code)
            if found is None:
                return self._error(1390001, "param is invalid: instance not found")
            self.instance_reads += 1
            base = self.file_base or str(request.base_url).rstrip("/")

            def absolute(widgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
                """Attachment URLs point at this server; table (`fieldList`) rows hold widgets too."""
                out = []
                for w in widgets:
                    if w.get("type") == "attachmentV2":
                        w = {**w, "value": [base + v for v in w["value"]]}
                    elif w.get("type") == "fieldList":
                        w = {**w, "value": [absolute(row) for row in w["value"]]}
                    out.append(w)
                return out

            form = absolute(found["form"])
            return JSONResponse({"code": 0, "msg": "success", "data": {
                **{k: v for k, v in found.items() if k != "form"}, "form": json.dumps(form, ensure_ascii=False),
                "start_time": "1700000000000", "end_time": "1700000360000", "task_list": [], "comment_list": [],
                "timeline": []}})

        @app.post("/open-apis/approval/v4/approvals/{code}/subscribe")
        async def subscribe(code: str, request: Request) -> JSONResponse:
            if (denied := self._gate(request)) is not None:
                return denied
            if code in self.subscriptions:
                return self._error(1390007, "subscription existed")
            self.subscriptions.add(code)
            return JSONResponse({"code": 0, "msg": "success", "data": {}})

        @app.get("/approval-files/{key}")
        async def approval_file(key: str, request: Request) -> Response:
            if self.files_need_token and (denied := self._gate(request)) is not None:
                return Response(status_code=401) if denied.status_code == 400 else denied
            data = self.approval_files.get(key)
            if data is None:
                return Response(status_code=404)
            return Response(data, media_type="application/octet-stream")

        @app.post("/open-apis/approval/v4/instances/{code}/comments")
        async def comment(code: str, request: Request) -> JSONResponse:
            if (denied := self._gate(request)) is not None:
                return denied
            body = await request.json()
            author = request.query_params.get("user_id", "")
            if code not in self.instances:
                return self._error(1390001, "param is invalid: instance not found")
            if not author or not isinstance(body.get("content"), str):
                return self._error(1390001, "param is invalid: user_id and content (a JSON string) are required")
            content = json.loads(body["content"])
            if not content.get("text"):
                return self._error(1390001, "param is invalid: content.text is required")
            comment_id = uuid.uuid4().hex[:16]
            self.comments.setdefault(code, []).append({"id": comment_id, "user_id": author,
                                                       "user_id_type": request.query_params.get("user_id_type"),
                                                       **content})
            return JSONResponse({"code": 0, "msg": "success", "data": {"comment_id": comment_id}})

        @app.get("/open-apis/contact/v3/users/{user_id}")
        async def user(user_id: str, request: Request) -> JSONResponse:
            if (denied := self._gate(request)) is not None:
                return denied
            if request.query_params.get("user_id_type", "open_id") != "open_id" or user_id not in self.users:
                return self._error(41050, "no user authority or user not found")
            return JSONResponse({"code": 0, "msg": "success", "data": {"user": self.users[user_id]}})

        return app
