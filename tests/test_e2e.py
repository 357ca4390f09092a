"""End to end on the real Temporal dev server, over real HTTP: chat command → signed PDF in the chat.

Also the crash test: the worker process is SIGKILLed after the first signature and replaced.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from connectors.chat.webhook import signature as webhook_signature
from signbridge.core.settings import Settings
from signbridge.pdf.pades import validate_pdf
from signbridge.pdf.pki import InstallationCA
from signbridge.pdf.sample import sample_contract
from tests.codes import mailed_links, sign_with_code
from tests.sim.servers import serve
from tests.sim.webhook_sink import WebhookSink
from worker import build_worker

ROOT = Path(__file__).resolve().parents[1]


def file_server(files: dict[str, bytes], secret: str, delays: dict[str, float] | None = None) -> FastAPI:
    """The company IM's file endpoint: hands out a file only to a correctly signed request
    (after `delays[name]` seconds, when the test wants a slow one)."""
    app = FastAPI()

    @app.get("/f/{name}")
    async def get(name: str, request: Request) -> Response:
        await asyncio.sleep((delays or {}).get(name, 0))
        try:
            webhook_signature.verify(secret, request.headers.get("X-SignBridge-Timestamp"),
                                     request.headers.get("X-SignBridge-Signature"), b"")
        except webhook_signature.SignatureError:
            return Response(status_code=401)
        if name not in files:
            return Response(status_code=404)
        return Response(files[name], media_type="application/pdf")

    return app


@dataclass
class Stack:
    api: str
    files: str
    sink: WebhookSink
    settings: Settings
    contract: bytes

    def command(self, text: str, mentions: list[dict[str, Any]], event_id: str | None = None,
                file: str | None = "contract.pdf") -> dict[str, Any]:
        return {
            "event_id": event_id or f"e-{uuid.uuid4().hex[:10]}",
            "type": "message",
            "chat": {"id": "g-1", "kind": "group"},
            "sender": {"id": "u-0", "name": "张三", "email": "zs@corp.example"},
            "text": text,
            "mentions": mentions,
            "files": [{"name": file, "url": f"{self.files}/f/{file}"}] if file else [],
        }

    async def send(self, http: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
        raw = json.dumps(body, ensure_ascii=False).encode()
        headers = webhook_signature.headers(self.settings.webhook_secret.get_secret_value(), raw)
        return await http.post(f"{self.api}/im/webhook/events", content=raw,
                               headers={**headers, "Content-Type": "application/json"})

    def link(self, request_id: str, user: str) -> str | None:
        for m in self.sink.messages:
            if m.get("type") == "message" and m.get("to") == user and m.get("sign_url") \
                    and request_id in m.get("idempotency_key", ""):
                return str(m["sign_url"])
        mailed = mailed_links(self.settings, request_id, user)  # an external signer: by email
        return str(mailed[-1]["sign_url"]) if mailed else None

    async def sign(self, http: httpx.AsyncClient, request_id: str, user: str, name: str) -> None:
        await self.sink.wait_for(lambda: self.link(request_id, user) is not None, timeout=60)
        url = self.link(request_id, user)
        assert url
        page = await http.get(url)
        assert page.status_code == 200 and name in page.text
        resp = await sign_with_code(http, self.settings, url, name)
        assert resp.status_code == 200, resp.text

    async def wait_status(
        self, http: httpx.AsyncClient, request_id: str, status: str, timeout: float = 90
    ) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            resp = await http.get(f"{self.api}/api/v1/signing-requests/{request_id}",
                                  headers={"Authorization": "Bearer test-api-key"})
            # 503: no worker answered the status query in time (one is starting): ask again, as a client would
            assert resp.status_code in (200, 503), resp.text
            view: dict[str, Any] = resp.json() if resp.status_code == 200 else {"status": "(no worker yet)"}
            if view["status"] == status:
                return view
            assert time.monotonic() < end, f"still {view['status']}, expected {status}"
            await asyncio.sleep(0.2)


MENTIONS = [
    {"id": "u-1", "name": "李四"},
    {"id": "u-2", "name": "王五"},
    {"id": "x-9", "name": "客户A", "email": "a@customer.example", "external": True},
]
TEXT = "/sign @李四 @王五 > @客户A"


@contextmanager
def stack(dev_env: WorkflowEnvironment, settings: Settings,
          file_delays: dict[str, float] | None = None, files: dict[str, bytes] | None = None) -> Iterator[Stack]:
    contract = sample_contract("Sales Contract", pages=2)
    secret = settings.webhook_secret.get_secret_value()
    served = {"contract.pdf": contract, **(files or {})}
    with WebhookSink(secret) as sink, serve(file_server(served, secret, file_delays)) as files_url:
        from tests.sim.servers import free_port

        port = free_port()
        settings = settings.model_copy(update={
            "webhook_outbound_url": sink.url,
            "public_url": f"http://127.0.0.1:{port}",
            "temporal_address": dev_env.client.service_client.config.target_host,
            "step_retry_window": timedelta(seconds=20),
        })
        with serve(create_app(settings), port=port) as api:
            yield Stack(api=api, files=files_url, sink=sink, settings=settings, contract=contract)


@asynccontextmanager
async def in_process_worker(dev_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[None]:
    async with build_worker(dev_env.client, settings) as worker, worker:
        yield


async def test_chat_command_to_signed_pdf(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    with stack(dev_env, settings) as s:
        async with in_process_worker(dev_env, s.settings), httpx.AsyncClient(timeout=30) as http:
            body = s.command(TEXT, MENTIONS)
            resp = await s.send(http, body)
            assert resp.status_code == 202, resp.text
            request_id = resp.json()["request_id"]
            # the platform redelivers the same event: still one flow
            again = await s.send(http, body)
            assert again.json()["request_id"] == request_id and again.json()["started"] is False

            await s.sign(http, request_id, "u-1", "李四")
            await s.sign(http, request_id, "u-2", "王五")
            await s.sign(http, request_id, "x-9", "客户A")
            view = await s.wait_status(http, request_id, "COMPLETED")

            await s.sink.wait_for(lambda: any(m["type"] == "file" for m in s.sink.messages), timeout=30)
            file_msg = next(m for m in s.sink.messages if m["type"] == "file" and m.get("kind") == "signed")
            signed = (await http.get(file_msg["url"])).content
            assert file_msg["sha256"] == view["signed_document"]["sha256"]

        assert signed.startswith(s.contract)
        ca = InstallationCA.load_or_create(s.settings.data_dir / "ca")
        reports = await asyncio.to_thread(validate_pdf, signed, [ca.certificate])
        assert [r.signer_name for r in reports][2] == "客户A" and len(reports) == 3
        assert sorted(r.signer_name for r in reports[:2]) == ["李四", "王五"]
        assert all(r.intact and r.valid and r.trusted for r in reports)

        # every outbound request was signed (the sink verified each) and the card moved forward
        assert s.sink.rejected == 0
        cards = [m["card"] for m in s.sink.messages if m["type"] == "card.upsert"]
        assert {m["card_key"] for m in s.sink.messages if m["type"] == "card.upsert"} == {request_id}
        signed_counts = [sum(x["state"] == "signed" for x in c["signers"]) for c in cards]
        assert signed_counts == sorted(signed_counts) and signed_counts[-1] == 3
        assert cards[-1]["status"] == "COMPLETED"
        assert [m["type"] for m in s.sink.messages].index("file") < len(s.sink.messages) - 1

        # the audit trail ties it together and its hash chain holds
        async with httpx.AsyncClient() as http:
            trail = (await http.get(f"{s.api}/api/v1/signing-requests/{request_id}/audit",
                                    headers={"Authorization": "Bearer test-api-key"})).json()
        assert trail["chain_valid"] is True
        actions = [e["action"] for e in trail["events"]]
        assert actions[0] == "request.received" and "document.signed" in actions
        assert actions.count("signer.signed") == 3 and actions.count("workflow.signed_event") == 3


async def test_bad_callbacks_start_nothing(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    with stack(dev_env, settings) as s:
        async with httpx.AsyncClient(timeout=30) as http:
            body = s.command(TEXT, MENTIONS)
            raw = json.dumps(body).encode()
            forged = webhook_signature.headers("not-the-secret", raw)
            r = await http.post(f"{s.api}/im/webhook/events", content=raw, headers=forged)
            assert r.status_code == 401 and r.json()["error"]["code"]
            stale = webhook_signature.headers(s.settings.webhook_secret.get_secret_value(), raw,
                                              now=time.time() - 3600)
            assert (await http.post(f"{s.api}/im/webhook/events", content=raw, headers=stale)).status_code == 401
            unsigned = await http.post(f"{s.api}/im/webhook/events", content=raw)
            assert unsigned.status_code == 401
            bad_json = b"{not json"
            r = await http.post(f"{s.api}/im/webhook/events", content=bad_json,
                                headers=webhook_signature.headers(s.settings.webhook_secret.get_secret_value(),
                                                                  bad_json))
            assert r.status_code == 400
            listed = await http.get(f"{s.api}/api/v1/signing-requests",
                                    headers={"Authorization": "Bearer test-api-key"})
            assert all(body["event_id"] not in w["request_id"] for w in listed.json())


def _worker_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNBRIDGE_")}
    env.update({
        "SIGNBRIDGE_ENVIRONMENT": "development",
        "SIGNBRIDGE_DATA_DIR": str(settings.data_dir),
        "SIGNBRIDGE_TEMPORAL_ADDRESS": settings.temporal_address,
        "SIGNBRIDGE_TASK_QUEUE": settings.task_queue,
        "SIGNBRIDGE_WEBHOOK_SECRET": settings.webhook_secret.get_secret_value(),
        "SIGNBRIDGE_LINK_SECRET": settings.link_secret.get_secret_value(),
        "SIGNBRIDGE_WEBHOOK_OUTBOUND_URL": settings.webhook_outbound_url,
        "SIGNBRIDGE_FETCH_ALLOW_NETWORKS": settings.fetch_allow_networks,
        "SIGNBRIDGE_PUBLIC_URL": settings.public_url,
        "SIGNBRIDGE_WORKER_METRICS_ADDRESS": "",  # no fixed port: tests run beside other workers
    })
    return env


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    log = (settings.data_dir / "worker.log").open("ab")  # read back when the test fails
    return subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=_worker_env(settings),
                            stdout=log, stderr=subprocess.STDOUT)


def _worker_log(settings: Settings) -> str:
    path = settings.data_dir / "worker.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no worker log)"


async def test_worker_killed_after_first_signature(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    with stack(dev_env, settings) as s:
        worker = _start_worker(s.settings)
        try:
            await _killed_worker_scenario(s, worker, dev_env.client)
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- worker log ---\n{_worker_log(s.settings)}") from e
        finally:  # a flow left STUCK here would wait for a worker that never comes, in other tests' queries
            await _terminate_running(dev_env.client, s.sink)


async def _terminate_running(client: Client, sink: WebhookSink) -> None:
    for key in {m["card_key"] for m in sink.messages if m["type"] == "card.upsert"}:
        handle = client.get_workflow_handle(key)
        if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            await handle.terminate("test teardown")


async def _no_activity_in_flight(client: Client, request_id: str) -> bool:
    """Killing the worker mid-activity would leave that attempt to its 2-minute start-to-close
    timeout, longer than this stack's step retry window; the test is about a crash between steps."""
    return not (await client.get_workflow_handle(request_id).describe()).raw_description.pending_activities


async def _killed_worker_scenario(s: Stack, worker: subprocess.Popen[bytes], client: Client) -> None:
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await s.send(http, s.command("/sign @李四 > @王五", MENTIONS[:2]))
            request_id = resp.json()["request_id"]
            await s.sign(http, request_id, "u-1", "李四")

            def first_signed_on_card() -> bool:
                cards = [m["card"] for m in s.sink.messages if m["type"] == "card.upsert"]
                return bool(cards) and cards[-1]["signers"][0]["state"] == "signed"

            await s.sink.wait_for(first_signed_on_card, timeout=60)
            await s.sink.wait_for(lambda: s.link(request_id, "u-2") is not None, timeout=60)
            end = time.monotonic() + 60
            while not await _no_activity_in_flight(client, request_id):
                assert time.monotonic() < end, "an activity stayed in flight for 60 s"
                await asyncio.sleep(0.1)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)

            worker = _start_worker(s.settings)
            await s.sign(http, request_id, "u-2", "王五")
            await s.wait_status(http, request_id, "COMPLETED", timeout=120)
    finally:
        worker.kill()
        worker.wait(timeout=10)
    card_keys = {m["card_key"] for m in s.sink.messages if m["type"] == "card.upsert"}
    assert card_keys == {request_id}  # exactly one card
    for user in ("u-1", "u-2"):
        links = [m for m in s.sink.messages if m["type"] == "message" and m.get("to") == user]
        assert len(links) == 1, links  # exactly one link message per signer
    assert len([m for m in s.sink.messages if m["type"] == "file" and m.get("kind") == "signed"]) == 1


@pytest.fixture(autouse=True)
def _fresh_engines() -> Iterator[None]:
    yield
    from store.db import get_engine

    get_engine.cache_clear()
