"""Chat activities deliver each keyed message once, however often they run.

A local activity re-runs when its workflow task's completion is refused (a signal arrived
while the flow completed) and any activity re-runs after a worker dies mid-step; people must
still see one link, one text, one signed file.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.chat import ChatActivities
from activities.deps import Deps
from connectors.chat.webhook.client import WebhookChat
from signbridge.core.models import ChatRef, DocumentInfo, FileMessageInput, LinkMessageInput, Person, TextMessageInput
from signbridge.core.settings import Settings
from store.blob_factory import make_blob_store
from store.db import create_all, get_engine
from store.tables import SentMessage
from tests.sim.webhook_sink import WebhookSink

CHAT = ChatRef(chat_id="g-1", source_event_id="e-1")
SIGNER = Person(id="u-1", name="李四")


async def test_each_message_is_delivered_once(settings: Settings) -> None:
    secret = settings.webhook_secret.get_secret_value()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    with WebhookSink(secret) as sink:
        async with httpx.AsyncClient() as http:
            chat = WebhookChat(sink.url, secret, http)
            acts = ChatActivities(Deps(settings=settings, engine=engine, blobs=make_blob_store(settings), http=http,
                                       chats={"webhook": chat}, providers={}))
            env = ActivityEnvironment()
            doc = DocumentInfo(name="c.pdf", blob_key="k", sha256="0" * 64, size=1, pages=1)
            link = LinkMessageInput(request_id="r-1", chat=CHAT, to=SIGNER, title="合同", sign_url="https://x/s/1",
                                    key="link:u-1")
            for _ in range(2):
                await env.run(acts.send_link, link)
                await env.run(acts.send_text, TextMessageInput(request_id="r-1", chat=CHAT, key="declined", text="t"))
                await env.run(acts.send_file, FileMessageInput(request_id="r-1", chat=CHAT, document=doc))
            # A different key is a different message (a reminder), and is delivered.
            await env.run(acts.send_link, link.model_copy(update={"key": "reminder:u-1:1", "reminder": True}))
    kinds = [(m["type"], m.get("idempotency_key")) for m in sink.messages]
    assert kinds == [("message", "r-1:link:u-1"), ("message", "r-1:declined"), ("file", "r-1:signed-file"),
                     ("message", "r-1:reminder:u-1:1")], kinds


async def test_a_send_without_an_answer_is_repeated_once_after_a_pause(settings: Settings) -> None:
    """A chat that answers after the client gave up got the signed file 6 times (retries every
    1, 2, 4 s raced the first request). Now: the unanswered send stays in flight, nothing is sent
    again until the pause has passed, then once more with the same key — which a chat honouring
    idempotency keys drops, as the first request has long been acted on by then."""
    secret = settings.webhook_secret.get_secret_value()
    settings = settings.model_copy(update={"resend_pause": timedelta(seconds=1.5)})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    doc = DocumentInfo(name="c.pdf", blob_key="k", sha256="0" * 64, size=1, pages=1)
    arg = FileMessageInput(request_id="r-2", chat=CHAT, document=doc)
    with WebhookSink(secret) as sink:
        sink.slow(1.0)  # acts on each request, answers after 1 s
        async with httpx.AsyncClient() as http:
            chat = WebhookChat(sink.url, secret, http, timeout=0.3)
            acts = ChatActivities(Deps(settings=settings, engine=engine, blobs=make_blob_store(settings), http=http,
                                       chats={"webhook": chat}, providers={}))
            env = ActivityEnvironment()
            with pytest.raises(ApplicationError, match="did not answer") as first:
                await env.run(acts.send_file, arg)
            assert first.value.type == "ChatUnavailable"
            await sink.wait_for(lambda: len(sink.of_type("file")) == 1, timeout=5)  # the chat did post it
            with pytest.raises(ApplicationError) as waiting:  # a retry now would race nothing, but could
                await env.run(acts.send_file, arg)
            assert waiting.value.type == "SendUnconfirmed" and waiting.value.next_retry_delay is not None
            assert timedelta(0) < waiting.value.next_retry_delay <= timedelta(seconds=1.5)
            assert len(sink.arrivals) == 1  # nothing was sent while waiting
            await asyncio.sleep(waiting.value.next_retry_delay.total_seconds())
            await env.run(acts.send_file, arg)  # re-sent once, same key: the chat answers "duplicate" at once
            await env.run(acts.send_file, arg)  # confirmed: never sent again
    keys = [a["idempotency_key"] for a in sink.arrivals]
    assert keys == ["r-2:signed-file", "r-2:signed-file"]
    assert len(sink.of_type("file")) == 1
    with Session(engine) as session:
        row = session.exec(select(SentMessage).where(SentMessage.key == "r-2:signed-file")).one()
    assert (row.state, row.attempts) == ("sent", 2)


async def test_texts_are_worded_in_the_chat_language(settings: Settings) -> None:
    """The workflow names a kind of message; the activity words it for the chat: zh on the webhook
    IM, en where SIGNBRIDGE_CARD_LANGUAGE says so. A ready-made text (older flows) goes as it is."""
    secret = settings.webhook_secret.get_secret_value()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    declined = dict(kind="declined", params={"who": "王五", "title": "合同", "reason": ""})
    with WebhookSink(secret) as sink:
        async with httpx.AsyncClient() as http:
            chat = WebhookChat(sink.url, secret, http)
            env = ActivityEnvironment()
            for lang, key in (("", "zh"), ("en", "en")):
                acts = ChatActivities(Deps(settings=settings.model_copy(update={"card_language": lang}),
                                           engine=engine, blobs=make_blob_store(settings), http=http,
                                           chats={"webhook": chat}, providers={}))
                await env.run(acts.send_text, TextMessageInput(request_id="r-3", chat=CHAT, key=key, **declined))
            await env.run(acts.send_text, TextMessageInput(request_id="r-3", chat=CHAT, key="old", text="旧的文本"))
    assert [m["text"] for m in sink.messages] == ["王五 拒绝签署「合同」。原因：未说明",
                                                  "王五 declined to sign “合同”. Reason: none given", "旧的文本"]
