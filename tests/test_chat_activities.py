"""Chat activities deliver each keyed message once, however often they run.

A local activity re-runs when its workflow task's completion is refused (a signal arrived
while the flow completed) and any activity re-runs after a worker dies mid-step; people must
still see one link, one text, one signed file.
"""

from __future__ import annotations

import httpx
from temporalio.testing import ActivityEnvironment

from activities.chat import ChatActivities
from activities.deps import Deps
from connectors.chat.webhook.client import WebhookChat
from signbridge.core.models import ChatRef, DocumentInfo, FileMessageInput, LinkMessageInput, Person, TextMessageInput
from signbridge.core.settings import Settings
from store.blob_factory import make_blob_store
from store.db import create_all, get_engine
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
