"""A 法大大 (FASC v5.1) stand-in for tests: the signed form-POST API SignBridge uses, over real HTTP.

- Auth: every call's `X-FASC-Sign` is recomputed (the chain in connectors/esign/fadada.py) and its
  timestamp checked (±5 min); a wrong signature answers code `100003`. Calls other than the token call need a live
  `X-FASC-AccessToken` (`expire_tokens()` kills them: code `100002`, the connector refetches).
- Status machine: actors sign in `orderNo` when `signInOrder` (lowest pending order; equal
  orders in parallel), anyone otherwise. A rejection ends the task; cancel → `revoked`.
  Finishing re-renders the file (does not start with the original bytes).
- Callbacks: form `bizContent` + `X-FASC-Event`, signed the same way; a delivery counts only
  when answered 200 `{"msg": "success"}`, else retried. The last `sign-task-signed` carries
  `task_finished`; `duplicate`, `hold()`/`flush(reverse=True)` and `mute` as in the other sims.
- `down` → HTTP 503 + Retry-After: 1; `busy = n` → the next n calls answer code `100001`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pdfminer.high_level import extract_text
from pypdf import PdfReader

from connectors.esign.fadada import _canonical, fasc_sign, signed_headers
from tests.sim.dropbox_sign_sim import rerender
from tests.sim.servers import serve

ACK = {"msg": "success"}


def _ms() -> int:
    return int(time.time() * 1000)


def _fields_problem(biz: dict[str, Any], pdf: bytes) -> str | None:
    """What 法大大 would refuse in a task's fields: a field type it does not know, a keyword not in the
    document, a page it does not have, an actor's field that the document does not declare."""
    fields = {f.get("fieldId"): f for f in biz["docs"][0].get("docFields") or []}
    text = extract_text(BytesIO(pdf)) if fields else ""
    pages = len(PdfReader(BytesIO(pdf)).pages) if fields else 0
    for f in fields.values():
        where = f.get("position") or {}
        kinds = ("person_sign", "corp_seal", "corp_seal_cross_page")
        if f.get("fieldType") not in kinds or not isinstance(where.get("positionPageNo"), int):
            return f"参数错误: 控件 {f.get('fieldId')}"
        if not 1 <= where["positionPageNo"] <= pages:
            return f"参数错误: 页码 {where['positionPageNo']} 超出文档范围"
        if where.get("positionMode") == "keyword" and where.get("positionKeyword") not in text:
            return f"关键字 {where.get('positionKeyword')} 未找到"
        if where.get("positionMode") not in ("keyword", "pixel"):
            return "参数错误: positionMode"
    for a in biz["actors"]:
        for sf in a.get("signFields") or []:
            if sf.get("fieldDocId") != biz["docs"][0].get("docId") or sf.get("fieldId") not in fields:
                return f"参数错误: 参与方 {a['actor']['actorId']} 的控件 {sf.get('fieldId')} 不存在"
    return None


@dataclass
class Delivery:
    event: str
    biz: dict[str, Any]
    attempts: list[int] = field(default_factory=list)


class FadadaSim:
    def __init__(self, app_id: str, app_secret: str) -> None:
        self.app_id, self.app_secret = app_id, app_secret
        self.callback_url = ""
        self.tasks: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, bytes] = {}
        self.files: dict[str, bytes] = {}
        self.tokens: set[str] = set()
        self.grants = 0
        self.failures: list[str] = []  # the error code of every call it refused
        self.down = False
        self.busy = 0
        self.duplicate = False
        self.mute = False
        self.urged: list[str] = []
        self.deliveries: list[Delivery] = []
        self._held: list[Delivery] | None = None
        self._lock = threading.Lock()
        self.url = ""
        self.app = self._make_app()

    def _ok(self, data: dict[str, Any] | None = None) -> Response:
        return JSONResponse({"code": "100000", "msg": "成功", "data": data or {}})

    def _fail(self, code: str, msg: str) -> Response:
        self.failures.append(code)
        return JSONResponse({"code": code, "msg": msg, "data": None})

    def _make_app(self) -> FastAPI:
        app = FastAPI()

        @app.put("/upload/{key}")
        async def upload(key: str, request: Request) -> Response:
            self.uploads[key] = await request.body()
            return Response(status_code=200)

        @app.get("/download/{task_id}")
        async def download(task_id: str) -> Response:
            return Response(self.files[task_id], media_type="application/pdf")

        @app.post("/api/v5/{path:path}")
        async def api(path: str, request: Request) -> Response:
            if self.down:
                return JSONResponse({"code": "503"}, 503, headers={"Retry-After": "1"})
            form = parse_qs((await request.body()).decode(), keep_blank_values=True)
            biz = (form.get("bizContent") or [""])[0]
            fasc = {_canonical(k): v for k, v in request.headers.items() if k.lower().startswith("x-fasc-")}
            stamp = fasc.get("X-FASC-Timestamp", "")
            if not stamp.isdigit() or abs(_ms() - int(stamp)) > 300_000 or fasc.get("X-FASC-App-Id") != self.app_id:
                return self._fail("100003", "签名校验失败")
            if fasc.get("X-FASC-Sign") != fasc_sign(self.app_secret, {**fasc, "bizContent": biz}):
                return self._fail("100003", "签名校验失败")
            if self.busy > 0:
                self.busy -= 1
                return self._fail("100001", "系统繁忙")
            if path == "service/get-access-token":
                if fasc.get("X-FASC-Grant-Type") != "client_credential":
                    return self._fail("100004", "grant type")
                token = secrets.token_hex(16)
                self.tokens.add(token)
                self.grants += 1
                return self._ok({"accessToken": token, "expiresIn": "7200"})
            if fasc.get("X-FASC-AccessToken") not in self.tokens:
                return self._fail("100002", "accessToken无效或已过期")
            return await self._route(path, json.loads(biz) if biz else {})

        return app

    async def _route(self, path: str, biz: dict[str, Any]) -> Response:
        if path == "file/get-upload-url":
            key = secrets.token_hex(8)
            return self._ok({"uploadUrl": f"{self.url}/upload/{key}", "fddFileUrl": f"fdd://{key}"})
        if path == "file/process":
            key = str(biz["fddFileUrlList"][0]["fddFileUrl"]).removeprefix("fdd://")
            if not self.uploads.get(key, b"").startswith(b"%PDF-"):
                return self._fail("210001", "文件处理失败")
            return self._ok({"fileIdList": [{"fileId": key}]})
        if path == "sign-task/owner/get-list":
            ref = (biz.get("listFilter") or {}).get("transReferenceId")
            return self._ok({"signTasks": [{"signTaskId": t["signTaskId"]} for t in self.tasks.values()
                                           if t["transReferenceId"] == ref]})
        if path == "sign-task/create":
            if not biz.get("actors") or not biz.get("docs") or not biz.get("transReferenceId"):
                return self._fail("210002", "参数错误")
            refused = self._check_actors(biz)
            if refused:
                return self._fail(*refused)
            file_id = biz["docs"][0]["docFileId"]
            problem = _fields_problem(biz, self.uploads.get(file_id, b""))
            if problem:
                return self._fail("210002", problem)
            task_id = secrets.token_hex(10)
            with self._lock:
                self.tasks[task_id] = {
                    "signTaskId": task_id, "transReferenceId": biz["transReferenceId"],
                    "signInOrder": bool(biz.get("signInOrder")), "signTaskStatus": "task_created",
                    "actors": [{"actorId": a["actor"]["actorId"], "orderNo": a["orderNo"],
                                "accountName": a["actor"].get("accountName")
                                or ((a["actor"].get("actorCorpMembers") or [{}])[0].get("accountName"))
                                or (a["actor"].get("notification") or {}).get("notifyAddress"),
                                "actorType": a["actor"]["actorType"], "actorName": a["actor"]["actorName"],
                                "certNoForMatch": a["actor"].get("certNoForMatch"),
                                "sealIds": [f.get("sealId") for f in a.get("signFields") or []],
                                "signStatus": "wait_sign", "signFields": a.get("signFields") or []}
                               for a in biz["actors"]],
                    "docFields": biz["docs"][0].get("docFields") or []}
                self.files[task_id] = self.uploads[file_id]
            return self._ok({"signTaskId": task_id})
        task = self.tasks.get(str(biz.get("signTaskId")))
        if task is None:
            return self._fail("210003", "签署任务不存在")
        if path == "sign-task/start":
            if task["signTaskStatus"] == "task_created":
                task["signTaskStatus"] = "sign_progress"
            return self._ok()
        if path == "sign-task/get-detail":
            return self._ok(task)
        if path == "sign-task/actor/get-url":
            return self._ok({"actorSignTaskUrl": f"{self.url}/sign/{task['signTaskId']}/{biz['actorId']}"})
        if path == "sign-task/cancel":
            if task["signTaskStatus"] in ("task_finished", "revoked"):
                return self._fail("210004", "任务状态不允许撤销")
            task["signTaskStatus"] = "revoked"
            await self._emit("sign-task-canceled", task)
            return self._ok()
        if path == "sign-task/urge":
            self.urged.append(task["signTaskId"])
            return self._ok()
        if path == "sign-task/owner/get-download-url":
            return self._ok({"downloadUrl": f"{self.url}/download/{task['signTaskId']}"})
        return self._fail("100404", "unknown api")

    # ---- acting as the signers --------------------------------------------------------------

    @staticmethod
    def _check_actors(biz: dict[str, Any]) -> tuple[str, str] | None:
        """法大大's rules for actors: `corp` or `person`; `accountName` is a person's only;
        `actorCorpMembers` needs `actorOpenId` or `actorFDDId`; a corp signs into a `corp_seal`
        field (a person field for a corp is 211027), a person never into one (211028)."""
        kinds = {f.get("fieldId"): f.get("fieldType") for d in biz["docs"] for f in d.get("docFields") or []}
        for a in biz["actors"]:
            actor = a.get("actor") or {}
            kind = actor.get("actorType")
            if kind not in ("corp", "person") or not actor.get("actorId") or not actor.get("actorName"):
                return "210002", "参数错误: actorId/actorType/actorName"
            if kind == "corp" and actor.get("accountName"):
                return "210002", "参数错误: accountName 仅适用于个人参与方"
            if actor.get("actorCorpMembers") and not (actor.get("actorOpenId") or actor.get("actorFDDId")):
                return "210002", "参数错误: actorCorpMembers 需要 actorOpenId 或 actorFDDId"
            for sign_field in a.get("signFields") or []:
                field_type = kinds.get(sign_field.get("fieldId"))
                if field_type is None:
                    return "210002", "参数错误: 签署控件不存在"
                if kind == "corp" and field_type not in ("corp_seal", "corp_seal_cross_page"):
                    return "211027", "企业参与方只能使用企业签章控件"
                if kind == "person" and field_type != "person_sign":
                    return "211028", "个人参与方只能使用个人签名控件"
        return None

    def _actor(self, task_id: str, actor_id: str) -> dict[str, Any]:
        return next(a for a in self.tasks[task_id]["actors"] if a["actorId"] == actor_id)

    def may_sign(self, task_id: str, actor_id: str) -> bool:
        task, actor = self.tasks[task_id], self._actor(task_id, actor_id)
        if task["signTaskStatus"] != "sign_progress" or actor["signStatus"] != "wait_sign":
            return False
        pending = [a["orderNo"] for a in task["actors"] if a["signStatus"] == "wait_sign"]
        return not task["signInOrder"] or actor["orderNo"] == min(pending)

    async def sign(self, task_id: str, actor_id: str) -> None:
        with self._lock:
            if not self.may_sign(task_id, actor_id):
                raise PermissionError(f"{actor_id} may not sign {task_id} now")
            task, actor = self.tasks[task_id], self._actor(task_id, actor_id)
            actor.update(signStatus="signed", signTime=str(_ms()))
            if all(a["signStatus"] == "signed" for a in task["actors"]):
                task.update(signTaskStatus="task_finished", finishTime=str(_ms()))
                self.files[task_id] = rerender(self.files[task_id], ["法大大 " + task_id])
        await self._emit("sign-task-signed", task, actor_id)
        if task["signTaskStatus"] == "task_finished":
            await self._emit("sign-task-finished", task)

    async def decline(self, task_id: str, actor_id: str, reason: str) -> None:
        with self._lock:
            if not self.may_sign(task_id, actor_id):
                raise PermissionError(f"{actor_id} may not reject {task_id} now")
            task = self.tasks[task_id]
            self._actor(task_id, actor_id).update(signStatus="sign_rejected", rejectReason=reason,
                                                  signTime=str(_ms()))
            task["signTaskStatus"] = "task_terminated"
        await self._emit("sign-task-sign-rejected", task, actor_id, reason)

    # ---- callbacks ----------------------------------------------------------------------------

    def callback(self, event: str, biz: dict[str, Any], timestamp: str | None = None) -> tuple[dict[str, str], bytes]:
        content = json.dumps(biz, ensure_ascii=False)
        headers = signed_headers(self.app_id, self.app_secret, content, token=None,
                                 extra={"X-FASC-Event": event}, timestamp=timestamp)
        headers.pop("X-FASC-Grant-Type")
        headers["X-FASC-Sign"] = fasc_sign(self.app_secret, {**headers, "bizContent": content})
        body = httpx.Request("POST", "http://x", data={"bizContent": content})
        return {**headers, "content-type": "application/x-www-form-urlencoded"}, body.read()

    async def _emit(self, event: str, task: dict[str, Any], actor_id: str | None = None,
                    reason: str | None = None) -> None:
        biz: dict[str, Any] = {"signTaskId": task["signTaskId"], "signTaskStatus": task["signTaskStatus"],
                               "eventTime": str(_ms())}
        if actor_id:
            biz["actorId"] = actor_id
        if reason:
            biz["rejectReason"] = reason
        delivery = Delivery(event, biz)
        if self._held is not None:
            self._held.append(delivery)
            return
        await self._deliver(delivery)

    async def _deliver(self, delivery: Delivery, attempts: int = 6) -> None:
        self.deliveries.append(delivery)
        if self.mute or not self.callback_url:
            return
        for _copy in range(2 if self.duplicate else 1):
            for attempt in range(attempts):
                headers, body = self.callback(delivery.event, delivery.biz)
                async with httpx.AsyncClient(timeout=10) as http:
                    resp = await http.post(self.callback_url, content=body, headers=headers)
                delivery.attempts.append(resp.status_code)
                if resp.status_code == 200 and resp.headers.get("content-type", "").startswith("application/json") \
                        and resp.json() == ACK:
                    break
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                raise AssertionError(f"callback {delivery.event} never acknowledged: {delivery.attempts}")

    def hold(self) -> None:
        self._held = []

    async def flush(self, reverse: bool = False) -> None:
        held, self._held = self._held or [], None
        for delivery in reversed(held) if reverse else held:
            await self._deliver(delivery)

    def expire_tokens(self) -> None:
        self.tokens.clear()

    @contextmanager
    def running(self) -> Iterator[FadadaSim]:
        with serve(self.app) as url:
            self.url = url
            yield self

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v5"
