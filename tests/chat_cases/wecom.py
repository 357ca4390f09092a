"""WeCom (企业微信): encrypted XML signed over `Encrypt` (SHA-1), a 300 s timestamp window; `GET` URL check."""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy.engine import Engine
from wechatpy.crypto import PrpCrypto
from wechatpy.enterprise.crypto import WeChatCrypto

from connectors.chat.wecom.client import task_id_for
from connectors.chat.wecom.inbound import NO_FILE
from signbridge.core.models import DocumentSource
from store.repos import chat_messages
from tests.chat_cases import Call, ChatCase
from tests.sim.wecom_sim import WeComSim, running

CORP = "wwtestcorp0001"
SECRET = "test-corp-secret"
TOKEN = "testCallbackToken"
AES_KEY = base64.b64encode(hashlib.sha256(b"signbridge-wecom-test").digest()).decode().rstrip("=")
PATH = "/im/wecom/events"


def env(base: str) -> dict[str, str]:
    values = {"CORP_ID": CORP, "CORP_SECRET": SECRET, "AGENT_ID": "1000002", "TOKEN": TOKEN,
              "ENCODING_AES_KEY": AES_KEY, "API_BASE": base}
    return {f"SIGNBRIDGE_WECOM_{k}": v for k, v in values.items()}


def directory() -> WeComSim:
    sim = WeComSim(CORP, SECRET)
    sim.users = {"zhangsan": {"name": "张三", "status": 1}, "lisi": {"name": "李四", "status": 1},
                 "wangwu": {"name": "王五", "status": 1, "email": "ww@corp.example"},
                 "zhaoliu": {"name": "赵六", "status": 5}}
    return sim


def encrypted(inner: str, ts: int | None = None, token: str = TOKEN) -> tuple[bytes, dict[str, str]]:
    """What WeCom POSTs: the message encrypted for us, signed over `Encrypt`."""
    stamp, nonce = str(ts if ts is not None else int(time.time())), uuid.uuid4().hex[:10]
    out = WeChatCrypto(token, AES_KEY, CORP).encrypt_message(inner, nonce, stamp)
    encrypt = re.search(r"<Encrypt><!\[CDATA\[(.*?)\]\]></Encrypt>", out).group(1)  # type: ignore[union-attr]
    sig = re.search(r"<MsgSignature><!\[CDATA\[(.*?)\]\]>", out).group(1)  # type: ignore[union-attr]
    body = f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><AgentID>1000002</AgentID>" \
           f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    return body.encode(), {"msg_signature": sig, "timestamp": stamp, "nonce": nonce}


def text_msg(content: str, msg_id: str, sender: str = "zhangsan") -> str:
    return (f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[{sender}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId><AgentID>1000002</AgentID></xml>")


def file_msg(media_id: str, name: str, msg_id: str, sender: str = "zhangsan") -> str:
    return (f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[{sender}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[file]]></MsgType>"
            f"<MediaId><![CDATA[{media_id}]]></MediaId><FileName><![CDATA[{name}]]></FileName>"
            f"<MsgId>{msg_id}</MsgId><AgentID>1000002</AgentID></xml>")


def click_event(task_id: str, key: str, code: str, sender: str = "zhangsan", created: int | None = None) -> str:
    return (f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[{sender}]]></FromUserName>"
            f"<CreateTime>{created or int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[template_card_event]]></Event><EventKey><![CDATA[{key}]]></EventKey>"
            f"<TaskId><![CDATA[{task_id}]]></TaskId><CardType><![CDATA[button_interaction]]></CardType>"
            f"<ResponseCode><![CDATA[{code}]]></ResponseCode><AgentID>1000002</AgentID></xml>")


def posted(inner: str, signing: str = "valid") -> Call:
    body, params = encrypted(inner, ts=int(time.time()) - 600 if signing == "stale" else None,
                             token="another-token" if signing == "forged" else TOKEN)
    if signing == "unsigned":
        params.pop("msg_signature")
    return Call("POST", PATH, body, {"Content-Type": "text/xml"}, params)


class Case(ChatCase):
    platform, tenant = "wecom", CORP
    initiator, signers, stranger = "zhangsan", ("lisi", "wangwu"), "zhaoliu"
    file_source = DocumentSource(name="合同.pdf", url="wecom-media:m-1")
    no_file = NO_FILE
    answer_within = 5.0

    sim: WeComSim
    outsider, outsider_contact = "wmCustomer0001AAAA", ("mobile", "+8613812341234")

    @contextmanager
    def simulator(self) -> Iterator[dict[str, str]]:
        self.sim = directory()
        with running(self.sim) as base:
            yield env(base)

    def external_command(self, event_id: str) -> Call:
        """A customer (客户联系): typed by their external_userid, with the mobile to reach them by."""
        return posted(text_msg(f"/sign @lisi > @{self.outsider} 13812341234", event_id))

    def looked_up(self) -> list[str] | None:
        return self.sim.looked_up

    def departure(self, user: str) -> Call | None:
        return posted(f"<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
                      f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
                      "<Event><![CDATA[change_contact]]></Event><ChangeType><![CDATA[delete_user]]></ChangeType>"
                      f"<UserID><![CDATA[{user}]]></UserID></xml>")

    def departure_answered(self, resp: httpx.Response) -> None:
        assert resp.status_code == 200 and resp.text == "", resp.text

    def command(self, event_id: str, signing: str = "valid") -> Call:
        return posted(text_msg("/sign @lisi > @wangwu", event_id), signing)

    def file(self, event_id: str) -> Call:
        return posted(file_msg("m-1", "合同.pdf", event_id))

    def click(self, request_id: str, action: str, user: str) -> Call:
        return posted(click_event(task_id_for(request_id, 1), action, f"rc-{user}", sender=user, created=1700000000))

    def prepare_card(self, engine: Engine, request_id: str) -> None:
        """What `WeComChat.upsert_card` records: the card's task id sequence and addressee."""
        chat_messages.save(engine, self.platform, request_id, self.initiator,
                           {"touser": self.initiator, "seq": 1, "superseded": [], "msgid": "m", "digest": "-"})

    def handshake(self) -> tuple[Call, Any]:
        """The URL check WeCom sends when the admin saves the callback URL."""
        stamp, nonce = str(int(time.time())), "n-1"
        echostr = bytes(PrpCrypto(base64.b64decode(AES_KEY + "=")).encrypt("echo-ok", CORP)).decode()
        sig = hashlib.sha1("".join(sorted([TOKEN, stamp, nonce, echostr])).encode()).hexdigest()

        def check(resp: httpx.Response) -> None:
            assert resp.status_code == 200 and resp.text == "echo-ok", resp.text
            assert resp.headers["content-type"].startswith("text/plain")

        return Call("GET", PATH, params={"msg_signature": sig, "timestamp": stamp, "nonce": nonce,
                                         "echostr": echostr}), check

    def refused(self, resp: httpx.Response) -> None:
        """WeCom shows no answer to a click: an empty reply, and the card stays as it is."""
        assert resp.status_code == 200 and resp.text == "", resp.text
