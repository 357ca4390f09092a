"""法大大 (FASC OpenAPI v5.1) with plain httpx (no SDK).

Why it is shaped this way:

- Every call is a form POST with one field `bizContent=<JSON>`, signed the way FASC documents it: all
  `X-FASC-*` headers but `X-FASC-Sign`, plus `bizContent`, non-empty, sorted, joined `k=v&...`;
  h = hex(sha256(that)); k = HMAC-SHA256(app_secret, timestamp); sign = hex(HMAC-SHA256(k, h)).
  The JSON is serialised once and those exact characters are signed and sent. Success is
  `code == "100000"`; the access token (`/service/get-access-token`, grant `client_credential`)
  is cached until shortly before `expiresIn` and fetched anew when a call reports it invalid.
- A flow is a sign task: upload (`/file/get-upload-url`, PUT, `/file/process`), then
  `/sign-task/create` with `transReferenceId = request_id` and one actor per signer (`actorId`
  = the SignBridge signer id, which callbacks and details carry back), then `/sign-task/start`.
  Several groups → `signInOrder: true` with `orderNo` = group index + 1; equal `orderNo` are
  taken as parallel (unconfirmed: set `SIGNBRIDGE_FADADA_SEQUENTIAL_GROUPS=true` to flatten
  groups into one-by-one order numbers instead). A retried `create_flow` first looks the task
  up by `transReferenceId` (`/sign-task/owner/get-list`, filter shape unconfirmed).
- Business error codes other than success are refusals (non-retryable) except the ones listed
  in `retryable_codes` and the token-invalid ones (unconfirmed values; configurable).
- 法大大 stamps the PDF with its own signatures and returns a new file: `incremental = False`;
  evidence is the task id and the signed file's hash.
- Positions: a placed signer's `person_sign` field is declared in the document's `docFields` and
  assigned through the actor's `signFields{fieldDocId, fieldId}`; at an anchor text it uses
  法大大's keyword positioning (`positionMode: keyword`, `positionKeyword`, `keywordOffsetX/Y`),
  at a template field pixel mode (field names from a third-party summary of FASC v5.1:
  unconfirmed). A signer with no place gets no field and places it on 法大大's page. One
  document per task: several are refused at prepare.
- Callbacks: form `bizContent` + `X-FASC-Event`, signed the same way (over every `X-FASC-*`
  header received except Sign), timestamp within ±5 min, reply 200 `{"msg": "success"}`. The
  signature covers the body, so events act directly. The last `sign-task-signed` may already
  carry `task_finished`: it then yields the completion too.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import httpx
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.esign import rest
from connectors.esign.base import MOBILE_OR_EMAIL, ProviderError, WebhookRejected, WebhookReply
from signbridge.core.models import CreateFlowInput, OpenGroupInput, Person, Placement, ProviderEvent, SignerLink
from signbridge.core.settings import Settings
from signbridge.core.untrusted import is_stale, load_json
from store.blobs import BlobStore

PROVIDER = "fadada"
OK = "100000"
REPLY = WebhookReply(200, b'{"msg": "success"}', "application/json")
FINISHED = ("task_finished", "sign_completed")
DONE = ("task_finished", "task_terminated", "revoked", "expired", "sign_rejected")


class FadadaConfig(BaseSettings):
    """`SIGNBRIDGE_FADADA_*`: APP_ID and APP_SECRET enable the provider and its callback."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_FADADA_", env_file=None, extra="ignore")

    app_id: str = ""
    app_secret: SecretStr | None = None
    api_base: str = "https://api.fadada.com/api/v5"  # sandbox: https://uat-api.fadada.com/api/v5
    open_corp_id: str = ""  # the initiating company's openCorpId
    redirect_url: str = ""
    sequential_groups: bool = False
    retryable_codes: list[str] = ["100001"]  # "system busy" (unconfirmed)
    token_invalid_codes: list[str] = ["100002"]  # "access token invalid or expired" (unconfirmed)
    callback_tolerance_seconds: int = 300
    # Provider activities per second across all workers (0 = no cap): 法大大 publishes no quota for
    # 法大大; set it to the QPS your contract grants.
    max_requests_per_second: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.app_id and self.app_secret and self.app_secret.get_secret_value())


def fasc_sign(secret: str, params: Mapping[str, str]) -> str:
    """The FASC signature over `X-FASC-*` headers (except Sign) + `bizContent`."""
    joined = "&".join(f"{k}={v}" for k, v in sorted(params.items())
                      if v and k.lower() != "x-fasc-sign")
    digest = hashlib.sha256(joined.encode()).hexdigest()
    timestamp = next(v for k, v in params.items() if k.lower() == "x-fasc-timestamp")
    key = hmac.new(secret.encode(), timestamp.encode(), hashlib.sha256).digest()
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def signed_headers(app_id: str, secret: str, biz: str, *, token: str | None = None,
                   extra: Mapping[str, str] | None = None, timestamp: str | None = None) -> dict[str, str]:
    headers = {"X-FASC-App-Id": app_id, "X-FASC-Sign-Type": "HMAC-SHA256",
               "X-FASC-Timestamp": timestamp or str(int(time.time() * 1000)),
               "X-FASC-Nonce": secrets.token_hex(16), "X-FASC-Api-SubVersion": "5.1", **(extra or {})}
    if token is None:
        headers["X-FASC-Grant-Type"] = "client_credential"
    else:
        headers["X-FASC-AccessToken"] = token
    headers["X-FASC-Sign"] = fasc_sign(secret, {**headers, "bizContent": biz})
    return headers


def actor_event(flow_id: str, actor_id: str, kind: str, when: Any = None, reason: str | None = None,
                raw: dict[str, Any] | None = None) -> ProviderEvent:
    return rest.provider_event(PROVIDER, flow_id, kind, rest.epoch_time(when, per_second=1000), who=actor_id,
                          signer_id=actor_id, reason=reason, raw=raw)


def task_event(flow_id: str, kind: str, when: Any = None, raw: dict[str, Any] | None = None) -> ProviderEvent:
    return rest.provider_event(PROVIDER, flow_id, kind, rest.epoch_time(when, per_second=1000), raw=raw)


STATUS_EVENTS = {"task_finished": "completed", "revoked": "cancelled", "expired": "expired"}


def field_id(placement: Placement) -> str:
    return f"sign-{placement.role}"[:32]


def doc_field(placement: Placement) -> dict[str, Any]:
    """A `person_sign` field of the document: found by 法大大's keyword positioning at the anchor
    text (offset in points from the keyword's centre to the stamp's), or at the template field
    (pixel mode, points from the page's top left)."""
    x1, y1, x2, y2 = placement.box
    field = {"fieldId": field_id(placement), "fieldName": f"sign:{placement.role}", "fieldType": "person_sign"}
    if placement.anchor and placement.anchor_box:
        ax1, ay1, ax2, ay2 = placement.anchor_box
        return {**field, "position": {
            "positionMode": "keyword", "positionPageNo": placement.page + 1, "positionKeyword": placement.anchor,
            "keywordOffsetX": str(round((x1 + x2) / 2 - (ax1 + ax2) / 2)),
            "keywordOffsetY": str(round((y1 + y2) / 2 - (ay1 + ay2) / 2))}}
    height = placement.page_size[1] if placement.page_size else 842.0
    return {**field, "position": {"positionMode": "pixel", "positionPageNo": placement.page + 1,
                                  "positionX": str(round(x1)), "positionY": str(round(height - y2))}}


def _corp_actor(person: Person, account: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A company party: a `corp` actor matched on the company's full name and credit code
    (`identNameForMatch`, `certNoForMatch`), the person as the member who operates it when the
    company authorised our app (`actorOpenId` + `actorCorpMembers`), and a `corp_seal` field whose
    `sealId` is the company's registered 法大大 seal (else the operator picks one). Returns the actor
    and its seal field for the document."""
    org = person.org
    assert org is not None
    seal_field_id = f"seal-{person.id}"[:32]
    actor: dict[str, Any] = {"actorId": person.id, "actorType": "corp", "actorName": org.name[:128],
                             "permissions": ["sign"], "identNameForMatch": org.name[:100],
                             "notification": {"sendNotification": True, "notifyAddress": account}}
    if org.credit_code:
        actor["certNoForMatch"] = org.credit_code
    if open_corp_id := org.provider_ids.get("fadada.open_corp_id"):
        actor["actorOpenId"] = open_corp_id
        actor["actorCorpMembers"] = [{"accountName": account}]
    if entity := org.provider_ids.get("fadada.entity_id"):
        actor["actorEntityId"] = entity
    sign_field: dict[str, Any] = {"fieldDocId": "1", "fieldId": seal_field_id, "moveable": True}
    if seal_id := org.provider_ids.get("fadada.seal_id"):
        sign_field["sealId"] = seal_id
    seal_field = {"fieldId": seal_field_id, "fieldName": f"{org.name} {org.seal_kind}", "fieldType": "corp_seal",
                 "position": {"positionMode": "pixel", "positionPageNo": 1, "positionX": "400", "positionY": "650"}}
    return {"actor": actor, "signFields": [sign_field]}, seal_field


class FadadaProvider:
    """`ESignProvider` for 法大大. Flow id = signTaskId."""

    name = PROVIDER
    incremental = False
    org_seals = True  # corp actors with a `corp_seal` field and the company's `sealId` (`_corp_actor`)
    # an actor's `accountName` is a mobile or an email
    signer_contacts: frozenset[str] = MOBILE_OR_EMAIL

    def __init__(self, config: FadadaConfig, blobs: BlobStore, http: httpx.AsyncClient) -> None:
        assert config.app_secret is not None
        self.config, self.blobs, self.http = config, blobs, http
        self.base = config.api_base.rstrip("/")
        self._secret = config.app_secret
        self._token: str | None = None
        self._expires = 0.0
        self.grants = 0

    async def _post(self, path: str, biz: dict[str, Any] | None, what: str, token: str | None) -> dict[str, Any]:
        content = json.dumps(biz, ensure_ascii=False, separators=(",", ":")) if biz is not None else ""
        headers = signed_headers(self.config.app_id, self._secret.get_secret_value(), content, token=token)
        resp = await rest.send(self.http, "POST", self.base + path, f"法大大 {what}", headers=headers,
                          data={"bizContent": content} if content else None)
        return dict(rest.checked(resp, f"法大大 {what}").json())

    async def _token_value(self) -> str:
        if self._token and time.time() < self._expires - 60:
            return self._token
        body = await self._post("/service/get-access-token", None, "access token", None)
        if body.get("code") != OK:
            raise ProviderError(f"法大大 access token: {body.get('code')} {body.get('msg')}",
                         retryable=body.get("code") in self.config.retryable_codes)
        data = body.get("data") or {}
        self._token, self._expires = str(data["accessToken"]), time.time() + float(data.get("expiresIn", 7200))
        self.grants += 1
        return self._token

    async def call(self, path: str, biz: dict[str, Any], what: str) -> dict[str, Any]:
        for attempt in (1, 2):
            body = await self._post(path, biz, what, await self._token_value())
            code = str(body.get("code"))
            if code == OK:
                return dict(body.get("data") or {})
            if code in self.config.token_invalid_codes and attempt == 1:
                self._token = None
                continue
            raise ProviderError(f"法大大 {what}: {code} {body.get('msg', '')}".strip(),
                         retryable=code in self.config.retryable_codes)
        raise AssertionError("unreachable")

    async def _upload(self, req: CreateFlowInput) -> str:
        target = await self.call("/file/get-upload-url", {"fileType": "doc", "storageType": "cloud"}, "upload url")
        put = await rest.send(self.http, "PUT", str(target["uploadUrl"]), "法大大 upload",
                         content=self.blobs.get(req.document.blob_key))
        if put.status_code >= 300:
            raise ProviderError(f"法大大 upload: HTTP {put.status_code}", retryable=True)
        done = await self.call("/file/process", {"fddFileUrlList": [
            {"fileType": "doc", "fddFileUrl": target["fddFileUrl"], "fileName": req.document.name}]}, "file process")
        return str(done["fileIdList"][0]["fileId"])

    async def _find(self, request_id: str) -> str | None:
        found = await self.call("/sign-task/owner/get-list", {
            "ownerId": {"idType": "corp", "openId": self.config.open_corp_id},
            "listFilter": {"transReferenceId": request_id}}, "find task")
        tasks = found.get("signTasks") or []
        return str(tasks[0]["signTaskId"]) if tasks else None

    async def create_flow(self, req: CreateFlowInput) -> str:
        existing = await self._find(req.request_id)
        if existing:
            return existing
        actors: list[dict[str, Any]] = []
        seal_fields: list[dict[str, Any]] = []
        for group, person in rest.each_signer_once(req.groups):
            account = person.mobile or person.email
            if not account:
                raise ProviderError(f"法大大 needs a mobile or email for {person.name}", retryable=False)
            order = len(actors) + 1 if self.config.sequential_groups else group + 1
            if person.org is not None and person.org.seal:
                corp, seal_field = _corp_actor(person, account)
                actors.append({**corp, "orderNo": order})
                seal_fields.append(seal_field)
                continue
            actor: dict[str, Any] = {"actor": {"actorId": person.id, "actorType": "person", "actorName": person.name,
                                               "permissions": ["sign"], "accountName": account},
                                     "orderNo": order}
            placement = rest.placement_of(req.placements, person.id)
            if placement is not None:
                actor["signFields"] = [{"fieldDocId": "1", "fieldId": field_id(placement)}]
            actors.append(actor)
        file_id = await self._upload(req)
        fields = [doc_field(p) for p in req.placements if p.document == 0 and p.kind == "sign"]
        created = await self.call("/sign-task/create", {
            "initiator": {"idType": "corp", "openId": self.config.open_corp_id},
            "signTaskSubject": req.title, "transReferenceId": req.request_id,
            "signInOrder": len(req.groups) > 1, "autoFinish": True,
            "expiresTime": str(int(req.expires_at.timestamp() * 1000)),
            "docs": [{"docId": "1", "docName": req.document.name, "docFileId": file_id,
                      **({"docFields": fields + seal_fields} if fields or seal_fields else {})}],
            "actors": actors}, "create task")
        task_id = str(created["signTaskId"])
        await self.call("/sign-task/start", {"signTaskId": task_id}, "start task")
        return task_id

    async def _detail(self, flow_id: str) -> dict[str, Any]:
        return await self.call("/sign-task/get-detail", {"signTaskId": flow_id}, "task detail")

    async def open_group(self, req: OpenGroupInput) -> list[SignerLink]:
        detail = await self._detail(req.flow_id)
        actors = {a.get("actorId"): a for a in detail.get("actors", [])}

        async def link(person: Person, actor: Mapping[str, Any]) -> str:
            url = await self.call("/sign-task/actor/get-url", {
                "signTaskId": req.flow_id, "actorId": person.id, "redirectUrl": self.config.redirect_url or None},
                "actor url")
            return str(url["actorSignTaskUrl"])

        return await rest.pending_links(req.signers, actors, f"法大大 task {req.flow_id}",
                                   lambda a: a.get("signStatus") in ("signed", "sign_rejected"), link)

    async def poll(self, flow_id: str) -> list[ProviderEvent]:
        detail = await self._detail(flow_id)
        events = []
        for a in detail.get("actors", []):
            if a.get("signStatus") == "signed":
                events.append(actor_event(flow_id, str(a["actorId"]), "signed", a.get("signTime")))
            elif a.get("signStatus") == "sign_rejected":
                events.append(actor_event(flow_id, str(a["actorId"]), "declined", a.get("signTime"),
                                          a.get("rejectReason")))
        kind = STATUS_EVENTS.get(str(detail.get("signTaskStatus")))
        if kind:
            events.append(task_event(flow_id, kind, detail.get("finishTime")))
        return events

    async def download_signed(self, flow_id: str) -> bytes:
        detail = await self._detail(flow_id)
        if detail.get("signTaskStatus") not in FINISHED:
            raise ProviderError(f"法大大 task {flow_id} is {detail.get('signTaskStatus')}, not finished")
        url = await self.call("/sign-task/owner/get-download-url", {
            "ownerId": {"idType": "corp", "openId": self.config.open_corp_id}, "signTaskId": flow_id}, "download url")
        resp = await rest.send(self.http, "GET", str(url["downloadUrl"]), "法大大 download")
        return rest.pdf_of(resp, f"法大大 download of {flow_id}")

    async def evidence(self, flow_id: str) -> dict[str, Any]:
        signed = await self.download_signed(flow_id)
        return {"kind": "fadada_sign_task", "sign_task_id": flow_id,
                "signed_sha256": hashlib.sha256(signed).hexdigest()}

    async def revoke(self, flow_id: str, reason: str) -> None:
        if (await self._detail(flow_id)).get("signTaskStatus") in DONE:
            return
        await self.call("/sign-task/cancel", {"signTaskId": flow_id, "terminationNote": reason or "cancelled"},
                        "cancel")

    async def remind(self, flow_id: str, signer_ids: list[str]) -> None:
        await self.call("/sign-task/urge", {"signTaskId": flow_id}, "urge")


# ---- callbacks ------------------------------------------------------------------------------


class FadadaWebhook:
    name = PROVIDER

    def __init__(self, app_id: str, secret: SecretStr, tolerance: int = 300) -> None:
        self.app_id = app_id
        self._secret = secret
        self.tolerance = tolerance

    def parse(self, headers: Mapping[str, str], query: Mapping[str, str],
              body: bytes) -> tuple[list[ProviderEvent], WebhookReply]:
        biz = (parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).get("bizContent") or [""])[0]
        fasc = {k: v for k, v in headers.items() if k.lower().startswith("x-fasc-")}
        given = next((v for k, v in fasc.items() if k.lower() == "x-fasc-sign"), "")
        stamp = next((v for k, v in fasc.items() if k.lower() == "x-fasc-timestamp"), "")
        if not given or not stamp.isdigit():
            raise WebhookRejected("missing X-FASC-Sign or X-FASC-Timestamp")
        canonical = {_canonical(k): v for k, v in fasc.items()}
        expected = fasc_sign(self._secret.get_secret_value(), {**canonical, "bizContent": biz})
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise WebhookRejected("bad X-FASC-Sign")
        if is_stale(stamp, self.tolerance, millis=True):
            raise WebhookRejected("stale X-FASC-Timestamp")
        try:
            data = load_json(biz)
        except ValueError as e:
            raise WebhookRejected("bizContent is not JSON") from e
        event = canonical.get("X-FASC-Event", "")
        if not isinstance(data, dict) or not data.get("signTaskId"):
            return [], REPLY
        flow_id, actor = str(data["signTaskId"]), data.get("actorId")
        events: list[ProviderEvent] = []
        if event == "sign-task-signed" and actor:
            events.append(actor_event(flow_id, str(actor), "signed", data.get("eventTime"), raw=data))
            if data.get("signTaskStatus") == "task_finished":
                events.append(task_event(flow_id, "completed", data.get("eventTime"), raw=data))
        elif event == "sign-task-sign-rejected" and actor:
            events.append(actor_event(flow_id, str(actor), "declined", data.get("eventTime"),
                                      data.get("rejectReason"), raw=data))
        elif event in CALLBACK_TASK_EVENTS:
            events.append(task_event(flow_id, CALLBACK_TASK_EVENTS[event], data.get("eventTime"), raw=data))
        return events, REPLY


CALLBACK_TASK_EVENTS = {"sign-task-finished": "completed", "sign-task-canceled": "cancelled",
                        "sign-task-expire": "expired"}
_CANONICAL = {"x-fasc-app-id": "X-FASC-App-Id", "x-fasc-sign-type": "X-FASC-Sign-Type",
              "x-fasc-timestamp": "X-FASC-Timestamp", "x-fasc-nonce": "X-FASC-Nonce",
              "x-fasc-api-subversion": "X-FASC-Api-SubVersion", "x-fasc-event": "X-FASC-Event",
              "x-fasc-accesstoken": "X-FASC-AccessToken", "x-fasc-sign": "X-FASC-Sign",
              "x-fasc-grant-type": "X-FASC-Grant-Type"}


def _canonical(name: str) -> str:
    """HTTP lowercases header names; the signature sorts the documented spelling."""
    return _CANONICAL.get(name.lower(), name)


def build(settings: Settings, engine: Any, blobs: BlobStore, http: httpx.AsyncClient) -> FadadaProvider | None:
    config = FadadaConfig()
    return FadadaProvider(config, blobs, http) if config.enabled else None


def webhook(settings: Settings) -> FadadaWebhook | None:
    config = FadadaConfig()
    if not config.enabled or config.app_secret is None:
        return None
    return FadadaWebhook(config.app_id, config.app_secret, config.callback_tolerance_seconds)
