"""The REST API for self-built systems and operators, against the real dev server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from tests.harness import INITIATOR, A, B, Harness, harness

AUTH = {"Authorization": "Bearer test-api-key"}


@pytest.fixture
async def h(dev_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Harness]:
    async with harness(dev_env.client, settings) as h:
        yield h


def _body(**extra: Any) -> dict[str, Any]:
    return {"title": "采购合同", "initiator": INITIATOR.model_dump(),
            "groups": [[A.model_dump()], [B.model_dump()]], **extra}


async def _create_upload(h: Harness, key: str | None = None) -> str:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    resp = await h.http.post("/api/v1/signing-requests", headers=headers,
                             data={"request": json.dumps(_body())},
                             files={"file": ("采购合同.pdf", sample_contract("Purchase"), "application/pdf")})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["request_id"])


async def _wait(h: Harness, request_id: str, status: str) -> dict[str, Any]:
    for _ in range(300):
        resp = await h.http.get(f"/api/v1/signing-requests/{request_id}", headers=AUTH)
        if resp.status_code == 200 and resp.json()["status"] == status:
            return resp.json()  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{request_id} never reached {status}: {resp.text}")


async def test_api_key_required(h: Harness) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "test-api-key"}):
        resp = await h.http.get("/api/v1/signing-requests", headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "unauthorized"


async def test_upload_sign_download_and_audit(h: Harness) -> None:
    request_id = await _create_upload(h, key="order-42")
    assert await _create_upload(h, key="order-42") == request_id  # idempotent create
    handle = h.client.get_workflow_handle(request_id)
    await h.sign(handle, A)
    await h.sign(handle, B)
    view = await _wait(h, request_id, "COMPLETED")
    assert view["document"]["name"] == "采购合同.pdf"

    pdf = await h.http.get(f"/api/v1/signing-requests/{request_id}/signed-file", headers=AUTH)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
    assert pdf.headers["content-type"] == "application/pdf"

    trail = (await h.http.get(f"/api/v1/signing-requests/{request_id}/audit", headers=AUTH)).json()
    assert trail["chain_valid"] is True
    signed = [e for e in trail["events"] if e["action"] == "signer.signed"]
    assert {e["actor"] for e in signed} == {A.id, B.id}
    assert any(e["ip"] == "203.0.113.7" for e in signed)  # who signed from where

    listed = (await h.http.get("/api/v1/signing-requests", params={"status": "COMPLETED"}, headers=AUTH)).json()
    assert request_id in {r["request_id"] for r in listed}


async def test_create_from_file_url_rejects_bad_input_in_chat(h: Harness) -> None:
    resp = await h.http.post("/api/v1/signing-requests", headers=AUTH,
                             json=_body(file_url="http://127.0.0.1:9/nothing-listens-here.pdf",
                                        groups=[[A.model_dump()], [A.model_dump()]]))
    assert resp.status_code == 202
    view = await _wait(h, resp.json()["request_id"], "REJECTED")
    assert "twice" in view["reason"]


async def test_invalid_body_is_400(h: Harness) -> None:
    resp = await h.http.post("/api/v1/signing-requests", headers=AUTH, content=b"{nope")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_request"
    resp = await h.http.post("/api/v1/signing-requests", headers=AUTH, json={"title": "x"})
    assert resp.status_code == 400


async def test_cancel_remind_retry(h: Harness) -> None:
    request_id = await _create_upload(h)
    handle = h.client.get_workflow_handle(request_id)
    await h.link(handle, A)
    retry = await h.http.post(f"/api/v1/signing-requests/{request_id}/retry", headers=AUTH)
    assert retry.status_code == 409 and "not STUCK" in retry.json()["error"]["message"]
    remind = await h.http.post(f"/api/v1/signing-requests/{request_id}/remind", headers=AUTH)
    assert remind.status_code == 200
    await h.sink.wait_for(lambda: len(h.links_for(handle, A)) == 2, timeout=20)
    assert "提醒" in h.links_for(handle, A)[-1]["text"]
    cancel = await h.http.post(f"/api/v1/signing-requests/{request_id}/cancel", headers=AUTH,
                               json={"reason": "合同作废"})
    assert cancel.status_code == 200 and cancel.json()["status"] == "CANCELLED"
    trail = (await h.http.get(f"/api/v1/signing-requests/{request_id}/audit", headers=AUTH)).json()
    who = {e["action"]: e["actor"] for e in trail["events"]}
    assert who["request.reminded"].startswith("api:") and who["request.cancelled"].startswith("api:")
    again = await h.http.post(f"/api/v1/signing-requests/{request_id}/cancel", headers=AUTH)
    assert again.status_code in (404, 409)
    missing = await h.http.get("/api/v1/signing-requests/sign:api:default:nope", headers=AUTH)
    assert missing.status_code == 404


async def test_health_and_docs(h: Harness) -> None:
    assert (await h.http.get("/healthz")).json() == {"status": "ok"}
    ready = await h.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "temporal": "ok"}
    spec = (await h.http.get("/openapi.json")).json()
    assert "/api/v1/signing-requests" in spec["paths"] and "/im/webhook/events" in spec["paths"]
    ca = await h.http.get("/ca.pem")
    assert ca.text.startswith("-----BEGIN CERTIFICATE-----")
