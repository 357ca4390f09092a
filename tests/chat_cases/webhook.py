"""The generic webhook IM: JSON events signed with `X-SignBridge-Signature` (HMAC over timestamp + body)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from connectors.chat.webhook import signature
from connectors.chat.webhook.inbound import NO_FILE
from signbridge.core.models import DocumentSource
from tests.chat_cases import Call, ChatCase, json_body

SECRET = "test-webhook-secret"  # tests/conftest.py's settings
PATH = "/im/webhook/events"
MENTIONS = [{"id": "u-1", "name": "李四"}, {"id": "u-2", "name": "王五"},
            {"id": "x-9", "name": "客户A", "email": "a@customer.example", "external": True}]
FILE = {"name": "contract.pdf", "url": "https://im.corp.example/f/1", "sha256": "ab" * 32}
SENDER = {"id": "u-0", "name": "张三", "email": "zs@corp.example", "mobile": "+8613800000000"}


def message(event_id: str, text: str, files: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": "message", "chat": {"id": "g-1", "kind": "group"}, "sender": SENDER,
            "text": text, "mentions": MENTIONS, "files": files or [], **extra}


def action(event_id: str, request_id: str, name: str, user: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": "action", "sender": {"id": user, "name": "someone"},
            "action": {"request_id": request_id, "name": name}}


def signed(body: bytes, signing: str = "valid") -> Call:
    now = time.time() - (301 if signing == "stale" else 0)
    headers = {} if signing == "unsigned" else \
        signature.headers("not-the-secret" if signing == "forged" else SECRET, body, now=now)
    return Call("POST", PATH, body, {**headers, "Content-Type": "application/json"})


class Case(ChatCase):
    platform, tenant = "webhook", "default"
    initiator, signers, stranger = "u-0", ("u-1", "u-2"), "u-stranger"
    file_source = DocumentSource(name=FILE["name"], url=FILE["url"], sha256=FILE["sha256"])
    no_file = NO_FILE
    has_handshake = False
    always_on = True  # its secret has a development default

    @contextmanager
    def simulator(self) -> Iterator[dict[str, str]]:
        yield {}  # the company's IM names every mention itself: nothing to ask

    def command(self, event_id: str, signing: str = "valid") -> Call:
        return signed(json_body(message(event_id, "/sign @李四 > @王五")), signing)

    outsider, outsider_contact = "x-10", ("mobile", "+8613812341234")

    def external_command(self, event_id: str) -> Call:
        """The IM marks people outside the company itself (`external: true`), here without a contact."""
        body = message(event_id, "/sign @李四 > @客户B 13812341234")
        body["mentions"] = [*MENTIONS, {"id": "x-10", "name": "客户B", "external": True}]
        return signed(json_body(body))

    def file(self, event_id: str) -> Call:
        return signed(json_body(message(event_id, "合同在这里（here is the contract）", files=[FILE])))

    def click(self, request_id: str, action_name: str, user: str) -> Call:
        return signed(json_body(action(f"a-{request_id[-12:]}-{action_name}-{user}", request_id, action_name, user)))

    def refused(self, resp: httpx.Response) -> None:
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "PermissionDenied", resp.text
