"""`/api/v1/organisations`: register, list and read organisations; their seal image and keepers.

Same bearer keys as the rest of `/api/v1`. A seal image is sent as the raw body
(`Content-Type: image/png` or `image/jpeg`); it is checked (a real image, at most
`SIGNBRIDGE_MAX_SEAL_IMAGE_BYTES`, at most 4000 pixels a side) and stored re-encoded as PNG.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.requests import Request
from pydantic import BaseModel, Field

from api.deps import BlobsDep, EngineDep, SettingsDep
from api.errors import ApiError, responses
from api.requests import ApiCaller
from signbridge.intake.orgs import PROVIDER_ID_KEYS, OrgProblem, add, find, import_seal, set_keepers
from store.repos import organisations
from store.repos.organisations import Keeper, keepers_of, provider_ids_of
from store.tables import Organisation

router = APIRouter(tags=["organisations"])
Key = Annotated[str, Path(min_length=1, max_length=200, description="credit code or name")]
SEAL_UPLOAD = {"requestBody": {"required": True, "content": {
    "image/png": {"schema": {"type": "string", "format": "binary"}},
    "image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}}


class KeeperIO(BaseModel):
    id: str = Field(min_length=1, max_length=128, description="chat user id")
    name: str = Field(default="", max_length=128)


class OrganisationIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["乙方科技有限公司"])
    credit_code: str = Field(min_length=18, max_length=18, description="unified social credit code (GB 32100-2015)",
                             examples=["91350100M000100Y43"])
    requires_seal_approval: bool = False
    keepers: list[KeeperIO] = Field(default_factory=list, max_length=50)
    provider_ids: dict[str, str] = Field(default_factory=dict, description=f"keys: {', '.join(PROVIDER_ID_KEYS)}")


class KeepersIn(BaseModel):
    add: list[KeeperIO] = Field(default_factory=list, max_length=50)
    remove: list[str] = Field(default_factory=list, max_length=50)


class OrganisationOut(BaseModel):
    name: str
    credit_code: str
    requires_seal_approval: bool
    keepers: list[KeeperIO]
    seal_image: bool  # an uploaded seal image; False: built-in signatures draw a round red seal
    provider_ids: dict[str, str]


def _out(row: Organisation) -> OrganisationOut:
    return OrganisationOut(name=row.name, credit_code=row.credit_code,
                           requires_seal_approval=row.requires_seal_approval,
                           keepers=[KeeperIO(id=k.id, name=k.name) for k in keepers_of(row)],
                           seal_image=row.seal_image_key is not None, provider_ids=provider_ids_of(row))


def _error(e: OrgProblem) -> ApiError:
    status = {"not_found": 404, "duplicate_name": 409}.get(e.code, 400)
    return ApiError(status, e.code, e.message)


@router.post("/api/v1/organisations", status_code=201, response_model=OrganisationOut,
             responses=responses(400, 401, 409, 422))
async def add_organisation(body: OrganisationIn, caller: ApiCaller, engine: EngineDep) -> OrganisationOut:
    """Register an organisation (or update the one with this credit code)."""
    try:
        row = add(engine, name=body.name, credit_code=body.credit_code,
                  requires_seal_approval=body.requires_seal_approval,
                  keepers=[Keeper(k.id, k.name) for k in body.keepers], provider_ids=body.provider_ids)
    except OrgProblem as e:
        raise _error(e) from e
    return _out(row)


@router.get("/api/v1/organisations", response_model=list[OrganisationOut], responses=responses(401))
async def list_organisations(caller: ApiCaller, engine: EngineDep) -> list[OrganisationOut]:
    return [_out(row) for row in organisations.all_organisations(engine)]


@router.get("/api/v1/organisations/{key}", response_model=OrganisationOut, responses=responses(401, 404, 422))
async def get_organisation(key: Key, caller: ApiCaller, engine: EngineDep) -> OrganisationOut:
    try:
        return _out(find(engine, key))
    except OrgProblem as e:
        raise _error(e) from e


@router.put("/api/v1/organisations/{key}/seal", response_model=OrganisationOut, openapi_extra=SEAL_UPLOAD,
            responses=responses(400, 401, 404, 413, 422))
async def put_seal(key: Key, request: Request, caller: ApiCaller, settings: SettingsDep, engine: EngineDep,
                   blobs: BlobsDep) -> OrganisationOut:
    """The organisation's seal image, as the raw body (PNG or JPEG)."""
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > settings.max_seal_image_bytes:
            raise ApiError(413, "too_large", f"The seal image is larger than {settings.max_seal_image_bytes} bytes")
    try:
        return _out(import_seal(settings, engine, blobs, key, data))
    except OrgProblem as e:
        raise _error(e) from e


@router.put("/api/v1/organisations/{key}/keepers", response_model=OrganisationOut,
            responses=responses(400, 401, 404, 422))
async def put_keepers(key: Key, body: KeepersIn, caller: ApiCaller, engine: EngineDep) -> OrganisationOut:
    """Add and remove seal keepers (chat user ids)."""
    try:
        return _out(set_keepers(engine, key, add=[Keeper(k.id, k.name) for k in body.add], remove=body.remove))
    except OrgProblem as e:
        raise _error(e) from e
