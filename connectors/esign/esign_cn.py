"""e签宝 (open.esign.cn, SaaS API v3) over plain httpx, and its callbacks.

Why it is shaped this way:

- Every call is signed per `esign_cn_auth` (body serialised once, those bytes signed and sent).
  Answers are `{code, message, data}`: `code != 0` is a refusal even under HTTP 200.
- Signer order: SignBridge group g becomes `signOrder = g + 1`; equal orders sign in parallel,
  so serial, parallel and mixed orders map one to one (no flattening as with Dropbox Sign).
- Each sign field carries `customBizNum = "<signer id>@<request tag>"` (request tag = the first
  16 hex of SHA-256(request id)). Callbacks and the flow detail hand it back, so a signature maps
  to the SignBridge signer without any state here, and `create_flow` finds the flow it already
  made by listing recent flows (`/v3/sign-flow/sign-flow-list`) and matching the tag before it
  creates one. UNCONFIRMED: the list endpoint's exact body and that `customBizNum` is echoed in
  `SIGN_MISSON_COMPLETE`; when it is not, the polling fallback (detail) still maps the signer.
- e签宝 signs the original incrementally (its own CA), so `incremental = True`: the finish step
  checks the download starts with our original bytes. The evidence is e签宝's flow and file ids
  and the hash it reports for the signed file, next to the hash of what we downloaded.
- Event ids come from state (flow, signer, outcome), so a redelivered, reordered or polled event
  is the same event and the workflow applies it once.
- Positions: a role placed by an anchor text (【甲方签章】) is positioned by e签宝's own keyword
  search (`POST /v3/files/{fileId}/keyword-positions`, endpoint from e签宝's error-code list; its
  answer `keywordPositions[{keyword, searchResult, positions[{pageNum, coordinates[{positionX,
  positionY}]}]}]` is third-party, as is `signFieldPosition{positionPage (a string), positionX,
  positionY}`), the seal `KEYWORD_OFFSET_X` right of it; a template's signature field by its
  rectangle's centre; a signer with no place gets `freeMode` (they place it themselves).
  Several documents go into one flow (at most 50 files): each signer gets a sign field in every
  file, and each signed file is downloaded by its `fileId`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.esign import rest
from connectors.esign.base import MOBILE_OR_EMAIL, ProviderError, WebhookReply
from connectors.esign.esign_cn_auth import (
    SignatureCheckFailed,
    content_md5,
    encode_body,
    load_trust_roots,
    signed_headers,
    verify_callback,
    verify_signed_pdf,
)
from connectors.http import may_heal, retry_after
from signbridge.core.models import (
    CreateFlowInput,
    DocumentInfo,
    OpenGroupInput,
    Person,
    Placement,
    ProviderEvent,
    SignerLink,
)
from signbridge.core.settings import Settings
from signbridge.core.untrusted import load_json
from store.blobs import BlobStore

PROVIDER = "esign_cn"
REPLY = WebhookReply(200, b'{"code":"200","msg":"success"}', "application/json")
# signFlowStatus: 0 draft, 1 signing, 2 completed, 3 revoked, 5 expired, 7 refused
FLOW_KINDS = {2: "completed", 3: "cancelled", 5: "expired"}
FINAL_FLOW = (2, 3, 5, 7)
SIGNER_KINDS = {2: "signed", 4: "declined"}  # signResult / signStatus: 2 signed, 4 refused


# e签宝's willingness (意愿) authentication modes for a person signer (its v3 API documentation).
WILLINGNESS_MODES = frozenset({"CODE_SMS", "PSN_FACE_ALIPAY", "PSN_FACE_ESIGN", "PSN_FACE_WECHAT", "SIGN_PWD",
                               "PSN_FACE_TECENT", "PSN_AUDIO_VIDEO_ALIPAY", "PSN_AUDIO_VIDEO_WECHAT",
                               "PSN_AUDIO_VIDEO_ESIGN"})


def _modes(value: str) -> list[str]:
    return [m.strip() for m in value.split(",") if m.strip()]


class EsignCnConfig(BaseSettings):
    """`SIGNBRIDGE_ESIGN_CN_*`; enabled once both APP_ID and APP_SECRET are set."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_ESIGN_CN_", env_file=None, extra="ignore")

    app_id: str = ""
    app_secret: SecretStr | None = None
    api_base: str = "https://openapi.esign.cn"  # sandbox: https://smlopenapi.esign.cn
    callback_tolerance_s: int = 900  # callback timestamp window; 0 = do not check (unconfirmed)
    list_pages: int = 5  # pages of recent flows `create_flow` searches for its own
    file_ready_attempts: int = 20  # uploaded file status checks (0.25 s apart) before giving up
    retryable_codes: str = "1435010,1437500"  # business codes meaning "busy, try again" (unconfirmed)
    trust_roots_file: str = ""  # PEM of e签宝's CA certificates: signatures in downloads must chain to them
    # Provider activities per second across all workers (0 = no cap): e签宝 publishes no quota for
    # e签宝; set it to the QPS your contract grants.
    max_requests_per_second: float = 0.0
    # How signers confirm their will to sign on e签宝's page (`signFlowConfig.authConfig.
    # willingnessAuthModes`), comma separated: CODE_SMS (a code to the signer's mobile),
    # PSN_FACE_ALIPAY, PSN_FACE_ESIGN, PSN_FACE_WECHAT, SIGN_PWD, …; empty: the account's default.
    willingness_auth_modes: str = ""

    @field_validator("willingness_auth_modes")
    @classmethod
    def _known_modes(cls, v: str) -> str:
        """A typo must stop the service at start, not fail every flow at e签宝."""
        unknown = [m for m in _modes(v) if m not in WILLINGNESS_MODES]
        if unknown:
            raise ValueError(f"unknown e签宝 willingness auth mode(s) {unknown}; known: {sorted(WILLINGNESS_MODES)}")
        return v

    @property
    def enabled(self) -> bool:
        return bool(self.app_id and self.app_secret and self.app_secret.get_secret_value())


def request_tag(request_id: str) -> str:
    return hashlib.sha256(request_id.encode()).hexdigest()[:16]


def biz_num(signer_id: str, request_id: str) -> str:
    return f"{signer_id}@{request_tag(request_id)}"


def signer_of(custom_biz_num: Any) -> str | None:
    """The SignBridge signer id inside a `customBizNum` (None when absent or foreign)."""
    value = str(custom_biz_num or "")
    signer, sep, _tag = value.rpartition("@")
    return signer if sep and signer else None


MAX_FILES = 50  # files in one e签宝 flow ((精简版)基于文件发起签署)
# The seal's centre sits this far right of the keyword e签宝 found: beside the anchor text, like the
# built-in provider's stamp, not over it.
KEYWORD_OFFSET_X = 90.0


def _field_config(placement: Placement | None, found: Mapping[str, tuple[int, float, float]]) -> dict[str, Any]:
    """A signer's sign field: at its anchor by e签宝's keyword search, at its template field's
    centre, or — with no place in the document — wherever the signer puts it (`freeMode`)."""
    if placement is None:
        return {"freeMode": True, "signFieldStyle": 1}
    if placement.anchor and placement.anchor in found:
        page, x, y = found[placement.anchor]
        x += KEYWORD_OFFSET_X
    else:
        page, (x, y) = placement.page + 1, rest.box_centre(placement)
    return {"freeMode": False, "signFieldStyle": 1,
            "signFieldPosition": {"positionPage": str(page), "positionX": round(x, 2), "positionY": round(y, 2)}}


def _account(person: Person) -> str:
    """e签宝 accounts are mainland mobiles without the country code, or emails."""
    mobile = "".join(ch for ch in (person.mobile or "") if ch.isdigit() or ch == "+")
    if mobile.startswith("+86"):
        mobile = mobile[3:]
    return mobile or person.email or ""


# The seal kinds a command names, as e签宝's `sealBizType` (used to pick the seal when no seal id is set).
SEAL_BIZ_TYPES = {"公章": "PUBLIC", "合同专用章": "CONTRACT"}


def _signer(p: Person, group: int, fields: list[tuple[str, dict[str, Any]]], request_id: str) -> dict[str, Any]:
    """One entry of `signers`: a person (`signerType` 0, `psnSignerInfo`), or a person signing for
    an organisation whose seal is applied (`signerType` 1, `orgSignerInfo` with the person as the
    transactor 经办人, and the seal: `assignedSealId` when the organisation's e签宝 seal id is
    registered, else its kind as `orgSealBizTypes`, so the transactor picks that kind of seal)."""
    seal: dict[str, Any] = {}
    org = p.org
    if org is not None and org.seal:
        seal_id = org.provider_ids.get("esign_cn.seal_id")
        seal = ({"assignedSealId": seal_id} if seal_id
                else {"orgSealBizTypes": SEAL_BIZ_TYPES.get(org.seal_kind, "PUBLIC")})
    base = {"signConfig": {"signOrder": group + 1},
            "signFields": [{"fileId": file_id, "customBizNum": biz_num(p.id, request_id),
                            "normalSignFieldConfig": {**config, **seal}} for file_id, config in fields]}
    person = {"psnAccount": _account(p), "psnInfo": {"psnName": p.name}}
    if org is None or not org.seal:
        return {"signerType": 0, "psnSignerInfo": person, **base}
    org_id = org.provider_ids.get("esign_cn.org_id")
    who: dict[str, Any] = {"orgId": org_id} if org_id else {"orgName": org.name}
    if org.credit_code:
        who["orgInfo"] = {"orgIDCardNum": org.credit_code, "orgIDCardType": "CRED_ORG_USCC"}
    return {"signerType": 1, "orgSignerInfo": {**who, "transactorInfo": person}, **base}


def signer_event(flow_id: str, signer_id: str | None, kind: str, *, when: Any, reason: str | None = None,
                 raw: dict[str, Any] | None = None) -> ProviderEvent:
    return rest.provider_event(PROVIDER, flow_id, kind, rest.epoch_time(when, per_second=1000), who=str(signer_id),
                          signer_id=signer_id, reason=reason if kind == "declined" else None, raw=raw)


def flow_event(flow_id: str, kind: str, *, when: Any, raw: dict[str, Any] | None = None) -> ProviderEvent:
    return rest.provider_event(PROVIDER, flow_id, kind, rest.epoch_time(when, per_second=1000), raw=raw)


def _detail_signer_id(signer: Mapping[str, Any]) -> str | None:
    for field in signer.get("signFields") or []:
        found = signer_of(field.get("customBizNum"))
        if found:
            return found
    return None


class EsignCnProvider:
    """`ESignProvider` for e签宝. Flow id = `signFlowId`."""

    name = PROVIDER
    org_seals = True  # `orgSignerInfo` with a transactor and the seal (`_signer`)
    incremental = True  # e签宝 appends its signatures to the original bytes
    # `psnAccount` is a mobile or an email (`_account`)
    signer_contacts: frozenset[str] = MOBILE_OR_EMAIL

    def __init__(self, config: EsignCnConfig, settings: Settings, blobs: BlobStore, http: httpx.AsyncClient) -> None:
        assert config.app_secret is not None
        self.config = config
        self.blobs = blobs
        self.http = http
        self.base = config.api_base.rstrip("/")
        self.base_path = httpx.URL(self.base).path.rstrip("/")
        self.notify_url = f"{settings.public_url.rstrip('/')}/esign/{PROVIDER}/webhook"
        self._retryable = {c.strip() for c in config.retryable_codes.split(",") if c.strip()}

    # ---- transport ------------------------------------------------------------------------

    async def call(self, method: str, path: str, what: str, body: Mapping[str, Any] | None = None) -> Any:
        """One signed API call; returns `data`. Classifies every failure for the retry policy."""
        raw = encode_body(body)
        assert self.config.app_secret is not None
        headers = signed_headers(self.config.app_id, self.config.app_secret.get_secret_value(), method,
                                 self.base_path + path, raw)
        resp = await rest.send(self.http, method, self.base + path, f"e签宝 {what}", content=raw or None,
                               headers=headers)
        return self._data(resp, what)

    def _data(self, resp: httpx.Response, what: str) -> Any:
        wait = retry_after(resp)
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        code = payload.get("code") if isinstance(payload, dict) else None
        message = str(payload.get("message", "")) if isinstance(payload, dict) else resp.text[:200]
        if may_heal(resp.status_code):
            raise ProviderError(f"e签宝 {what}: HTTP {resp.status_code} {message}".strip(), retryable=True,
                                retry_after=wait)
        if resp.status_code >= 400 or code is None:
            raise ProviderError(f"e签宝 {what}: HTTP {resp.status_code} code {code} {message}".strip(), retryable=False)
        if code != 0:
            retryable = str(code) in self._retryable
            raise ProviderError(f"e签宝 {what}: code {code} {message}", retryable=retryable, retry_after=wait)
        return payload.get("data") or {}

    # ---- flow -----------------------------------------------------------------------------

    async def _find(self, request_id: str) -> str | None:
        tag = "@" + request_tag(request_id)
        now = int(time.time() * 1000)
        for page in range(1, self.config.list_pages + 1):
            data = await self.call("POST", "/v3/sign-flow/sign-flow-list", "list flows", {
                "pageNum": page, "pageSize": 100, "signFlowStartTimeFrom": now - 89 * 86_400_000,
                "signFlowStartTimeTo": now + 60_000})
            flows = data.get("signFlowInfos") or []
            for flow in flows:
                for signer in flow.get("signers") or []:
                    if any(str(f.get("customBizNum", "")).endswith(tag) for f in signer.get("signFields") or []):
                        return str(flow["signFlowId"])
            if page * 100 >= int(data.get("total") or 0):
                break
        return None

    async def _upload(self, document: DocumentInfo) -> str:
        pdf = self.blobs.get(document.blob_key)
        md5 = content_md5(pdf)
        data = await self.call("POST", "/v3/files/file-upload-url", "file upload url", {
            "contentMd5": md5, "contentType": "application/pdf", "convertToPDF": False,
            "fileName": document.name, "fileSize": len(pdf)})
        file_id, url = str(data["fileId"]), str(data["fileUploadUrl"])
        resp = await rest.send(self.http, "PUT", url, "e签宝 upload", content=pdf,
                          headers={"Content-MD5": md5, "Content-Type": "application/pdf"})
        if resp.status_code >= 400:
            raise ProviderError(f"e签宝 upload: HTTP {resp.status_code}", retryable=resp.status_code >= 500)
        for _ in range(self.config.file_ready_attempts):
            status = await self.call("GET", f"/v3/files/{file_id}", "file status")
            if int(status.get("fileStatus", 0)) in (2, 5):
                return file_id
            await asyncio.sleep(0.25)  # e签宝 processes the upload asynchronously
        raise ProviderError(f"e签宝 file {file_id} is still processing", retryable=True)

    async def create_flow(self, req: CreateFlowInput) -> str:
        existing = await self._find(req.request_id)
        if existing:
            return existing
        ordered = rest.each_signer_once(req.groups)
        missing = [p.name for _, p in ordered if not _account(p)]
        if missing:
            raise ProviderError(f"e签宝 needs a mobile number or email for {', '.join(missing)}", retryable=False)
        documents = req.all_documents
        if len(documents) > MAX_FILES:
            raise ProviderError(f"e签宝 takes at most {MAX_FILES} files per flow", retryable=False)
        file_ids = [await self._upload(d) for d in documents]
        found: list[dict[str, tuple[int, float, float]]] = []
        for index, file_id in enumerate(file_ids):
            anchors = sorted({p.anchor for p in req.placements if p.anchor and p.document == index})
            found.append(await self._keyword_positions(file_id, anchors) if anchors else {})
        signers = [_signer(p, g, [(file_id, _field_config(rest.placement_of(req.placements, p.id, index), found[index]))
                                  for index, file_id in enumerate(file_ids)], req.request_id)
                   for g, p in ordered]
        flow_config: dict[str, Any] = {"signFlowTitle": req.title[:100], "autoStart": True, "autoFinish": True,
                                       "signFlowExpireTime": int(req.expires_at.timestamp() * 1000),
                                       "notifyUrl": self.notify_url}
        if modes := _modes(self.config.willingness_auth_modes):
            flow_config["authConfig"] = {"willingnessAuthModes": modes}
        data = await self.call("POST", "/v3/sign-flow/create-by-file", "create flow", {
            "docs": [{"fileId": file_id, "fileName": d.name} for file_id, d in zip(file_ids, documents, strict=True)],
            "signFlowConfig": flow_config, "signers": signers})
        return str(data["signFlowId"])

    async def _keyword_positions(self, file_id: str, keywords: list[str]) -> dict[str, tuple[int, float, float]]:
        """e签宝's own keyword positioning (检索文件关键字坐标): where it finds each anchor text in the
        uploaded file, as (1-based page, x, y) in its coordinates. A keyword it does not find is left
        out; its signer then signs at the spot SignBridge found for it."""
        data = await self.call("POST", f"/v3/files/{file_id}/keyword-positions", "keyword positions",
                               {"keywords": keywords})
        found: dict[str, tuple[int, float, float]] = {}
        for item in data.get("keywordPositions") or []:
            positions = item.get("positions") or []
            if not item.get("searchResult") or not positions or not positions[0].get("coordinates"):
                continue
            first = positions[0]
            point = first["coordinates"][0]
            found[str(item.get("keyword"))] = (int(first["pageNum"]), float(point["positionX"]),
                                               float(point["positionY"]))
        return found

    async def _detail(self, flow_id: str) -> dict[str, Any]:
        return dict(await self.call("GET", f"/v3/sign-flow/{flow_id}/detail", "flow detail"))

    async def open_group(self, req: OpenGroupInput) -> list[SignerLink]:
        """e签宝 opens turns itself (signOrder); this fetches each pending signer's sign URL."""
        detail = await self._detail(req.flow_id)
        by_id = {_detail_signer_id(s): s for s in detail.get("signers") or []}

        async def link(person: Person, signer: Mapping[str, Any]) -> str:
            data = await self.call("POST", f"/v3/sign-flow/{req.flow_id}/sign-url", "sign url", {
                "operator": {"psnAccount": _account(person)}, "needLogin": False, "urlType": 2,
                "clientType": "ALL"})
            return str(data.get("shortUrl") or data["url"])

        return await rest.pending_links(req.signers, by_id, f"e签宝 flow {req.flow_id}",
                                   lambda s: int(s.get("signStatus", 1)) in SIGNER_KINDS, link)

    async def poll(self, flow_id: str) -> list[ProviderEvent]:
        detail = await self._detail(flow_id)
        events: list[ProviderEvent] = []
        for signer in detail.get("signers") or []:
            kind, sid = SIGNER_KINDS.get(int(signer.get("signStatus", 1))), _detail_signer_id(signer)
            if kind and sid:  # a signer added outside SignBridge (no customBizNum) is not ours to report
                events.append(signer_event(flow_id, sid, kind, when=signer.get("signTime"),
                                           reason=signer.get("refuseReason") or detail.get("signFlowDescription")))
        kind = FLOW_KINDS.get(int(detail.get("signFlowStatus", 1)))
        if kind:
            events.append(flow_event(flow_id, kind, when=detail.get("signFlowFinishTime")))
        return events

    async def _files(self, flow_id: str) -> list[dict[str, Any]]:
        data = await self.call("GET", f"/v3/sign-flow/{flow_id}/file-download-url", "download url")
        files = list(data.get("files") or [])
        if not files:
            raise ProviderError(f"e签宝 flow {flow_id} has no signed file yet", retryable=True)
        return files

    async def download_signed(self, flow_id: str) -> bytes:
        signed, _ = await self._download(flow_id)
        return signed

    async def download_documents(self, flow_id: str) -> list[bytes]:
        """Every signed file of the flow, in the order of its `docs` (the request's order)."""
        order = [str(d.get("fileId")) for d in (await self._detail(flow_id)).get("docs") or []]
        files = {str(f.get("fileId")): f for f in await self._files(flow_id)}
        if sorted(order) != sorted(files):
            raise ProviderError(f"e签宝 flow {flow_id}: signed files do not match its documents", retryable=True)
        return [(await self._download(flow_id, files[file_id]))[0] for file_id in order]

    async def _download(self, flow_id: str,
                        file: Mapping[str, Any] | None = None) -> tuple[bytes, list[dict[str, Any]]]:
        """A signed file (the first by default) and, when trust roots are configured, its checked signatures."""
        url = str((file or (await self._files(flow_id))[0])["downloadUrl"])
        signed = rest.pdf_of(await rest.send(self.http, "GET", url, "e签宝 download"), f"e签宝 download of {flow_id}")
        if not self.config.trust_roots_file:
            return signed, []
        roots = load_trust_roots(Path(self.config.trust_roots_file).read_bytes())
        signers = len((await self._detail(flow_id)).get("signers") or [])
        try:
            checked = await asyncio.to_thread(verify_signed_pdf, signed, roots, signers)
        except SignatureCheckFailed as e:
            raise ProviderError(f"e签宝 signed file of {flow_id}: {e}", retryable=False) from e
        return signed, checked

    async def evidence(self, flow_id: str) -> dict[str, Any]:
        """e签宝's ids and the hash it reports, beside the hash of the bytes we received."""
        files = await self._files(flow_id)
        signed, signatures = await self._download(flow_id)
        return {"kind": "esign_cn", "sign_flow_id": flow_id,
                "files": [{"file_id": f.get("fileId"), "reported_sha256": f.get("fileHash")} for f in files],
                "downloaded_sha256": hashlib.sha256(signed).hexdigest(), "signatures": signatures}

    async def revoke(self, flow_id: str, reason: str) -> None:
        detail = await self._detail(flow_id)
        if int(detail.get("signFlowStatus", 1)) in FINAL_FLOW:
            return
        await self.call("POST", f"/v3/sign-flow/{flow_id}/revoke", "revoke", {"revokeReason": reason[:50] or "撤销"})

    async def remind(self, flow_id: str, signer_ids: list[str]) -> None:
        """e签宝 re-sends its own SMS/email notice (`urge`) to the pending signers asked for."""
        detail = await self._detail(flow_id)
        accounts = []
        for signer in detail.get("signers") or []:
            sid = _detail_signer_id(signer)
            if int(signer.get("signStatus", 1)) == 1 and (not signer_ids or sid in signer_ids):
                account = (signer.get("psnSigner") or {}).get("psnAccount") or {}
                accounts.append(account.get("accountMobile") or account.get("accountEmail"))
        if accounts:
            await self.call("POST", f"/v3/sign-flow/{flow_id}/urge", "urge",
                            {"urgedOperator": [{"psnAccount": a} for a in accounts if a]})


# ---- webhook ------------------------------------------------------------------------------


class EsignCnWebhook:
    """Verifies `X-Tsign-Open-SIGNATURE` (constant time, timestamp window) and normalises actions."""

    name = PROVIDER

    def __init__(self, config: EsignCnConfig) -> None:
        assert config.app_secret is not None
        self._secret = config.app_secret
        self._app_id = config.app_id
        self._tolerance_ms = config.callback_tolerance_s * 1000

    def parse(self, headers: Mapping[str, str], query: Mapping[str, str],
              body: bytes) -> tuple[list[ProviderEvent], WebhookReply]:
        verify_callback(self._secret.get_secret_value(), self._app_id, headers, query, body, self._tolerance_ms)
        try:
            data = load_json(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):  # genuinely from e签宝 but unreadable: acknowledge, never retried
            return [], REPLY
        return normalise(data), REPLY


def normalise(data: dict[str, Any]) -> list[ProviderEvent]:
    """A verified callback → events (none for actions SignBridge does not act on)."""
    action, flow_id = data.get("action"), str(data.get("signFlowId") or "")
    if not flow_id:
        return []
    if action == "SIGN_MISSON_COMPLETE":  # sic, e签宝's spelling
        try:
            kind = SIGNER_KINDS.get(int(data.get("signResult", 0)))
        except (TypeError, ValueError):
            kind = None
        if kind is None:
            return []
        signer = signer_of(data.get("customBizNum"))
        event = signer_event(flow_id, signer, kind, when=data.get("operateTime") or data.get("timestamp"),
                             reason=data.get("resultDescription"), raw=data)
        if signer is None:  # not ours to map (no customBizNum): keyed by the account, kept for the audit
            account = (data.get("operator") or {}).get("psnAccount") or {}
            who = account.get("accountMobile") or account.get("accountEmail") or data.get("signOrder")
            event = event.model_copy(update={"event_id": f"{PROVIDER}:{flow_id}:account:{who}:{kind}"})
        return [event]
    if action == "SIGN_FLOW_COMPLETE":
        try:
            kind = FLOW_KINDS.get(int(str(data.get("signFlowStatus", ""))))
        except ValueError:
            kind = None
        # "7" (refused) carries no signer: the SIGN_MISSON_COMPLETE refusal is the event.
        return [flow_event(flow_id, kind, when=data.get("signFlowFinishTime") or data.get("timestamp"), raw=data)] \
            if kind else []
    return []


def build(settings: Settings, engine: Any, blobs: BlobStore, http: httpx.AsyncClient) -> EsignCnProvider | None:
    config = EsignCnConfig()
    return EsignCnProvider(config, settings, blobs, http) if config.enabled else None


def webhook(settings: Settings) -> EsignCnWebhook | None:
    config = EsignCnConfig()
    return EsignCnWebhook(config) if config.enabled else None
