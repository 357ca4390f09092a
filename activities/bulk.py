"""A bulk send's side effects: load its CSV into the database, hand the workflow the next rows as
signing requests, and publish its progress (database and the one card in the chat).

Only counts and a page of rows at a time cross into Temporal: a 10,000-row CSV stays in the
blob store and the `bulk_rows` table, so the parent workflow's history stays bounded.
"""

from __future__ import annotations

import asyncio
import json

from temporalio import activity

from activities.chat import ChatActivities
from activities.deps import Deps
from activities.errors import connector_errors, rejected
from connectors.chat.base import InputProblem
from signbridge.core import bulk as bulk_csv
from signbridge.core import messages
from signbridge.core.cards import Card, CardButton, Lang
from signbridge.core.chat import request_id_for
from signbridge.core.models import (
    BulkLoaded,
    BulkPage,
    BulkRowRequest,
    BulkSendInput,
    BulkView,
    SigningRequest,
    SignStatus,
    TemplateUse,
)
from signbridge.core.signers import SignerProblem
from store.blobs import BlobNotFound
from store.repos import bulk_sends, templates
from store.tables import BulkRow, BulkSend

# The bulk's own state → the status its card shows.
CARD_STATUS = {"LOADING": SignStatus.PREPARING, "RUNNING": SignStatus.IN_PROGRESS, "DONE": SignStatus.COMPLETED,
               "CANCELLED": SignStatus.CANCELLED, "REJECTED": SignStatus.REJECTED}


def row_request_id(bulk: BulkSendInput, row_key: str) -> str:
    """A row's signing request id: from its content (see `signbridge.core.bulk`), never from the
    bulk send, so the same row is never sent twice."""
    return request_id_for("bulk", bulk.chat.tenant, row_key[:40])


class BulkActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name="bulk_load")
    async def bulk_load(self, bulk: BulkSendInput) -> BulkLoaded:
        """Read and check the CSV against the template and store every row (good and bad): what
        cannot be used as a whole is `Rejected`, a bad row is stored with its problem."""
        engine = self.deps.engine
        bulk_sends.create(engine, BulkSend(bulk_id=bulk.bulk_id, title=bulk.title, template=bulk.template,
                                           initiator_id=bulk.initiator.id, chat_platform=bulk.chat.platform,
                                           tenant=bulk.chat.tenant, chat_id=bulk.chat.chat_id, status="LOADING"))
        template = templates.get(engine, bulk.template)
        if template is None:
            names = "、".join(t.name for t in templates.all_templates(engine)) or "（无 / none）"
            raise rejected(f"没有名为「{bulk.template}」的模板。可用的模板：{names}"
                           f"（No template called “{bulk.template}”; available: {names}）")
        data = await self._csv(bulk)
        fields, roles = json.loads(template.fields), json.loads(template.roles)
        unknown = [r for r in bulk.roles if r not in roles]
        if unknown:
            raise rejected(f"模板「{bulk.template}」没有角色：{'、'.join(unknown)}（roles: {'、'.join(roles)}）")
        try:
            sheet = await asyncio.to_thread(bulk_csv.read_sheet, data, template=bulk.template, fields=fields,
                                            roles=roles, fixed_roles=list(bulk.roles), max_rows=bulk.max_rows)
        except bulk_csv.BulkProblem as e:
            raise rejected(e.message) from e
        activity.heartbeat("storing rows")
        await asyncio.to_thread(bulk_sends.save_rows, engine, bulk.bulk_id, [
            BulkRow(bulk_id=bulk.bulk_id, row_key=r.key, line=r.line, problem=r.problem,
                    values=json.dumps(r.values, ensure_ascii=False),
                    request_id=None if r.problem else row_request_id(bulk, r.key))
            for r in sheet.rows])
        return BulkLoaded(total=len(sheet.rows), bad=len(sheet.bad), problems=bulk_csv.shown_problems(sheet.rows))

    async def _csv(self, bulk: BulkSendInput) -> bytes:
        source = bulk.csv
        if source is None:
            raise rejected("没有找到 CSV 文件：请在同一条消息中附上 CSV（No CSV: attach it to the same message）")
        limit = self.deps.settings.max_document_bytes
        if source.blob_key:
            try:
                return self.deps.blobs.get(source.blob_key)
            except BlobNotFound as e:
                raise rejected("上传的 CSV 已不存在（The uploaded CSV is gone）") from e
        try:
            with connector_errors():
                return await self.deps.chat(bulk.chat.platform).download(bulk.chat, source, limit)
        except InputProblem as e:
            raise rejected(e.message) from e

    @activity.defn(name="bulk_rows")
    async def bulk_rows(self, page: BulkPage) -> list[BulkRowRequest]:
        """The next good rows as the signing requests their flows start with."""
        bulk = page.bulk
        template = templates.get(self.deps.engine, bulk.template)
        roles: list[str] = json.loads(template.roles) if template else list(bulk.roles)
        field_names: set[str] | None = set(json.loads(template.fields)) if template else None
        found = bulk_sends.good_rows_after(self.deps.engine, bulk.bulk_id, page.after_line, page.limit)
        existing = bulk_sends.existing_requests(self.deps.engine, [r.request_id for r in found if r.request_id])
        out: list[BulkRowRequest] = []
        for row in found:
            values: dict[str, str] = json.loads(row.values)
            request_id = row.request_id or row_request_id(bulk, row.row_key)
            problem: str | None = None
            try:
                people = bulk_csv.row_signers(values, roles, bulk.roles)
            except SignerProblem as e:  # checked at load already; the flow says so and ends REJECTED
                people, problem = {}, e.message
            signers = [people[r] for r in roles if r in people]
            fields = {k: v for k, v in values.items() if field_names is None or k in field_names}
            named = next((p.name for r, p in people.items() if r not in bulk.roles), None) \
                or next(iter(fields.values()), None)
            out.append(BulkRowRequest(line=row.line, already=request_id in existing, request=SigningRequest(
                request_id=request_id,
                title=f"{bulk.title} · {named}" if named else bulk.title,
                initiator=bulk.initiator,
                chat=bulk.chat.model_copy(update={"source_event_id": f"{bulk.bulk_id}:{row.line}"}),
                groups=[[p] for p in signers],  # in the template's role order, one after another
                provider=bulk.provider,
                timing=bulk.timing,
                problem=problem,
                template=TemplateUse(name=bulk.template, fields=fields),
                roles={r: p.id for r, p in people.items()},
                cc=bulk.cc,
                bulk_id=bulk.bulk_id,
            )))
        return out

    @activity.defn(name="bulk_publish")
    async def bulk_publish(self, view: BulkView) -> None:
        """The database first, then the bulk's one card (same card key: updated in place)."""
        bulk_sends.set_status(self.deps.engine, view.bulk_id, view.status)
        lang = self.deps.settings.language_for(view.chat.platform)
        if view.status == "REJECTED" and view.reason:
            text = messages.render("bulk_rejected", {"reason": view.reason}, lang)
            key = f"{view.bulk_id}:rejected"
            await ChatActivities(self.deps).once(view.chat, key, lambda c: c.send_text(view.chat, None, text, key=key))
        with connector_errors():
            await self.deps.chat(view.chat.platform).upsert_card(view.chat, view.bulk_id, bulk_card(view, lang))


def progress_text(view: BulkView, lang: Lang = "zh") -> str:
    """"已发送 37/50，已完成 12" and what else there is to say in one line."""
    completed = view.outcomes.get(SignStatus.COMPLETED.value, 0)
    other = view.ended - completed
    if lang == "zh":
        parts = [f"已发送 {view.sent}/{view.total}，已完成 {completed}"]
        parts += [f"{other} 份未完成（拒签/过期/撤销/无法发起）"] if other else []
        parts += [f"{view.skipped} 行此前已发送，未重复发送"] if view.skipped else []
        parts += [f"{view.bad} 行有问题未发送"] if view.bad else []
        parts += [f"{view.not_sent} 行因撤销未发送"] if view.not_sent else []
        return "，".join(parts)
    parts = [f"Sent {view.sent}/{view.total}, completed {completed}"]
    parts += [f"{other} ended otherwise (declined/expired/cancelled/rejected)"] if other else []
    parts += [f"{view.skipped} sent before, not again"] if view.skipped else []
    parts += [f"{view.bad} bad rows not sent"] if view.bad else []
    parts += [f"{view.not_sent} not sent (cancelled)"] if view.not_sent else []
    return ", ".join(parts)


def bulk_card(view: BulkView, lang: Lang = "zh") -> Card:
    """The bulk's card in the neutral card model every platform draws: the progress as its status
    line, the bad rows (or why it stopped) as its note, a cancel button while it runs."""
    notes = ([view.reason] if view.reason else []) + view.problems
    running = view.status in ("LOADING", "RUNNING")
    return Card(request_id=view.bulk_id,
                title=(f"批量发送：{view.title}" if lang == "zh" else f"Bulk send: {view.title}"),
                status=CARD_STATUS[view.status], status_text=progress_text(view, lang),
                document_name=(f"模板 {view.template}" if lang == "zh" else f"template {view.template}"),
                document_sha256=None, signers=[], note="\n".join(notes) or None,
                buttons=[CardButton("cancel", "全部撤销" if lang == "zh" else "Cancel all")] if running else [],
                lang=lang)
