"""`signbridge orgs add|list|seal-import|keepers`: the organisations that sign as parties.

They live in the database (`SIGNBRIDGE_DATABASE_URL`), the seal images in the blob store, like the
rest of the operator CLI. A party names an organisation in the chat as `@王五(乙方科技有限公司 公章)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from signbridge.cli.documents import _ready_engine
from signbridge.cli.ops import _fail, _out
from signbridge.intake.orgs import OrgProblem, add, import_seal, set_keepers
from store.blob_factory import make_blob_store
from store.repos import organisations
from store.repos.organisations import Keeper, keepers_of, provider_ids_of
from store.tables import Organisation

orgs_app = typer.Typer(help="Organisations that sign with a seal: credit code, seal image, seal keepers.",
                       no_args_is_help=True)


def _keeper(text: str) -> Keeper:
    """`u-6` or `u-6:赵六` (chat user id, and the name cards show)."""
    user, _, name = text.partition(":")
    return Keeper(user.strip(), name.strip() or user.strip())


def _ids(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise _fail(f"--provider-id wants KEY=VALUE (e.g. esign_cn.org_id=…), got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _row(row: Organisation) -> dict[str, object]:
    return {"name": row.name, "credit_code": row.credit_code, "requires_seal_approval": row.requires_seal_approval,
            "keepers": [k.__dict__ for k in keepers_of(row)], "seal_image": row.seal_image_key,
            "provider_ids": provider_ids_of(row)}


@orgs_app.command("add")
def add_org(
    name: Annotated[str, typer.Option("--name", help="the organisation's full registered name")],
    code: Annotated[str, typer.Option("--code", help="unified social credit code (18 characters, check digit)")],
    keeper: Annotated[list[str] | None,
                      typer.Option("--keeper", help="seal keeper: chat user id[:name]; repeat")] = None,
    approval: Annotated[bool, typer.Option("--seal-approval/--no-seal-approval",
                                           help="every use of its seal needs a keeper's approval")] = False,
    provider_id: Annotated[list[str] | None, typer.Option("--provider-id",
                                                          help="e.g. esign_cn.org_id=… or fadada.seal_id=…")] = None,
) -> None:
    """Register an organisation (or update the one with this credit code)."""
    _, engine = _ready_engine()
    try:
        row = add(engine, name=name, credit_code=code, requires_seal_approval=approval,
                  keepers=[_keeper(k) for k in keeper or []], provider_ids=_ids(provider_id or []))
    except OrgProblem as e:
        raise _fail(e.message) from e
    approval_state = "on" if row.requires_seal_approval else "off"
    _out().print(f"organisation [bold]{row.name}[/] ({row.credit_code}): "
                 f"{len(keepers_of(row))} seal keeper(s), seal approval {approval_state}")
    _out().print(f"use it: /sign @someone({row.name} 公章)")


@orgs_app.command("list")
def list_orgs(as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False) -> None:
    """Every registered organisation."""
    _, engine = _ready_engine()
    rows = organisations.all_organisations(engine)
    if as_json:
        typer.echo(json.dumps([_row(r) for r in rows], ensure_ascii=False, indent=2))
        return
    table = Table("name", "credit code", "seal keepers", "seal approval", "seal image", "provider ids")
    for r in rows:
        table.add_row(r.name, r.credit_code, ", ".join(f"{k.name} ({k.id})" for k in keepers_of(r)),
                      "yes" if r.requires_seal_approval else "no", "uploaded" if r.seal_image_key else "generated",
                      ", ".join(f"{k}={v}" for k, v in provider_ids_of(r).items()) or "-")
    _out().print(table)


@orgs_app.command("seal-import")
def seal_import(
    org: Annotated[str, typer.Argument(help="credit code or name")],
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="PNG or JPEG")],
) -> None:
    """Use FILE as the organisation's seal on built-in signatures (white becomes transparent)."""
    settings, engine = _ready_engine()
    if file.stat().st_size > settings.max_seal_image_bytes:
        raise _fail(f"{file.name} is larger than {settings.max_seal_image_bytes} bytes "
                    "(SIGNBRIDGE_MAX_SEAL_IMAGE_BYTES)")
    try:
        row = import_seal(settings, engine, make_blob_store(settings), org, file.read_bytes())
    except OrgProblem as e:
        raise _fail(e.message) from e
    _out().print(f"seal of {row.name} imported ({row.seal_image_key})")


@orgs_app.command("keepers")
def keepers(
    org: Annotated[str, typer.Argument(help="credit code or name")],
    add_keeper: Annotated[list[str] | None, typer.Option("--add", help="chat user id[:name]; repeat")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="chat user id; repeat")] = None,
) -> None:
    """Show, add or remove the organisation's seal keepers (who approve and apply its seal)."""
    _, engine = _ready_engine()
    try:
        row = set_keepers(engine, org, add=[_keeper(k) for k in add_keeper or []], remove=list(remove or []))
    except OrgProblem as e:
        raise _fail(e.message) from e
    _out().print(f"seal keepers of {row.name}: " + (", ".join(f"{k.name} ({k.id})" for k in keepers_of(row)) or "none"))
