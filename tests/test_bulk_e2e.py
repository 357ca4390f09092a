"""Bulk sends end to end: from the chat with a GBK CSV through a worker killed half-way, from the
CLI run twice, and over REST — every row sent once, bad rows reported, the good ones completed."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from signbridge.cli.main import app
from signbridge.core.models import BulkView
from signbridge.core.settings import Settings
from signbridge.intake.templates import register
from store.blob_factory import make_blob_store
from store.db import create_all, get_engine
from store.repos import bulk_sends
from tests.codes import mailed_links, sign_with_code
from tests.harness import Harness, harness
from tests.template_pdfs import template_pdf
from tests.test_bulk import _progress, _until, csv_rows, unique
from tests.test_e2e import MENTIONS, _terminate_running, _worker_log, stack
from tests.test_faults import _KillRig

runner = CliRunner()
AUTH = {"Authorization": "Bearer test-api-key"}


async def _register(settings: Settings) -> None:
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    await register(settings, engine, make_blob_store(settings), name="销售合同", file_name="t.pdf",
                   data=template_pdf(), by="test")


def _links(messages: list[dict[str, Any]], request_id: str, user: str) -> list[dict[str, Any]]:
    return [m for m in messages if m.get("type") == "message" and m.get("to") == user and m.get("sign_url")
            and f"{request_id}:" in m.get("idempotency_key", "")]


async def _sign(http: httpx.AsyncClient, settings: Settings, url: str, name: str) -> None:
    resp = await sign_with_code(http, settings, url, name, headers={"Accept": "application/json"})
    assert resp.status_code == 200, resp.text


async def test_fifty_rows_from_the_chat_survive_a_worker_kill_without_sending_a_row_twice(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    """A GBK CSV of 50 rows (line 27 has a bad email) attached to `/sign 批量 模板:销售合同 甲方:@李四`;
    the worker is SIGKILLed while rows are being sent and another one started: each of the 49 good
    rows gets one link, the bad one is on the card, and once everyone signed all 49 are COMPLETED."""
    data = csv_rows(50, bad_line=27, tag=unique()).encode("gbk")
    with stack(dev_env, settings, files={"customers.csv": data}) as s:
        await _register(s.settings)
        rig = _KillRig(s, dev_env.client, s.settings.data_dir / "delays.json")
        rig.start()
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                resp = await s.send(http, s.command("/sign 批量 模板:销售合同 甲方:@李四", MENTIONS[:1],
                                                    file="customers.csv"))
                assert resp.status_code == 202, resp.text
                bulk_id = resp.json()["request_id"]
                handle: WorkflowHandle[Any, Any] = dev_env.client.get_workflow_handle(bulk_id, result_type=BulkView)
                await _until(lambda: _sent_at_least(handle, 15), "15 rows sent", timeout=120)
                rig.stop()  # SIGKILL half-way: rows are starting, links are going out
                rig.start()
                await _until(lambda: _sent_at_least(handle, 49), "every good row sent", timeout=240)
                view = await _progress(handle)
                assert view.total == 50 and view.bad == 1 and view.started == 49 and view.skipped == 0
                assert view.peak_starting <= s.settings.bulk_concurrency
                rows = bulk_sends.rows(get_engine(s.settings.sqlalchemy_url), bulk_id)
                good = [r for r in rows if not r.problem]
                assert len(good) == 49 and [r.line for r in rows if r.problem] == [27]
                assert len({r.request_id for r in good}) == 49
                for r in good:  # one link per row, however often the worker died
                    assert len(_links(s.sink.messages, r.request_id or "", "u-1")) == 1, r
                for batch in range(0, 49, 7):
                    await asyncio.gather(*(_sign_row(s, http, r) for r in good[batch:batch + 7]))
                result: BulkView = await asyncio.wait_for(handle.result(), timeout=180)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- worker log ---\n{_worker_log(s.settings)}") from e
        finally:
            rig.stop()
            await _terminate_running(dev_env.client, s.sink)
        assert result.status == "DONE" and result.outcomes == {"COMPLETED": 49}
        cards = [m for m in s.sink.messages if m.get("type") == "card.upsert"]
        assert {m["card_key"] for m in cards} == {bulk_id}  # one card for the whole bulk, none per row
        assert cards[-1]["card"]["status_text"].startswith("已发送 49/50，已完成 49")
        assert "第 27 行" in cards[-1]["card"]["note"]
        assert len([m for m in s.sink.messages if m.get("type") == "file" and m.get("kind") == "signed"]) == 49


async def _sign_row(s: Any, http: httpx.AsyncClient, row: bulk_sends.RowState) -> None:
    request_id = row.request_id or ""
    await _sign(http, s.settings, _links(s.sink.messages, request_id, "u-1")[0]["sign_url"], "李四")
    customer = f"csv:{row.values['乙方邮箱']}"  # outside the company: the link comes by email
    await s.sink.wait_for(lambda: bool(mailed_links(s.settings, request_id, customer)), timeout=60)
    await _sign(http, s.settings, mailed_links(s.settings, request_id, customer)[0]["sign_url"], row.values["乙方"])


async def _sent_at_least(handle: WorkflowHandle[Any, Any], n: int) -> bool:
    try:
        return (await _progress(handle)).sent >= n
    except Exception:  # no worker answers the query while one is restarting
        return False


async def _cli(h: Harness, *args: str) -> Any:
    env = {"SIGNBRIDGE_DATA_DIR": str(h.settings.data_dir), "SIGNBRIDGE_DATABASE_URL": h.settings.sqlalchemy_url,
           "SIGNBRIDGE_TEMPORAL_ADDRESS": h.client.service_client.config.target_host,
           "SIGNBRIDGE_TASK_QUEUE": h.settings.task_queue, "COLUMNS": "250"}
    return await asyncio.to_thread(lambda: runner.invoke(app, list(args), env=env))


async def test_the_cli_run_again_sends_nothing_twice(dev_env: WorkflowEnvironment, settings: Settings,
                                                     tmp_path: Path) -> None:
    async with harness(dev_env, settings) as h:
        await _register(h.settings)
        first = tmp_path / "customers.csv"
        tag = unique()
        first.write_bytes(csv_rows(3, tag=tag).encode("utf-8-sig"))
        args = ("bulk-send", "--template", "销售合同", "--csv", str(first), "--role", "甲方=u-1:李四",
                "--initiator", "u-0", "--initiator-name", "张三")
        ran = await _cli(h, *args)
        assert ran.exit_code == 0, ran.output
        assert "3 rows, 3 to send" in ran.output and ran.output.count("sent — ") == 3
        links = len([m for m in h.sink.messages if m.get("type") == "message" and m.get("sign_url")])
        assert links == 3  # 李四, once per row

        again = await _cli(h, *args)  # the same file: finds the same bulk send
        assert again.exit_code == 0, again.output
        assert "exists already" in again.output and "nothing is sent twice" in again.output

        more = tmp_path / "more.csv"  # two of the same rows (other order, a notes column) and a new one
        lines = csv_rows(4, tag=tag).splitlines()
        more.write_text("\n".join([lines[0] + ",备注", lines[4] + ",新", lines[2] + ",x", lines[1] + ",y"]) + "\n")
        third = await _cli(h, *[a if a != str(first) else str(more) for a in args])
        assert third.exit_code == 0, third.output
        assert third.output.count("sent before (bulk:file:") == 2 and third.output.count("sent — ") == 1
        assert "sent 1, sent before 2" in third.output
        await asyncio.sleep(1)
        per_row = [m["idempotency_key"] for m in h.sink.messages if m.get("type") == "message" and m.get("sign_url")]
        assert len(per_row) == 4 and len(set(per_row)) == 4, per_row
        bad = tmp_path / "bad.csv"
        bad.write_text("客户名称,乙方\n甲,王\n")
        refused = await _cli(h, *[a if a != str(first) else str(bad) for a in args])
        assert refused.exit_code == 1 and "金额" in refused.output


async def test_rest_bulk_send_checks_the_csv_reports_bad_rows_and_cancels(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(dev_env, settings) as h:
        await _register(h.settings)
        body = '{"template": "销售合同", "initiator": {"id": "u-0", "name": "张三"}, ' \
               '"roles": {"甲方": {"id": "u-1", "name": "李四"}}, "chat": {"chat_id": "g-1", "source_event_id": "e-b"}}'

        async def post(csv: bytes) -> httpx.Response:
            return await h.http.post("/api/v1/bulk-sends", headers=AUTH, data={"request": body},
                                     files={"file": ("c.csv", csv, "text/csv")})

        refused = await post("客户名称,乙方,乙方邮箱\n甲,王,w@x.example\n".encode())
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_csv"
        assert "金额" in refused.json()["error"]["message"]
        rows = csv_rows(12, bad_line=3, tag=unique()).encode("gbk")
        resp = await post(rows)
        assert resp.status_code == 202, resp.text
        out = resp.json()
        assert out["started"] and out["total"] == 12 and out["bad"] == 1 and "第 3 行" in out["problems"][0]
        bulk_id = out["bulk_id"]
        assert (await post(rows)).json() == {**out, "started": False}
        handle = h.client.get_workflow_handle(bulk_id, result_type=BulkView)
        await _until(lambda: _sent_at_least(handle, 2), "two rows sent")
        progress = await h.http.get(f"/api/v1/bulk-sends/{bulk_id}", headers=AUTH)
        assert progress.status_code == 200 and progress.json()["total"] == 12
        cancelled = await h.http.post(f"/api/v1/bulk-sends/{bulk_id}/cancel", headers=AUTH)
        assert cancelled.status_code == 200, cancelled.text
        result: BulkView = await handle.result()
        assert result.status == "CANCELLED" and result.not_sent > 0
        assert (await h.http.post(f"/api/v1/bulk-sends/{bulk_id}/cancel", headers=AUTH)).status_code in (404, 409)
        rows = (await h.http.get(f"/api/v1/bulk-sends/{bulk_id}/rows", headers=AUTH)).json()
        assert len(rows) == 12 and [r["line"] for r in rows if r["problem"]] == [3]
        assert {r["status"] for r in rows if r["status"]} == {"CANCELLED"}
        cards = [m["card"] for m in h.sink.messages if m.get("type") == "card.upsert" and m["card_key"] == bulk_id]
        assert cards[-1]["status"] == "CANCELLED" and re.match(r"已发送 \d+/12，已完成 0", cards[-1]["status_text"])
        assert "因撤销未发送" in cards[-1]["status_text"] and cards[-1]["buttons"] == []
