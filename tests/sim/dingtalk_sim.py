"""A DingTalk (钉钉) open-platform simulator for tests: real HTTP, the endpoints SignBridge uses, strictly.

* `POST /v1.0/oauth2/accessToken {appKey, appSecret}` issues tokens that expire after
  `token_ttl` s (`expire_tokens()` ends them now). api.dingtalk.com calls need header
  `x-acs-dingtalk-access-token`: missing/unknown/expired → HTTP 401 `{"code":
  "InvalidAuthentication"}`. oapi calls take `?access_token=`: unknown → errcode 40014, expired → 42001.
* Rate limits: a real 20 QPS window per API, plus `rate_limit_next(n)` (the next n API calls are
  refused). v1.0 APIs answer HTTP 403 (or 429 with `status=429`) `{"code":
  "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"}`; oapi answers errcode 90018. Refused calls
  change nothing.
* Cards: `POST /v1.0/card/instances/createAndDeliver` (a repeated outTrackId → HTTP 400
  `param.duplicateOutTrackId`), `PUT /v1.0/card/instances` (unknown outTrackId → 400).
* Messages: `/v1.0/robot/oToMessages/batchSend`, `/v1.0/robot/groupMessages/send`; unknown
  users → 400 `invalidStaffId`. Identical messages to the same target are counted in `duplicates`.
* `POST /media/upload?access_token=` multipart (`type` file, part `media`): ≤ 20 MB and one of
  doc, docx, xls, xlsx, ppt, pptx, zip, pdf, rar → `media_id`; empty or larger → errcode 40006,
  another extension → 40005, another type → 40004 (codes as in DingTalk's media docs, unconfirmed).
  `sampleFile` robot messages must name an uploaded `mediaId`.
* `POST /topapi/v2/user/get` (name, mobile, email, `active`); unknown → errcode 60121.
* `POST /v1.0/robot/messageFiles/download {robotCode, downloadCode}` → `downloadUrl` on this server.
* OA approvals (`add_instance()`): `GET /v1.0/workflow/processInstances?processInstanceId=` →
  `{"result": {title, status, result, originatorUserId, formComponentValues[]}}` (a `DDAttachment`
  value is a JSON array string of `{spaceId, fileName, fileSize, fileType, fileId}`, a contact's
  `extValue` a JSON array of `{emplId, name}`); `POST …/spaces/files/urls/download
  {processInstanceId, fileId, withCommentAttatchment}` → `{"result": {downloadUri, fileId, spaceId}}`,
  the URI single-use (a second GET is 403, like an expired one); `POST …/processInstances/comments
  {processInstanceId, text, commentUserId}` (unknown instance or user → HTTP 400
  `invalidParameter`, error codes unconfirmed).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tests.sim.servers import serve

RATE_CODE = "Forbidden.AccessDenied.QpsLimitForAppkeyAndApi"
UPLOAD_LIMIT = 20 * 1024 * 1024
FILE_EXTENSIONS = frozenset({"doc", "docx", "xls", "xlsx", "ppt", "pptx", "zip", "pdf", "rar"})


@dataclass
class SimCard:
    out_track_id: str
    open_space_id: str
    template_id: str
    versions: list[dict[str, str]] = field(default_factory=list)  # cardParamMap after create/each update


class DingTalkSim:
    QPS = 20

    def __init__(self, app_key: str, app_secret: str, robot_code: str, token_ttl: int = 7200) -> None:
        self.app_key, self.app_secret, self.robot_code, self.token_ttl = app_key, app_secret, robot_code, token_ttl
        self.tokens: dict[str, float] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.files: dict[str, tuple[bytes, str]] = {}  # downloadCode -> (data, name)
        self.cards: dict[str, SimCard] = {}
        self.media: dict[str, tuple[str, bytes]] = {}  # media_id -> (file name, bytes)
        self.messages: list[dict[str, Any]] = []  # {"api", "to", "msgKey", "param"}
        self.calls: list[str] = []
        self.looked_up: list[str] = []  # user ids asked of user/get: people of another org must never be
        self.errors: list[tuple[str, str]] = []
        self.duplicates = 0
        self.instances: dict[str, dict[str, Any]] = {}
        self.approval_files: dict[str, tuple[str, str, bytes]] = {}  # fileId -> (instance, name, data)
        self.grants: dict[str, str] = {}  # one-time download token -> fileId
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self.token_issued = 0
        self.base = ""
        self.rate_status = 403
        self._rate_limited = 0
        self._windows: dict[str, deque[float]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.app = self._build()

    # ---- test controls ------------------------------------------------------------------------

    def add_instance(self, instance: str, process_code: str, originator: str, values: list[dict[str, Any]],
                     status: str = "COMPLETED", result: str = "agree", title: str = "采购合同审批") -> None:
        """An OA approval; a `DDAttachment` value given as `files` [(name, bytes)] becomes its JSON value."""
        form = []
        for v in values:
            v = dict(v)
            if v.get("componentType") == "DDAttachment":
                described = []
                for name, data in v.pop("files"):
                    file_id = f"f{next(self._ids)}"
                    self.approval_files[file_id] = (instance, name, data)
                    described.append({"spaceId": "163", "fileName": name, "fileSize": str(len(data)),
                                      "fileType": name.rsplit(".", 1)[-1], "fileId": file_id})
                v["value"] = json.dumps(described, ensure_ascii=False)
            form.append(v)
        self.instances[instance] = {"processCode": process_code, "title": title, "status": status, "result": result,
                                    "originatorUserId": originator, "formComponentValues": form,
                                    "createTime": "2026-12-05T09:00Z", "finishTime": "2026-12-05T10:00Z"}

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens = {t: 0.0 for t in self.tokens}

    def rate_limit_next(self, n: int) -> None:
        self._rate_limited = n

    def reset_windows(self) -> None:
        """The next second began: every API's QPS window is empty again (no sleeping in tests)."""
        with self._lock:
            self._windows.clear()

    def sent(self, to: str | None = None, msg_key: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages
                if (to is None or m["to"] == to) and (msg_key is None or m["msgKey"] == msg_key)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f"condition not met within {timeout} s; calls: {self.calls[-10:]}")
            await asyncio.sleep(0.05)

    # ---- gate ---------------------------------------------------------------------------------

    def _limited(self, name: str) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._rate_limited > 0:
                self._rate_limited -= 1
                return True
            window = self._windows.setdefault(name, deque())
            while window and now - window[0] > 1.0:
                window.popleft()
            if len(window) >= self.QPS:
                return True
            window.append(now)
            return False

    def _token_state(self, token: str | None) -> str:
        if not token:
            return "missing"
        with self._lock:
            expires = self.tokens.get(token)
        if expires is None:
            return "unknown"
        return "expired" if time.time() >= expires else "ok"

    def _gate(self, request: Request, name: str) -> Response | None:
        """v1.0 APIs: token header, then the QPS limit; None when the call may proceed."""
        if self._token_state(request.headers.get("x-acs-dingtalk-access-token")) != "ok":
            self.errors.append((name, "InvalidAuthentication"))
            return JSONResponse({"code": "InvalidAuthentication", "message": "不合法的access_token"},
                                status_code=401)
        if self._limited(name):
            self.errors.append((name, RATE_CODE))
            return JSONResponse({"code": RATE_CODE, "message": "QPS limit"}, status_code=self.rate_status)
        self.calls.append(name)
        return None

    def _oapi_gate(self, request: Request, name: str) -> Response | None:
        state = self._token_state(request.query_params.get("access_token"))
        code = {"ok": 0, "expired": 42001, "unknown": 40014, "missing": 40014}[state]
        if code == 0 and self._limited(name):
            code = 90018
        if code:
            self.errors.append((name, str(code)))
            return JSONResponse({"errcode": code, "errmsg": f"sim error {code}"})
        self.calls.append(name)
        return None

    # ---- the API ------------------------------------------------------------------------------

    def files_to(self, to: str) -> list[tuple[str, bytes]]:
        """(file name, bytes) of every `sampleFile` sent to a group or a person, in order."""
        return [(m["param"]["fileName"], self.media[m["param"]["mediaId"]][1])
                for m in self.sent(to=to, msg_key="sampleFile")]

    def _message(self, api: str, to: str, body: dict[str, Any]) -> Response:
        param = json.loads(body.get("msgParam") or "{}")
        if body.get("msgKey") == "sampleFile" and param.get("mediaId") not in self.media:
            return JSONResponse({"code": "invalidParameter.mediaId", "message": "unknown mediaId"}, status_code=400)
        if any(m["to"] == to and m["msgKey"] == body.get("msgKey") and m["param"] == param for m in self.messages):
            self.duplicates += 1
        self.messages.append({"api": api, "to": to, "msgKey": body.get("msgKey"), "param": param})
        return JSONResponse({"processQueryKey": f"pqk-{next(self._ids)}"})

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1.0/oauth2/accessToken")
        async def access_token(request: Request) -> Response:
            body = await request.json()
            if body.get("appKey") != self.app_key or body.get("appSecret") != self.app_secret:
                return JSONResponse({"code": "invalidClientIdOrSecret", "message": "bad app key/secret"},
                                    status_code=400)
            token = f"tok-{uuid.uuid4().hex[:16]}"
            with self._lock:
                self.tokens[token] = time.time() + self.token_ttl
            self.token_issued += 1
            return JSONResponse({"accessToken": token, "expireIn": self.token_ttl})

        @app.post("/v1.0/card/instances/createAndDeliver")
        async def create_card(request: Request) -> Response:
            if (refused := self._gate(request, "createAndDeliver")) is not None:
                return refused
            body = await request.json()
            track = body.get("outTrackId") or ""
            if track in self.cards:
                self.errors.append(("createAndDeliver", "param.duplicateOutTrackId"))
                return JSONResponse({"code": "param.duplicateOutTrackId", "message": "outTrackId exists"},
                                    status_code=400)
            params = (body.get("cardData") or {}).get("cardParamMap") or {}
            if not body.get("cardTemplateId") or not body.get("openSpaceId") or \
                    not all(isinstance(v, str) for v in params.values()):
                return JSONResponse({"code": "invalidParameter", "message": "bad card"}, status_code=400)
            self.cards[track] = SimCard(track, body["openSpaceId"], body["cardTemplateId"], [params])
            return JSONResponse({"success": True, "result": {"outTrackId": track,
                                                             "deliverResults": [{"success": True}]}})

        @app.put("/v1.0/card/instances")
        async def update_card(request: Request) -> Response:
            if (refused := self._gate(request, "updateCard")) is not None:
                return refused
            body = await request.json()
            card = self.cards.get(body.get("outTrackId") or "")
            if card is None:
                return JSONResponse({"code": "param.cardNotExist", "message": "no such card"}, status_code=400)
            params = (body.get("cardData") or {}).get("cardParamMap") or {}
            card.versions.append({**card.versions[-1], **params})
            return JSONResponse({"success": True, "result": True})

        @app.post("/v1.0/robot/oToMessages/batchSend")
        async def batch_send(request: Request) -> Response:
            if (refused := self._gate(request, "batchSend")) is not None:
                return refused
            body = await request.json()
            users = body.get("userIds") or []
            if body.get("robotCode") != self.robot_code or len(users) != 1 or \
                    (self.users and users[0] not in self.users):
                return JSONResponse({"code": "invalidStaffId", "message": "bad robot or user"}, status_code=400)
            return self._message("batchSend", users[0], body)

        @app.post("/v1.0/robot/groupMessages/send")
        async def group_send(request: Request) -> Response:
            if (refused := self._gate(request, "groupMessages/send")) is not None:
                return refused
            body = await request.json()
            if body.get("robotCode") != self.robot_code or not body.get("openConversationId"):
                return JSONResponse({"code": "invalidParameter", "message": "bad robot or group"}, status_code=400)
            return self._message("groupMessages/send", body["openConversationId"], body)

        @app.post("/v1.0/robot/messageFiles/download")
        async def file_url(request: Request) -> Response:
            if (refused := self._gate(request, "messageFiles/download")) is not None:
                return refused
            body = await request.json()
            code = body.get("downloadCode") or ""
            if body.get("robotCode") != self.robot_code or code not in self.files:
                return JSONResponse({"code": "invalidParameter.downloadCode", "message": "bad download code"},
                                    status_code=400)
            return JSONResponse({"downloadUrl": f"{self.base}/files/{code}"})

        @app.get("/files/{code}")
        async def file_bytes(code: str) -> Response:
            found = self.files.get(code)
            if found is None:
                return Response(status_code=404)
            return Response(found[0], media_type="application/octet-stream")

        def bad(message: str) -> Response:
            return JSONResponse({"code": "invalidParameter", "message": message}, status_code=400)

        @app.get("/v1.0/workflow/processInstances")
        async def process_instance(request: Request) -> Response:
            if (refused := self._gate(request, "processInstances")) is not None:
                return refused
            found = self.instances.get(request.query_params.get("processInstanceId") or "")
            if found is None:
                return bad("processInstanceId is invalid")
            return JSONResponse({"success": True, "result": found})

        @app.post("/v1.0/workflow/processInstances/spaces/files/urls/download")
        async def grant(request: Request) -> Response:
            if (refused := self._gate(request, "files/urls/download")) is not None:
                return refused
            body = await request.json()
            found = self.approval_files.get(body.get("fileId") or "")
            if found is None or found[0] != body.get("processInstanceId"):
                return bad("fileId is not a file of this process instance")
            once = uuid.uuid4().hex
            self.grants[once] = body["fileId"]
            return JSONResponse({"success": True, "result": {"downloadUri": f"{self.base}/approval-files/{once}",
                                                             "fileId": body["fileId"], "spaceId": "163"}})

        @app.get("/approval-files/{once}")
        async def approval_file(once: str) -> Response:
            file_id = self.grants.pop(once, None)
            if file_id is None:
                return Response(status_code=403)
            return Response(self.approval_files[file_id][2], media_type="application/octet-stream")

        @app.post("/v1.0/workflow/processInstances/comments")
        async def comment(request: Request) -> Response:
            if (refused := self._gate(request, "processInstances/comments")) is not None:
                return refused
            body = await request.json()
            instance = body.get("processInstanceId") or ""
            if instance not in self.instances:
                return bad("processInstanceId is invalid")
            if not body.get("text") or (self.users and body.get("commentUserId") not in self.users):
                return bad("text and a valid commentUserId are required")
            self.comments.setdefault(instance, []).append(body)
            return JSONResponse({"success": True, "result": True})
        @app.post("/media/upload")
        async def media_upload(request: Request) -> Response:
            if (refused := self._oapi_gate(request, "media/upload")) is not None:
                return refused
            form = await request.form()
            kind = request.query_params.get("type") or form.get("type")
            part = form.get("media")
            if kind != "file" or part is None or isinstance(part, str):
                return JSONResponse({"errcode": 40004, "errmsg": "不合法的媒体文件类型"})
            name = part.filename or ""
            if name.rsplit(".", 1)[-1].lower() not in FILE_EXTENSIONS:
                return JSONResponse({"errcode": 40005, "errmsg": "不合法的文件类型"})
            data = await part.read()
            if not data or len(data) > UPLOAD_LIMIT:
                return JSONResponse({"errcode": 40006, "errmsg": "不合法的文件大小"})
            media_id = f"@lA{uuid.uuid4().hex}"
            with self._lock:
                self.media[media_id] = (name, data)
            return JSONResponse({"errcode": 0, "errmsg": "ok", "type": "file", "media_id": media_id,
                                 "created_at": int(time.time() * 1000)})

        @app.post("/topapi/v2/user/get")
        async def user_get(request: Request) -> Response:
            if (refused := self._oapi_gate(request, "user/get")) is not None:
                return refused
            body = await request.json()
            self.looked_up.append(str(body.get("userid") or ""))
            user = self.users.get(body.get("userid") or "")
            if user is None:
                return JSONResponse({"errcode": 60121, "errmsg": "找不到该用户"})
            return JSONResponse({"errcode": 0, "errmsg": "ok",
                                 "result": {"userid": body["userid"], "active": True, **user}})

        return app


@contextmanager
def running(sim: DingTalkSim) -> Iterator[str]:
    """Serve the simulator on a loopback port; yields its base URL (api and oapi alike)."""
    with serve(sim.app) as url:
        sim.base = url
        yield url
