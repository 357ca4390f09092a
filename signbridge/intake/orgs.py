"""Managing organisations: the CLI's `signbridge orgs …` and `/api/v1/organisations`.

Everything an administrator can get wrong raises `OrgProblem` with a bilingual message; nothing
is stored then. Which registered organisation a signing party names is decided at `prepare`
(`activities/parties.py`).
"""

from __future__ import annotations

import json

from sqlalchemy.engine import Engine

from signbridge.core.orgs import CreditCodeProblem, normalise_credit_code
from signbridge.core.settings import Settings
from signbridge.pdf.seal import SealImageProblem, checked_seal_image
from store.blobs import BlobStore
from store.repos import organisations
from store.repos.organisations import Keeper, keepers_of
from store.tables import Organisation

MAX_NAME = 200
MAX_KEEPERS = 50
# Provider ids an organisation may carry: the provider's own id of the company and of its seal.
# (The providers that cannot apply a company's seal have none: a seal there is refused at prepare.)
PROVIDER_ID_KEYS = ("esign_cn.org_id", "esign_cn.seal_id", "fadada.open_corp_id", "fadada.seal_id",
                    "fadada.entity_id")


class OrgProblem(ValueError):
    def __init__(self, message: str, code: str = "invalid_organisation") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _name(name: str) -> str:
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME or any(c in name for c in "()（）@＠"):
        raise OrgProblem(f"组织名称需为 1–{MAX_NAME} 个字符，不含括号和 @（An organisation's name is 1–{MAX_NAME} "
                         "characters without parentheses or @）")
    return name


def _code(code: str) -> str:
    try:
        return normalise_credit_code(code)
    except CreditCodeProblem as e:
        raise OrgProblem(e.message, "invalid_credit_code") from e


def _provider_ids(ids: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(ids) - set(PROVIDER_ID_KEYS))
    if unknown:
        raise OrgProblem(f"未知的服务商编号 {', '.join(unknown)}（Unknown provider id {', '.join(unknown)}; known: "
                         f"{', '.join(PROVIDER_ID_KEYS)}）")
    if any(not v.strip() or len(v) > 128 for v in ids.values()):
        raise OrgProblem("服务商编号需为 1–128 个字符（A provider id is 1–128 characters）")
    return {k: v.strip() for k, v in ids.items()}


def _keepers(keepers: list[Keeper]) -> list[Keeper]:
    if len(keepers) > MAX_KEEPERS:
        raise OrgProblem(f"印章管理员最多 {MAX_KEEPERS} 位（At most {MAX_KEEPERS} seal keepers）")
    seen: dict[str, Keeper] = {}
    for k in keepers:
        if not k.id.strip() or len(k.id) > 128 or len(k.name) > 128:
            raise OrgProblem("印章管理员需给出聊天用户 ID（A seal keeper is a chat user id, optionally id:name）")
        seen[k.id.strip()] = Keeper(k.id.strip(), k.name.strip() or k.id.strip())
    return list(seen.values())


def add(engine: Engine, *, name: str, credit_code: str, requires_seal_approval: bool = False,
        keepers: list[Keeper] | None = None, provider_ids: dict[str, str] | None = None) -> Organisation:
    """Register an organisation, or update the one with this credit code (its seal image stays)."""
    code, name = _code(credit_code), _name(name)
    same_name = organisations.by_name(engine, name)
    if same_name is not None and same_name.credit_code != code:
        raise OrgProblem(f"已有同名组织「{name}」（信用代码 {same_name.credit_code}）（Another organisation is "
                         f"called {name}: {same_name.credit_code}）", "duplicate_name")
    existing = organisations.get(engine, code)
    row = Organisation(credit_code=code, name=name, requires_seal_approval=requires_seal_approval,
                       seal_image_key=existing.seal_image_key if existing else None,
                       keepers=json.dumps([k.__dict__ for k in _keepers(keepers or [])], ensure_ascii=False),
                       provider_ids=json.dumps(_provider_ids(provider_ids or {}), ensure_ascii=False))
    return organisations.save(engine, row)


def find(engine: Engine, key: str) -> Organisation:
    """By credit code or by exact name; OrgProblem(not_found) otherwise."""
    row = organisations.get(engine, key.strip().upper()) or organisations.by_name(engine, " ".join(key.split()))
    if row is None:
        raise OrgProblem(f"组织「{key}」未登记（No organisation {key} is registered）", "not_found")
    return row


def import_seal(settings: Settings, engine: Engine, blobs: BlobStore, key: str, data: bytes) -> Organisation:
    """Check the image (a real PNG/JPEG, size-limited), store it, and make it the organisation's seal."""
    row = find(engine, key)
    try:
        png = checked_seal_image(data, settings.max_seal_image_bytes)
    except SealImageProblem as e:
        raise OrgProblem(e.message, "invalid_seal_image") from e
    row.seal_image_key = blobs.put(png)
    return organisations.save(engine, row)


def set_keepers(engine: Engine, key: str, *, add: list[Keeper], remove: list[str]) -> Organisation:
    row = find(engine, key)
    current = [k for k in keepers_of(row) if k.id not in set(remove)]
    row.keepers = json.dumps([k.__dict__ for k in _keepers(current + add)], ensure_ascii=False)
    return organisations.save(engine, row)
