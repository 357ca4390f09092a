"""REST for self-built systems and operators: `/api/v1/signing-requests[...]` (bearer API key).

Thin on purpose: uploads go to the blob store, everything else is a workflow start, query or
update. Listing, a request Temporal no longer has, and the signed files read the database and
blob store: a request stays findable after Temporal's retention dropped its history.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.engine import Engine
from starlette.datastructures import UploadFile
from starlette.types import Scope

from activities import certificates
from api.deps import BlobsDep, EngineDep, IntakeDep, SettingsDep
from api.errors import ApiError, responses
from signbridge.core import links
from signbridge.core.chat import (
    Applied,
    Busy,
    ChatAction,
    Deadline,
    NotFound,
    Outcome,
    Refused,
    Started,
    request_id_for,
)
from signbridge.core.links import download_name
from signbridge.core.models import (
    Actor,
    ChatRef,
    DocumentInfo,
    DocumentSource,
    OrgParty,
    Person,
    SigningRequest,
    SignStatus,
    StatusView,
    TemplateUse,
    Timing,
)
from signbridge.core.settings import Settings
from signbridge.core.untrusted import (
    MAX_WORKFLOW_ID_CHARS,
    Identifier,
    UntrustedInputError,
    load_json,
    problems,
    same,
)
from signbridge.intake import Intake
from store import audit
from store.blobs import BlobNotFound, sha256_hex
from store.repos import documents, signing_records
from store.tables import SigningRequestRecord

router = APIRouter(tags=["signing requests"])
files_router = APIRouter(tags=["files"])  # its own tag only: Swagger UI lists a route once per tag

# A REST caller gets its answer within a chat platform's deadline too: accepted by Temporal within
# 3 s, else 503 with Retry-After (an update's result is awaited longer, else 202).
API = Deadline(accept=3.0, result=25.0)


_bearer = HTTPBearer(auto_error=False, description="One of the keys in SIGNBRIDGE_API_KEYS")


def require_api_key(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """Bearer key check in constant time; returns a short, loggable id of the key (never the key)."""
    token = credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else ""
    if token:
        for key in settings.api_key_list:
            if same(token, key):
                return "api:" + sha256_hex(key.encode())[:8]
    raise ApiError(401, "unauthorized", "A valid `Authorization: Bearer <key>` is required (SIGNBRIDGE_API_KEYS)")


ApiCaller = Annotated[str, Depends(require_api_key)]


# Bounds on what a REST caller names, checked before anything is used: ids become workflow ids
# and search attributes (Temporal refuses long ones), everything lands in the flow's history.
MAX_SIGNERS = 100
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")  # visible ASCII: it becomes part of the workflow id


class OrgIn(BaseModel):
    """The registered organisation a signer signs for (checked at `prepare`), and whether its seal
    is applied."""

    name: str = Field(min_length=1, max_length=200, examples=["乙方科技有限公司"])
    seal: bool = False
    seal_kind: Literal["公章", "合同专用章"] = "公章"


class PersonIn(BaseModel):
    """A signer or the initiator. Names are checked (and cleaned) at `prepare`, which says why in
    the chat; here only what no check should ever have to read is refused."""

    id: Identifier
    name: str = Field(min_length=1, max_length=1000)
    email: str | None = Field(default=None, max_length=320)
    mobile: str | None = Field(default=None, max_length=64)
    external: bool = False
    org: OrgIn | None = None

    def person(self) -> Person:
        org = OrgParty(**self.org.model_dump()) if self.org else None
        return Person(**self.model_dump(exclude={"org"}), org=org)


class ChatIn(BaseModel):
    platform: str = Field(default="webhook", pattern=r"^[a-z_]{1,32}$")
    tenant: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    chat_id: Identifier
    chat_kind: Literal["group", "direct"] = "group"
    source_event_id: Identifier


class NewRequest(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    initiator: PersonIn
    groups: list[Annotated[list[PersonIn], Field(max_length=MAX_SIGNERS)]] = Field(max_length=MAX_SIGNERS)
    file_url: str | None = Field(default=None, max_length=2000)
    file_name: str | None = Field(default=None, min_length=1, max_length=255)
    file_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    chat: ChatIn | None = None
    provider: str | None = Field(default=None, pattern=r"^[a-z_]{1,32}$")
    deadline_days: float | None = Field(default=None, gt=0, le=365)
    reminder_max: int | None = Field(default=None, ge=0, le=20)
    template: str | None = Field(default=None, min_length=1, max_length=100)
    fields: dict[Annotated[str, Field(max_length=100)], Annotated[str, Field(max_length=1000)]] = Field(
        default_factory=dict, max_length=100)
    roles: dict[Annotated[str, Field(max_length=40)], Identifier] = Field(default_factory=dict, max_length=50)
    cc: list[PersonIn] = Field(default_factory=list, max_length=MAX_SIGNERS)

    @model_validator(mode="after")
    def _few_enough_signers(self) -> NewRequest:
        if sum(len(group) for group in self.groups) > MAX_SIGNERS:
            raise ValueError(f"at most {MAX_SIGNERS} signers in one request")
        return self


class Accepted(BaseModel):
    request_id: str
    started: bool


def _timing(settings: Settings, body: NewRequest) -> Timing:
    """The installation's timing with what the request may override."""
    timing = settings.timing()
    if body.deadline_days:
        timing.deadline = timedelta(days=body.deadline_days)
    if body.reminder_max is not None:
        timing.reminder_max = body.reminder_max
    return timing


def _unless_failed(outcome: Outcome) -> Outcome:
    """An `ApiError` for every outcome that is not a success, with the status that fits it."""
    match outcome:
        case Refused():
            raise ApiError(400 if outcome.code == "InvalidArgument" else 403 if outcome.permission else 409,
                           outcome.code, outcome.en)
        case NotFound(ended=True):
            raise ApiError(409, "already_ended", f"The request {outcome.request_id} has already ended")
        case NotFound():
            raise ApiError(404, "not_found", f"No signing request {outcome.request_id}")
        case Busy():
            raise _busy(outcome)
    return outcome


def refuse_while_paused(intake: Intake) -> None:
    """`signbridge pause`: new requests get 503 with the operator's reason; open flows carry on."""
    reason = intake.pause.reason()
    if reason is not None:
        raise ApiError(503, "paused", f"E-signing is paused: {reason}. Use the offline signing process.",
                       retry_after=60)


def _busy(outcome: Busy) -> ApiError:
    return ApiError(503, "unavailable", "Temporal did not answer in time; retry", retry_after=outcome.retry_after)


def _idempotency_key(value: str | None) -> str | None:
    if value is not None and not IDEMPOTENCY_KEY.fullmatch(value):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-200 visible ASCII characters")
    return value


def _new_request(raw: bytes | str) -> NewRequest:
    try:
        return NewRequest.model_validate(load_json(raw))
    except UntrustedInputError as e:  # not JSON keeps its old code; too deep was a 500 before it had one
        raise ApiError(400, "invalid_request" if e.code == "invalid_json" else e.code, str(e)) from e
    except ValidationError as e:
        raise ApiError(400, "invalid_request", f"Invalid request body: {problems(e)}") from e


UPLOAD_PATHS = ("/api/v1/signing-requests", "/api/v1/templates", "/api/v1/bulk-sends")


def is_upload(scope: Scope) -> bool:
    """The routes that take a document in their body (see the request limits in `create_app`)."""
    return scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS


RequestId = Annotated[str, Path(min_length=1, max_length=MAX_WORKFLOW_ID_CHARS)]
CREATE_EXAMPLE: dict[str, Any] = {
    "title": "服务器设备采购合同",
    "initiator": {"id": "u-1", "name": "张三", "email": "zs@corp.example"},
    "groups": [[{"id": "u-2", "name": "李四"}, {"id": "u-3", "name": "王五"}],
               [{"id": "x-9", "name": "客户A", "email": "a@customer.example", "external": True}]],
    "chat": {"chat_id": "g-1", "source_event_id": "e-123"},
    "deadline_days": 7,
}
CREATE_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/NewRequest"}, "examples": {"file_url": {
        "summary": "The document from a URL (its host must be in SIGNBRIDGE_API_FILE_HOSTS)",
        "value": {**CREATE_EXAMPLE, "file_url": "https://files.corp.example/contracts/1.pdf",
                  "file_name": "采购合同.pdf"}}}},
    "multipart/form-data": {"schema": {"type": "object", "required": ["request", "file"], "properties": {
        "request": {"type": "string", "description": "the JSON body as text (without `file_url`)",
                    "example": json.dumps(CREATE_EXAMPLE, ensure_ascii=False)},
        "file": {"type": "string", "format": "binary", "description": "the PDF to sign"}}}},
}}}


@router.post("/api/v1/signing-requests", status_code=202, response_model=Accepted, openapi_extra=CREATE_BODY,
             responses=responses(400, 401, 503))
async def create_request(
    request: Request,
    caller: ApiCaller,
    settings: SettingsDep,
    intake: IntakeDep,
    blobs: BlobsDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Accepted:
    """JSON with `file_url`, or multipart with a `file` and the same JSON in a `request` field.

    `Idempotency-Key` makes a retried call return the first request (`started: false`) instead of
    starting a second one.
    """
    key = _idempotency_key(idempotency_key) or uuid.uuid4().hex
    refuse_while_paused(intake)
    upload: UploadFile | None = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        raw = form.get("request")
        file = form.get("file")
        if not isinstance(raw, str):
            raise ApiError(400, "invalid_request", "multipart needs a `request` field holding the JSON body")
        upload = file if isinstance(file, UploadFile) else None
        body = _new_request(raw)
    else:
        body = _new_request(await request.body())

    document: DocumentSource | None = None
    if upload is not None:
        data = await upload.read(settings.max_document_bytes + 1)
        if len(data) > settings.max_document_bytes:
            raise ApiError(413, "too_large", f"The file is larger than {settings.max_document_bytes} bytes")
        document = DocumentSource(name=download_name(upload.filename or body.file_name or ""),
                                  blob_key=blobs.put(data))
    elif body.file_url:
        document = DocumentSource(name=download_name(body.file_name or body.file_url.rsplit("/", 1)[-1]),
                                  url=body.file_url, sha256=body.file_sha256, origin="api")
    request_id = request_id_for("api", "default", key)
    initiator = body.initiator.person()
    req = SigningRequest(
        request_id=request_id,
        title=body.title,
        initiator=initiator,
        chat=ChatRef(**body.chat.model_dump()) if body.chat else ChatRef(
            platform="webhook", chat_id=initiator.id, chat_kind="direct", source_event_id=request_id),
        documents=[document] if document else [],
        groups=[[p.person() for p in group] for group in body.groups],
        provider=body.provider or settings.default_provider,
        timing=_timing(settings, body),
        template=TemplateUse(name=body.template, fields=body.fields) if body.template else None,
        roles=dict(body.roles),
        cc=[p.person() for p in body.cc],
    )
    outcome = _unless_failed(await intake.start_request(req, API))
    return Accepted(request_id=request_id, started=isinstance(outcome, Started))


class ListedRequest(BaseModel):
    request_id: str
    title: str
    status: str | None
    initiator: str | None
    provider: str | None
    document_sha256: str | None
    signed_sha256: str | None = None
    pending_signers: list[str]
    started_at: str | None


@router.get("/api/v1/signing-requests", response_model=list[ListedRequest], responses=responses(401, 422))
async def list_requests(
    caller: ApiCaller, engine: EngineDep, status: SignStatus | None = None,
    q: Annotated[str, Query(max_length=200, description="words the title must contain")] = "",
    initiator: Annotated[str | None, Query(max_length=MAX_WORKFLOW_ID_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ListedRequest]:
    """From the database, newest first: a request is listed as long as its row exists, whatever
    Temporal's retention has dropped."""
    rows = signing_records.listing(engine, status=status.value if status else None, words=q, initiator=initiator,
                                   limit=limit)
    return [ListedRequest(
        request_id=r.request_id, title=r.title, status=r.status, initiator=r.initiator_id, provider=r.provider,
        document_sha256=r.document_sha256, signed_sha256=r.signed_sha256,
        pending_signers=[s.person.id for s in view.signers if s.status == "notified"] if (view := _stored(r)) else [],
        started_at=r.created_at.isoformat(),
    ) for r in rows]


def _stored(record: SigningRequestRecord | None) -> StatusView | None:
    return StatusView.model_validate_json(record.snapshot) if record is not None and record.snapshot else None


@router.get("/api/v1/signing-requests/{request_id}", response_model=StatusView,
            responses=responses(401, 404, 422, 503))
async def get_request(request_id: RequestId, caller: ApiCaller, intake: IntakeDep, engine: EngineDep) -> StatusView:
    """The flow's live status; once Temporal no longer has it, its last published state."""
    return await _view_or_stored(intake, engine, request_id)


async def _view_or_stored(intake: Intake, engine: Engine, request_id: str) -> StatusView:
    outcome = await intake.status(request_id, API.accept)
    if isinstance(outcome, NotFound) and (stored := _stored(signing_records.get(engine, request_id))):
        return stored
    outcome = _unless_failed(outcome)
    assert isinstance(outcome, Applied)
    return outcome.view


class ReplacementIn(PersonIn):
    """`replace`: the person who signs instead (checked like every signer before it counts)."""


class ActionBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"reason": "合同作废，重新发起"}]})

    reason: str | None = Field(default=None, max_length=500)
    signer_ids: list[Identifier] = Field(default_factory=list, max_length=MAX_SIGNERS)
    replacement: ReplacementIn | None = None  # replace: who signs instead of `signer_ids[0]`


class ActionAccepted(BaseModel):
    request_id: str
    action: str
    accepted: bool


@router.post("/api/v1/signing-requests/{request_id}/{action}", response_model=StatusView,
             responses={202: {"model": ActionAccepted, "description": "Accepted by the flow; not finished yet"},
                        **responses(400, 401, 403, 404, 409, 422, 503)})
async def act(
    request_id: RequestId,
    action: Literal["cancel", "remind", "retry", "replace"],
    caller: ApiCaller,
    intake: IntakeDep,
    body: ActionBody | None = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Any:
    """API keys act as operators: they may cancel, remind and retry any request, and replace a
    signer who still has to sign (`signer_ids`: [their id], `replacement`: who signs instead)."""
    outcome = _unless_failed(await intake.apply_action(ChatAction(
        request_id=request_id, name=action, actor=Actor(id=caller, name="API", is_operator=True),
        update_id=_idempotency_key(idempotency_key), reason=body.reason if body else None,
        signer_ids=tuple(body.signer_ids) if body else (),
        replacement=body.replacement.person() if body and body.replacement else None), API))
    if isinstance(outcome, Applied):
        return outcome.view
    return JSONResponse(ActionAccepted(request_id=request_id, action=action, accepted=True).model_dump(),
                        status_code=202)


PDF: dict[int | str, dict[str, Any]] = {200: {"description": "The PDF", "content": {
    "application/pdf": {"schema": {"type": "string", "format": "binary"}}}}}


@router.get("/api/v1/signing-requests/{request_id}/signed-file", response_class=Response,
            responses={**PDF, **responses(401, 404, 409, 422, 503)})
async def signed_file(request_id: RequestId, caller: ApiCaller, engine: EngineDep, blobs: BlobsDep,
                      document: Annotated[int, Query(ge=0, le=100, description="which of several documents")] = 0,
                      ) -> Response:
    """From the database and blob store: downloadable for as long as the request's row exists."""
    record = signing_records.get(engine, request_id)
    if record is None:
        raise ApiError(404, "not_found", f"No signing request {request_id}")
    view = _stored(record)
    signed = (view.signed_documents or ([view.signed_document] if view.signed_document else [])) if view else []
    if not signed and record.signed_sha256:
        key = record.signed_sha256
        signed = [DocumentInfo(name=documents.name_of(engine, key) or f"{key}.pdf", sha256=key, blob_key=key,
                               size=0, pages=0)]
    if not signed:
        raise ApiError(409, "not_signed", f"The request is {record.status}; there is no signed file yet")
    if document >= len(signed):
        raise ApiError(404, "not_found", f"The request has {len(signed)} signed document(s)")
    return _pdf(blobs.get(signed[document].blob_key), signed[document].name)


@router.get("/api/v1/signing-requests/{request_id}/certificate.pdf", response_class=Response,
            responses={**PDF, **responses(401, 404, 409, 422)})
async def certificate(request_id: RequestId, caller: ApiCaller, settings: SettingsDep, engine: EngineDep,
                      blobs: BlobsDep) -> Response:
    """The certificate of completion (中文/English, signed by the installation CA): who signed or
    declined, how each was verified, from where and when, the documents' SHA-256 before and after,
    the audit chain's head. Made from the database once the request has ended, then always the
    same file (the one posted to the chat); 409 while the request is still open."""
    try:
        info = await certificates.issue(settings, engine, blobs, request_id)
    except certificates.NotCertifiable as e:
        raise ApiError(404 if e.code == "not_found" else 409, e.code, e.message) from e
    return _pdf(blobs.get(info.blob_key), info.name)


@router.get("/api/v1/signing-requests/{request_id}/audit", responses=responses(401, 404, 422))
async def audit_trail(request_id: RequestId, caller: ApiCaller, engine: EngineDep) -> dict[str, Any]:
    rows = audit.trail_of(engine, request_id)
    if not rows:
        raise ApiError(404, "not_found", f"No audit trail for {request_id}")
    return {
        "request_id": request_id,
        "chain_valid": audit.verify_chain(rows),
        "events": [
            {"seq": r.seq, "action": r.action, "actor": r.actor, "detail": json.loads(r.detail), "ip": r.ip,
             "user_agent": r.user_agent, "document_sha256": r.document_sha256,
             "created_at": r.created_at.isoformat(), "prev_hash": r.prev_hash, "hash": r.hash}
            for r in rows
        ],
    }


@files_router.get("/files/{key}", response_class=Response, responses={**PDF, **responses(403, 404, 422)})
async def download(key: Annotated[str, Path(max_length=64)], expires: Annotated[int, Query(ge=0, lt=2**63)],
                   sig: Annotated[str, Query(max_length=64)], settings: SettingsDep, blobs: BlobsDep,
                   engine: EngineDep, name: Annotated[str | None, Query(max_length=1000)] = None) -> Response:
    """The signed, expiring link posted to the chat with the signed document."""
    link = links.verify_file(settings, key, expires, sig, name)
    if link is None:
        raise ApiError(403, "invalid_link", "This download link is invalid or has expired")
    try:
        data = blobs.get(key)
    except BlobNotFound as e:
        raise ApiError(404, "not_found", "No such file") from e
    return _pdf(data, link.name or documents.name_of(engine, key) or f"{key}.pdf")


def _pdf(data: bytes, name: str) -> Response:
    return Response(data, media_type="application/pdf", headers={
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(download_name(name))}",
        "Cache-Control": "no-store",
    })


@files_router.get("/ca.pem", response_class=Response, responses={
    200: {"description": "PEM", "content": {"application/x-pem-file": {"schema": {"type": "string"}}}}})
async def installation_ca(settings: SettingsDep) -> Response:
    """The installation CA certificate, so anyone holding a signed PDF can verify it offline."""
    from asn1crypto import pem

    from signbridge.pdf.pki import InstallationCA

    ca = InstallationCA.load_or_create(settings.data_dir / "ca")
    return Response(pem.armor("CERTIFICATE", ca.certificate.dump()), media_type="application/x-pem-file")
