"""`/docs` and `/redoc` work offline and say what to send: assets served by SignBridge, every POST
route's body documented, every documented example accepted when sent (signed, for the webhook
IM), each route listed once. The browser renders `/docs` in `tests/test_browser.py`."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
from temporalio.testing import WorkflowEnvironment

from api.openapi_docs import ACTION_EXAMPLE, APPROVAL_EXAMPLE, MESSAGE_EXAMPLE
from connectors.chat.webhook import signature
from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from tests.harness import Harness, harness

AUTH = {"Authorization": "Bearer test-api-key"}


@pytest.fixture
async def h(ts_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Harness]:
    async with harness(ts_env, settings) as h:
        yield h


async def _spec(h: Harness) -> dict[str, Any]:
    return (await h.http.get("/openapi.json")).json()  # type: ignore[no-any-return]


def _validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for `schema` that resolves `#/components/...` against the whole document."""
    return jsonschema.Draft202012Validator({**schema, "components": spec["components"]})


async def test_docs_pages_load_every_asset_from_signbridge(h: Harness) -> None:
    for page in ("/docs", "/redoc"):
        html = (await h.http.get(page)).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert sources and not [s for s in sources if "://" in s], sources  # nothing from a CDN
        for source in sources:
            asset = await h.http.get(source)
            assert asset.status_code == 200 and len(asset.content) > 1000, source
    assert (await h.http.get("/docs/assets/swagger-ui-bundle.js")).headers["content-type"].startswith(
        "text/javascript")


async def test_every_route_is_listed_once_and_every_post_says_what_to_send(h: Harness) -> None:
    spec = await _spec(h)
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert len(op.get("tags", [])) == 1, (method, path, op.get("tags"))  # Swagger lists it once per tag
            if method == "post":
                assert op.get("requestBody"), f"POST {path} documents no body"
            errors = [s for s in op["responses"] if s.startswith(("4", "5"))]
            for status in errors:
                content = op["responses"][status].get("content", {})
                assert content, (method, path, status)
    webhook = spec["paths"]["/im/webhook/events"]["post"]
    assert {"200", "202", "400", "401", "404", "409", "503"} <= set(webhook["responses"])
    assert [p["name"] for p in webhook["parameters"]] == ["X-SignBridge-Timestamp", "X-SignBridge-Signature"]
    union = spec["components"]["schemas"]["WebhookEvent"]
    assert union["discriminator"]["propertyName"] == "type" and len(union["oneOf"]) == 3
    assert "openssl dgst -sha256 -hmac" in webhook["description"]  # how to sign an example by hand


async def test_the_examples_validate_and_are_accepted_when_sent(h: Harness) -> None:
    spec = await _spec(h)
    webhook = spec["paths"]["/im/webhook/events"]["post"]["requestBody"]["content"]["application/json"]
    create = spec["paths"]["/api/v1/signing-requests"]["post"]["requestBody"]["content"]
    for media in (webhook, create["application/json"]):
        for example in media["examples"].values():
            _validator(spec, media["schema"]).validate(example["value"])
    assert webhook["examples"]["message"]["value"] == MESSAGE_EXAMPLE

    secret = h.settings.webhook_secret.get_secret_value()
    for example, started in ((MESSAGE_EXAMPLE, 202), (ACTION_EXAMPLE, None), (APPROVAL_EXAMPLE, 202)):
        raw = json.dumps(example, ensure_ascii=False).encode()
        resp = await h.http.post("/im/webhook/events", content=raw,
                                 headers={**signature.headers(secret, raw), "Content-Type": "application/json"})
        if started:
            expected = "e-123" if example is MESSAGE_EXAMPLE else "approval-AP-2026-0042"
            assert resp.status_code == started and resp.json()["request_id"] == f"sign:webhook:default:{expected}", \
                resp.text
        else:  # the card button of that request: an answer the route documents, never a 4xx for the body
            assert resp.status_code in (200, 202, 409), resp.text

    as_json = await h.http.post("/api/v1/signing-requests", headers=AUTH,
                                json=create["application/json"]["examples"]["file_url"]["value"])
    assert as_json.status_code == 202, as_json.text
    form = create["multipart/form-data"]["schema"]["properties"]
    uploaded = await h.http.post("/api/v1/signing-requests", headers=AUTH, data={"request": form["request"]["example"]},
                                 files={"file": ("采购合同.pdf", sample_contract("Docs"), "application/pdf")})
    assert uploaded.status_code == 202, uploaded.text

    action = spec["components"]["schemas"]["ActionBody"]["examples"][0]
    cancelled = await h.http.post(f"/api/v1/signing-requests/{uploaded.json()['request_id']}/cancel", headers=AUTH,
                                  json=action)
    assert cancelled.status_code in (200, 202), cancelled.text
