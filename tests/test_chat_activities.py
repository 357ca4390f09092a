"""Chat activities deliver each keyed message once, however often they run — on every platform.

A local activity re-runs when its workflow task's completion is refused (a signal arrived
while the flow completed) and any activity re-runs after a worker dies mid-step; people must
still see one link, one text, one signed file. There is one mechanism for it, in the activity
(`activities/chat.py` over `sent_messages`); these tests run it against each platform's real
client and simulator, so a platform whose client forgets to say "maybe delivered" fails here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.chat import ChatActivities
from activities.deps import Deps
from connectors.chat.base import ChatConnector
from connectors.chat.dingtalk.client import DingTalkChat, DingTalkConfig
from connectors.chat.feishu.client import FeishuChat, FeishuConfig
from connectors.chat.slack.client import SlackChat, SlackConfig
from connectors.chat.webhook.client import WebhookChat
from connectors.chat.wecom.client import WeComChat, WeComConfig
from signbridge.core.models import ChatRef, DocumentInfo, FileMessageInput, LinkMessageInput, Person, TextMessageInput
from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from store.blob_factory import make_blob_store
from store.blobs import sha256_hex
from store.db import create_all, get_engine
from store.tables import SentMessage
from tests.sim.dingtalk_sim import DingTalkSim
from tests.sim.feishu_sim import FeishuSim
from tests.sim.servers import LateAnswers, serve
from tests.sim.slack_sim import SlackSim
from tests.sim.webhook_sink import WebhookSink
from tests.sim.wecom_sim import WeComSim

SECRET = "activities-test-secret"
SIGNER = Person(id="u-1", name="李四")
PDF = sample_contract("Chat activities")
DOC = DocumentInfo(name="c.pdf", blob_key=sha256_hex(PDF), sha256=sha256_hex(PDF), size=len(PDF), pages=1)


@dataclass
class Platform:
    """One chat platform's simulator (behind `late`, which watches the paths messages are sent on)
    and its real client (`client(base URL, engine, http, timeout)`). `delivered`: how many messages
    people can see. `honours_keys`: the platform drops a message sent again after an unanswered
    attempt."""

    name: str
    honours_keys: bool
    late: LateAnswers
    client: Callable[[str, Engine, httpx.AsyncClient, float], ChatConnector]
    delivered: Callable[[], int]


def webhook() -> Platform:
    sink = WebhookSink(SECRET)
    sink.honour_keys = True  # as the protocol asks a receiver to: a repeated Idempotency-Key is dropped
    return Platform("webhook", True, LateAnswers(sink.app, "/outbound"),
                    lambda base, engine, http, timeout: WebhookChat(f"{base}/outbound", SECRET, http, timeout=timeout),
                    lambda: len(sink.messages))


def feishu() -> Platform:
    sim = FeishuSim()  # drops a repeated `uuid`
    return Platform("feishu", True, LateAnswers(sim.app, "/open-apis/im/v1/messages"),
                    lambda base, engine, http, timeout: FeishuChat(FeishuConfig(
                        app_id=sim.app_id, app_secret=SecretStr(sim.app_secret), api_base=base,
                        timeout_seconds=timeout), engine, http),
                    lambda: len(sim.order))


def dingtalk() -> Platform:
    sim = DingTalkSim("dingkey", "dingsecret", "dingrobot")  # robot messages carry no idempotency key
    sim.users = {SIGNER.id: {"name": SIGNER.name}}
    return Platform("dingtalk", False, LateAnswers(sim.app, "/v1.0/robot/groupMessages", "/v1.0/robot/oToMessages"),
                    lambda base, engine, http, timeout: DingTalkChat(DingTalkConfig(
                        app_key=sim.app_key, app_secret=SecretStr(sim.app_secret), robot_code=sim.robot_code,
                        api_base=base, oapi_base=base, timeout_seconds=timeout), engine, http),
                    lambda: len(sim.messages))


def wecom() -> Platform:
    # `enable_duplicate_check` drops only the same content within 5 min, and the signed file's
    # download link is signed anew on each attempt: the repeat arrives.
    sim = WeComSim("wwcorp", "wecomsecret")
    return Platform("wecom", False, LateAnswers(sim.app, "/cgi-bin/message/send"),
                    lambda base, engine, http, timeout: WeComChat(WeComConfig(
                        corp_id=sim.corp_id, corp_secret=SecretStr(sim.secret), agent_id=1, token=SecretStr("t"),
                        encoding_aes_key=SecretStr("k"), api_base=base, timeout_seconds=timeout), engine, http),
                    lambda: len(sim.messages))


def slack() -> Platform:
    sim = SlackSim("xoxb-activities")  # Slack has no idempotency key
    sim.users = {SIGNER.id: {"name": "lisi", "profile": {"real_name": SIGNER.name}}}
    sim.channels.add("g-1")
    return Platform("slack", False, LateAnswers(sim.app, "/api/chat.postMessage", "/api/files.completeUploadExternal"),
                    lambda base, engine, http, timeout: SlackChat(SlackConfig(
                        signing_secret=SecretStr("s"), bot_token=SecretStr(sim.token), api_base=f"{base}/api/"),
                        engine, http, timeout=timeout),
                    lambda: len(sim.messages))


PLATFORMS = [webhook, feishu, dingtalk, wecom, slack]


@contextmanager
def activities(settings: Settings, platform: Platform) -> Iterator[tuple[Engine, str]]:
    """The database and the platform's simulator (its base URL)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    make_blob_store(settings).put(PDF)  # the signed file the activity delivers
    with serve(platform.late) as base:
        yield engine, base


def chat_for(platform: Platform) -> ChatRef:
    return ChatRef(platform=platform.name, chat_id="g-1", source_event_id="e-1")


def acts_for(settings: Settings, engine: Engine, http: httpx.AsyncClient, chat: ChatConnector) -> ChatActivities:
    return ChatActivities(Deps(settings=settings, engine=engine, blobs=make_blob_store(settings), http=http,
                               chats={chat.platform: chat}, providers={}))


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("make", PLATFORMS, ids=lambda make: make.__name__)
async def test_each_message_is_delivered_once(settings: Settings, make: Callable[[], Platform]) -> None:
    platform = make()
    chat = chat_for(platform)
    with activities(settings, platform) as (engine, base):
        async with httpx.AsyncClient() as http:
            acts = acts_for(settings, engine, http, platform.client(base, engine, http, 10.0))
            env = ActivityEnvironment()
            link = LinkMessageInput(request_id="r-1", chat=chat, to=SIGNER, title="合同", sign_url="https://x/s/1",
                                    key="link:u-1")
            for _ in range(2):
                await env.run(acts.send_link, link)
                await env.run(acts.send_text, TextMessageInput(request_id="r-1", chat=chat, key="declined", text="t"))
                await env.run(acts.send_file, FileMessageInput(request_id="r-1", chat=chat, document=DOC))
            # A different key is a different message (a reminder), and is delivered.
            await env.run(acts.send_link, link.model_copy(update={"key": "reminder:u-1:1", "reminder": True}))
    assert platform.late.arrivals == 4
    assert platform.delivered() == 4


@pytest.mark.parametrize("make", PLATFORMS, ids=lambda make: make.__name__)
async def test_a_send_without_an_answer_is_repeated_once_after_a_pause(settings: Settings,
                                                                       make: Callable[[], Platform]) -> None:
    """A chat that answers after the client gave up got the signed file 6 times (retries every
    1, 2, 4 s raced the first request). Now every platform's client says the message may have
    arrived; nothing is sent again until the pause has passed, then once more with the same key —
    which a platform honouring keys drops, as the first request has long been acted on by then."""
    platform = make()
    chat = chat_for(platform)
    settings = settings.model_copy(update={"resend_pause": timedelta(seconds=1)})
    arg = FileMessageInput(request_id="r-2", chat=chat, document=DOC)
    with activities(settings, platform) as (engine, base):
        async with httpx.AsyncClient() as http:
            acts = acts_for(settings, engine, http, platform.client(base, engine, http, 0.3))
            env = ActivityEnvironment()
            platform.late.hold(1.0)  # acts on each request, answers after 1 s
            with pytest.raises(ApplicationError, match="did not answer") as first:
                await env.run(acts.send_file, arg)
            assert first.value.type == "ChatUnavailable"
            await wait_for(lambda: platform.delivered() == 1)  # the chat did post it
            with pytest.raises(ApplicationError) as waiting:  # a retry now could race the first request
                await env.run(acts.send_file, arg)
            assert waiting.value.type == "SendUnconfirmed" and waiting.value.next_retry_delay is not None
            assert timedelta(0) < waiting.value.next_retry_delay <= timedelta(seconds=1)
            assert platform.late.arrivals == 1  # nothing was sent while waiting
            platform.late.release()
            await asyncio.sleep(waiting.value.next_retry_delay.total_seconds())
            await env.run(acts.send_file, arg)  # re-sent once, with the same key
            await env.run(acts.send_file, arg)  # confirmed: never sent again
    assert platform.late.arrivals == 2
    assert platform.delivered() == (1 if platform.honours_keys else 2)
    with Session(engine) as session:
        row = session.exec(select(SentMessage).where(SentMessage.key == "r-2:signed-file")).one()
    assert (row.state, row.attempts) == ("sent", 2)


async def test_texts_are_worded_in_the_chat_language(settings: Settings) -> None:
    """The workflow names a kind of message; the activity words it for the chat: zh on the webhook
    IM, en where SIGNBRIDGE_CARD_LANGUAGE says so. A ready-made text (older flows) goes as it is."""
    chat = ChatRef(chat_id="g-1", source_event_id="e-1")
    declined = dict(kind="declined", params={"who": "王五", "title": "合同", "reason": ""})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    with WebhookSink(SECRET) as sink:
        async with httpx.AsyncClient() as http:
            connector = WebhookChat(sink.url, SECRET, http)
            env = ActivityEnvironment()
            for lang, key in (("", "zh"), ("en", "en")):
                acts = acts_for(settings.model_copy(update={"card_language": lang}), engine, http, connector)
                await env.run(acts.send_text, TextMessageInput(request_id="r-3", chat=chat, key=key, **declined))
            await env.run(acts.send_text, TextMessageInput(request_id="r-3", chat=chat, key="old", text="旧的文本"))
    assert [m["text"] for m in sink.messages] == [
        "王五 拒绝签署「合同」。原因：未说明", "王五 declined to sign “合同”. Reason: none given", "旧的文本"]
