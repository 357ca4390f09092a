"""The development playground is a company chat that speaks the webhook IM protocol — no back door
— and `signbridge demo` plays it to a verified PDF. The browser drives it in `tests/test_browser.py`."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from api.playground.routes import mentions, sso
from connectors.chat.webhook import signature
from signbridge.cli.demo import run_demo
from signbridge.pdf.sample import sample_contract
from tests.conftest import make_settings
from tests.playground_stack import PlaygroundStack, playground_stack


@pytest.fixture(scope="module")
async def stack(dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[
        PlaygroundStack]:
    async with playground_stack(dev_env.client, tmp_path_factory.mktemp("playground") / "data") as stack:
        yield stack


async def test_signbridge_demo_plays_the_playground_to_a_verified_pdf(stack: PlaygroundStack, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert await asyncio.to_thread(run_demo, stack.url, tmp_path, 60) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "Verification: OK — 3 valid signatures" in out and "→ 客户A gets the link by email" in out
    assert re.search(r"客户A asks for a one-time code: sent to a\*\*\*@customer\.example — \d{6}", out), out
    # Colleagues are verified by the chat's sign-in assertion; the external customer by a code.
    assert "→ 李四 opens their link and signs with one tap (verified by the chat)" in out
    # The signed file can reach the chat a moment before the card's last update: wait for the card.
    for _ in range(100):
        entries = await stack.entries()
        cards = [e["body"]["card"] for e in entries if e["kind"] == "outbound" and e["body"]["type"] == "card.upsert"]
        if cards[-1]["status"] == "COMPLETED":
            break
        await asyncio.sleep(0.1)
    assert cards[-1]["status"] == "COMPLETED" and [s["state"] for s in cards[-1]["signers"]] == ["signed"] * 3
    # The chat's memory is in the data dir, and only there.
    assert (stack.settings.data_dir / "playground" / "transcript.jsonl").exists()
    assert len(list((stack.settings.data_dir / "playground" / "files").iterdir())) == 1


async def test_the_playground_takes_only_what_signbridge_signed(stack: PlaygroundStack) -> None:
    secret = stack.settings.webhook_secret.get_secret_value()
    body = json.dumps({"type": "message", "chat_id": "g-playground", "to": None, "text": "hi",
                       "idempotency_key": "k-once"}).encode()
    assert (await stack.http.post("/playground/outbound", content=body)).status_code == 401
    forged = signature.headers("not-the-secret", body)
    assert (await stack.http.post("/playground/outbound", content=body, headers=forged)).status_code == 401
    before = len(await stack.entries())
    for _ in range(2):  # a retried delivery is kept once
        resp = await stack.http.post("/playground/outbound", content=body, headers=signature.headers(secret, body))
        assert resp.status_code == 200
    assert [e["body"]["text"] for e in (await stack.entries())[before:]] == ["hi"]

    dropped = (await stack.http.post("/playground/api/files", files={"file": ("a.pdf", b"%PDF-1.7 x")})).json()
    assert (await stack.http.get(f"/playground/files/{dropped['id']}")).status_code == 401  # a chat's files are private
    signed_get = await stack.http.get(f"/playground/files/{dropped['id']}", headers=signature.headers(secret, b""))
    assert signed_get.status_code == 200 and signed_get.content == b"%PDF-1.7 x"

    link = {"type": "message", "to": "u-lisi", "text": "请签署", "sign_url": f"{stack.url}/sign/tok",
            "idempotency_key": "k-link"}
    raw = json.dumps(link, ensure_ascii=False).encode()
    await stack.http.post("/playground/outbound", content=raw, headers=signature.headers(secret, raw))
    seq = (await stack.entries())[-1]["seq"]
    assert (await stack.http.get(f"/playground/open/{seq}", params={"as": "u-wangwu"})).status_code == 404
    opened = await stack.http.get(f"/playground/open/{seq}", params={"as": "u-lisi"})
    assert opened.status_code == 303 and opened.headers["location"].startswith(f"{stack.url}/sign/tok?sso=")


async def test_a_file_dropped_first_is_signed_by_the_next_command_and_the_page_follows_live(
        stack: PlaygroundStack) -> None:
    start = len(await stack.entries())
    dropped = (await stack.http.post("/playground/api/files", files={
        "file": ("合同.pdf", sample_contract("Dropped first"), "application/pdf")})).json()
    just_file = (await stack.http.post("/playground/api/say", json={"by": "u-zhaoliu", "text": "",
                                                                   "files": [dropped]})).json()
    assert just_file["answer"]["status"] == 200 and just_file["answer"]["body"]["ignored"]

    async with stack.http.stream("GET", "/playground/api/stream", params={"after": just_file["seq"]}) as events:
        command = (await stack.http.post("/playground/api/say", json={"by": "u-zhaoliu", "text": "/sign @王五"})).json()
        assert command["answer"]["status"] == 202, command
        seen: list[dict[str, object]] = []
        async for line in events.aiter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line.removeprefix("data: ")))
            if any(e["kind"] == "outbound" and e["body"]["type"] == "card.upsert" for e in seen):  # type: ignore[index]
                break
    card = next(e["body"]["card"] for e in seen if e["kind"] == "outbound")  # type: ignore[index]
    assert card["document"]["name"] == "合同.pdf" and card["signers"][0]["name"] == "王五"
    assert len(await stack.entries()) > start


def test_mentions_carry_what_the_chat_knows_and_the_sso_assertion_is_signed() -> None:
    found = mentions("/sign @李四 @客户A > @李四 @无名氏")
    assert [m["name"] for m in found] == ["李四", "客户A"] and found[1]["external"] is True
    payload, mac = sso("s3cret", "u-lisi", now=1000).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims == {"sub": "u-lisi", "exp": 1600}
    assert len(mac) == 64


async def test_no_playground_outside_development(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, environment="production", webhook_secret="w" * 32, link_secret="l" * 32)
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        for path in ("/playground", "/playground/api/state", "/playground/assets/playground.js"):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.post("/playground/outbound", content=b"{}")).status_code == 404
