"""A Dropbox Sign stand-in for tests: the v3 endpoints SignBridge uses, over real HTTP.

- Auth: HTTP basic, the API key as user (wrong or missing → 401, like the real API).
- Status machine: with `order` on the signers only the lowest unsigned order may sign; without
  it everyone may sign at once. A decline ends the request; a cancelled one can't be signed.
- Files: re-rendered like the real provider (pypdf rewrite plus an audit-trail page), so they do
  NOT start with the original bytes; 409 until the request is downloadable.
- Callbacks: multipart field `json`, `event_hash` = HMAC-SHA256(api_key, event_time + event_type);
  a delivery counts only when answered 200 with exactly `Hello API Event Received`, otherwise
  it is retried (a few quick attempts here instead of three days). `duplicate` delivers every
  callback twice; `hold()` queues callbacks until `flush(reverse=True)` sends them out of order.
- `down = True` makes every API call answer 503 with `Retry-After`, as in an outage;
  `throttle = n` answers the next n calls 429 (`Retry-After: 7`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pypdf import PdfReader, PdfWriter

from tests.sim.servers import serve

REPLY = b"Hello API Event Received"


def rerender(pdf: bytes, lines: list[str]) -> bytes:
    """A new file with the same pages plus an audit page — like a provider that flattens."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.add_blank_page(width=595, height=842)
    writer.add_metadata({"/Subject": " | ".join(lines)})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


@dataclass
class Delivery:
    event_type: str
    payload: dict[str, Any]
    attempts: list[tuple[int, bytes]] = field(default_factory=list)


class DropboxSignSim:
    def __init__(self, api_key: str, callback_url: str = "") -> None:
        self.api_key = api_key
        self.callback_url = callback_url
        self.requests: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.down = False
        self.duplicate = False
        self.throttle = 0  # the next n API calls answer 429 with Retry-After: 7
        self.stall = 0.0  # seconds every API call hangs before answering (a slow provider)
        self.mute = False  # callbacks are lost (the polling fallback must notice)
        self.calls: list[str] = []
        self.reminded: list[str] = []
        self.deliveries: list[Delivery] = []
        self._held: list[Delivery] | None = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.url = ""
        self.app = self._make_app()

    # ---- HTTP API ---------------------------------------------------------------------------

    def _auth_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user = base64.b64decode(header[6:]).decode().split(":", 1)[0]
        except ValueError:
            return False
        return hmac.compare_digest(user.encode(), self.api_key.encode())

    def _make_app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Response:
            self.calls.append(f"{request.method} {request.url.path}")
            if self.stall:
                await asyncio.sleep(self.stall)
            if self.down:
                return JSONResponse({"error": {"error_name": "maintenance"}}, 503, headers={"Retry-After": "1"})
            if self.throttle > 0:
                self.throttle -= 1
                return JSONResponse({"error": {"error_msg": "Rate limit exceeded", "error_name": "exceeded_rate"}},
                                    429, headers={"Retry-After": "7"})
            if request.url.path.startswith("/v3/") and not self._auth_ok(request):
                return JSONResponse({"error": {"error_msg": "Unauthorized api key", "error_name": "unauthorized"}},
                                    401)
            return await call_next(request)  # type: ignore[no-any-return]

        async def create(request: Request, embedded: bool) -> Response:
            form = await request.form()
            upload = form.get("file[0]")
            if upload is None or isinstance(upload, str):
                return _bad("file[0] is required")
            pdf = await upload.read()
            if embedded and not form.get("client_id"):
                return _bad("client_id is required")
            signers = []
            for i in itertools.count():
                email = form.get(f"signers[{i}][email_address]")
                if email is None:
                    break
                order = form.get(f"signers[{i}][order]")
                signers.append({"signature_id": secrets.token_hex(16), "signer_email_address": str(email),
                                "signer_name": str(form.get(f"signers[{i}][name]", "")),
                                "order": int(str(order)) if order is not None else None,
                                "status_code": "awaiting_signature", "signed_at": None,
                                "last_viewed_at": None, "decline_reason": None})
            if not signers:
                return _bad("at least one signer is required")
            placed = _form_fields(form.get("form_fields_per_document"), pdf, len(signers))
            if isinstance(placed, str):
                return _bad(placed)
            metadata = {str(k)[9:-1]: str(v) for k, v in form.items() if str(k).startswith("metadata[")}
            rid = hashlib.sha1(f"{next(self._ids)}{time.time()}".encode()).hexdigest()
            req = {"signature_request_id": rid, "title": str(form.get("title", "")), "metadata": metadata,
                   "is_complete": False, "is_declined": False, "is_canceled": False, "has_error": False,
                   "expires_at": int(str(form["expires_at"])) if form.get("expires_at") else None,
                   "created_at": int(time.time()), "signatures": signers, "embedded": embedded,
                   "downloadable": False, "form_fields": placed}
            with self._lock:
                self.requests[rid] = req
                self.files[rid] = pdf
            return JSONResponse({"signature_request": _public(req)})

        @app.post("/v3/signature_request/send")
        async def send(request: Request) -> Response:
            return await create(request, embedded=False)

        @app.post("/v3/signature_request/create_embedded")
        async def create_embedded(request: Request) -> Response:
            return await create(request, embedded=True)

        @app.get("/v3/signature_request/list")
        async def list_requests(page: int = 1, page_size: int = 20) -> Response:
            items = sorted(self.requests.values(), key=lambda r: -int(r["created_at"]))
            pages = max(1, -(-len(items) // page_size))
            chunk = items[(page - 1) * page_size: page * page_size]
            return JSONResponse({"list_info": {"num_pages": pages, "num_results": len(items), "page": page},
                                 "signature_requests": [_public(r) for r in chunk]})

        @app.get("/v3/signature_request/files/{rid}")
        async def files(rid: str, file_type: str = "pdf") -> Response:
            req = self.requests.get(rid)
            if req is None:
                return _not_found()
            if not req["downloadable"]:
                return JSONResponse({"error": {"error_msg": "Files are still being processed",
                                               "error_name": "conflict"}}, 409)
            return Response(self.files[rid], media_type="application/pdf")

        @app.get("/v3/signature_request/{rid}")
        async def get(rid: str) -> Response:
            req = self.requests.get(rid)
            return JSONResponse({"signature_request": _public(req)}) if req else _not_found()

        @app.get("/v3/embedded/sign_url/{signature_id}")
        async def sign_url(signature_id: str) -> Response:
            for req in self.requests.values():
                for s in req["signatures"]:
                    if s["signature_id"] == signature_id and req["embedded"]:
                        return JSONResponse({"embedded": {"sign_url": f"{self.url}/embedded/{signature_id}",
                                                          "expires_at": int(time.time()) + 3600}})
            return _not_found()

        @app.post("/v3/signature_request/cancel/{rid}")
        async def cancel(rid: str) -> Response:
            req = self.requests.get(rid)
            if req is None:
                return _not_found()
            if req["is_complete"] or req["is_declined"]:
                return _bad("signature request is already complete")
            req["is_canceled"] = True
            return Response(status_code=200)

        @app.post("/v3/signature_request/remind/{rid}")
        async def remind(rid: str, request: Request) -> Response:
            req = self.requests.get(rid)
            if req is None:
                return _not_found()
            if req["embedded"]:
                return _bad("cannot send reminders for embedded requests")
            form = await request.form()
            self.reminded.append(str(form.get("email_address")))
            return JSONResponse({"signature_request": _public(req)})

        return app

    # ---- acting as the signers --------------------------------------------------------------

    def _signature(self, rid: str, email: str) -> tuple[dict[str, Any], dict[str, Any]]:
        req = self.requests[rid]
        sig = next(s for s in req["signatures"] if s["signer_email_address"].lower() == email.lower())
        return req, sig

    def may_sign(self, rid: str, email: str) -> bool:
        req, sig = self._signature(rid, email)
        if req["is_complete"] or req["is_declined"] or req["is_canceled"] or sig["status_code"] != "awaiting_signature":
            return False
        if sig["order"] is None:
            return True
        pending = [s["order"] for s in req["signatures"] if s["status_code"] == "awaiting_signature"]
        return bool(sig["order"] == min(pending))

    async def sign(self, rid: str, email: str) -> None:
        """Sign as `email`; raises if it is not their turn. Then deliver the callbacks."""
        with self._lock:
            if not self.may_sign(rid, email):
                raise PermissionError(f"{email} may not sign {rid} now")
            req, sig = self._signature(rid, email)
            sig["status_code"], sig["signed_at"] = "signed", int(time.time())
            done = all(s["status_code"] == "signed" for s in req["signatures"])
            if done:
                req["is_complete"] = True
                self.files[rid] = rerender(self.files[rid], [f"signed by {s['signer_email_address']}"
                                                             for s in req["signatures"]])
        await self._emit("signature_request_signed", rid, sig["signature_id"])
        if done:
            await self._emit("signature_request_all_signed", rid)
            with self._lock:
                req["downloadable"] = True
            await self._emit("signature_request_downloadable", rid)

    async def decline(self, rid: str, email: str, reason: str) -> None:
        with self._lock:
            if not self.may_sign(rid, email):
                raise PermissionError(f"{email} may not decline {rid} now")
            req, sig = self._signature(rid, email)
            sig["status_code"], sig["decline_reason"] = "declined", reason
            req["is_declined"] = True
        await self._emit("signature_request_declined", rid, sig["signature_id"])

    # ---- callbacks --------------------------------------------------------------------------

    def payload(self, event_type: str, rid: str, signature_id: str | None = None) -> dict[str, Any]:
        event_time = str(int(time.time()))
        digest = hmac.new(self.api_key.encode(), (event_time + event_type).encode(), hashlib.sha256).hexdigest()
        return {"event": {"event_time": event_time, "event_type": event_type, "event_hash": digest,
                          "event_metadata": {"related_signature_id": signature_id,
                                             "reported_for_account_id": "sim-account"}},
                "signature_request": _public(self.requests[rid])}

    async def _emit(self, event_type: str, rid: str, signature_id: str | None = None) -> None:
        delivery = Delivery(event_type, self.payload(event_type, rid, signature_id))
        if self._held is not None:
            self._held.append(delivery)
            return
        await self._deliver(delivery)

    async def _deliver(self, delivery: Delivery, attempts: int = 6) -> None:
        self.deliveries.append(delivery)
        if self.mute:
            return
        for _copy in range(2 if self.duplicate else 1):
            for attempt in range(attempts):
                body = json.dumps(delivery.payload)
                async with httpx.AsyncClient(timeout=10) as http:
                    resp = await http.post(self.callback_url, files={"json": (None, body)})
                delivery.attempts.append((resp.status_code, resp.content))
                if resp.status_code == 200 and resp.content == REPLY:
                    break
                await asyncio.sleep(0.05 * (attempt + 1))  # the real one backs off for days
            else:
                raise AssertionError(f"callback {delivery.event_type} never acknowledged: {delivery.attempts}")

    def hold(self) -> None:
        self._held = []

    async def flush(self, reverse: bool = False) -> None:
        held, self._held = self._held or [], None
        for delivery in reversed(held) if reverse else held:
            await self._deliver(delivery)

    @contextmanager
    def running(self) -> Iterator[DropboxSignSim]:
        with serve(self.app) as url:
            self.url = url
            yield self

    @property
    def api_base(self) -> str:
        return f"{self.url}/v3"


def _public(req: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in req.items() if k not in ("embedded", "downloadable", "form_fields")}


def _form_fields(raw: Any, pdf: bytes, signers: int) -> list[dict[str, Any]] | str:
    """`form_fields_per_document` as Dropbox Sign checks it: JSON, one list per file, each field a
    known type for an existing signer index, on an existing page, inside it."""
    if raw is None:
        return []
    try:
        per_document = json.loads(str(raw))
    except ValueError:
        return "form_fields_per_document is not valid JSON"
    if not isinstance(per_document, list) or len(per_document) != 1:
        return "form_fields_per_document needs one list per file"
    pages = PdfReader(BytesIO(pdf)).pages
    for item in per_document[0]:
        if item.get("type") != "signature" or not item.get("api_id"):
            return "form field type/api_id invalid"
        if not isinstance(item.get("signer"), int) or not 0 <= item["signer"] < signers:
            return f"form field signer {item.get('signer')} is not a signer index"
        if not isinstance(item.get("page"), int) or not 1 <= item["page"] <= len(pages):
            return f"form field page {item.get('page')} does not exist"
        box = pages[item["page"] - 1].mediabox
        if not (0 <= item["x"] and item["x"] + item["width"] <= float(box.width)
                and 0 <= item["y"] and item["y"] + item["height"] <= float(box.height)):
            return "form field is outside the page"
    return list(per_document[0])


def _bad(message: str) -> Response:
    return JSONResponse({"error": {"error_msg": message, "error_name": "bad_request"}}, 400)


def _not_found() -> Response:
    return JSONResponse({"error": {"error_msg": "Not found", "error_name": "not_found"}}, 404)
