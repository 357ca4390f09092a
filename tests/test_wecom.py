"""WeCom (企业微信) both ways, over real HTTP: the published URL-check vector, encrypted callbacks,
card clicks, the connector against a WeCom simulator (`tests/sim/wecom_sim.py`), and the whole
flow on the real Temporal dev server with the real worker and API app.

Golden files: `SIGNBRIDGE_UPDATE_GOLDEN=1 pytest tests/test_wecom.py -k golden` rewrites them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlmodel import Session, select
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from wechatpy.enterprise.crypto import WeChatCrypto

from api.main import create_app
from connectors.chat.base import ChatRejected, ChatUnavailable, InputProblem
from connectors.chat.wecom.cards import render_card
from connectors.chat.wecom.client import WeComChat, WeComConfig, build, media_source, store_response_code
from signbridge.core.cards import build_card
from signbridge.core.models import ChatRef, DocumentInfo, Person, SignerState, SignStatus, StatusView
from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from store.db import create_all, get_engine
from store.tables import ChatMessage, Identity, utcnow
from tests.chat_cases import exists
from tests.chat_cases.wecom import AES_KEY, CORP, SECRET, TOKEN, click_event, encrypted, file_msg, text_msg
from tests.chat_cases.wecom import env as wecom_chat_env
from tests.codes import sign_with_code
from tests.sim.servers import free_port, serve
from tests.sim.wecom_sim import WeComSim, running
from worker import build_worker

GOLDEN = Path(__file__).parent / "golden"
CHAT = ChatRef(platform="wecom", tenant=CORP, chat_id="zhangsan", source_event_id="e-1")

# WeCom's published URL-check vector (its developer documentation's example).
V_TOKEN, V_KEY, V_CORP = "QDG6eK", "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", "wx5823bf96d3bd56c7"
V_TS, V_NONCE = "1409659589", "263014780"
V_ECHO = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ=="
V_SIG, V_PLAIN = "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", "1616140317555161061"


# ---- helpers ----------------------------------------------------------------------------------

def config(api_base: str, **extra: Any) -> WeComConfig:
    return WeComConfig(corp_id=CORP, corp_secret=SecretStr(SECRET), agent_id=1000002, token=SecretStr(TOKEN),
                       encoding_aes_key=SecretStr(AES_KEY), api_base=api_base, **extra)


async def wait_status(client: Client, request_id: str, status: str, timeout: float = 60) -> StatusView:
    handle = client.get_workflow_handle(request_id)
    end = time.monotonic() + timeout
    while True:
        try:
            view: StatusView = await handle.query("status", result_type=StatusView)
        except RPCError:
            view = None  # type: ignore[assignment]
        if view is not None and view.status.value == status:
            return view
        assert time.monotonic() < end, f"{request_id} is {view.status.value if view else '?'}, expected {status}"
        await asyncio.sleep(0.1)


@pytest.fixture
def wecom_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """WeCom configured through the environment, as in production (read when the API starts)."""
    for name, value in wecom_chat_env("http://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)
    return monkeypatch


@dataclass
class Api:
    url: str
    settings: Settings

    async def post(self, http: httpx.AsyncClient, inner: str, ts: int | None = None,
                   token: str = TOKEN) -> httpx.Response:
        body, params = encrypted(inner, ts, token)
        return await http.post(f"{self.url}/im/wecom/events", params=params, content=body,
                               headers={"Content-Type": "text/xml"})


@contextmanager
def api_server(dev_env: WorkflowEnvironment, settings: Settings) -> Iterator[Api]:
    port = free_port()
    settings = settings.model_copy(update={
        "public_url": f"http://127.0.0.1:{port}",
        "temporal_address": dev_env.client.service_client.config.target_host,
        "step_retry_window": timedelta(seconds=20),
    })
    with serve(create_app(settings), port=port) as url:
        yield Api(url, settings)


# ---- signatures and inbound -------------------------------------------------------------------

def test_published_url_check_vector() -> None:
    assert hashlib.sha1("".join(sorted([V_TOKEN, V_TS, V_NONCE, V_ECHO])).encode()).hexdigest() == V_SIG
    plain = WeChatCrypto(V_TOKEN, V_KEY, V_CORP).check_signature(V_SIG, V_TS, V_NONCE, V_ECHO)
    assert plain == V_PLAIN


async def test_the_published_url_check_and_a_click_on_a_card_we_never_sent(
        dev_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared chat cases check a URL check of our own making; this one is WeCom's published vector."""
    for name, value in {"CORP_ID": V_CORP, "CORP_SECRET": "s", "TOKEN": V_TOKEN, "ENCODING_AES_KEY": V_KEY,
                        "API_BASE": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(f"SIGNBRIDGE_WECOM_{name}", value)
    with api_server(dev_env, settings) as api:
        async with httpx.AsyncClient(timeout=10) as http:
            params = {"msg_signature": V_SIG, "timestamp": V_TS, "nonce": V_NONCE, "echostr": V_ECHO}
            ok = await http.get(f"{api.url}/im/wecom/events", params=params)  # httpx URL-encodes `+/=`
            assert ok.status_code == 200 and ok.text == V_PLAIN
            forged = await http.get(f"{api.url}/im/wecom/events", params={**params, "nonce": "263014781"})
            assert forged.status_code == 401 and forged.json()["error"]["code"] == "bad_signature"
    for name, value in wecom_chat_env("http://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)
    with api_server(dev_env, settings) as api:
        async with httpx.AsyncClient(timeout=10) as http:
            stray = await api.post(http, click_event("sign@wecom@other@1@1", "cancel", "rc-x"))
            assert stray.status_code == 200 and stray.text == ""
            assert not await exists(dev_env.client, "sign:wecom:other:1")


# ---- the connector against the simulator -------------------------------------------------------

def _view(status: SignStatus, signed: int = 0) -> StatusView:
    doc = DocumentInfo(name="采购合同.pdf", sha256="ab" * 32, blob_key="ab" * 32, size=1000, pages=2)
    people = [Person(id="lisi", name="李四"), Person(id="wangwu", name="王五")]
    return StatusView(
        request_id=f"sign:wecom:{CORP}:1", title="采购合同 2026", status=status, provider="local",
        initiator=Person(id="zhangsan", name="张三"), chat=CHAT, document=doc,
        signers=[SignerState(person=p, group=i, status="signed" if i < signed else "notified" if i == signed
                             else "waiting") for i, p in enumerate(people)],
        reason="provider unavailable (HTTP 503)" if status == SignStatus.STUCK else None,
        signed_document=doc.model_copy(update={"name": "采购合同.signed.pdf"}) if status == SignStatus.COMPLETED
        else None,
    )


@pytest.mark.parametrize("status", [SignStatus.IN_PROGRESS, SignStatus.STUCK, SignStatus.COMPLETED])
def test_golden_cards(status: SignStatus) -> None:
    signed = {SignStatus.IN_PROGRESS: 1, SignStatus.STUCK: 0, SignStatus.COMPLETED: 2}[status]
    card = render_card(build_card(_view(status, signed), lang="zh"), "sign@wecom@x@1@1")
    path = GOLDEN / f"wecom_{status.value.lower()}.json"
    if os.environ.get("SIGNBRIDGE_UPDATE_GOLDEN"):
        path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    assert card == json.loads(path.read_text())


def test_build_reads_the_environment(settings: Settings, wecom_env: pytest.MonkeyPatch) -> None:
    chat = build(settings, httpx.AsyncClient())
    assert isinstance(chat, WeComChat) and chat.config.corp_id == CORP and chat.config.agent_id == 1000002
    assert SECRET not in repr(chat) and SECRET not in repr(chat.config)
    wecom_env.delenv("SIGNBRIDGE_WECOM_ENCODING_AES_KEY")
    assert build(settings, httpx.AsyncClient()) is None  # all four secrets or nothing


def world(contract: bytes) -> WeComSim:
    sim = WeComSim(CORP, SECRET)
    sim.users = {"zhangsan": {"name": "张三", "status": 1}, "lisi": {"name": "李四", "status": 1},
                 "wangwu": {"name": "王五", "status": 1, "email": "ww@corp.example"},
                 "zhaoliu": {"name": "赵六", "status": 5}}
    sim.media = {"m-1": (contract, "合同.pdf", False), "m-old": (contract, "old.pdf", True)}
    return sim


async def test_connector_against_simulator(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    contract = sample_contract("WeCom")
    sim = world(contract)
    with running(sim) as base:
        async with httpx.AsyncClient(timeout=10) as http:
            chat = WeComChat(config(base, rate_limit_backoff=0.5), engine, http)
            # token: fetched once, reused, refetched after it expired (42001)
            assert await chat.download(CHAT, media_source("m-1", "合同.pdf"), 10_000_000) == contract
            await chat.send_text(CHAT, None, "hello", key="k-1")
            await chat.send_text(CHAT, None, "hello again", key="k-1b")
            assert sim.token_issued == 1 and len(sim.sent("zhangsan", "text")) == 2
            sim.expire_tokens()
            await chat.send_text(CHAT, Person(id="lisi", name="李四"), "hi", key="k-2")
            assert sim.token_issued == 2 and ("message/send", 42001) in sim.errors
            # rate limits are retryable with a delay; refusals are not
            sim.rate_limit_next(1)
            with pytest.raises(ChatUnavailable) as limited:
                await chat.send_text(CHAT, None, "x", key="k-3")
            assert limited.value.retry_after == 0.5
            sim.http_429_next(1)
            with pytest.raises(ChatUnavailable) as busy:
                await chat.send_text(CHAT, None, "x", key="k-3")
            assert busy.value.retry_after == 0.2
            await chat.send_text(CHAT, None, "x", key="k-3")
            assert len(sim.sent("zhangsan", "text")) == 3
            with pytest.raises(ChatRejected) as nobody:
                await chat.send_text(CHAT, Person(id="ghost", name="ghost"), "x", key="k-5")
            assert nobody.value.status == 81013
            with pytest.raises(ChatRejected):
                await WeComChat(config(base).model_copy(update={"corp_id": "nope"}), engine, http).send_text(
                    CHAT, None, "x", key="k-4")
            # files: expired (3 days) and too large are the user's problem
            with pytest.raises(InputProblem, match="3 days"):
                await chat.download(CHAT, media_source("m-old", "old.pdf"), 10_000_000)
            with pytest.raises(InputProblem, match="MB"):
                await chat.download(CHAT, media_source("m-1", "合同.pdf"), 100)
            # directory: departed → InputProblem; no email from WeCom → the imported identity's
            with pytest.raises(InputProblem, match="赵六"):
                await chat.resolve(CHAT, Person(id="zhaoliu", name="zhaoliu"))
            with Session(engine) as session:
                session.add(Identity(platform="wecom", tenant=CORP, user_id="lisi", name="李四",
                                     email="ls@corp.example"))
                session.commit()
            lisi = await chat.resolve(CHAT, Person(id="lisi", name="lisi"))
            assert (lisi.name, lisi.email) == ("李四", "ls@corp.example")
            wangwu = await chat.resolve(CHAT, Person(id="wangwu", name="wangwu"))
            assert wangwu.email == "ww@corp.example"
            with Session(engine) as session:
                rows = {r.user_id: r for r in session.exec(select(Identity).where(Identity.tenant == CORP))}
            assert rows["wangwu"].email == "ww@corp.example" and rows["zhaoliu"].active is False

            # cards: send → in place with the send's code → fallback → in place with a click's code
            key = f"sign:wecom:{CORP}:card-test"
            await chat.upsert_card(CHAT, key, build_card(_view(SignStatus.IN_PROGRESS, 0)))
            await chat.upsert_card(CHAT, key, build_card(_view(SignStatus.IN_PROGRESS, 0)))  # unchanged: no call
            await chat.upsert_card(CHAT, key, build_card(_view(SignStatus.IN_PROGRESS, 1)))
            first = sim.cards_to("zhangsan")
            assert len(first) == 1 and first[0].updated_with == ["send"] and len(first[0].versions) == 2
            await chat.upsert_card(CHAT, key, build_card(_view(SignStatus.STUCK, 1)))  # no code left
            cards = sim.cards_to("zhangsan")
            assert len(cards) == 2 and len(cards[0].versions) == 2
            with Session(engine) as session:
                row = session.exec(select(ChatMessage).where(ChatMessage.card_key == key)).one()
            assert json.loads(row.ref)["superseded"] == [cards[0].msgid]
            code = sim.click(cards[1].msgid)
            assert store_response_code(engine, cards[1].task_id, code)
            assert store_response_code(engine, cards[0].task_id, sim.click(cards[0].msgid))  # old card: ignored
            await chat.upsert_card(CHAT, key, build_card(_view(SignStatus.IN_PROGRESS, 1)))  # the click's code
            assert cards[1].updated_with == ["click"] and len(sim.cards_to("zhangsan")) == 2
            await chat.upsert_card(CHAT, key, build_card(_view(SignStatus.COMPLETED, 2)))  # none left: fallback
            cards = sim.cards_to("zhangsan")
            assert len(cards) == 3 and cards[2].versions[-1]["main_title"]["desc"].endswith("已完成")
            # a code older than 72 h is not tried: the fallback sends a new card at once
            assert store_response_code(engine, cards[2].task_id, sim.click(cards[2].msgid))
            sim.age_codes(73)
            with Session(engine) as session:
                row = session.exec(select(ChatMessage).where(ChatMessage.card_key == key)).one()
                ref = json.loads(row.ref)
                ref["code_at"] = (utcnow() - timedelta(hours=73)).isoformat()
                row.ref = json.dumps(ref)
                session.add(row)
                session.commit()
            await chat.upsert_card(CHAT, key, build_card(_view(SignStatus.CANCELLED, 2)))
            assert len(sim.cards_to("zhangsan")) == 4 and ("update_template_card", 40078) not in sim.errors
            assert sim.duplicates == 0
    assert build(settings, httpx.AsyncClient()) is None  # not configured: not enabled


# ---- end to end on the dev server -------------------------------------------------------------

@asynccontextmanager
async def wecom_stack(dev_env: WorkflowEnvironment, settings: Settings, env: pytest.MonkeyPatch,
                      sim: WeComSim) -> AsyncIterator[tuple[Api, httpx.AsyncClient]]:
    """Simulator + the real API over HTTP + the real worker whose WeCom connector talks to the simulator."""
    with running(sim) as base:
        env.setenv("SIGNBRIDGE_WECOM_API_BASE", base)
        with api_server(dev_env, settings) as api:
            engine = get_engine(api.settings.sqlalchemy_url)
            create_all(engine)
            with Session(engine) as session:  # what `signbridge identities import` leaves behind
                session.add(Identity(platform="wecom", tenant=CORP, user_id="zhangsan", name="张三",
                                     email="zs@corp.example"))
                # imported without a tenant column: still found for this corp
                session.add(Identity(platform="wecom", tenant="default", user_id="lisi", name="李四",
                                     email="ls@corp.example"))
                session.commit()
            chat = WeComChat(config(base, rate_limit_backoff=0.2), engine)
            async with httpx.AsyncClient(timeout=30) as http, \
                    build_worker(dev_env.client, api.settings, chats={"wecom": chat}) as worker, worker:
                yield api, http


def link_for(sim: WeComSim, user: str) -> str | None:
    cards = [m for m in sim.sent(user, "textcard") if "/sign/" in m["textcard"]["url"]]
    return str(cards[-1]["textcard"]["url"]) if cards else None


async def sign(http: httpx.AsyncClient, sim: WeComSim, user: str, name: str, settings: Settings) -> None:
    await sim.wait_for(lambda: link_for(sim, user) is not None, timeout=30)
    resp = await sign_with_code(http, settings, str(link_for(sim, user)), name)
    assert resp.status_code == 200, resp.text


async def test_file_then_command_to_signed_pdf(dev_env: WorkflowEnvironment, settings: Settings,
                                               wecom_env: pytest.MonkeyPatch) -> None:
    contract = sample_contract("WeCom Contract")
    sim = world(contract)
    async with wecom_stack(dev_env, settings, wecom_env, sim) as (api, http):
        # the file arrives as its own message, then the command; WeCom redelivers the command
        assert (await api.post(http, file_msg("m-1", "合同.pdf", "9001"))).text == ""
        command = text_msg("/sign @李四 > @wangwu", "9002")
        started = time.monotonic()
        first = await api.post(http, command)
        assert first.status_code == 200 and first.text == "" and time.monotonic() - started < 5
        again = await api.post(http, command)
        assert again.status_code == 200 and again.text == ""
        request_id = f"sign:wecom:{CORP}:9002"
        flows = [w async for w in dev_env.client.list_workflows(f"WorkflowId = '{request_id}'")]
        assert len(flows) == 1  # the redelivery found the running flow
        await sim.wait_for(lambda: bool(sim.cards_to("zhangsan")), timeout=30)
        card = sim.cards_to("zhangsan")[0]
        assert card.versions[-1]["main_title"] == {"title": "合同.pdf", "desc": "🖊 签署中"}

        # first signer; the card is updated in place with the code its sending returned
        await sign(http, sim, "lisi", "李四", settings)
        await sim.wait_for(lambda: "已签署" in json.dumps(card.versions[-1], ensure_ascii=False))
        assert card.updated_with == ["send"] and len(sim.cards_to("zhangsan")) == 1

        # the initiator clicks 催签: a fresh response code, a reminder; then tokens expire and a
        # 45009 storm hits while the second signer signs
        code = sim.click(card.msgid)
        reminded = await api.post(http, click_event(card.task_id, "remind", code))
        assert reminded.status_code == 200
        await sim.wait_for(lambda: any("提醒" in m["textcard"]["description"] for m in sim.sent("wangwu", "textcard")))
        refused = await api.post(http, click_event(card.task_id, "cancel", sim.click(card.msgid), sender="lisi"))
        assert refused.status_code == 200  # not the initiator: the validator refuses, nothing changes
        sim.expire_tokens()
        sim.rate_limit_next(4)
        await sign(http, sim, "wangwu", "王五", settings)
        view = await wait_status(dev_env.client, request_id, "COMPLETED")
        await sim.wait_for(lambda: sim.cards_to("zhangsan")[-1].versions[-1]["main_title"]["desc"] == "✅ 已完成")

        cards = sim.cards_to("zhangsan")
        # in place again with the clicks' codes (the refused click brought one too)…
        assert card.updated_with[0] == "send" and set(card.updated_with[1:]) == {"click"}
        # …and once no code is left, the fallback sends a new card (how many updates need it
        # depends on how often the flow publishes; the connector tests cover the path itself)
        with Session(get_engine(api.settings.sqlalchemy_url)) as session:
            row = session.exec(select(ChatMessage).where(ChatMessage.card_key == request_id)).one()
        assert json.loads(row.ref).get("superseded", []) == [c.msgid for c in cards[:-1]]
        assert sim.token_issued >= 2 and any(code == 42001 for _, code in sim.errors)
        assert sum(code == 45009 for _, code in sim.errors) == 4

        # the signed file reached the initiator once as a file (then the certificate): the original plus signatures
        await sim.wait_for(lambda: len(sim.files_to("zhangsan")) == 2)
        (_, signed_pdf), (certificate_name, certificate) = sim.files_to("zhangsan")
        assert view.signed_document is not None
        assert hashlib.sha256(signed_pdf).hexdigest() == view.signed_document.sha256
        assert signed_pdf.startswith(contract) and len(signed_pdf) > len(contract)
        assert "签署完成证明" in certificate_name and certificate.startswith(b"%PDF")
        # nothing lost, nothing twice: one link per signer (+ one reminder), no repeated content
        assert len(sim.sent("lisi", "textcard")) == 1 and len(sim.sent("wangwu", "textcard")) == 2
        assert sim.duplicates == 0
        assert [s.person.name for s in view.signers] == ["李四", "王五"]  # 王五 from user/get

        # a departed colleague mentioned: REJECTED, the reason told in the chat, no card buttons
        assert (await api.post(http, file_msg("m-1", "合同.pdf", "9101"))).status_code == 200
        assert (await api.post(http, text_msg("/sign @zhaoliu", "9102"))).status_code == 200
        rejected = await wait_status(dev_env.client, f"sign:wecom:{CORP}:9102", "REJECTED")
        assert rejected.reason and "赵六" in rejected.reason
        await sim.wait_for(lambda: any("赵六" in m["text"]["content"] and "离职" in m["text"]["content"]
                                       for m in sim.sent("zhangsan", "text")))

        # a command with no file sent before it: REJECTED with the reason told to the sender
        assert (await api.post(http, text_msg("/sign @张三", "9201", sender="lisi"))).status_code == 200
        no_file = await wait_status(dev_env.client, f"sign:wecom:{CORP}:9201", "REJECTED")
        assert no_file.reason and "没有找到要签署的文件" in no_file.reason
        await sim.wait_for(lambda: any("没有找到要签署的文件" in m["text"]["content"]
                                       for m in sim.sent("lisi", "text")))
