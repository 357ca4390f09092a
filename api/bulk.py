"""`/api/v1/bulk-sends`: one signing request per row of a CSV, from a template (bearer API key).

`POST` takes multipart `request` (JSON: template, initiator, the roles chat members sign, …) and
`file` (the CSV). The CSV is checked before anything starts (400 with the reason for a file that
cannot be used); bad rows are reported in the answer and the good ones go ahead. Sending the same
CSV with the same template again finds the first bulk send (`started: false`), and a row sent
before by any bulk send is never sent again.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from api.deps import BlobsDep, EngineDep, IntakeDep, SettingsDep
from api.errors import ApiError, responses
from api.requests import (
    API,
    MAX_SIGNERS,
    ActionBody,
    ApiCaller,
    ChatIn,
    PersonIn,
    _unless_failed,
    refuse_while_paused,
)
from signbridge.core import bulk as bulk_csv
from signbridge.core.chat import ChatAction, NotFound, Started
from signbridge.core.models import Actor, BulkSendInput, BulkView, ChatRef, DocumentSource
from signbridge.core.untrusted import UntrustedInputError, load_json, problems
from signbridge.intake import bulk
from store.repos import bulk_sends

router = APIRouter(tags=["bulk sends"])
BulkId = Annotated[str, Path(min_length=1, max_length=200)]


class NewBulkSend(BaseModel):
    template: str = Field(min_length=1, max_length=100)
    initiator: PersonIn
    title: str | None = Field(default=None, min_length=1, max_length=200)
    roles: dict[Annotated[str, Field(max_length=40)], PersonIn] = Field(default_factory=dict, max_length=50)
    chat: ChatIn | None = None
    provider: str | None = Field(default=None, pattern=r"^[a-z_]{1,32}$")
    cc: list[PersonIn] = Field(default_factory=list, max_length=MAX_SIGNERS)
    deadline_days: float | None = Field(default=None, gt=0, le=365)


EXAMPLE: dict[str, Any] = {"template": "销售合同", "initiator": {"id": "u-1", "name": "张三"},
                           "roles": {"甲方": {"id": "u-2", "name": "李四"}}, "chat": {"chat_id": "g-1",
                                                                                   "source_event_id": "e-bulk-1"}}
UPLOAD = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["request", "file"], "properties": {
        "request": {"type": "string", "description": "the JSON body (NewBulkSend) as text",
                    "example": json.dumps(EXAMPLE, ensure_ascii=False)},
        "file": {"type": "string", "format": "binary",
                 "description": "the CSV: a column per template field, `角色`/`角色邮箱`/`角色手机` per role "
                                "the request does not give to a chat member"}}}}}}}


class BulkAccepted(BaseModel):
    bulk_id: str
    started: bool
    total: int
    bad: int
    problems: list[str]


class BulkRowOut(BaseModel):
    line: int
    row_key: str
    values: dict[str, str]
    problem: str | None
    request_id: str | None
    status: str | None
    sent_by: str | None


@router.post("/api/v1/bulk-sends", status_code=202, response_model=BulkAccepted, openapi_extra=UPLOAD,
             responses=responses(400, 401, 413, 503))
async def create_bulk_send(request: Request, caller: ApiCaller, settings: SettingsDep, intake: IntakeDep,
                           engine: EngineDep, blobs: BlobsDep) -> BulkAccepted:
    refuse_while_paused(intake)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "invalid_request", "multipart/form-data with `request` (JSON) and `file` (CSV) is required")
    form = await request.form()
    raw, file = form.get("request"), form.get("file")
    if not isinstance(raw, str) or not isinstance(file, UploadFile):
        raise ApiError(400, "invalid_request", "multipart/form-data with `request` (JSON) and `file` (CSV) is required")
    try:
        body = NewBulkSend.model_validate(load_json(raw))
    except UntrustedInputError as e:
        raise ApiError(400, "invalid_request" if e.code == "invalid_json" else e.code, str(e)) from e
    except ValidationError as e:
        raise ApiError(400, "invalid_request", f"Invalid request body: {problems(e)}") from e
    data = await file.read(settings.max_document_bytes + 1)
    if len(data) > settings.max_document_bytes:
        raise ApiError(413, "too_large", f"The CSV is larger than {settings.max_document_bytes} bytes")
    try:
        sheet = bulk.check(engine, settings, body.template, data, list(body.roles))
    except bulk_csv.BulkProblem as e:
        raise ApiError(400, "invalid_csv", e.message) from e
    initiator = body.initiator.person()
    bulk_id = bulk.bulk_id_for_file(body.chat.tenant if body.chat else "default", body.template, data)
    timing = settings.timing()
    if body.deadline_days:
        timing.deadline = timedelta(days=body.deadline_days)
    arg = BulkSendInput(
        bulk_id=bulk_id, title=body.title or body.template, template=body.template, initiator=initiator,
        chat=ChatRef(**body.chat.model_dump()) if body.chat else ChatRef(
            platform="webhook", chat_id=initiator.id, chat_kind="direct", source_event_id=bulk_id),
        csv=DocumentSource(name=file.filename or "bulk.csv", blob_key=blobs.put(data)),
        provider=body.provider or settings.default_provider, timing=timing,
        roles={role: p.person() for role, p in body.roles.items()}, cc=[p.person() for p in body.cc],
        concurrency=settings.bulk_concurrency, max_rows=settings.bulk_max_rows)
    outcome = _unless_failed(await intake.start_bulk(arg, API))
    return BulkAccepted(bulk_id=bulk_id, started=isinstance(outcome, Started), total=len(sheet.rows),
                        bad=len(sheet.bad), problems=bulk_csv.shown_problems(sheet.rows))


@router.get("/api/v1/bulk-sends/{bulk_id}", response_model=BulkView, responses=responses(401, 404, 422, 503))
async def get_bulk_send(bulk_id: BulkId, caller: ApiCaller, intake: IntakeDep) -> BulkView:
    """Live progress: rows sent, ended (by status), bad, sent before, and the first bad rows in words."""
    found = await intake.bulk_progress(bulk_id, API.accept)
    if isinstance(found, BulkView):
        return found
    if isinstance(found, NotFound):
        raise ApiError(404, "not_found", f"No bulk send {bulk_id}")
    _unless_failed(found)
    raise ApiError(503, "unavailable", "Temporal did not answer in time; retry", retry_after=2)


@router.get("/api/v1/bulk-sends/{bulk_id}/rows", response_model=list[BulkRowOut], responses=responses(401, 404, 422))
async def bulk_send_rows(bulk_id: BulkId, caller: ApiCaller, engine: EngineDep) -> list[BulkRowOut]:
    """Every CSV row from the database: its problem, or its signing request and that request's status."""
    if bulk_sends.get(engine, bulk_id) is None:
        raise ApiError(404, "not_found", f"No bulk send {bulk_id}")
    return [BulkRowOut(**vars(r)) for r in bulk_sends.rows(engine, bulk_id)]


@router.post("/api/v1/bulk-sends/{bulk_id}/cancel", response_model=BulkView,
             responses=responses(400, 401, 404, 409, 422, 503))
async def cancel_bulk_send(bulk_id: BulkId, caller: ApiCaller, intake: IntakeDep,
                           body: ActionBody | None = None) -> BulkView:
    """No further row starts and every open row is cancelled (API keys act as operators); `reason`
    is what the rows' cards and audit trails say."""
    outcome = _unless_failed(await intake.apply_action(ChatAction(
        request_id=bulk_id, name="cancel", actor=Actor(id=caller, name="API", is_operator=True),
        reason=body.reason if body else None), API))
    del outcome  # Applied, or Accepted: the rows are being told; the progress shows it either way
    return await get_bulk_send(bulk_id, caller, intake)
