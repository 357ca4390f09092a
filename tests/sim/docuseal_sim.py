"""A DocuSeal stand-in for tests: the `/api` endpoints SignBridge uses, over real HTTP.

- Auth: `X-Auth-Token` must equal the API key (else 401 `{"error": "Not authenticated"}`).
- Status machine: `order: "preserved"` lets only the first unfinished submitter act;
  `"random"` lets everyone. A decline ends the submission; an archived one can't be signed.
- The signed file: DocuSeal renders the fields into a new PDF and signs it with its own
  certificate; so does this simulator (pypdf rewrite + a PAdES signature from its own CA), so
  the file does NOT start with the original bytes. It is served from a signed URL, no token.
- Webhooks: JSON, `X-Docuseal-Signature: "<ts>.<hex HMAC-SHA256(secret, "<ts>.<body>")>"`;
  any non-2xx is retried a few times. `duplicate`, `hold()`/`flush(reverse=True)` as in the
  Dropbox Sign simulator. `down = True`: every API call answers 503 with `Retry-After: 1`; `throttle = n`: the next n
  calls answer 429 with `Retry-After: 7`.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import itertools
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pypdf import PdfReader

from connectors.esign.docuseal import signature
from signbridge.pdf.pades import sign_pdf
from signbridge.pdf.pki import InstallationCA
from tests.sim.dropbox_sign_sim import Delivery, rerender
from tests.sim.servers import serve

FINAL = ("completed", "declined")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class DocuSealSim:
    def __init__(self, api_key: str, webhook_secret: str, callback_url: str = "") -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.callback_url = callback_url
        self.templates: dict[int, dict[str, Any]] = {}
        self.submissions: dict[int, dict[str, Any]] = {}
        self.files: dict[int, bytes] = {}  # template id → original; submission id → signed
        self.file_tokens: dict[str, int] = {}
        self.down = False
        self.duplicate = False
        self.throttle = 0  # the next n API calls answer 429 with Retry-After: 7
        self.mute = False  # callbacks are lost (the polling fallback must notice)
        self.reminded: list[int] = []
        self.deliveries: list[Delivery] = []
        self._held: list[Delivery] | None = None
        self._ids = itertools.count(101)
        self._lock = threading.Lock()
        self._ca_dir = tempfile.TemporaryDirectory()
        self.ca = InstallationCA.load_or_create(Path(self._ca_dir.name), organisation="DocuSeal Sim")
        self.url = ""
        self.app = self._make_app()

    # ---- HTTP API ---------------------------------------------------------------------------

    def _make_app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Response:
            if self.down:
                return JSONResponse({"error": "Service Unavailable"}, 503, headers={"Retry-After": "1"})
            if self.throttle > 0:
                self.throttle -= 1
                return JSONResponse({"error": "Too many requests"}, 429, headers={"Retry-After": "7"})
            token = request.headers.get("x-auth-token", "")
            if request.url.path.startswith("/api/") and not hmac.compare_digest(token.encode(),
                                                                                self.api_key.encode()):
                return JSONResponse({"error": "Not authenticated"}, 401)
            return await call_next(request)  # type: ignore[no-any-return]

        @app.get("/api/templates")
        async def list_templates(external_id: str | None = None) -> Response:
            data = [t for t in self.templates.values() if external_id is None or t["external_id"] == external_id]
            return JSONResponse({"data": data, "pagination": {"count": len(data)}})

        @app.post("/api/templates/pdf")
        async def create_template(request: Request) -> Response:
            body = await request.json()
            docs = body.get("documents") or []
            if len(docs) != 1 or not docs[0].get("file"):
                return JSONResponse({"error": "documents must hold one file"}, 422)
            pdf = base64.b64decode(docs[0]["file"])
            pages = len(PdfReader(BytesIO(pdf)).pages)
            for f in docs[0].get("fields", []):
                for a in f.get("areas") or []:
                    if not (isinstance(a.get("page"), int) and 1 <= a["page"] <= pages
                            and all(0 <= a.get(k, -1) <= 1 for k in ("x", "y", "w", "h"))
                            and a["x"] + a["w"] <= 1 and a["y"] + a["h"] <= 1):
                        return JSONResponse({"error": f"field {f.get('name')}: area outside page {a}"}, 422)
            roles = sorted({f["role"] for f in docs[0].get("fields", [])})
            tid = next(self._ids)
            self.templates[tid] = {"id": tid, "name": body.get("name"), "external_id": body.get("external_id"),
                                   "submitters": [{"name": r, "uuid": secrets.token_hex(8)} for r in roles],
                                   "fields": docs[0].get("fields", [])}
            self.files[tid] = pdf
            return JSONResponse(self.templates[tid])

        @app.post("/api/submissions")
        async def create_submission(request: Request) -> Response:
            body = await request.json()
            template = self.templates.get(int(body.get("template_id", 0)))
            if template is None:
                return JSONResponse({"error": "Template not found"}, 404)
            roles = {s["name"] for s in template["submitters"]}
            people = body.get("submitters") or []
            if not people or any(p.get("role") not in roles or not (p.get("email") or p.get("phone")) for p in people):
                return JSONResponse({"error": "submitters must match the template roles and have an email"}, 422)
            sid = next(self._ids)
            submitters = []
            for p in people:
                slug = secrets.token_urlsafe(10)
                submitters.append({"id": next(self._ids), "submission_id": sid, "uuid": secrets.token_hex(8),
                                   "email": p.get("email"), "name": p.get("name"), "role": p["role"],
                                   "external_id": p.get("external_id"), "slug": slug, "status": "awaiting",
                                   "embed_src": f"{self.url}/s/{slug}", "completed_at": None,
                                   "declined_at": None, "decline_reason": None})
            self.submissions[sid] = {"id": sid, "template_id": template["id"], "status": "pending",
                                     "order": body.get("order", "preserved"), "submitters": submitters,
                                     "audit_log_url": None, "combined_document_url": None,
                                     "completed_at": None, "archived_at": None, "expire_at": body.get("expire_at"),
                                     "created_at": _now()}
            return JSONResponse(submitters)

        @app.get("/api/submissions")
        async def list_submissions(template_id: int | None = None) -> Response:
            data = [s for s in self.submissions.values() if template_id is None or s["template_id"] == template_id]
            return JSONResponse({"data": data, "pagination": {"count": len(data)}})

        @app.get("/api/submissions/{sid}")
        async def get_submission(sid: int) -> Response:
            sub = self.submissions.get(sid)
            return JSONResponse(sub) if sub else JSONResponse({"error": "Not found"}, 404)

        @app.get("/api/submissions/{sid}/documents")
        async def documents(sid: int) -> Response:
            sub = self.submissions.get(sid)
            if sub is None:
                return JSONResponse({"error": "Not found"}, 404)
            docs = []
            if sub["status"] == "completed":
                token = secrets.token_urlsafe(16)
                self.file_tokens[token] = sid
                docs.append({"name": "contract", "url": f"{self.url}/file/{token}/contract.pdf"})
            return JSONResponse({"id": sid, "documents": docs})

        @app.delete("/api/submissions/{sid}")
        async def archive(sid: int) -> Response:
            sub = self.submissions.get(sid)
            if sub is None:
                return JSONResponse({"error": "Not found"}, 404)
            sub["archived_at"] = _now()
            return JSONResponse({"id": sid, "archived_at": sub["archived_at"]})

        @app.put("/api/submitters/{submitter_id}")
        async def update_submitter(submitter_id: int, request: Request) -> Response:
            body = await request.json()
            for sub in self.submissions.values():
                for s in sub["submitters"]:
                    if s["id"] == submitter_id:
                        if body.get("send_email"):
                            self.reminded.append(submitter_id)
                        return JSONResponse(s)
            return JSONResponse({"error": "Not found"}, 404)

        @app.get("/file/{token}/{name}")
        async def file(token: str, name: str) -> Response:
            sid = self.file_tokens.get(token)
            if sid is None:
                return JSONResponse({"error": "Not found"}, 404)
            return Response(self.files[sid], media_type="application/pdf")

        return app

    # ---- acting as the submitters -----------------------------------------------------------

    def submitter(self, sid: int, external_id: str) -> dict[str, Any]:
        return next(s for s in self.submissions[sid]["submitters"] if s["external_id"] == external_id)

    def may_sign(self, sid: int, external_id: str) -> bool:
        sub = self.submissions[sid]
        me = self.submitter(sid, external_id)
        if sub["archived_at"] or sub["status"] != "pending" or me["status"] in FINAL:
            return False
        if sub["order"] == "random":
            return True
        first = next(s for s in sub["submitters"] if s["status"] not in FINAL)
        return bool(first["id"] == me["id"])

    async def sign(self, sid: int, external_id: str) -> None:
        with self._lock:
            if not self.may_sign(sid, external_id):
                raise PermissionError(f"{external_id} may not sign submission {sid} now")
            sub, me = self.submissions[sid], self.submitter(sid, external_id)
            me["status"], me["completed_at"] = "completed", _now()
            done = all(s["status"] == "completed" for s in sub["submitters"])
        if done:
            signed = await asyncio.to_thread(self._render, sid)
            with self._lock:
                self.files[sid] = signed
                sub["status"], sub["completed_at"] = "completed", _now()
                sub["audit_log_url"] = f"{self.url}/audit/{sid}.pdf"
        await self._emit("form.completed", self._form(sid, me))
        if done:
            await self._emit("submission.completed", dict(sub))

    def _render(self, sid: int) -> bytes:
        sub = self.submissions[sid]
        flat = rerender(self.files[sub["template_id"]], [f"{s['name']} signed" for s in sub["submitters"]])
        credential = self.ca.issue("docuseal", "DocuSeal Sim")
        return sign_pdf(flat, credential, signer_name="DocuSeal", position=1, signed_at=datetime.now(UTC))

    async def decline(self, sid: int, external_id: str, reason: str) -> None:
        with self._lock:
            if not self.may_sign(sid, external_id):
                raise PermissionError(f"{external_id} may not decline submission {sid} now")
            sub, me = self.submissions[sid], self.submitter(sid, external_id)
            me.update(status="declined", declined_at=_now(), decline_reason=reason)
            sub["status"] = "declined"
        await self._emit("form.declined", self._form(sid, me))

    def _form(self, sid: int, me: dict[str, Any]) -> dict[str, Any]:
        sub = self.submissions[sid]
        return {**me, "submission": {"id": sid, "status": sub["status"], "audit_log_url": sub["audit_log_url"]}}

    # ---- webhooks ---------------------------------------------------------------------------

    def delivery(self, event_type: str, data: dict[str, Any], ts: int | None = None) -> tuple[dict[str, str], bytes]:
        body = json.dumps({"event_type": event_type, "timestamp": _now(), "data": data}).encode()
        header = signature(self.webhook_secret, str(ts if ts is not None else int(time.time())), body)
        return {"content-type": "application/json", "x-docuseal-signature": header}, body

    async def _emit(self, event_type: str, data: dict[str, Any]) -> None:
        item = Delivery(event_type, data)
        if self._held is not None:
            self._held.append(item)
        else:
            await self._deliver(item)

    async def _deliver(self, item: Delivery, attempts: int = 6) -> None:
        self.deliveries.append(item)
        if self.mute:
            return
        for _copy in range(2 if self.duplicate else 1):
            for attempt in range(attempts):
                headers, body = self.delivery(item.event_type, item.payload)  # signed at send time
                async with httpx.AsyncClient(timeout=10) as http:
                    resp = await http.post(self.callback_url, headers=headers, content=body)
                item.attempts.append((resp.status_code, resp.content))
                if 200 <= resp.status_code < 300:
                    break
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                raise AssertionError(f"webhook {item.event_type} never acknowledged: {item.attempts}")

    def hold(self) -> None:
        self._held = []

    async def flush(self, reverse: bool = False) -> None:
        held, self._held = self._held or [], None
        for item in reversed(held) if reverse else held:
            await self._deliver(item)

    @contextmanager
    def running(self) -> Iterator[DocuSealSim]:
        try:
            with serve(self.app) as url:
                self.url = url
                yield self
        finally:
            self._ca_dir.cleanup()

    @property
    def api_base(self) -> str:
        return f"{self.url}/api"
