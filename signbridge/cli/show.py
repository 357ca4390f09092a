"""What `signbridge requests show ID` prints: everything an operator needs to decide what to do.

Three sources, each the authority for its part: the workflow's `status` query (signers, the
step it is stuck at and why), Temporal's description (execution state, the activity being
retried right now with its attempt count and last error) and the database's audit trail,
re-hashed here so tampering shows up where people look.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from signbridge.cli.request_ids import short_id
from signbridge.core.cards import seal_line
from signbridge.core.models import SignStatus, StatusView
from signbridge.core.orgs import party_label
from signbridge.core.settings import Settings
from store import audit

STYLE = {"STUCK": "bold red", "COMPLETED": "green", "IN_PROGRESS": "cyan", "CANCELLED": "magenta"}


def _kv(out: Console, key: str, value: object) -> None:
    if value not in (None, ""):
        out.print(f"[bold]{key:>12}[/]  {value}")


def _next_step(view: StatusView) -> str:
    if view.status == SignStatus.STUCK:
        return (f"[bold red]STUCK at '{view.stuck_step}'[/]: {view.reason}\n"
                f"{'':>14}retrying by itself; once the cause is fixed, "
                f"`signbridge requests retry {view.request_id}` tries now")
    if view.status.terminal:
        return f"ended {view.status.value}" + (f": {view.reason}" if view.reason else "")
    if view.status == SignStatus.IN_PROGRESS:
        waiting = [s.person.name for s in view.signers if s.group == view.current_group and s.status != "signed"]
        return f"waiting for group {view.current_group + 1}: {', '.join(waiting)}"
    return view.status.value.lower()


def render_show(out: Console, settings: Settings, described: Any, view: StatusView | None,
                problem: str | None) -> bool | None:
    """Print the flow; returns whether its audit chain verifies (None when it has no events yet)."""
    sa = described.search_attributes
    status = view.status.value if view else str((sa.get("SignStatus") or ["?"])[0])
    out.print(f"[bold]{described.id}[/]  (id {short_id(described.id)})  [{STYLE.get(status, 'white')}]{status}[/]")
    if view is None:
        out.print(f"[yellow]{problem}[/]")
        _kv(out, "temporal", described.status.name if described.status else "")
    else:
        _kv(out, "title", view.title)
        _kv(out, "initiator", f"{view.initiator.name} ({view.initiator.id})")
        _kv(out, "chat", f"{view.chat.platform} / {view.chat.tenant} / {view.chat.chat_id}")
        _kv(out, "provider", view.provider + (f"  flow {view.provider_flow_id}" if view.provider_flow_id else ""))
        if view.document:
            _kv(out, "document", f"{view.document.name}  sha256 {view.document.sha256}")
        if view.signed_document:
            _kv(out, "signed", f"{view.signed_document.name}  sha256 {view.signed_document.sha256}")
        _kv(out, "deadline", view.deadline.isoformat() if view.deadline else "")
        _kv(out, "temporal", described.status.name if described.status else "")
        _kv(out, "next", _next_step(view))
        signers = Table("group", "signer", "id", "status", "signed at", "reminders", title="signers")
        for s in view.signers:
            signers.add_row(str(s.group + 1), party_label(s.person), s.person.id, s.status,
                            s.signed_at.strftime("%Y-%m-%d %H:%M:%S %Z") if s.signed_at else "", str(s.reminders_sent))
        out.print(signers)
        for a in view.seal_approvals:
            _kv(out, "seal approval", seal_line(a))
    pending = list(described.raw_description.pending_activities)
    if pending:
        acts = Table("activity", "attempt", "last error", title="activities in progress")
        for a in pending:
            acts.add_row(a.activity_type.name, str(a.attempt), a.last_failure.message if a.HasField(
                "last_failure") else "")
        out.print(acts)
    return _audit(out, settings, described.id)


def _audit(out: Console, settings: Settings, request_id: str) -> bool | None:
    from store.db import get_engine

    rows = audit.trail_of(get_engine(settings.sqlalchemy_url), request_id)
    if not rows:
        out.print("audit trail: no events recorded yet")
        return None
    ok = audit.verify_chain(rows)
    table = Table("#", "time (UTC)", "action", "actor", "detail", title="audit trail")
    for r in rows:
        table.add_row(str(r.seq), r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.action, r.actor,
                      detail_json(r.detail))
    out.print(table)
    out.print(f"audit chain: [green]intact[/] ({len(rows)} events, last hash {rows[-1].hash[:16]}…)" if ok
              else "audit chain: [bold red]BROKEN[/] — an event was changed, removed or reordered")
    return ok


def detail_json(detail: str) -> str:
    """Audit details are canonical JSON; show them compactly and readable (CJK unescaped)."""
    try:
        return json.dumps(json.loads(detail), ensure_ascii=False, separators=(", ", ": "))
    except ValueError:
        return detail
