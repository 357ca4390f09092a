"""DocuSeal (self-hosted or docuseal.com) over its REST API, with plain httpx (no SDK).

Why it is shaped this way:

- Auth is the `X-Auth-Token` header. A flow is a DocuSeal *submission* of a one-off *template*
  made from our PDF (`POST /templates/pdf`, one signature field per signer, one role each).
  The template carries `external_id = request_id`, so a retried `create_flow` finds the
  template, then its submission, instead of making a second one.
- Ordering: a submission is either `order: "random"` (everyone at once) or `"preserved"` (one
  submitter after another, in list order); DocuSeal has no parallel groups. A single group is
  sent as `random`; several groups are flattened to one `preserved` sequence, group by group,
  so a parallel group signs one after another at DocuSeal.
- Each submitter carries `external_id` = the SignBridge signer id; callbacks and polls map back
  through it. Every submitter gets an embedded link (`embed_src`) that SignBridge sends in the
  chat; `SIGNBRIDGE_DOCUSEAL_SEND_EMAIL=true` also lets DocuSeal email them.
- DocuSeal writes the filled-in fields into a new PDF and signs that with its own certificate,
  so the result does not start with our original bytes: `incremental = False`; the evidence is
  the submission id, its audit log URL and the hash of the file it served.
- Positions: each submitter's signature field (`areas`, fractions of the page from its top
  left) is the template field's rectangle or the spot SignBridge found beside the anchor text;
  with no place, an automatic slot on the last page. One document per request: several are
  refused at prepare.
- Webhooks (DocuSeal's documented scheme): `X-Docuseal-Signature: "<ts>.<hex HMAC-SHA256(secret,
  "<ts>.<raw body>")>"`, rejected more than 300 s off.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC
from typing import Any

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.esign import rest
from connectors.esign.base import MOBILE_OR_EMAIL, ProviderError, WebhookRejected, WebhookReply
from signbridge.core.models import CreateFlowInput, OpenGroupInput, Person, Placement, ProviderEvent, SignerLink
from signbridge.core.settings import Settings
from signbridge.core.untrusted import is_stale, load_json
from store.blobs import BlobStore

PROVIDER = "docuseal"
SIGNATURE_HEADER = "x-docuseal-signature"
REPLY = WebhookReply(200, b'{"ok":true}', "application/json")
FORM_EVENTS = {"form.completed": "signed", "form.declined": "declined"}
SUBMISSION_EVENTS = {"submission.completed": "completed", "submission.expired": "expired",
                     "submission.archived": "cancelled"}


class DocuSealConfig(BaseSettings):
    """`SIGNBRIDGE_DOCUSEAL_*`: `API_KEY` enables the provider, `WEBHOOK_SECRET` its webhook."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_DOCUSEAL_", env_file=None, extra="ignore")

    api_key: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    api_base: str = "https://api.docuseal.com"  # self-hosted: https://docuseal.example.com/api
    app_url: str = ""  # where signing pages live (`/s/<slug>`); empty: api_base without `/api`
    send_email: bool = False
    webhook_tolerance_seconds: int = 300
    # Provider activities per second across all workers (0 = no cap): self-hosted DocuSeal has no quota;
    # set one to protect a small instance.
    max_requests_per_second: float = 0.0


def check(resp: httpx.Response, what: str) -> httpx.Response:
    """5xx, 408 and 429 may heal; other 4xx (bad token, validation) won't by retrying."""
    return rest.checked(resp, f"DocuSeal {what}", lambda body: body.get("error", ""))


def submitter_event(flow_id: str, submitter: Mapping[str, Any], kind: str,
                    raw: dict[str, Any] | None = None) -> ProviderEvent:
    when = submitter.get("completed_at") if kind == "signed" else submitter.get("declined_at")
    return rest.provider_event(PROVIDER, flow_id, kind, rest.iso_time(when), who=str(submitter.get("id")),
                          signer_id=submitter.get("external_id"),
                          reason=submitter.get("decline_reason") if kind == "declined" else None, raw=raw)


def submission_event(flow_id: str, kind: str, when: Any = None, raw: dict[str, Any] | None = None) -> ProviderEvent:
    return rest.provider_event(PROVIDER, flow_id, kind, rest.iso_time(when), raw=raw)


def area(placement: Placement | None, last_page: int, index: int) -> dict[str, float | int]:
    """Where a submitter's signature field sits, as DocuSeal measures it (fractions of the page from
    its top left, 1-based page): the template field's rectangle or the spot beside the anchor text;
    with no place, an automatic slot on the last page (two per row)."""
    if placement is None:
        return {"page": last_page, "x": 0.1 + 0.45 * (index % 2), "y": 0.7 - 0.08 * ((index // 2) % 7),
                "w": 0.35, "h": 0.06}
    width, height = placement.page_size or (595.0, 842.0)
    x1, y1, x2, y2 = placement.box
    return {"page": placement.page + 1, "x": round(x1 / width, 4), "y": round((height - y2) / height, 4),
            "w": round((x2 - x1) / width, 4), "h": round((y2 - y1) / height, 4)}


class DocuSealProvider:
    """`ESignProvider` for DocuSeal. Flow id = submission id."""

    name = PROVIDER
    incremental = False  # DocuSeal renders the fields into a new PDF and signs that
    # DocuSeal's `stamp` field draws the account's logo, not the company's seal: refused at prepare.
    org_seal_note = "DocuSeal 的 stamp 字段只能生成账户徽标图章，不是公司印章（DocuSeal's stamp field draws the " \
        "account's logo, not the company's seal）"
    # a submitter has an email or a phone
    signer_contacts: frozenset[str] = MOBILE_OR_EMAIL

    def __init__(self, config: DocuSealConfig, blobs: BlobStore, http: httpx.AsyncClient) -> None:
        assert config.api_key is not None
        self.config = config
        self.blobs = blobs
        self.http = http
        self.base = config.api_base.rstrip("/")
        self._headers = {"X-Auth-Token": config.api_key.get_secret_value()}

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        return check(await rest.send(self.http, method, self.base + path, f"DocuSeal {what}", headers=self._headers,
                                   **kwargs), what)

    async def _submission(self, flow_id: str) -> dict[str, Any]:
        return dict((await self._call("GET", f"/submissions/{flow_id}", "get submission")).json())

    async def _find(self, request_id: str) -> tuple[int | None, str | None]:
        """(template id, submission id) already made for this request, if any."""
        templates = (await self._call("GET", "/templates", "find template",
                                      params={"external_id": request_id})).json().get("data", [])
        if not templates:
            return None, None
        template_id = int(templates[0]["id"])
        subs = (await self._call("GET", "/submissions", "find submission",
                                 params={"template_id": template_id})).json().get("data", [])
        return template_id, (str(subs[0]["id"]) if subs else None)

    async def create_flow(self, req: CreateFlowInput) -> str:
        template_id, existing = await self._find(req.request_id)
        if existing:
            return existing
        people = [p for _, p in rest.each_signer_once(req.groups)]
        missing = [p.name for p in people if not (p.email or p.mobile)]
        if missing:
            raise ProviderError(f"DocuSeal needs an email or phone for {', '.join(missing)}", retryable=False)
        roles = [f"Signer {i + 1}" for i in range(len(people))]
        if template_id is None:
            page = max(req.document.pages, 1)
            fields = [{"name": f"Signature {i + 1}", "role": role, "type": "signature", "required": True,
                       "areas": [area(rest.placement_of(req.placements, person.id), page, i)]}
                      for i, (role, person) in enumerate(zip(roles, people, strict=True))]
            pdf = base64.b64encode(self.blobs.get(req.document.blob_key)).decode()
            template = (await self._call("POST", "/templates/pdf", "create template", json={
                "name": req.title, "external_id": req.request_id,
                "documents": [{"name": req.document.name, "file": pdf, "fields": fields}],
            })).json()
            template_id = int(template["id"])
        submitters = [{"role": role, "name": p.name, "email": p.email, "phone": p.mobile, "external_id": p.id}
                      for role, p in zip(roles, people, strict=True)]
        created = (await self._call("POST", "/submissions", "create submission", json={
            "template_id": template_id, "send_email": self.config.send_email,
            "order": "preserved" if len(req.groups) > 1 else "random",
            "expire_at": req.expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "submitters": [{k: v for k, v in s.items() if v} for s in submitters],
        })).json()
        return str(created[0]["submission_id"])

    async def open_group(self, req: OpenGroupInput) -> list[SignerLink]:
        """DocuSeal opens turns itself; this hands out each pending submitter's embedded link."""
        submission = await self._submission(req.flow_id)
        by_signer = {s.get("external_id"): s for s in submission.get("submitters", [])}
        return await rest.pending_links(req.signers, by_signer, f"DocuSeal submission {req.flow_id}",
                                   lambda s: s.get("status") in ("completed", "declined"), self._link)

    async def _link(self, person: Person, submitter: Mapping[str, Any]) -> str | None:
        """`embed_src` when DocuSeal returns it, else the signing page of the submitter's slug."""
        if submitter.get("embed_src"):
            return str(submitter["embed_src"])
        if not submitter.get("slug"):
            return None
        app = self.config.app_url.rstrip("/") or self.base.removesuffix("/api")
        return f"{app}/s/{submitter['slug']}"

    async def poll(self, flow_id: str) -> list[ProviderEvent]:
        submission = await self._submission(flow_id)
        events = [submitter_event(flow_id, s, {"completed": "signed", "declined": "declined"}[s["status"]])
                  for s in submission.get("submitters", []) if s.get("status") in ("completed", "declined")]
        status = submission.get("status")
        if status == "completed":
            events.append(submission_event(flow_id, "completed", submission.get("completed_at")))
        elif status == "expired":
            events.append(submission_event(flow_id, "expired", submission.get("expire_at")))
        elif submission.get("archived_at") and status != "declined":
            events.append(submission_event(flow_id, "cancelled", submission.get("archived_at")))
        return events

    async def download_signed(self, flow_id: str) -> bytes:
        submission = await self._submission(flow_id)
        if submission.get("status") != "completed":
            raise ProviderError(f"DocuSeal submission {flow_id} is {submission.get('status')}, not completed",
                         retryable=True)
        docs = (await self._call("GET", f"/submissions/{flow_id}/documents", "documents")).json()
        urls = [d["url"] for d in docs.get("documents", []) if d.get("url")]
        if not urls:
            raise ProviderError(f"DocuSeal submission {flow_id} has no documents yet", retryable=True)
        # A signed URL: no token sent along.
        resp = check(await rest.send(self.http, "GET", urls[0], "DocuSeal download"), "download")
        return rest.pdf_of(resp, f"DocuSeal download of {flow_id}")

    async def evidence(self, flow_id: str) -> dict[str, Any]:
        submission = await self._submission(flow_id)
        signed = await self.download_signed(flow_id)
        return {"kind": "docuseal_audit_log", "submission_id": flow_id,
                "audit_log_url": submission.get("audit_log_url"),
                "signed_sha256": hashlib.sha256(signed).hexdigest(),
                "submitters": [{"signer": s.get("external_id"), "completed_at": s.get("completed_at")}
                               for s in submission.get("submitters", [])]}

    async def revoke(self, flow_id: str, reason: str) -> None:
        """Archiving kills the links. Finished or archived submissions are left alone."""
        submission = await self._submission(flow_id)
        if submission.get("archived_at") or submission.get("status") in ("completed", "declined", "expired"):
            return
        await self._call("DELETE", f"/submissions/{flow_id}", "archive")

    async def remind(self, flow_id: str, signer_ids: list[str]) -> None:
        """Re-send DocuSeal's email to pending submitters (only when DocuSeal emails at all)."""
        if not self.config.send_email:
            return
        submission = await self._submission(flow_id)
        for s in submission.get("submitters", []):
            if s.get("status") not in ("completed", "declined") and (not signer_ids or s.get("external_id")
                                                                      in signer_ids):
                await self._call("PUT", f"/submitters/{s['id']}", "remind", json={"send_email": True})


# ---- webhook ------------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{timestamp}.{mac}"


class DocuSealWebhook:
    name = PROVIDER

    def __init__(self, secret: SecretStr, tolerance: int = 300) -> None:
        self._secret = secret
        self.tolerance = tolerance

    def parse(self, headers: Mapping[str, str], query: Mapping[str, str],
              body: bytes) -> tuple[list[ProviderEvent], WebhookReply]:
        given = headers.get(SIGNATURE_HEADER) or headers.get("X-Docuseal-Signature") or ""
        timestamp, _, _mac = given.partition(".")
        if not timestamp.isdigit():
            raise WebhookRejected("missing or malformed X-Docuseal-Signature")
        expected = signature(self._secret.get_secret_value(), timestamp, body)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise WebhookRejected("bad X-Docuseal-Signature")
        if is_stale(timestamp, self.tolerance):
            raise WebhookRejected("stale X-Docuseal-Signature timestamp")
        try:
            data = load_json(body)
        except ValueError as e:
            raise WebhookRejected("the DocuSeal webhook is not JSON") from e
        event_type = str(data.get("event_type", "")) if isinstance(data, dict) else ""
        payload = data.get("data") if isinstance(data, dict) else None
        if not isinstance(payload, dict):
            return [], REPLY
        if event_type in FORM_EVENTS:
            flow_id = payload.get("submission_id") or (payload.get("submission") or {}).get("id")
            if flow_id is None:
                return [], REPLY
            return [submitter_event(str(flow_id), payload, FORM_EVENTS[event_type], raw=data)], REPLY
        if event_type in SUBMISSION_EVENTS and payload.get("id") is not None:
            kind = SUBMISSION_EVENTS[event_type]
            when = payload.get("completed_at") or payload.get("archived_at") or data.get("timestamp")
            return [submission_event(str(payload["id"]), kind, when, raw=data)], REPLY
        return [], REPLY


def build(settings: Settings, engine: Any, blobs: BlobStore, http: httpx.AsyncClient) -> DocuSealProvider | None:
    config = DocuSealConfig()
    return DocuSealProvider(config, blobs, http) if rest.is_set(config.api_key) else None


def webhook(settings: Settings) -> DocuSealWebhook | None:
    config = DocuSealConfig()
    secret = config.webhook_secret
    return DocuSealWebhook(secret, config.webhook_tolerance_seconds) if rest.is_set(secret) else None
