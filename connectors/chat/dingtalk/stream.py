"""DingTalk Stream mode: robot messages and card callbacks over the WebSocket the app opens.

For deployments without a public URL (DingTalk console: the robot's message receiving mode
"Stream 模式"). The `dingtalk-stream` SDK's `DingTalkStreamClient` parses the frames, answers
`SYSTEM` pings, closes on `disconnect` and builds the acks; this module only

* opens the connection at `config.api_base + /v1.0/gateway/connections/open` with httpx,
  awaited, so the event loop never blocks and a simulator can stand in for DingTalk (the SDK's
  own `open_connection` posts synchronously with `requests` to a fixed URL);
* runs the SDK's frame routing inside our loop and reconnects with a capped backoff until
  `stop` is set (the SDK's own `start()` loops forever, swallows cancellation and retries every
  10 s, even when DingTalk rejected the credentials — here that is one clear, fatal error);
* stores every callback in the durable `Inbox` BEFORE its ack goes out (keyed by the message's
  `msgId`, else the frame's `messageId`, so a redelivery is not handled twice).

Robot messages (`/v1.0/im/bot/messages/get`) are handled after the ack, in arrival order per
conversation (a file, then the command that uses it). Events (`EVENT` frames, subscribed as `*`)
are stored only when SignBridge acts on them — OA approvals (`bpms_instance_change`, keyed by the
event id) — and handled after the ack; the others are acked and dropped. Card callbacks
(`/v1.0/card/instances/callback`) are handled inline, since the ack carries the callback's
response. Handling is the HTTP callback's own parsing (`DingTalkInbound.from_stream`, `approval`)
and the intake, wired by `signbridge chat-listener`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import time
from typing import Any
from urllib.parse import quote_plus

import dingtalk_stream
import httpx
import websockets
from dingtalk_stream import AckMessage, CallbackMessage

from connectors.chat.callback import Received, invalid
from connectors.chat.dingtalk.client import PLATFORM, DingTalkConfig
from connectors.chat.dingtalk.inbound import APPROVAL_EVENT, DingTalkInbound
from connectors.chat.inbox import Inbox, InOrder
from signbridge.core.settings import Settings

log = logging.getLogger(__name__)

ROBOT_TOPIC: str = dingtalk_stream.ChatbotMessage.TOPIC  # /v1.0/im/bot/messages/get
CARD_TOPIC: str = dingtalk_stream.Card_Callback_Router_Topic  # /v1.0/card/instances/callback
EVENT_TOPIC = "event"  # how a stored event is told apart from the callback topics
EVENTS = (APPROVAL_EVENT,)  # the event types SignBridge acts on
OPEN_PATH = "/v1.0/gateway/connections/open"
RETRY_FIRST, RETRY_MAX = 1.0, 60.0  # reconnect backoff (s), doubled per failed attempt
STABLE_AFTER = 10.0  # a connection up this long resets the backoff
STOP_GRACE = 10.0  # on stop: how long robot messages being handled may finish (the rest stay stored)
# HTTP statuses / codes with which DingTalk refuses the app's clientId/clientSecret for good
# ("authFailed" is what the gateway answers today; the others are the OpenAPI's usual ones).
REJECTED_STATUSES = (400, 401, 403)
REJECTED_CODES = frozenset({"authFailed", "invalidClientIdOrSecret", "InvalidAuthentication", "Unauthorized",
                            "Forbidden.AccessDenied.AccessTokenPermissionDenied"})


class _QuietPings(logging.Filter):
    """The SDK logs every `SYSTEM` ping (answered fine) as an "unknown message topic" warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (str(record.msg).startswith("unknown message topic") and isinstance(record.args, tuple)
                    and record.args[:1] == ("ping",))


SDK_LOG = logging.getLogger("connectors.chat.dingtalk.stream.sdk")
SDK_LOG.addFilter(_QuietPings())


class CredentialsRejected(RuntimeError):
    """DingTalk refused the app key/secret: retrying cannot help, the configuration must change."""


class GatewayUnavailable(ConnectionError):
    """The connection could not be opened this time (network, 5xx, a malformed answer): retried."""


class StreamClient(dingtalk_stream.DingTalkStreamClient):  # the SDK is untyped
    """The SDK's client, opening its connection at `config.api_base` and running until `stop`."""

    def __init__(self, config: DingTalkConfig, timeout: float | None = None) -> None:
        super().__init__(dingtalk_stream.Credential(config.app_key, config.app_secret.get_secret_value()),
                         logger=SDK_LOG)
        self.config = config
        self.open_url = config.api_base.rstrip("/") + OPEN_PATH
        self.timeout = timeout or config.timeout_seconds
        self.connections = 0  # WebSocket connections established so far

    async def open_connection(self) -> dict[str, Any]:  # the SDK's is synchronous
        """`{endpoint, ticket}` for the next WebSocket; the same body the SDK would send."""
        subscriptions = [{"type": "EVENT", "topic": "*"}] if self._is_event_required else []
        subscriptions += [{"type": "CALLBACK", "topic": topic} for topic in self.callback_handler_map]
        body = {"clientId": self.credential.client_id, "clientSecret": self.credential.client_secret,
                "subscriptions": subscriptions, "ua": f"dingtalk-sdk-python/v{_sdk_version()}-union",
                "localIp": await asyncio.to_thread(self.get_host_ip)}
        headers = {"Accept": "application/json",
                   "User-Agent": f"SignBridge DingTalkStream SDK/{_sdk_version()} Python/{platform.python_version()}"}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as http:
                resp = await http.post(self.open_url, json=body, headers=headers)
        except httpx.HTTPError as e:
            raise GatewayUnavailable(f"{self.open_url}: {type(e).__name__} {e}") from e
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        code = str(answer.get("code") or "") if isinstance(answer, dict) else ""
        if resp.status_code in REJECTED_STATUSES and (code in REJECTED_CODES or resp.status_code == 401):
            message = answer.get("message") if isinstance(answer, dict) else resp.text[:200]
            raise CredentialsRejected(
                f"DingTalk refused the Stream-mode connection for app key {self.credential.client_id!r} "
                f"(HTTP {resp.status_code} {code or '-'}: {message}); check SIGNBRIDGE_DINGTALK_APP_KEY and "
                f"SIGNBRIDGE_DINGTALK_APP_SECRET (the app's Client ID and Client Secret)")
        if resp.status_code != 200 or not isinstance(answer, dict) or not answer.get("endpoint") \
                or not answer.get("ticket"):
            raise GatewayUnavailable(f"{self.open_url}: HTTP {resp.status_code} {resp.text[:200]}")
        return answer

    async def start(self, stop: asyncio.Event | None = None) -> None:
        """Connect and route frames (the SDK's `route_message`) until `stop` is set; reconnect on loss.

        Raises `CredentialsRejected` at once instead of retrying a configuration error forever.
        """
        stop = stop or asyncio.Event()
        self.pre_start()
        delay = RETRY_FIRST
        while not stop.is_set():
            up_since: float | None = None
            try:
                connection = await self.open_connection()
                uri = f"{connection['endpoint']}?ticket={quote_plus(str(connection['ticket']))}"
                async with websockets.connect(uri, open_timeout=self.timeout) as websocket:
                    self.websocket, up_since = websocket, time.monotonic()
                    self.connections += 1
                    log.info("DingTalk stream connected (%s)", connection["endpoint"])
                    await self._pump(websocket, stop)
                if not stop.is_set():
                    log.warning("DingTalk stream closed by the server; reconnecting")
            except CredentialsRejected:
                raise
            except (GatewayUnavailable, OSError, TimeoutError, websockets.exceptions.WebSocketException) as e:
                log.warning("DingTalk stream connection failed (%s: %s); retrying in %.1f s",
                            type(e).__name__, e, delay)
            except Exception:  # a bug must not end the listener: what was stored is drained anyway
                log.exception("DingTalk stream failed unexpectedly; reconnecting in %.1f s", delay)
            if up_since is not None and time.monotonic() - up_since >= STABLE_AFTER:
                delay = RETRY_FIRST
            if stop.is_set():
                break
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, RETRY_MAX)

    async def _pump(self, websocket: Any, stop: asyncio.Event) -> None:
        """Hand every frame to the SDK (one task each, as its `start()` does) until closed or stopped."""
        in_flight: set[asyncio.Task[Any]] = set()

        async def close_on_stop() -> None:
            await stop.wait()
            await websocket.close()

        closer = asyncio.create_task(close_on_stop())
        keepalive = asyncio.create_task(self.keepalive(websocket))
        try:
            async for raw in websocket:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    log.warning("DingTalk stream: a frame that is not JSON was ignored (%d bytes)", len(raw))
                    continue
                task = asyncio.create_task(self.background_task(frame))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        finally:
            for helper in (closer, keepalive):
                helper.cancel()
            if in_flight:  # frames being stored/acked: let them end (an ack on a closed socket is just lost)
                await asyncio.wait(in_flight, timeout=STOP_GRACE)


def _sdk_version() -> str:
    from dingtalk_stream.version import VERSION_STRING

    return str(VERSION_STRING)


class _Events(dingtalk_stream.EventHandler):  # the SDK is untyped
    """Every `EVENT` frame: the SDK builds the ack from what `on_event` returns (code, message)."""

    def __init__(self, on_event: Any) -> None:
        super().__init__()
        self.on_event = on_event

    async def process(self, event: dingtalk_stream.EventMessage) -> tuple[int, Any]:
        result: tuple[int, Any] = await self.on_event(event)
        return result


class _Topic(dingtalk_stream.CallbackHandler):  # the SDK is untyped
    """One callback topic: the SDK builds the ack from what `on_message` returns (code, response)."""

    def __init__(self, on_message: Any) -> None:
        super().__init__()
        self.on_message = on_message

    async def process(self, message: CallbackMessage) -> tuple[int, Any]:
        result: tuple[int, Any] = await self.on_message(message)
        return result


def event_id(message: CallbackMessage) -> str:
    """The inbox key: the message's own msgId (stable across redeliveries), else the frame's messageId."""
    data = message.data if isinstance(message.data, dict) else {}
    return str(data.get("msgId") or message.headers.message_id or "")


class DingTalkListener:
    """`Listener` for DingTalk Stream mode."""

    platform = PLATFORM

    def __init__(self, config: DingTalkConfig) -> None:
        self.config = config
        self.stream: StreamClient | None = None

    async def run(self, inbox: Inbox, stop: asyncio.Event) -> None:
        stream = StreamClient(self.config)
        in_order = InOrder(inbox, PLATFORM)
        stream.register_callback_handler(ROBOT_TOPIC, _Topic(lambda m: self._robot(inbox, in_order, m)))
        stream.register_callback_handler(CARD_TOPIC, _Topic(lambda m: self._card(inbox, m)))
        stream.register_all_event_handler(_Events(lambda e: self._event(inbox, in_order, e)))
        self.stream = stream
        try:
            await stream.start(stop)
        except CredentialsRejected as e:
            log.error("%s", e)
            raise
        finally:
            await in_order.settle(STOP_GRACE)

    def _store(self, inbox: Inbox, topic: str, message: CallbackMessage) -> tuple[str, bool]:
        key = event_id(message)
        payload = {"topic": topic, "messageId": message.headers.message_id, "data": message.data}
        return key, inbox.store(PLATFORM, key, payload)  # committed before the ack is returned

    async def _robot(self, inbox: Inbox, in_order: InOrder, message: CallbackMessage) -> tuple[int, Any]:
        if not event_id(message):
            return AckMessage.STATUS_BAD_REQUEST, "no msgId"
        key, stored = self._store(inbox, ROBOT_TOPIC, message)
        if not stored:
            log.info("DingTalk robot message %s redelivered; already stored", key)
            return AckMessage.STATUS_OK, "OK"
        log.info("DingTalk robot message %s stored", key)
        conversation = str(message.data.get("conversationId") or "") if isinstance(message.data, dict) else ""
        in_order.spawn(conversation, key)
        return AckMessage.STATUS_OK, "OK"

    async def _event(self, inbox: Inbox, in_order: InOrder, event: dingtalk_stream.EventMessage) -> tuple[int, Any]:
        """An approval event: stored before the ack (keyed by its event id), handled after it."""
        kind = str(event.headers.event_type or "")
        if kind not in EVENTS:
            return AckMessage.STATUS_OK, "OK"  # not ours to act on
        key = str(event.headers.event_id or event.headers.message_id or "")
        if not key:
            return AckMessage.STATUS_BAD_REQUEST, "no eventId"
        payload = {"topic": EVENT_TOPIC, "eventType": kind, "messageId": event.headers.message_id, "eventId": key,
                   "data": event.data}
        if not inbox.store(PLATFORM, key, payload):
            log.info("DingTalk event %s redelivered; already stored", key)
            return AckMessage.STATUS_OK, "OK"
        in_order.spawn("events", key)
        return AckMessage.STATUS_OK, "OK"

    async def _card(self, inbox: Inbox, message: CallbackMessage) -> tuple[int, Any]:
        if not event_id(message):
            return AckMessage.STATUS_BAD_REQUEST, {}
        key, _ = self._store(inbox, CARD_TOPIC, message)
        await inbox.handle(PLATFORM, key)  # a no-op unless still `stored`; a failure is left for drain
        # The response could carry a card update; the flow updates its card itself through the OpenAPI.
        return AckMessage.STATUS_OK, {}


async def parse(inbound: DingTalkInbound, payload: dict[str, Any]) -> Received:
    """A stored Stream payload `{topic, messageId, data}`, authenticated by the connection."""
    topic, data = payload.get("topic"), payload.get("data")
    if not isinstance(data, dict):
        raise invalid("the stored DingTalk message has no data")
    if topic == EVENT_TOPIC:
        return inbound.approval(data, fallback_id=str(payload.get("eventId") or ""))
    if topic not in (ROBOT_TOPIC, CARD_TOPIC):
        raise invalid(f"unknown DingTalk stream topic {topic!r}")
    return await inbound.from_stream("card" if topic == CARD_TOPIC else "robot", data,
                                     str(payload.get("messageId") or ""))


def build(settings: Settings) -> DingTalkListener | None:
    config = DingTalkConfig()
    return DingTalkListener(config) if config.enabled else None


__all__ = ["CARD_TOPIC", "ROBOT_TOPIC", "CredentialsRejected", "DingTalkListener", "StreamClient", "build", "parse"]
