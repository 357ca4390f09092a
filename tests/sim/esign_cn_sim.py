"""An e签宝 (SaaS API v3) stand-in for tests: the endpoints SignBridge uses, over real HTTP.

- Gateway: every `/v3/` call must carry the app id, `X-Tsign-Open-Auth-Mode: Signature`, a
  millisecond timestamp within 15 minutes, `Content-MD5` matching the body, and the HMAC
  signature recomputed here from the request as received (method, Accept, Content-MD5,
  Content-Type, Date, path + sorted query). Refusals answer HTTP 401/400 with `{code, message}`.
- Business answers are `{code, message, data}`; refusals use code 1435002 (parameter error,
  as e签宝 does) and, for codes the public docs did not pin down, 1437001 (no such flow) and
  1437500 (flow not in a state that allows the call).
- Files: `file-upload-url` → PUT to an "OSS" URL (Content-MD5 checked) → `GET /v3/files/{id}`
  answers `fileStatus` 1 (processing) once, then 2.
- Flows: `signOrder` decides turns (the lowest pending order signs; equal orders in parallel).
  Signing appends a PAdES signature with `sign_pdf` and the simulator's OWN InstallationCA,
  so the signed file starts with the original bytes, like e签宝's incremental signing.
- Callbacks go to the flow's `notifyUrl`, signed as e签宝 signs them. A delivery counts only
  when answered 2xx, otherwise it is retried. `duplicate` sends each twice; `hold()` queues them
  until `flush(reverse=True)` sends them out of order; `corrupt_next = n` mangles the signature
  of the next n attempts (the API must refuse them and the retry must get through); `mute`
  loses them (the polling fallback must notice).
- `down = True`: every call answers 503; `throttle = n`: the next n answer 429 + Retry-After.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pdfminer.high_level import extract_pages
from pdfminer.layout import LTChar, LTTextContainer, LTTextLine
from pypdf import PdfReader

from connectors.esign.esign_cn_auth import (
    REQUEST_WINDOW_MS,
    callback_signature,
    content_md5,
    path_with_query,
    request_signature,
)
from signbridge.pdf.pades import sign_pdf
from signbridge.pdf.pki import InstallationCA
from tests.sim.servers import serve

PARAM_ERROR, NO_FLOW, FLOW_STATE = 1435002, 1437001, 1437500
# 签署意愿认证方式 of the v3 API documentation (the ones needing a delivery consultant included).
WILLINGNESS_MODES = {"CODE_SMS", "PSN_FACE_ALIPAY", "PSN_FACE_ESIGN", "PSN_FACE_WECHAT", "SIGN_PWD", "PSN_FACE_TECENT",
                     "PSN_AUDIO_VIDEO_ALIPAY", "PSN_AUDIO_VIDEO_WECHAT", "PSN_AUDIO_VIDEO_ESIGN"}


@dataclass
class Delivery:
    action: str
    payload: dict[str, Any]
    attempts: list[int] = field(default_factory=list)


def _ok(data: Any = None) -> JSONResponse:
    return JSONResponse({"code": 0, "message": "成功", "data": data})


def _refuse(code: int, message: str, status: int = 200) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "data": None}, status)


def _account(account: str) -> dict[str, str]:
    return {"accountEmail": account} if "@" in account else {"accountMobile": account}


def _search(pdf: bytes, keyword: str) -> dict[str, Any]:
    """e签宝's keyword search, as the simulator does it: the centre of each occurrence, per page."""
    pages: list[dict[str, Any]] = []
    for number, page in enumerate(extract_pages(BytesIO(pdf)), start=1):
        points = []
        for element in page:
            if not isinstance(element, LTTextContainer):
                continue
            for line in element:
                if not isinstance(line, LTTextLine):
                    continue
                chars = [c for c in line if isinstance(c, LTChar)]
                text = "".join(c.get_text() for c in chars)
                at = text.find(keyword)
                if at >= 0:
                    hit = chars[at:at + len(keyword)]
                    points.append({"positionX": round((hit[0].x0 + hit[-1].x1) / 2, 2),
                                   "positionY": round((min(c.y0 for c in hit) + max(c.y1 for c in hit)) / 2, 2)})
        if points:
            pages.append({"pageNum": number, "coordinates": points})
    return {"searchResult": bool(pages), "positions": pages}


def _position(config: dict[str, Any], pdf: bytes) -> dict[str, Any] | str | None:
    """A sign field's fixed position (None in free mode), or why e签宝 would refuse it."""
    if config.get("freeMode"):
        return None
    where = config.get("signFieldPosition") or {}
    page = where.get("positionPage")
    if not isinstance(page, str) or not page.isdigit():
        return "参数错误: signFieldPosition.positionPage 必须是页码字符串"
    reader = PdfReader(BytesIO(pdf))
    if not 1 <= int(page) <= len(reader.pages):
        return f"参数错误: 页码 {page} 超出文档范围"
    box = reader.pages[int(page) - 1].mediabox
    x, y = where.get("positionX"), where.get("positionY")
    if not isinstance(x, int | float) or not isinstance(y, int | float) or not (0 <= x <= box.right
                                                                               and 0 <= y <= box.top):
        return "参数错误: 签署区坐标超出页面范围"
    return {"page": int(page), "x": float(x), "y": float(y)}


def _ms() -> int:
    return int(time.time() * 1000)


class EsignCnSim:
    def __init__(self, app_id: str, app_secret: str, ca_dir: Path) -> None:
        self.app_id, self.app_secret = app_id, app_secret
        self.ca_dir = ca_dir
        self.ca = InstallationCA.load_or_create(ca_dir, organisation="e签宝 simulator")
        self.files: dict[str, dict[str, Any]] = {}
        self.flows: dict[str, dict[str, Any]] = {}
        self.down = False
        self.throttle = 0
        self.duplicate = False
        self.mute = False
        self.corrupt_next = 0
        self.calls: list[str] = []
        self.refusals: list[tuple[str, int]] = []  # (path, code) of every gateway/business refusal
        self.keyword_searches: list[list[str]] = []  # the keywords of each keyword-positions call
        self.urged: list[str] = []
        self.deliveries: list[Delivery] = []
        self._held: list[Delivery] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.url = ""
        self.app = self._make_app()

    # ---- gateway ----------------------------------------------------------------------------

    async def _gateway(self, request: Request) -> JSONResponse | None:
        """None when the request is signed exactly as e签宝's gateway demands."""
        h = request.headers
        if h.get("x-tsign-open-app-id") != self.app_id:
            return _refuse(401, "appId 不存在或无效", 401)
        if h.get("x-tsign-open-auth-mode") != "Signature":
            return _refuse(401, "鉴权方式错误", 401)
        try:
            if abs(_ms() - int(h.get("x-tsign-open-ca-timestamp", ""))) > REQUEST_WINDOW_MS:
                return _refuse(401, "请求时间戳已过期", 401)
        except ValueError:
            return _refuse(401, "缺少时间戳", 401)
        body = await request.body()
        md5 = h.get("content-md5", "")
        if md5 != content_md5(body):
            return _refuse(400, "Content-MD5 校验失败", 400)
        query = dict(parse_qsl(request.url.query, keep_blank_values=True))
        expected = request_signature(self.app_secret, request.method, md5,
                                     path_with_query(request.url.path, query),
                                     accept=h.get("accept", ""), content_type=h.get("content-type", ""),
                                     date=h.get("date", ""))
        if not hmac.compare_digest(expected.encode(), h.get("x-tsign-open-ca-signature", "").encode()):
            return _refuse(401, "签名验证失败", 401)
        return None

    def _make_app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Response:
            self.calls.append(f"{request.method} {request.url.path}")
            if self.down:
                return _refuse(503, "服务暂不可用", 503)
            if self.throttle > 0:
                self.throttle -= 1
                resp = _refuse(429, "请求过于频繁", 429)
                resp.headers["Retry-After"] = "3"
                return resp
            refused = await self._gateway(request) if request.url.path.startswith("/v3/") else None
            if refused is not None:
                self.refusals.append((request.url.path, refused.status_code))
                return refused
            return await call_next(request)  # type: ignore[no-any-return]

        @app.post("/v3/files/file-upload-url")
        async def upload_url(request: Request) -> Response:
            body = await request.json()
            if not body.get("contentMd5") or not body.get("fileName") or int(body.get("fileSize") or 0) <= 0:
                return self._business(request, PARAM_ERROR, "参数错误: contentMd5/fileName/fileSize 必填")
            file_id = secrets.token_hex(16)
            self.files[file_id] = {"md5": body["contentMd5"], "name": body["fileName"], "status": 0, "data": b"",
                                   "checks": 0}
            return _ok({"fileId": file_id, "fileUploadUrl": f"{self.url}/oss/{file_id}?sig={secrets.token_hex(8)}"})

        @app.put("/oss/{file_id}")
        async def oss_put(file_id: str, request: Request) -> Response:
            f = self.files.get(file_id)
            data = await request.body()
            if f is None or request.headers.get("content-md5") != f["md5"] or content_md5(data) != f["md5"]:
                return Response("BadDigest", 400)
            f["data"], f["status"] = data, 1
            return Response(status_code=200)

        @app.get("/v3/files/{file_id}")
        async def file_status(file_id: str, request: Request) -> Response:
            f = self.files.get(file_id)
            if f is None:
                return self._business(request, PARAM_ERROR, "参数错误: 文件不存在")
            if f["status"] == 1:
                f["checks"] += 1
                if f["checks"] > 1:  # processing on the first look, done on the next
                    f["status"] = 2
            return _ok({"fileId": file_id, "fileName": f["name"], "fileStatus": f["status"]})

        @app.post("/v3/files/{file_id}/keyword-positions")
        async def keyword_positions(file_id: str, request: Request) -> Response:
            f = self.files.get(file_id)
            if f is None:
                return self._business(request, 1437511, f"文档不存在：{file_id}")
            keywords = (await request.json()).get("keywords") or []
            if not keywords:
                return self._business(request, PARAM_ERROR, "参数错误:未指定关键字")
            self.keyword_searches.append(list(keywords))
            return _ok({"keywordPositions": [{"keyword": k, **_search(f["data"], k)} for k in keywords]})

        @app.post("/v3/sign-flow/create-by-file")
        async def create(request: Request) -> Response:
            return self._create(request, await request.json())

        @app.post("/v3/sign-flow/sign-flow-list")
        async def list_flows(request: Request) -> Response:
            body = await request.json()
            start, end = int(body.get("signFlowStartTimeFrom", 0)), int(body.get("signFlowStartTimeTo", 0))
            if not start or not end or end - start > 90 * 86_400_000:
                return self._business(request, PARAM_ERROR, "参数错误: 时间范围最长不可超过90天")
            page, size = int(body.get("pageNum", 1)), min(int(body.get("pageSize", 20)), 100)
            items = [f for f in self.flows.values() if start <= f["startTime"] <= end]
            chunk = items[(page - 1) * size: page * size]
            return _ok({"total": len(items), "signFlowInfos": [
                {"signFlowId": f["id"], "signFlowTitle": f["title"], "signFlowStatus": f["status"],
                 "signFlowStartTime": f["startTime"], "signers": self._signers(f)} for f in chunk]})

        @app.get("/v3/sign-flow/{flow_id}/detail")
        async def detail(flow_id: str, request: Request) -> Response:
            f = self.flows.get(flow_id)
            return _ok(self._detail(f)) if f else self._business(request, NO_FLOW, "签署流程不存在")

        @app.post("/v3/sign-flow/{flow_id}/sign-url")
        async def sign_url(flow_id: str, request: Request) -> Response:
            f = self.flows.get(flow_id)
            if f is None:
                return self._business(request, NO_FLOW, "签署流程不存在")
            account = ((await request.json()).get("operator") or {}).get("psnAccount")
            if not any(s["account"] == account for s in f["signers"]):
                return self._business(request, PARAM_ERROR, "参数错误: 该账号不是流程签署人")
            token = secrets.token_urlsafe(8)
            return _ok({"url": f"{self.url}/h5/sign/{flow_id}/{token}", "shortUrl": f"{self.url}/s/{token}"})

        @app.get("/v3/sign-flow/{flow_id}/file-download-url")
        async def download_url(flow_id: str, request: Request) -> Response:
            f = self.flows.get(flow_id)
            if f is None:
                return self._business(request, NO_FLOW, "签署流程不存在")
            if f["status"] != 2:
                return self._business(request, FLOW_STATE, "流程未完成，无法下载")
            return _ok({"files": [{"fileId": d["fileId"], "fileName": d["fileName"],
                                   "fileHash": hashlib.sha256(d["data"]).hexdigest(),
                                   "downloadUrl": f"{self.url}/oss-download/{flow_id}/{d['fileId']}"
                                                  f"?sig={secrets.token_hex(8)}"} for d in f["docs"]],
                        "certificateDownloadUrl": None})

        @app.get("/oss-download/{flow_id}/{file_id}")
        async def oss_get(flow_id: str, file_id: str) -> Response:
            f = self.flows.get(flow_id)
            doc = next((d for d in f["docs"] if d["fileId"] == file_id), None) if f else None
            return Response(doc["data"], media_type="application/pdf") if doc else Response("NoSuchKey", 404)

        @app.post("/v3/sign-flow/{flow_id}/revoke")
        async def revoke(flow_id: str, request: Request) -> Response:
            f = self.flows.get(flow_id)
            if f is None:
                return self._business(request, NO_FLOW, "签署流程不存在")
            if f["status"] != 1:
                return self._business(request, FLOW_STATE, "流程已结束，无法撤销")
            f["status"], f["description"], f["finishTime"] = 3, (await request.json()).get("revokeReason"), _ms()
            self._emit_later(f, "3")
            return _ok(None)

        @app.post("/v3/sign-flow/{flow_id}/urge")
        async def urge(flow_id: str, request: Request) -> Response:
            f = self.flows.get(flow_id)
            if f is None:
                return self._business(request, NO_FLOW, "签署流程不存在")
            if f["status"] != 1:
                return self._business(request, FLOW_STATE, "流程非签署中，无法催签")
            self.urged += [o.get("psnAccount") for o in (await request.json()).get("urgedOperator") or []]
            return _ok(None)

        return app

    def _business(self, request: Request, code: int, message: str) -> JSONResponse:
        self.refusals.append((request.url.path, code))
        return _refuse(code, message)

    def _create(self, request: Request, body: dict[str, Any]) -> JSONResponse:
        docs, config, signers = body.get("docs") or [], body.get("signFlowConfig") or {}, body.get("signers") or []
        if not 1 <= len(docs) <= 50 or not signers or not config.get("signFlowTitle"):
            return self._business(request, PARAM_ERROR, "参数错误: docs/signers/signFlowTitle 必填")
        uploaded = {d.get("fileId"): self.files.get(d.get("fileId")) for d in docs}
        if any(u is None or u["status"] != 2 for u in uploaded.values()):
            return self._business(request, PARAM_ERROR, "参数错误: 文件未上传完成")
        f = uploaded[docs[0]["fileId"]]
        assert f is not None
        modes = (config.get("authConfig") or {}).get("willingnessAuthModes")
        if modes is not None and (not isinstance(modes, list) or not modes or not set(modes) <= WILLINGNESS_MODES):
            return self._business(request, PARAM_ERROR, "参数错误: willingnessAuthModes 不合法")
        people = []
        for s in signers:
            org = self._org_signer(s)
            if isinstance(org, str):
                return self._business(request, PARAM_ERROR, org)
            info = (s.get("orgSignerInfo") or {}).get("transactorInfo") or {} if org else s.get("psnSignerInfo") or {}
            order = (s.get("signConfig") or {}).get("signOrder")
            if not info.get("psnAccount") or not isinstance(order, int) or not s.get("signFields"):
                return self._business(request, PARAM_ERROR, "参数错误: psnAccount/signOrder/signFields 必填")
            if any(fl.get("fileId") not in uploaded for fl in s["signFields"]):
                return self._business(request, PARAM_ERROR, "参数错误: 签署区的 fileId 不在本流程的文件中")
            positions = [_position(fl.get("normalSignFieldConfig") or {}, uploaded[fl["fileId"]]["data"])
                         for fl in s["signFields"]]
            if any(isinstance(p, str) for p in positions):
                return self._business(request, PARAM_ERROR, next(p for p in positions if isinstance(p, str)))
            people.append({"account": info["psnAccount"], "name": (info.get("psnInfo") or {}).get("psnName", ""),
                           "order": order, "status": 1, "signTime": None, "refuseReason": None,
                           "bizNums": [fl.get("customBizNum") for fl in s["signFields"]],
                           "fileIds": [fl["fileId"] for fl in s["signFields"]], "positions": positions, "org": org})
        flow_id = f"sim{next(self._ids):04d}" + secrets.token_hex(12)
        with self._lock:
            self.flows[flow_id] = {
                "id": flow_id, "title": config["signFlowTitle"], "status": 1, "description": "签署中",
                "notifyUrl": config.get("notifyUrl", ""), "expireTime": config.get("signFlowExpireTime"),
                "autoFinish": bool(config.get("autoFinish")), "startTime": _ms(), "finishTime": None,
                "fileId": docs[0]["fileId"], "fileName": docs[0].get("fileName", f["name"]),
                "original": f["data"], "data": f["data"], "signedSha256": None, "signers": people,
                "docs": [{"fileId": d["fileId"], "fileName": d.get("fileName", ""),
                          "original": uploaded[d["fileId"]]["data"], "data": uploaded[d["fileId"]]["data"]}
                         for d in docs],
                "willingnessAuthModes": modes}
        return _ok({"signFlowId": flow_id})

    @staticmethod
    def _org_signer(s: dict[str, Any]) -> dict[str, Any] | str | None:
        """`signerType` 1 (企业/机构): `orgSignerInfo` with `orgName` or `orgId`, an `orgInfo` whose card
        type is USCC or REGCODE, and a transactor (`transactorInfo.psnAccount`); the seal by
        `assignedSealId` or `orgSealBizTypes`. A person given `availableSealIds` is e签宝's 1435002.
        Returns what the flow keeps of the organisation, None for a person, or the refusal's text."""
        fields = [fl.get("normalSignFieldConfig") or {} for fl in s.get("signFields") or []]
        kind = s.get("signerType", 0)
        if kind == 0:
            if any(c.get("availableSealIds") or c.get("orgSealBizTypes") for c in fields):
                return "参数错误: 个人签署方不支持指定企业印章"  # e签宝 answers 1435002
            return None
        if kind != 1:
            return f"参数错误: 不支持的 signerType {kind}"
        info = s.get("orgSignerInfo")
        if not isinstance(info, dict):
            return "参数错误: 企业签署方 orgSignerInfo 必填（非静默签）"
        if not (info.get("orgName") or info.get("orgId")):
            return "参数错误: orgName 或 orgId 必填"
        card = info.get("orgInfo") or {}
        if card and (card.get("orgIDCardType") not in ("CRED_ORG_USCC", "CRED_ORG_REGCODE")
                     or not card.get("orgIDCardNum")):
            return "参数错误: orgIDCardType/orgIDCardNum 无效"
        seal_ids = [c.get("assignedSealId") for c in fields if c.get("assignedSealId")]
        biz = [c.get("orgSealBizTypes") for c in fields if c.get("orgSealBizTypes")]
        if any(t not in ("PUBLIC", "CONTRACT", "FINANCE", "PERSONNEL", "LEGAL_PERSON", "COMMON")
               for b in biz for t in str(b).split(",")):
            return "参数错误: orgSealBizTypes 无效"
        return {"orgName": info.get("orgName"), "orgId": info.get("orgId"), "orgIDCardNum": card.get("orgIDCardNum"),
                "sealId": seal_ids[0] if seal_ids else None, "sealBizTypes": biz[0] if biz else None}

    @staticmethod
    def _signers(f: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"signOrder": s["order"], "signerType": 1 if s.get("org") else 0, "signStatus": s["status"],
                 "signTime": s["signTime"], "refuseReason": s["refuseReason"],
                 "psnSigner": {"psnName": s["name"], "psnAccount": _account(s["account"])},
                 **({"orgSigner": {"orgName": s["org"]["orgName"], "orgId": s["org"]["orgId"],
                                   "transactor": {"psnName": s["name"], "psnAccount": _account(s["account"])}}}
                    if s.get("org") else {}),
                 "signFields": [{"fileId": file_id, "customBizNum": b, "signFieldStatus": s["status"]}
                                for b, file_id in zip(s["bizNums"], s["fileIds"], strict=True)]}
                for s in f["signers"]]

    def _detail(self, f: dict[str, Any]) -> dict[str, Any]:
        return {"signFlowStatus": f["status"], "signFlowDescription": f["description"],
                "signFlowCreateTime": f["startTime"], "signFlowStartTime": f["startTime"],
                "signFlowFinishTime": f["finishTime"],
                "signFlowConfig": {"signFlowTitle": f["title"], "autoFinish": f["autoFinish"],
                                   "notifyUrl": f["notifyUrl"], "signFlowExpireTime": f["expireTime"]},
                "docs": [{"fileId": d["fileId"], "fileName": d["fileName"]} for d in f["docs"]],
                "signers": self._signers(f)}

    # ---- acting as the signers --------------------------------------------------------------

    def _signer(self, flow_id: str, account: str) -> tuple[dict[str, Any], dict[str, Any]]:
        f = self.flows[flow_id]
        return f, next(s for s in f["signers"] if s["account"] == account)

    def may_sign(self, flow_id: str, account: str) -> bool:
        f, s = self._signer(flow_id, account)
        if f["status"] != 1 or s["status"] != 1:
            return False
        return bool(s["order"] == min(x["order"] for x in f["signers"] if x["status"] == 1))

    async def sign(self, flow_id: str, account: str) -> None:
        """Sign as `account` (raises if it is not their turn), then send the callbacks."""
        if not self.may_sign(flow_id, account):
            raise PermissionError(f"{account} may not sign {flow_id} now")
        f, s = self._signer(flow_id, account)
        position = f["signers"].index(s) + 1
        credential = self.ca.issue(account, s["name"], account if "@" in account else None)
        for doc in f["docs"]:  # one signature per document this signer has a sign field in
            if doc["fileId"] in s["fileIds"]:
                doc["data"] = await asyncio.to_thread(sign_pdf, doc["data"], credential, signer_name=s["name"],
                                                      position=position, signed_at=datetime.now(UTC), reason="e签宝")
        signed = f["docs"][0]["data"]
        with self._lock:
            f["data"], s["status"], s["signTime"] = signed, 2, _ms()
            done = f["autoFinish"] and all(x["status"] == 2 for x in f["signers"])
            if done:
                f["status"], f["finishTime"], f["description"] = 2, _ms(), "完成"
                f["signedSha256"] = hashlib.sha256(signed).hexdigest()
        await self._emit(self._mission(f, s, 2, "签署完成"))
        if done:
            await self._emit(self._flow_complete(f, "2"))

    async def decline(self, flow_id: str, account: str, reason: str) -> None:
        if not self.may_sign(flow_id, account):
            raise PermissionError(f"{account} may not refuse {flow_id} now")
        f, s = self._signer(flow_id, account)
        with self._lock:
            s["status"], s["signTime"], s["refuseReason"] = 4, _ms(), reason
            f["status"], f["description"], f["finishTime"] = 7, reason, _ms()
        await self._emit(self._mission(f, s, 4, reason))
        await self._emit(self._flow_complete(f, "7"))

    async def expire(self, flow_id: str) -> None:
        """The flow's signFlowExpireTime passed at e签宝 (no waiting for the clock in tests)."""
        f = self.flows[flow_id]
        with self._lock:
            if f["status"] != 1:
                raise PermissionError(f"{flow_id} is not signing")
            f["status"], f["description"], f["finishTime"] = 5, "已过期", _ms()
        await self._emit(self._flow_complete(f, "5"))

    def _emit_later(self, f: dict[str, Any], status: str) -> None:
        """After the API answer (as e签宝 does): the revoke callback must not block the revoke call."""
        task = asyncio.get_running_loop().create_task(self._emit(self._flow_complete(f, status)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- callbacks --------------------------------------------------------------------------

    @staticmethod
    def _mission(f: dict[str, Any], s: dict[str, Any], result: int, description: str) -> dict[str, Any]:
        return {"action": "SIGN_MISSON_COMPLETE", "signFlowId": f["id"], "customBizNum": s["bizNums"][0],
                "signOrder": s["order"], "operateTime": s["signTime"], "signResult": result,
                "resultDescription": description,
                "operator": {"psnId": f"psn-{s['account']}", "psnAccount": _account(s["account"])},
                "timestamp": _ms()}

    @staticmethod
    def _flow_complete(f: dict[str, Any], status: str) -> dict[str, Any]:
        return {"action": "SIGN_FLOW_COMPLETE", "signFlowId": f["id"], "signFlowTitle": f["title"],
                "signFlowStatus": status, "statusDescription": f["description"],
                "signFlowCreateTime": f["startTime"], "signFlowStartTime": f["startTime"],
                "signFlowFinishTime": f["finishTime"], "timestamp": _ms()}

    def signed_request(self, url: str, payload: dict[str, Any], *, ts: int | None = None,
                       secret: str | None = None) -> tuple[dict[str, str], bytes]:
        """Headers and body exactly as e签宝 posts a callback to `url`."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(ts if ts is not None else _ms())
        query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        signature = callback_signature(secret or self.app_secret, timestamp, query, body)
        return {"X-Tsign-Open-App-Id": self.app_id, "X-Tsign-Open-TIMESTAMP": timestamp,
                "X-Tsign-Open-SIGNATURE": signature, "Content-Type": "application/json"}, body

    async def _emit(self, payload: dict[str, Any]) -> None:
        delivery = Delivery(str(payload["action"]), payload)
        if self._held is not None:
            self._held.append(delivery)
            return
        await self._deliver(delivery)

    async def _deliver(self, delivery: Delivery, attempts: int = 6) -> None:
        self.deliveries.append(delivery)
        if self.mute:
            return
        url = self.flows[delivery.payload["signFlowId"]]["notifyUrl"]
        for _copy in range(2 if self.duplicate else 1):
            for attempt in range(attempts):
                headers, body = self.signed_request(url, delivery.payload)
                if self.corrupt_next > 0:
                    self.corrupt_next -= 1
                    headers["X-Tsign-Open-SIGNATURE"] = "0" * 64
                async with httpx.AsyncClient(timeout=10) as http:
                    resp = await http.post(url, headers=headers, content=body)
                delivery.attempts.append(resp.status_code)
                if 200 <= resp.status_code < 300:
                    break
                await asyncio.sleep(0.05 * (attempt + 1))  # the real one backs off over hours (16 tries)
            else:
                raise AssertionError(f"callback {delivery.action} never acknowledged: {delivery.attempts}")

    def hold(self) -> None:
        self._held = []

    async def flush(self, reverse: bool = False) -> None:
        held, self._held = self._held or [], None
        for delivery in reversed(held) if reverse else held:
            await self._deliver(delivery)

    @contextmanager
    def running(self) -> Iterator[EsignCnSim]:
        with serve(self.app) as url:
            self.url = url
            yield self
