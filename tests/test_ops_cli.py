"""The operator CLI against the real dev server and real databases.

The CLI runs in-process through typer's CliRunner, in a thread (`asyncio.to_thread`), so the
harness's worker keeps running on this test's event loop while the command waits on Temporal.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from signbridge.cli.db import alembic_config, driver_url
from signbridge.cli.main import app
from signbridge.cli.ops import visibility_query
from signbridge.cli.request_ids import short_id
from signbridge.core.models import (
    ActionInput,
    Actor,
    ChatRef,
    DocumentSource,
    Person,
    SigningRequest,
    SignStatus,
    StatusView,
)
from signbridge.core.settings import Settings
from signbridge.core.temporal import SA_PROVIDER, SA_STATUS, start_signing
from signbridge.pdf.sample import sample_contract
from store import tables  # noqa: F401
from store.blob_factory import make_blob_store
from tests.harness import INITIATOR, A, B, Harness, harness

runner = CliRunner()
HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _env(settings: Settings, client: Client | None = None) -> dict[str, str]:
    env = {"SIGNBRIDGE_DATA_DIR": str(settings.data_dir), "SIGNBRIDGE_DATABASE_URL": settings.sqlalchemy_url,
           "COLUMNS": "250"}
    if client is not None:
        env["SIGNBRIDGE_TEMPORAL_ADDRESS"] = client.service_client.config.target_host
    return env


async def cli(h: Harness, *args: str) -> Result:
    """Run `signbridge <args>` off the event loop so the worker keeps serving the flows."""
    env = _env(h.settings, h.client)
    return await asyncio.to_thread(lambda: runner.invoke(app, list(args), env=env))


async def _until(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _visible(client: Client, query: str, ids: set[str]) -> bool:
    return ids <= {wf.id async for wf in client.list_workflows(query)}


def test_visibility_query_and_refused_quotes() -> None:
    assert visibility_query(SignStatus.STUCK, provider="esign_cn") == (
        "WorkflowType = 'SigningWorkflow' AND SignStatus = 'STUCK' AND SignProvider = 'esign_cn'")
    assert visibility_query(initiator="u-1", platform="wecom") == (
        "WorkflowType = 'SigningWorkflow' AND SignInitiator = 'u-1' AND ChatPlatform = 'wecom'")
    result = runner.invoke(app, ["requests", "list", "--initiator", "x' OR WorkflowType != '"])
    assert result.exit_code == 1 and "quotes" in result.output


async def test_retry_all_stuck_brings_an_outage_batch_back(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(dev_env.client, settings) as h:
        h.provider.down = True
        handles: list[WorkflowHandle[Any, Any]] = [
            await h.start([[A]], timing=h.timing(step_retry_window=timedelta(seconds=2))) for _ in range(3)]
        for handle in handles:
            await h.wait_status(handle, "STUCK")
        ids = {handle.id for handle in handles}
        stuck_query = visibility_query(SignStatus.STUCK, provider="local")
        await _until(lambda: _visible(h.client, stuck_query, ids), "the STUCK flows in visibility")

        listed = await cli(h, "requests", "list", "--status", "stuck", "--provider", "local", "--platform", "webhook",
                           "--wide")
        assert listed.exit_code == 0, listed.output
        assert stuck_query in listed.output and all(i in listed.output for i in ids)
        other = await cli(h, "requests", "list", "--status", "STUCK", "--platform", "slack", "--wide")
        assert other.exit_code == 0 and not any(i in other.output for i in ids)

        shown = await cli(h, "requests", "show", handles[0].id)
        assert shown.exit_code == 0, shown.output
        assert "STUCK at 'create'" in shown.output and "unavailable" in shown.output
        assert "request.stuck" in shown.output and "audit chain: intact" in shown.output

        # Retried while the provider is still down: a STUCK flow also retries by itself, and one
        # that healed first would be a `skipped` row. The retried step fails again; the flows
        # then heal by themselves soon after (an operator's retry restarts their short pauses).
        retried = await cli(h, "requests", "retry", "--all-stuck", "--provider", "local", "--timeout", "10")
        rows = [line for line in retried.output.splitlines() if " done " in line or " failed " in line
                or " skipped " in line]
        for i in ids:
            assert any(short_id(i) in row and "done" in row and "retrying 'create'" in row
                       for row in rows), retried.output
        # Only a STUCK flow left behind elsewhere on the shared dev server (no worker) could fail.
        assert retried.exit_code == (1 if any("failed" in row for row in rows) else 0), retried.output
        h.provider.down = False

        for handle in handles:
            await h.sign(handle, A)
        views: list[StatusView] = [await handle.result() for handle in handles]
        assert [v.status for v in views] == [SignStatus.COMPLETED] * 3

        again = await cli(h, "requests", "retry", handles[0].id)  # an ended flow takes no more updates
        assert again.exit_code == 1 and "No running signing request" in again.output, again.output
        done = await cli(h, "requests", "show", handles[0].id)
        assert done.exit_code == 0, done.output
        assert "COMPLETED" in done.output and "request.completed" in done.output
        assert "audit chain: intact" in done.output


async def test_a_flow_without_a_worker_is_a_failed_row_not_a_crash(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    """A flow whose task queue nobody polls must not hang the CLI or hide the other rows."""
    req = SigningRequest(request_id=f"sign:test:{uuid.uuid4().hex[:12]}", title="t", initiator=INITIATOR,
                         chat=ChatRef(chat_id="g-1", source_event_id="e"), groups=[[A]],
                         documents=[DocumentSource(name="c.pdf", blob_key="k")])
    handle, _ = await start_signing(dev_env.client, req, f"nobody-polls-{uuid.uuid4().hex[:8]}")
    try:
        env = _env(settings, dev_env.client)
        result = await asyncio.to_thread(
            lambda: runner.invoke(app, ["requests", "retry", handle.id, "--timeout", "2"], env=env))
        assert result.exit_code == 1, result.output
        assert "failed" in result.output and "is a worker running?" in result.output, result.output
    finally:
        await handle.terminate("test teardown")


async def test_retry_all_stuck_says_so_when_a_stuck_flow_no_longer_runs(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    """`SignStatus` STUCK on a workflow that ended (an older build let a chat outage fail flows):
    nothing can retry it, and the CLI must say so and exit 1 instead of skipping it silently."""
    provider = f"ended-{uuid.uuid4().hex[:8]}"  # a filter no other test's flow matches
    req = SigningRequest(request_id=f"sign:test:{uuid.uuid4().hex[:12]}", title="t", initiator=INITIATOR,
                         chat=ChatRef(chat_id="g-1", source_event_id="e"), groups=[[A]], provider=provider)
    handle = await dev_env.client.start_workflow(
        "SigningWorkflow", req, id=req.request_id, task_queue=f"nobody-polls-{uuid.uuid4().hex[:8]}",
        search_attributes=TypedSearchAttributes([SearchAttributePair(SA_STATUS, "STUCK"),
                                                 SearchAttributePair(SA_PROVIDER, provider)]))
    await handle.terminate("as an older build's FAILED flow")
    query = visibility_query(SignStatus.STUCK, provider=provider)
    await _until(lambda: _visible(dev_env.client, query, {handle.id}), "the ended STUCK flow in visibility")
    env = _env(settings, dev_env.client)
    result = await asyncio.to_thread(lambda: runner.invoke(
        app, ["requests", "retry", "--all-stuck", "--provider", provider, "--timeout", "5"], env=env))
    assert result.exit_code == 1, result.output
    row = next(line for line in result.output.splitlines() if short_id(handle.id) in line)
    assert "failed" in row and "TERMINATED" in result.output and "cannot be retried" in result.output, result.output


async def test_remind_and_cancel(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(dev_env.client, settings) as h:
        handle = await h.start([[A]])
        await h.link(handle, A)
        reminded = await cli(h, "requests", "remind", handle.id)
        assert reminded.exit_code == 0, reminded.output
        await h.sink.wait_for(lambda: len(h.links_for(handle, A)) >= 2, timeout=10)  # the link, sent again

        single_retry = await cli(h, "requests", "retry", handle.id)
        assert single_retry.exit_code == 0 and "skipped" in single_retry.output

        cancelled = await cli(h, "requests", "cancel", handle.id, "--reason", "合同作废")
        assert cancelled.exit_code == 0, cancelled.output
        assert "CANCELLED" in cancelled.output
        view: StatusView = await handle.result()
        assert view.status == SignStatus.CANCELLED and view.reason == "合同作废"

        late = await cli(h, "requests", "remind", handle.id)  # an ended flow takes no more updates
        assert late.exit_code == 1 and "failed" in late.output
        shown = await cli(h, "requests", "show", handle.id)
        assert "request.cancelled" in shown.output and "cli:" in shown.output  # who cancelled, in the trail

        missing = await cli(h, "requests", "show", "sign:test:does-not-exist")
        assert missing.exit_code == 1 and "no signing request" in missing.output
        usage = await cli(h, "requests", "retry")
        assert usage.exit_code == 1 and "--all-stuck" in usage.output

    # No worker any more: the status query cannot be answered; show falls back to visibility.
    orphan = await asyncio.to_thread(lambda: runner.invoke(
        app, ["requests", "show", handle.id, "--query-timeout", "2"], env=_env(h.settings, h.client)))
    assert orphan.exit_code == 0, orphan.output
    assert "is a worker running" in orphan.output and "CANCELLED" in orphan.output
    assert "request.cancelled" in orphan.output  # the audit trail comes from the database

    # Someone edits the trail behind the API's back: show says so and exits non-zero.
    engine = create_engine(settings.sqlalchemy_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET actor = 'nobody' WHERE request_id = :r AND action = :a"),
                     {"r": handle.id, "a": "request.cancelled"})
    engine.dispose()
    tampered = await asyncio.to_thread(lambda: runner.invoke(
        app, ["requests", "show", handle.id, "--query-timeout", "1"], env=_env(h.settings, h.client)))
    assert tampered.exit_code == 1 and "BROKEN" in tampered.output


async def test_list_fits_80_columns_with_short_ids_titles_and_names(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    """Rows that can be told apart and copied at 80 columns, `show`/`cancel` taking the short id,
    names instead of ids, nothing pending on an ended flow, and the same as JSON."""
    initiator = Person(id=f"u-{uuid.uuid4().hex[:10]}", name="陈经理")
    async with harness(dev_env.client, settings) as h:
        handles = []
        for title in ("服务器设备采购合同（第一批，含三年维保服务与现场安装调试）", "保密协议"):
            request_id = f"sign:webhook:default:evt-{uuid.uuid4().hex}"
            key = make_blob_store(h.settings).put(sample_contract("Contract"))
            req = SigningRequest(request_id=request_id, title=title, initiator=initiator, groups=[[A, B]],
                                 chat=ChatRef(chat_id="g-1", source_event_id=request_id), timing=h.timing(),
                                 documents=[DocumentSource(name="c.pdf", blob_key=key)])
            handles.append((await start_signing(h.client, req, h.settings.task_queue))[0])
        for handle in handles:
            await h.link(handle, B)
        query = visibility_query(initiator=initiator.id, status=SignStatus.IN_PROGRESS)
        await _until(lambda: _visible(h.client, query, {handle.id for handle in handles}), "both flows listed")
        first, second = (short_id(handle.id) for handle in handles)

        cancelled = await cli(h, "requests", "cancel", second, "--reason", "重复发起")
        assert cancelled.exit_code == 0 and "1 done" in cancelled.output, cancelled.output
        await _until(lambda: _visible(h.client, visibility_query(initiator=initiator.id, status=SignStatus.CANCELLED),
                                      {handles[1].id}), "the cancel in visibility")

        env80 = {**_env(h.settings, h.client), "COLUMNS": "80"}
        narrow = await asyncio.to_thread(lambda: runner.invoke(
            app, ["requests", "list", "--initiator", initiator.id], env=env80))
        assert narrow.exit_code == 0, narrow.output
        lines = narrow.output.splitlines()
        assert max(len(line) for line in lines) <= 80, narrow.output
        assert lines[1].strip().startswith("Signing requests (2)"), narrow.output
        row1 = next(line for line in lines if first in line)
        row2 = next(line for line in lines if second in line)
        assert "IN_PROGRESS" in row1 and "李四, 王五" in narrow.output and "陈经理" in narrow.output
        assert "CANCELLED" in row2 and "李四" not in row2 and "王五" not in row2  # nothing pending once ended
        assert "服务器设备采…" in row1 and "保密协议" in row2  # a long title is cut, not wrapped

        shown = await cli(h, "requests", "show", first)  # the short id, as listed
        assert shown.exit_code == 0 and handles[0].id in shown.output and "IN_PROGRESS" in shown.output, shown.output

        as_json = await cli(h, "requests", "list", "--initiator", initiator.id, "--json")
        rows = {r["id"]: r for r in json.loads(as_json.output)}
        assert rows[first]["request_id"] == handles[0].id and rows[first]["title"].startswith("服务器设备采购合同")
        assert [p["name"] for p in rows[first]["pending"]] == ["李四", "王五"]
        assert rows[first]["initiator"] == {"id": initiator.id, "name": "陈经理"} and rows[second]["pending"] == []

        unknown = await cli(h, "requests", "show", "0000abcd")
        assert unknown.exit_code == 1 and "no signing request has the id 0000abcd" in unknown.output
        await handles[0].execute_update("cancel", ActionInput(actor=Actor(id="ops", is_operator=True)),
                                        result_type=StatusView)


def test_a_database_problem_is_one_line_with_its_fix(tmp_path: Path) -> None:
    empty = {"SIGNBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/new/x.db", "COLUMNS": "250"}
    result = runner.invoke(app, ["identities", "list"], env=empty)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "has no SignBridge tables yet" in result.output and "run `signbridge db upgrade`" in result.output
    assert "Traceback" not in result.output
    csv_file = tmp_path / "people.csv"
    csv_file.write_text(GOOD, encoding="utf-8")
    result = runner.invoke(app, ["identities", "import", str(csv_file)], env=empty)
    assert result.exit_code == 1 and result.output.strip().splitlines()[-1].endswith("run `signbridge db upgrade`")

    (tmp_path / "a-file").write_text("")
    unusable = {"SIGNBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path}/a-file/x.db", "COLUMNS": "250"}
    result = runner.invoke(app, ["identities", "list"], env=unusable)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "a-file/x.db" in result.output and "SIGNBRIDGE_DATA_DIR" in result.output

    debug = runner.invoke(app, ["--debug", "identities", "list"], env=empty)
    assert debug.exit_code == 1 and debug.exception is not None  # --debug: the exception itself


GOOD = """platform,tenant,user_id,name,email,mobile,active
webhook,default,u-1,李四,ls@corp.example,+8613800000001,true
wecom,corp-1,zhangsan,张三,,,1
slack,,U123,Alice,alice@corp.example,,
"""

BAD = """platform,tenant,user_id,name,email,mobile,active
teams,default,u-9,Nobody,,,
webhook,default,u-2,王五,not-an-email,,yes
webhook,default,u-3,,w@corp.example,,
webhook,default,u-2,王五,ww@corp.example,12,maybe
"""


def test_identities_import_good_and_bad(settings: Settings, tmp_path: Path) -> None:
    env = _env(settings)
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    good = tmp_path / "good.csv"
    good.write_text("\ufeff" + GOOD, encoding="utf-8")  # as Excel saves it
    result = runner.invoke(app, ["identities", "import", str(good)], env=env)
    assert result.exit_code == 0, result.output
    assert "3 created, 0 updated" in result.output
    assert "line 3" in result.output and "WeCom" in result.output  # no email/mobile: accepted, explained

    # Re-import: blank cells keep what is stored; changed cells update.
    good.write_text("platform,user_id,name,email,active\nwebhook,u-1,李四(销售),,false\n", encoding="utf-8")
    result = runner.invoke(app, ["identities", "import", str(good)], env=env)
    assert result.exit_code == 0 and "0 created, 1 updated" in result.output, result.output
    listed = runner.invoke(app, ["identities", "list", "--platform", "webhook"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "李四(销售)" in listed.output and "ls@corp.example" in listed.output and "+8613800000001" in listed.output
    assert "zhangsan" not in listed.output and "1 identities" in listed.output

    bad = tmp_path / "bad.csv"
    bad.write_text(BAD, encoding="utf-8")
    result = runner.invoke(app, ["identities", "import", str(bad)], env=env)
    assert result.exit_code == 1
    out = result.output
    for expected in ("line 2: platform 'teams'", "line 3: email 'not-an-email'", "line 4: name is empty",
                     "line 5: repeats webhook/default/u-2 from line 3", "line 5: mobile '12'",
                     "line 5: active must be true/false", "nothing imported"):
        assert expected in out, out
    assert "3 identities" in runner.invoke(app, ["identities", "list"], env=env).output  # nothing written

    header = tmp_path / "header.csv"
    header.write_text("platform,userid,name\nwebhook,u-1,x\n", encoding="utf-8")
    result = runner.invoke(app, ["identities", "import", str(header)], env=env)
    assert result.exit_code == 1 and "line 1: header missing column(s) user_id" in result.output


def _revision(url: str) -> str | None:
    engine = create_engine(driver_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(driver_url(url), poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _create_all(url: str, skip: tuple[str, ...] = ()) -> None:
    engine = create_engine(driver_url(url), poolclass=NullPool)
    try:
        SQLModel.metadata.create_all(engine, tables=[t for n, t in SQLModel.metadata.tables.items() if n not in skip])
    finally:
        engine.dispose()


def _app_create_all(url: str) -> None:
    from store.db import create_all

    engine = create_engine(driver_url(url), poolclass=NullPool)
    try:
        create_all(engine)
    finally:
        engine.dispose()


def _drop_columns(url: str, table: str, columns: tuple[str, ...]) -> None:
    """What an older release's `create_all` made lacks columns added since (SQLite ≥ 3.35 drops them)."""
    engine = create_engine(driver_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for column in columns:
                conn.exec_driver_sql(f"DROP INDEX IF EXISTS ix_{table}_{column}")
                conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
    finally:
        engine.dispose()


def _upgrade(url: str) -> Result:
    return runner.invoke(app, ["db", "upgrade"], env={"SIGNBRIDGE_DATABASE_URL": url, "COLUMNS": "250"})


def test_db_upgrade_fresh_and_create_all_sqlite(tmp_path: Path) -> None:
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = _upgrade(fresh)
    assert result.exit_code == 0, result.output
    assert _revision(fresh) == HEAD and set(SQLModel.metadata.tables) <= _tables(fresh)
    assert _upgrade(fresh).exit_code == 0  # idempotent

    made = f"sqlite:///{tmp_path / 'made.db'}"  # the app's create_all ran first: stamp, don't fail
    _create_all(made)
    result = _upgrade(made)
    assert result.exit_code == 0, result.output
    assert f"stamped {HEAD}" in result.output and _revision(made) == HEAD

    # create_all from an older release (before the chat tables): stamp that revision, migrate the rest.
    older = f"sqlite:///{tmp_path / 'older.db'}"
    newer = ("chat_messages", "inbound_events", "sent_messages", "provider_links", "chat_files", "signing_links",
             "request_participants", "templates", "bulk_sends", "bulk_rows", "switches", "local_documents",
             "approval_mappings", "organisations", "sso_tickets", "sign_codes", "provider_webhooks_seen",
             "validated_versions")
    _create_all(older, skip=newer)
    _drop_columns(older, "signing_requests", ("bulk_id", "snapshot", "certificate_sha256"))  # added later
    _drop_columns(older, "local_signers", ("org_name", "org_credit_code", "seal", "seal_kind", "seal_image_key",
                                           "last_code_at", "code_failures", "locked_until", "verification"))
    _drop_columns(older, "local_events", ("delivered_at", "delivery_attempts", "next_delivery_at"))
    result = _upgrade(older)
    assert result.exit_code == 0, result.output
    assert "stamped 993ad634c42d" in result.output and _revision(older) == HEAD
    assert set(newer) <= _tables(older)

    # Versioned at the first revision, but the app's create_all already added the newer tables.
    ahead = f"sqlite:///{tmp_path / 'ahead.db'}"
    command.upgrade(alembic_config(ahead), "993ad634c42d")
    _app_create_all(ahead)  # the app's: new tables, and new columns of old tables
    result = _upgrade(ahead)
    assert result.exit_code == 0, result.output
    assert f"stamped {HEAD}" in result.output and _revision(ahead) == HEAD

    odd = f"sqlite:///{tmp_path / 'odd.db'}"  # tables matching no revision: refused, not guessed
    engine = create_engine(odd, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE identities (id INTEGER PRIMARY KEY, platform TEXT)"))
    engine.dispose()
    result = _upgrade(odd)
    assert result.exit_code == 1 and "match no migration revision" in result.output
    assert _revision(odd) is None


def test_db_upgrade_unreachable_database_is_a_clear_error() -> None:
    result = _upgrade("postgresql://signbridge:s3cret@127.0.0.1:1/signbridge")
    assert result.exit_code == 1 and "OperationalError" in result.output
    assert "s3cret" not in result.output  # the password is masked


def test_db_upgrade_fresh_postgresql(pg_url: str) -> None:
    result = _upgrade(pg_url)
    assert result.exit_code == 0, result.output
    assert _revision(pg_url) == HEAD and set(SQLModel.metadata.tables) <= _tables(pg_url)


def test_db_upgrade_postgresql_after_create_all(pg_url: str) -> None:
    _create_all(pg_url)
    result = _upgrade(pg_url)
    assert result.exit_code == 0, result.output
    assert f"stamped {HEAD}" in result.output and _revision(pg_url) == HEAD
    assert _upgrade(pg_url).exit_code == 0


def test_templates_list_as_json(settings: Settings, tmp_path: Path) -> None:
    from tests.template_pdfs import template_pdf

    env = _env(settings)
    source = tmp_path / "销售合同.pdf"
    source.write_bytes(template_pdf())
    added = runner.invoke(app, ["templates", "add", str(source), "--name", "销售合同"], env=env)
    assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["templates", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["name"] == "销售合同" and row["file"] == "销售合同.pdf" and row["signers"] and row["fields"]
