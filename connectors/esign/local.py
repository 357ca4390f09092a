"""The built-in e-signature provider: signing links served by SignBridge itself (`api/sign_pages.py`).

Why it is shaped this way:

- A link carries a 256-bit random token and the database keeps only its SHA-256, so a copy of
  the database (a backup, a support dump) never holds a usable link.
- Every signature is an incremental PAdES update on top of the flow's current version, so the
  final file starts with the original bytes. Signers of a parallel group race for that version:
  the flow advances under an optimistic lock (`version`) and the loser re-signs on the winner's
  version instead of overwriting it.
- Every change is first stored as a `LocalEvent` (an outbox), and the event handed to the page for
  live delivery is built from that row. A delivery that failed (Temporal out of reach, the API
  process killed) is signalled again by the worker's relay (`signbridge/intake/relay.py`) with the
  same event id, which the workflow deduplicates; `poll` replays the same rows.

HTTP stays in the pages; this module raises `LinkProblem` and the pages choose the status code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import threading
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import Engine

from connectors.esign import validated
from connectors.esign.base import ProviderError
from connectors.notify.base import NotifyError
from connectors.notify.registry import CODE_MINUTES, Notifier, code_notice
from signbridge.core.models import CreateFlowInput, OpenGroupInput, Person, ProviderEvent, SignerLink
from signbridge.core.settings import Settings
from signbridge.core.signers import clean_name
from signbridge.core.sso import SsoProof
from signbridge.pdf.jobs import SealSpec, Signed, SigningFailed, SignJob, sign_job
from signbridge.pdf.pades import ValidatedBase
from signbridge.pdf.pki import InstallationCA
from signbridge.pdf.pool import run_job
from store import audit
from store.blobs import BlobNotFound, BlobStore
from store.repos import local_flows, sign_codes
from store.tables import LocalDocument, LocalEvent, LocalFlow, LocalSigner, utcnow

log = logging.getLogger(__name__)

PROVIDER = "local"
MAX_REASON = 500
# A parallel group of n signers can make one signer lose the version race n-1 times.
SIGN_ATTEMPTS = 8
# One-time codes: valid this long, at most one a minute, and this many wrong tries lock the link.
CODE_TTL = timedelta(minutes=CODE_MINUTES)
CODE_GAP = timedelta(minutes=1)
MAX_WRONG_CODES = 5
LOCK_FOR = timedelta(minutes=15)
CODE_DIGITS = 6


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def flow_id_for(request_id: str) -> str:
    """Derived from the request id, so a retried `create_flow` finds the flow it already made."""
    return "local-" + hashlib.sha256(request_id.encode()).hexdigest()[:24]


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def normalise_name(name: str) -> str:
    """For comparing a typed name: cleaned like a signer's name (`clean_name`), NFKC (full-width
    letters typed by CJK input methods), collapsed whitespace, case-folded."""
    return " ".join(unicodedata.normalize("NFKC", clean_name(name)).split()).casefold()


def _fatal(message: str) -> ProviderError:
    return ProviderError(message, retryable=False)


ProblemKind = Literal["unknown", "gone", "invalid", "busy", "unsignable", "limited"]


class LinkProblem(Exception):
    """Why a signing link cannot be used, in Chinese and English.

    `kind`: "unknown" (no such link), "gone" (it worked once: signed, declined, withdrawn,
    expired, replaced), "invalid" (the submitted form is wrong), "busy" (retry later),
    "unsignable" (no signature can be added to this document: retrying will not help),
    "limited" (too many codes or wrong codes: `retry_after` seconds). `event`: what the flow
    must hear about it (the link locked), for the page to deliver.
    """

    def __init__(self, kind: ProblemKind, code: str, zh: str, en: str, retry_after: float | None = None) -> None:
        super().__init__(f"{zh} / {en}")
        self.kind = kind
        self.code = code
        self.zh = zh
        self.en = en
        self.retry_after = retry_after
        self.event: ProviderEvent | None = None


def unknown_link() -> LinkProblem:
    return LinkProblem("unknown", "link_not_found", "链接无效", "This link is not valid")


def _busy() -> LinkProblem:
    return LinkProblem("busy", "busy", "签署人较多，请稍后重试", "Many people are signing now; try again")


def _unsignable() -> LinkProblem:
    return LinkProblem("unsignable", "document_unsignable", "此文件无法添加电子签名，请联系发起人重新发送文件",
                       "A signature cannot be added to this document; ask the sender to send it again")


def _unavailable() -> LinkProblem:
    return LinkProblem("busy", "temporarily_unavailable", "签署服务暂时不可用，请稍后重试",
                       "Signing is unavailable for a moment; try again shortly")


class _SigningFailed(Exception):
    """pyHanko or the certificate refused this signature: the document or the name, not the system."""


def link_problem(signer: LocalSigner, flow: LocalFlow, now: datetime) -> LinkProblem | None:
    """None while the signer may act on this link; otherwise the reason, in words."""
    if signer.status == "signed":
        return LinkProblem("gone", "link_signed", "您已签署此文件，此链接已失效",
                           "You have already signed this document")
    if signer.status == "declined":
        return LinkProblem("gone", "link_declined", "您已拒绝签署此文件，此链接已失效",
                           "You declined to sign this document")
    if flow.status == "declined":
        return LinkProblem("gone", "flow_declined", "另一位签署人已拒绝签署，此签署已终止",
                           "Another signer declined, so this signing request has ended")
    if signer.status == "replaced":
        return LinkProblem("gone", "signer_replaced", "发起人已指定其他人代替您签署，此链接已失效",
                           "The sender asked someone else to sign in your place; this link no longer works")
    if flow.status == "revoked" or signer.status == "dead":
        return LinkProblem("gone", "link_revoked", "此签署已被撤销，链接已失效",
                           "This signing request was withdrawn")
    if flow.status != "open" or signer.status != "open":
        return LinkProblem("gone", "link_inactive", "此链接已失效", "This link is no longer active")
    expires = [flow.expires_at, *([signer.token_expires_at] if signer.token_expires_at else [])]
    if any(now >= _aware(t) for t in expires):
        return LinkProblem("gone", "link_expired", "此链接已过期", "This link has expired")
    return None


def find_signer_by_token(engine: Engine, token: str) -> tuple[LocalSigner, LocalFlow] | None:
    """The signer (and flow) a link belongs to, looked up by the token's hash."""
    if not token or len(token) > 200:
        return None
    return local_flows.by_token_hash(engine, token_hash(token))


def stored_event(row: LocalEvent) -> ProviderEvent:
    """Live delivery, the relay and `poll` all build the event here, so they carry identical content."""
    return ProviderEvent(event_id=row.event_id, provider=PROVIDER, flow_id=row.flow_id, kind=row.kind,  # type: ignore[arg-type]
                         signer_id=row.signer_id, reason=row.reason, occurred_at=_aware(row.occurred_at))


# ---- the installation CA ------------------------------------------------------------------

_CA_CACHE: dict[Path, InstallationCA] = {}
_CA_LOCK = threading.Lock()


def _ca_dir(settings: Settings) -> Path:
    return (settings.data_dir / "ca").resolve()


def installation_ca(settings: Settings) -> InstallationCA:
    """Loaded once per data dir (the key is read from disk, or made on first use) — call in a thread."""
    directory = _ca_dir(settings)
    with _CA_LOCK:
        ca = _CA_CACHE.get(directory)
        if ca is None:
            ca = InstallationCA.load_or_create(directory)
            _CA_CACHE[directory] = ca
        return ca


class LocalProvider:
    """`ESignProvider` for the embedded signing pages. State lives in `local_*` tables."""

    name = PROVIDER
    incremental = True  # each signature is an incremental update of the original bytes
    org_seals = True  # an organisation's seal: its own certificate and the seal image, a signature of its own
    # the chat reaches internal signers; externals need a contact anyway (checked for every provider)
    signer_contacts: frozenset[str] = frozenset()

    def __init__(self, settings: Settings, engine: Engine, blobs: BlobStore) -> None:
        self.settings = settings
        self.engine = engine
        self.blobs = blobs

    async def create_flow(self, req: CreateFlowInput) -> str:
        flow_id = flow_id_for(req.request_id)
        if local_flows.flow(self.engine, flow_id) is not None:
            return flow_id
        if not self.blobs.exists(req.document.blob_key):
            raise _fatal(f"document blob {req.document.blob_key} is not in the blob store")
        signers: list[LocalSigner] = []
        seen: set[str] = set()
        for group, people in enumerate(req.groups):
            for person in people:
                if person.id in seen:  # one signature per person, at their first place in the order
                    continue
                seen.add(person.id)
                org = person.org
                signers.append(LocalSigner(flow_id=flow_id, signer_id=person.id, name=person.name, email=person.email,
                                           mobile=person.mobile, external=person.external, group=group,
                                           position=len(seen), org_name=org.name if org else None,
                                           org_credit_code=org.credit_code if org else None,
                                           seal=bool(org and org.seal), seal_kind=org.seal_kind if org else None,
                                           seal_image_key=org.seal_image if org else None))
        docs = req.all_documents
        local_flows.create(self.engine, LocalFlow(
            flow_id=flow_id, request_id=req.request_id, title=req.title, original_sha256=req.document.sha256,
            current_blob_key=req.document.blob_key, current_sha256=req.document.sha256, version=0, status="open",
            expires_at=req.expires_at), signers, [
            LocalDocument(flow_id=flow_id, position=i, name=doc.name, original_sha256=doc.sha256,
                          current_blob_key=doc.blob_key,
                          placements=json.dumps({placement_key(p.signer_id, p.kind): [p.page, *p.box]
                                                 for p in req.placements if p.document == i},
                                                ensure_ascii=False))
            for i, doc in enumerate(docs)])
        return flow_id

    async def open_group(self, req: OpenGroupInput) -> list[SignerLink]:
        """Fresh tokens for the group's pending signers; tokens minted by an earlier attempt die,
        which is safe because that attempt's result never reached the workflow (links never sent)."""
        flow = local_flows.flow(self.engine, req.flow_id)
        if flow is None:
            raise _fatal(f"unknown local flow {req.flow_id}")
        if flow.status != "open":
            raise _fatal(f"local flow {req.flow_id} is {flow.status}")
        pending = [s for s in local_flows.signers_in_group(self.engine, req.flow_id, req.group)
                   if s.status not in local_flows.FINAL_SIGNER_STATES]
        tokens = {s.id: secrets.token_urlsafe(32) for s in pending if s.id is not None}
        opened = local_flows.reopen(self.engine, {row: token_hash(token) for row, token in tokens.items()},
                                    req.expires_at)
        return [SignerLink(signer_id=s.signer_id, url=f"{self.settings.public_url}/sign/{tokens[s.id]}")
                for s in pending if s.id in opened]

    async def poll(self, flow_id: str) -> list[ProviderEvent]:
        return [stored_event(r) for r in local_flows.events(self.engine, flow_id)]

    async def download_signed(self, flow_id: str) -> bytes:
        flow = local_flows.flow(self.engine, flow_id)
        if flow is None:
            raise _fatal(f"unknown local flow {flow_id}")
        if flow.status != "completed":
            raise ProviderError(f"local flow {flow_id} is {flow.status}, not completed")
        try:
            return self.blobs.get(flow.current_blob_key)
        except BlobNotFound as e:
            raise ProviderError(f"signed document of {flow_id} is missing from the blob store") from e

    async def download_documents(self, flow_id: str) -> list[bytes]:
        """Every document of a completed flow, in order (`SeveralDocuments`)."""
        first = await self.download_signed(flow_id)
        docs = local_flows.documents(self.engine, flow_id)
        try:
            return [first] if not docs else [self.blobs.get(d.current_blob_key) for d in docs]
        except BlobNotFound as e:
            raise ProviderError(f"a signed document of {flow_id} is missing from the blob store") from e

    async def evidence(self, flow_id: str) -> dict[str, Any]:
        """The signatures are the evidence: PAdES, chained to the installation CA (checked at finish)."""
        return {"kind": "pades", "trust_root_sha256": _ca_fingerprint(self.settings)}

    async def revoke(self, flow_id: str, reason: str) -> None:
        """Links of everyone who has not acted die. A completed, declined or revoked flow is left as is."""
        local_flows.revoke(self.engine, flow_id)

    async def remind(self, flow_id: str, signer_ids: list[str]) -> None:
        """No-op: the built-in provider has no channel of its own; the chat reminder carries the link."""

    async def replace_signer(self, flow_id: str, old_id: str, new: Person, opened: bool,
                             expires_at: datetime) -> SignerLink | None:
        """`ReplacesSigners`: `old_id`'s link dies (the page says someone else signs instead) and
        `new` takes their group, stamp position and signature fields; with `opened` (their group
        signs now) a fresh link for `new`. Idempotent: a retry finds the replacement in place and
        mints it a new token (the link the earlier attempt made never reached anyone)."""
        flow = local_flows.flow(self.engine, flow_id)
        if flow is None:
            raise _fatal(f"unknown local flow {flow_id}")
        if flow.status != "open":
            raise _fatal(f"local flow {flow_id} is {flow.status}")
        row = local_flows.replace_signer(self.engine, flow_id, old_id, LocalSigner(
            flow_id=flow_id, signer_id=new.id, name=new.name, email=new.email, mobile=new.mobile,
            external=new.external, group=0, position=0))
        if row is None:
            raise _fatal(f"{old_id} cannot be replaced in {flow_id}: they already signed or declined")
        if not opened or row.id is None:
            return None
        token = secrets.token_urlsafe(32)
        if not local_flows.reopen(self.engine, {row.id: token_hash(token)}, expires_at):
            raise _fatal(f"the replacement {new.id} in {flow_id} already acted")
        return SignerLink(signer_id=new.id, url=f"{self.settings.public_url}/sign/{token}")


# ---- acting on a link (used by api/sign_pages.py) ----------------------------------------


@dataclass(frozen=True)
class SignResult:
    event: ProviderEvent
    signer_id: str
    document_sha256: str  # the version this signature produced
    before_sha256: str


def _load(engine: Engine, token: str) -> tuple[LocalSigner, LocalFlow]:
    found = find_signer_by_token(engine, token)
    if found is None:
        raise unknown_link()
    problem = link_problem(*found, utcnow())
    if problem:
        raise problem
    return found


def _reread_problem(engine: Engine, signer_row_id: int | None, hsh: str) -> LinkProblem | None:
    """After a lost race or a refused update: is the link still usable at all?"""
    signer, flow = local_flows.signer_and_flow(engine, signer_row_id)
    if signer is None or flow is None:
        return unknown_link()
    if signer.token_hash != hsh:
        return LinkProblem("gone", "link_replaced", "此链接已被新的链接取代，请使用最新收到的链接",
                           "A newer link replaced this one; use the latest link you received")
    return link_problem(signer, flow, utcnow())


Placed = tuple[int, tuple[float, float, float, float]]


def placement_key(signer_id: str, kind: str = "sign") -> str:
    """The key of a placement in `LocalDocument.placements`: the signer id for their signature,
    "seal:<signer id>" for the seal of the organisation they sign for."""
    return signer_id if kind == "sign" else f"{kind}:{signer_id}"


def placement_of(document: LocalDocument, signer_id: str, kind: str = "sign") -> Placed | None:
    """Where `signer_id` signs `document` (a template field or beside an anchor), if anywhere."""
    spot = json.loads(document.placements or "{}").get(placement_key(signer_id, kind))
    return (int(spot[0]), (float(spot[1]), float(spot[2]), float(spot[3]), float(spot[4]))) if spot else None


async def _sign_bytes(blobs: BlobStore, blob_key: str, settings: Settings, engine: Engine | None,
                      signer: LocalSigner, signed_at: datetime, placement: Placed | None = None,
                      seal_placement: Placed | None = None) -> str:
    """Sign `blob_key` in the signing pool; returns the new version's blob key (= its SHA-256).

    The new signatures are validated there too, on top of the version they extend, and the new
    version recorded as validated (`connectors.esign.validated`): `finish` then has nothing left
    to validate but what no signing page checked. Blob and database work runs in a thread, so
    the event loop keeps answering callbacks meanwhile."""
    job = await asyncio.to_thread(_sign_job, blobs, blob_key, settings, engine, signer, signed_at, placement,
                                  seal_placement)
    try:
        signed = await run_job(settings.signing_processes, sign_job, job)
    except SigningFailed as e:
        raise _SigningFailed(str(e)) from e
    return await asyncio.to_thread(_keep_signed, blobs, engine, signer, signed)


def _sign_job(blobs: BlobStore, blob_key: str, settings: Settings, engine: Engine | None, signer: LocalSigner,
              signed_at: datetime, placement: Placed | None, seal_placement: Placed | None) -> SignJob:
    """What the pool needs to sign `blob_key` as `signer`: the bytes, the seal, the validated base."""
    current = blobs.get(blob_key)
    seal = None
    if signer.seal and signer.org_name and signer.org_credit_code:
        # The organisation's seal: a second incremental signature, by the organisation's own
        # certificate, whose appearance is the uploaded seal or one drawn for its name.
        seal = SealSpec(org_name=signer.org_name, credit_code=signer.org_credit_code,
                        image=blobs.get(signer.seal_image_key) if signer.seal_image_key else None,
                        kind=signer.seal_kind or "", placement=seal_placement)
    base = None
    if engine is not None:  # the version signed, as validated before (an unsigned original: trivially)
        found = validated.base_for(engine, current)
        base = found if found is not None and found.size == len(current) else \
            ValidatedBase(size=len(current), sha256=hashlib.sha256(current).hexdigest(), reports=())
    return SignJob(data=current, ca_dir=str(_ca_dir(settings)), signer_id=signer.signer_id, name=signer.name,
                   email=signer.email or "", position=signer.position, signed_at=signed_at,
                   font_path=str(settings.stamp_font) if settings.stamp_font else None, placement=placement,
                   seal=seal, tz=settings.zone, base=base)


def _keep_signed(blobs: BlobStore, engine: Engine | None, signer: LocalSigner, signed: Signed) -> str:
    """Store the new version; record it as validated when its new signatures passed."""
    key = blobs.put(signed.data)
    if engine is not None and signed.validation is not None and not validated.record(engine, signed.data,
                                                                                      signed.validation):
        log.warning("the new signature on %s by %s does not validate: %s", signer.flow_id, signer.signer_id,
                    signed.validation.reports)
    return key


async def _signed_version(settings: Settings, blobs: BlobStore, blob_key: str, signer: LocalSigner,
                          signed_at: datetime, placement: Placed | None = None,
                          seal_placement: Placed | None = None, engine: Engine | None = None) -> str:
    """The new version's blob key, or a LinkProblem the page can show: never an exception that
    would become a 500. `prepare` dry-runs this signature, so reaching "unsignable" means a
    document or name that slipped past it (e.g. a flow started before that check existed)."""
    try:
        return await _sign_bytes(blobs, blob_key, settings, engine, signer, signed_at, placement, seal_placement)
    except _SigningFailed as e:
        log.error("cannot sign %s for signer %s: %s", signer.flow_id, signer.signer_id, e)
        raise _unsignable() from e
    except Exception as e:  # the blob store, the CA's disk, signing processes that keep dying: the system
        log.exception("signing %s for signer %s failed", signer.flow_id, signer.signer_id)
        raise _unavailable() from e


def _commit_signature(engine: Engine, signer: LocalSigner, hsh: str, read_version: int, new_key: str,
                      now: datetime, ip: str | None, user_agent: str | None,
                      document_keys: dict[int, str] | None = None,
                      verification: str | None = None) -> LocalEvent | None:
    """Advance the flow from `read_version` and mark the signer signed, atomically.

    None when another signature advanced the flow first (re-sign on top of it); LinkProblem
    when the link died meanwhile (revoked, replaced, signed in another tab).
    """
    event = LocalEvent(event_id=f"{signer.flow_id}:{signer.signer_id}:signed", flow_id=signer.flow_id,
                       kind="signed", signer_id=signer.signer_id, occurred_at=now)
    try:
        if not local_flows.commit_signature(engine, signer, hsh, read_version, new_key, now, ip, user_agent, event,
                                            document_keys, verification):
            return None
    except local_flows.Refused:
        raise _reread_problem(engine, signer.id, hsh) or _busy() from None
    return event


def verified_by_sso(signer: LocalSigner, sso: SsoProof | None) -> str | None:
    """How chat single sign-on verified this signer ("chat_sso:feishu"), or None: the proof the
    page holds (its session cookie, `signbridge/intake/sso.py`) must be for this very signer."""
    if sso is None or sso.flow_id != signer.flow_id or sso.signer_id != signer.signer_id:
        return None
    return sso.method


async def sign(settings: Settings, engine: Engine, blobs: BlobStore, token: str, *, typed_name: str,
               consent: bool, ip: str | None, user_agent: str | None, code: str = "",
               sso: SsoProof | None = None, notifier: Notifier | None = None) -> SignResult:
    """Sign the flow's current version as this link's signer; returns the event to deliver.

    A signer verified by chat SSO (`sso`) signs with the consent alone; anyone else types their
    name and, where a code can reach them, a one-time code. Raises LinkProblem for a dead link, a
    missing consent, a name that is not the signer's, or a missing, wrong, expired or spent code
    (see `verification_needed`).
    """
    signer, flow = _load(engine, token)
    if not consent:
        raise LinkProblem("invalid", "consent_required", "请勾选同意以电子方式签署",
                          "Tick the box to agree to sign electronically")
    sso_method = verified_by_sso(signer, sso)
    if sso_method is None and (not typed_name.strip()
                               or normalise_name(typed_name) != normalise_name(signer.name)):
        raise LinkProblem("invalid", "name_mismatch", f"请输入您的姓名「{signer.name}」以确认签署",
                          f"Type your name “{signer.name}” to sign")
    verification = sso_method or check_code(settings, engine, signer, flow, code, ip, user_agent, notifier)
    hsh = token_hash(token)
    now = utcnow()
    for _ in range(SIGN_ATTEMPTS):
        before_sha, version = flow.current_sha256, flow.version
        docs = local_flows.documents(engine, flow.flow_id)  # one consent signs each document
        keys = {d.position: await _signed_version(settings, blobs, d.current_blob_key, signer, now,
                                                  placement_of(d, signer.signer_id),
                                                  placement_of(d, signer.signer_id, "seal"), engine) for d in docs}
        new_key = keys[0] if docs else await _signed_version(settings, blobs, flow.current_blob_key, signer, now,
                                                             engine=engine)
        row = _commit_signature(engine, signer, hsh, version, new_key, now, ip, user_agent, keys, verification)
        if row is not None:
            break
        problem = _reread_problem(engine, signer.id, hsh)
        if problem:
            raise problem
        fresh = local_flows.flow(engine, flow.flow_id)
        assert fresh is not None
        flow = fresh
    else:
        raise _busy()
    assert row is not None
    audit.record(engine, request_id=flow.request_id, key=f"local:{signer.signer_id}:signed",
                 action="signer.signed", actor=signer.signer_id,
                 detail={"flow_id": flow.flow_id, "name_typed": typed_name, "position": signer.position,
                         "before": before_sha, "after": new_key, "version": version + 1,
                         "verification": verification,
                         **({"sso_subject": sso.subject, "sso_name": sso.name} if sso and sso_method else {})},
                 ip=ip, user_agent=user_agent, document_sha256=new_key)
    return SignResult(event=stored_event(row), signer_id=signer.signer_id, document_sha256=new_key,
                      before_sha256=before_sha)


def opened(engine: Engine, signer: LocalSigner, flow: LocalFlow, ip: str | None, user_agent: str | None) -> None:
    """The first time a signer opens their page (for the certificate of completion: from where, when)."""
    audit.record(engine, request_id=flow.request_id, key=f"local:{signer.signer_id}:opened", action="signer.opened",
                 actor=signer.signer_id, detail={"flow_id": flow.flow_id}, ip=ip, user_agent=user_agent)


async def decline(engine: Engine, token: str, *, reason: str, ip: str | None,
                  user_agent: str | None) -> ProviderEvent:
    """Decline on this link. It ends the flow at once (the other links die), as a declined
    contract must not collect more signatures even while the workflow is not running."""
    signer, _ = _load(engine, token)
    reason = reason.strip()
    if not reason:
        raise LinkProblem("invalid", "reason_required", "请填写拒绝签署的原因",
                          "Please give a reason for declining")
    if len(reason) > MAX_REASON:
        raise LinkProblem("invalid", "reason_too_long", f"原因不能超过 {MAX_REASON} 个字",
                          f"The reason must be at most {MAX_REASON} characters")
    hsh = token_hash(token)
    now = utcnow()
    declined = LocalEvent(event_id=f"{signer.flow_id}:{signer.signer_id}:declined", flow_id=signer.flow_id,
                          kind="declined", signer_id=signer.signer_id, reason=reason, occurred_at=now)
    try:
        local_flows.decline(engine, signer, hsh, declined, ip, user_agent)
    except local_flows.Refused:
        raise _reread_problem(engine, signer.id, hsh) or _busy() from None
    flow = local_flows.flow(engine, signer.flow_id)
    assert flow is not None
    audit.record(engine, request_id=flow.request_id, key=f"local:{signer.signer_id}:declined",
                 action="signer.declined", actor=signer.signer_id,
                 detail={"flow_id": flow.flow_id, "reason": reason, "position": signer.position},
                 ip=ip, user_agent=user_agent, document_sha256=flow.current_sha256)
    row = local_flows.event(engine, declined.event_id)
    assert row is not None
    return stored_event(row)


# ---- who is signing: single sign-on, or a one-time code ----------------------------------


def verification_needed(settings: Settings, signer: LocalSigner, notifier: Notifier | None = None) -> bool:
    """Whether this signer must enter a one-time code: codes are on (SIGNBRIDGE_SIGN_CODES) and a
    code can reach them. A signer no configured sender can reach — an internal chat user whose
    directory has no email or mobile, or any internal signer of an installation with no email or
    SMS service — signs with the link their chat delivered to them privately. (External signers
    no sender can reach never get a link: `prepare` refuses them.) `notifier` None: only the
    contact on record counts."""
    if settings.sign_codes != "on" or not (signer.email or signer.mobile):
        return False
    return notifier is None or notifier.route(signer.email, signer.mobile) is not None


def code_hash(settings: Settings, signer_row: int, code: str) -> str:
    """HMAC of the code under a key derived from the server secret, bound to the signer's row:
    the database never holds a usable code, and a code works only on the link it was sent for."""
    key = hmac.new(settings.link_secret.get_secret_value().encode(), b"signbridge sign-code v1", hashlib.sha256)
    return hmac.new(key.digest(), f"{signer_row}:{code}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class CodeSent:
    channel: str  # email | sms
    sent_to: str  # masked
    valid_minutes: int


def _method(channel: str) -> str:
    return "sms_code" if channel == "sms" else "email_code"


def _code_audit(engine: Engine, flow: LocalFlow, signer: LocalSigner, action: str, detail: dict[str, Any],
                ip: str | None, user_agent: str | None) -> None:
    audit.record(engine, request_id=flow.request_id, key=f"local:{signer.signer_id}:{action}:{secrets.token_hex(8)}",
                 action=action, actor=signer.signer_id, detail={"flow_id": flow.flow_id, **detail},
                 ip=ip, user_agent=user_agent, document_sha256=flow.current_sha256)


def _locked(until: datetime, now: datetime) -> LinkProblem:
    minutes = max(1, int((until - now).total_seconds() + 59) // 60)
    return LinkProblem("limited", "link_locked", f"验证码错误次数过多，链接已锁定，请 {minutes} 分钟后再试",
                       f"Too many wrong codes: this link is locked; try again in {minutes} minute(s)",
                       retry_after=(until - now).total_seconds())


async def request_code(settings: Settings, engine: Engine, notifier: Notifier, token: str, *, ip: str | None,
                       user_agent: str | None) -> CodeSent:
    """Send a fresh 6-digit code to the signer's mobile (SMS) or email; earlier codes stop working.

    LinkProblem when the link is dead, the signer needs no code, a code went out less than a
    minute ago or the link is locked (429 with the seconds to wait), or no sender can reach them.
    """
    signer, flow = _load(engine, token)
    assert signer.id is not None
    if not verification_needed(settings, signer, notifier):
        raise LinkProblem("invalid", "code_not_needed", "此链接无需验证码", "This link needs no code")
    route = notifier.route(signer.email, signer.mobile)
    if route is None:
        log.error("no email or SMS sender can reach signer %s of %s (configure SIGNBRIDGE_SMTP_URL or an SMS "
                  "service)", signer.signer_id, flow.flow_id)
        raise LinkProblem("busy", "code_channel_unavailable", "暂时无法发送验证码，请联系发起人",
                          "A code cannot be sent right now; please contact the sender")
    now = utcnow()
    claimed = sign_codes.claim_send(engine, signer.id, now, CODE_GAP)
    if isinstance(claimed, sign_codes.Refusal):
        _code_audit(engine, flow, signer, "signer.code_refused", {"reason": claimed.kind}, ip, user_agent)
        if claimed.kind == "locked":
            raise _locked(now + timedelta(seconds=claimed.retry_after), now)
        wait = int(claimed.retry_after + 0.999)
        raise LinkProblem("limited", "code_too_soon", f"验证码已发送，请 {wait} 秒后再重新获取",
                          f"A code was just sent; you can ask for a new one in {wait} s", retry_after=wait)
    code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
    code_id = sign_codes.store(engine, signer.id, route.channel, route.masked, code_hash(settings, signer.id, code),
                               now, CODE_TTL)
    try:
        await route.sender.send(route.to, code_notice(code), key=f"{flow.flow_id}:{signer.signer_id}:code:{code_id}")
    except NotifyError as e:
        sign_codes.forget(engine, code_id)
        sign_codes.release(engine, signer.id, claimed, now)
        _code_audit(engine, flow, signer, "signer.code_failed",
                    {"channel": route.channel, "sent_to": route.masked, "error": e.message}, ip, user_agent)
        if e.retry_after:
            wait = int(e.retry_after + 0.999)
            raise LinkProblem("limited", "code_rate_limited", f"发送过于频繁，请 {wait} 秒后再试",
                              f"Too many messages to this number; try again in {wait} s", retry_after=wait) from e
        log.warning("could not send a code to signer %s of %s: %s", signer.signer_id, flow.flow_id, e.message)
        raise LinkProblem("busy", "code_send_failed", "验证码发送失败，请稍后重试",
                          "The code could not be sent; try again shortly") from e
    _code_audit(engine, flow, signer, "signer.code_sent", {"channel": route.channel, "sent_to": route.masked},
                ip, user_agent)
    return CodeSent(route.channel, route.masked, CODE_MINUTES)


def check_code(settings: Settings, engine: Engine, signer: LocalSigner, flow: LocalFlow, code: str,
               ip: str | None, user_agent: str | None, notifier: Notifier | None = None) -> str:
    """The verification method ("email_code", "sms_code", or "chat_link" when no code is needed: the
    signer only held the link), or LinkProblem for a missing, malformed, wrong, expired or spent
    code and a locked link. Every failed try is in the audit trail, and the try that locks the
    link carries a "locked" event."""
    if not verification_needed(settings, signer, notifier):
        return "chat_link"
    assert signer.id is not None
    code = code.strip()
    if not code:
        raise LinkProblem("invalid", "code_required", "请先获取并输入验证码",
                          "Ask for a code and enter it to sign")
    now = utcnow()
    if not (len(code) == CODE_DIGITS and code.isascii() and code.isdigit()):
        verdict = sign_codes.check(engine, signer.id, lambda _: False, now, MAX_WRONG_CODES, LOCK_FOR)
    else:
        candidate = code_hash(settings, signer.id, code)
        verdict = sign_codes.check(engine, signer.id, lambda stored: hmac.compare_digest(stored, candidate), now,
                                   MAX_WRONG_CODES, LOCK_FOR)
    if verdict.kind == "ok":
        return _method(verdict.channel)
    _code_audit(engine, flow, signer, "signer.code_rejected", {"reason": verdict.kind}, ip, user_agent)
    if verdict.kind == "locked":
        assert verdict.locked_until is not None
        problem = _locked(verdict.locked_until, now)
        if verdict.newly_locked:
            problem.event = _lock_event(engine, signer, verdict.locked_until)
        raise problem
    if verdict.kind == "none":
        raise LinkProblem("invalid", "code_not_sent", "请先点击「获取验证码」", "Ask for a code first")
    if verdict.kind == "expired":
        raise LinkProblem("invalid", "code_expired", "验证码已过期，请重新获取",
                          "This code has expired; ask for a new one")
    if verdict.kind == "used":
        raise LinkProblem("invalid", "code_used", "此验证码已使用过，请重新获取",
                          "This code was already used; ask for a new one")
    raise LinkProblem("invalid", "code_wrong", f"验证码不正确，还可尝试 {verdict.tries_left} 次",
                      f"Wrong code; {verdict.tries_left} tries left")


def _lock_event(engine: Engine, signer: LocalSigner, until: datetime) -> ProviderEvent | None:
    """Tell the flow (card) that this signer's link is locked until `until`."""
    row = LocalEvent(event_id=f"{signer.flow_id}:{signer.signer_id}:locked:{until:%Y%m%d%H%M%S}",
                     flow_id=signer.flow_id, kind="locked", signer_id=signer.signer_id,
                     reason=until.astimezone(UTC).isoformat(), occurred_at=utcnow())
    local_flows.add_event(engine, row)
    stored = local_flows.event(engine, row.event_id)
    return stored_event(stored) if stored else None


def _ca_fingerprint(settings: Settings) -> str:
    return hashlib.sha256(installation_ca(settings).certificate.dump()).hexdigest()


def build(settings: Settings, engine: Engine, blobs: BlobStore, http: Any = None) -> LocalProvider:
    """Always available: the embedded default needs no account."""
    return LocalProvider(settings, engine, blobs)
