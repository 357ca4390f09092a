"""Bulk sends into Temporal: from the chat (`/sign 批量 模板:销售合同 甲方:@李四` with a CSV), from
`POST /api/v1/bulk-sends` and from `signbridge bulk-send`.

REST and the CLI hold the CSV's bytes, so they check it here first (`check`) and refuse a file
that cannot be used before anything starts; the chat's CSV is fetched by the workflow's first
activity, which runs the same check and says in the chat why a file cannot be used.
"""

from __future__ import annotations

import json

from sqlalchemy.engine import Engine

from signbridge.core import bulk as bulk_csv
from signbridge.core.chat import ChatEvent, FileRef
from signbridge.core.commands import ParsedCommand
from signbridge.core.models import BulkSendInput, ChatRef, DocumentSource, Person
from signbridge.core.settings import Settings
from store.repos import templates


def bulk_id_for_file(tenant: str, template: str, data: bytes) -> str:
    """The same CSV sent again with the same template finds its bulk send (the CLI's re-run)."""
    return f"bulk:file:{tenant}:{bulk_csv.csv_key(template, data)[:32]}"


def bulk_id_for_event(event: ChatEvent) -> str:
    return f"bulk:{event.platform}:{event.tenant}:{event.event_id}"


def check(engine: Engine, settings: Settings, template: str, data: bytes,
          fixed_roles: list[str]) -> bulk_csv.Sheet:
    """The CSV read against the template; `BulkProblem` for anything that stops it as a whole."""
    row = templates.get(engine, template)
    if row is None:
        names = "、".join(t.name for t in templates.all_templates(engine)) or "（无 / none）"
        raise bulk_csv.BulkProblem(f"没有名为「{template}」的模板。可用的模板：{names}"
                                   f"（No template called “{template}”; available: {names}）")
    roles = json.loads(row.roles)
    unknown = [r for r in fixed_roles if r not in roles]
    if unknown:
        raise bulk_csv.BulkProblem(f"模板「{template}」没有角色：{'、'.join(unknown)}（The template has no role "
                                   f"{', '.join(unknown)}; its roles: {', '.join(roles)}）")
    if len(data) > settings.max_document_bytes:
        raise bulk_csv.BulkProblem(f"CSV 超过 {settings.max_document_bytes} 字节（The CSV is larger than "
                                   f"{settings.max_document_bytes} bytes）")
    return bulk_csv.read_sheet(data, template=template, fields=json.loads(row.fields), roles=roles,
                               fixed_roles=fixed_roles, max_rows=settings.bulk_max_rows)


def from_command(event: ChatEvent, parsed: ParsedCommand, settings: Settings, problem: str | None,
                 initiator: Person, files: list[DocumentSource]) -> BulkSendInput:
    """`/sign 批量 模板:销售合同 甲方:@李四` with a CSV: one request per row. A command that cannot go
    ahead still starts, to say why in the chat."""
    if problem is None and not parsed.template:
        problem = ("批量发送需要模板，例如 /sign 批量 模板:销售合同 甲方:@李四（A bulk send needs a template, e.g. "
                   "/sign bulk template:SalesContract PartyA:@Alice）")
    assigned = {p.id for p in parsed.roles.values()}
    loose = [p.name for p in parsed.signers if p.id not in assigned]
    if problem is None and loose:
        problem = (f"批量发送中请用「角色:@某人」指定 {'、'.join(loose)} 签署的角色，其余签署人来自 CSV"
                   f"（In a bulk send, give {', '.join(loose)} a role, e.g. 甲方:@name; the other signers come "
                   "from the CSV）")
    csvs = [f for f in files if f.name.lower().endswith(".csv")]
    if problem is None and len(csvs) != 1:
        problem = ("请在同一条消息中附上一个 CSV 文件（每行一份合同）"
                   "（Attach exactly one CSV file, one row per contract, to the same message）")
    timing = settings.timing()
    if parsed.deadline:
        timing.deadline = parsed.deadline
    if parsed.reminders is False:
        timing.reminder_max = 0
    return BulkSendInput(
        bulk_id=bulk_id_for_event(event), title=parsed.title or parsed.template or "批量发送",
        template=parsed.template or "", initiator=initiator, chat=_chat(event),
        csv=csvs[0] if csvs and problem is None else None,
        provider=parsed.provider or settings.default_provider, timing=timing, roles=dict(parsed.roles),
        cc=list(parsed.cc), concurrency=settings.bulk_concurrency, max_rows=settings.bulk_max_rows, problem=problem)


def _chat(event: ChatEvent) -> ChatRef:
    return ChatRef(platform=event.platform, tenant=event.tenant, chat_id=event.chat_id, chat_kind=event.chat_kind,
                   source_event_id=event.event_id)


def sources(files: tuple[FileRef, ...]) -> list[DocumentSource]:
    return [DocumentSource(name=f.name, url=f.url, sha256=f.sha256) for f in files]
