"""Provider webhook cases for `tests/test_provider_conformance.py`, one module per provider.

To add a provider, create `tests/provider_cases/<name>.py` exposing `CASE = ProviderCase(...)`.
Every function returns `(headers, body)` — exactly what the provider would POST to
`/esign/<name>/webhook` — and must be signed with the secret found in `env`:

- `valid(flow_id, signer_id, kind)`: a correctly signed delivery of a `kind` event ("signed" or
  "declined") by `signer_id` (the id SignBridge gave the signer) on `flow_id`. Called twice with
  the same arguments it must describe the same event (a redelivery), even if its timestamp differs.
- `tampered(...)`: same arguments; the body or the signature altered after signing.
- `unsigned(...)`: same arguments; the signature left out.
- `stale(...)`: same arguments; correctly signed but outside the provider's timestamp window —
  `None` when the provider has no timestamp to check.
- `unknown(flow_id)`: a correctly signed event type SignBridge does not handle.
- `reply`: (status, body) the provider expects for an accepted delivery; `body=None` = any body.

Below the contract: `provider_e2e`, what the per-provider end-to-end tests share (worker with
the real SigningWorkflow, the API served over real HTTP for the simulator's callbacks, the
webhook chat sink), and `FlowCase`, what `tests/test_provider_flows.py` needs to run the same
flows against every provider: each provider test module exposes `FLOW = FlowCase(...)`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from connectors.esign.base import ESignProvider
from signbridge.core.models import ChatRef, DocumentSource, OrgParty, Person, SigningRequest, StatusView, Timing
from signbridge.core.settings import Settings
from signbridge.core.temporal import start_signing
from signbridge.intake.orgs import add
from signbridge.pdf.sample import sample_contract
from store.blobs import BlobStore, FileBlobStore
from store.db import create_all, get_engine
from store.repos.organisations import Keeper
from tests.codes import mailed_links
from tests.sim.servers import serve
from tests.sim.webhook_sink import WebhookSink
from worker import build_worker

Delivery = tuple[dict[str, str], bytes]
MakeDelivery = Callable[[str, str, str], Delivery]


@dataclass(frozen=True)
class ProviderCase:
    name: str
    env: Mapping[str, str]
    valid: MakeDelivery
    tampered: MakeDelivery
    unsigned: MakeDelivery
    stale: MakeDelivery | None
    unknown: Callable[[str], Delivery]
    reply: tuple[int, bytes | None] = (200, None)
    kinds: tuple[str, ...] = field(default=("signed", "declined"))


# ---- end-to-end helpers ---------------------------------------------------------------------

INITIATOR = Person(id="u-0", name="张三", email="zs@corp.example")
A = Person(id="u-1", name="李四", email="lisi@corp.example")
B = Person(id="u-2", name="王五", email="wangwu@corp.example")
C = Person(id="x-9", name="客户A", email="a@customer.example", external=True)


@dataclass
class E2E:
    client: Client
    settings: Settings
    sink: WebhookSink
    api_url: str
    blobs: BlobStore
    provider: str

    async def start(self, groups: list[list[Person]], *, documents: list[bytes] | None = None,
                    roles: dict[str, str] | None = None, **timing: Any) -> WorkflowHandle[Any, StatusView]:
        """A request signed by `groups`; `documents` (default: one sample contract) may carry anchor
        texts, `roles` (role -> signer id) says who signs beside which."""
        request_id = f"sign:{self.provider}:{uuid.uuid4().hex[:12]}"
        files = documents or [sample_contract("Provider test")]
        base: dict[str, Any] = dict(step_retry_window=timedelta(seconds=4), poll_after=timedelta(days=30))
        req = SigningRequest(
            request_id=request_id, title="销售合同", initiator=INITIATOR, provider=self.provider,
            chat=ChatRef(chat_id="g-1", source_event_id=request_id),
            documents=[DocumentSource(name=f"contract-{i + 1}.pdf" if i else "contract.pdf",
                                      blob_key=self.blobs.put(pdf)) for i, pdf in enumerate(files)],
            groups=groups, roles=roles or {}, timing=Timing(**{**base, **timing}))
        handle, started = await start_signing(self.client, req, self.settings.task_queue)
        assert started
        return handle

    async def result(self, handle: WorkflowHandle[Any, Any], timeout: float = 30) -> StatusView:
        """The flow's final view; fails fast instead of hanging when the flow can't finish."""
        view = await asyncio.wait_for(handle.result(), timeout)
        return StatusView.model_validate(view)

    async def status(self, handle: WorkflowHandle[Any, Any]) -> StatusView:
        return await handle.query("status", result_type=StatusView)  # type: ignore[no-any-return]

    async def wait(self, handle: WorkflowHandle[Any, Any], check: Callable[[StatusView], bool],
                   timeout: float = 30) -> StatusView:
        """Poll the status query until `check` holds (the flow runs on a real server, in real time)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            view = await self.status(handle)
            if check(view):
                return view
            if loop.time() > end:
                raise AssertionError(f"{handle.id}: condition not met; status {view.status.value} {view.reason}")
            await asyncio.sleep(0.05)

    def links(self, handle: WorkflowHandle[Any, Any], person: Person) -> list[dict[str, Any]]:
        """Links sent to `person`: in the chat, or for an external signer by email or SMS (the
        development mailbox: no sender is configured in the tests)."""
        return [m for m in self.sink.messages if m.get("type") == "message" and m.get("to") == person.id
                and handle.id in m.get("idempotency_key", "")] + mailed_links(self.settings, handle.id, person.id)


@asynccontextmanager
async def provider_e2e(env: WorkflowEnvironment, settings: Settings, name: str,
                       make: Callable[[BlobStore, httpx.AsyncClient], ESignProvider],
                       ) -> AsyncIterator[tuple[E2E, Callable[[str], str]]]:
    """Worker + API (real HTTP, own Temporal connection in its thread) + chat sink.

    Yields the rig and `callback(path) -> url` to give the simulator SignBridge's webhook URL.
    Set the provider's webhook env (monkeypatch) before entering.
    """
    target = env.client.service_client.config.target_host
    with WebhookSink(settings.webhook_secret.get_secret_value()) as sink:
        settings = settings.model_copy(update={"webhook_outbound_url": sink.url, "temporal_address": target})
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        blobs = FileBlobStore(settings.data_dir / "blobs")
        with serve(create_app(settings)) as api_url:
            async with httpx.AsyncClient(timeout=10) as http:
                provider = make(blobs, http)
                async with build_worker(env.client, settings, providers={name: provider}) as worker, worker:
                    rig = E2E(client=env.client, settings=settings, sink=sink, api_url=api_url, blobs=blobs,
                              provider=name)
                    yield rig, lambda path: api_url + path


@dataclass
class SimSigning:
    """A person's actions at a provider's simulator, in the simulator's own terms.

    Every simulator has `sign(flow, who)`, `decline(flow, who, reason)`, `may_sign(flow, who)`
    and the `down` (outage) and `mute` (lost callbacks) switches; they differ in how they name a
    flow (`flows`, `flow_key`) and a person (`who`: id, email or phone number).
    """

    sim: Any
    flows: Callable[[], Mapping[Any, Any]]
    who: Callable[[Person], str]
    flow_key: Callable[[str], Any] = str

    def knows(self, flow_id: str) -> bool:
        return self.flow_key(flow_id) in self.flows()

    async def sign(self, flow_id: str, person: Person) -> None:
        await self.sim.sign(self.flow_key(flow_id), self.who(person))

    async def decline(self, flow_id: str, person: Person, reason: str) -> None:
        await self.sim.decline(self.flow_key(flow_id), self.who(person), reason)

    def may_sign(self, flow_id: str, person: Person) -> bool:
        return bool(self.sim.may_sign(self.flow_key(flow_id), self.who(person)))


@dataclass(frozen=True)
class FlowCase:
    """How to run one provider's simulator (`simulator`, from the test's settings) behind the real
    worker and API (`rig`, the provider module's own e2e setup), how a person acts there
    (`signing`), and the two signers its flows use (e签宝 reaches people by phone number)."""

    name: str
    simulator: Callable[[Settings], AbstractContextManager[Any]]
    rig: Callable[[WorkflowEnvironment, Settings, pytest.MonkeyPatch, Any], AbstractAsyncContextManager[E2E]]
    signing: Callable[[Any], SimSigning]
    people: tuple[Person, Person] = (A, B)

    @asynccontextmanager
    async def run(self, env: WorkflowEnvironment, settings: Settings,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[E2E, SimSigning]]:
        with self.simulator(settings) as sim:
            async with self.rig(env, settings, monkeypatch, sim) as rig:
                yield rig, self.signing(sim)


def e2e_fixture(case: FlowCase) -> Any:
    """A provider module's `e2e` fixture: its rig around the module's own `sim` fixture, so a test
    can drive the simulator in provider-specific ways the shared flows do not."""

    @pytest.fixture
    async def e2e(dev_env: WorkflowEnvironment, settings: Settings, sim: Any,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[E2E]:
        async with case.rig(dev_env, settings, monkeypatch, sim) as rig:
            yield rig

    return e2e


SEALED_ORG = "乙方科技有限公司"


async def refused_seal(e2e: E2E) -> StatusView:
    """A request whose signer applies a company seal, at a provider that cannot express one: it must
    end REJECTED at prepare, saying why, before anything is created at the provider."""
    engine = get_engine(e2e.settings.sqlalchemy_url)
    create_all(engine)
    add(engine, name=SEALED_ORG, credit_code="91350100M000100Y43", keepers=[Keeper(A.id, A.name)])
    sealing = A.model_copy(update={"org": OrgParty(name=SEALED_ORG, seal=True)})
    view = await e2e.result(await e2e.start([[sealing], [B]]))
    assert view.status.value == "REJECTED", view
    assert view.reason and "cannot apply an organisation's seal" in view.reason and e2e.provider in view.reason
    return view
