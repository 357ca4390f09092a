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
import os
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import (
    Client,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError, RPCStatusCode

from signbridge.cli import db as ops_db
from signbridge.cli import identities as ops_identities
from signbridge.core.chat import Accepted, Applied, ChatAction, Deadline, NotFound, Refused
from signbridge.core.models import ActionInput, Actor, SignStatus, StatusView
from signbridge.core.settings import Settings
from signbridge.core.temporal import WORKFLOW_NAME, connect
from signbridge.intake import Intake

requests_app = typer.Typer(help="Find, inspect, retry, cancel and remind signing flows.", no_args_is_help=True)
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


@requests_app.command("list")
def list_requests(
    status: Annotated[SignStatus | None, typer.Option(case_sensitive=False, help="e.g. STUCK")] = None,
    initiator: Annotated[str | None, typer.Option(help="initiator's chat user id")] = None,
    provider: Annotated[str | None, typer.Option(help="e-signature provider, e.g. local, esign_cn")] = None,
    platform: Annotated[str | None, typer.Option(help="chat platform, e.g. wecom, feishu")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 100,
) -> None:
    """List signing flows from Temporal's visibility index (the same search the Temporal UI runs)."""
    query = visibility_query(status, initiator, provider, platform)

    async def fetch() -> list[Any]:
        client = await _client(_settings())
        return [wf async for wf in client.list_workflows(query, limit=limit)]

    found = _run(fetch())
    out = _out()
    out.print(f"[dim]query: {query}[/]")
    table = Table("request", "status", "initiator", "provider", "chat", "pending signers", "started")
    for wf in found:
        sa = wf.search_attributes
        table.add_row(wf.id, _status(_first(sa, "SignStatus")), _first(sa, "SignInitiator"),
                      _first(sa, "SignProvider"), _first(sa, "ChatPlatform"),
                      ", ".join(str(p) for p in sa.get("PendingSigners") or []), _when(wf.start_time))
    out.print(table)
    out.print(f"{len(found)} flow(s)")


@requests_app.command("show")
def show(
    request_id: str,
    query_timeout: Annotated[float, typer.Option(help="seconds to wait for a worker to answer the status query")] = 5.0,
) -> None:
    """Status, signers, the step it waits on or is stuck at, and the audit trail with its hash check."""
    from signbridge.cli.show import render_show

    settings = _settings()

    async def fetch() -> tuple[Any, StatusView | None, str | None]:
        handle = (await _client(settings)).get_workflow_handle(request_id)
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
                                                  reason=arg.reason, signer_ids=tuple(arg.signer_ids)),
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
    table = Table("request", action, "detail")
    colour = {"done": "green", "skipped": "yellow", "failed": "red"}
    for o in outcomes:
        table.add_row(o.request_id, f"[{colour[o.result]}]{o.result}[/]", o.detail)
    out.print(table)
    counts = {k: sum(o.result == k for o in outcomes) for k in colour}
    out.print(f"{action}: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
    if counts["failed"]:
        raise typer.Exit(1)


Timeout = Annotated[float, typer.Option(help="seconds to wait for each flow's answer")]


@requests_app.command("retry")
def retry(
    request_id: Annotated[str | None, typer.Argument(help="the flow to retry")] = None,
    all_stuck: Annotated[bool, typer.Option("--all-stuck", help="every STUCK flow (visibility query)")] = False,
    provider: Annotated[str | None, typer.Option(help="with --all-stuck: only this provider's flows")] = None,
    timeout: Timeout = 30.0,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="updates in flight at once")] = 8,
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
        client = await _client(_settings())
        if request_id is not None:
            return [await _act(client, request_id, "retry", arg, timeout)]
        query = visibility_query(SignStatus.STUCK, provider=provider)
        _out().print(f"[dim]query: {query}[/]")
        ids = [wf.id async for wf in client.list_workflows(query)]
        gate = asyncio.Semaphore(concurrency)

        async def one(wid: str) -> Outcome:
            async with gate:
                return await _act(client, wid, "retry", arg, timeout, batch=True)

        return list(await asyncio.gather(*(one(w) for w in ids)))

    outcomes = _run(go())
    if not outcomes:
        _out().print("no STUCK flows")
        return
    _report("retry", outcomes)


@requests_app.command("cancel")
def cancel(
    request_id: str,
    reason: Annotated[str | None, typer.Option(help="shown in the chat and the audit trail")] = None,
    timeout: Timeout = 120.0,
) -> None:
    """Cancel a flow; answers once it is CANCELLED (the provider flow is revoked on the way)."""
    arg = ActionInput(actor=operator(), reason=reason)

    async def go() -> Outcome:
        return await _act(await _client(_settings()), request_id, "cancel", arg, timeout)

    _report("cancel", [_run(go())])


@requests_app.command("remind")
def remind(request_id: str, timeout: Timeout = 30.0) -> None:
    """Send every pending signer their link again now."""

    async def go() -> Outcome:
        return await _act(await _client(_settings()), request_id, "remind", ActionInput(actor=operator()), timeout)

    _report("remind", [_run(go())])


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
    try:
        result = ops_identities.upsert(_engine(_settings()), parsed)
    except SQLAlchemyError as e:
        raise _fail(f"database error ({type(e).__name__}): {e.args[0] if e.args else e}; "
                    "has `signbridge db upgrade` run?") from e
    out = _out()
    for note in result.notes:
        out.print(f"[yellow]{file}: {note}[/]")
    out.print(f"imported {len(parsed.rows)} identities: {result.created} created, {result.updated} updated")


@identities_app.command("list")
def list_identities(
    platform: Annotated[str | None, typer.Option(help="only this chat platform")] = None,
    tenant: Annotated[str | None, typer.Option(help="only this tenant")] = None,
) -> None:
    """Show the stored identities."""
    from store.repos import identities

    rows = identities.listed(_engine(_settings()), platform, tenant)
    table = Table("platform", "tenant", "user id", "name", "email", "mobile", "active", "external")
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

