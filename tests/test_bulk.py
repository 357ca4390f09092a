"""Bulk sends: the CSV (encodings, missing columns, bad contacts, duplicates, 10,000 rows) and
`BulkSendWorkflow` on the real Temporal dev server (bounded concurrency, progress on one card,
continue-as-new, cancel as a whole, each row sent once)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.bulk import bulk_card
from signbridge.core import bulk as bulk_csv
from signbridge.core.models import ActionInput, Actor, BulkSendInput, BulkView, ChatRef, DocumentSource, Person
from signbridge.core.settings import Settings
from signbridge.core.temporal import start_bulk
from signbridge.intake.templates import register
from store.blob_factory import make_blob_store
from store.db import get_engine
from store.repos import bulk_sends
from tests.harness import INITIATOR, A, Harness, harness
from tests.template_pdfs import template_pdf
from tests.test_faults import _until

FIELDS = ["客户名称", "金额"]
ROLES = ["甲方", "乙方"]
HEADER = "客户名称,金额,乙方,乙方邮箱,乙方手机"


def sheet(text: str | bytes, max_rows: int = 10_000, fixed: tuple[str, ...] = ("甲方",)) -> bulk_csv.Sheet:
    data = text.encode() if isinstance(text, str) else text
    return bulk_csv.read_sheet(data, template="销售合同", fields=FIELDS, roles=ROLES, fixed_roles=list(fixed),
                               max_rows=max_rows)


def csv_rows(n: int, bad_line: int | None = None, tag: str = "") -> str:
    """`n` customers; `tag` makes the rows differ from other tests' (a row's identity is its content,
    and the tests share one Temporal server: the same row twice would be "sent before")."""
    lines = [HEADER]
    for i in range(n):
        email = "not-an-email" if bad_line is not None and i + 2 == bad_line else f"c{i}@customer.example"
        lines.append(f"客户{i}公司{tag},{1000 + i},联系人{i},{email},")
    return "\n".join(lines) + "\n"


def unique() -> str:
    return uuid.uuid4().hex[:6]


# ---- the CSV -----------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
def test_utf8_with_and_without_bom_and_gbk_read_the_same(encoding: str) -> None:
    read = sheet(csv_rows(3).encode(encoding))
    assert read.encoding == ("gbk" if encoding == "gbk" else "utf-8")
    assert read.columns[0] == "客户名称"  # no BOM left in the first column's name
    assert [r.values["客户名称"] for r in read.rows] == ["客户0公司", "客户1公司", "客户2公司"]
    assert [r.key for r in read.rows] == [r.key for r in sheet(csv_rows(3)).rows]  # same rows, same identity


def test_neither_utf8_nor_gbk_is_refused() -> None:
    with pytest.raises(bulk_csv.BulkProblem, match="UTF-8"):
        sheet(b"\xff\xfe\x00\x00" + "客户名称".encode("utf-32-le") + b"\xff\xff")


def test_a_missing_column_refuses_the_file_naming_what_the_template_needs() -> None:
    with pytest.raises(bulk_csv.BulkProblem) as e:
        sheet("客户名称,乙方,乙方邮箱\n某公司,王,w@x.example\n")
    assert "金额" in e.value.message and "客户名称，金额，乙方，乙方邮箱，乙方手机" in e.value.message
    with pytest.raises(bulk_csv.BulkProblem, match="乙方"):
        sheet("客户名称,金额,乙方\n某公司,1,王\n")  # a CSV role needs an email or mobile column


def test_bad_rows_are_reported_and_good_ones_kept() -> None:
    text = (HEADER + "\n"
            "甲公司,100,王经理,wang@customer.example,\n"   # line 2: good
            "乙公司,,赵总,zhao@customer.example,\n"        # line 3: empty 金额
            "丙公司,300,钱总,not-an-email,\n"              # line 4: bad email
            "丁公司,400,孙总,,12345\n"                     # line 5: bad mobile
            "戊公司,500,李总,,\n"                          # line 6: no contact
            "甲公司,100,王经理,wang@customer.example,\n"   # line 7: repeats line 2
            "己公司,600\n"                                 # line 8: too few cells
            "\n"                                           # blank: skipped
            "庚公司,700,周总,,13800138000\n")              # line 10: good (mobile)
    read = sheet(text)
    assert [r.line for r in read.good] == [2, 10]
    problems = {r.line: r.problem or "" for r in read.bad}
    assert set(problems) == {3, 4, 5, 6, 7, 8}
    assert "金额" in problems[3] and "not-an-email" in problems[4] and "12345" in problems[5]
    assert "邮箱或手机号" in problems[6] and "第 2 行" in problems[7] and "缺少列" in problems[8]
    shown = bulk_csv.shown_problems(read.rows)
    assert shown[0].startswith("第 3 行") and len(shown) == 6


def test_row_identity_is_the_content_not_the_line_or_other_columns() -> None:
    a = sheet(HEADER + ",备注\n甲公司,100,王,w@x.example,,first\n乙公司,1,赵,z@x.example,,\n")
    b = sheet("备注,乙方邮箱,乙方,金额,客户名称,乙方手机\n"
              ",z@x.example,赵,1,乙公司,\nsecond,w@x.example,王,100,甲公司,\n")
    assert {r.key for r in a.rows} == {r.key for r in b.rows}
    keyed = sheet(HEADER + ",row_key\n甲公司,100,王,w@x.example,,2026-1\n甲公司,100,王,w@x.example,,2026-2\n")
    assert len(keyed.good) == 2  # the same values under two explicit keys: two rows to send
    assert keyed.rows[0].key not in {r.key for r in a.rows}


def test_ten_thousand_rows_are_read_quickly_and_the_limit_holds() -> None:
    began = time.monotonic()
    read = sheet(csv_rows(10_000))
    assert len(read.good) == 10_000 and len({r.key for r in read.rows}) == 10_000
    assert time.monotonic() - began < 20
    with pytest.raises(bulk_csv.BulkProblem, match="10000"):
        sheet(csv_rows(10_001), max_rows=10_000)


def test_row_signers_are_the_fixed_member_and_the_rows_external_person() -> None:
    row = sheet(csv_rows(1)).rows[0]
    people = bulk_csv.row_signers(row.values, ROLES, {"甲方": A})
    assert people["甲方"] == A
    assert people["乙方"].external and people["乙方"].email == "c0@customer.example"
    assert people["乙方"].id == "csv:c0@customer.example"


# ---- the workflow ------------------------------------------------------------------------------


async def _template(h: Harness) -> None:
    await register(h.settings, get_engine(h.settings.sqlalchemy_url), make_blob_store(h.settings), name="销售合同",
                   file_name="t.pdf", data=template_pdf(), by="test")


def _bulk(h: Harness, text: str, **overrides: Any) -> BulkSendInput:
    key = make_blob_store(h.settings).put(text.encode())
    bulk_id = f"bulk:test:{uuid.uuid4().hex[:10]}"
    values: dict[str, Any] = dict(
        bulk_id=bulk_id, title="销售合同", template="销售合同", initiator=INITIATOR,
        chat=ChatRef(chat_id="g-1", source_event_id=bulk_id), csv=DocumentSource(name="c.csv", blob_key=key),
        timing=h.timing(), roles={"甲方": A}, concurrency=2)
    values.update(overrides)
    return BulkSendInput(**values)


async def _record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With SIGNBRIDGE_RECORD_HISTORIES=1, keep this run's history for tests/test_replay.py."""
    if os.environ.get("SIGNBRIDGE_RECORD_HISTORIES") == "1":
        (Path(__file__).parent / "histories" / f"{name}.json").write_text((await handle.fetch_history()).to_json())


async def _progress(handle: WorkflowHandle[Any, Any]) -> BulkView:
    return await handle.query("progress", result_type=BulkView)  # type: ignore[no-any-return]


def _customer(i: int) -> Person:
    return Person(id=f"csv:c{i}@customer.example", name=f"联系人{i}", email=f"c{i}@customer.example", external=True)


async def test_bulk_send_starts_rows_a_few_at_a_time_and_finishes_on_one_card(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(dev_env, settings) as h:
        await _template(h)
        arg = _bulk(h, csv_rows(6, bad_line=4, tag=unique()), rows_per_run=2)  # continues as new every 2 rows started
        handle, started = await start_bulk(h.client, arg, h.settings.task_queue)
        assert started
        await _until(lambda: _all_sent(handle, 5), "every good row sent")
        view = await _progress(handle)
        assert view.total == 6 and view.bad == 1 and view.sent == 5 and view.runs >= 3
        assert view.peak_starting <= 2
        assert "第 4 行" in view.problems[0] and "not-an-email" in view.problems[0]
        rows = bulk_sends.rows(get_engine(h.settings.sqlalchemy_url), arg.bulk_id)
        row_handles = [h.client.get_workflow_handle(r.request_id) for r in rows if r.request_id]
        assert len(row_handles) == 5
        for i, row in zip([0, 1, 3, 4, 5], row_handles, strict=True):
            await h.sign(row, A)
            await h.sign(row, _customer(i))
        result: BulkView = await handle.result()
        assert result.status == "DONE" and result.outcomes == {"COMPLETED": 5}
        await _record(handle, "bulk-last-run-done")
        cards = [m["card"] for m in h.sink.messages if m.get("type") == "card.upsert"]
        assert {m["card_key"] for m in h.sink.messages if m.get("type") == "card.upsert"} == {arg.bulk_id}
        last = cards[-1]["status_text"]
        assert last.startswith("已发送 5/6，已完成 5") and "1 行有问题未发送" in last
        assert "第 4 行" in cards[-1]["note"]
        for i, row in zip([0, 1, 3, 4, 5], row_handles, strict=True):  # one link per signer per row, nothing twice
            assert len(h.links_for(row, _customer(i))) == 1  # the customer's by email, not in the chat


async def _all_sent(handle: WorkflowHandle[Any, Any], n: int) -> bool:
    view = await _progress(handle)
    return view.sent >= n


async def test_cancel_as_a_whole_cancels_open_rows_and_starts_no_more(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(dev_env, settings) as h:
        await _template(h)
        arg = _bulk(h, csv_rows(8, tag=unique()), concurrency=1)
        handle, _ = await start_bulk(h.client, arg, h.settings.task_queue)
        await _until(lambda: _all_sent(handle, 2), "two rows sent")
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update("cancel", ActionInput(actor=Actor(id="u-9", name="路人")))
        assert isinstance(refused.value.cause, ApplicationError) and refused.value.cause.type == "PermissionDenied"
        await handle.execute_update("cancel", ActionInput(actor=Actor(id=INITIATOR.id, name=INITIATOR.name)))
        result: BulkView = await handle.result()
        await _record(handle, "bulk-cancelled")
        assert result.status == "CANCELLED"
        assert result.started + result.not_sent == 8 and result.not_sent >= 4
        assert result.outcomes == {"CANCELLED": result.started}
        rows = bulk_sends.rows(get_engine(h.settings.sqlalchemy_url), arg.bulk_id)
        assert len([r for r in rows if r.status == "CANCELLED"]) == result.started
        assert all(r.status is None for r in rows if r.status != "CANCELLED")


async def test_a_csv_that_cannot_be_used_is_said_in_the_chat(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(dev_env, settings) as h:
        await _template(h)
        arg = _bulk(h, "客户名称,乙方,乙方邮箱\n甲,王,w@x.example\n")
        handle, _ = await start_bulk(h.client, arg, h.settings.task_queue)
        result: BulkView = await handle.result()
        assert result.status == "REJECTED" and "金额" in (result.reason or "")
        texts = [m["text"] for m in h.sink.messages if m.get("type") == "message" and not m.get("to")]
        assert any(t.startswith("批量发送无法开始") and "金额" in t for t in texts)


def test_the_bulk_card_draws_on_every_platform() -> None:
    """The bulk's card is the neutral card: every platform renders it, progress text and cancel button
    included (the button's action reaches the bulk's own `cancel` update: the card key is the bulk id)."""
    from connectors.chat.dingtalk.cards import render_card as dingtalk
    from connectors.chat.feishu.cards import render_card as feishu
    from connectors.chat.slack.cards import render_card as slack
    from connectors.chat.wecom.cards import render_card as wecom

    view = BulkView(bulk_id="bulk:x", title="销售合同", template="销售合同", initiator=INITIATOR,
                    chat=ChatRef(chat_id="g-1", source_event_id="e"), status="RUNNING", total=50, sent=37,
                    outcomes={"COMPLETED": 12}, bad=1, problems=["第 7 行 / line 7: 缺少：金额"])
    card = bulk_card(view, "zh")
    assert card.status_text.startswith("已发送 37/50，已完成 12") and card.request_id == "bulk:x"
    assert [b.action for b in card.buttons] == ["cancel"] and "第 7 行" in (card.note or "")
    for rendered in (dingtalk(card), feishu(card), slack(card), wecom(card, "task-1")):
        assert "37/50" in json.dumps(rendered, ensure_ascii=False)
    english = bulk_card(view.model_copy(update={"status": "DONE"}), "en")
    assert english.status_text.startswith("Sent 37/50, completed 12") and english.buttons == []


def test_ten_thousand_rows_are_stored_once_and_paged_in_csv_order(settings: Settings) -> None:
    """The load activity's storage: 10,000 rows in batches, a retried load adds nothing, and the
    workflow's pages come in CSV order without the bad rows."""
    from store.db import create_all
    from store.tables import BulkRow

    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    read = sheet(csv_rows(10_000, bad_line=5000))
    def rows() -> list[BulkRow]:
        return [BulkRow(bulk_id="b", row_key=r.key, line=r.line, values=json.dumps(r.values), problem=r.problem)
                for r in read.rows]

    began = time.monotonic()
    bulk_sends.save_rows(engine, "b", rows())
    bulk_sends.save_rows(engine, "b", rows()[:100])  # the load activity again, after a worker died
    assert time.monotonic() - began < 60
    assert len(bulk_sends.rows(engine, "b")) == 10_000
    page = bulk_sends.good_rows_after(engine, "b", 4998, 3)
    assert [r.line for r in page] == [4999, 5001, 5002]  # line 5000 is bad
