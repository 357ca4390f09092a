"""Chat platform cases for `tests/test_chat_conformance.py`, one module per platform.

To add a platform, create `tests/chat_cases/<name>.py` with `class Case(ChatCase)`: what the
platform's servers would send (built and signed the platform's way) and how it answers. Users
are the platform's own ids: `initiator` starts requests, `signers` are named by a command
(`@first > @second`), `stranger` is someone who may not act on another person's request.

- `simulator()`: the platform's servers for what the callback handling asks them (a directory
  to name people), yielding the `SIGNBRIDGE_<PLATFORM>_*` environment that points there.
- `command(event_id, signing)`: a sign command from `initiator` naming both signers, with no
  file; `signing` is "valid", "forged" (wrong secret), "stale" (outside the time window) or
  "unsigned". The same event id twice is a redelivery.
- `file(event_id)`: a message from `initiator` in the same chat carrying one file and no command;
  `file_source` is how that file must reach the flow.
- `click(request_id, action, user)`: a card button; `prepare_card` records what sending that
  card would have left behind (platforms that route clicks through it).
- `handshake()`: the URL check a platform sends when it is configured, with a check of the
  answer; None for a platform without one.
- `external_command(event_id)`: a sign command from `initiator` naming `signers[0]` and then
  someone from outside the company, marked the way the platform marks them (another tenant,
  another org, an external contact, another workspace), reached by `outsider_contact`
  (`(field, value)` as the flow must get it); the outsider signs as `outsider`. `looked_up()`:
  the user ids the platform's directory was asked about (None: the platform has no directory
  the callback asks, or it learns who is outside only by asking it — Slack's users.info).
- `departure(user)`: the platform's event saying `user` left the company (None for a platform
  without one); `departure_answered(resp)` checks the answer.
- `refused(resp)`: asserts the answer to a button the flow refused (the platform's way of
  saying no). `busy(resp)`: the answer when Temporal is out of reach (the platform delivers again),
  given within `answer_within` seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from temporalio import workflow
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api.main import create_app
from signbridge.core.chat import request_id_for
from signbridge.core.models import (
    ActionInput,
    DocumentSource,
    SignerDeparted,
    SigningRequest,
    SignStatus,
    StatusView,
)
from signbridge.core.settings import Settings
from signbridge.core.temporal import SA_PENDING
from store.db import create_all, get_engine
from tests.sim.servers import serve


@dataclass(frozen=True)
class Call:
    """One HTTP request as the platform would send it."""

    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)


class ChatCase:
    platform: str
    tenant: str
    initiator: str
    signers: tuple[str, str]
    stranger: str
    file_source: DocumentSource
    no_file: str
    has_handshake = True
    always_on = False  # answers without any SIGNBRIDGE_<PLATFORM>_* setting
    answer_within = 3.0  # seconds the platform waits for an answer to a callback

    @contextmanager
    def simulator(self) -> Iterator[dict[str, str]]:
        yield {}

    def request_id(self, event_id: str) -> str:
        return request_id_for(self.platform, self.tenant, event_id)

    def command(self, event_id: str, signing: str = "valid") -> Call:
        raise NotImplementedError

    def file(self, event_id: str) -> Call:
        raise NotImplementedError

    def click(self, request_id: str, action: str, user: str) -> Call:
        raise NotImplementedError

    outsider: str
    outsider_contact: tuple[str, str]

    def external_command(self, event_id: str) -> Call:
        raise NotImplementedError

    def looked_up(self) -> list[str] | None:
        return None

    def departure(self, user: str) -> Call | None:
        return None

    def departure_answered(self, resp: httpx.Response) -> None:
        self.accepted(resp)

    def prepare_card(self, engine: Engine, request_id: str) -> None:
        """Nothing to record: the click carries the request id itself."""

    def handshake(self) -> tuple[Call, Any]:
        raise NotImplementedError

    def accepted(self, resp: httpx.Response) -> None:
        """A callback SignBridge took."""
        assert resp.status_code in (200, 202), resp.text

    def refused(self, resp: httpx.Response) -> None:
        raise NotImplementedError

    def busy(self, resp: httpx.Response) -> None:
        assert resp.status_code == 503, resp.text
        assert int(resp.headers["Retry-After"]) > 0


async def exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


def json_body(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode()


@workflow.defn(name="SigningWorkflow")
class StandInWorkflow:
    """The real flow's update names, argument and validator outcomes, no activities: what reaches
    Temporal (and what the flow would accept) without signing anything."""

    @workflow.init
    def __init__(self, req: SigningRequest) -> None:
        self.req = req
        self.applied: list[tuple[str, str]] = []
        self.cancelled = False
        self.departed: list[str] = []

    @workflow.run
    async def run(self, req: SigningRequest) -> StatusView:
        if req.groups:  # who the real flow would wait for first, as it publishes them
            workflow.upsert_search_attributes([SA_PENDING.value_set([p.id for p in req.groups[0]])])
        await workflow.wait_condition(lambda: self.cancelled)
        return self.view(SignStatus.CANCELLED)

    def view(self, status: SignStatus = SignStatus.IN_PROGRESS) -> StatusView:
        return StatusView(request_id=self.req.request_id, title=self.req.title, status=status,
                          provider=self.req.provider, initiator=self.req.initiator, chat=self.req.chat)

    def _allowed(self, action: ActionInput) -> None:
        if not (action.actor.is_operator or action.actor.id == self.req.initiator.id):
            raise ApplicationError("Only the initiator or an operator may do this", type="PermissionDenied")

    @workflow.update(name="remind")
    def remind(self, action: ActionInput) -> StatusView:
        self.applied.append(("remind", action.actor.id))
        return self.view()

    @remind.validator
    def _validate_remind(self, action: ActionInput) -> None:
        self._allowed(action)

    @workflow.update(name="retry")
    def retry(self, action: ActionInput) -> StatusView:
        return self.view()

    @retry.validator
    def _validate_retry(self, action: ActionInput) -> None:
        raise ApplicationError("Nothing to retry: the request is IN_PROGRESS, not STUCK", type="NotAllowed")

    @workflow.update(name="cancel")
    async def cancel(self, action: ActionInput) -> StatusView:
        self.applied.append(("cancel", action.actor.id))
        self.cancelled = True
        return self.view(SignStatus.CANCELLED)

    @cancel.validator
    def _validate_cancel(self, action: ActionInput) -> None:
        self._allowed(action)

    @workflow.signal(name="signer_departed")
    def signer_departed(self, news: SignerDeparted) -> None:
        self.departed.append(news.signer_id)

    @workflow.query(name="departed")
    def departed_signers(self) -> list[str]:
        return self.departed

    @workflow.query(name="applied")
    def applied_updates(self) -> list[tuple[str, str]]:
        return self.applied

    @workflow.query(name="status")
    def status(self) -> StatusView:
        return self.view()


# ---- the rig: the platform's simulator, the API over real HTTP, the stand-in flow -------------

@dataclass
class Rig:
    case: ChatCase
    url: str
    http: httpx.AsyncClient
    client: Client
    settings: Settings
    started: list[str] = field(default_factory=list)

    async def send(self, call: Call) -> httpx.Response:
        return await self.http.request(call.method, self.url + call.path, content=call.body or None,
                                       headers=dict(call.headers), params=dict(call.params))

    async def exists(self, request_id: str) -> bool:
        if not await exists(self.client, request_id):
            return False
        self.started.append(request_id)
        return True

    async def runs(self, request_id: str) -> int:
        """How many executions carry this id, once visibility (eventually consistent) lists any."""
        for _ in range(100):
            found = [w async for w in self.client.list_workflows(f"WorkflowId = '{request_id}'")]
            if found:
                return len(found)
            await asyncio.sleep(0.1)
        return 0

    async def started_input(self, request_id: str) -> SigningRequest:
        assert await self.exists(request_id), f"no flow {request_id}"
        history = await self.client.get_workflow_handle(request_id).fetch_history()
        first = history.events[0].workflow_execution_started_event_attributes
        assert first.workflow_type.name == "SigningWorkflow" and first.task_queue.name == self.settings.task_queue
        (req,) = await self.client.data_converter.decode(first.input.payloads, [SigningRequest])
        assert isinstance(req, SigningRequest)
        return req

    async def applied(self, request_id: str) -> list[tuple[str, str]]:
        return [tuple(a) for a in await self.client.get_workflow_handle(request_id).query("applied")]  # type: ignore[misc]


@asynccontextmanager
async def rig_for(case: ChatCase, env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch,
                  temporal_address: str | None = None) -> AsyncIterator[Rig]:
    """The platform's simulator, the API over real HTTP (its own Temporal client, as in production)
    and a worker running the stand-in flow."""
    target = env.client.service_client.config.target_host
    settings = settings.model_copy(update={"temporal_address": temporal_address or target})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    create_all(get_engine(settings.sqlalchemy_url))
    with case.simulator() as platform_env:
        for name, value in platform_env.items():
            monkeypatch.setenv(name, value)
        with serve(create_app(settings)) as url:
            async with Worker(env.client, task_queue=settings.task_queue, workflows=[StandInWorkflow],
                              workflow_runner=UnsandboxedWorkflowRunner()), httpx.AsyncClient(timeout=30) as http:
                rig = Rig(case=case, url=url, http=http, client=env.client, settings=settings)
                try:
                    yield rig
                finally:
                    for request_id in set(rig.started):  # leave nothing running on the shared dev server
                        try:
                            await env.client.get_workflow_handle(request_id).terminate("test over")
                        except RPCError:
                            pass
