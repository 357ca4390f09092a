"""Feishu/Lark: encrypted JSON (AES-256-CBC) signed with `X-Lark-Signature`, plus a verification token."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from connectors.chat.feishu.inbound import NO_FILE
from signbridge.core.models import DocumentSource
from tests.chat_cases import Call, ChatCase, json_body
from tests.sim.feishu_sim import encrypt, push_headers

KEY = "test-encrypt-key"
TOKEN = "test-verification-token"
TENANT = "tenant-1"
BOT = ("@_user_1", "ou_bot", "SignBridge")
ENV = {"SIGNBRIDGE_FEISHU_APP_ID": "cli_test", "SIGNBRIDGE_FEISHU_APP_SECRET": "secret",
       "SIGNBRIDGE_FEISHU_ENCRYPT_KEY": KEY, "SIGNBRIDGE_FEISHU_VERIFICATION_TOKEN": TOKEN,
       "SIGNBRIDGE_FEISHU_API_BASE": "http://127.0.0.1:9"}  # nothing listens: callbacks never call Feishu


def envelope(event_type: str, event: dict[str, Any], event_id: str | None = None,
             token: str = TOKEN) -> dict[str, Any]:
    return {"schema": "2.0", "header": {"event_id": event_id or f"ev-{uuid.uuid4().hex[:12]}", "event_type": event_type,
                                        "create_time": str(int(time.time() * 1000)), "token": token,
                                        "app_id": "cli_test", "tenant_key": TENANT}, "event": event}


def file_event(chat_id: str, sender: str, message_id: str, file_key: str, name: str = "contract.pdf",
               event_id: str | None = None) -> dict[str, Any]:
    return envelope("im.message.receive_v1", {
        "sender": {"sender_id": {"open_id": sender}, "sender_type": "user", "tenant_key": TENANT},
        "message": {"message_id": message_id, "chat_id": chat_id, "chat_type": "group", "message_type": "file",
                    "content": json.dumps({"file_key": file_key, "file_name": name})}},
        event_id or f"ev-{message_id}")


def command_event(chat_id: str, sender: str, text: str, mentions: list[tuple[str, str, str]],
                  event_id: str | None = None, parent_id: str | None = None, token: str = TOKEN,
                  tenants: dict[str, str] | None = None) -> dict[str, Any]:
    """`tenants`: open_id → the tenant_key of a mention from another company (an external group)."""
    event_id = event_id or f"ev-{uuid.uuid4().hex[:12]}"
    return envelope("im.message.receive_v1", {
        "sender": {"sender_id": {"open_id": sender}, "sender_type": "user", "tenant_key": TENANT},
        "message": {"message_id": f"om_{event_id}", "chat_id": chat_id, "chat_type": "group",
                    "message_type": "text", "content": json.dumps({"text": text}, ensure_ascii=False),
                    "parent_id": parent_id,
                    "mentions": [{"key": k, "id": {"open_id": oid}, "name": n,
                                  "tenant_key": (tenants or {}).get(oid, TENANT)}
                                 for k, oid, n in [BOT, *mentions]]}}, event_id, token)


def card_event(request_id: str, action: str, operator: str, event_id: str | None = None) -> dict[str, Any]:
    return envelope("card.action.trigger", {
        "operator": {"open_id": operator, "tenant_key": TENANT}, "token": "c-1",
        "action": {"tag": "button", "value": {"action": action, "request_id": request_id}},
        "host": "im_message", "context": {"open_chat_id": "oc_1"}}, event_id)


def pushed(path: str, payload: dict[str, Any], signing: str = "valid") -> Call:
    """Encrypted and signed the way Feishu's servers push a callback."""
    raw = json.dumps({"encrypt": encrypt("other-key" if signing == "undecryptable" else KEY,
                                         json.dumps(payload, ensure_ascii=False))}).encode()
    headers = push_headers(KEY, raw, int(time.time()) - 3600 if signing == "stale" else None)
    if signing == "forged":
        headers["X-Lark-Signature"] = "0" * 64
    if signing == "unsigned":
        headers = {"Content-Type": "application/json"}
    return Call("POST", path, raw, headers)


class Case(ChatCase):
    platform, tenant = "feishu", TENANT
    initiator, signers, stranger = "ou_init", ("ou_a", "ou_b"), "ou_x"
    file_source = DocumentSource(name="contract.pdf", url="feishu://om_file/file_1")
    no_file = NO_FILE

    @contextmanager
    def simulator(self) -> Iterator[dict[str, str]]:
        yield ENV

    def command(self, event_id: str, signing: str = "valid") -> Call:
        payload = command_event("oc_1", self.initiator, "@_user_1 sign @_user_2 > @_user_3",
                                [("@_user_2", "ou_a", "李四"), ("@_user_3", "ou_b", "王五")], event_id,
                                token="wrong" if signing == "wrong_token" else TOKEN)
        return pushed("/im/feishu/events", payload, signing)

    outsider, outsider_contact = "ou_customer", ("email", "wang@customer.example")

    def external_command(self, event_id: str) -> Call:
        """An external group: the customer's mention carries their own company's tenant_key."""
        payload = command_event("oc_ext", self.initiator, "@_user_1 sign @_user_2 > @_user_3 wang@customer.example",
                                [("@_user_2", "ou_a", "李四"), ("@_user_3", "ou_customer", "王总")], event_id,
                                tenants={"ou_customer": "tenant-customer"})
        return pushed("/im/feishu/events", payload)

    def departure(self, user: str) -> Call | None:
        return pushed("/im/feishu/events", envelope("contact.user.deleted_v3", {
            "object": {"open_id": user, "name": "李四", "status": {"is_resigned": True}}}))

    def file(self, event_id: str) -> Call:
        return pushed("/im/feishu/events", file_event("oc_1", self.initiator, "om_file", "file_1", event_id=event_id))

    def click(self, request_id: str, action: str, user: str) -> Call:
        return pushed("/im/feishu/card", card_event(request_id, action, user, f"card-{request_id[-12:]}-{user}"))

    def handshake(self) -> tuple[Call, Any]:
        challenge = {"type": "url_verification", "challenge": "ch-1", "token": TOKEN}
        raw = json_body({"encrypt": encrypt(KEY, json.dumps(challenge))})

        def check(resp: httpx.Response) -> None:
            assert resp.status_code == 200 and resp.json() == {"challenge": "ch-1"}, resp.text

        return Call("POST", "/im/feishu/events", raw, {"Content-Type": "application/json"}), check

    def refused(self, resp: httpx.Response) -> None:
        toast = resp.json()["toast"]
        assert resp.status_code == 200 and toast["type"] == "error" and "发起人" in toast["content"], resp.text
