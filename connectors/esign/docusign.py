"""DocuSign eSignature REST v2.1 with plain httpx and pyjwt (no SDK).

Why it is shaped this way:

- Auth is the OAuth JWT bearer grant: an RS256 assertion signed with the integration's private
  key (iss = integration key, sub = the impersonated user, aud = the OAuth host, scope
  `signature impersonation`) is exchanged at `POST /oauth/token` for an access token. The token
  is cached until shortly before it expires; a 401 from the API drops it and the call is made
  once more with a fresh one (DocuSign revokes tokens on consent changes and key rotation).
- A flow is an envelope created `status: "sent"`. Groups map onto `routingOrder` (group index
  + 1; equal routing orders sign in parallel), so DocuSign itself enforces the order. The
  envelope carries the text custom field `sb_request_id`, so a retried `create_flow` finds it
  (`GET /envelopes?custom_field=sb_request_id=<id>`) instead of sending a second envelope. Each
  signer carries `customFields: ["sb:<signer id>"]` — how callbacks and polls map back.
- `embedded=True` (default) sets `clientUserId`, so DocuSign sends no email and SignBridge hosts
  the signing link. DocuSign's recipient-view URL is single-use and dies 5 minutes after it is
  made, but chat links are clicked hours later (and re-posted by reminders), so `open_group`
  never hands one out: it mints a SignBridge link `{public_url}/esign/docusign/sign/{token}`
  (256-bit token, only its SHA-256 stored in `provider_links`, bound to one envelope recipient,
  valid until the request's deadline). Each click asks `recipient_view` for a fresh view and
  redirects to it (`api/esign_links.py`). `embedded=False`: DocuSign emails the signers and
  `remind` resends.
- Polling: DocuSign allows polling an envelope at most once per 15 minutes. `poll` enforces it
  here: polled sooner, it returns no events without calling DocuSign. The workflow treats an
  empty poll as a quiet one and doubles its interval, so with `poll_after` < 15 min the first
  few polls may be no-ops, then the interval exceeds the limit and every poll is real.
- DocuSign re-renders the document (flattened fields, its own signature), so `incremental =
  False`; the evidence is the certificate of completion (stored as a blob) and its hash.
- Positions are `signHereTabs`: a role placed by an anchor text (【甲方签章】) gets an anchor tab
  (`anchorString`, offsets in points from the anchor text's top left to the stamp's), so DocuSign
  finds the text itself; a template's signature field an absolute tab (`pageNumber`,
  `xPosition`/`yPosition` from the page's top left). A signer with no place gets no tab and
  places their signature themselves.
- Several documents go into one envelope (`documentId` 1…n, one tab per document and signer);
  each signed document is downloaded by its id.
- Connect (JSON SIM) webhooks: `X-DocuSign-Signature-1..N` = base64(HMAC-SHA256(key, raw
  body)), one per active key (rotation); any one matching in constant time is enough. The MAC
  covers the whole body, so events act directly (no confirming poll). Connect has no signed
  timestamp: no staleness window (redeliveries of the same event map to the same event id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import httpx
import jwt
import phonenumbers
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import Engine

from connectors.esign import rest
from connectors.esign.base import EMAIL, NothingToSign, ProviderError, WebhookRejected, WebhookReply
from connectors.http import retry_after
from signbridge.core.models import CreateFlowInput, OpenGroupInput, Person, Placement, ProviderEvent, SignerLink
from signbridge.core.settings import Settings
from signbridge.core.untrusted import load_json, same
from store.blobs import BlobStore
from store.repos import provider_links
from store.tables import ProviderLink

PROVIDER = "docusign"
SCOPE = "signature impersonation"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REQUEST_FIELD = "sb_request_id"
SIGNER_TAG = "sb:"
REPLY = WebhookReply(200, b"", "text/plain")
FINAL = ("completed", "declined", "voided")


class DocuSignConfig(BaseSettings):
    """`SIGNBRIDGE_DOCUSIGN_*`. INTEGRATION_KEY, USER_ID, ACCOUNT_ID and PRIVATE_KEY enable the
    provider; HMAC_KEY its Connect webhook."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_DOCUSIGN_", env_file=None, extra="ignore")

    integration_key: str = ""
    user_id: str = ""
    account_id: str = ""
    private_key: SecretStr | None = None  # PEM (RSA) of the integration's key pair
    hmac_key: SecretStr | None = None
    api_base: str = "https://demo.docusign.net/restapi"  # production: https://<site>.docusign.net/restapi
    oauth_base: str = "https://account-d.docusign.com"  # production: https://account.docusign.com
    embedded: bool = True
    # Where DocuSign sends the signer afterwards; empty: SignBridge's `/esign/docusign/return` page.
    return_url: str = ""
    poll_min_interval_seconds: float = 900.0
    token_lifetime_seconds: int = 3600
    # Provider activities per second across all workers (Temporal's task-queue rate limit; 0 = no
    # cap). DocuSign allows 3,000 API calls an hour per account (0.83/s); one activity makes 1-5
    # calls (finish: 5) and every chat-link click 2 more from the API, hence 0.4.
    max_requests_per_second: float = 0.4
    # The account's "Phone Authentication" ID-verification workflow (GET /v2.1/accounts/{id}/
    # identity_verification). Set: every signer with a mobile on record is asked by DocuSign for a
    # code sent to it (SMS or call) before signing — DocuSign's own verification, listed on its
    # certificate. Empty: email (or, embedded, the SignBridge link) only.
    phone_auth_workflow_id: str = ""

    @property
    def enabled(self) -> bool:
        key = self.private_key.get_secret_value() if self.private_key else ""
        return bool(self.integration_key and self.user_id and self.account_id and key)


def phone_authentication(workflow_id: str, mobile: str) -> dict[str, Any]:
    """DocuSign's recipient phone authentication (`identityVerification` with the account's phone
    workflow): the signer's number split into country code and national number, as DocuSign
    wants it (an E.164 string is refused)."""
    number = phonenumbers.parse(mobile, "CN")
    return {"workflowId": workflow_id, "inputOptions": [{
        "name": "phone_number_list", "valueType": "PhoneNumberList",
        "phoneNumberList": [{"countryCode": str(number.country_code), "number": str(number.national_number)}]}]}


def check(resp: httpx.Response, what: str) -> httpx.Response:
    """5xx, 408 and 429 may heal; other 4xx (bad request, consent, wrong state) won't."""
    return rest.checked(resp, f"DocuSign {what}",
                   lambda body: f"{body.get('errorCode') or body.get('error', '')} {body.get('message', '')}".strip(),
                   wait=_wait(resp))


def _wait(resp: httpx.Response) -> float | None:
    """`Retry-After`, else DocuSign's rate-limit `X-RateLimit-Reset` (epoch seconds)."""
    wait = retry_after(resp)
    if wait is None and "X-RateLimit-Reset" in resp.headers:
        try:
            wait = max(1.0, float(resp.headers["X-RateLimit-Reset"]) - time.time())
        except ValueError:
            pass
    return wait


def link_token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_here_tab(placement: Placement) -> dict[str, str]:
    """Where DocuSign puts one signer's signature on one document (points; DocuSign measures from the
    top left): beside its anchor text, found by DocuSign, or at the template field's rectangle."""
    x1, _, _, y2 = placement.box
    tab = {"documentId": str(placement.document + 1), "tabLabel": f"sign:{placement.role}"}
    if placement.anchor and placement.anchor_box:
        ax1, _, _, ay2 = placement.anchor_box
        return {**tab, "anchorString": placement.anchor, "anchorUnits": "pixels",
                "anchorXOffset": str(round(x1 - ax1)), "anchorYOffset": str(round(ay2 - y2)),
                "anchorIgnoreIfNotPresent": "false"}
    height = placement.page_size[1] if placement.page_size else 842.0
    return {**tab, "pageNumber": str(placement.page + 1), "xPosition": str(round(x1)),
            "yPosition": str(round(height - y2))}


def signer_id_of(signer: Mapping[str, Any]) -> str | None:
    for tag in signer.get("customFields") or []:
        if isinstance(tag, str) and tag.startswith(SIGNER_TAG):
            return tag[len(SIGNER_TAG):]
    return None


def recipient_event(flow_id: str, signer: Mapping[str, Any], kind: str,
                    raw: dict[str, Any] | None = None) -> ProviderEvent | None:
    """From the recipient's state, so a Connect delivery and a poll give the same event id."""
    signer_id = signer_id_of(signer)
    if signer_id is None:
        return None
    when = signer.get("signedDateTime") if kind == "signed" else signer.get("declinedDateTime")
    return rest.provider_event(PROVIDER, flow_id, kind, rest.iso_time(when), who=signer_id, signer_id=signer_id,
                          reason=signer.get("declinedReason") if kind == "declined" else None, raw=raw)


def envelope_event(flow_id: str, kind: str, when: Any = None, raw: dict[str, Any] | None = None,
                   reason: str | None = None) -> ProviderEvent:
    return rest.provider_event(PROVIDER, flow_id, kind, rest.iso_time(when), reason=reason, raw=raw)


def voided_kind(reason: Any) -> str:
    """DocuSign reports an expired envelope as voided with an expiry reason."""
    return "expired" if "expire" in str(reason or "").lower() else "cancelled"


def events_of(flow_id: str, envelope: Mapping[str, Any]) -> list[ProviderEvent]:
    """Every event the envelope's current state implies (the polling fallback)."""
    events: list[ProviderEvent] = []
    for signer in (envelope.get("recipients") or {}).get("signers", []):
        kind = {"completed": "signed", "declined": "declined"}.get(str(signer.get("status")))
        event = recipient_event(flow_id, signer, kind) if kind else None
        if event is not None:
            events.append(event)
    status = envelope.get("status")
    if status == "completed":
        events.append(envelope_event(flow_id, "completed", envelope.get("completedDateTime")))
    elif status == "voided":
        reason = envelope.get("voidedReason")
        events.append(envelope_event(flow_id, voided_kind(reason), envelope.get("voidedDateTime"), reason=reason))
    return events


class DocuSignAuth:
    """JWT bearer grant with a cached token; `invalidate()` after a 401."""

    def __init__(self, config: DocuSignConfig, http: httpx.AsyncClient) -> None:
        assert config.private_key is not None
        self.config = config
        self.http = http
        # `.env` files hold one line: a PEM written with literal `\n` escapes is accepted too
        self._key = SecretStr(config.private_key.get_secret_value().replace("\\n", "\n"))
        self._token: str | None = None
        self._expires = 0.0
        self.grants = 0  # tokens fetched (tests check caching and refresh)

    def assertion(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        claims = {"iss": self.config.integration_key, "sub": self.config.user_id,
                  "aud": urlparse(self.config.oauth_base).netloc or self.config.oauth_base,
                  "iat": int(now), "exp": int(now) + self.config.token_lifetime_seconds, "scope": SCOPE}
        return jwt.encode(claims, self._key.get_secret_value(), algorithm="RS256")

    async def token(self) -> str:
        if self._token and time.time() < self._expires - 60:
            return self._token
        resp = await rest.send(self.http, "POST", self.config.oauth_base.rstrip("/") + "/oauth/token",
                             "DocuSign token", data={"grant_type": JWT_GRANT, "assertion": self.assertion()})
        check(resp, "token")  # consent_required / invalid_grant are 400: not fixed by retrying
        body = resp.json()
        self._token, self._expires = str(body["access_token"]), time.time() + float(body.get("expires_in", 3600))
        self.grants += 1
        return self._token

    def invalidate(self) -> None:
        self._token = None


class DocuSignProvider:
    """`ESignProvider` for DocuSign. Flow id = envelope id."""

    name = PROVIDER
    incremental = False  # DocuSign re-renders the document; the certificate of completion is the evidence
    # No organisation signer for manual signing: a signing group lets any member sign with their own
    # signature, and an electronic seal is applied by the account without the signatory — neither
    # is "this person applies this company's seal", so a request with a seal is refused at prepare.
    org_seal_note = "DocuSign 的签署组与电子印章都不能由代签人加盖指定公司的印章（signing groups sign as persons; " \
        "electronic seals apply without the signatory）"
    # every recipient has an email, embedded or not
    signer_contacts: frozenset[str] = EMAIL

    def __init__(self, config: DocuSignConfig, blobs: BlobStore, http: httpx.AsyncClient, engine: Engine,
                 public_url: str) -> None:
        self.config = config
        self.blobs = blobs
        self.http = http
        self.engine = engine  # embedded signers' chat links (`provider_links`)
        self.public_url = public_url.rstrip("/")
        self.auth = DocuSignAuth(config, http)
        self.base = f"{config.api_base.rstrip('/')}/v2.1/accounts/{config.account_id}"
        self._last_poll: dict[str, float] = {}

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {await self.auth.token()}"}
            resp = await rest.send(self.http, method, self.base + path, f"DocuSign {what}", headers=headers, **kwargs)
            if resp.status_code == 401 and attempt == 1:
                self.auth.invalidate()  # expired or revoked: one more try with a fresh token
                continue
            return check(resp, what)
        raise AssertionError("unreachable")

    async def _envelope(self, flow_id: str) -> dict[str, Any]:
        resp = await self._call("GET", f"/envelopes/{flow_id}", "get envelope", params={"include": "recipients"})
        return dict(resp.json())

    async def _find(self, request_id: str) -> str | None:
        since = (datetime.now(UTC) - timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
        found = (await self._call("GET", "/envelopes", "find envelope", params={
            "from_date": since, "custom_field": f"{REQUEST_FIELD}={request_id}"})).json()
        envelopes = found.get("envelopes") or []
        return str(envelopes[0]["envelopeId"]) if envelopes else None

    async def create_flow(self, req: CreateFlowInput) -> str:
        existing = await self._find(req.request_id)
        if existing:
            return existing
        signers: list[dict[str, Any]] = []
        for group, person in rest.each_signer_once(req.groups):
            if not person.email:
                raise ProviderError(f"DocuSign needs an email for {person.name}", retryable=False)
            signer: dict[str, Any] = {
                "email": person.email, "name": person.name, "recipientId": str(len(signers) + 1),
                "routingOrder": str(group + 1), "customFields": [SIGNER_TAG + person.id]}
            if self.config.embedded:
                signer["clientUserId"] = person.id
            tabs = [sign_here_tab(p) for p in req.placements if p.signer_id == person.id and p.kind == "sign"]
            if tabs:
                signer["tabs"] = {"signHereTabs": tabs}
            if self.config.phone_auth_workflow_id and person.mobile:
                signer["identityVerification"] = phone_authentication(self.config.phone_auth_workflow_id,
                                                                      person.mobile)
            signers.append(signer)
        days = max(1, (req.expires_at - datetime.now(UTC)).days)
        body = {
            "emailSubject": req.title[:100], "status": "sent",
            "documents": [{"documentBase64": base64.b64encode(self.blobs.get(d.blob_key)).decode(),
                           "name": d.name, "fileExtension": "pdf", "documentId": str(i + 1)}
                          for i, d in enumerate(req.all_documents)],
            "recipients": {"signers": signers},
            "customFields": {"textCustomFields": [{"name": REQUEST_FIELD, "value": req.request_id,
                                                   "show": "false", "required": "false"}]},
            "notification": {"useAccountDefaults": "false",
                             "expirations": {"expireEnabled": "true", "expireAfter": str(days)}},
        }
        created = (await self._call("POST", "/envelopes", "create envelope", json=body)).json()
        return str(created["envelopeId"])

    async def open_group(self, req: OpenGroupInput) -> list[SignerLink]:
        """DocuSign opens routing orders itself. Embedded signers get a SignBridge link (a view URL
        would be dead by the time anyone clicks it); emailed ones get DocuSign's email."""
        envelope = await self._envelope(req.flow_id)
        by_signer = {signer_id_of(s): s for s in (envelope.get("recipients") or {}).get("signers", [])}

        async def link(person: Person, signer: Mapping[str, Any]) -> str | None:
            if not signer.get("clientUserId"):
                return None  # DocuSign emails them
            token = self._mint_link(req.flow_id, person.id, req.expires_at)
            return f"{self.public_url}/esign/docusign/sign/{token}"

        return await rest.pending_links(req.signers, by_signer, f"DocuSign envelope {req.flow_id}",
                                   lambda s: s.get("status") in ("completed", "declined"), link)

    def _mint_link(self, flow_id: str, signer_id: str, expires_at: datetime) -> str:
        """A new token for this envelope recipient; it replaces the one an earlier attempt of the
        activity minted (that attempt's result never reached the workflow, so it was never posted)."""
        token = secrets.token_urlsafe(32)  # 256 bits
        row = ProviderLink(token_hash=link_token_hash(token), provider=PROVIDER, flow_id=flow_id,
                           signer_id=signer_id, expires_at=expires_at)
        if not provider_links.replace(self.engine, row):  # a concurrent attempt for the same signer
            raise ProviderError(f"DocuSign link for {signer_id} minted concurrently", retryable=True)
        return token

    async def recipient_view(self, flow_id: str, signer_id: str, return_url: str) -> str:
        """A fresh recipient view (single use, 5 minutes) for an embedded signer, made when they
        click SignBridge's link. `NothingToSign` when they signed or declined or the envelope is
        closed; the view request carries exactly what the envelope holds for the recipient.
        `SIGNBRIDGE_DOCUSIGN_RETURN_URL`, when set, replaces `return_url`."""
        envelope = await self._envelope(flow_id)
        signer = next((s for s in (envelope.get("recipients") or {}).get("signers", [])
                       if signer_id_of(s) == signer_id), None)
        if signer is None:
            raise ProviderError(f"signer {signer_id} is not in DocuSign envelope {flow_id}", retryable=False)
        if signer.get("status") == "completed":
            raise NothingToSign("signed")
        if signer.get("status") == "declined":
            raise NothingToSign("declined")
        if envelope.get("status") not in ("sent", "delivered"):
            raise NothingToSign("closed", f"envelope {flow_id} is {envelope.get('status')}")
        if not signer.get("clientUserId"):
            raise ProviderError(f"signer {signer_id} signs through DocuSign's email, not embedded", retryable=False)
        view = (await self._call("POST", f"/envelopes/{flow_id}/views/recipient", "recipient view", json={
            "returnUrl": self.config.return_url or return_url, "authenticationMethod": "none",
            "email": signer["email"], "userName": signer["name"], "clientUserId": signer["clientUserId"],
            "recipientId": signer["recipientId"]})).json()
        return str(view["url"])

    async def poll(self, flow_id: str) -> list[ProviderEvent]:
        """At most once per `poll_min_interval_seconds` per envelope (DocuSign's 15-minute rule)."""
        now = time.monotonic()
        last = self._last_poll.get(flow_id)
        if last is not None and now - last < self.config.poll_min_interval_seconds:
            return []
        self._last_poll[flow_id] = now
        return events_of(flow_id, await self._envelope(flow_id))

    async def _completed(self, flow_id: str) -> dict[str, Any]:
        envelope = await self._call("GET", f"/envelopes/{flow_id}", "get envelope")
        data = dict(envelope.json())
        if data.get("status") != "completed":
            raise ProviderError(f"DocuSign envelope {flow_id} is {data.get('status')}, not completed", retryable=True)
        return data

    async def _pdf(self, flow_id: str, which: str) -> bytes:
        resp = await self._call("GET", f"/envelopes/{flow_id}/documents/{which}", f"download {which}")
        return rest.pdf_of(resp, f"DocuSign {which} of {flow_id}")

    async def download_signed(self, flow_id: str) -> bytes:
        await self._completed(flow_id)
        return await self._pdf(flow_id, "combined")

    async def download_documents(self, flow_id: str) -> list[bytes]:
        """Every signed document of the envelope, by its `documentId`, in the request's order."""
        await self._completed(flow_id)
        listed = (await self._call("GET", f"/envelopes/{flow_id}/documents", "list documents")).json()
        ids = sorted((str(d["documentId"]) for d in listed.get("envelopeDocuments") or []
                      if str(d.get("documentId", "")).isdigit()), key=int)  # not the "certificate"
        return [await self._pdf(flow_id, i) for i in ids]

    async def evidence(self, flow_id: str) -> dict[str, Any]:
        envelope = await self._completed(flow_id)
        certificate = await self._pdf(flow_id, "certificate")
        signed = await self._pdf(flow_id, "combined")
        return {"kind": "docusign_certificate_of_completion", "envelope_id": flow_id,
                "completed_at": envelope.get("completedDateTime"),
                "certificate_sha256": hashlib.sha256(certificate).hexdigest(),
                "certificate_blob_key": self.blobs.put(certificate),
                "signed_sha256": hashlib.sha256(signed).hexdigest()}

    async def revoke(self, flow_id: str, reason: str) -> None:
        """Voiding kills the links; finished or voided envelopes are left alone."""
        envelope = await self._call("GET", f"/envelopes/{flow_id}", "get envelope")
        if envelope.json().get("status") in FINAL:
            return
        await self._call("PUT", f"/envelopes/{flow_id}", "void",
                         json={"status": "voided", "voidedReason": (reason or "Cancelled")[:200]})

    async def remind(self, flow_id: str, signer_ids: list[str]) -> None:
        """Resend DocuSign's email to pending, emailed (non-embedded) signers."""
        envelope = await self._envelope(flow_id)
        pending = [s for s in (envelope.get("recipients") or {}).get("signers", [])
                   if s.get("status") in ("sent", "delivered") and not s.get("clientUserId")
                   and (not signer_ids or signer_id_of(s) in signer_ids)]
        if pending:
            await self._call("PUT", f"/envelopes/{flow_id}/recipients", "resend",
                             params={"resend_envelope": "true"},
                             json={"signers": [{"recipientId": s["recipientId"], "email": s["email"],
                                                "name": s["name"]} for s in pending]})


# ---- Connect webhook ------------------------------------------------------------------------


def connect_signature(key: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


RECIPIENT_EVENTS = {"recipient-completed": "signed", "recipient-declined": "declined"}


class DocuSignWebhook:
    name = PROVIDER

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def _verify(self, headers: Mapping[str, str], body: bytes) -> None:
        expected = connect_signature(self._key.get_secret_value(), body)
        given = [v for k, v in headers.items() if k.lower().startswith("x-docusign-signature-")]
        if not given:
            raise WebhookRejected("missing X-DocuSign-Signature-N")
        matched = False
        for value in given:  # no early exit: every header is compared
            matched |= same(value.strip(), expected)
        if not matched:
            raise WebhookRejected("no X-DocuSign-Signature-N matches")

    def parse(self, headers: Mapping[str, str], query: Mapping[str, str],
              body: bytes) -> tuple[list[ProviderEvent], WebhookReply]:
        self._verify(headers, body)
        try:
            data = load_json(body)
        except ValueError as e:
            raise WebhookRejected("the Connect message is not JSON") from e
        if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
            return [], REPLY
        event, payload = str(data.get("event", "")), data["data"]
        flow_id = payload.get("envelopeId")
        summary = payload.get("envelopeSummary") or {}
        if not flow_id:
            return [], REPLY
        flow_id = str(flow_id)
        if event in RECIPIENT_EVENTS:
            signers = (summary.get("recipients") or {}).get("signers", [])
            signer = next((s for s in signers if str(s.get("recipientId")) == str(payload.get("recipientId"))), None)
            found = recipient_event(flow_id, signer, RECIPIENT_EVENTS[event], raw=data) if signer else None
            return ([found] if found else []), REPLY  # unmapped: the polling fallback catches it
        if event == "envelope-completed":
            return [envelope_event(flow_id, "completed", summary.get("completedDateTime"), raw=data)], REPLY
        if event in ("envelope-voided", "envelope-expired"):
            reason = summary.get("voidedReason")
            kind = "expired" if event == "envelope-expired" else voided_kind(reason)
            return [envelope_event(flow_id, kind, summary.get("voidedDateTime"), raw=data, reason=reason)], REPLY
        return [], REPLY


def build(settings: Settings, engine: Any, blobs: BlobStore, http: httpx.AsyncClient) -> DocuSignProvider | None:
    config = DocuSignConfig()
    return DocuSignProvider(config, blobs, http, engine, settings.public_url) if config.enabled else None


def webhook(settings: Settings) -> DocuSignWebhook | None:
    key = DocuSignConfig().hmac_key
    return DocuSignWebhook(key) if rest.is_set(key) else None
