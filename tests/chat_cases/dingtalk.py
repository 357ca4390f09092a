"""DingTalk: robot messages signed with `sign` (HMAC over timestamp + secret); card callbacks and the
URL check through the encrypted event subscription (SHA-1 signature, AES)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from connectors.chat.dingtalk.client import track_id_for
from connectors.chat.dingtalk.inbound import NO_FILE, decrypt_event, encrypt_event, event_signature, robot_sign
from signbridge.core.models import DocumentSource
from store.repos import chat_messages
from tests.chat_cases import Call, ChatCase, json_body
from tests.sim.dingtalk_sim import DingTalkSim, running

APP_KEY, APP_SECRET, ROBOT, CORP = "dingtestappkey", "test-app-secret", "dingtestrobot", "dingcorp0001"
TOKEN = "testEventToken"
AES_KEY = base64.b64encode(hashlib.sha256(b"signbridge-dingtalk-test").digest()).decode().rstrip("=")
GROUP = "cidGroup001=="
PATH = "/im/dingtalk/events"


def env(base: str) -> dict[str, str]:
    values = {"APP_KEY": APP_KEY, "APP_SECRET": APP_SECRET, "ROBOT_CODE": ROBOT, "AES_KEY": AES_KEY,
              "TOKEN": TOKEN, "CARD_TEMPLATE_ID": "tpl-signbridge", "API_BASE": base, "OAPI_BASE": base}
    return {f"SIGNBRIDGE_DINGTALK_{k}": v for k, v in values.items()}


def directory() -> DingTalkSim:
    sim = DingTalkSim(APP_KEY, APP_SECRET, ROBOT)
    sim.users = {"zhangsan": {"name": "张三"}, "lisi": {"name": "李四", "mobile": "13800000001"},
                 "wangwu": {"name": "王五", "email": "ww@corp.example"}, "zhaoliu": {"name": "赵六", "active": False}}
    return sim


def robot_headers(ts: int | None = None, secret: str = APP_SECRET) -> dict[str, str]:
    stamp = str(ts if ts is not None else int(time.time() * 1000))
    return {"timestamp": stamp, "sign": robot_sign(secret, stamp), "Content-Type": "application/json"}


def text_message(content: str, msg_id: str, sender: str = "zhangsan", at: tuple[str, ...] = (),
                 outside: tuple[str, ...] = ()) -> dict[str, Any]:
    """`outside`: dingtalkIds of people of another org (a cross-org group): no staffId."""
    return {"msgId": msg_id, "msgtype": "text", "text": {"content": content}, "conversationId": GROUP,
            "conversationType": "2", "senderStaffId": sender, "senderNick": "", "chatbotCorpId": CORP,
            "senderCorpId": CORP, "chatbotUserId": "$:LWCP_v1:$bot", "robotCode": ROBOT, "isInAtList": True,
            "atUsers": [{"dingtalkId": "$:LWCP_v1:$bot"}] + [{"dingtalkId": f"$:{u}", "staffId": u} for u in at]
            + [{"dingtalkId": d} for d in outside]}


def file_message(code: str, name: str, msg_id: str, sender: str = "zhangsan") -> dict[str, Any]:
    return {"msgId": msg_id, "msgtype": "file", "content": {"downloadCode": code, "fileName": name},
            "conversationId": GROUP, "conversationType": "2", "senderStaffId": sender, "chatbotCorpId": CORP,
            "robotCode": ROBOT}


def robot(body: dict[str, Any], signing: str = "valid") -> Call:
    headers = robot_headers(ts=int(time.time() * 1000) - 2 * 3600 * 1000 if signing == "stale" else None,
                            secret="not-the-secret" if signing == "forged" else APP_SECRET)
    if signing == "unsigned":
        headers = {"Content-Type": "application/json"}
    return Call("POST", PATH, json_body(body), headers)


def encrypted(event: dict[str, Any], ts: int | None = None, token: str = TOKEN, key: str = AES_KEY) -> Call:
    stamp, nonce = str(ts if ts is not None else int(time.time() * 1000)), uuid.uuid4().hex[:8]
    encrypt = encrypt_event(key, APP_KEY, json.dumps(event, ensure_ascii=False))
    params = {"msg_signature": event_signature(token, stamp, nonce, encrypt), "timestamp": stamp, "nonce": nonce}
    return Call("POST", PATH, json_body({"encrypt": encrypt}), {"Content-Type": "application/json"}, params)


def click(request_id: str, action: str, user: str, event_id: str | None = None) -> dict[str, Any]:
    content = {"cardPrivateData": {"actionIds": [action], "params": {"action": action}}}
    return {"outTrackId": track_id_for(request_id), "corpId": CORP, "userId": user, "type": "actionCallback",
            "content": json.dumps(content), "eventId": event_id or uuid.uuid4().hex}


class Case(ChatCase):
    platform, tenant = "dingtalk", CORP
    initiator, signers, stranger = "zhangsan", ("lisi", "wangwu"), "zhaoliu"
    file_source = DocumentSource(name="合同.pdf", url="dingtalk-file:dc-1")
    no_file = NO_FILE

    sim: DingTalkSim
    outsider, outsider_contact = "$:LWCP_v1:$customer", ("mobile", "+8613812341234")

    @contextmanager
    def simulator(self) -> Iterator[dict[str, str]]:
        self.sim = directory()
        with running(self.sim) as base:
            yield env(base)

    def external_command(self, event_id: str) -> Call:
        """A cross-org group: the customer is @mentioned with a dingtalkId only (no staffId)."""
        return robot(text_message("@SignBridge sign @李四 > @王总 13812341234", event_id, at=(self.signers[0],),
                                  outside=(self.outsider,)))

    def looked_up(self) -> list[str] | None:
        return self.sim.looked_up

    def departure(self, user: str) -> Call | None:
        return encrypted({"EventType": "user_leave_org", "TimeStamp": str(int(time.time() * 1000)),
                          "UserId": [user], "CorpId": CORP})

    def departure_answered(self, resp: httpx.Response) -> None:
        assert resp.status_code == 200 and decrypt_event(AES_KEY, APP_KEY, resp.json()["encrypt"]) == "success"

    def command(self, event_id: str, signing: str = "valid") -> Call:
        return robot(text_message("@SignBridge sign @李四 > @王五", event_id, at=self.signers), signing)

    def file(self, event_id: str) -> Call:
        return robot(file_message("dc-1", "合同.pdf", event_id))

    def click(self, request_id: str, action: str, user: str) -> Call:
        return encrypted(click(request_id, action, user, event_id=f"ev-{request_id[-12:]}-{action}-{user}"))

    def prepare_card(self, engine: Engine, request_id: str) -> None:
        """What `DingTalkChat.upsert_card` records: the card's stable outTrackId."""
        chat_messages.save(engine, self.platform, request_id, GROUP,
                           {"outTrackId": track_id_for(request_id), "digest": "-"})

    def handshake(self) -> tuple[Call, Any]:
        def check(resp: httpx.Response) -> None:
            assert resp.status_code == 200, resp.text
            reply = resp.json()
            assert set(reply) == {"msg_signature", "timeStamp", "nonce", "encrypt"}
            assert reply["msg_signature"] == event_signature(TOKEN, reply["timeStamp"], reply["nonce"],
                                                             reply["encrypt"])
            assert decrypt_event(AES_KEY, APP_KEY, reply["encrypt"]) == "success"

        return encrypted({"EventType": "check_url"}), check

    def refused(self, resp: httpx.Response) -> None:
        """DingTalk shows no answer to a click: acknowledged, and the card stays as it is."""
        assert resp.status_code == 200 and decrypt_event(AES_KEY, APP_KEY, resp.json()["encrypt"]) == "success"
