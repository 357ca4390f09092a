"""Feishu/Lark both ways, over real HTTP: the callbacks SignBridge accepts and the Open API it calls.

The Open API is `tests.sim.feishu_sim.FeishuSim` (tokens that expire, rate limits, the 14-day
update window, resigned users). Callbacks are built like Feishu's servers build them
(AES-256-CBC + X-Lark-Signature). The end-to-end test runs the real worker on the Temporal dev
server and the real API app with `serve`, so signing links work over HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from connectors.chat.base import ChatUnavailable, InputProblem
from connectors.chat.feishu.cards import MAX_CARD_BYTES, card_content, render_card
from connectors.chat.feishu.client import FeishuChat, FeishuConfig, build, source_url
from connectors.chat.feishu.inbound import decrypt, signature
from signbridge.core.cards import build_card
from signbridge.core.models import (
    ChatRef,
    DocumentInfo,
    DocumentSource,
    Person,
    SignerState,
    SignStatus,
    StatusView,
)
from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from store.db import create_all, get_engine
from store.tables import ChatMessage
from tests.chat_cases import rig_for
from tests.chat_cases.feishu import ENV, KEY, TENANT, TOKEN, card_event, command_event, file_event, pushed
from tests.chat_cases.feishu import Case as FeishuCase
from tests.codes import sign_with_code
from tests.sim.feishu_sim import FeishuSim, encrypt, push_headers
from tests.sim.servers import free_port, serve
from worker import build_worker

GOLDEN = Path(__file__).parent / "golden"


def feishu_config(api_base: str = "http://127.0.0.1:9", encrypt_key: str = KEY) -> FeishuConfig:
    return FeishuConfig(app_id="cli_test", app_secret=SecretStr("secret"), encrypt_key=SecretStr(encrypt_key),
                        verification_token=SecretStr(TOKEN), api_base=api_base)


# ---- published and derived vectors ----------------------------------------------------------------

def test_published_decryption_vector() -> None:
    assert decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk=") == "hello world"


def test_derived_signature_vector() -> None:
    body = b'{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}'
    assert signature("1700000000", "nonce", "test key", body) == \
        "20f0b32d8b1a0744b1608bcfcf23584190cd720f9bd706adde9047c85ffb47ee"
    assert push_headers("test key", body, 1700000000, "nonce")["X-Lark-Signature"] == signature(
        "1700000000", "nonce", "test key", body)


def test_round_trip_of_the_simulators_encryption() -> None:
    assert decrypt(KEY, encrypt(KEY, '{"a":"中文"}')) == '{"a":"中文"}'


# ---- cards ----------------------------------------------------------------------------------------

def _view(status: SignStatus, signed: int, reason: str | None = None, many: int = 0) -> StatusView:
    people = [Person(id="ou_a", name="李四"), Person(id="ou_b", name="王五"),
              Person(id="x-9", name="客户A", email="a@customer.example", external=True)]
    people += [Person(id=f"ou_{i}", name=f"签署人{i}") for i in range(many)]
    groups = [0, 0, 1] + [1] * many
    states = [SignerState(person=p, group=g, status="signed" if i < signed else ("notified" if g == 0 else "waiting"))
              for i, (p, g) in enumerate(zip(people, groups, strict=True))]
    doc = DocumentInfo(name="contract.pdf", sha256="ab" * 32, blob_key="ab" * 32, size=1000, pages=2)
    return StatusView(request_id="sign:feishu:tenant-1:ev-1", title="销售合同 2024", status=status, provider="local",
                      initiator=Person(id="ou_init", name="张三"),
                      chat=ChatRef(platform="feishu", tenant=TENANT, chat_id="oc_1", source_event_id="ev-1"),
                      document=doc, signers=states, reason=reason)


@pytest.mark.parametrize(("status", "signed", "reason"), [
    (SignStatus.IN_PROGRESS, 1, None),
    (SignStatus.STUCK, 1, "update the card: Feishu failed (HTTP 503)"),
    (SignStatus.COMPLETED, 3, None),
])
def test_golden_cards(status: SignStatus, signed: int, reason: str | None) -> None:
    card = render_card(build_card(_view(status, signed, reason), lang="zh"))
    path = GOLDEN / f"feishu_{status.value.lower()}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    assert card == json.loads(path.read_text(encoding="utf-8"))
    assert card["schema"] == "2.0" and card["config"]["update_multi"] is True
    assert len(card_content(card).encode()) <= MAX_CARD_BYTES


def test_huge_card_stays_under_30_kb() -> None:
    card = render_card(build_card(_view(SignStatus.IN_PROGRESS, 0, many=2000), lang="zh"))
    text = card_content(card)
    assert len(text.encode()) <= MAX_CARD_BYTES and "另有" in text


# ---- the connector against the simulator ------------------------------------------------------------

@pytest.fixture
def sim() -> Iterator[FeishuSim]:
    with FeishuSim() as s:
        yield s


def _chat(tmp_path: Path, sim: FeishuSim) -> FeishuChat:
    engine = get_engine(f"sqlite:///{tmp_path / 'feishu.db'}")
    create_all(engine)
    return FeishuChat(feishu_config(sim.url), engine)


CHAT = ChatRef(platform="feishu", tenant=TENANT, chat_id="oc_1", source_event_id="ev-1")


async def test_card_is_patched_then_reposted_after_14_days(tmp_path: Path, sim: FeishuSim) -> None:
    chat = _chat(tmp_path, sim)
    card = build_card(_view(SignStatus.IN_PROGRESS, 0))
    await chat.upsert_card(CHAT, "req-1", card)
    await chat.upsert_card(CHAT, "req-1", card)  # an activity retried after its post: PATCH, not a second card
    assert len(sim.cards_in("oc_1")) == 1 and len(sim.patches) == 1
    first = sim.order[0]

    sim.age(first, days=15)  # Feishu refuses the update (our record still looks young)
    await chat.upsert_card(CHAT, "req-1", build_card(_view(SignStatus.IN_PROGRESS, 1)))
    cards = sim.cards_in("oc_1")
    assert len(cards) == 2 and len(sim.patches) == 1
    with Session(chat.engine) as session:
        row = session.exec(select(ChatMessage).where(ChatMessage.card_key == "req-1")).one()
        assert json.loads(row.ref)["message_id"] == cards[1].message_id != first
        row.created_at = datetime.now(UTC) - timedelta(days=15)  # now our record says it is too old
        session.add(row)
        session.commit()
    await chat.upsert_card(CHAT, "req-1", build_card(_view(SignStatus.COMPLETED, 3)))
    assert len(sim.cards_in("oc_1")) == 3 and len(sim.patches) == 1  # posted without trying a doomed PATCH
    await chat.upsert_card(CHAT, "req-1", build_card(_view(SignStatus.COMPLETED, 3)))
    assert sim.patches == [first, sim.order[-1]]
    sim.recall(sim.order[-1])  # someone withdrew the card: the next update posts it again
    await chat.upsert_card(CHAT, "req-1", build_card(_view(SignStatus.COMPLETED, 3)))
    assert len(sim.cards_in("oc_1")) == 4 and len(sim.patches) == 2


async def test_tokens_are_cached_refetched_and_rate_limits_surface(tmp_path: Path, sim: FeishuSim) -> None:
    chat = _chat(tmp_path, sim)
    await chat.send_text(CHAT, None, "一", key="k1")
    await chat.send_text(CHAT, None, "二", key="k2")
    assert sim.tokens_issued == 1
    sim.expire_tokens()
    await chat.send_text(CHAT, None, "三", key="k3")
    assert sim.tokens_issued == 2 and sim.token_errors == 1
    sim.rate_limit_next(1)
    with pytest.raises(ChatUnavailable) as err:
        await chat.send_text(CHAT, None, "四", key="k4")
    assert err.value.retry_after == 1
    await chat.send_text(CHAT, None, "四", key="k4")
    await chat.send_text(CHAT, None, "四", key="k4")  # same key: Feishu's uuid dedupe, one message
    assert [json.loads(m.content)["text"] for m in sim.sent_to("oc_1")] == ["一", "二", "三", "四"]


async def test_resolve_and_download(tmp_path: Path, sim: FeishuSim) -> None:
    chat = _chat(tmp_path, sim)
    sim.add_user("ou_a", "李四", email="ls@corp.example", mobile="+8613800000001")
    sim.add_user("ou_f", "赵六", frozen=True)
    person = await chat.resolve(CHAT, Person(id="ou_a", name="李四"))
    assert (person.email, person.mobile) == ("ls@corp.example", "+8613800000001")
    sim.users.pop("ou_a")
    assert (await chat.resolve(CHAT, Person(id="ou_a", name="李四"))).email == "ls@corp.example"  # cached
    with pytest.raises(InputProblem, match=r"已离职或账号已停用.*cannot sign"):
        await chat.resolve(CHAT, Person(id="ou_f", name="赵六"))
    sim.add_file("om_1", "file_1", b"%PDF-1.7 " + b"x" * 5000)
    src = DocumentSource(name="c.pdf", url=source_url("om_1", "file_1"))
    sim.expire_tokens()
    assert (await chat.download(CHAT, src, 10_000)).startswith(b"%PDF")
    # a reply to a file the bot never received: the file key comes from the message itself
    assert await chat.download(CHAT, DocumentSource(name="c.pdf", url=source_url("om_1", "")), 10_000) \
        == sim.resources[("om_1", "file_1")]
    await chat.send_text(CHAT, None, "not a file", key="t")
    with pytest.raises(InputProblem, match="not a file"):
        await chat.download(CHAT, DocumentSource(name="c.pdf", url=source_url(sim.order[-1], "")), 10_000)
    with pytest.raises(InputProblem, match="MB"):
        await chat.download(CHAT, src, 1000)
    with pytest.raises(InputProblem, match="无法下载"):
        await chat.download(CHAT, DocumentSource(name="c.pdf", url=source_url("om_1", "nope")), 10_000)


# ---- callbacks the shared chat cases (tests/chat_cases/feishu.py) do not cover --------------------

async def push(http: httpx.AsyncClient, url: str, payload: dict[str, Any], **how: Any) -> httpx.Response:
    call = pushed("", payload, **how)
    return await http.post(url, content=call.body, headers=dict(call.headers))


@contextmanager
def api(dev_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
        port: int | None = None) -> Iterator[str]:
    """The API over real HTTP with Feishu configured as `env` says."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = settings.model_copy(update={"temporal_address": dev_env.client.service_client.config.target_host})
    with serve(create_app(settings), port=port) as url:
        yield url


async def test_url_verification_with_and_without_an_encrypt_key(dev_env: WorkflowEnvironment, settings: Settings,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    challenge = {"type": "url_verification", "challenge": "ch-1", "token": TOKEN}
    async with httpx.AsyncClient(timeout=10) as http:
        with api(dev_env, settings, monkeypatch, ENV) as url:
            wrong = json.dumps({"encrypt": encrypt(KEY, json.dumps({**challenge, "token": "nope"}))})
            assert (await http.post(url + "/im/feishu/events", content=wrong)).status_code == 401
            assert (await http.post(url + "/im/feishu/events", json=challenge)).status_code == 401  # must be encrypted
            card = await push(http, f"{url}/im/feishu/card", card_event("sign:feishu:x:y", "cancel", "ou_i", "ev-1"),
                              signing="forged")
            assert card.status_code == 401
        with api(dev_env, settings, monkeypatch, {**ENV, "SIGNBRIDGE_FEISHU_ENCRYPT_KEY": ""}) as url:
            resp = await http.post(url + "/im/feishu/events", json=challenge)
            assert resp.status_code == 200 and resp.json() == {"challenge": "ch-1"}
        with api(dev_env, settings, monkeypatch, {}) as url:
            assert (await http.post(url + "/im/feishu/events", json=challenge)).status_code == 404


async def test_a_reply_names_its_file_seen_or_not(dev_env: WorkflowEnvironment, settings: Settings,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Feishu cannot send a file with text: a command may reply to the file instead — one we kept,
    or one we never received (groups without the read-all scope), which the download looks up."""
    async with rig_for(FeishuCase(), dev_env, settings, monkeypatch) as rig:
        rig.case.accepted(await rig.send(rig.case.file("ev-file")))
        for parent, expected in (("om_file", FeishuCase.file_source),
                                 ("om_unseen", DocumentSource(name="document.pdf", url="feishu://om_unseen/"))):
            event_id = f"ev-{uuid.uuid4().hex[:10]}"
            reply = command_event("oc_1", "ou_other", "@_user_1 sign @_user_2", [("@_user_2", "ou_a", "李四")],
                                  event_id, parent_id=parent)
            rig.case.accepted(await rig.send(pushed("/im/feishu/events", reply)))
            assert (await rig.started_input(rig.case.request_id(event_id))).documents == [expected]


def test_build_reads_the_environment(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    http = httpx.AsyncClient()
    for name in ("APP_ID", "APP_SECRET", "API_BASE"):
        monkeypatch.delenv(f"SIGNBRIDGE_FEISHU_{name}", raising=False)
    assert build(settings, http) is None
    monkeypatch.setenv("SIGNBRIDGE_FEISHU_APP_ID", "cli_env")
    monkeypatch.setenv("SIGNBRIDGE_FEISHU_APP_SECRET", "s3cret")
    monkeypatch.setenv("SIGNBRIDGE_FEISHU_API_BASE", "https://open.larksuite.com/")
    chat = build(settings, http)
    assert chat is not None and chat.platform == "feishu" and chat.config.base == "https://open.larksuite.com"
    assert "s3cret" not in repr(chat) and "s3cret" not in repr(chat.config)


# ---- end to end -------------------------------------------------------------------------------------

@dataclass
class Stack:
    api: str
    sim: FeishuSim
    client: Client
    settings: Settings

    def link(self, open_id: str) -> str | None:
        cards = [m for m in self.sim.sent_to(open_id) if m.msg_type == "interactive"]
        for m in reversed(cards):
            urls = re.findall(r'"default_url":"([^"]+)"', m.content)
            if urls:
                return urls[0]
        return None

    def status_cards(self, chat_id: str) -> list[Any]:
        return [m for m in self.sim.cards_in(chat_id) if "text_tag_list" in m.card.get("header", {})]

    async def sign(self, http: httpx.AsyncClient, open_id: str, name: str, count: int = 1) -> None:
        await self.sim.wait_for(lambda: len([m for m in self.sim.sent_to(open_id)
                                             if m.msg_type == "interactive"]) >= count, timeout=30)
        url = self.link(open_id)
        assert url and url.startswith(self.api)
        resp = await sign_with_code(http, self.settings, url, name)
        assert resp.status_code == 200, resp.text

    async def wait_status(self, request_id: str, status: str, timeout: float = 40) -> StatusView:
        handle = self.client.get_workflow_handle(request_id)
        end = time.monotonic() + timeout
        while True:
            view: StatusView = await handle.query("status", result_type=StatusView)
            if view.status.value == status:
                return view
            assert time.monotonic() < end, f"{request_id} is {view.status.value}, expected {status}"
            await asyncio.sleep(0.1)


async def test_end_to_end_over_feishu(dev_env: WorkflowEnvironment, settings: Settings,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    contract = sample_contract("Sales Contract", pages=1)
    port = free_port()
    settings = settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}",
                                           "step_retry_window": timedelta(seconds=30)})
    with FeishuSim() as sim, api(dev_env, settings, monkeypatch, ENV, port=port) as url:
        sim.add_user("ou_init", "张三", email="zs@corp.example")
        sim.add_user("ou_a", "李四", email="ls@corp.example")
        sim.add_user("ou_b", "王五", mobile="+8613800000002")
        sim.add_user("ou_gone", "钱七", resigned=True)
        sim.add_file("om_file", "file_v2_1", contract)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        chat = FeishuChat(feishu_config(sim.url), get_engine(settings.sqlalchemy_url))
        stack = Stack(api=url, sim=sim, client=dev_env.client, settings=settings)
        async with build_worker(dev_env.client, settings, chats={"feishu": chat}) as worker, worker, \
                httpx.AsyncClient(timeout=30) as http:
            events = f"{url}/im/feishu/events"
            assert (await push(http, events, file_event("oc_1", "ou_init", "om_file", "file_v2_1"))).status_code == 200
            body = command_event("oc_1", "ou_init", "@_user_1 sign @_user_2 > @_user_3",
                                 [("@_user_2", "ou_a", "李四"), ("@_user_3", "ou_b", "王五")], "ev-e2e-1")
            resp = await push(http, events, body)
            assert resp.status_code == 200 and resp.json()["started"] is True
            request_id = resp.json()["request_id"]

            await sim.wait_for(lambda: stack.link("ou_a") is not None)
            # the initiator's "remind" button: 李四 gets the link again; a stranger may not cancel
            card = f"{url}/im/feishu/card"
            clicked = await push(http, card, card_event(request_id, "remind", "ou_init", "ev-click-1"))
            assert clicked.status_code == 200 and clicked.json()["toast"]["type"] == "success", clicked.text
            stranger = await push(http, card, card_event(request_id, "cancel", "ou_x", "ev-click-2"))
            assert stranger.json()["toast"]["type"] == "error" and "发起人" in stranger.json()["toast"]["content"]
            await stack.sign(http, "ou_a", "李四", count=2)

            sim.rate_limit_next(4)  # a 429 storm while the flow moves on to 王五
            await sim.wait_for(lambda: stack.link("ou_b") is not None)
            sim.expire_tokens()  # every token dies before the next card update
            await stack.sign(http, "ou_b", "王五")
            view = await stack.wait_status(request_id, "COMPLETED")
            await sim.wait_for(lambda: len(sim.files_in("oc_1")) == 2
                               and "已完成" in stack.status_cards("oc_1")[0].content)

            # a resigned colleague: the flow ends REJECTED and says why in the chat
            gone = command_event("oc_2", "ou_init", "@_user_1 sign @_user_2", [("@_user_2", "ou_gone", "钱七")],
                                 "ev-e2e-2")
            assert (await push(http, events, file_event("oc_2", "ou_init", "om_file", "file_v2_1"))).status_code == 200
            gone_id = (await push(http, events, gone)).json()["request_id"]
            rejected = await stack.wait_status(gone_id, "REJECTED")
            late = await push(http, card, card_event(request_id, "remind", "ou_init", "ev-click-3"))
            assert late.status_code == 200 and late.json()["toast"]["type"] == "warning"  # the flow has ended
            await sim.wait_for(lambda: any(m.msg_type == "text" for m in sim.sent_to("oc_2")))

        # exactly one status card, PATCHed for each change, ending COMPLETED
        cards = stack.status_cards("oc_1")
        assert len(cards) == 1
        card = cards[0]
        assert set(sim.patches) == {card.message_id} and len(card.versions) == sim.patches.count(card.message_id) + 1
        signed_counts = [v.count("✅") for v in card.versions]
        assert signed_counts == sorted(signed_counts) and {1, 2} <= set(signed_counts) and signed_counts[-1] == 2
        assert "已完成" in card.versions[-1] and '"update_multi":true' in card.versions[-1]
        # one link for 王五 (none lost or doubled by the storm), link + reminder for 李四
        assert len([m for m in sim.sent_to("ou_b") if m.msg_type == "interactive"]) == 1
        assert len([m for m in sim.sent_to("ou_a") if m.msg_type == "interactive"]) == 2
        assert sim.rate_limited == 4 and sim.tokens_issued >= 2 and sim.token_errors >= 1
        # the signed file went to the chat as a file (then the certificate), the original plus signatures
        assert [m for m in sim.cards_in("oc_1") if m is not card] == []
        (signed_name, signed), (certificate_name, certificate) = sim.files_in("oc_1")
        assert view.signed_document and hashlib.sha256(signed).hexdigest() == view.signed_document.sha256
        assert signed.startswith(contract) and len(signed) > len(contract)
        assert signed_name.endswith(".signed.pdf") and "签署完成证明" in certificate_name
        assert certificate.startswith(b"%PDF")
        # the rejection reason, in Chinese and English
        assert rejected.reason and "钱七" in rejected.reason
        text = json.loads(next(m for m in sim.sent_to("oc_2") if m.msg_type == "text").content)["text"]
        assert "已离职" in text and "left the company" in text
        assert "无法发起" in stack.status_cards("oc_2")[-1].content
