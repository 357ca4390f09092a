"""Secrets stay secret: what `make run` prints, who may read the files, and refusing to start.

- The real `signbridge run` (what `make run` starts: Temporal dev server, worker, API with its
  access log on), a signing through it over HTTP like the demo's, then its console: no signing
  token and no download signature anywhere, the redacted access lines there instead, and the
  warning that the development secrets are in use.
- Everything SignBridge creates under the data dir is its user's alone (0700 / 0600).
- Outside development, a missing or development secret stops every entry point with exit code 1
  and one line naming the variable; `SIGNBRIDGE_ENVIRONMENT` itself defaults to production.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from connectors.chat.webhook import signature as webhook_signature
from signbridge.cli.demo import DemoChat
from signbridge.core.settings import DEV_SECRET, InsecureSettings, Settings
from signbridge.pdf.pki import InstallationCA
from signbridge.pdf.sample import sample_contract
from store.blob_factory import make_blob_store
from tests.conftest import make_settings
from tests.sim.servers import free_port

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _private(root: Path) -> list[str]:
    """Every file and directory under `root` that anyone but its owner may read: none, we expect —
    but the CA's certificate, public on purpose (anyone verifies signatures with it, `GET /ca.pem`),
    in its owner-only directory."""
    paths = [root, *root.rglob("*")]
    return [f"{p} {oct(_mode(p))}" for p in paths if _mode(p) & 0o077 and p.name != "ca.crt.pem"]


def _env(**values: str) -> dict[str, str]:
    """This process's environment without any SIGNBRIDGE_* setting, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNBRIDGE_")}
    return {**env, **values}


async def _until(probe: object, what: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; console:\n{log.read_text(errors='replace')[-4000:]}")
        await asyncio.sleep(0.3)


async def test_the_make_run_console_shows_no_token_and_no_download_signature(tmp_path: Path) -> None:
    api_port, temporal_port, ui_port, chat_port = free_port(), free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    data = tmp_path / "data"
    console = tmp_path / "console.log"
    # As a developer runs it: no SIGNBRIDGE_ENVIRONMENT and no secrets (`run` says development and
    # uses the development secrets, with a warning); only ports and the demo chat's address differ.
    env = _env(SIGNBRIDGE_DATA_DIR=str(data), SIGNBRIDGE_TEMPORAL_ADDRESS=f"127.0.0.1:{temporal_port}",
               SIGNBRIDGE_PUBLIC_URL=api, SIGNBRIDGE_WEBHOOK_OUTBOUND_URL=f"http://127.0.0.1:{chat_port}/outbound",
               SIGNBRIDGE_FETCH_ALLOW_NETWORKS="127.0.0.1/32", SIGNBRIDGE_WORKER_METRICS_ADDRESS="")
    chat = DemoChat(DEV_SECRET, sample_contract("Console", pages=1))
    server = chat.serve(chat_port)
    with console.open("wb") as out:
        run = subprocess.Popen([str(BIN / "signbridge"), "run", "--api-port", str(api_port), "--ui-port", str(ui_port)],
                               cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            async def healthy() -> bool:
                try:
                    return (await http.get(f"{api}/healthz")).status_code == 200
                except httpx.HTTPError:
                    return run.poll() is not None  # stop waiting: the assertion below says why

            await _until(healthy, "the API", 120, console)
            assert run.poll() is None, console.read_text(errors="replace")
            command = json.dumps({
                "event_id": f"console-{uuid.uuid4().hex[:8]}", "type": "message", "chat": {"id": "g-1"},
                "sender": {"id": "u-zhangsan", "name": "张三"}, "text": "/sign @李四",
                "mentions": [{"id": "u-lisi", "name": "李四"}],
                "files": [{"name": "合同.pdf", "url": f"http://127.0.0.1:{chat_port}/f/contract.pdf"}]},
                ensure_ascii=False).encode()
            resp = await http.post(f"{api}/im/webhook/events", content=command,
                                   headers={**webhook_signature.headers(DEV_SECRET, command),
                                            "Content-Type": "application/json"})
            assert resp.status_code == 202, resp.text

            def sent(kind: str) -> list[dict[str, object]]:
                return [m for m in chat.messages if m.get("type") == kind and (kind != "message" or m.get("sign_url"))]

            async def linked() -> bool:
                return bool(sent("message"))

            await _until(linked, "the signing link", 90, console)
            link = str(sent("message")[0]["sign_url"])
            assert (await http.get(f"{link}/pages/1.png")).status_code == 200
            signed = await http.post(link, data={"name": "李四", "consent": "yes"},
                                     headers={"Accept": "application/json"})
            assert signed.status_code == 200, signed.text

            async def filed() -> bool:
                return bool(sent("file"))

            await _until(filed, "the signed file", 90, console)
            download = str(sent("file")[0]["url"])
            assert (await http.get(download)).content.startswith(b"%PDF")
            await asyncio.sleep(0.5)  # the access log line of the download is written after the answer
    finally:
        server.should_exit = True
        run.send_signal(signal.SIGINT)
        run.wait(timeout=60)

    text = console.read_text(errors="replace")
    token = link.rsplit("/sign/", 1)[1]
    sig = download.split("sig=", 1)[1].split("&", 1)[0]
    assert token not in text and sig not in text
    assert "/sign/<redacted>/pages/1.png" in text and "sig=<redacted>" in text  # the access log is on, redacted
    assert "WARNING: development secrets in use (SIGNBRIDGE_WEBHOOK_SECRET, SIGNBRIDGE_LINK_SECRET)" in text
    # What the stack created is its user's alone: databases (SignBridge's and Temporal's), blobs,
    # the CA key, the rendered pages, the logs.
    for made in ("signbridge.db", "temporal.db", "temporal.log", "ca", "blobs", "pages"):
        assert (data / made).exists(), made
    assert _private(data) == []


async def test_files_and_databases_are_created_owner_only(tmp_path: Path) -> None:
    """In this process, whatever its umask: the API's start-up, a blob, the CA."""
    settings = make_settings(tmp_path / "fresh" / "data")
    old = os.umask(0o022)
    try:
        app = create_app(settings, client=object())  # type: ignore[arg-type]  # no Temporal call is made
        async with app.router.lifespan_context(app):
            make_blob_store(settings).put(b"%PDF-1.7 contract")
            InstallationCA.load_or_create(settings.data_dir / "ca")
    finally:
        os.umask(old)
    data = settings.data_dir
    assert _mode(data) == 0o700 and _mode(data.parent) == 0o700  # a missing parent too
    assert _mode(data / "signbridge.db") == 0o600
    blob = next(p for p in (data / "blobs").rglob("*") if p.is_file())
    assert _mode(blob) == 0o600 and _mode(blob.parent) == 0o700 and _mode(blob.parent.parent) == 0o700
    assert _private(data) == []


@pytest.mark.parametrize("argv", [["api"], ["worker"], ["chat-listener", "--platform", "feishu"]])
@pytest.mark.parametrize("secrets, named", [
    ({}, "SIGNBRIDGE_WEBHOOK_SECRET and SIGNBRIDGE_LINK_SECRET are"),
    ({"SIGNBRIDGE_WEBHOOK_SECRET": "a-real-secret"}, "SIGNBRIDGE_LINK_SECRET is"),
    ({"SIGNBRIDGE_WEBHOOK_SECRET": DEV_SECRET, "SIGNBRIDGE_LINK_SECRET": "a-real-secret"},
     "SIGNBRIDGE_WEBHOOK_SECRET is"),
])
def test_outside_development_a_missing_or_development_secret_refuses_to_start(
        tmp_path: Path, argv: list[str], secrets: dict[str, str], named: str) -> None:
    # No SIGNBRIDGE_ENVIRONMENT at all: the default is production.
    env = _env(SIGNBRIDGE_DATA_DIR=str(tmp_path / "data"), SIGNBRIDGE_FEISHU_APP_ID="cli_x",
               SIGNBRIDGE_FEISHU_APP_SECRET="s", **secrets)
    done = subprocess.run([str(BIN / "signbridge"), *argv], env=env, cwd=ROOT, capture_output=True, timeout=60)
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr.decode()
    assert lines[0].startswith(f"signbridge: refusing to start: {named} missing or the development default"), lines
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_the_environment_defaults_to_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGNBRIDGE_ENVIRONMENT")
    settings = Settings()
    assert settings.environment == "production"
    with pytest.raises(InsecureSettings):
        settings.check_production()
    with pytest.raises(InsecureSettings):  # the API refuses as it is built, before it serves anything
        create_app(settings)
    Settings(webhook_secret="w" * 32, link_secret="l" * 32).check_production()  # type: ignore[arg-type]
    Settings(environment="development").check_production()  # developers keep the built-in ones
