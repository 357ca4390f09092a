"""`signbridge chat-listener`: run every configured long connection until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from sqlalchemy.engine import Engine
from temporalio.client import Client

from connectors.chat.dingtalk import stream as dingtalk
from connectors.chat.feishu import stream as feishu
from connectors.chat.inbox import Handler, Inbox, Listener, drain_forever
from signbridge.core.settings import Settings

log = logging.getLogger(__name__)
PLATFORMS = ("feishu", "dingtalk")


def configured(platform: str) -> bool:
    from connectors.chat.dingtalk.client import DingTalkConfig
    from connectors.chat.feishu.client import FeishuConfig

    return {"feishu": FeishuConfig, "dingtalk": DingTalkConfig}[platform]().enabled


def build(settings: Settings, engine: Engine, client: Client, platforms: list[str]) -> tuple[
        list[Listener], dict[str, Handler]]:
    """The listeners asked for and configured; asking for an unconfigured one is an error."""
    listeners: list[Listener] = []
    handlers: dict[str, Handler] = {}
    for platform in platforms:
        factory = {"feishu": feishu.build, "dingtalk": dingtalk.build}[platform]
        built = factory(settings, engine, client)
        if built is None:
            raise ValueError(f"{platform} is not configured: set its SIGNBRIDGE_{platform.upper()}_* app credentials")
        listener, handler = built
        listeners.append(listener)
        handlers[listener.platform] = handler
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
    listeners, handlers = build(settings, engine, client, platforms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("chat listener running for %s", ", ".join(platforms))
    await serve(listeners, Inbox(engine, handlers), stop)
