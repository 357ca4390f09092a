"""Runs the real SignBridge pieces against a Temporal test environment for workflow tests.

Worker with the real activities, the real API app (signing pages driven over ASGI), the
built-in provider, and the webhook IM talking to a real HTTP sink that verifies signatures.
Only the Temporal server differs between the time-skipping tests and the end-to-end ones.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from connectors.chat.base import ChatConnector
from connectors.esign.base import ESignProvider, ProviderError
from connectors.esign.registry import build_providers
from connectors.notify.registry import Notifier
from signbridge.core.models import ChatRef, DocumentSource, Person, SigningRequest, StatusView, Timing
from signbridge.core.settings import Settings
from signbridge.core.temporal import start_signing
from signbridge.pdf.sample import sample_contract
from store.blob_factory import make_blob_store
from store.db import get_engine
from tests.codes import mailed_links, sign_with_code
from tests.sim.webhook_sink import WebhookSink
from worker import build_worker

INITIATOR = Person(id="u-0", name="张三", email="zs@corp.example")
A = Person(id="u-1", name="李四")
B = Person(id="u-2", name="王五")
C = Person(id="x-9", name="客户A", email="a@customer.example", external=True)


class OutageProvider:
    """Wraps a real provider; while `down`, every call fails like a provider outage would, and a
    call takes `delay(method name)` seconds longer (a slow provider: a worker killed mid-call)."""

    def __init__(self, inner: ESignProvider, delay: Callable[[str], float] = lambda _: 0.0) -> None:
        self.inner = inner
        self.name = inner.name
        self.down = False
        self.calls = 0
        self.delay = delay

    def __getattr__(self, item: str) -> Any:
        target = getattr(self.inner, item)
        if not callable(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.down:
                raise ProviderError("provider unavailable (HTTP 503)")
            if seconds := self.delay(item):
                await asyncio.sleep(seconds)
            return await target(*args, **kwargs)

        return call


@dataclass
class Harness:
    client: Client
    settings: Settings
    sink: WebhookSink
    http: httpx.AsyncClient
    provider: OutageProvider
    handles: list[WorkflowHandle[Any, Any]] = field(default_factory=list)

    def timing(self, **overrides: Any) -> Timing:
        base: dict[str, Any] = dict(step_retry_window=timedelta(seconds=4), poll_after=timedelta(days=30))
        base.update(overrides)
        return Timing(**base)

    async def start(self, groups: list[list[Person]], *, document: bytes | None = None,
                    timing: Timing | None = None, problem: str | None = None,
                    documents: list[DocumentSource] | None = None) -> WorkflowHandle[Any, Any]:
        request_id = f"sign:test:{uuid.uuid4().hex[:12]}"
        if documents is None:
            data = document if document is not None else sample_contract("Test")
            key = make_blob_store(self.settings).put(data)
            documents = [DocumentSource(name="contract.pdf", blob_key=key)]
        req = SigningRequest(
            request_id=request_id, title="销售合同", initiator=INITIATOR,
            chat=ChatRef(chat_id="g-1", source_event_id=request_id), documents=documents, groups=groups,
            timing=timing or self.timing(), problem=problem,
        )
        handle, started = await start_signing(self.client, req, self.settings.task_queue)
        assert started
        self.handles.append(handle)
        return handle

    def links_for(self, handle: WorkflowHandle[Any, Any], person: Person) -> list[dict[str, Any]]:
        """Links sent to `person`: in the chat, or — for an external signer of the built-in provider —
        by email or SMS (the development mailbox: no sender is configured in the tests)."""
        chat = [m for m in self.sink.messages if m.get("type") == "message" and m.get("to") == person.id
                and m.get("sign_url") and handle.id in m.get("idempotency_key", "")]
        return chat + mailed_links(self.settings, handle.id, person.id)

    async def link(self, handle: WorkflowHandle[Any, Any], person: Person, timeout: float = 20) -> str:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.links_for(handle, person):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no signing link reached {person.id} in {timeout} s")
            await asyncio.sleep(0.05)
        return str(self.links_for(handle, person)[-1]["sign_url"])

    def path(self, url: str) -> str:
        return re.sub(r"^https?://[^/]+", "", url)

    async def sign(self, handle: WorkflowHandle[Any, Any], person: Person) -> httpx.Response:
        url = await self.link(handle, person)
        resp = await sign_with_code(self.http, self.settings, self.path(url), person.name,
                                    headers={"Accept": "application/json"})
        assert resp.status_code == 200, resp.text
        return resp

    async def decline(self, handle: WorkflowHandle[Any, Any], person: Person, reason: str) -> httpx.Response:
        url = await self.link(handle, person)
        return await self.http.post(self.path(url) + "/decline", data={"reason": reason},
                                    headers={"Accept": "application/json"})

    async def status(self, handle: WorkflowHandle[Any, Any]) -> StatusView:
        return await handle.query("status", result_type=StatusView)  # type: ignore[no-any-return]

    async def wait_status(self, handle: WorkflowHandle[Any, Any], status: str, timeout: float = 30) -> StatusView:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            view = await self.status(handle)
            if view.status.value == status:
                return view
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{handle.id} is {view.status.value}, expected {status}")
            await asyncio.sleep(0.1)

    def cards(self, handle: WorkflowHandle[Any, Any]) -> list[dict[str, Any]]:
        return [m["card"] for m in self.sink.messages if m.get("type") == "card.upsert"
                and m.get("card_key") == handle.id]


@asynccontextmanager
async def harness(env: WorkflowEnvironment | Client, settings: Settings,
                  chats: dict[str, ChatConnector] | None = None,
                  notify: Notifier | None = None, api_client: Client | None = None) -> AsyncIterator[Harness]:
    """`api_client`: the API's own Temporal client (default: the worker's), e.g. one whose server
    cannot be reached, so the signing pages' live deliveries fail."""
    client = env if isinstance(env, Client) else env.client
    with WebhookSink(settings.webhook_secret.get_secret_value()) as sink:
        settings = settings.model_copy(update={"webhook_outbound_url": sink.url})
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = get_engine(settings.sqlalchemy_url)
        providers = build_providers(settings, engine, make_blob_store(settings), httpx.AsyncClient())
        outage = OutageProvider(providers["local"])
        async with build_worker(client, settings, providers={"local": outage}, chats=chats, notify=notify) as worker:
            app = create_app(settings, api_client or client)
            async with app.router.lifespan_context(app), worker, httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, client=("203.0.113.7", 50000)),
                base_url="http://signbridge.test",
            ) as http:
                yield Harness(client=client, settings=settings, sink=sink, http=http, provider=outage)
