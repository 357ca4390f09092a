"""`POST /im/webhook/events` beyond the shared chat cases (`tests/chat_cases/`): the event's own
fields (tenant, title, provider, external signers), malformed events, the grammar's refusals,
and every answer an action can get, against the real Temporal dev server.

The message tests run no worker: they check the started execution itself (id, type, input,
search attributes). The action tests run a small stand-in `SigningWorkflow` with the same
update names and validator behaviour, to see updates, their ids and refusals over the wire.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api.main import create_app
from connectors.chat.webhook import signature as webhook_signature
from signbridge.core.models import SigningRequest, SignStatus, StatusView
from signbridge.core.settings import Settings
from signbridge.core.temporal import SA_INITIATOR, SA_PLATFORM, SA_PROVIDER, SA_STATUS
from tests.chat_cases import StandInWorkflow

MENTIONS = [
    {"id": "u-1", "name": "李四"},
    {"id": "u-2", "name": "王五"},
    {"id": "x-9", "name": "客户A", "email": "a@customer.example", "external": True},
]
FILE = {"name": "contract.pdf", "url": "https://im.corp.example/f/1", "sha256": "ab" * 32}


@dataclass
class Api:
    http: httpx.AsyncClient
    client: Client
    settings: Settings
    started: list[str] = field(default_factory=list)

    def message(self, text: str = "/sign @李四 @王五 > @客户A", *, mentions: list[dict[str, Any]] | None = None,
                files: list[dict[str, Any]] | None = None, event_id: str | None = None,
                **extra: Any) -> dict[str, Any]:
        return {
            "event_id": event_id or f"e-{uuid.uuid4().hex[:12]}", "type": "message",
            "chat": {"id": "g-1", "kind": "group"},
            "sender": {"id": "u-0", "name": "张三", "email": "zs@corp.example", "mobile": "+8613800000000"},
            "text": text, "mentions": MENTIONS if mentions is None else mentions,
            "files": [FILE] if files is None else files, **extra,
        }

    def action(self, request_id: str, name: str, sender: str = "u-0", event_id: str | None = None) -> dict[str, Any]:
        return {"event_id": event_id or f"a-{uuid.uuid4().hex[:12]}", "type": "action",
                "sender": {"id": sender, "name": "someone"}, "action": {"request_id": request_id, "name": name}}

    async def post_raw(self, raw: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        if headers is None:
            headers = webhook_signature.headers(self.settings.webhook_secret.get_secret_value(), raw)
        return await self.http.post("/im/webhook/events", content=raw,
                                    headers={**headers, "Content-Type": "application/json"})

    async def post(self, body: dict[str, Any]) -> httpx.Response:
        resp = await self.post_raw(json.dumps(body, ensure_ascii=False).encode())
        if resp.status_code in (200, 202) and resp.json().get("request_id"):
            self.started.append(resp.json()["request_id"])
        return resp

    async def exists(self, workflow_id: str) -> bool:
        try:
            await self.client.get_workflow_handle(workflow_id).describe()
            return True
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return False
            raise

    async def started_input(self, workflow_id: str) -> SigningRequest:
        history = await self.client.get_workflow_handle(workflow_id).fetch_history()
        first = history.events[0].workflow_execution_started_event_attributes
        assert first.workflow_type.name == "SigningWorkflow"
        assert first.task_queue.name == self.settings.task_queue
        (req,) = await self.client.data_converter.decode(first.input.payloads, [SigningRequest])
        assert isinstance(req, SigningRequest)
        return req


@pytest.fixture
async def api(dev_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Api]:
    settings = settings.model_copy(update={"operators": "u-ops", "deadline": timedelta(days=3),
                                           "reminder_max": 5})
    app = create_app(settings, dev_env.client)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://signbridge.test"
    ) as http:
        a = Api(http=http, client=dev_env.client, settings=settings)
        yield a
    for workflow_id in set(a.started):  # leave nothing running on the shared dev server
        try:
            await dev_env.client.get_workflow_handle(workflow_id).terminate("test finished")
        except RPCError:
            pass


# ---- messages ---------------------------------------------------------------------------------

async def test_command_starts_one_workflow(api: Api) -> None:
    body = api.message()
    resp = await api.post(body)
    assert resp.status_code == 202, resp.text
    request_id = f"sign:webhook:default:{body['event_id']}"
    assert resp.json() == {"ok": True, "request_id": request_id, "started": True}

    req = await api.started_input(request_id)
    assert [[p.id for p in g] for g in req.groups] == [["u-1", "u-2"], ["x-9"]]
    assert req.groups[1][0].external and req.groups[1][0].email == "a@customer.example"
    assert req.problem is None and req.title == "contract.pdf" and req.provider == "local"
    assert req.initiator.id == "u-0" and req.initiator.name == "张三" and req.initiator.email == "zs@corp.example"
    assert (req.chat.platform, req.chat.tenant, req.chat.chat_id, req.chat.chat_kind, req.chat.source_event_id) \
        == ("webhook", "default", "g-1", "group", body["event_id"])
    assert [(d.name, d.url, d.sha256, d.blob_key) for d in req.documents] \
        == [("contract.pdf", FILE["url"], FILE["sha256"], None)]
    assert req.timing.deadline == timedelta(days=3) and req.timing.reminder_max == 5
    assert req.timing.step_retry_window == api.settings.step_retry_window

    desc = await api.client.get_workflow_handle(request_id).describe()
    assert desc.workflow_type == "SigningWorkflow" and desc.status == WorkflowExecutionStatus.RUNNING
    sa = desc.typed_search_attributes
    assert sa.get(SA_STATUS) == SignStatus.PREPARING.value and sa.get(SA_PLATFORM) == "webhook"
    assert sa.get(SA_INITIATOR) == "u-0" and sa.get(SA_PROVIDER) == "local"


async def test_title_tenant_and_provider_from_the_event(api: Api) -> None:
    body = api.message('/sign @李四 title:"年度框架协议" provider:local', tenant="acme")
    resp = await api.post(body)
    assert resp.status_code == 202
    req = await api.started_input(f"sign:webhook:acme:{body['event_id']}")
    assert req.title == "年度框架协议" and req.chat.tenant == "acme" and req.provider == "local"


async def test_malformed_json_is_400(api: Api) -> None:
    resp = await api.post_raw(b"{not json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("drop", ["event_id", "chat", "sender", "type"])
async def test_missing_fields_are_400(api: Api, drop: str) -> None:
    body = api.message()
    del body[drop]
    resp = await api.post(body)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_event"
    assert drop in resp.json()["error"]["message"] or drop == "type"
    assert not await api.exists(f"sign:webhook:default:{body.get('event_id')}")


async def test_unknown_event_type_is_400(api: Api) -> None:
    resp = await api.post({**api.message(), "type": "reaction"})
    assert resp.status_code == 400


async def _rejected(api: Api, body: dict[str, Any], *expected: str) -> SigningRequest:
    resp = await api.post(body)
    assert resp.status_code == 202, resp.text
    out = resp.json()
    assert out["ok"] is True and out["status"] == "rejected" and out["started"] is True
    for text in expected:
        assert text in out["reason"]
    req = await api.started_input(out["request_id"])
    assert req.problem == out["reason"]
    return req


async def test_no_file_starts_a_rejected_flow(api: Api) -> None:
    req = await _rejected(api, api.message(files=[]), "没有找到要签署的文件", "No document")
    assert req.documents == [] and req.title


async def test_signer_named_twice_starts_a_rejected_flow(api: Api) -> None:
    req = await _rejected(api, api.message("/sign @李四 > @李四"), "李四", "more than once")
    assert req.groups == []


async def test_external_signer_without_contact_starts_a_rejected_flow(api: Api) -> None:
    mentions = [{"id": "x-1", "name": "客户B", "external": True}]
    await _rejected(api, api.message("/sign @客户B", mentions=mentions), "客户B", "neither an email nor a mobile")


async def test_unknown_mention_starts_a_rejected_flow(api: Api) -> None:
    await _rejected(api, api.message("/sign @李四 @王六"), "无法识别 @王六：")


async def test_rejected_redelivery_is_still_one_flow(api: Api) -> None:
    body = api.message("/sign")
    assert (await api.post(body)).status_code == 202
    again = await api.post(body)
    assert again.status_code == 200 and again.json()["started"] is False and again.json()["status"] == "rejected"


# ---- actions ----------------------------------------------------------------------------------

async def test_action_on_unknown_request_is_404(api: Api) -> None:
    resp = await api.post(api.action("sign:webhook:default:nope-" + uuid.uuid4().hex, "remind"))
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


async def test_action_on_ended_request_is_409(api: Api) -> None:
    body = api.message()
    request_id = (await api.post(body)).json()["request_id"]
    await api.client.get_workflow_handle(request_id).terminate("test")
    resp = await api.post(api.action(request_id, "remind"))
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "already_ended"


async def test_unknown_action_name_is_400(api: Api) -> None:
    resp = await api.post(api.action("sign:webhook:default:x", "approve"))
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_action"


async def test_action_without_action_field_is_400(api: Api) -> None:
    body = api.action("sign:webhook:default:x", "remind")
    del body["action"]
    assert (await api.post(body)).status_code == 400


@pytest.fixture
async def stand_in(api: Api) -> AsyncIterator[None]:
    async with Worker(api.client, task_queue=api.settings.task_queue, workflows=[StandInWorkflow],
                      workflow_runner=UnsandboxedWorkflowRunner()):
        yield


async def test_actions_become_updates(api: Api, stand_in: None) -> None:
    request_id = (await api.post(api.message())).json()["request_id"]
    handle = api.client.get_workflow_handle(request_id, result_type=StatusView)

    click = api.action(request_id, "remind")
    resp = await api.post(click)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"ok": True, "request_id": request_id, "action": "remind", "status": "IN_PROGRESS"}
    assert (await api.post(click)).status_code == 200  # the IM redelivers the same click
    assert await handle.query("applied") == [["remind", "u-0"]]  # applied once: the event id is the update id

    assert (await api.post(api.action(request_id, "remind", sender="u-ops"))).status_code == 200
    assert await handle.query("applied") == [["remind", "u-0"], ["remind", "u-ops"]]  # operators: from settings

    denied = await api.post(api.action(request_id, "remind", sender="u-stranger"))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "PermissionDenied"
    refused = await api.post(api.action(request_id, "retry"))
    assert refused.status_code == 409 and refused.json()["error"] == {
        "code": "NotAllowed", "message": "Nothing to retry: the request is IN_PROGRESS, not STUCK"}
    assert await handle.query("applied") == [["remind", "u-0"], ["remind", "u-ops"]]

    cancelled = await api.post(api.action(request_id, "cancel"))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert (await handle.result()).status == SignStatus.CANCELLED
