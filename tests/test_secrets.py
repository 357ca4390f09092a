"""Secrets stay secret: what `make run` prints, who may read the files, and refusing to start.

- The real `make run PORT=…` (Temporal dev server, worker, API with its access log on, every port
  moved with PORT), `signbridge demo` as its banner prints it, then its console: no signing
  token and no download signature anywhere, the redacted access lines there instead, and the
  warning that the development secrets are in use.
- Everything SignBridge creates under the data dir is its user's alone (0700 / 0600).
- Outside development, a missing or development secret stops every entry point with exit code 1
  and one line naming the variable; `SIGNBRIDGE_ENVIRONMENT` itself defaults to production.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from signbridge.cli.ports import busy, plan
from signbridge.core.settings import DEV_SECRET, InsecureSettings, Settings
from signbridge.pdf.pki import InstallationCA
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
    """This process's environment without any SIGNBRIDGE_* setting (and no `.env`), plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNBRIDGE_")}
    return {**env, "SIGNBRIDGE_ENV_FILE": "", **values}


async def _until(probe: object, what: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; console:\n{log.read_text(errors='replace')[-4000:]}")
        await asyncio.sleep(0.3)


def _derived_ports() -> int:
    """An API port whose derived ports (`make run PORT=…`: Temporal, its UI, the worker's metrics)
    are free too."""
    for _ in range(50):
        api = free_port()
        moved = plan(api, None, {})
        if all(not busy(b.host, b.port) for b in moved.bound()[1:]):
            return api
    raise AssertionError("no API port whose derived ports are all free")


@contextmanager
def _taken(*ports: int) -> Iterator[None]:
    """Hold the default ports while the test runs (those that something else holds already stay so)."""
    held = []
    for port in ports:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            held.append(s)
        except OSError:
            s.close()
    try:
        yield
    finally:
        for s in held:
            s.close()


async def test_make_run_with_a_port_beside_a_busy_default_stack_signs_and_shows_no_secret(tmp_path: Path) -> None:
    """`make run PORT=…` on a machine where 8000, 7233, 8233 and 9464 are taken: a working stack,
    whose banner's demo command works as printed (it plays the playground to a verified PDF), and
    whose console then shows no signing token and no download signature."""
    api_port = _derived_ports()
    api = f"http://127.0.0.1:{api_port}"
    data = tmp_path / "data"
    console = tmp_path / "console.log"
    # As a developer runs it: no SIGNBRIDGE_ENVIRONMENT and no secrets (`run` says development and
    # uses the development secrets, with a warning); only the data dir and PORT are chosen.
    env = _env(SIGNBRIDGE_DATA_DIR=str(data))
    with _taken(8000, 7233, 8233, 9464), console.open("wb") as out:
        run = subprocess.Popen(["make", "--no-print-directory", "-C", str(ROOT), "run", f"PORT={api_port}"],
                               cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                async def started() -> bool:
                    return "Press Ctrl-C to stop." in console.read_text(errors="replace") or run.poll() is not None

                await _until(started, "the stack", 120, console)
                assert run.poll() is None, console.read_text(errors="replace")
                banner = console.read_text(errors="replace")
                demo = next(line for line in banner.splitlines() if "Scripted demo" in line).split(": ", 1)[1]
                assert demo.endswith(f"demo --api-url {api}") and f"Playground:  {api}/playground" in banner
                played = await asyncio.to_thread(subprocess.run, [*shlex.split(demo), "--out-dir", str(tmp_path)],
                                                 cwd=ROOT, env=env, capture_output=True, timeout=180)
                assert played.returncode == 0, played.stdout.decode() + played.stderr.decode()
                assert "Verification: OK" in played.stdout.decode()

                entries = (await http.get(f"{api}/playground/api/entries")).json()
                download = next(e["body"]["url"] for e in entries if e["kind"] == "outbound"
                                and e["body"]["type"] == "file")
                assert (await http.get(download)).content.startswith(b"%PDF")
                # One more request, through the playground as a person would, left open: its page is rendered.
                await http.post(f"{api}/playground/api/say", json={"by": "u-zhangsan", "text": "/sign @赵六"})

                async def linked() -> bool:
                    entries[:] = (await http.get(f"{api}/playground/api/entries")).json()
                    return any(e["kind"] == "outbound" and e["body"].get("to") == "u-zhaoliu" for e in entries)

                await _until(linked, "赵六's link", 60, console)
                link = next(e["body"]["sign_url"] for e in entries if e["kind"] == "outbound"
                            and e["body"].get("to") == "u-zhaoliu")
                assert (await http.get(f"{link}/pages/1.png")).status_code == 200
                await asyncio.sleep(0.5)  # the access log line of the download is written after the answer
        finally:
            os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in the terminal: make and the stack it started
            run.wait(timeout=60)

    text = console.read_text(errors="replace")
    token = link.rsplit("/sign/", 1)[1]
    sig = download.split("sig=", 1)[1].split("&", 1)[0]
    assert token not in text and sig not in text
    assert "/sign/<redacted>/pages/1.png" in text and "sig=<redacted>" in text  # the access log is on, redacted
    assert "WARNING: development secrets in use (SIGNBRIDGE_WEBHOOK_SECRET, SIGNBRIDGE_LINK_SECRET)" in text
    # What the stack created is its user's alone: databases (SignBridge's and Temporal's), blobs,
    # the CA key, the rendered pages, the logs, the playground's transcript and files.
    for made in ("signbridge.db", "temporal.db", "temporal.log", "ca", "blobs", "pages", "playground"):
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
