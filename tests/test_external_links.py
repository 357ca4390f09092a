"""External signers of the built-in provider are reached by SMS or email, never by the chat: the
link goes out once through `connectors.notify` (the development mailbox, or a real SMS simulator),
the group card says how — with the contact masked — and a link locked after wrong codes shows on
the card. Through the real workflow on the time-skipping server."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from sqlalchemy import update
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from connectors.notify.dev import read_outbox
from connectors.notify.registry import Notifier
from signbridge.core.models import Person
from signbridge.core.settings import Settings
from store import audit
from store.db import get_engine
from store.tables import LocalSigner, utcnow
from tests.harness import A, C, Harness, harness
from tests.sim import tencent_sms_sim as tc

WANG = Person(id="x-1", name="王总", mobile="+8613812341234", external=True)
JSON = {"Accept": "application/json"}


def card_texts(h: Harness, handle: Any) -> str:
    return json.dumps(h.cards(handle), ensure_ascii=False)


async def test_an_external_signer_gets_the_link_by_email_and_the_card_masks_the_address(
        ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A, C]])
        url = await h.link(handle, C)
        assert not [m for m in h.sink.messages if m.get("to") == C.id]  # not through the chat
        [mail] = [e for e in read_outbox(h.settings) if e["purpose"] == "link" and handle.id in e["key"]]
        assert mail["to"] == "a@customer.example" and url in mail["text"] and "销售合同" in mail["subject"]
        await h.sink.wait_for(lambda: "a***@customer.example" in card_texts(h, handle), timeout=20)
        cards = card_texts(h, handle)
        assert "链接已通过邮件发送给 客户A（a***@customer.example）" in cards
        assert "a@customer.example" not in cards
        await h.sign(handle, A)
        await h.sign(handle, C)  # with the code from the mailbox
        view = await handle.result()
        assert view.status == "COMPLETED"
        trail = audit.trail_of(get_engine(h.settings.sqlalchemy_url), handle.id)
        [sent] = [e for e in trail if e.action == "signer.link_sent" and json.loads(e.detail)["signer"] == "x-9"]
        assert json.loads(sent.detail) == {"signer": "x-9", "channel": "email", "sent_to": "a***@customer.example",
                                           "reminder": False}
        [signed] = [json.loads(e.detail) for e in trail if e.action == "signer.signed" and e.actor == "x-9"]
        assert signed["verification"] == "email_code"


async def test_an_external_signer_gets_the_link_and_the_code_by_sms_at_tencent(
        ts_env: WorkflowEnvironment, settings: Settings) -> None:
    with tc.tencent_sms() as (url, sim):
        configured = settings.model_copy(update=dict(
            tencent_sms_secret_id=tc.SECRET_ID, tencent_sms_secret_key=SecretStr(tc.SECRET_KEY),
            tencent_sms_sdk_app_id=tc.APP_ID, tencent_sms_sign_name=tc.SIGN_NAME,
            tencent_sms_code_template_id=tc.CODE_TEMPLATE, tencent_sms_link_template_id=tc.LINK_TEMPLATE,
            tencent_sms_endpoint=url))
        async with harness(ts_env, configured) as h:
            handle = await h.start([[WANG]])
            await h.sink.wait_for(lambda: bool(sim.links_to("13812341234")), timeout=20)
            [link] = sim.links_to("13812341234")
            await h.sink.wait_for(lambda: "138****1234" in card_texts(h, handle), timeout=20)
            assert "链接已通过短信发送给 王总（138****1234）" in card_texts(h, handle)
            assert "13812341234" not in card_texts(h, handle)
            path = h.path(link)
            assert (await h.http.post(f"{path}/code", headers=JSON)).status_code == 200
            [code] = sim.codes_to("13812341234")
            signed = await h.http.post(path, data={"name": "王总", "consent": "yes", "code": code}, headers=JSON)
            assert signed.status_code == 200, signed.text
            assert (await handle.result()).status == "COMPLETED"


async def test_a_link_locked_after_wrong_codes_shows_on_the_card(ts_env: WorkflowEnvironment,
                                                                 settings: Settings) -> None:
    async with harness(ts_env, settings) as h:
        handle = await h.start([[C]])
        path = h.path(await h.link(handle, C))
        assert (await h.http.post(f"{path}/code", headers=JSON)).status_code == 200
        codes = [e["params"]["code"] for e in read_outbox(h.settings) if e["purpose"] == "code"]
        wrong = f"{(int(codes[-1]) + 1) % 10**6:06d}"
        for _ in range(5):
            last = await h.http.post(path, data={"name": C.name, "consent": "yes", "code": wrong}, headers=JSON)
        assert last.status_code == 429
        await h.sink.wait_for(lambda: "链接锁定至" in card_texts(h, handle), timeout=20)
        view = await h.status(handle)
        assert view.signers[0].locked_until is not None and view.signers[0].status == "notified"
        # Fifteen minutes later (the lock moved into the past): a new code, and the flow completes.
        with Session(get_engine(h.settings.sqlalchemy_url)) as s:
            s.execute(update(LocalSigner).values(locked_until=utcnow() - timedelta(seconds=1), last_code_at=None))
            s.commit()
        await h.sign(handle, C)
        assert (await handle.result()).status == "COMPLETED"
        if os.environ.get("SIGNBRIDGE_RECORD_HISTORIES") == "1":  # for tests/test_replay.py
            history = await handle.fetch_history()
            (Path(__file__).parent / "histories" / "link-locked.json").write_text(history.to_json())


async def test_an_external_signer_no_sender_can_reach_is_rejected_at_prepare(
        ts_env: WorkflowEnvironment, settings: Settings) -> None:
    async with harness(ts_env, settings, notify=Notifier()) as h:  # nothing configured, as in production
        handle = await h.start([[A], [C]])
        view = await handle.result()
        assert view.status == "REJECTED" and view.reason is not None
        assert "无法把签署链接发送给外部签署人 客户A：未配置邮件服务" in view.reason
        assert h.provider.calls == 0 and not h.links_for(handle, A)


def test_the_card_in_english_and_chinese_never_shows_the_full_contact() -> None:
    from datetime import UTC, datetime

    from signbridge.core.cards import build_card
    from signbridge.core.models import ChatRef, SignerState, SignStatus, StatusView

    view = StatusView(request_id="r", title="合同", status=SignStatus.IN_PROGRESS, provider="local",
                      initiator=A, chat=ChatRef(chat_id="g", source_event_id="e"),
                      signers=[SignerState(person=WANG, group=0, status="notified",
                                           locked_until=datetime(2026, 12, 5, 10, 15, tzinfo=UTC)),
                               SignerState(person=C, group=1)])
    reached = {"x-1": ("sms", "138****1234")}
    zh = build_card(view, "zh", reached).as_dict()
    en = build_card(view, "en", reached).as_dict()
    assert zh["signers"][0]["reached"] == "链接已通过短信发送给 王总（138****1234）"  # type: ignore[index]
    assert "链接锁定至 10:15 UTC" in zh["signers"][0]["state_text"]  # type: ignore[index]
    assert en["signers"][0]["reached"] == "link sent to 王总 by SMS (138****1234)"  # type: ignore[index]
    assert "locked until 10:15 UTC" in en["signers"][0]["state_text"]  # type: ignore[index]
    assert "reached" not in zh["signers"][1]  # type: ignore[index]  # queued: nothing went out yet
    assert "13812341234" not in json.dumps([zh, en], ensure_ascii=False)
