"""Which ports `signbridge run` binds, derived from one number, and the check that they are free.

A developer should need one setting to run a second stack beside the first (or beside whatever
already holds 8000): `make run PORT=8100` (`signbridge run --api-port 8100`). Every other port the
stack binds moves by the same offset from its default unless it is set: Temporal's frontend
(`SIGNBRIDGE_TEMPORAL_ADDRESS`, 7233 → 7333), its Web UI (`--ui-port`, Temporal's port + 1000),
the worker's metrics (`SIGNBRIDGE_WORKER_METRICS_ADDRESS`, 9464 → 9564), and the public URL that
signing links are built from (`SIGNBRIDGE_PUBLIC_URL`). The Temporal dev server's own HTTP and
metrics ports are picked free by the server itself.

Each port is checked before anything starts; a taken one is one line naming the setting that
moves it, instead of a child dying with a traceback half-way through the start.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEFAULT_API_PORT = 8000
DEFAULT_TEMPORAL_PORT = 7233
UI_PORT_OFFSET = 1000  # what `temporal server start-dev` does itself: the UI at the frontend port + 1000
DEFAULT_METRICS_PORT = 9464
LOOPBACK = "127.0.0.1"
PLAYGROUND_OUTBOUND = "/playground/outbound"

TEMPORAL_ADDRESS = "SIGNBRIDGE_TEMPORAL_ADDRESS"
METRICS_ADDRESS = "SIGNBRIDGE_WORKER_METRICS_ADDRESS"
PUBLIC_URL = "SIGNBRIDGE_PUBLIC_URL"
OUTBOUND_URL = "SIGNBRIDGE_WEBHOOK_OUTBOUND_URL"


class PortProblem(Exception):
    """A port the stack needs is taken or impossible; the message is one line naming the setting."""


@dataclass(frozen=True)
class Bound:
    """One address the stack listens on, and how a person moves it."""

    what: str
    host: str
    port: int
    setting: str

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class StackPorts:
    api_port: int
    temporal_host: str
    temporal_port: int
    ui_port: int
    metrics_address: str  # empty: the worker serves no metrics
    public_url: str
    env: dict[str, str]  # what the children must see (derived values, exported)

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def temporal_address(self) -> str:
        return f"{self.temporal_host}:{self.temporal_port}"

    def bound(self) -> list[Bound]:
        moved_by = "PORT=<port> (make run) or --api-port moves it with the others"
        ports = [
            Bound("API", LOOPBACK, self.api_port, "make run PORT=<port> / signbridge run --api-port <port>"),
            Bound("Temporal", self.temporal_host, self.temporal_port, f"{TEMPORAL_ADDRESS}, or {moved_by}"),
            Bound("Temporal UI", self.temporal_host, self.ui_port, f"--ui-port, or {moved_by}"),
        ]
        if self.metrics_address:
            host, port = split_address(self.metrics_address)
            ports.append(Bound("worker metrics", host, port,
                               f"{METRICS_ADDRESS} (empty turns them off), or {moved_by}"))
        return ports


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or LOOPBACK, int(port)


def plan(api_port: int, ui_port: int | None, env: Mapping[str, str]) -> StackPorts:
    """The stack's ports for `--api-port api_port`: what is set in `env` stays, the rest moves
    with the API port. Raises `PortProblem` for a derived port outside 1–65535."""
    offset = api_port - DEFAULT_API_PORT
    exported: dict[str, str] = {}

    def derived(name: str, default: Callable[[], str]) -> str:
        if name in env:
            return env[name]
        exported[name] = default()
        return exported[name]

    temporal = derived(TEMPORAL_ADDRESS,
                       lambda: f"{LOOPBACK}:{_port(DEFAULT_TEMPORAL_PORT + offset, TEMPORAL_ADDRESS)}")
    try:
        temporal_host, temporal_port = split_address(temporal)
    except ValueError:
        raise PortProblem(f"{TEMPORAL_ADDRESS}={temporal!r} is not host:port") from None
    metrics = derived(METRICS_ADDRESS, lambda: f"{LOOPBACK}:{_port(DEFAULT_METRICS_PORT + offset, METRICS_ADDRESS)}")
    public_url = derived(PUBLIC_URL, lambda: f"http://{LOOPBACK}:{api_port}")
    # Without a company chat configured, SignBridge's chat is the playground this API serves.
    derived(OUTBOUND_URL, lambda: f"http://{LOOPBACK}:{api_port}{PLAYGROUND_OUTBOUND}")
    ui = ui_port if ui_port is not None else _port(temporal_port + UI_PORT_OFFSET, "--ui-port")
    return StackPorts(api_port=_port(api_port, "--api-port"), temporal_host=temporal_host,
                      temporal_port=temporal_port, ui_port=ui, metrics_address=metrics,
                      public_url=public_url.rstrip("/"), env=exported)


def _port(port: int, setting: str) -> int:
    if not 0 < port < 65536:
        raise PortProblem(f"port {port} (derived from the API port) does not exist; set {setting}")
    return port


def busy(host: str, port: int) -> bool:
    """Something accepts connections there already (or the address cannot be bound by us)."""
    with socket.socket() as s:
        s.settimeout(0.5)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a port in TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def check_free(ports: list[Bound]) -> None:
    """Raise `PortProblem` for the first port that is taken, naming the setting that moves it."""
    for p in ports:
        if busy(p.host, p.port):
            raise PortProblem(f"{p.address} for the {p.what} is already in use (another stack?); "
                              f"to move it: {p.setting}")
