"""Operator commands: `signbridge requests …`, `signbridge identities …`, `signbridge db …`.

Everything goes through the same doors the chat and the REST API use — Temporal visibility
queries, the `status` query, the `cancel`/`remind`/`retry` updates (whose validators decide
what is allowed) and the database API — never by editing workflow rows or terminating
workflows, so a CLI action is recorded in the flow's history like any other.

The operator is `cli:<os user>`: whoever can reach the Temporal frontend can already act on any
workflow, so the CLI does not pretend to add a permission layer; it names who acted.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError, RPCStatusCode

from signbridge.cli import db as ops_db
from signbridge.cli import identities as ops_identities
from signbridge.cli import request_ids as short_ids
from signbridge.cli.request_ids import short_id
from signbridge.core.chat import Accepted, Applied, ChatAction, Deadline, NotFound, Refused
from signbridge.core.models import ActionInput, Actor, Person, SignStatus, StatusView
from signbridge.core.settings import Settings
from signbridge.core.temporal import WORKFLOW_NAME, connect
from signbridge.intake import Intake

requests_app = typer.Typer(help="Find, inspect, retry, cancel, remind signing flows and replace a signer.",
                           no_args_is_help=True)
identities_app = typer.Typer(help="Chat users ↔ signer contact data.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)

T = TypeVar("T")
STYLE = {"STUCK": "bold red", "COMPLETED": "green", "IN_PROGRESS": "cyan", "DECLINED": "yellow",
         "EXPIRED": "yellow", "CANCELLED": "magenta", "REJECTED": "yellow"}


def _settings() -> Settings:
    """Fresh from the environment on every command (not the process-wide cached one)."""
    return Settings()


def _out() -> Console:
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def operator() -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # containers without a passwd entry for the uid
        user = f"uid{os.getuid()}"
    return Actor(id=f"cli:{user}", name=user, is_operator=True)


def _fail(message: str) -> typer.Exit:
    _err().print(f"[red]signbridge: {message}[/]")
    return typer.Exit(1)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def _client(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except RuntimeError as e:
        raise _fail(f"cannot reach Temporal at {settings.temporal_address}: {e}") from e


def _literal(value: str) -> str:
    """A visibility-query string literal; quotes are refused rather than escaped (no injection)."""
    if any(c in value for c in "'\"\\"):
        raise _fail(f"{value!r}: quotes and backslashes are not allowed in filters")
    return f"'{value}'"


def visibility_query(status: SignStatus | None = None, initiator: str | None = None,
                     provider: str | None = None, platform: str | None = None) -> str:
    """The query the CLI runs; paste it into the Temporal UI's search box to see the same flows."""
    parts = [f"WorkflowType = '{WORKFLOW_NAME}'"]
    if status is not None:
        parts.append(f"SignStatus = '{status.value}'")
    if initiator:
        parts.append(f"SignInitiator = {_literal(initiator)}")
    if provider:
        parts.append(f"SignProvider = {_literal(provider)}")
    if platform:
        parts.append(f"ChatPlatform = {_literal(platform)}")
    return " AND ".join(parts)


def _first(sa: Any, key: str) -> str:
    values = sa.get(key) or []
    return str(values[0]) if values else ""


def _when(t: datetime | None) -> str:
    return t.astimezone().strftime("%Y-%m-%d %H:%M:%S") if t else ""


def _status(s: str) -> str:
    return f"[{STYLE.get(s, 'white')}]{s}[/]"


# ---- requests ----------------------------------------------------------------------------


@dataclass
class Listed:
    """One row of `requests list`: what visibility says, with names where the flow can tell them."""

    request_id: str
    status: str
    title: str
    initiator: str
    initiator_id: str
    provider: str
    platform: str
    pending: list[dict[str, str]]  # [{"id", "name"}], in signing order; empty once the flow ended
    started: datetime | None

    def json(self) -> dict[str, Any]:
        return {"id": short_id(self.request_id), "request_id": self.request_id, "status": self.status,
                "title": self.title, "initiator": {"id": self.initiator_id, "name": self.initiator},
                "provider": self.provider, "platform": self.platform, "pending": self.pending,
                "started_at": self.started.isoformat() if self.started else None}


def _ended(status: str, execution: WorkflowExecutionStatus | None) -> bool:
    """Nothing is pending on a flow that ended — whatever its last `PendingSigners` said."""
    return execution not in (None, WorkflowExecutionStatus.RUNNING) or (
        status in SignStatus.__members__ and SignStatus(status).terminal)


async def _row(client: Client, wf: Any, query_timeout: float) -> Listed:
    """Title and initiator from the flow's summary (`title — initiator`, set at start), pending
    signers' names from its `status` query while it runs (their ids when no worker answers)."""
    sa = wf.search_attributes
    status = _first(sa, "SignStatus")
    ended = _ended(status, wf.status)
    pending_ids = [] if ended else [str(p) for p in sa.get("PendingSigners") or []]
    handle = client.get_workflow_handle(wf.id)
    title, initiator, names = "", _first(sa, "SignInitiator"), {p: p for p in pending_ids}
    view: StatusView | None = None
    if pending_ids:
        try:
            view = await handle.query("status", result_type=StatusView, rpc_timeout=timedelta(seconds=query_timeout))
        except (RPCError, TimeoutError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
            view = None
    if view is not None:
        title, initiator = view.title, view.initiator.name
        names.update({s.person.id: s.person.name for s in view.signers})
    else:
        try:
            summary = await (await handle.describe()).static_summary() or ""
        except RPCError:
            summary = ""
        title, _, name = summary.rpartition(" — ")
        title, initiator = (title, name) if title else (summary, initiator)
    return Listed(wf.id, status, title, initiator, _first(sa, "SignInitiator"), _first(sa, "SignProvider"),
                  _first(sa, "ChatPlatform"), [{"id": p, "name": names[p]} for p in pending_ids], wf.start_time)


def _when_short(t: datetime | None) -> str:
    return t.astimezone().strftime("%m-%d %H:%M") if t else ""


def _list_table(rows: list[Listed], wide: bool, width: int) -> Table:
    """One line per flow within `width` columns: the id and status whole; title and names cut
    (with …), the widest first, until the row fits."""
    ids = [r.request_id if wide else short_id(r.request_id) for r in rows]
    fixed = [max(map(len, ids), default=2), 11, 19 if wide else 11]
    if wide:
        fixed += [max([len("provider"), *(len(r.provider) for r in rows)]),
                  max([len("chat"), *(len(r.platform) for r in rows)])]
    padding = 3 * (len(fixed) + 3)  # two spaces between columns and a leading one, as SIMPLE_HEAD draws them
    texts = [[r.title for r in rows], [r.initiator for r in rows], [", ".join(p["name"] for p in r.pending)
                                                                     for r in rows]]
    shares = [max((cell_len(t) for t in column), default=0) for column in texts]
    shares = [max(share, len(name)) for share, name in zip(shares, ("title", "initiator", "pending"), strict=True)]
    while sum(shares) > max(width - sum(fixed) - padding, 15) and max(shares) > 4:
        shares[shares.index(max(shares))] -= 1
    table = Table(title=f"Signing requests ({len(rows)})", box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    table.add_column("id", no_wrap=True, min_width=fixed[0])
    table.add_column("status", no_wrap=True, min_width=fixed[1])
    for name, share in zip(("title", "initiator", "pending"), shares, strict=True):
        table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=share)
    if wide:
        table.add_column("provider", no_wrap=True, min_width=fixed[3])
        table.add_column("chat", no_wrap=True, min_width=fixed[4])
    table.add_column("started", no_wrap=True, min_width=fixed[2])
    for r, shown in zip(rows, ids, strict=True):
        cells = [shown, _status(r.status), r.title, r.initiator, ", ".join(p["name"] for p in r.pending)]
        if wide:
            cells += [r.provider, r.platform]
        table.add_row(*cells, _when(r.started) if wide else _when_short(r.started))
    return table


@requests_app.command("list")
def list_requests(
    status: Annotated[SignStatus | None, typer.Option(case_sensitive=False, help="e.g. STUCK")] = None,
    initiator: Annotated[str | None, typer.Option(help="initiator's chat user id")] = None,
    provider: Annotated[str | None, typer.Option(help="e-signature provider, e.g. local, esign_cn")] = None,
    platform: Annotated[str | None, typer.Option(help="chat platform, e.g. wecom, feishu")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
    wide: Annotated[bool, typer.Option("--wide", help="full ids, provider and chat columns")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
    query_timeout: Annotated[float, typer.Option(help="seconds to wait for a flow to name its signers")] = 2.0,
) -> None:
    """List signing flows from Temporal's visibility index (the same search the Temporal UI runs).

    The `id` column is a short id every `requests` command accepts (`--wide` shows full ids).
    """
    query = visibility_query(status, initiator, provider, platform)

    async def fetch() -> list[Listed]:
        client = await _client(_settings())
        flows = [wf async for wf in client.list_workflows(query, limit=limit)]
        gate = asyncio.Semaphore(16)

        async def one(wf: Any) -> Listed:
            async with gate:
                return await _row(client, wf, query_timeout)

        return list(await asyncio.gather(*(one(wf) for wf in flows)))

    rows = _run(fetch())
    if as_json:
        typer.echo(json.dumps([r.json() for r in rows], ensure_ascii=False, indent=2))
        return
    out = _out()
    out.print(f"[dim]query: {query}[/]")
    out.print(_list_table(rows, wide, out.width))


@requests_app.command("show")
def show(
    request_id: RequestRef,
    query_timeout: Annotated[float, typer.Option(help="seconds to wait for a worker to answer the status query")] = 5.0,
) -> None:
    """Status, signers, the step it waits on or is stuck at, and the audit trail with its hash check."""
    from signbridge.cli.show import render_show

    settings = _settings()

    async def fetch() -> tuple[Any, StatusView | None, str | None]:
        client = await _client(settings)
        nonlocal request_id
        request_id = await _resolve(client, settings, request_id)
        handle = client.get_workflow_handle(request_id)
        try:
            described = await handle.describe()
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                raise _fail(f"no signing request {request_id}") from e
            raise
        try:
            view = await handle.query("status", result_type=StatusView, rpc_timeout=timedelta(seconds=query_timeout))
            return described, view, None
        except (RPCError, TimeoutError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as e:
            # The query needs a worker to replay the flow; the rest still helps without one.
            return described, None, f"status query failed ({e}); is a worker running on {described.task_queue}?"

    described, view, problem = _run(fetch())
    chain_ok = render_show(_out(), settings, described, view, problem)
    if chain_ok is False:
        raise _fail(f"the audit trail of {request_id} does not verify: rows were changed, removed or reordered")


@dataclass
class Outcome:
    request_id: str
    result: str  # done | skipped | failed
    detail: str


async def _act(client: Client, request_id: str, action: str, arg: ActionInput, timeout: float,
               batch: bool = False) -> Outcome:
    """One update through the intake, the door the chat and the REST API use too.

    The workflow's validator refusing (`NotAllowed`: not STUCK any more, nobody to remind) is a
    skip, not a failure. In a batch, a flow that ended between the query and its turn is too.
    """
    settings = _settings()
    intake = Intake(client, settings, _engine(settings))
    result = await intake.apply_action(ChatAction(request_id=request_id, name=action, actor=arg.actor,
                                                  reason=arg.reason, signer_ids=tuple(arg.signer_ids),
                                                  replacement=arg.replacement),
                                       Deadline(accept=timeout, result=timeout))
    match result:
        case Applied(view=view) if action == "retry" and view.stuck_step:  # answered before the step runs again
            return Outcome(request_id, "done", f"retrying '{view.stuck_step}' ({view.reason})")
        case Applied(view=view):
            return Outcome(request_id, "done", f"status {view.status.value}")
        case Accepted():
            return Outcome(request_id, "done", f"accepted; not finished within {timeout:.0f} s (the card shows it)")
        case Refused():
            return Outcome(request_id, "skipped" if result.code == "NotAllowed" else "failed",
                           f"{result.code}: {result.en}")
        case NotFound() if batch:
            return await _not_running(client, request_id)
        case NotFound():
            ended = " (it has ended)" if result.ended else ""
            return Outcome(request_id, "failed", f"not_found: No running signing request {request_id}{ended}")
    return Outcome(request_id, "failed", f"no answer within {timeout:.0f} s — is a worker running? "
                   "(the update may still be applied once one is)")


async def _not_running(client: Client, request_id: str) -> Outcome:
    """A flow found by its search attributes that takes no update: ended meanwhile (skip), or
    closed while its `SignStatus` still says STUCK — nothing can retry it, which must be said."""
    try:
        described = await client.get_workflow_handle(request_id).describe()
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return Outcome(request_id, "skipped", "no such flow any more")
        return Outcome(request_id, "failed", str(e))
    status = described.status.name if described.status else "closed"
    if str((described.search_attributes.get("SignStatus") or [""])[0]) != SignStatus.STUCK.value:
        return Outcome(request_id, "skipped", f"ended meanwhile ({status})")
    return Outcome(request_id, "failed", f"the workflow is {status}, no longer running: it cannot be retried; "
                   "start the request again (or `temporal workflow reset` it, see docs/operations.md)")


def _report(action: str, outcomes: list[Outcome]) -> None:
    out = _out()
    table = Table("request", action, "detail", box=box.SIMPLE_HEAD, pad_edge=False)
    colour = {"done": "green", "skipped": "yellow", "failed": "red"}
    for o in outcomes:
        table.add_row(short_id(o.request_id), f"[{colour[o.result]}]{o.result}[/]", o.detail)
    out.print(table)
    counts = {k: sum(o.result == k for o in outcomes) for k in colour}
    out.print(f"{action}: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
    if counts["failed"]:
        raise typer.Exit(1)


async def _each(client: Client, ids: list[str], action: str, arg: ActionInput, timeout: float,
                concurrency: int, batch: bool) -> list[Outcome]:
    """The action on every flow, `concurrency` at a time, with a progress bar (on stderr) for many."""
    gate = asyncio.Semaphore(concurrency)
    with Progress(TextColumn(f"{action}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=_err(), transient=True, disable=len(ids) < 2) as progress:
        task = progress.add_task(action, total=len(ids))

        async def one(wid: str) -> Outcome:
            async with gate:
                try:
                    return await _act(client, wid, action, arg, timeout, batch=batch)
                finally:
                    progress.advance(task)

        return list(await asyncio.gather(*(one(w) for w in ids)))


async def _resolve(client: Client, settings: Settings, ref: str) -> str:
    """A full request id for what the operator typed (a full id, or a short one from `list`)."""
    if not short_ids.looks_short(ref):
        return ref
    from store.repos import signing_records

    async def listed() -> AsyncIterator[str]:
        async for wf in client.list_workflows(f"WorkflowType = '{WORKFLOW_NAME}'"):
            yield wf.id

    try:
        return await short_ids.resolve(ref, signing_records.request_ids(_engine(settings)), listed())
    except short_ids.UnknownRequest as e:
        raise _fail(str(e)) from e


async def _resolve_all(client: Client, settings: Settings, refs: list[str]) -> list[str]:
    return [await _resolve(client, settings, ref) for ref in refs]


Timeout = Annotated[float, typer.Option(help="seconds to wait for each flow's answer")]
Concurrency = Annotated[int, typer.Option(min=1, max=64, help="updates in flight at once")]
RequestRef = Annotated[str, typer.Argument(help="the request: its short id from `requests list`, or its full id")]
RequestRefs = Annotated[list[str], typer.Argument(help="one or more requests: short ids from `requests list`, "
                                                       "or full ids")]


@requests_app.command("retry")
def retry(
    request_id: Annotated[str | None, typer.Argument(help="the flow to retry (short or full id)")] = None,
    all_stuck: Annotated[bool, typer.Option("--all-stuck", help="every STUCK flow (visibility query)")] = False,
    provider: Annotated[str | None, typer.Option(help="with --all-stuck: only this provider's flows")] = None,
    timeout: Timeout = 30.0,
    concurrency: Concurrency = 8,
) -> None:
    """Run the step a STUCK flow is retrying now, for one flow or for every stuck one.

    A flow that is no longer STUCK when its turn comes (someone retried it, visibility lagged)
    is reported as skipped by the workflow's own validator, not as a failure. A flow whose
    `SignStatus` says STUCK but whose workflow no longer runs is a failed row.
    """
    if (request_id is None) == (not all_stuck):
        raise _fail("give either a request id or --all-stuck")
    if provider and not all_stuck:
        raise _fail("--provider only goes with --all-stuck")
    arg = ActionInput(actor=operator(), reason="operator retry from the CLI")

    async def go() -> list[Outcome]:
        settings = _settings()
        client = await _client(settings)
        if request_id is not None:
            return [await _act(client, await _resolve(client, settings, request_id), "retry", arg, timeout)]
        query = visibility_query(SignStatus.STUCK, provider=provider)
        _out().print(f"[dim]query: {query}[/]")
        ids = [wf.id async for wf in client.list_workflows(query)]
        return await _each(client, ids, "retry", arg, timeout, concurrency, batch=True)

    outcomes = _run(go())
    if not outcomes:
        _out().print("no STUCK flows")
        return
    _report("retry", outcomes)


@requests_app.command("cancel")
def cancel(
    request_ids: RequestRefs,
    reason: Annotated[str | None, typer.Option(help="shown in the chat and the audit trail")] = None,
    timeout: Timeout = 120.0,
    concurrency: Concurrency = 8,
) -> None:
    """Cancel flows; each answers once it is CANCELLED (the provider flow is revoked on the way)."""
    arg = ActionInput(actor=operator(), reason=reason)

    async def go() -> list[Outcome]:
        settings = _settings()
        client = await _client(settings)
        ids = await _resolve_all(client, settings, request_ids)
        return await _each(client, ids, "cancel", arg, timeout, concurrency, batch=False)

    _report("cancel", _run(go()))


@requests_app.command("remind")
def remind(request_ids: RequestRefs, timeout: Timeout = 30.0, concurrency: Concurrency = 8) -> None:
    """Send every pending signer of these flows their link again now."""

    async def go() -> list[Outcome]:
        settings = _settings()
        client = await _client(settings)
        ids = await _resolve_all(client, settings, request_ids)
        return await _each(client, ids, "remind", ActionInput(actor=operator()), timeout, concurrency, batch=False)

    _report("remind", _run(go()))


@requests_app.command("replace")
def replace(
    request_id: Annotated[str, typer.Argument(help="the request (short id or full)")],
    signer: Annotated[str, typer.Option("--signer", help="the id of the signer who left")],
    new_id: Annotated[str, typer.Option("--with-id", help="the new signer's chat user id")],
    new_name: Annotated[str, typer.Option("--with-name", help="the new signer's name")],
    email: Annotated[str | None, typer.Option(help="the new signer's email")] = None,
    mobile: Annotated[str | None, typer.Option(help="the new signer's mobile")] = None,
    external: Annotated[bool, typer.Option(help="the new signer is outside the company")] = False,
    timeout: Timeout = 30.0,
) -> None:
    """Someone else signs in the place of a signer who left: their link dies, the new one gets theirs."""
    arg = ActionInput(actor=operator(), signer_ids=[signer],
                      replacement=Person(id=new_id, name=new_name, email=email, mobile=mobile, external=external))

    async def go() -> list[Outcome]:
        settings = _settings()
        client = await _client(settings)
        ids = await _resolve_all(client, settings, [request_id])
        return await _each(client, ids, "replace", arg, timeout, 1, batch=False)

    _report("replace", _run(go()))


# ---- identities --------------------------------------------------------------------------


def _engine(settings: Settings) -> Any:
    from store.db import get_engine

    return get_engine(settings.sqlalchemy_url)


@identities_app.command("import")
def import_identities(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
) -> None:
    """Upsert identities from CSV (platform, tenant, user_id, name, email, mobile, active).

    All or nothing: any bad row is reported with its line number and nothing is written.
    """
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise _fail(f"{file}: not UTF-8 ({e}); save the CSV as UTF-8") from e
    parsed = ops_identities.parse(text)
    if parsed.errors:
        err = _err()
        for line in parsed.errors:
            err.print(f"[red]{file}: {line}[/]")
        raise _fail(f"{len(parsed.errors)} problem(s) in {file}; nothing imported")
    result = ops_identities.upsert(_engine(_settings()), parsed)  # a database error: one line with its fix
    out = _out()
    for note in result.notes:
        out.print(f"[yellow]{file}: {note}[/]")
    out.print(f"imported {len(parsed.rows)} identities: {result.created} created, {result.updated} updated")


@identities_app.command("list")
def list_identities(
    platform: Annotated[str | None, typer.Option(help="only this chat platform")] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
) -> None:
    """Show the stored identities."""
    from store.repos import identities

    rows = identities.listed(_engine(_settings()), platform, tenant)
    if as_json:
        typer.echo(json.dumps([{"platform": r.platform, "tenant": r.tenant, "user_id": r.user_id, "name": r.name,
                                "email": r.email, "mobile": r.mobile, "active": r.active, "external": r.external}
                               for r in rows], ensure_ascii=False, indent=2))
        return
    table = Table("platform", "tenant", "user id", "name", "email", "mobile", "active", "external",
                  title=f"Identities ({len(rows)})", box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    for r in rows:
        table.add_row(r.platform, r.tenant, r.user_id, r.name, r.email or "", r.mobile or "",
                      "yes" if r.active else "[red]no[/]", "yes" if r.external else "")
    out = _out()
    out.print(table)
    out.print(f"{len(rows)} identities")


# ---- db ----------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """`alembic upgrade head` on SIGNBRIDGE_DATABASE_URL; stamps first if `create_all` made the tables.

    See `signbridge.cli.db` for why and how the existing schema is matched to a revision.
    """
    url = _settings().sqlalchemy_url
    shown = make_url(ops_db.driver_url(url)).render_as_string(hide_password=True)
    try:
        report = ops_db.upgrade(url)
    except ops_db.SchemaMismatch as e:
        raise _fail(f"{shown}: {e}") from e
    except SQLAlchemyError as e:
        raise _fail(f"{shown}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    out = _out()
    for note in report.notes:
        out.print(f"[yellow]{note}[/]")
    out.print(f"{shown}: {report.before or 'empty'} → {report.after}")

