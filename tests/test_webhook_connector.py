"""`WebhookChat` against a real HTTP receiver that verifies every signature (tests/sim/webhook_sink.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from connectors.chat.base import ChatConnector, ChatError, ChatRejected, ChatUnavailable, OutboundFile
from connectors.chat.webhook.client import WebhookChat
from connectors.http import retry_after_seconds
from signbridge.core.cards import build_card
from signbridge.core.models import ChatRef, DocumentInfo, Person, SignerState, SignStatus, StatusView
from tests.sim.servers import free_port
from tests.sim.webhook_sink import WebhookSink

SECRET = "connector-test-secret"
CHAT = ChatRef(chat_id="g-1", source_event_id="e-1")
LISI = Person(id="u-2", name="李四")
DOC = DocumentInfo(name="contract.pdf", sha256="ab" * 32, blob_key="k1", size=10, pages=1)


def view(status: SignStatus = SignStatus.IN_PROGRESS, signed: bool = False) -> StatusView:
    return StatusView(request_id="sign:test:1", title="销售合同", status=status, provider="local",
                      initiator=Person(id="u-0", name="张三"), chat=CHAT, document=DOC,
                      signers=[SignerState(person=LISI, group=0, status="signed" if signed else "notified")])


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    with WebhookSink(SECRET) as s:
        yield s


@pytest.fixture
def chat(sink: WebhookSink) -> WebhookChat:
    return WebhookChat(sink.url, SECRET)


def test_is_a_chat_connector(chat: WebhookChat) -> None:
    connector: ChatConnector = chat
    assert connector.platform == "webhook"
    assert SECRET not in repr(chat)


async def test_card_upsert_shape_and_keys(chat: WebhookChat, sink: WebhookSink) -> None:
    card = build_card(view())
    await chat.upsert_card(CHAT, "sign:test:1", card)
    await chat.upsert_card(CHAT, "sign:test:1", card)  # a retried activity: same key
    await chat.upsert_card(CHAT, "sign:test:1", build_card(view(signed=True)))  # a real change: new key

    assert sink.rejected == 0 and len(sink.messages) == 3
    first, again, changed = sink.messages
    assert set(first) == {"type", "chat_id", "card_key", "card", "idempotency_key"}
    assert first["type"] == "card.upsert" and first["chat_id"] == "g-1" and first["card_key"] == "sign:test:1"
    assert first["card"] == card.as_dict()
    assert first["idempotency_key"].startswith("sign:test:1:card:")
    assert again["idempotency_key"] == first["idempotency_key"]
    assert changed["idempotency_key"] != first["idempotency_key"]
    assert [c["signers"][0]["state"] for c in sink.cards("sign:test:1")] == ["notified", "notified", "signed"]
    for attempt in sink.attempts:
        assert attempt.headers["idempotency-key"] == attempt.body["idempotency_key"]
        assert attempt.headers["content-type"] == "application/json"


async def test_link_text_and_file_shapes(chat: WebhookChat, sink: WebhookSink) -> None:
    await chat.send_link(CHAT, LISI, "请签署「销售合同」", "https://sb.example/sign/t1", key="sign:test:1:link:u-2")
    await chat.send_text(CHAT, None, "已完成", key="sign:test:1:done")
    await chat.send_text(CHAT, LISI, "提醒", key="sign:test:1:dm")
    await chat.send_file(CHAT, None, OutboundFile(name="contract-signed.pdf", sha256=DOC.sha256, size=DOC.size,
                                                  url="https://sb.example/files/x"), key="sign:test:1:file")

    link, to_chat, to_person, file = sink.messages
    assert link == {"type": "message", "chat_id": "g-1", "to": "u-2", "text": "请签署「销售合同」",
                    "sign_url": "https://sb.example/sign/t1", "idempotency_key": "sign:test:1:link:u-2"}
    assert to_chat == {"type": "message", "chat_id": "g-1", "to": None, "text": "已完成",
                       "idempotency_key": "sign:test:1:done"}
    assert to_person["to"] == "u-2" and to_person["text"] == "提醒"
    assert file == {"type": "file", "chat_id": "g-1", "to": None, "name": "contract-signed.pdf", "kind": "signed",
                    "url": "https://sb.example/files/x", "sha256": DOC.sha256, "size": DOC.size,
                    "idempotency_key": "sign:test:1:file"}
    assert sink.rejected == 0


async def test_a_key_in_chinese_goes_out_percent_encoded_in_the_header(chat: WebhookChat, sink: WebhookSink) -> None:
    """A chat's event id may be Chinese; a header carries ASCII only (httpx refused to send it, and
    the message was retried for ever): the header carries the key percent-encoded, the body as it is."""
    key = "sign:webhook:default:事件-1:done"
    await chat.send_text(CHAT, None, "已完成", key=key)
    await chat.send_text(CHAT, None, "已完成", key=key)  # a retry carries the same header
    [attempt, again] = sink.attempts
    assert attempt.body["idempotency_key"] == key
    assert attempt.headers["idempotency-key"] == "sign:webhook:default:%E4%BA%8B%E4%BB%B6-1:done"
    assert again.headers["idempotency-key"] == attempt.headers["idempotency-key"]


async def test_wrong_secret_is_refused_by_the_receiver(sink: WebhookSink) -> None:
    forged = WebhookChat(sink.url, "not-the-secret")
    with pytest.raises(ChatRejected) as err:
        await forged.send_text(CHAT, None, "hi", key="k")
    assert err.value.status == 401 and err.value.non_retryable
    assert sink.rejected == 1 and sink.messages == []


async def test_outage_is_retryable(chat: WebhookChat, sink: WebhookSink) -> None:
    sink.fail_next(1, status=503)
    with pytest.raises(ChatError) as err:
        await chat.send_text(CHAT, None, "hi", key="k1")
    assert not isinstance(err.value, ChatRejected) and not getattr(err.value, "non_retryable", False)
    assert "503" in str(err.value)
    await chat.send_text(CHAT, None, "hi", key="k1")  # the retry goes through
    assert [a.status for a in sink.attempts] == [503, 200]
    assert [m["idempotency_key"] for m in sink.messages] == ["k1"]


async def test_request_timeout_408_is_retryable(chat: WebhookChat, sink: WebhookSink) -> None:
    sink.fail_next(1, status=408)
    with pytest.raises(ChatUnavailable):
        await chat.send_text(CHAT, None, "hi", key="k")


async def test_rate_limit_carries_retry_after(chat: WebhookChat, sink: WebhookSink) -> None:
    sink.rate_limit_next(1, retry_after=7)
    with pytest.raises(ChatError) as err:
        await chat.send_link(CHAT, LISI, "请签署", "https://sb.example/sign/t", key="k")
    assert isinstance(err.value, ChatUnavailable)
    assert err.value.retry_after == 7.0
    assert not getattr(err.value, "non_retryable", False)


async def test_client_error_is_not_retryable(chat: WebhookChat, sink: WebhookSink) -> None:
    sink.fail_next(1, status=400)
    with pytest.raises(ChatRejected) as err:
        await chat.upsert_card(CHAT, "sign:test:1", build_card(view()))
    assert isinstance(err.value, ChatError) and err.value.non_retryable is True and err.value.status == 400


async def test_connection_refused_is_retryable() -> None:
    chat = WebhookChat(f"http://127.0.0.1:{free_port()}/outbound", SECRET)
    with pytest.raises(ChatUnavailable):
        await chat.send_text(CHAT, None, "hi", key="k")


async def test_shared_http_client_is_used(sink: WebhookSink) -> None:
    async with httpx.AsyncClient() as http:
        chat = WebhookChat(sink.url, SECRET, http)
        await chat.send_text(CHAT, None, "one", key="k1")
        await chat.send_text(CHAT, None, "two", key="k2")
    assert [m["text"] for m in sink.messages] == ["one", "two"]


async def test_no_outbound_url_drops_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    chat = WebhookChat("", SECRET)
    with caplog.at_level(logging.WARNING, logger="connectors.chat.webhook.client"):
        await chat.send_text(CHAT, None, "hi", key="k1")
        await chat.upsert_card(CHAT, "c", build_card(view()))
    warnings = [r for r in caplog.records if r.name == "connectors.chat.webhook.client"]
    assert len(warnings) == 1 and SECRET not in warnings[0].getMessage()


def test_retry_after_forms() -> None:
    from datetime import UTC, datetime

    now = datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Mon, 01 Jan 2024 00:00:30 GMT", now=now) == 30.0
    assert retry_after_seconds("Mon, 01 Jan 2023 00:00:30 GMT", now=now) == 0.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
