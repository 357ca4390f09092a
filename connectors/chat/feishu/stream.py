"""Feishu/Lark long connection: events and card buttons over the WebSocket the app opens.

For deployments without a public URL (Feishu developer console → the app → 事件与回调 / Events &
Callbacks: subscription mode "使用长连接接收事件 / Receive events through persistent connection",
and the same for callbacks). The `lark-oapi` SDK (`lark_oapi.ws.Client`) does everything on the
wire — `POST {api_base}/callback/ws/endpoint` with the app id/secret, the pbbp2 protobuf frames,
pings, reassembly and reconnects; this module only

* runs the SDK's blocking `start()` in a dedicated thread with its own event loop (the SDK binds
  its module-level `loop` at import, so that name is pointed at the thread's loop), and stops it
  when `stop` is set by cancelling that loop's tasks and closing the socket;
* bridges every event to our asyncio loop with `asyncio.run_coroutine_threadsafe` and waits
  there: the event is committed to the durable `Inbox` (keyed by `header.event_id`) BEFORE the
  SDK's handler returns, and only then the SDK writes the ack frame. A failed commit raises, so
  the SDK acks with code 500 and Feishu delivers the event again;
* turns the SDK's own verdict "do not retry" (`ClientException`: the app id/secret refused,
  the app not allowed a long connection) into one clear `CredentialsRejected` instead of a
  silent reconnect loop. The endpoint answering HTTP 400/401/403 counts as such a refusal too
  (the SDK would retry that forever; what Feishu answers there is unconfirmed).

Message events (`im.message.receive_v1`) are handled after the ack, in arrival order per chat
(a file, then the command that uses it); approval events (`approval_instance`, a v1 event keyed
by its `uuid`, and its schema-2.0 form) the same way. Card buttons (`card.action.trigger`, which Feishu
delivers over the long connection as an event frame; the SDK routes it through
`register_p2_card_action_trigger`) are handled inline, because the ack carries the toast.
A redelivered event (already stored) is acked and not handled again; whatever failed
transiently stays stored for the inbox's `drain`. Handling is the HTTP callback's own parsing
(`FeishuInbound.parse`) and the intake, wired by `signbridge chat-listener`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Coroutine
from typing import Any

import lark_oapi.ws.client as ws_client
from lark_oapi.core import log as lark_log
from lark_oapi.core.enum import LogLevel
from lark_oapi.core.json import JSON
from lark_oapi.event.callback.model.p2_card_action_trigger import P2CardActionTrigger, P2CardActionTriggerResponse
from lark_oapi.event.custom import CustomizedEvent
from lark_oapi.event.dispatcher_handler import EventDispatcherHandler
from lark_oapi.ws.exception import ClientException, ServerException, ServerUnreachableException

from connectors.chat.callback import Received
from connectors.chat.feishu.client import PLATFORM, FeishuConfig
from connectors.chat.feishu.inbound import (
    APPROVAL_EVENT,
    APPROVAL_EVENT_V2,
    MESSAGE_EVENT,
    UNKNOWN_ACTION,
    FeishuInbound,
    toast,
)
from connectors.chat.inbox import Inbox, InOrder
from signbridge.core.settings import Settings

log = logging.getLogger(__name__)

STORE_TIMEOUT = 10.0  # s the SDK thread waits for the commit; past it the SDK acks 500 (Feishu redelivers)
CARD_TIMEOUT = 10.0  # s it waits for a card's answer (the handling itself gives up after ~2.8 s)
STOP_TIMEOUT = 15.0  # s to wait for the SDK thread to wind down on stop
STOP_GRACE = 10.0  # on stop: how long messages being handled may finish (the rest stay stored)
# The endpoint's HTTP statuses that mean "these credentials are refused" rather than "try later".
REJECTED_STATUSES = (400, 401, 403)


class CredentialsRejected(RuntimeError):
    """Feishu refused the long connection for good: the configuration must change, retrying cannot help."""


class _SdkClient(ws_client.Client):  # type: ignore[misc]  # the SDK is untyped
    """The SDK's client with two refusals made final instead of retried forever."""

    fatal: BaseException | None = None
    connections = 0

    async def _connect(self) -> None:
        await super()._connect()
        if self._conn is not None:  # the SDK logs the URL, one-time ticket included, at INFO: we don't
            self.connections += 1
            log.info("Feishu long connection up (conn_id %s, connection %d)", self._conn_id, self.connections)

    def _get_conn_url(self) -> str:
        try:
            url: str = super()._get_conn_url()
        except ServerException as e:  # HTTP status != 200: the SDK would retry a refused secret forever
            if e.code in REJECTED_STATUSES:
                raise ClientException(e.code, e.args[0] if e.args else str(e)) from e
            raise
        return url

    async def _reconnect(self) -> None:
        try:
            await super()._reconnect()
        except (ClientException, ServerUnreachableException) as e:
            # Raised inside the SDK's receive task after a lost connection: nobody would see it and
            # the client would sit unconnected. Record it and end the loop (start() then returns).
            self.fatal = e
            for task in asyncio.all_tasks():
                task.cancel()
            raise


def _as_dict(event: Any) -> dict[str, Any]:
    """The SDK's parsed event back into the callback's JSON shape (`schema`, `header`, `event`)."""
    data = json.loads(JSON.marshal(event) or "{}")
    return data if isinstance(data, dict) else {}


def event_id(payload: dict[str, Any]) -> str:
    """Schema 2.0 events carry `header.event_id`; v1 events (`approval_instance`) a top-level `uuid`."""
    header = payload.get("header")
    found = str(header.get("event_id") or "") if isinstance(header, dict) else ""
    return found or str(payload.get("uuid") or "")


def event_type(payload: dict[str, Any]) -> str:
    header = payload.get("header")
    if isinstance(header, dict):
        return str(header.get("event_type") or "")
    event = payload.get("event")
    return str(event.get("type") or "") if isinstance(event, dict) else ""


def _chat_of(payload: dict[str, Any]) -> str:
    event = payload.get("event")
    message = event.get("message") if isinstance(event, dict) else None
    return str(message.get("chat_id") or "") if isinstance(message, dict) else ""


class _SdkThread:
    """One `lark_oapi.ws.Client` running in its own thread and event loop until `stop()`."""

    def __init__(self, config: FeishuConfig, listener: FeishuListener, main_loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.listener = listener
        self.main_loop = main_loop
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: _SdkClient | None = None
        self.error: BaseException | None = None
        self.finished = asyncio.Event()  # set (on the main loop) when the thread has ended
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name="feishu-ws", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        loop = self.loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._cancel_all)
            except RuntimeError:  # the loop is already closed: the thread is ending anyway
                pass

    def _cancel_all(self) -> None:
        if self.client is not None:
            self.client._auto_reconnect = False
        for task in asyncio.all_tasks():
            task.cancel()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        ws_client.loop = loop  # the SDK runs everything on its module-level loop
        self.loop = loop
        try:
            if self._stopping:
                return
            handler = (EventDispatcherHandler.builder("", "")
                       .register_p2_customized_event(MESSAGE_EVENT, self._on_message)
                       .register_p1_customized_event(APPROVAL_EVENT, self._on_message)
                       .register_p2_customized_event(APPROVAL_EVENT_V2, self._on_message)
                       .register_p2_card_action_trigger(self._on_card)
                       .build())
            # The SDK's logger prints its own lines to stdout; through ours they follow our format (JSON).
            logging.getLogger("Lark").removeHandler(lark_log.handler)
            # Built here: the SDK's client schedules a cache task on the current thread's loop.
            self.client = _SdkClient(self.config.app_id, self.config.app_secret.get_secret_value(),
                                     log_level=LogLevel.WARNING, event_handler=handler, domain=self.config.base)
            self.client.start()  # returns only through cancellation or a refusal
        except asyncio.CancelledError:
            if self.client is not None and self.client.fatal is not None:
                self.error = self.client.fatal
        except BaseException as e:  # reported by run() on the main loop
            self.error = e
        finally:
            try:
                loop.run_until_complete(self._close())
            except BaseException:  # best effort on the way out
                log.debug("closing the Feishu long connection failed", exc_info=True)
            loop.close()
            try:
                self.main_loop.call_soon_threadsafe(self.finished.set)
            except RuntimeError:  # the main loop is gone
                pass

    async def _close(self) -> None:
        client = self.client
        if client is not None:
            client._auto_reconnect = False
            conn = client._conn
            if conn is not None:
                try:
                    await asyncio.wait_for(conn.close(), 5)
                except Exception as e:  # the socket may already be gone
                    log.debug("closing the Feishu socket: %s", e)
                client._conn = None
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    # ---- called by the SDK, in its thread; they block it until our loop answered -----------------

    def _on_message(self, event: CustomizedEvent) -> None:
        self._call(self.listener.received(_as_dict(event)), STORE_TIMEOUT)

    def _on_card(self, event: P2CardActionTrigger) -> P2CardActionTriggerResponse:
        answer = self._call(self.listener.card(_as_dict(event)), CARD_TIMEOUT)
        return P2CardActionTriggerResponse(answer if isinstance(answer, dict) else {})

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.main_loop).result(timeout)


class FeishuListener:
    """`Listener` for the Feishu/Lark long connection."""

    platform = PLATFORM

    def __init__(self, config: FeishuConfig) -> None:
        self.config = config
        self.sdk: _SdkThread | None = None
        self._inbox: Inbox | None = None
        self._in_order: InOrder | None = None

    async def run(self, inbox: Inbox, stop: asyncio.Event) -> None:
        self._inbox = inbox
        in_order = self._in_order = InOrder(inbox, PLATFORM)
        sdk = self.sdk = _SdkThread(self.config, self, asyncio.get_running_loop())
        sdk.start()
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(sdk.finished.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            sdk.stop()
            try:
                await asyncio.wait_for(sdk.finished.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("the Feishu SDK thread did not end within %.0f s; leaving it (daemon)", STOP_TIMEOUT)
            await in_order.settle(STOP_GRACE)
        if isinstance(sdk.error, ClientException):
            raise CredentialsRejected(
                f"Feishu refused the long connection for app id {self.config.app_id!r} ({sdk.error}); check "
                f"SIGNBRIDGE_FEISHU_APP_ID and SIGNBRIDGE_FEISHU_APP_SECRET, SIGNBRIDGE_FEISHU_API_BASE "
                f"({self.config.base}), that the app is published and that its events are received through "
                f"the long connection") from sdk.error
        if sdk.error is not None:
            raise RuntimeError(f"the Feishu long connection ended: {type(sdk.error).__name__}: {sdk.error}") \
                from sdk.error
        if not stop.is_set():
            raise RuntimeError("the Feishu long connection ended unexpectedly")

    # ---- on our loop, one call per event (the SDK thread waits for the answer) ------------------------

    async def received(self, payload: dict[str, Any]) -> None:
        """A message event: stored (committed) before this returns, handled afterwards."""
        inbox = self._require_inbox()
        key = event_id(payload)
        if not key:
            log.warning("Feishu %s event without header.event_id; acknowledged and ignored", event_type(payload))
            return
        if not inbox.store(PLATFORM, key, payload):  # committed before the SDK sends the ack
            log.info("Feishu event %s redelivered; already stored", key)
            return
        assert self._in_order is not None
        self._in_order.spawn(_chat_of(payload), key)

    async def card(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A card button: stored, then handled at once; the answer (a toast) rides on the ack."""
        inbox = self._require_inbox()
        key = event_id(payload)
        if not key:
            return UNKNOWN_ACTION
        if not inbox.store(PLATFORM, key, payload):
            log.info("Feishu card action %s redelivered; already stored", key)
            return {}
        result = await inbox.handle(PLATFORM, key)
        if isinstance(result, dict):
            return result
        if inbox.status(PLATFORM, key) == "failed":
            return UNKNOWN_ACTION
        # Transient failure: the row stays stored and the next drain applies it (update id = event id).
        return toast("warning", "已收到操作，稍后处理", "Received; SignBridge will apply it shortly")

    def _require_inbox(self) -> Inbox:
        if self._inbox is None:
            raise RuntimeError("the Feishu listener is not running")
        return self._inbox


async def parse(inbound: FeishuInbound, payload: dict[str, Any]) -> Received:
    """A stored long-connection event (the callback's JSON, authenticated by the connection)."""
    return inbound.parse(payload)


def build(settings: Settings) -> FeishuListener | None:
    config = FeishuConfig()
    return FeishuListener(config) if config.enabled else None


__all__ = ["CredentialsRejected", "FeishuListener", "build", "parse"]
