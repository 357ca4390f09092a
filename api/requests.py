"""REST for self-built systems and operators: `/api/v1/signing-requests[...]` (bearer API key).

Thin on purpose: uploads go to the blob store, everything else is a workflow start, query or
update. Listing reads Temporal's visibility store, the same index operators use in the UI.
"""

from __future__ import annotations

import hmac
import json
import uuid
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from api.deps import BlobsDep, ClientDep, EngineDep, IntakeDep, SettingsDep
from api.errors import ApiError
from signbridge.core import links
from signbridge.core.chat import Applied, Busy, ChatAction, NotFound, Outcome, Refused, Started, request_id_for
from signbridge.core.models import (
    Actor,
    ChatRef,
    DocumentSource,
    Person,
    SigningRequest,
    SignStatus,
    StatusView,
    Timing,
)
from signbridge.core.settings import Settings
from signbridge.core.temporal import WORKFLOW_NAME
from signbridge.intake import Intake
from store import audit
from store.blobs import BlobNotFound, sha256_hex
from store.repos import documents

router = APIRouter(tags=["signing requests"])


_bearer = HTTPBearer(auto_error=False, description="One of the keys in SIGNBRIDGE_API_KEYS")


def require_api_key(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """Bearer key check in constant time; returns a short, loggable id of the key (never the key)."""
    token = credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else ""
    if token:
        for key in settings.api_key_list:
            if hmac.compare_digest(key.encode(), token.encode()):
                return "api:" + sha256_hex(key.encode())[:8]
    raise ApiError(401, "unauthorized", "A valid `Authorization: Bearer <key>` is required (SIGNBRIDGE_API_KEYS)")


ApiCaller = Annotated[str, Depends(require_api_key)]


class NewRequest(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    initiator: Person
    groups: list[list[Person]]
    file_url: str | None = None
    file_name: str | None = None
    file_sha256: str | None = None
    chat: ChatRef | None = None
    provider: str | None = None
    deadline_days: float | None = Field(default=None, gt=0, le=365)
    reminder_max: int | None = Field(default=None, ge=0, le=20)


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
            raise ApiError(403 if outcome.permission else 409, outcome.code, outcome.en)
        case NotFound(ended=True):
            raise ApiError(409, "already_ended", f"The request {outcome.request_id} has already ended")
        case NotFound():
            raise ApiError(404, "not_found", f"No signing request {outcome.request_id}")
        case Busy():
            raise ApiError(503, "unavailable", "Temporal did not answer in time; retry",
                           retry_after=outcome.retry_after)
    return outcome


async def _view(intake: Intake, request_id: str) -> StatusView:
    outcome = _unless_failed(await intake.status(request_id))
    assert isinstance(outcome, Applied)
    return outcome.view


@router.post("/api/v1/signing-requests", status_code=202, response_model=Accepted)
async def create_request(
    request: Request,
    caller: ApiCaller,
    settings: SettingsDep,
    intake: IntakeDep,
    blobs: BlobsDep,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Accepted:
    """JSON with `file_url`, or multipart with a `file` and the same JSON in a `request` field.

    `Idempotency-Key` makes a retried call return the first request instead of a second one.
    """
    upload: UploadFile | None = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        raw = form.get("request")
        file = form.get("file")
        if not isinstance(raw, str):
            raise ApiError(400, "invalid_request", "multipart needs a `request` field holding the JSON body")
        upload = file if isinstance(file, UploadFile) else None
    else:
        raw = (await request.body()).decode("utf-8", "replace")
    try:
        body = NewRequest.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as e:
        raise ApiError(400, "invalid_request", f"Invalid request body: {e}") from e

    document: DocumentSource | None = None
    if upload is not None:
        data = await upload.read(settings.max_document_bytes + 1)
        if len(data) > settings.max_document_bytes:
            raise ApiError(413, "too_large", f"The file is larger than {settings.max_document_bytes} bytes")
        key = blobs.put(data)
        document = DocumentSource(name=upload.filename or body.file_name or "document.pdf", blob_key=key)
    elif body.file_url:
        document = DocumentSource(name=body.file_name or body.file_url.rsplit("/", 1)[-1] or "document.pdf",
                                  url=body.file_url, sha256=body.file_sha256, origin="api")
    request_id = request_id_for("api", "default", idempotency_key or uuid.uuid4().hex)
    req = SigningRequest(
        request_id=request_id,
        title=body.title,
        initiator=body.initiator,
        chat=body.chat or ChatRef(platform="webhook", chat_id=body.initiator.id, chat_kind="direct",
                                  source_event_id=request_id),
        documents=[document] if document else [],
        groups=body.groups,
        provider=body.provider or settings.default_provider,
        timing=_timing(settings, body),
    )
    outcome = _unless_failed(await intake.start_request(req))
    return Accepted(request_id=request_id, started=isinstance(outcome, Started))


@router.get("/api/v1/signing-requests", response_model=list[dict[str, Any]])
async def list_requests(
    caller: ApiCaller, client: ClientDep, status: SignStatus | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    query = f"WorkflowType = '{WORKFLOW_NAME}'"
    if status is not None:
        query += f" AND SignStatus = '{status.value}'"  # an enum value: nothing to inject
    found: list[dict[str, Any]] = []
    async for wf in client.list_workflows(query, limit=min(max(limit, 1), 1000)):
        sa = wf.search_attributes
        found.append({
            "request_id": wf.id,
            "status": (sa.get("SignStatus") or [None])[0],
            "initiator": (sa.get("SignInitiator") or [None])[0],
            "provider": (sa.get("SignProvider") or [None])[0],
            "document_sha256": (sa.get("DocumentSha256") or [None])[0],
            "pending_signers": list(sa.get("PendingSigners") or []),
            "started_at": wf.start_time.isoformat() if wf.start_time else None,
        })
        if len(found) >= limit:
            break
    return found


@router.get("/api/v1/signing-requests/{request_id}", response_model=StatusView)
async def get_request(request_id: str, caller: ApiCaller, intake: IntakeDep) -> StatusView:
    return await _view(intake, request_id)


class ActionBody(BaseModel):
    reason: str | None = Field(default=None, max_length=500)
    signer_ids: list[str] = Field(default_factory=list)


@router.post("/api/v1/signing-requests/{request_id}/{action}", response_model=StatusView,
             responses={202: {"description": "Accepted by the flow; not finished within the deadline"}})
async def act(
    request_id: str,
    action: Literal["cancel", "remind", "retry"],
    caller: ApiCaller,
    intake: IntakeDep,
    body: ActionBody | None = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> Any:
    """API keys act as operators: they may cancel, remind and retry any request."""
    outcome = _unless_failed(await intake.apply_action(ChatAction(
        request_id=request_id, name=action, actor=Actor(id=caller, name="API", is_operator=True),
        update_id=idempotency_key, reason=body.reason if body else None,
        signer_ids=tuple(body.signer_ids) if body else ())))
    if isinstance(outcome, Applied):
        return outcome.view
    return JSONResponse({"request_id": request_id, "action": action, "accepted": True}, status_code=202)


@router.get("/api/v1/signing-requests/{request_id}/signed-file")
async def signed_file(request_id: str, caller: ApiCaller, intake: IntakeDep, blobs: BlobsDep) -> Response:
    view = await _view(intake, request_id)
    if view.signed_document is None:
        raise ApiError(409, "not_signed", f"The request is {view.status.value}; there is no signed file yet")
    return _pdf(blobs.get(view.signed_document.blob_key), view.signed_document.name)


@router.get("/api/v1/signing-requests/{request_id}/audit")
async def audit_trail(request_id: str, caller: ApiCaller, engine: EngineDep) -> dict[str, Any]:
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


@router.get("/files/{key}", tags=["files"])
async def download(key: str, expires: int, sig: str, settings: SettingsDep, blobs: BlobsDep, engine: EngineDep,
                   name: str | None = None) -> Response:
    """The signed, expiring link posted to the chat with the signed document."""
    if not links.verify_file(settings, key, expires, sig):
        raise ApiError(403, "invalid_link", "This download link is invalid or has expired")
    try:
        data = blobs.get(key)
    except BlobNotFound as e:
        raise ApiError(404, "not_found", "No such file") from e
    return _pdf(data, name or documents.name_of(engine, key) or f"{key}.pdf")


def _pdf(data: bytes, name: str) -> Response:
    from urllib.parse import quote

    return Response(data, media_type="application/pdf", headers={
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
        "Cache-Control": "no-store",
    })


@router.get("/ca.pem", tags=["files"])
async def installation_ca(settings: SettingsDep) -> Response:
    """The installation CA certificate, so anyone holding a signed PDF can verify it offline."""
    from asn1crypto import pem

    from signbridge.pdf.pki import InstallationCA

    ca = InstallationCA.load_or_create(settings.data_dir / "ca")
    return Response(pem.armor("CERTIFICATE", ca.certificate.dump()), media_type="application/x-pem-file")
