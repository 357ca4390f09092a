"""`signbridge` command line: one foreground `run` for the whole stack, and each piece alone.

`run` supervises three children — Temporal dev server, worker, API — instead of asking people
to open three terminals. Children get their own session so a terminal Ctrl-C reaches only us;
we then stop them in reverse order (API first, so no request is accepted by an API whose
Temporal is already gone). If one dies on its own, the others are stopped and we exit non-zero
naming it, rather than leaving a half-running stack that looks fine.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from signbridge.cli import approvals as approvals_cli
from signbridge.cli import bulk as bulk_cli
from signbridge.cli import devserver
from signbridge.cli import documents as documents_cli
from signbridge.cli import ops as ops_cli
from signbridge.cli import orgs as orgs_cli
from signbridge.cli.errors import DEBUG_KEY, OneLineErrors
from signbridge.cli.ports import (
    OUTBOUND_URL,
    PLAYGROUND_OUTBOUND,
    UI_PORT_OFFSET,
    PortProblem,
    StackPorts,
    check_free,
    plan,
    split_address,
)
from signbridge.core.settings import DEVELOPMENT, Settings, get_settings, load_env_file
from store.files import private_dir

app = typer.Typer(help="SignBridge: get documents signed without leaving the chat.", no_args_is_help=True,
                  cls=OneLineErrors, pretty_exceptions_enable=False)


@app.callback()
def _every_command(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="show the whole traceback of an error")] = False,
) -> None:
    """Every command reads `.env` in the project folder first (`load_env_file`), answers an error
    with one line (`signbridge.cli.errors`), and whatever SignBridge and the processes it starts
    create (databases, blobs, the CA, logs, Temporal's dev database) is readable by its own user
    only: contracts and keys live there."""
    ctx.meta[DEBUG_KEY] = debug
    load_env_file()
    os.umask(0o077)


app.add_typer(ops_cli.requests_app, name="requests")
app.add_typer(ops_cli.identities_app, name="identities")
app.add_typer(ops_cli.db_app, name="db")
app.add_typer(documents_cli.templates_app, name="templates")
app.add_typer(approvals_cli.approvals_app, name="approvals")
app.add_typer(orgs_cli.orgs_app, name="orgs")
app.command(name="pause")(documents_cli.pause)
app.command(name="bulk-send")(bulk_cli.bulk_send)
app.command(name="resume")(documents_cli.resume)

API_HOST = "127.0.0.1"
API_PORT = 8000
STOP_TIMEOUT = 10.0
STARTUP_TIMEOUT = 90.0
# uvicorn pings each API process and replaces one that does not answer within this many seconds.
# Its default (5 s) killed processes still starting: a spawned process first imports this module
# (the parent's `__main__`: every command's imports) before it can answer, over 5 s on a busy
# 2-core machine, so processes were replaced in a loop and never served.
WORKER_HEALTHCHECK_SECONDS = 60


@dataclass
class Child:
    """One supervised process; `log` set means its output goes to a file instead of the terminal."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path | None = None


@dataclass
class Supervisor:
    """Starts children, notices the first one that dies, stops all of them in reverse order."""

    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], log: Path | None = None) -> Child:
        # Truncated per run, so the tail shown when a child dies is about this run.
        out: IO[bytes] | None = log.open("wb") if log else None
        try:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True)  # noqa: S603 (argv built here)
        finally:
            if out:
                out.close()  # the child holds its own descriptor
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def dead(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop_all(self, timeout: float = STOP_TIMEOUT) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is not None:
                continue
            child.proc.terminate()
            try:
                child.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                typer.echo(f"signbridge: {child.name} did not stop within {timeout:.0f} s; killing it", err=True)
                child.proc.kill()
                child.proc.wait()


class ChildDied(Exception):
    def __init__(self, child: Child) -> None:
        super().__init__(child.name)
        self.child = child


def _tail(path: Path | None, lines: int = 15) -> str:
    if not path or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def _until(sup: Supervisor, stop: asyncio.Event, probe: Callable[[], Coroutine[Any, Any, bool]],
                 timeout: float | None = None, what: str = "") -> bool:
    """Poll `probe` until it is true (True), a stop signal arrives (False) or a child dies (raise)."""
    deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
    while not stop.is_set():
        if child := sup.dead():
            raise ChildDied(child)
        if await probe():
            return True
        if deadline is not None and asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        try:
            await asyncio.wait_for(stop.wait(), 0.3)
        except TimeoutError:
            pass
    return False


async def _api_healthy(url: str) -> bool:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=1.0) as http:
            return (await http.get(f"{url}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False


async def _supervise(sup: Supervisor, settings: Settings, ports: StackPorts) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    address = ports.temporal_address
    namespace = settings.temporal_namespace
    temporal_log = settings.data_dir / "temporal.log"
    api_url = ports.api_url
    typer.echo(f"starting Temporal dev server on {address} (log: {temporal_log})")
    sup.start("temporal dev server", devserver.devserver_argv(
        settings.data_dir, ip=ports.temporal_host, port=ports.temporal_port, ui_port=ports.ui_port,
        namespace=namespace), temporal_log)

    async def temporal_up() -> bool:
        client = await devserver.temporal_ready(address, namespace)
        if client is None:
            return False
        added = await devserver.ensure_search_attributes(client, namespace)
        if added:
            typer.echo(f"registered search attributes: {', '.join(added)}")
        return True

    if not await _until(sup, stop, temporal_up, STARTUP_TIMEOUT, "Temporal dev server"):
        return 0
    typer.echo("starting worker" + (f" (metrics on {ports.metrics_address})" if ports.metrics_address else ""))
    sup.start("worker", [sys.executable, "-m", "worker"])
    typer.echo(f"starting API on {api_url} ({settings.api_processes} processes, SIGNBRIDGE_API_PROCESSES)")
    sup.start("API", [sys.executable, "-m", "signbridge.cli.main", "api", "--host", API_HOST,
                      "--port", str(ports.api_port), "--access-log"])
    if not await _until(sup, stop, lambda: _api_healthy(api_url), STARTUP_TIMEOUT, "API"):
        return 0
    typer.echo(banner(ports, os.environ[OUTBOUND_URL]))
    await _until(sup, stop, _never)
    return 0


def banner(ports: StackPorts, outbound_url: str) -> str:
    """What `make run` prints once the stack answers: every address, and commands that work as printed."""
    playground = outbound_url.startswith(ports.api_url) and outbound_url.endswith(PLAYGROUND_OUTBOUND)
    lines = ["", "SignBridge is running."]
    if playground:
        lines.append(f"  Playground:  {ports.api_url}/playground  (be 张三, drop a PDF, send `/sign @李四 > @客户A`)")
    lines += [f"  API docs:    {ports.api_url}/docs  (ReDoc: {ports.api_url}/redoc)",
              f"  Temporal UI: http://{ports.temporal_host}:{ports.ui_port}"]
    if playground:
        lines.append(f"  Scripted demo, in another terminal: {_signbridge_command()} demo --api-url {ports.api_url}")
    lines += [f"  Chat outbound: {outbound_url} ({OUTBOUND_URL})", "Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def _signbridge_command() -> str:
    """This `signbridge` as a person would type it here (`.venv/bin/signbridge` after `make run`)."""
    beside = Path(sys.executable).parent / "signbridge"
    if not beside.exists():
        return "signbridge"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


async def _never() -> bool:
    return False


@app.command()
def run(
    api_port: Annotated[int, typer.Option(help="API port; every other port moves with it unless set "
                                               "(`make run PORT=8100`)")] = API_PORT,
    ui_port: Annotated[int | None, typer.Option(help="Temporal Web UI port [default: Temporal's port + 1000]")] = None,
) -> None:
    """Start everything in the foreground: Temporal dev server, worker and API. Ctrl-C stops it all."""
    try:
        ports = plan(api_port, ui_port, os.environ)
        check_free(ports.bound())
    except PortProblem as e:
        typer.echo(f"signbridge: {e}", err=True)
        raise typer.Exit(1) from None
    os.environ.update(ports.env)  # derived addresses, for this process's settings and the children's
    if ports.env.get(OUTBOUND_URL):
        # The playground serves its files from loopback, which fetching refuses unless allowed.
        os.environ.setdefault("SIGNBRIDGE_FETCH_ALLOW_NETWORKS", "127.0.0.1/32")
    os.environ.setdefault("SIGNBRIDGE_ENVIRONMENT", DEVELOPMENT)  # a developer's stack, said out loud
    settings = get_settings()
    settings.check_production()
    if settings.environment == DEVELOPMENT and (unset := settings.development_secrets()):
        typer.echo(f"WARNING: development secrets in use ({', '.join(unset)}): anyone with this repository can "
                   "forge chat callbacks and download links. Fine on your machine; never expose this stack.", err=True)
    private_dir(settings.data_dir)

    sup = Supervisor()
    code = 0
    try:
        code = asyncio.run(_supervise(sup, settings, ports))
    except ChildDied as e:
        rc = e.child.proc.returncode
        typer.echo(f"\nsignbridge: the {e.child.name} exited unexpectedly (exit code {rc}); stopping the rest.",
                   err=True)
        if tail := _tail(e.child.log):
            typer.echo(f"last lines of {e.child.log}:\n{tail}", err=True)
        code = 1
    except (TimeoutError, devserver.SearchAttributeMismatch) as e:
        typer.echo(f"signbridge: {e}; stopping.", err=True)
        code = 1
    finally:
        # Signals during shutdown must not interrupt it half-way; the timeout still bounds it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sup.stop_all()
    if code == 0:
        typer.echo("stopped.")
    raise typer.Exit(code)


@app.command()
def worker() -> None:
    """Run the Temporal worker in this process (the stack's Temporal must already be up)."""
    import worker as worker_module

    worker_module.main()


@app.command()
def api(
    host: Annotated[str, typer.Option(help="bind address")] = API_HOST,
    port: Annotated[int, typer.Option(help="port")] = API_PORT,
    workers: Annotated[int | None, typer.Option(
        min=1, help="API processes on the port [default: SIGNBRIDGE_API_PROCESSES, i.e. one per core]")] = None,
    access_log: Annotated[bool, typer.Option(help="log every request (tokens and signatures redacted)")] = False,
    forwarded_allow_ips: Annotated[str | None, typer.Option(
        help="proxies whose X-Forwarded-* headers are trusted [default: $FORWARDED_ALLOW_IPS or 127.0.0.1]")] = None,
    log_config: Annotated[Path | None, typer.Option(
        help="a logging config file (JSON/YAML/INI) instead of SignBridge's own; it must keep the "
             "RedactSecrets filter")] = None,
) -> None:
    """Run the HTTP API with uvicorn (uvloop and httptools when installed, as they are by default).

    Several processes share the port (uvicorn's workers); what must happen once happens here,
    before they start (`api_startup.prepare`: the development schema, the shared metrics folder).
    """
    import uvicorn

    from signbridge.cli import api_startup
    from signbridge.core.observability import configure_logging

    settings = get_settings()
    settings.check_production()  # one line and exit 1, before uvicorn prints a traceback for it
    processes = workers or settings.api_processes
    if log_config is None:
        configure_logging()  # with the redaction filter: the access log never shows a token or a signature
    api_startup.prepare(settings, processes, access_log=access_log, own_logging=log_config is None)
    uvicorn.run(api_startup.FACTORY if log_config is None else "api.main:create_app", factory=True, host=host,
                port=port, log_config=str(log_config) if log_config else None, proxy_headers=True,
                forwarded_allow_ips=forwarded_allow_ips, workers=processes,
                timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS)


@app.command(name="chat-listener")
def chat_listener(
    platform: Annotated[list[str], typer.Option(
        help="feishu and/or dingtalk (repeatable); default: every configured one")] = [],  # noqa: B006 (typer)
) -> None:
    """Receive Feishu/DingTalk events over their long connections instead of HTTP callbacks.

    For deployments without a public URL: every event is stored in the database before it is
    acknowledged, then handled exactly like the HTTP callback would handle it.
    """
    from signbridge.cli import chat_listener as listener_run
    from signbridge.core.observability import configure_logging

    configure_logging()
    settings = get_settings()
    settings.check_production()
    platforms = platform or [p for p in listener_run.PLATFORMS if listener_run.configured(p, settings)]
    unknown = sorted(set(platforms) - set(listener_run.PLATFORMS))
    if unknown or not platforms:
        typer.echo(f"unknown platform {unknown[0]!r}" if unknown else
                   "no long-connection platform is configured (SIGNBRIDGE_FEISHU_APP_ID/APP_SECRET, "
                   "SIGNBRIDGE_DINGTALK_APP_KEY/APP_SECRET)", err=True)
        raise typer.Exit(2)
    try:
        asyncio.run(listener_run.main(settings, platforms))
    except ValueError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from e
    except RuntimeError as e:  # a listener gave up (wrong credentials): its own message says why
        typer.echo(f"{e}: {e.__cause__}" if e.__cause__ else str(e), err=True)
        raise typer.Exit(1) from e


@app.command(name="devserver")
def devserver_cmd(
    ui_port: Annotated[int | None, typer.Option(help="Temporal Web UI port [default: Temporal's port + 1000]")] = None,
) -> None:
    """Run only the Temporal dev server (persistent, with SignBridge's search attributes) in the foreground."""
    settings = get_settings()
    private_dir(settings.data_dir)
    host, port = split_address(settings.temporal_address)
    argv = devserver.devserver_argv(settings.data_dir, ip=host, port=port, ui_port=ui_port or port + UI_PORT_OFFSET,
                                    namespace=settings.temporal_namespace)
    proc = subprocess.Popen(argv)  # noqa: S603 (argv built here)
    # Ctrl-C reaches the server through the terminal's process group; SIGTERM only reaches us.
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        asyncio.run(_prepare(settings))
        raise typer.Exit(proc.wait())
    except KeyboardInterrupt:
        raise typer.Exit(_wait_or_kill(proc)) from None
    except (TimeoutError, devserver.SearchAttributeMismatch) as e:
        typer.echo(f"signbridge: {e}", err=True)
        proc.terminate()
        _wait_or_kill(proc)
        raise typer.Exit(1) from None


async def _prepare(settings: Settings) -> None:
    client = await devserver.wait_for_temporal(settings.temporal_address, 60, settings.temporal_namespace)
    await devserver.ensure_search_attributes(client, settings.temporal_namespace)


@app.command(name="setup-temporal")
def setup_temporal(
    timeout: Annotated[float, typer.Option(help="seconds to wait for Temporal")] = 120.0,
) -> None:
    """Wait for Temporal and register SignBridge's search attributes (idempotent; for deployments)."""
    settings = get_settings()

    async def setup() -> list[str]:
        client = await devserver.wait_for_temporal(settings.temporal_address, timeout, settings.temporal_namespace)
        return await devserver.ensure_search_attributes(client, settings.temporal_namespace)

    try:
        added = asyncio.run(setup())
    except (TimeoutError, devserver.SearchAttributeMismatch) as e:
        typer.echo(f"signbridge: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"search attributes ready on {settings.temporal_address} (added: {', '.join(added) or 'none'})")


def _wait_or_kill(proc: subprocess.Popen[bytes]) -> int:
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return 0


@app.command()
def demo(
    api_url: Annotated[str, typer.Option(help="where SignBridge's API (and its playground) runs")] =
        f"http://{API_HOST}:{API_PORT}",
    out_dir: Annotated[Path, typer.Option(help="where to save the signed PDF")] = Path("."),
    timeout: Annotated[float, typer.Option(help="seconds to wait for each step")] = 120.0,
) -> None:
    """Play the playground chat against a running development stack: start a signing, sign as each person, verify."""
    from signbridge.cli.demo import run_demo

    raise typer.Exit(run_demo(api_url=api_url, out_dir=out_dir, timeout=timeout))


if __name__ == "__main__":
    app()
