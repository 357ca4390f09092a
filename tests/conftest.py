"""Shared fixtures: real Temporal servers from the pip-installed binaries (tests/temporal_servers.py),
real databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from signbridge.core.settings import Settings
from tests.sim.servers import free_port
from tests.temporal_servers import dev_server, time_skipping_server

# Tests are development: tables are created at start-up and the test secrets are not refused.
# SIGNBRIDGE_ENVIRONMENT defaults to production, so say so for everything a test builds or starts
# (`Settings()`, the CLI, child processes that inherit this environment).
os.environ.setdefault("SIGNBRIDGE_ENVIRONMENT", "development")
# A developer's `.env` must not change what the tests run with (tests of `.env` name their own).
os.environ.setdefault("SIGNBRIDGE_ENV_FILE", "")


@pytest.fixture(scope="session")
def dev_ui_port() -> int:
    """The port of the dev server's Web UI, which the browser tests open (tests/test_browser.py)."""
    return free_port()


@pytest.fixture(scope="session")
async def dev_env(dev_ui_port: int) -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server (in memory) for end-to-end tests, with its Web UI."""
    async with dev_server(ui_port=dev_ui_port) as env:
        yield env


@pytest.fixture
async def ts_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server, one per test: timers of days pass in milliseconds."""
    async with time_skipping_server() as env:
        yield env


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
