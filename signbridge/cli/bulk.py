"""`signbridge bulk-send --template 销售合同 --csv customers.csv`: one signing request per CSV row.

Checks the CSV first (nothing starts for a file that cannot be used), starts the bulk send (or
finds the one this same CSV started before: the bulk id comes from the template and the file),
shows a progress bar until every good row has its links out, then a table of every row. Safe to
run again: a row that was sent — by this file, an earlier run, or another CSV that repeats it —
is never sent twice.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import Engine

from signbridge.cli.ops import _client, _err, _fail, _out, _settings, operator
from signbridge.core import bulk as bulk_csv
from signbridge.core.chat import Busy, Duplicate, Started
from signbridge.core.models import BulkSendInput, BulkView, ChatRef, DocumentSource, Person
from signbridge.core.settings import Settings
from signbridge.intake import Intake, bulk
from store.blob_factory import make_blob_store
from store.db import create_all, get_engine
from store.repos import bulk_sends

ACTIVE = ("LOADING", "RUNNING")


def _role(value: str) -> tuple[str, Person]:
    """`甲方=u-2:李四` (role = chat user id, optionally `:name`)."""
    role, _, who = value.partition("=")
    person_id, _, name = who.partition(":")
    if not role or not person_id:
        raise _fail(f"--role {value!r}: write ROLE=USER_ID or ROLE=USER_ID:NAME, e.g. 甲方=u-2:李四")
    return role.strip(), Person(id=person_id.strip(), name=(name or person_id).strip())


def bulk_send(
    template: Annotated[str, typer.Option("--template", help="the registered template (signbridge templates list)")],
    csv_file: Annotated[Path, typer.Option("--csv", exists=True, dir_okay=False, readable=True,
                                           help="UTF-8 (with or without BOM) or GBK; one row per request")],
    role: Annotated[list[str] | None, typer.Option(
        "--role", help="a role every row's chat member signs: ROLE=USER_ID[:NAME] (repeatable)")] = None,
    initiator: Annotated[str | None, typer.Option(help="chat user id of the sender (default: cli:<you>)")] = None,
    initiator_name: Annotated[str | None, typer.Option(help="their name on cards and certificates")] = None,
    platform: Annotated[str, typer.Option(help="chat platform the links and the card go through")] = "webhook",
    chat: Annotated[str | None, typer.Option(help="chat id of the bulk's card (default: the sender's DM)")] = None,
    title: Annotated[str | None, typer.Option(help="title of every row's request (default: the template)")] = None,
    provider: Annotated[str | None, typer.Option(help="e-signature provider (default: SIGNBRIDGE_DEFAULT_PROVIDER)")]
    = None,
    wait: Annotated[bool, typer.Option(help="show progress until every good row is sent")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the rows to be sent")] = 3600,
) -> None:
    """Send template TEMPLATE to every row of the CSV (bounded by SIGNBRIDGE_BULK_CONCURRENCY)."""
    settings = _settings()
    engine = get_engine(settings.sqlalchemy_url)
    if settings.environment == "development":
        create_all(engine)
    data = csv_file.read_bytes()
    roles = dict(_role(r) for r in role or [])
    try:
        sheet = bulk.check(engine, settings, template, data, list(roles))
    except bulk_csv.BulkProblem as e:
        raise _fail(e.message) from e
    me = operator()
    sender = Person(id=initiator or me.id, name=initiator_name or (me.name if initiator is None else initiator))
    bulk_id = bulk.bulk_id_for_file("default", template, data)
    arg = BulkSendInput(
        bulk_id=bulk_id, title=title or template, template=template, initiator=sender,
        chat=ChatRef(platform=platform, chat_id=chat or sender.id, chat_kind="group" if chat else "direct",
                     source_event_id=bulk_id),
        csv=DocumentSource(name=csv_file.name, blob_key=make_blob_store(settings).put(data)),
        provider=provider or settings.default_provider, timing=settings.timing(), roles=roles,
        concurrency=settings.bulk_concurrency, max_rows=settings.bulk_max_rows)
    view = asyncio.run(_run(settings, engine, arg, sheet, wait, timeout))
    _summary(engine, bulk_id, view)


async def _run(settings: Settings, engine: Engine, arg: BulkSendInput, sheet: bulk_csv.Sheet, wait: bool,
               timeout: float) -> BulkView | None:
    client = await _client(settings)
    intake = Intake(client, settings, engine)
    outcome = await intake.start_bulk(arg)
    if isinstance(outcome, Busy):
        raise _fail("Temporal did not answer in time; run the same command again (nothing is sent twice)")
    good = len(sheet.good)
    if isinstance(outcome, Started):
        _err().print(f"bulk send [bold]{arg.bulk_id}[/]: {len(sheet.rows)} rows, {good} to send, "
                     f"{len(sheet.bad)} with problems")
    elif isinstance(outcome, Duplicate):
        _err().print(f"bulk send [bold]{arg.bulk_id}[/] of this CSV exists already: showing it (nothing is sent "
                     "twice)")
    view = await _view(intake, arg.bulk_id)
    if not wait:
        return view
    end = time.monotonic() + timeout
    with Progress(TextColumn("[bold]sending"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=_err(), transient=False) as bar:
        task = bar.add_task("", total=max(good, 1))
        while True:
            view = await _view(intake, arg.bulk_id)
            if view is not None:
                dealt = view.started + view.skipped - len(view.starting)
                bar.update(task, completed=min(dealt, good), description=f"sent {view.sent}, before {view.skipped}, "
                           f"ended {view.ended}")
                if view.status not in ACTIVE or (view.all_started and not view.starting):
                    return view
            if time.monotonic() > end:
                _err().print("[yellow]still sending; the bulk send carries on (run the same command to follow it)[/]")
                return view
            await asyncio.sleep(0.5)


async def _view(intake: Intake, bulk_id: str) -> BulkView | None:
    found = await intake.bulk_progress(bulk_id)
    return found if isinstance(found, BulkView) else None


def _summary(engine: Engine, bulk_id: str, view: BulkView | None) -> None:
    """Every row: what it held, and sent / sent before / its problem — then the totals."""
    rows = bulk_sends.rows(engine, bulk_id)
    table = Table("line", "row", "state", "request")
    for r in rows:
        label = " ".join(list(r.values.values())[:3])
        if r.problem:
            state = f"[yellow]not sent: {r.problem}[/]"
        elif r.sent_by:
            state = f"sent before ({r.sent_by}) — {r.status}"
        elif r.status:
            state = f"[green]sent[/] — {r.status}"
        else:
            state = "not sent yet"
        table.add_row(str(r.line), label, state, r.request_id or "")
    _out().print(table)
    if view is not None:
        _out().print(f"{view.status}: {view.total} rows, sent {view.sent}, sent before {view.skipped}, "
                     f"bad {view.bad}, ended {view.ended} {dict(view.outcomes) or ''}")
