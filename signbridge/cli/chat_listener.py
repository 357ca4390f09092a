"""`signbridge chat-listener`: run every configured long connection until SIGINT/SIGTERM.

Each platform with a long connection has a `stream.py` next to its `inbound.py`: the stream
stores every event in the durable inbox before acknowledging it; the handler wired here parses a
stored event with the platform's inbound (the same code as the HTTP callback), hands it to the
intake and keeps the event for the inbox's drain when Temporal is `Busy`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from temporalio.client import Client

from connectors.chat.callback import CallbackRejected, Inbound, Received, Reply
from connectors.chat.inbox import Handler, Inbox, Listener, PermanentFailure, drain_forever
from connectors.chat.registry import build_chats, build_inbounds
from signbridge.core.chat import Busy
from signbridge.core.settings import Settings
from signbridge.intake import Intake

log = logging.getLogger(__name__)
PLATFORMS = ("feishu", "dingtalk")  # the platforms whose package has a `stream.py`

Parse = Callable[[Any, dict[str, Any]], Awaitable[Received]]


class TemporalBusy(RuntimeError):
    """Temporal did not take the event in time: the inbox keeps it for the next drain."""


def _stream(platform: str) -> ModuleType:
    return importlib.import_module(f"connectors.chat.{platform}.stream")


def configured(platform: str, settings: Settings) -> bool:
    return _stream(platform).build(settings) is not None


def handler_for(inbound: Inbound, parse: Parse, intake: Intake) -> Handler:
    """One stored event → the intake; the answer the stream sends back (a Feishu card's toast)."""

    async def handle(payload: dict[str, Any]) -> Any:
        try:
            received = await parse(inbound, payload)
        except CallbackRejected as e:
            raise PermanentFailure(e.message) from e
        if isinstance(received, Reply):
            return received.body
        outcome = await intake.handle(received, inbound.rules)
        if isinstance(outcome, Busy):
            raise TemporalBusy(f"{inbound.platform}: Temporal did not answer in time; kept for the next drain")
        return inbound.reply(received, outcome).body

    return handle


def build(settings: Settings, engine: Engine, client: Client, platforms: list[str],
          http: httpx.AsyncClient) -> tuple[list[Listener], dict[str, Handler]]:
    """The listeners asked for and configured; asking for an unconfigured one is an error."""
    inbounds = build_inbounds(settings, engine, build_chats(settings, http))
    intake = Intake(client, settings, engine)
    listeners: list[Listener] = []
    handlers: dict[str, Handler] = {}
    for platform in platforms:
        stream = _stream(platform)
        listener, inbound = stream.build(settings), inbounds.get(platform)
        if listener is None or inbound is None:
            raise ValueError(f"{platform} is not configured: set its SIGNBRIDGE_{platform.upper()}_* app credentials")
        listeners.append(listener)
        handlers[platform] = handler_for(inbound, stream.parse, intake)
    return listeners, handlers


async def serve(listeners: list[Listener], inbox: Inbox, stop: asyncio.Event) -> None:
    """Run the listeners and the drain loop; the first listener to crash stops everything."""
    tasks = [asyncio.create_task(listener.run(inbox, stop), name=listener.platform) for listener in listeners]
    tasks.append(asyncio.create_task(drain_forever(inbox, stop), name="drain"))
    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"{task.get_name()} listener failed") from task.exception()


async def main(settings: Settings, platforms: list[str]) -> None:
    from signbridge.core.temporal import connect
    from store.db import create_all, get_engine

    engine = get_engine(settings.sqlalchemy_url)
    if settings.environment == "development":
        create_all(engine)
    client = await connect(settings)
    async with httpx.AsyncClient(timeout=10) as http:
        listeners, handlers = build(settings, engine, client, platforms, http)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("chat listener running for %s", ", ".join(platforms))
        await serve(listeners, Inbox(engine, handlers), stop)
