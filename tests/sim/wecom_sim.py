"""A small WeCom (企业微信) server API for tests: real HTTP, the endpoints SignBridge uses, WeCom's
error shapes (HTTP 200 with `errcode`/`errmsg`).

* `GET /cgi-bin/gettoken?corpid&corpsecret` issues tokens that expire after `token_ttl` seconds;
  `expire_tokens()` ends every issued token now. Calls with an unknown token get 40014, with an
  expired one 42001, without one 41001.
* `rate_limit_next(n)`: the next `n` calls (token calls excepted) get errcode 45009 and change
  nothing; `http_429_next(n)` the same as HTTP 429 with `Retry-After`.
* `POST /cgi-bin/message/send`: `text`, `textcard`, `template_card`. A `button_interaction`
  card's answer carries a `response_code`; `click(msgid)` returns another (as a user's click
  does); an unknown `touser` gets 81013. `POST /cgi-bin/message/update_template_card` accepts each code once within 72 h
  (`age_codes(hours)` moves issued codes into the past); a bad code gets errcode 40078.
* `POST /cgi-bin/media/upload?type=file` multipart part `media` (its filename is what people see):
  more than 5 bytes and at most 20 MB → `media_id`; outside that errcode 40006, no part 41005
  (modelled), another type 40004. `message/send` msgtype `file` must name an uploaded media id
  (else 40007).
* `GET /cgi-bin/media/get`: bytes with `Content-Disposition`; expired media → 40007.
* `GET /cgi-bin/user/get`: `users` as given (no email/mobile unless set, like apps created
  after 2022-06-20); unknown → 60111.
* `POST /cgi-bin/oa/getapprovaldetail {sp_no}` (`add_approval()`): `info{sp_no, sp_name, sp_status,
  template_id, apply_time, applyer{userid, partyid}, apply_data{contents[{control, id, title[{text,
  lang}], value}]}}`; a File control's files become media (`media/get`); an unknown number gets
  errcode 301025 (unconfirmed; WeCom's approval errors are in the 301xxx range).
Every accepted call is appended to `calls`; duplicates the connector should never send (same
touser + same content) are counted in `duplicates`. With `enable_duplicate_check`, a repeat within
`duplicate_check_interval` seconds is counted too but not delivered: WeCom drops it and answers ok
(with the first message's msgid here; that WeCom echoes it is unconfirmed).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from tests.sim.servers import serve


@dataclass
class SimCard:
    msgid: str
    touser: str
    task_id: str
    versions: list[dict[str, Any]] = field(default_factory=list)  # template_card after send/each update
    updated_with: list[str] = field(default_factory=list)  # "send" / "click": where each used code came from


@dataclass
class SimCode:
    msgid: str
    origin: str
    issued: float
    used: bool = False


class WeComSim:
    CODE_TTL = 72 * 3600
    UPLOAD_LIMIT = 20 * 1024 * 1024

    def __init__(self, corp_id: str, secret: str, token_ttl: int = 7200) -> None:
        self.corp_id, self.secret, self.token_ttl = corp_id, secret, token_ttl
        self.tokens: dict[str, float] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.media: dict[str, tuple[bytes, str, bool]] = {}  # id -> (data, name, expired)
        self.messages: list[dict[str, Any]] = []  # accepted message/send bodies (+ "msgid")
        self.cards: dict[str, SimCard] = {}
        self.codes: dict[str, SimCode] = {}
        self.calls: list[str] = []
        self.looked_up: list[str] = []  # user ids asked of user/get: external contacts must never be
        self.errors: list[tuple[str, int]] = []
        self.duplicates = 0
        self.approvals: dict[str, dict[str, Any]] = {}
        self.token_issued = 0
        self._rate_limited = 0
        self._http_429 = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.app = self._build()

    # ---- test controls ------------------------------------------------------------------------

    def add_approval(self, sp_no: str, template_id: str, applyer: str, contents: list[dict[str, Any]],
                     sp_status: int = 2, name: str = "采购合同") -> None:
        """An approval; a File control given `files` [(name, bytes)] gets media ids in its value."""
        shaped = []
        for c in contents:
            c = dict(c)
            if c.get("control") == "File":
                ids = []
                for file_name, data in c.pop("files"):
                    media_id = f"sp-media-{next(self._ids)}"
                    self.media[media_id] = (data, file_name, False)
                    ids.append({"file_id": media_id})
                c["value"] = {"files": ids}
            shaped.append(c)
        self.approvals[sp_no] = {"sp_no": sp_no, "sp_name": name, "sp_status": sp_status, "template_id": template_id,
                                 "apply_time": int(time.time()) - 3600, "applyer": {"userid": applyer, "partyid": "1"},
                                 "sp_record": [], "notifier": [], "comments": [], "apply_data": {"contents": shaped}}

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens = {t: 0.0 for t in self.tokens}

    def rate_limit_next(self, n: int) -> None:
        self._rate_limited = n

    def http_429_next(self, n: int) -> None:
        self._http_429 = n

    def click(self, msgid: str) -> str:
        code = f"rc-{uuid.uuid4().hex[:12]}"
        self.codes[code] = SimCode(msgid=msgid, origin="click", issued=time.time())
        return code

    def age_codes(self, hours: float) -> None:
        for c in self.codes.values():
            c.issued -= hours * 3600

    def sent(self, touser: str | None = None, msgtype: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if (touser is None or m["touser"] == touser)
                and (msgtype is None or m["msgtype"] == msgtype)]

    def files_to(self, touser: str) -> list[tuple[str, bytes]]:
        """(file name, bytes) of every `file` message sent to `touser`, in order."""
        found = []
        for m in self.sent(touser, "file"):
            data, name, _ = self.media[m["file"]["media_id"]]
            found.append((name, data))
        return found

    def cards_to(self, touser: str) -> list[SimCard]:
        return [c for c in self.cards.values() if c.touser == touser]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f"condition not met within {timeout} s; calls: {self.calls[-10:]}")
            await asyncio.sleep(0.05)

    # ---- the API --------------------------------------------------------------------------------

    def _auth(self, request: Request) -> int:
        token = request.query_params.get("access_token")
        if not token:
            return 41001
        with self._lock:
            expires = self.tokens.get(token)
        if expires is None:
            return 40014
        if time.time() >= expires:
            return 42001
        return 0

    def _gate(self, request: Request, name: str) -> Response | None:
        """Token check, then rate limits; None when the call may proceed."""
        if self._http_429 > 0:
            self._http_429 -= 1
            self.errors.append((name, 429))
            return Response(status_code=429, headers={"Retry-After": "0.2"})
        code = self._auth(request)
        if code == 0 and self._rate_limited > 0:
            self._rate_limited -= 1
            code = 45009
        if code:
            self.errors.append((name, code))
            return JSONResponse({"errcode": code, "errmsg": f"sim error {code}"})
        self.calls.append(name)
        return None

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.get("/cgi-bin/gettoken")
        async def gettoken(corpid: str = "", corpsecret: str = "") -> JSONResponse:
            if corpid != self.corp_id:
                return JSONResponse({"errcode": 40013, "errmsg": "invalid corpid"})
            if corpsecret != self.secret:
                return JSONResponse({"errcode": 40001, "errmsg": "invalid credential"})
            token = f"tok-{uuid.uuid4().hex[:16]}"
            with self._lock:
                self.tokens[token] = time.time() + self.token_ttl
            self.token_issued += 1
            return JSONResponse({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.token_ttl})

        @app.post("/cgi-bin/message/send")
        async def send(request: Request) -> Response:
            if (refused := self._gate(request, "message/send")) is not None:
                return refused
            body = await request.json()
            kind = body.get("msgtype")
            if kind not in ("text", "textcard", "template_card", "file") or not body.get("touser"):
                return JSONResponse({"errcode": 40008, "errmsg": "invalid message type"})
            if kind == "file" and (body.get("file") or {}).get("media_id") not in self.media:
                return JSONResponse({"errcode": 40007, "errmsg": "invalid media_id"})
            if self.users and body["touser"] not in self.users:
                return JSONResponse({"errcode": 81013, "errmsg": "user & party & tag all invalid"})
            content = json.dumps(body.get(kind), sort_keys=True, ensure_ascii=False)
            same = [m for m in self.messages if m["touser"] == body["touser"] and m["_content"] == content]
            if same:
                self.duplicates += 1
                window = float(body.get("duplicate_check_interval") or 1800)
                if body.get("enable_duplicate_check") and time.time() - same[-1]["_at"] < window:
                    return JSONResponse({"errcode": 0, "errmsg": "ok", "msgid": same[-1]["msgid"]})
            msgid = f"msg-{next(self._ids)}"
            self.messages.append({**body, "msgid": msgid, "_content": content, "_at": time.time()})
            answer: dict[str, Any] = {"errcode": 0, "errmsg": "ok", "msgid": msgid}
            if kind == "template_card":
                card = body["template_card"]
                self.cards[msgid] = SimCard(msgid=msgid, touser=body["touser"], task_id=card.get("task_id", ""),
                                            versions=[card])
                if card.get("card_type") == "button_interaction":
                    code = f"rc-{uuid.uuid4().hex[:12]}"
                    self.codes[code] = SimCode(msgid=msgid, origin="send", issued=time.time())
                    answer["response_code"] = code
            return JSONResponse(answer)

        @app.post("/cgi-bin/message/update_template_card")
        async def update(request: Request) -> Response:
            if (refused := self._gate(request, "update_template_card")) is not None:
                return refused
            body = await request.json()
            code = self.codes.get(body.get("response_code", ""))
            if code is None or code.used or time.time() - code.issued > self.CODE_TTL:
                self.errors.append(("update_template_card", 40078))
                return JSONResponse({"errcode": 40078, "errmsg": "invalid response_code"})
            code.used = True
            card = self.cards[code.msgid]
            card.versions.append(body["template_card"])
            card.updated_with.append(code.origin)
            return JSONResponse({"errcode": 0, "errmsg": "ok", "invaliduser": []})

        @app.post("/cgi-bin/oa/getapprovaldetail")
        async def approval_detail(request: Request) -> Response:
            if (refused := self._gate(request, "oa/getapprovaldetail")) is not None:
                return refused
            found = self.approvals.get(str((await request.json()).get("sp_no") or ""))
            if found is None:
                return JSONResponse({"errcode": 301025, "errmsg": "sp_no not found"})
            return JSONResponse({"errcode": 0, "errmsg": "ok", "info": found})
        @app.post("/cgi-bin/media/upload")
        async def media_upload(request: Request) -> Response:
            if (refused := self._gate(request, "media/upload")) is not None:
                return refused
            if request.query_params.get("type") != "file":
                return JSONResponse({"errcode": 40004, "errmsg": "invalid media type"})
            part = (await request.form()).get("media")
            if part is None or isinstance(part, str):
                return JSONResponse({"errcode": 41005, "errmsg": "media data missing"})
            data = await part.read()
            if len(data) <= 5 or len(data) > self.UPLOAD_LIMIT:
                return JSONResponse({"errcode": 40006, "errmsg": "invalid file size"})
            media_id = f"3{uuid.uuid4().hex}"
            with self._lock:
                self.media[media_id] = (data, part.filename or "", False)
            return JSONResponse({"errcode": 0, "errmsg": "ok", "type": "file", "media_id": media_id,
                                 "created_at": str(int(time.time()))})

        @app.get("/cgi-bin/media/get")
        async def media(request: Request, media_id: str = "") -> Response:
            if (refused := self._gate(request, "media/get")) is not None:
                return refused
            found = self.media.get(media_id)
            if found is None or found[2]:
                return JSONResponse({"errcode": 40007, "errmsg": "invalid media_id"})
            data, name, _ = found
            return Response(data, media_type="application/octet-stream",
                            headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"})

        @app.get("/cgi-bin/user/get")
        async def user(request: Request, userid: str = "") -> Response:
            if (refused := self._gate(request, "user/get")) is not None:
                return refused
            self.looked_up.append(userid)
            found = self.users.get(userid)
            if found is None:
                return JSONResponse({"errcode": 60111, "errmsg": "userid not found"})
            return JSONResponse({"errcode": 0, "errmsg": "ok", "userid": userid, **found})

        return app


@contextmanager
def running(sim: WeComSim) -> Iterator[str]:
    """Serve the simulator on a loopback port; yields its API base."""
    with serve(sim.app) as url:
        yield url
