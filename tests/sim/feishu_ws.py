"""A simulator of Feishu's long-connection server, over real HTTP and WebSocket on a loopback port.

What `lark_oapi.ws.Client` talks to, strictly enough for the SDK to run unmodified:

* `POST /callback/ws/endpoint` with `{"AppID", "AppSecret"}` (the SDK's body). Wrong credentials
  get code 1000040345 "app_id or app_secret is invalid" (what Feishu is reported to answer; the
  HTTP status is `reject_status`, 200 by default — the SDK reads the code from the body). Right
  ones get `data.URL` (a one-time `ws://…/ws?device_id=…&service_id=…&ticket=…`) and the
  `ClientConfig` (reconnect count/interval/nonce, ping interval) the SDK adopts. `busy_next`
  answers code 1 "system busy" instead (the SDK retries that with its own backoff).
* `/ws` speaks pbbp2 frames (`lark_oapi.ws.pb.pbbp2_pb2.Frame`, the SDK's own module):
  control `ping` → `pong` carrying the ClientConfig; `deliver()` sends a data frame
  (`type=event`, `message_id`, `trace_id`, `sum=1`, `seq=0`, the event JSON as payload) and the
  client's answer — the same frame with `biz_rt` added and `{"code", "data": base64(JSON)}` as
  payload — is recorded as an `Ack` (`on_ack` runs synchronously when it arrives, so a test can
  look at the database at that very moment).
* An event not acked within `ack_timeout` seconds is delivered again under a new message_id with
  the same payload (the same `header.event_id`), up to `max_redeliveries` times, like Feishu's
  redelivery of events that were not answered in time. `drop()` closes the socket from the server side.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from lark_oapi.ws.pb.pbbp2_pb2 import Frame

from tests.sim.servers import free_port, serve

INVALID_CREDENTIALS = 1000040345
SYSTEM_BUSY = 1
CONTROL, DATA = 0, 1


@dataclass
class Delivery:
    message_id: str
    event_id: str
    payload: bytes
    sent_at: float
    attempt: int  # 1 for the first delivery of an event
    acked: bool = False


@dataclass
class Ack:
    message_id: str
    event_id: str
    code: int
    data: Any  # the decoded JSON the client put in `data` (a card's toast), or None
    headers: dict[str, str]
    at: float
    checked: Any = None  # whatever `on_ack` returned


@dataclass
class FeishuWsSim:
    app_id: str
    app_secret: str
    ack_timeout: float = 3.0
    max_redeliveries: int = 3
    reject_status: int = 200
    busy_next: int = 0  # that many endpoint calls answer code 1 "system busy" (the SDK retries those)
    ping_interval: int = 120
    reconnect_interval: int = 1
    reconnect_nonce: int = 0
    reconnect_count: int = -1
    on_ack: Callable[[Ack], Any] | None = None
    service_id: int = 33554678
    endpoint_calls: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    connections: int = 0
    pings: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._tickets: set[str] = set()
        self._socket: WebSocket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._seq = 0
        self.app = self._build_app()

    # ---- for tests (any thread) ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._socket is not None

    def deliver(self, event: dict[str, Any]) -> str:
        """Send one event (the callback's JSON) to the connected client; returns the frame's message_id."""
        if self._loop is None or self._socket is None:
            raise RuntimeError("no client is connected")
        event_id = str((event.get("header") or {}).get("event_id") or event.get("uuid") or "")
        payload = json.dumps(event, ensure_ascii=False).encode()
        future = asyncio.run_coroutine_threadsafe(self._send_event(event_id, payload, 1), self._loop)
        return future.result(10)

    def drop(self) -> None:
        """Close the client's socket from the server side (the SDK reconnects)."""
        if self._loop is not None and self._socket is not None:
            socket = self._socket
            asyncio.run_coroutine_threadsafe(socket.close(code=1001), self._loop).result(10)

    def acks_for(self, event_id: str) -> list[Ack]:
        with self._lock:
            return [a for a in self.acks if a.event_id == event_id]

    def deliveries_of(self, event_id: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.event_id == event_id]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 15) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                raise AssertionError("simulator condition not reached in time")
            await asyncio.sleep(0.02)

    async def wait_ack(self, event_id: str, timeout: float = 15) -> Ack:
        await self.wait_for(lambda: bool(self.acks_for(event_id)), timeout)
        return self.acks_for(event_id)[0]

    # ---- the server -------------------------------------------------------------------------------

    def _client_config(self) -> dict[str, int]:
        return {"ReconnectCount": self.reconnect_count, "ReconnectInterval": self.reconnect_interval,
                "ReconnectNonce": self.reconnect_nonce, "PingInterval": self.ping_interval}

    def _frame(self, method: int, headers: dict[str, str], payload: bytes = b"") -> Frame:
        frame = Frame()
        with self._lock:
            self._seq += 1
            frame.SeqID = self._seq
        frame.LogID = 0
        frame.service = self.service_id
        frame.method = method
        for key, value in headers.items():
            header = frame.headers.add()
            header.key, header.value = key, value
        if payload:
            frame.payload = payload
        return frame

    async def _send_event(self, event_id: str, payload: bytes, attempt: int) -> str:
        socket = self._socket
        if socket is None:
            raise RuntimeError("no client is connected")
        message_id = f"msg_{uuid.uuid4().hex[:16]}"
        frame = self._frame(DATA, {"type": "event", "message_id": message_id, "trace_id": uuid.uuid4().hex,
                                   "sum": "1", "seq": "0"}, payload)
        with self._lock:
            self.deliveries.append(Delivery(message_id, event_id, payload, time.monotonic(), attempt))
        await socket.send_bytes(frame.SerializeToString())
        return message_id

    def _received(self, raw: bytes) -> bytes | None:
        frame = Frame()
        frame.ParseFromString(raw)
        headers = {h.key: h.value for h in frame.headers}
        if frame.method == CONTROL:
            if headers.get("type") == "ping":
                with self._lock:
                    self.pings += 1
                return self._frame(CONTROL, {"type": "pong"},
                                   json.dumps(self._client_config()).encode()).SerializeToString()
            return None
        message_id = headers.get("message_id", "")
        with self._lock:
            delivery = next((d for d in self.deliveries if d.message_id == message_id), None)
        body = json.loads(frame.payload or b"{}")
        data = json.loads(base64.b64decode(body["data"])) if body.get("data") else None
        ack = Ack(message_id=message_id, event_id=delivery.event_id if delivery else "", code=int(body.get("code", 0)),
                  data=data, headers=headers, at=time.monotonic())
        if self.on_ack is not None:
            ack.checked = self.on_ack(ack)
        with self._lock:
            if delivery is not None:
                delivery.acked = True
            self.acks.append(ack)
        return None

    async def _redeliver_forever(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            with self._lock:
                due = [d for d in self.deliveries if not d.acked and now - d.sent_at > self.ack_timeout
                       and d.attempt <= self.max_redeliveries]
                for d in due:
                    d.acked = True  # superseded by the redelivery (its late ack is still recorded)
            for d in due:
                if self._socket is not None:
                    try:
                        await self._send_event(d.event_id, d.payload, d.attempt + 1)
                    except Exception:  # the client went away; nothing to redeliver to
                        continue

    def _build_app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            self._loop = asyncio.get_running_loop()
            task = asyncio.create_task(self._redeliver_forever())
            yield
            task.cancel()

        app = FastAPI(lifespan=lifespan)

        @app.post("/callback/ws/endpoint")
        async def endpoint(request: Request) -> JSONResponse:
            body = await request.json()
            self.endpoint_calls.append({"body": body, "headers": dict(request.headers)})
            if self.busy_next > 0:
                self.busy_next -= 1
                return JSONResponse({"code": SYSTEM_BUSY, "msg": "system busy", "data": None})
            if body.get("AppID") != self.app_id or body.get("AppSecret") != self.app_secret:
                self.rejected += 1
                return JSONResponse({"code": INVALID_CREDENTIALS, "msg": "app_id or app_secret is invalid",
                                     "data": None}, status_code=self.reject_status)
            ticket = uuid.uuid4().hex
            self._tickets.add(ticket)
            ws = self.url.replace("http://", "ws://")
            url = f"{ws}/ws?device_id={uuid.uuid4().int % 10**18}&service_id={self.service_id}&ticket={ticket}"
            return JSONResponse({"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": self._client_config()}})

        @app.websocket("/ws")
        async def ws(socket: WebSocket) -> None:
            ticket = socket.query_params.get("ticket", "")
            if ticket not in self._tickets:  # a ticket is good for one connection
                await socket.close(code=1008)
                return
            self._tickets.discard(ticket)
            await socket.accept()
            self._socket = socket
            self.connections += 1
            try:
                while True:
                    raw = await socket.receive_bytes()
                    answer = self._received(raw)
                    if answer is not None:
                        await socket.send_bytes(answer)
            except (WebSocketDisconnect, RuntimeError):
                pass
            finally:
                if self._socket is socket:
                    self._socket = None

        return app


@contextmanager
def running(sim: FeishuWsSim) -> Iterator[str]:
    """Serve the simulator on a loopback port; yields its base URL (the SDK's `domain`)."""
    port = free_port()
    sim.url = f"http://127.0.0.1:{port}"
    with serve(sim.app, port=port) as url:
        yield url
