"""A DocuSign stand-in for tests: OAuth JWT grant + the eSignature v2.1 calls SignBridge uses.

- Auth: `POST /oauth/token` verifies the RS256 assertion with the integration's public key
  (iss, sub, aud = OAuth host, scope `signature impersonation`, not expired); `consent = False`
  answers 400 `consent_required`. API calls need a live bearer token (`revoke_tokens()` kills
  them all: the connector must fetch a new one) and the right account id.
- Status machine: signers sign in `routingOrder` (only the lowest pending order may act; equal
  orders in parallel). A decline ends the envelope; a voided one can't be signed; completing
  re-renders the file (does NOT start with the original bytes) and makes a certificate.
- Recipient views, by DocuSign's rules: the request needs `returnUrl` and
  `authenticationMethod`, and `clientUserId`, `userName` and `email` matching an embedded
  recipient; the URL works once and only within `view_ttl_seconds` (300) of being made, on the
  simulator's clock (`advance(seconds)` moves it; `now()`). `GET <url>` opens a signing session
  (a page whose form posts to `/signing/session/<id>`, which signs or declines and answers 303 to
  `returnUrl?event=signing_complete|decline`); `POST <url>` (`?action=decline`) signs in one step.
  `status_gets` counts status reads per envelope, `calls` every OAuth/API request made.
- Connect: JSON SIM bodies, one `X-DocuSign-Signature-N` per key in `hmac_keys` (rotation),
  retried until 200; `duplicate`, `hold()`/`flush(reverse=True)`, `mute` as in the other sims.
- `down` → 503 + Retry-After: 1; `throttle = n` → the next n calls 429 with DocuSign's
  `X-RateLimit-Reset` (epoch seconds) 7 s ahead; `expire(id)` expires an envelope.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from io import BytesIO
from typing import Any
from urllib.parse import urlparse

import httpx
import jwt
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pdfminer.high_level import extract_text
from pypdf import PdfReader

from connectors.esign.docusign import connect_signature
from signbridge.pdf.sample import sample_contract
from tests.sim.dropbox_sign_sim import rerender
from tests.sim.servers import serve


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _tab_problem(tab: dict[str, Any], pdfs: dict[str, bytes]) -> tuple[str, str] | None:
    """Why DocuSign would refuse a signHere tab: an unknown document, an anchor string that is not
    in it (with anchorIgnoreIfNotPresent false), a page that does not exist, a position off the page."""
    pdf = pdfs.get(str(tab.get("documentId")))
    if pdf is None:
        return "INVALID_DOCUMENT_ID", f"documentId {tab.get('documentId')}"
    if tab.get("anchorString"):
        if tab.get("anchorIgnoreIfNotPresent") != "true" and tab["anchorString"] not in extract_text(BytesIO(pdf)):
            return "ANCHOR_TAB_STRING_NOT_FOUND", str(tab["anchorString"])
        return None
    pages = PdfReader(BytesIO(pdf)).pages
    page = str(tab.get("pageNumber", ""))
    if not page.isdigit() or not 1 <= int(page) <= len(pages):
        return "PAGE_NUMBER_NOT_IN_DOCUMENT", page
    box = pages[int(page) - 1].mediabox
    try:
        x, y = float(tab["xPosition"]), float(tab["yPosition"])
    except (KeyError, ValueError):
        return "INVALID_TAB_POSITION", "xPosition/yPosition"
    if not (0 <= x <= float(box.width) and 0 <= y <= float(box.height)):
        return "TAB_OUT_OF_BOUNDS", f"{x},{y}"
    return None


def _err(status: int, code: str, message: str = "") -> Response:
    return JSONResponse({"errorCode": code, "message": message or code}, status)


@dataclass
class Delivery:
    event: str
    body: bytes
    attempts: list[int] = field(default_factory=list)


class DocuSignSim:
    def __init__(self, integration_key: str, user_id: str, account_id: str, public_key: str,
                 hmac_keys: list[str]) -> None:
        self.integration_key, self.user_id, self.account_id = integration_key, user_id, account_id
        self.public_key = public_key
        self.hmac_keys = hmac_keys
        self.callback_url = ""
        self.envelopes: dict[str, dict[str, Any]] = {}
        self.phone_workflows = {"c368e411-1592-4001-a3df-dca94ac539ae"}  # the account's phone-auth workflow
        self.files: dict[str, bytes] = {}
        self.documents: dict[str, dict[str, bytes]] = {}  # envelope -> documentId -> PDF
        self.tokens: set[str] = set()
        self.grants = 0
        self.consent = True
        self.down = False
        self.throttle = 0
        self.duplicate = False
        self.mute = False
        self.status_gets: Counter[str] = Counter()
        self.reminded: list[str] = []
        self.views: dict[str, tuple[str, str, float, str]] = {}  # token → (envelope, recipient, made at, returnUrl)
        self.sessions: dict[str, tuple[str, str, str]] = {}  # session id → (envelope, recipient, returnUrl)
        self.view_ttl_seconds = 300.0
        self.clock_offset = 0.0
        self.calls: list[str] = []  # "METHOD path" of every OAuth and API request, refused ones too
        self.deliveries: list[Delivery] = []
        self._held: list[Delivery] | None = None
        self._lock = threading.Lock()
        self.url = ""
        self.app = self._make_app()

    # ---- HTTP ---------------------------------------------------------------------------------

    def _make_app(self) -> FastAPI:
        app = FastAPI()
        prefix = "/restapi/v2.1/accounts/{account}"

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Response:
            if request.url.path.startswith(("/restapi/", "/oauth/")):
                self.calls.append(f"{request.method} {request.url.path}")
            if self.down:
                return JSONResponse({"errorCode": "SERVICE_UNAVAILABLE"}, 503, headers={"Retry-After": "1"})
            if self.throttle > 0:
                self.throttle -= 1
                return JSONResponse({"errorCode": "HOURLY_APIINVOCATION_LIMIT_EXCEEDED"}, 429,
                                    headers={"X-RateLimit-Reset": str(int(time.time()) + 7)})
            if request.url.path.startswith("/restapi/"):
                auth = request.headers.get("authorization", "")
                if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
                    return _err(401, "USER_AUTHENTICATION_FAILED", "token invalid or expired")
                if f"/accounts/{self.account_id}/" not in request.url.path + "/":
                    return _err(400, "USER_DOES_NOT_BELONG_TO_SPECIFIED_ACCOUNT")
            return await call_next(request)  # type: ignore[no-any-return]

        @app.post("/oauth/token")
        async def token(request: Request) -> Response:
            form = await request.form()
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                return JSONResponse({"error": "unsupported_grant_type"}, 400)
            try:
                claims = jwt.decode(str(form.get("assertion", "")), self.public_key, algorithms=["RS256"],
                                    audience=urlparse(self.url).netloc)
            except jwt.PyJWTError:
                return JSONResponse({"error": "invalid_grant"}, 400)
            if (claims.get("iss"), claims.get("sub")) != (self.integration_key, self.user_id) or \
                    "signature" not in str(claims.get("scope", "")).split() or \
                    "impersonation" not in str(claims.get("scope", "")).split():
                return JSONResponse({"error": "invalid_grant"}, 400)
            if not self.consent:
                return JSONResponse({"error": "consent_required"}, 400)
            value = secrets.token_urlsafe(24)
            self.tokens.add(value)
            self.grants += 1
            return JSONResponse({"access_token": value, "token_type": "Bearer", "expires_in": 3600})

        @app.post(prefix + "/envelopes")
        async def create(account: str, request: Request) -> Response:
            body = await request.json()
            docs, signers = body.get("documents") or [], (body.get("recipients") or {}).get("signers") or []
            if body.get("status") != "sent" or not docs or not signers:
                return _err(400, "INVALID_REQUEST_BODY", "documents, signers and status sent are required")
            pdfs: dict[str, bytes] = {}
            for doc in docs:
                try:
                    pdf = base64.b64decode(doc["documentBase64"], validate=True)
                except (KeyError, ValueError):
                    return _err(400, "INVALID_REQUEST_BODY", "documentBase64")
                if not pdf.startswith(b"%PDF-"):
                    return _err(400, "PDF_VALIDATION_FAILED")
                pdfs[str(doc.get("documentId"))] = pdf
            for s in signers:
                if not s.get("email") or not s.get("name") or not s.get("recipientId") or not s.get("routingOrder"):
                    return _err(400, "INVALID_EMAIL_ADDRESS_FOR_RECIPIENT")
                for tab in (s.get("tabs") or {}).get("signHereTabs") or []:
                    problem = _tab_problem(tab, pdfs)
                    if problem:
                        return _err(400, *problem)
                if "identityVerification" in s and not self._phone_auth_ok(s["identityVerification"]):
                    return _err(400, "INVALIDAUTHENTICATIONSETUP", "Authentication is not setup correctly for the "
                                "recipient.")
            env_id = str(uuid.uuid4())
            envelope = {"envelopeId": env_id, "status": "sent", "emailSubject": body.get("emailSubject"),
                        "customFields": body.get("customFields") or {}, "sentDateTime": _now(),
                        "statusChangedDateTime": _now(),
                        "recipients": {"signers": [{**s, "status": "sent"} for s in signers]}}
            with self._lock:
                self.envelopes[env_id] = envelope
                self.documents[env_id] = pdfs
                self.files[env_id] = next(iter(pdfs.values()))
            return JSONResponse({"envelopeId": env_id, "status": "sent", "statusDateTime": _now(),
                                 "uri": f"/envelopes/{env_id}"}, 201)

        @app.get(prefix + "/envelopes")
        async def listing(account: str, from_date: str = "", custom_field: str = "") -> Response:
            if not from_date:
                return _err(400, "INVALID_REQUEST_PARAMETER", "from_date is required")
            name, _, value = custom_field.partition("=")
            found = [self._public(e, False) for e in self.envelopes.values()
                     if not custom_field or any(f.get("name") == name and f.get("value") == value
                                                for f in e["customFields"].get("textCustomFields", []))]
            return JSONResponse({"envelopes": found, "resultSetSize": str(len(found))})

        @app.get(prefix + "/envelopes/{env_id}")
        async def get(account: str, env_id: str, include: str = "") -> Response:
            envelope = self.envelopes.get(env_id)
            if envelope is None:
                return _err(404, "ENVELOPE_DOES_NOT_EXIST")
            self.status_gets[env_id] += 1
            return JSONResponse(self._public(envelope, "recipients" in include))

        @app.put(prefix + "/envelopes/{env_id}")
        async def update(account: str, env_id: str, request: Request) -> Response:
            envelope = self.envelopes.get(env_id)
            if envelope is None:
                return _err(404, "ENVELOPE_DOES_NOT_EXIST")
            body = await request.json()
            if body.get("status") != "voided" or not body.get("voidedReason"):
                return _err(400, "INVALID_REQUEST_BODY")
            if envelope["status"] in ("completed", "declined", "voided"):
                return _err(400, "ENVELOPE_CANNOT_VOID_INVALID_STATE")
            envelope.update(status="voided", voidedReason=body["voidedReason"], voidedDateTime=_now())
            await self._emit("envelope-voided", env_id)
            return JSONResponse({"envelopeId": env_id})

        @app.put(prefix + "/envelopes/{env_id}/recipients")
        async def resend(account: str, env_id: str, request: Request, resend_envelope: str = "") -> Response:
            envelope = self.envelopes.get(env_id)
            if envelope is None:
                return _err(404, "ENVELOPE_DOES_NOT_EXIST")
            if resend_envelope == "true":
                self.reminded += [s["email"] for s in (await request.json()).get("signers", [])]
            return JSONResponse({"recipientUpdateResults": []})

        @app.post(prefix + "/envelopes/{env_id}/views/recipient")
        async def view(account: str, env_id: str, request: Request) -> Response:
            envelope = self.envelopes.get(env_id)
            if envelope is None:
                return _err(404, "ENVELOPE_DOES_NOT_EXIST")
            body = await request.json()
            if not body.get("returnUrl") or not body.get("authenticationMethod"):
                return _err(400, "INVALID_REQUEST_PARAMETER", "returnUrl and authenticationMethod are required")
            signer = next((s for s in envelope["recipients"]["signers"]
                           if s.get("clientUserId") and s["clientUserId"] == body.get("clientUserId")
                           and s["email"] == body.get("email") and s["name"] == body.get("userName")), None)
            if signer is None:
                return _err(400, "UNKNOWN_ENVELOPE_RECIPIENT")
            if envelope["status"] not in ("sent", "delivered"):
                return _err(400, "ENVELOPE_INVALID_STATUS")
            view_token = secrets.token_urlsafe(12)
            self.views[view_token] = (env_id, signer["recipientId"], self.now(), str(body["returnUrl"]))
            return JSONResponse({"url": f"{self.url}/signing/{view_token}"}, 201)

        @app.get("/signing/{view_token}")
        async def open_view(view_token: str) -> Response:
            found = self._use_view(view_token)
            if isinstance(found, Response):
                return found
            env_id, recipient_id, _return_url = found
            session = secrets.token_urlsafe(12)
            self.sessions[session] = found
            name = next(s["name"] for s in self.envelopes[env_id]["recipients"]["signers"]
                        if s["recipientId"] == recipient_id)
            return HTMLResponse(f"<h1>DocuSign (simulated)</h1><p>Signing as {name}</p>"
                                f'<form method=post action="/signing/session/{session}"><button>Finish</button></form>')

        @app.post("/signing/session/{session}")
        async def finish_session(session: str, action: str = "sign", reason: str = "") -> Response:
            found = self.sessions.pop(session, None)
            if found is None:
                return _err(404, "SESSION_EXPIRED")
            env_id, recipient_id, return_url = found
            outcome = await self._act(env_id, recipient_id, action, reason)
            if isinstance(outcome, Response):
                return outcome
            event = "decline" if action == "decline" else "signing_complete"
            return RedirectResponse(f"{return_url}{'&' if '?' in return_url else '?'}event={event}", 303)

        @app.post("/signing/{view_token}")
        async def signing(view_token: str, action: str = "sign", reason: str = "") -> Response:
            found = self._use_view(view_token)
            if isinstance(found, Response):
                return found
            outcome = await self._act(found[0], found[1], action, reason)
            return outcome if isinstance(outcome, Response) else Response(status_code=200)

        @app.get(prefix + "/envelopes/{env_id}/documents/{which}")
        async def document(account: str, env_id: str, which: str) -> Response:
            envelope = self.envelopes.get(env_id)
            if envelope is None:
                return _err(404, "ENVELOPE_DOES_NOT_EXIST")
            if which == "certificate":
                if envelope["status"] != "completed":
                    return _err(400, "ENVELOPE_NOT_COMPLETE")
                return Response(self.certificate(env_id), media_type="application/pdf")
            if which in self.documents.get(env_id, {}):
                return Response(self.documents[env_id][which], media_type="application/pdf")
            if which != "combined":
                return _err(404, "DOCUMENT_DOES_NOT_EXIST")
            return Response(self.files[env_id], media_type="application/pdf")

        @app.get(prefix + "/envelopes/{env_id}/documents")
        async def list_documents(account: str, env_id: str) -> Response:
            if env_id not in self.envelopes:
                return _err(404, "ENVELOPE_DOES_NOT_EXIST")
            return JSONResponse({"envelopeId": env_id, "envelopeDocuments": [
                *({"documentId": k, "type": "content", "order": k} for k in self.documents[env_id]),
                {"documentId": "certificate", "type": "summary"}]})

        return app

    def now(self) -> float:
        """The simulator's clock (view URLs expire on it)."""
        return time.time() + self.clock_offset

    def advance(self, seconds: float) -> None:
        self.clock_offset += seconds

    def _use_view(self, view_token: str) -> tuple[str, str, str] | Response:
        """A view URL works once, and only within `view_ttl_seconds` of being made."""
        found = self.views.pop(view_token, None)  # single use
        if found is None:
            return _err(404, "SIGNING_URL_EXPIRED", "this signing URL was already used or never existed")
        env_id, recipient_id, made_at, return_url = found
        if self.now() - made_at > self.view_ttl_seconds:
            return _err(404, "SIGNING_URL_EXPIRED", "this signing URL has expired")
        return env_id, recipient_id, return_url

    async def _act(self, env_id: str, recipient_id: str, action: str, reason: str) -> Response | None:
        signer = next(s for s in self.envelopes[env_id]["recipients"]["signers"] if s["recipientId"] == recipient_id)
        try:
            if action == "decline":
                await self.decline(env_id, signer["email"], reason or "declined")
            else:
                await self.sign(env_id, signer["email"])
        except PermissionError as e:
            return _err(400, "RECIPIENT_NOT_IN_SEQUENCE", str(e))
        return None

    def _phone_auth_ok(self, verification: Any) -> bool:
        """Recipient phone authentication: one of the account's workflows, and a phone number list
        whose entries are a country code and a national number, digits only (E.164 is refused)."""
        if not isinstance(verification, dict) or verification.get("workflowId") not in self.phone_workflows:
            return False
        options = verification.get("inputOptions") or []
        def digits(entry: dict[str, Any]) -> bool:
            return str(entry.get("countryCode", "")).isdigit() and str(entry.get("number", "")).isdigit()

        return bool(options) and all(
            o.get("name") == "phone_number_list" and o.get("valueType") == "PhoneNumberList"
            and bool(o.get("phoneNumberList")) and all(digits(p) for p in o["phoneNumberList"]) for o in options)

    def _public(self, envelope: dict[str, Any], recipients: bool) -> dict[str, Any]:
        return {k: v for k, v in envelope.items() if recipients or k != "recipients"}

    def certificate(self, env_id: str) -> bytes:
        lines = [f"{s['name']} <{s['email']}> {s['status']} {s.get('signedDateTime', '')}"
                 for s in self.envelopes[env_id]["recipients"]["signers"]]
        return rerender(sample_contract("Certificate of Completion " + env_id), lines)

    # ---- acting as the signers ----------------------------------------------------------------

    def _signer(self, env_id: str, email: str) -> dict[str, Any]:
        return next(s for s in self.envelopes[env_id]["recipients"]["signers"] if s["email"].lower() == email.lower())

    def may_sign(self, env_id: str, email: str) -> bool:
        envelope, signer = self.envelopes[env_id], self._signer(env_id, email)
        if envelope["status"] not in ("sent", "delivered") or signer["status"] not in ("sent", "delivered"):
            return False
        pending = [int(s["routingOrder"]) for s in envelope["recipients"]["signers"]
                   if s["status"] in ("sent", "delivered")]
        return int(signer["routingOrder"]) == min(pending)

    async def sign(self, env_id: str, email: str) -> None:
        with self._lock:
            if not self.may_sign(env_id, email):
                raise PermissionError(f"{email} may not sign {env_id} now")
            envelope, signer = self.envelopes[env_id], self._signer(env_id, email)
            signer.update(status="completed", signedDateTime=_now())
            done = all(s["status"] == "completed" for s in envelope["recipients"]["signers"])
            if done:
                envelope.update(status="completed", completedDateTime=_now())
                self.files[env_id] = rerender(self.files[env_id], ["DocuSign Envelope ID: " + env_id])
                self.documents[env_id] = {k: rerender(v, ["DocuSign Envelope ID: " + env_id])
                                          for k, v in self.documents[env_id].items()}
        await self._emit("recipient-completed", env_id, signer["recipientId"])
        if done:
            await self._emit("envelope-completed", env_id)

    async def decline(self, env_id: str, email: str, reason: str) -> None:
        with self._lock:
            if not self.may_sign(env_id, email):
                raise PermissionError(f"{email} may not decline {env_id} now")
            envelope, signer = self.envelopes[env_id], self._signer(env_id, email)
            signer.update(status="declined", declinedReason=reason, declinedDateTime=_now())
            envelope.update(status="declined", declinedDateTime=_now())
        await self._emit("recipient-declined", env_id, signer["recipientId"])
        await self._emit("envelope-declined", env_id)

    async def expire(self, env_id: str) -> None:
        """DocuSign voids an envelope past its expiration date and says so in `voidedReason`."""
        with self._lock:
            self.envelopes[env_id].update(status="voided", voidedReason="Envelope has expired.",
                                          voidedDateTime=_now())
        await self._emit("envelope-expired", env_id)

    # ---- Connect ------------------------------------------------------------------------------

    def message(self, event: str, env_id: str, recipient_id: str | None = None) -> bytes:
        data: dict[str, Any] = {"accountId": self.account_id, "userId": self.user_id, "envelopeId": env_id,
                                "envelopeSummary": self._public(self.envelopes[env_id], True)}
        if recipient_id:
            data["recipientId"] = recipient_id
        return json.dumps({"event": event, "apiVersion": "v2.1", "uri": f"/envelopes/{env_id}",
                           "retryCount": 0, "configurationId": 1, "generatedDateTime": _now(),
                           "data": data}).encode()

    def headers(self, body: bytes) -> dict[str, str]:
        return {"content-type": "application/json",
                **{f"X-DocuSign-Signature-{i}": connect_signature(k, body) for i, k in enumerate(self.hmac_keys, 1)}}

    async def _emit(self, event: str, env_id: str, recipient_id: str | None = None) -> None:
        delivery = Delivery(event, self.message(event, env_id, recipient_id))
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
                async with httpx.AsyncClient(timeout=10) as http:
                    resp = await http.post(self.callback_url, content=delivery.body,
                                           headers=self.headers(delivery.body))
                delivery.attempts.append(resp.status_code)
                if resp.status_code == 200:
                    break
                await asyncio.sleep(0.05 * (attempt + 1))
            else:
                raise AssertionError(f"Connect {delivery.event} never acknowledged: {delivery.attempts}")

    def hold(self) -> None:
        self._held = []

    async def flush(self, reverse: bool = False) -> None:
        held, self._held = self._held or [], None
        for delivery in reversed(held) if reverse else held:
            await self._deliver(delivery)

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    @contextmanager
    def running(self) -> Iterator[DocuSignSim]:
        with serve(self.app) as url:
            self.url = url
            yield self

    @property
    def api_base(self) -> str:
        return f"{self.url}/restapi"
