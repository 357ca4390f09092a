"""`/api/v1/templates`: register (multipart `name` + `file`), list, read and remove templates."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.requests import Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from api.deps import BlobsDep, EngineDep, SettingsDep
from api.errors import ApiError, responses
from api.requests import ApiCaller
from signbridge.intake.templates import TemplateProblem, register
from store.repos import templates
from store.tables import Template

router = APIRouter(tags=["templates"])
UPLOAD = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["name", "file"], "properties": {
        "name": {"type": "string", "maxLength": 100}, "file": {"type": "string", "format": "binary"}}}}}}}
Name = Annotated[str, Path(min_length=1, max_length=100)]


class TemplateOut(BaseModel):
    name: str
    fields: list[str]
    roles: list[str]
    sha256: str
    source_name: str
    created_at: str


def _out(row: Template) -> TemplateOut:
    return TemplateOut(name=row.name, fields=json.loads(row.fields), roles=json.loads(row.roles), sha256=row.sha256,
                       source_name=row.source_name, created_at=row.created_at.isoformat())


@router.post("/api/v1/templates", status_code=201, response_model=TemplateOut, openapi_extra=UPLOAD,
             responses=responses(400, 401, 413))
async def add_template(request: Request, caller: ApiCaller, settings: SettingsDep, engine: EngineDep,
                       blobs: BlobsDep) -> TemplateOut:
    """A PDF (or an Office file, converted) with text fields and `sign:ROLE` signature fields."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "invalid_request", "multipart/form-data with `name` and `file` is required")
    form = await request.form()
    name, file = form.get("name"), form.get("file")
    if not isinstance(name, str) or not isinstance(file, UploadFile):
        raise ApiError(400, "invalid_request", "multipart/form-data with `name` and `file` is required")
    data = await file.read(settings.max_document_bytes + 1)
    if len(data) > settings.max_document_bytes:
        raise ApiError(413, "too_large", f"The file is larger than {settings.max_document_bytes} bytes")
    try:
        row, _ = await register(settings, engine, blobs, name=name, file_name=file.filename or "template.pdf",
                                data=data, by=caller)
    except TemplateProblem as e:
        raise ApiError(400, "invalid_template", e.message) from e
    return _out(row)


@router.get("/api/v1/templates", response_model=list[TemplateOut], responses=responses(401))
async def list_templates(caller: ApiCaller, engine: EngineDep) -> list[TemplateOut]:
    return [_out(row) for row in templates.all_templates(engine)]


@router.get("/api/v1/templates/{name}", response_model=TemplateOut, responses=responses(401, 404, 422))
async def get_template(name: Name, caller: ApiCaller, engine: EngineDep) -> TemplateOut:
    row = templates.get(engine, name)
    if row is None:
        raise ApiError(404, "not_found", f"No template called {name}")
    return _out(row)


@router.delete("/api/v1/templates/{name}", status_code=204, responses=responses(401, 404, 422))
async def delete_template(name: Name, caller: ApiCaller, engine: EngineDep) -> None:
    if not templates.delete(engine, name):
        raise ApiError(404, "not_found", f"No template called {name}")
