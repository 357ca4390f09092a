"""A DingTalk Stream-mode gateway simulator for tests: real HTTP and a real WebSocket on 127.0.0.1.

* `POST /v1.0/gateway/connections/open {clientId, clientSecret, subscriptions, ua, localIp}`:
  a wrong clientId/clientSecret → HTTP 401 `{"requestid", "code": "authFailed", "message": "鉴权失败"}`
  (what api.dingtalk.com answers); no subscriptions → 400 `invalidParameter`; else `{endpoint, ticket}`
  with a single-use ticket.
* `GET /connect?ticket=` (WebSocket): an unknown or used ticket is refused at the handshake
  (HTTP 403). Once connected the gateway sends `SYSTEM` `ping` frames every `ping_every` s and
  `CALLBACK` frames for the messages queued with `deliver()` on a topic the connection subscribed:
  `{specVersion, type, headers{appId, connectionId, contentType, messageId, time, topic}, data}`,
  `data` being a JSON string; `EVENT` frames (`deliver_event()`) to connections subscribed to
  `EVENT *`, with the event's type and id in the headers. Acks `{code, headers{contentType,
  messageId}, message, data}` are recorded (`acks`; `on_ack` is called with each as it arrives,
  its result kept in `Ack.check`).
  A message with no 200 ack after `ack_timeout` s is sent again, with the same messageId, on
  whichever connection is open. `disconnect()` sends the `SYSTEM` `disconnect` frame;
  `fail_next_opens(n)` answers the next n opens with HTTP 503 (a gateway hiccup).
* Served together with the OpenAPI simulator (`running(sim, openapi)`), the bodies of
  `POST /v1.0/card/instances/createAndDeliver` are kept in `cards_created`: DingTalk sends a
  card's button callbacks over the stream only when it was created with `callbackType: STREAM`.

The OpenAPI side (tokens, cards, messages, files) is `tests/sim/dingtalk_sim.py`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response

from tests.sim.dingtalk_sim import DingTalkSim
from tests.sim.servers import serve

OPEN_PATH = "/v1.0/gateway/connections/open"


@dataclass
class Delivery:
    message_id: str
    topic: str
    data: dict[str, Any]
    kind: str = "CALLBACK"  # or "EVENT" (`topic` then is the event type)
    event_id: str = ""
    sends: list[tuple[str, float]] = field(default_factory=list)  # (connectionId, monotonic time)
    acked: bool = False


@dataclass
class Ack:
    message_id: str
    code: int
    message: str
    data: Any  # the ack's `data`, parsed from its JSON string
    raw: dict[str, Any]
    connection_id: str
    at: float
    check: Any = None  # what `on_ack` returned for it


class StreamSim:
    def __init__(self, client_id: str, client_secret: str, ack_timeout: float = 3.0, ping_every: float = 0.5,
                 app_id: str = "sim-app") -> None:
        self.client_id, self.client_secret, self.app_id = client_id, client_secret, app_id
        self.ack_timeout, self.ping_every = ack_timeout, ping_every
        self.opens: list[dict[str, Any]] = []  # every open request: its body plus "status", "at"
        self.connections: list[str] = []  # connection ids, in the order they connected
        self.open_connections: set[str] = set()
        self.refused_tickets = 0
        self.deliveries: dict[str, Delivery] = {}
        self.acks: list[Ack] = []
        self.pings: dict[str, str] = {}  # ping messageId -> opaque
        self.pongs: list[str] = []  # ping messageIds acked with their opaque echoed
        self.on_ack: Callable[[Ack], Any] | None = None
        self.cards_created: list[dict[str, Any]] = []
        self._failing_opens = 0
        self._tickets: dict[str, list[dict[str, Any]]] = {}
        self._subscriptions: dict[str, set[str]] = {}  # connectionId -> CALLBACK topics
        self._disconnect: set[str] = set()
        self._lock = threading.Lock()
        self.app = self._build()

    # ---- test controls ------------------------------------------------------------------------

    def deliver(self, topic: str, data: dict[str, Any], message_id: str | None = None) -> str:
        """Queue a callback message; it goes out on the next open connection subscribed to `topic`."""
        message_id = message_id or f"sim-{uuid.uuid4().hex}"
        with self._lock:
            self.deliveries[message_id] = Delivery(message_id, topic, data)
        return message_id

    def deliver_event(self, event_type: str, data: dict[str, Any], event_id: str | None = None) -> str:
        """Queue an `EVENT` frame (headers `eventType`, `eventId`, `eventCorpId`, `eventBornTime`); it
        goes to a connection that subscribed to events (`EVENT *`). Redelivered unacked like callbacks."""
        message_id = f"sim-{uuid.uuid4().hex}"
        with self._lock:
            self.deliveries[message_id] = Delivery(message_id, event_type, data, "EVENT",
                                                   event_id or uuid.uuid4().hex)
        return message_id

    def fail_next_opens(self, n: int) -> None:
        self._failing_opens = n

    def disconnect(self) -> None:
        """Ask every open connection to go away (DingTalk's `SYSTEM` `disconnect`)."""
        with self._lock:
            self._disconnect |= self.open_connections

    def acks_for(self, message_id: str) -> list[Ack]:
        return [a for a in self.acks if a.message_id == message_id]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError(f"condition not met within {timeout} s; opens: {len(self.opens)}, "
                                     f"connections: {self.connections}, acks: {[a.raw for a in self.acks[-5:]]}")
            await asyncio.sleep(0.02)

    # ---- frames -------------------------------------------------------------------------------

    def _frame(self, kind: str, topic: str, message_id: str, connection_id: str, data: dict[str, Any],
               event_id: str = "") -> str:
        headers = {"appId": self.app_id, "connectionId": connection_id, "contentType": "application/json",
                   "messageId": message_id, "time": str(int(time.time() * 1000)), "topic": topic}
        if kind == "EVENT":
            headers = {**headers, "topic": "*", "eventType": topic, "eventId": event_id,
                       "eventBornTime": str(int(time.time() * 1000)), "eventCorpId": data.get("corpId", ""),
                       "eventUnifiedAppId": self.app_id}
        return json.dumps({"specVersion": "1.0", "type": kind, "headers": headers,
                           "data": json.dumps(data, ensure_ascii=False)}, ensure_ascii=False)

    def _due(self, connection_id: str) -> list[Delivery]:
        """Messages to send now on this connection: never sent, or unacked past the timeout."""
        now = time.monotonic()
        with self._lock:
            topics = self._subscriptions.get(connection_id, set())
            due = [d for d in self.deliveries.values() if not d.acked
                   and (d.topic in topics if d.kind == "CALLBACK" else "EVENT:*" in topics)
                   and (not d.sends or now - d.sends[-1][1] >= self.ack_timeout)]
            for d in due:
                d.sends.append((connection_id, now))
        return due

    def _record(self, connection_id: str, text: str) -> None:
        try:
            raw = json.loads(text)
            message_id = str(raw["headers"]["messageId"])
            data = json.loads(raw["data"]) if isinstance(raw.get("data"), str) and raw["data"] else raw.get("data")
        except (ValueError, KeyError, TypeError):
            return  # not an ack: a real gateway ignores it too
        ack = Ack(message_id, int(raw.get("code") or 0), str(raw.get("message") or ""), data, raw, connection_id,
                  time.monotonic())
        if message_id in self.pings:
            if isinstance(data, dict) and data.get("opaque") == self.pings[message_id]:
                self.pongs.append(message_id)
            return
        if self.on_ack is not None:
            ack.check = self.on_ack(ack)
        with self._lock:
            self.acks.append(ack)
            delivery = self.deliveries.get(message_id)
            if delivery is not None and ack.code == 200:
                delivery.acked = True

    # ---- the gateway --------------------------------------------------------------------------

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.post(OPEN_PATH)
        async def open_connection(request: Request) -> Response:
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                self.opens.append({"status": 400, "at": time.monotonic()})
                return JSONResponse({"requestid": uuid.uuid4().hex, "code": "invalidParameter",
                                     "message": "body is not JSON"}, status_code=400)
            if self._failing_opens > 0:
                self._failing_opens -= 1
                self.opens.append({**body, "at": time.monotonic(), "status": 503})
                return JSONResponse({"requestid": uuid.uuid4().hex, "code": "ServiceUnavailable",
                                     "message": "sim: try again"}, status_code=503)
            if body.get("clientId") != self.client_id or body.get("clientSecret") != self.client_secret:
                self.opens.append({**body, "at": time.monotonic(), "status": 401})
                return JSONResponse({"requestid": uuid.uuid4().hex, "code": "authFailed", "message": "鉴权失败"},
                                    status_code=401)
            subscriptions = body.get("subscriptions")
            if not isinstance(subscriptions, list) or not subscriptions or \
                    not all(isinstance(s, dict) and s.get("type") and s.get("topic") for s in subscriptions):
                self.opens.append({**body, "at": time.monotonic(), "status": 400})
                return JSONResponse({"requestid": uuid.uuid4().hex, "code": "invalidParameter",
                                     "message": "subscriptions is required"}, status_code=400)
            self.opens.append({**body, "at": time.monotonic(), "status": 200})
            ticket = uuid.uuid4().hex
            with self._lock:
                self._tickets[ticket] = subscriptions
            endpoint = str(request.base_url).replace("http", "ws", 1).rstrip("/") + "/connect"
            return JSONResponse({"endpoint": endpoint, "ticket": ticket})

        @app.websocket("/connect")
        async def connect(ws: WebSocket) -> None:
            with self._lock:
                subscriptions = self._tickets.pop(ws.query_params.get("ticket") or "", None)
            if subscriptions is None:
                self.refused_tickets += 1
                await ws.close(code=1008)  # before accept: the handshake is refused (HTTP 403)
                return
            await ws.accept()
            connection_id = uuid.uuid4().hex
            with self._lock:
                self._subscriptions[connection_id] = {
                    str(s["topic"]) if s.get("type") == "CALLBACK" else f"EVENT:{s['topic']}" for s in subscriptions
                    if s.get("type") in ("CALLBACK", "EVENT")}
                self.connections.append(connection_id)
                self.open_connections.add(connection_id)
            reader = asyncio.create_task(self._read(ws, connection_id))
            last_ping = time.monotonic()
            try:
                while not reader.done():
                    for d in self._due(connection_id):
                        await ws.send_text(self._frame(d.kind, d.topic, d.message_id, connection_id, d.data,
                                                       d.event_id))
                    if time.monotonic() - last_ping >= self.ping_every:
                        last_ping, ping_id, opaque = time.monotonic(), uuid.uuid4().hex, uuid.uuid4().hex
                        self.pings[ping_id] = opaque
                        await ws.send_text(self._frame("SYSTEM", "ping", ping_id, connection_id, {"opaque": opaque}))
                    if connection_id in self._disconnect:
                        self._disconnect.discard(connection_id)
                        await ws.send_text(self._frame("SYSTEM", "disconnect", uuid.uuid4().hex, connection_id,
                                                       {"reason": "sim"}))
                    await asyncio.sleep(0.02)
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass
            finally:
                reader.cancel()
                with self._lock:
                    self.open_connections.discard(connection_id)

        return app

    async def _read(self, ws: WebSocket, connection_id: str) -> None:
        try:
            while True:
                self._record(connection_id, await ws.receive_text())
        except (WebSocketDisconnect, RuntimeError):
            return


@contextmanager
def running(sim: StreamSim, openapi: DingTalkSim | None = None) -> Iterator[str]:
    """Serve the gateway on a loopback port; yields its base URL (the listener's `api_base`).

    With `openapi`, that simulator (tokens, cards, messages, files) answers on the same base URL,
    as api.dingtalk.com serves both the gateway and the OpenAPI.
    """
    app: Any = sim.app
    if openapi is not None:
        combined = FastAPI()
        combined.router.routes.extend(sim.app.router.routes)
        combined.mount("/", openapi.app)
        app = _PeekCards(combined, sim.cards_created)
    with serve(app) as url:
        if openapi is not None:
            openapi.base = url
        yield url


class _PeekCards:
    """ASGI wrapper keeping the JSON body of every card createAndDeliver call, then passing it on."""

    def __init__(self, app: Any, seen: list[dict[str, Any]]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1.0/card/instances/createAndDeliver":
            chunks, more = [], True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(chunks)
            try:
                self.seen.append(json.loads(body))
            except ValueError:
                pass
            replayed = False

            async def replay() -> dict[str, Any]:
                nonlocal replayed
                if replayed:
                    return await receive()  # http.disconnect, when it comes
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)
