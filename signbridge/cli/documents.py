"""`signbridge templates add|list|remove`, `signbridge pause` / `resume`.

Templates and the pause switch live in the database, so these work against the deployment's
database (`SIGNBRIDGE_DATABASE_URL`) like the rest of the operator CLI.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from signbridge.cli.ops import _engine, _err, _fail, _out, _settings, operator
from signbridge.intake.templates import TemplateProblem, register
from store.blob_factory import make_blob_store
from store.db import create_all
from store.repos import switches, templates

templates_app = typer.Typer(help="Templates: PDF or Office files with form fields and sign:ROLE fields.",
                            no_args_is_help=True)


def _ready_engine():  # type: ignore[no-untyped-def]
    settings = _settings()
    engine = _engine(settings)
    if settings.environment == "development":
        create_all(engine)
    return settings, engine


@templates_app.command("add")
def add_template(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    name: Annotated[str, typer.Option("--name", help="what people write after 模板: / template:")],
) -> None:
    """Register FILE as template NAME (replacing an older version of that name)."""
    settings, engine = _ready_engine()
    try:
        row, form = asyncio.run(register(settings, engine, make_blob_store(settings), name=name,
                                         file_name=file.name, data=file.read_bytes(), by=operator().id))
    except TemplateProblem as e:
        raise _fail(e.message) from e
    _out().print(f"template [bold]{row.name}[/]: fields {', '.join(form.field_names) or '-'}; "
                 f"signers {', '.join(form.roles)}")
    _out().print(f"use it: /sign 模板:{row.name} " + " ".join(f"{f}:…" for f in form.field_names)
                 + " " + " ".join(f"{r}:@…" for r in form.roles))


@templates_app.command("list")
def list_templates(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
) -> None:
    """Every registered template with its fields and signing roles."""
    _, engine = _ready_engine()
    rows = templates.all_templates(engine)
    if as_json:
        typer.echo(json.dumps([{"name": r.name, "fields": json.loads(r.fields), "signers": json.loads(r.roles),
                                "file": r.source_name, "added": r.created_at.isoformat()} for r in rows],
                              ensure_ascii=False, indent=2))
        return
    table = Table("name", "fields", "signers", "file", "added")
    for row in rows:
        table.add_row(row.name, ", ".join(json.loads(row.fields)), ", ".join(json.loads(row.roles)), row.source_name,
                      f"{row.created_at:%Y-%m-%d %H:%M}")
    _out().print(table)


@templates_app.command("remove")
def remove_template(name: str) -> None:
    """Remove a template (requests already started keep their filled copy)."""
    _, engine = _ready_engine()
    if not templates.delete(engine, name):
        raise _fail(f"no template called {name!r}")
    _out().print(f"removed template {name}")


def pause(reason: Annotated[str, typer.Option("--reason", help="shown to everyone who tries to sign")]) -> None:
    """Switch chat and REST signing off: new requests are refused with REASON; open flows carry on."""
    if not reason.strip():
        raise _fail("--reason must say why (it is shown in the chat)")
    _, engine = _ready_engine()
    switches.set_switch(engine, switches.PAUSE, True, reason.strip(), operator().id)
    _err().print(f"[yellow]e-signing paused: {reason.strip()}[/] (every API process sees it within seconds; "
                 "`signbridge resume` switches it back on)")


def resume() -> None:
    """Switch signing back on."""
    _, engine = _ready_engine()
    switches.set_switch(engine, switches.PAUSE, False, "", operator().id)
    _out().print("e-signing resumed")
