"""Starting and driving signing flows for rows 2, 4 and 5 (real SignBridge and the baseline)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle

from bench.baseline import BASELINE_QUEUE_SUFFIX, FlowShape
from bench.common import TimedSink
from signbridge.core.models import ChatRef, DocumentSource, Person, SigningRequest, StatusView, Timing
from signbridge.core.settings import Settings
from signbridge.core.temporal import start_signing
from signbridge.pdf.sample import sample_contract
from store.blob_factory import make_blob_store

INITIATOR = Person(id="u-0", name="张三", email="zs@corp.example")
SIGNERS = [Person(id="u-1", name="李四"), Person(id="u-2", name="王五"), Person(id="u-3", name="赵六")]

_BLOB: dict[str, str] = {}


def contract_key(settings: Settings) -> str:
    """The sample contract in the shared blob store (content-addressed: stored once)."""
    key = str(settings.data_dir)
    if key not in _BLOB:
        _BLOB[key] = make_blob_store(settings).put(sample_contract("Bench Contract", pages=2))
    return _BLOB[key]


def new_id(tag: str) -> str:
    return f"bench-{tag}-{uuid.uuid4().hex[:12]}"  # no ':' — see common.request_id_of


def timing(**overrides: Any) -> Timing:
    base: dict[str, Any] = dict(step_retry_window=timedelta(minutes=2))
    base.update(overrides)
    return Timing(**base)


async def start_flow(client: Client, settings: Settings, groups: list[list[Person]], tag: str,
                     t: Timing | None = None) -> WorkflowHandle[Any, Any]:
    rid = new_id(tag)
    req = SigningRequest(
        request_id=rid, title="Bench Contract", initiator=INITIATOR,
        chat=ChatRef(chat_id="g-1", source_event_id=rid),
        documents=[DocumentSource(name="contract.pdf", blob_key=contract_key(settings))],
        groups=groups, timing=t or timing(),
    )
    handle, started = await start_signing(client, req, settings.task_queue)
    assert started
    return handle


async def sign_via_page(http: httpx.AsyncClient, api: str, url: str, person: Person) -> None:
    path = re.sub(r"^https?://[^/]+", "", url)
    resp = await http.post(f"{api}{path}", data={"name": person.name, "consent": "yes"},
                           headers={"Accept": "application/json"})
    if resp.status_code != 200:
        raise RuntimeError(f"signing page answered {resp.status_code}: {resp.text[:200]}")


async def drive_serial(handle: WorkflowHandle[Any, Any], sink: TimedSink, http: httpx.AsyncClient, api: str,
                       signers: list[Person], timeout: float = 300) -> StatusView:
    """Each signer signs on the built-in provider's page as soon as their link reaches the chat."""
    for person in signers:
        url = await sink.link(handle.id, person.id, timeout=timeout)
        await sign_via_page(http, api, url, person)
    view: StatusView = await handle.result()
    return view


def baseline_queue(settings: Settings) -> str:
    return settings.task_queue + BASELINE_QUEUE_SUFFIX


async def start_baseline(client: Client, settings: Settings, signers: int, tag: str,
                         card_after_signal: bool = False) -> WorkflowHandle[Any, Any]:
    rid = new_id(tag)
    shape = FlowShape(request_id=rid, signers=[p.id for p in SIGNERS[:signers]],
                      card_after_signal=card_after_signal)
    return await client.start_workflow("BenchFlow", shape, id=rid, task_queue=baseline_queue(settings))


async def drive_baseline(handle: WorkflowHandle[Any, Any], sink: TimedSink, signers: int,
                         timeout: float = 300) -> None:
    for person in SIGNERS[:signers]:
        await sink.link(handle.id, person.id, timeout=timeout)
        await handle.signal("signed", person.id)
    await handle.result()
