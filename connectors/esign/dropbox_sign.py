"""Dropbox Sign (formerly HelloSign) over its REST API v3, with plain httpx (no SDK).

Why it is shaped this way:

- Auth is HTTP basic with the API key as the user name; the same key signs callbacks
  (`event_hash = hex HMAC-SHA256(api_key, event_time + event_type)`).
- Ordering: Dropbox Sign knows only "everyone at once" (no `order`) or a strict sequence (a
  distinct `order` per signer); it has no parallel groups. A single group is sent without
  `order` (truly parallel); several groups are flattened to one sequence, group by group, so a
  parallel group signs one after another at the provider — the strictest order that still
  respects SignBridge's groups.
- Each SignBridge signer id is kept in the request's `metadata` (`sb_signers`: email → id), so
  a callback or a poll maps a signature back to the person SignBridge knows; `sb_request` holds
  the request id, which is how a retried `create_flow` finds the flow it already made.
- Embedded signing (a sign URL for the chat) needs an API app (`client_id`); without one the
  request is sent by email and `open_group` returns `SignerLink(url=None)`.
- The signed file is re-rendered by Dropbox Sign (flattened, audit trail appended), so it does
  not start with the original bytes: `incremental = False`, and the evidence is the request id
  plus the hash of the file it served. Download only once `signature_request_downloadable`
  fired; before that the files endpoint answers 409, which is retryable here.
- Positions: `form_fields_per_document` with one `signature` field per placed signer, at the
  template field's rectangle or beside the anchor text as SignBridge found it (points from the
  page's top left; the coordinate convention is unconfirmed against a live account). One
  document per request: several are refused at prepare.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.esign import rest
from connectors.esign.base import EMAIL, ProviderError, WebhookRejected, WebhookReply
from signbridge.core.models import CreateFlowInput, OpenGroupInput, Person, ProviderEvent, SignerLink
from signbridge.core.settings import Settings
from signbridge.core.untrusted import load_json
from store.blobs import BlobStore

PROVIDER = "dropbox_sign"
REPLY = WebhookReply(200, b"Hello API Event Received", "text/plain")
META_REQUEST = "sb_request"
META_SIGNERS = "sb_signers"
METADATA_VALUE_MAX = 500  # Dropbox Sign's limit per metadata value
FLOW_EVENTS = {"signature_request_downloadable": "completed", "signature_request_canceled": "cancelled",
               "signature_request_expired": "expired"}
SIGNER_EVENTS = {"signature_request_signed": "signed", "signature_request_declined": "declined"}


class DropboxSignConfig(BaseSettings):
    """`SIGNBRIDGE_DROPBOX_SIGN_*`; the provider is enabled once `API_KEY` is set."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_DROPBOX_SIGN_", env_file=None, extra="ignore")

    api_key: SecretStr | None = None
    api_base: str = "https://api.hellosign.com/v3"
    client_id: str = ""  # API app for embedded signing; empty: Dropbox Sign emails the signers
    test_mode: bool = False
    list_pages: int = 5  # how many pages of recent requests `create_flow` searches for its own
    # Provider activities per second across all workers (0 = no cap): there is no single quota to assume for
    # Dropbox Sign; set it to your plan's API rate limit.
    max_requests_per_second: float = 0.0


def check(resp: httpx.Response, what: str) -> httpx.Response:
    """5xx, 429 and 409 (files not ready) may heal; other 4xx are refusals retrying won't fix."""
    return rest.checked(resp, f"Dropbox Sign {what}", lambda body: (body.get("error") or {}).get("error_msg", ""),
                   also_retry=(409,))


def signer_map(request: Mapping[str, Any]) -> dict[str, str]:
    """email (lower case) → SignBridge signer id, from the request's metadata."""
    raw = (request.get("metadata") or {}).get(META_SIGNERS) or "{}"
    try:
        mapping = json.loads(raw)
    except ValueError:
        return {}
    return {str(k).lower(): str(v) for k, v in mapping.items()} if isinstance(mapping, dict) else {}


def _signer_id(request: Mapping[str, Any], signature: Mapping[str, Any]) -> str | None:
    email = str(signature.get("signer_email_address") or "").lower()
    return signer_map(request).get(email)


def signer_event(request: Mapping[str, Any], signature: Mapping[str, Any], kind: str,
                 raw: dict[str, Any] | None = None) -> ProviderEvent:
    """Built from state (not from the delivery), so a redelivery and a poll give the same id."""
    when = signature.get("signed_at") if kind == "signed" else signature.get("last_viewed_at")
    return rest.provider_event(PROVIDER, str(request["signature_request_id"]), kind, rest.epoch_time(when),
                          who=str(signature.get("signature_id")), signer_id=_signer_id(request, signature),
                          reason=signature.get("decline_reason") if kind == "declined" else None, raw=raw)


def flow_event(request: Mapping[str, Any], kind: str, when: Any = None,
               raw: dict[str, Any] | None = None) -> ProviderEvent:
    return rest.provider_event(PROVIDER, str(request["signature_request_id"]), kind, rest.epoch_time(when), raw=raw)


def form_fields(req: CreateFlowInput, signers: list[Person]) -> list[dict[str, Any]]:
    """One signature field per placed signer (`signer` = their index in `signers[]`), in points
    from the page's top left: the template field's rectangle, or the spot SignBridge found beside
    the anchor text (the document carries no Dropbox Sign text tags). None placed: none sent, and
    Dropbox Sign lets each signer place their signature."""
    fields = []
    for index, person in enumerate(signers):
        placement = rest.placement_of(req.placements, person.id)
        if placement is None:
            continue
        x1, y1, x2, y2 = placement.box
        height = placement.page_size[1] if placement.page_size else 842.0
        fields.append({"api_id": f"sign_{index}", "name": f"sign:{placement.role}", "type": "signature",
                       "x": round(x1), "y": round(height - y2), "width": round(x2 - x1), "height": round(y2 - y1),
                       "required": True, "signer": index, "page": placement.page + 1})
    return fields


def order_signers(groups: list[list[Person]]) -> list[tuple[Person, int | None]]:
    """Each person once, at their first place; `order` only when there is more than one group."""
    serial = len(groups) > 1
    return [(p, i if serial else None) for i, (_, p) in enumerate(rest.each_signer_once(groups))]


class DropboxSignProvider:
    """`ESignProvider` for Dropbox Sign. Flow id = `signature_request_id`."""

    name = PROVIDER
    incremental = False  # Dropbox Sign re-renders the document and appends its audit trail
    # Dropbox Sign has no company seal (grouped signers sign as persons): refused at prepare.
    org_seal_note = "Dropbox Sign 没有企业印章（Dropbox Sign has no company seal; grouped signers sign as persons）"
    # signers are email addresses
    signer_contacts: frozenset[str] = EMAIL

    def __init__(self, config: DropboxSignConfig, blobs: BlobStore, http: httpx.AsyncClient) -> None:
        assert config.api_key is not None
        self.config, self.blobs, self.http = config, blobs, http
        self.base = config.api_base.rstrip("/")
        self._auth = httpx.BasicAuth(config.api_key.get_secret_value(), "")

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        return check(await rest.send(self.http, method, self.base + path, f"Dropbox Sign {what}", auth=self._auth,
                                   **kwargs), what)

    async def _get(self, flow_id: str) -> dict[str, Any]:
        resp = await self._call("GET", f"/signature_request/{flow_id}", "get request")
        return dict(resp.json()["signature_request"])

    async def _find(self, request_id: str) -> str | None:
        for page in range(1, self.config.list_pages + 1):
            resp = await self._call("GET", "/signature_request/list", "list requests",
                                    params={"page": page, "page_size": 100})
            data = resp.json()
            for item in data.get("signature_requests", []):
                if (item.get("metadata") or {}).get(META_REQUEST) == request_id:
                    return str(item["signature_request_id"])
            if page >= int(data.get("list_info", {}).get("num_pages", 1)):
                break
        return None

    async def create_flow(self, req: CreateFlowInput) -> str:
        existing = await self._find(req.request_id)
        if existing:
            return existing
        ordered = order_signers(req.groups)
        missing = [p.name for p, _ in ordered if not p.email]
        if missing:
            raise ProviderError(f"Dropbox Sign needs an email address for {', '.join(missing)}", retryable=False)
        emails = {str(p.email).lower(): p.id for p, _ in ordered}
        if len(emails) != len(ordered):
            raise ProviderError("Dropbox Sign needs a distinct email address for each signer", retryable=False)
        mapping = json.dumps(emails, separators=(",", ":"), ensure_ascii=False)
        if len(mapping) > METADATA_VALUE_MAX:
            raise ProviderError("too many signers to keep their ids in Dropbox Sign metadata", retryable=False)
        form: dict[str, str] = {
            "title": req.title[:255], "subject": req.title[:255], "test_mode": "1" if self.config.test_mode else "0",
            f"metadata[{META_REQUEST}]": req.request_id, f"metadata[{META_SIGNERS}]": mapping,
            "expires_at": str(int(req.expires_at.timestamp())),
        }
        for i, (person, order) in enumerate(ordered):
            form[f"signers[{i}][email_address]"] = str(person.email)
            form[f"signers[{i}][name]"] = person.name
            if order is not None:
                form[f"signers[{i}][order]"] = str(order)
        fields = form_fields(req, [p for p, _ in ordered])
        if fields:
            form["form_fields_per_document"] = json.dumps([fields], separators=(",", ":"), ensure_ascii=False)
        path = "/signature_request/send"
        if self.config.client_id:
            form["client_id"] = self.config.client_id
            path = "/signature_request/create_embedded"
        files = {"file[0]": (req.document.name, self.blobs.get(req.document.blob_key), "application/pdf")}
        resp = await self._call("POST", path, "create request", data=form, files=files)
        return str(resp.json()["signature_request"]["signature_request_id"])

    async def open_group(self, req: OpenGroupInput) -> list[SignerLink]:
        """Dropbox Sign opens turns itself; this fetches the embedded sign URLs (if an app is set)."""
        request = await self._get(req.flow_id)
        by_email = {str(s.get("signer_email_address", "")).lower(): s for s in request.get("signatures", [])}
        by_signer = {signer: by_email[email] for email, signer in signer_map(request).items() if email in by_email}

        async def link(person: Person, signature: Mapping[str, Any]) -> str | None:
            if not self.config.client_id:
                return None
            resp = await self._call("GET", f"/embedded/sign_url/{signature['signature_id']}", "sign url")
            return str(resp.json()["embedded"]["sign_url"])

        return await rest.pending_links(req.signers, by_signer, f"Dropbox Sign request {req.flow_id}",
                                   lambda s: s.get("status_code") in ("signed", "declined"), link)

    async def poll(self, flow_id: str) -> list[ProviderEvent]:
        request = await self._get(flow_id)
        events: list[ProviderEvent] = []
        for signature in request.get("signatures", []):
            status = signature.get("status_code")
            if status in ("signed", "declined"):
                events.append(signer_event(request, signature, status))
        if request.get("is_complete"):
            events.append(flow_event(request, "completed"))
        elif request.get("is_canceled"):
            events.append(flow_event(request, "cancelled"))
        elif request.get("expires_at") and int(request["expires_at"]) < datetime.now(UTC).timestamp() \
                and not request.get("is_declined"):
            events.append(flow_event(request, "expired", request["expires_at"]))
        return events

    async def download_signed(self, flow_id: str) -> bytes:
        resp = await self._call("GET", f"/signature_request/files/{flow_id}", "download",
                                params={"file_type": "pdf"})
        return rest.pdf_of(resp, f"Dropbox Sign download of {flow_id}")

    async def evidence(self, flow_id: str) -> dict[str, Any]:
        """Dropbox Sign vouches with its audit trail (appended to the file) under this request id."""
        request = await self._get(flow_id)
        signed = await self.download_signed(flow_id)
        return {"kind": "dropbox_sign_audit_trail", "signature_request_id": flow_id,
                "signed_sha256": hashlib.sha256(signed).hexdigest(),
                "signatures": [{"signature_id": s.get("signature_id"), "signer": _signer_id(request, s),
                                "signed_at": s.get("signed_at")} for s in request.get("signatures", [])]}

    async def revoke(self, flow_id: str, reason: str) -> None:
        request = await self._get(flow_id)
        if request.get("is_complete") or request.get("is_declined") or request.get("is_canceled"):
            return
        await self._call("POST", f"/signature_request/cancel/{flow_id}", "cancel")

    async def remind(self, flow_id: str, signer_ids: list[str]) -> None:
        """Email reminders; embedded requests can't be reminded by Dropbox Sign (the chat does it)."""
        if self.config.client_id:
            return
        request = await self._get(flow_id)
        wanted = {k for k, v in signer_map(request).items() if not signer_ids or v in signer_ids}
        for signature in request.get("signatures", []):
            email = str(signature.get("signer_email_address", "")).lower()
            if email in wanted and signature.get("status_code") == "awaiting_signature":
                await self._call("POST", f"/signature_request/remind/{flow_id}", "remind",
                                 data={"email_address": signature["signer_email_address"]})


# ---- webhook ------------------------------------------------------------------------------


def event_hash(api_key: str, event_time: str, event_type: str) -> str:
    return hmac.new(api_key.encode(), (event_time + event_type).encode(), hashlib.sha256).hexdigest()


def _form_json(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
    """The callback's `json` field, from multipart (what Dropbox Sign sends), urlencoded or bare JSON."""
    content_type = headers.get("content-type", "")
    text: str | None = None
    if content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "json":
                payload = part.get_payload(decode=True)
                text = payload.decode() if isinstance(payload, bytes) else None
    elif content_type.startswith("application/x-www-form-urlencoded"):
        values = parse_qs(body.decode(errors="replace")).get("json")
        text = values[0] if values else None
    else:
        text = body.decode(errors="replace")
    if not text:
        raise WebhookRejected("no json field in the Dropbox Sign callback")
    try:
        data = load_json(text)
    except ValueError as e:
        raise WebhookRejected("the Dropbox Sign callback is not JSON") from e
    if not isinstance(data, dict):
        raise WebhookRejected("the Dropbox Sign callback is not an object")
    return data


class DropboxSignWebhook:
    """Verifies `event_hash` (no timestamp window: Dropbox Sign redelivers with the original
    `event_time` for days) and normalises the event; `callback_test` and others give no events."""

    name = PROVIDER

    def __init__(self, api_key: SecretStr) -> None:
        self._key = api_key

    def parse(self, headers: Mapping[str, str], query: Mapping[str, str],
              body: bytes) -> tuple[list[ProviderEvent], WebhookReply]:
        data = _form_json(headers, body)
        event = data.get("event")
        if not isinstance(event, dict):
            raise WebhookRejected("missing Dropbox Sign event")
        event_time, event_type = str(event.get("event_time", "")), str(event.get("event_type", ""))
        given = str(event.get("event_hash", ""))
        if not (event_time and event_type and given):
            raise WebhookRejected("missing Dropbox Sign event_hash")
        expected = event_hash(self._key.get_secret_value(), event_time, event_type)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise WebhookRejected("bad Dropbox Sign event_hash")
        request = data.get("signature_request") or {}
        if not request.get("signature_request_id"):
            return [], REPLY
        if event_type in SIGNER_EVENTS:
            related = (event.get("event_metadata") or {}).get("related_signature_id")
            signature = next((s for s in request.get("signatures", []) if s.get("signature_id") == related), None)
            if signature is None:
                return [], REPLY
            return [_unconfirmed(signer_event(request, signature, SIGNER_EVENTS[event_type], raw=data))], REPLY
        if event_type in FLOW_EVENTS:
            return [_unconfirmed(flow_event(request, FLOW_EVENTS[event_type], event_time, raw=data))], REPLY
        return [], REPLY


def _unconfirmed(event: ProviderEvent) -> ProviderEvent:
    """`event_hash` covers only time + type, not the body: a captured hash could be replayed with
    any content. So a delivery is only a hint; the workflow polls and acts on the provider's state."""
    return event.model_copy(update={"confirm": True})


def build(settings: Settings, engine: Any, blobs: BlobStore, http: httpx.AsyncClient) -> DropboxSignProvider | None:
    config = DropboxSignConfig()
    return DropboxSignProvider(config, blobs, http) if rest.is_set(config.api_key) else None


def webhook(settings: Settings) -> DropboxSignWebhook | None:
    key = DropboxSignConfig().api_key
    return DropboxSignWebhook(key) if rest.is_set(key) else None
