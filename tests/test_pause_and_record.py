"""The pause switch across processes, and a request that outlives its Temporal execution."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from signbridge.cli.main import app
from signbridge.core.settings import Settings
from tests.harness import A, harness
from tests.sim.servers import free_port

AUTH = {"Authorization": "Bearer test-api-key"}
NEW = {"title": "合同", "initiator": {"id": "u-0", "name": "张三"}, "groups": [[{"id": "u-1", "name": "李四"}]],
       "file_url": "https://files.example/c.pdf"}


async def test_pause_is_honoured_by_a_second_api_process(dev_env: WorkflowEnvironment, settings: Settings,
                                                         tmp_path: Path) -> None:
    env = {**os.environ, "SIGNBRIDGE_ENVIRONMENT": "development", "SIGNBRIDGE_DATA_DIR": str(settings.data_dir),
           "SIGNBRIDGE_DATABASE_URL": settings.sqlalchemy_url, "SIGNBRIDGE_API_KEYS": "test-api-key",
           "SIGNBRIDGE_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
           "SIGNBRIDGE_TASK_QUEUE": settings.task_queue, "SIGNBRIDGE_PAUSE_CHECK_SECONDS": "1"}
    port = free_port()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "signbridge.cli.main", "api", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, headers=AUTH) as http:
            for _ in range(200):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
            first = await http.post("/api/v1/signing-requests", json=NEW)
            assert first.status_code == 202, first.text
            result = CliRunner().invoke(app, ["pause", "--reason", "系统升级"], env=env)
            assert result.exit_code == 0, result.output
            began = time.monotonic()
            while (resp := await http.post("/api/v1/signing-requests", json=NEW)).status_code != 503:
                assert time.monotonic() - began < 5, "the second process did not see the pause within seconds"
                await asyncio.sleep(0.2)
            assert resp.json()["error"]["code"] == "paused" and "系统升级" in resp.json()["error"]["message"]
            assert (await http.get("/readyz")).status_code == 200  # paused is not unhealthy
            assert CliRunner().invoke(app, ["resume"], env=env).exit_code == 0
            await asyncio.sleep(1.2)
            assert (await http.post("/api/v1/signing-requests", json=NEW)).status_code == 202
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_a_request_is_listed_and_downloadable_after_its_temporal_execution_is_deleted(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(dev_env, settings) as h:
        handle = await h.start([[A]])
        await h.sign(handle, A)
        view = await handle.result()
        await dev_env.client.workflow_service.delete_workflow_execution(DeleteWorkflowExecutionRequest(
            namespace="default", workflow_execution=WorkflowExecution(workflow_id=handle.id)))
        for _ in range(100):  # deletion is asynchronous
            try:
                await handle.describe()
            except Exception:
                break
            await asyncio.sleep(0.1)
        listed = (await h.http.get("/api/v1/signing-requests?q=销售", headers=AUTH)).json()
        assert handle.id in [r["request_id"] for r in listed]
        got = await h.http.get(f"/api/v1/signing-requests/{handle.id}", headers=AUTH)
        assert got.status_code == 200 and got.json()["status"] == "COMPLETED"
        signed = await h.http.get(f"/api/v1/signing-requests/{handle.id}/signed-file", headers=AUTH)
        assert signed.status_code == 200 and signed.content.startswith(b"%PDF-")
        assert view.signed_document is not None
        assert hashlib.sha256(signed.content).hexdigest() == view.signed_document.sha256


async def test_chat_search_answers_privately_and_a_paused_command_is_told_why(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    from connectors.chat.webhook.inbound import RULES
    from signbridge.core.chat import ChatEvent, Started
    from signbridge.core.models import Person
    from signbridge.intake import Intake
    from store.db import get_engine
    from store.repos import switches
    from tests.harness import INITIATOR

    async with harness(dev_env, settings) as h:
        handle = await h.start([[A]])
        await h.sign(handle, A)
        await handle.result()
        engine = get_engine(h.settings.sqlalchemy_url)
        intake = Intake(h.client, h.settings, engine)

        def said_to(person: Person, event_id: str) -> list[str]:
            return [m["text"] for m in h.sink.messages if m.get("type") == "message" and m.get("to") == person.id
                    and event_id in m.get("idempotency_key", "")]

        asked = ChatEvent(platform="webhook", tenant="default", chat_id="g-1", sender=A, event_id="q-1",
                          text="@SignBridge 查 销售")
        assert isinstance(await intake.start_from_command(asked, RULES), Started)
        await h.sink.wait_for(lambda: bool(said_to(A, "q-1")), timeout=20)
        answer = said_to(A, "q-1")[0]
        assert "销售合同" in answer and "已完成" in answer and "/files/" in answer  # state and the signed file
        stranger = Person(id="u-99", name="路人")
        nosy = ChatEvent(platform="webhook", tenant="default", chat_id="g-1", sender=stranger, event_id="q-2",
                         text="/sign status 销售")
        await intake.start_from_command(nosy, RULES)
        await h.sink.wait_for(lambda: bool(said_to(stranger, "q-2")), timeout=20)
        assert "销售合同" not in said_to(stranger, "q-2")[0]  # only requests the asker takes part in

        switches.set_switch(engine, switches.PAUSE, True, "合同系统升级", "test")
        command = ChatEvent(platform="webhook", tenant="default", chat_id="g-1", sender=INITIATOR, event_id="c-1",
                            text="/sign @李四", mentions=())
        await intake.start_from_command(command, RULES)
        await h.sink.wait_for(lambda: bool(said_to(INITIATOR, "c-1")), timeout=20)
        assert "电子签暂停：合同系统升级，请按线下流程签署" in said_to(INITIATOR, "c-1")[0]
