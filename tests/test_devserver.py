"""The dev server as `signbridge run` starts it: persistent SQLite, search attributes, restarts."""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from signbridge.cli.devserver import (
    SearchAttributeMismatch,
    devserver_argv,
    ensure_search_attributes,
    wait_for_temporal,
)
from signbridge.core.temporal import SEARCH_ATTRIBUTES


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _attributes(client: Client) -> dict[str, str]:
    resp = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
    return {k: IndexedValueType.Name(v) for k, v in resp.custom_attributes.items()}


def _expected(attrs: dict[str, str]) -> dict[str, str]:
    return {k: "INDEXED_VALUE_TYPE_" + {"KeywordList": "KEYWORD_LIST"}.get(v, v.upper()) for k, v in attrs.items()}


def test_argv_has_persistence_ports_and_every_search_attribute(tmp_path: Path) -> None:
    argv = devserver_argv(tmp_path, binary="temporal")
    assert argv[:3] == ["temporal", "server", "start-dev"]
    joined = " ".join(argv)
    assert f"--db-filename {tmp_path / 'temporal.db'}" in joined
    assert "--ip 127.0.0.1" in joined and "--port 7233" in joined and "--ui-port 8233" in joined
    assert "--namespace default" in joined
    assert "--dynamic-config-value frontend.enableUpdateWorkflowExecution=true" in joined
    for name, kind in SEARCH_ATTRIBUTES.items():
        assert f"--search-attribute {name}={kind}" in joined


async def test_restart_on_same_db_keeps_working_and_adds_new_attributes(tmp_path: Path) -> None:
    port, ui_port = _free_port(), _free_port()
    address = f"127.0.0.1:{port}"
    # An older release registered one attribute fewer.
    older = {k: v for k, v in SEARCH_ATTRIBUTES.items() if k != "SignDeadline"}

    with _server(devserver_argv(tmp_path, port=port, ui_port=ui_port, search_attributes=older)):
        client = await wait_for_temporal(address, timeout=30)
        assert (await _attributes(client)).items() >= _expected(older).items()

    # Same db file, every flag again (they already exist) plus a new one.
    with _server(devserver_argv(tmp_path, port=port, ui_port=ui_port)) as proc:
        client = await wait_for_temporal(address, timeout=30)
        assert proc.poll() is None, "dev server refused to restart on its own db file"
        await ensure_search_attributes(client)
        assert (await _attributes(client)).items() >= _expected(SEARCH_ATTRIBUTES).items()
        assert await ensure_search_attributes(client) == []
        with pytest.raises(SearchAttributeMismatch):
            await ensure_search_attributes(client, wanted={"SignStatus": "Int"})
