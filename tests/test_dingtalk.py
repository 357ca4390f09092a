"""DingTalk (钉钉) both ways, over real HTTP: the published event-subscription vector and the
derived robot-sign vector, forged/stale callbacks, the connector against a DingTalk simulator
(`tests/sim/dingtalk_sim.py`), and the whole flow on the real Temporal dev server with the real
worker and API app.

Golden files: `SIGNBRIDGE_UPDATE_GOLDEN=1 pytest tests/test_dingtalk.py -k golden` rewrites them.
"""

from __future__ import annotations

import asyncio
import base64
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
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.chat import ChatActivities
from activities.deps import Deps
from api.main import create_app
from connectors.chat.base import ChatRejected, ChatUnavailable, InputProblem
from connectors.chat.dingtalk.cards import render_card
from connectors.chat.dingtalk.client import DingTalkChat, DingTalkConfig, build, file_source, track_id_for
from connectors.chat.dingtalk.inbound import decrypt_event, event_signature, robot_sign
from signbridge.core.cards import build_card
from signbridge.core.models import ChatRef, DocumentInfo, Person, SignerState, SignStatus, StatusView, TextMessageInput
from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from store.blob_factory import make_blob_store
from store.db import create_all, get_engine
from store.tables import ChatMessage, Identity
from tests.chat_cases import exists
from tests.chat_cases.dingtalk import (
    AES_KEY,
    APP_KEY,
    APP_SECRET,
    CORP,
    GROUP,
    ROBOT,
    TOKEN,
    click,
    encrypted,
    file_message,
    robot_headers,
    text_message,
)
from tests.chat_cases.dingtalk import env as chat_env
from tests.codes import sign_with_code
from tests.sim.dingtalk_sim import DingTalkSim, running
from tests.sim.servers import free_port, serve
from worker import build_worker

GOLDEN = Path(__file__).parent / "golden"
CHAT = ChatRef(platform="dingtalk", tenant=CORP, chat_id=GROUP, source_event_id="m-1")

# DingTalk's published event-subscription vector and the derived robot-sign vector.
V_TOKEN, V_KEY, V_OWNER = "mryue", "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7", "ding6ccabc44d2c8d38b"
V_TS, V_NONCE, V_SIG = "1608001896814", "WL4PK6yA", "03044561471240d4a14bb09372dfcfd4fd0e40cb"
V_ENCRYPT = ("0vJiX6vliEpwG3U45CtXqi+m8PXbQRARJ8p8BbDuD1EMTDf0jKpQ79QS93qEk7XHpP6u+oTTrd15NRPvNvmBKyDCYxxOK+HZe"
             "Kju4yhELOFchzNukR+t8SB/qk4ROMu3")


def config(api_base: str = "http://127.0.0.1:9", **extra: Any) -> DingTalkConfig:
    return DingTalkConfig(app_key=APP_KEY, app_secret=SecretStr(APP_SECRET), robot_code=ROBOT,
                          aes_key=SecretStr(AES_KEY), token=SecretStr(TOKEN), card_template_id="tpl-signbridge",
                          api_base=api_base, oapi_base=api_base, **extra)


# ---- vectors ----------------------------------------------------------------------------------

def test_published_event_subscription_vector() -> None:
    assert event_signature(V_TOKEN, V_TS, V_NONCE, V_ENCRYPT) == V_SIG
    assert decrypt_event(V_KEY, V_OWNER, V_ENCRYPT) == '{"EventType":"check_url"}'
    with pytest.raises(Exception):  # noqa: B017 - wechatpy raises its own InvalidAppIdException
        decrypt_event(V_KEY, "ding-someone-else", V_ENCRYPT)


def test_derived_robot_sign_vector() -> None:
    assert robot_sign("secret", "1700000000000") == "OuzzJR5+xZ4/EYwqtNt6sMYZQMTa/HEGvc9miJe7XzY="


# ---- cards ------------------------------------------------------------------------------------

def _view(status: SignStatus, signed: int = 0) -> StatusView:
    doc = DocumentInfo(name="采购合同.pdf", sha256="ab" * 32, blob_key="ab" * 32, size=1000, pages=2)
    people = [Person(id="lisi", name="李四"), Person(id="wangwu", name="王五")]
    return StatusView(
        request_id=f"sign:dingtalk:{CORP}:1", title="采购合同 2026", status=status, provider="local",
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
    params = render_card(build_card(_view(status, signed)))
    assert all(isinstance(v, str) for v in params.values())  # DingTalk's cardParamMap is string → string
    path = GOLDEN / f"dingtalk_{status.value.lower()}.json"
    if os.environ.get("SIGNBRIDGE_UPDATE_GOLDEN"):
        path.write_text(json.dumps(params, indent=2, ensure_ascii=False) + "\n")
    assert params == json.loads(path.read_text())


def test_build_reads_the_environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert build(settings, httpx.AsyncClient()) is None  # not configured: not enabled
    monkeypatch.setenv("SIGNBRIDGE_DINGTALK_APP_KEY", APP_KEY)
    monkeypatch.setenv("SIGNBRIDGE_DINGTALK_APP_SECRET", APP_SECRET)
    chat = build(settings, httpx.AsyncClient())
    assert isinstance(chat, DingTalkChat) and chat.config.robot == APP_KEY
    assert APP_SECRET not in repr(chat) and APP_SECRET not in repr(chat.config)


# ---- the connector against the simulator -------------------------------------------------------

def world(contract: bytes) -> DingTalkSim:
    sim = DingTalkSim(APP_KEY, APP_SECRET, ROBOT)
    sim.users = {"zhangsan": {"name": "张三"}, "lisi": {"name": "李四", "mobile": "13800000001"},
                 "wangwu": {"name": "王五", "email": "ww@corp.example"},
                 "zhaoliu": {"name": "赵六", "active": False}}
    sim.files = {"dc-1": (contract, "合同.pdf")}
    return sim


async def test_connector_against_simulator(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    contract = sample_contract("DingTalk")
    sim = world(contract)
    with running(sim) as base:
        async with httpx.AsyncClient(timeout=10) as http:
            chat = DingTalkChat(config(base, rate_limit_backoff=0.5), engine, http)
            # token: fetched once, reused, refetched after DingTalk refused it
            assert await chat.download(CHAT, file_source("dc-1", "合同.pdf"), 10_000_000) == contract
            await chat.send_text(CHAT, None, "hello", key="k-1")
            await chat.send_text(CHAT, None, "hello again", key="k-1b")
            assert sim.token_issued == 1 and len(sim.sent(GROUP, "sampleText")) == 2
            sim.expire_tokens()
            await chat.send_text(CHAT, Person(id="lisi", name="李四"), "hi", key="k-2")
            assert sim.token_issued == 2 and ("batchSend", "InvalidAuthentication") in sim.errors
            # QPS limits are retryable after the backoff (403 and 429 alike); refusals are not
            sim.rate_limit_next(1)
            with pytest.raises(ChatUnavailable) as limited:
                await chat.send_text(CHAT, None, "x", key="k-3")
            assert limited.value.retry_after == 0.5
            sim.rate_status = 429
            sim.rate_limit_next(1)
            with pytest.raises(ChatUnavailable):
                await chat.send_text(CHAT, None, "x", key="k-3")
            await chat.send_text(CHAT, None, "x", key="k-3")
            assert len(sim.sent(GROUP, "sampleText")) == 3
            sim.rate_limit_next(1)
            with pytest.raises(ChatUnavailable):  # oapi's 90018
                await chat.resolve(CHAT, Person(id="wangwu", name="wangwu"))
            with pytest.raises(ChatRejected):
                await chat.send_text(CHAT, Person(id="ghost", name="ghost"), "x", key="k-5")
            with pytest.raises(ChatRejected):  # wrong secret: the token call is refused for good
                await DingTalkChat(config(base).model_copy(update={"app_secret": SecretStr("nope")}), engine,
                                   http).send_text(CHAT, None, "x", key="k-4")
            # files: unknown code or over the limit are the user's problem
            with pytest.raises(InputProblem, match="send it again"):
                await chat.download(CHAT, file_source("dc-gone", "old.pdf"), 10_000_000)
            with pytest.raises(InputProblem, match="MB"):
                await chat.download(CHAT, file_source("dc-1", "合同.pdf"), 100)
            # directory: departed → InputProblem (Chinese + English), cached in Identity either way
            with pytest.raises(InputProblem, match=r"赵六 已离职.*has left the company"):
                await chat.resolve(CHAT, Person(id="zhaoliu", name="zhaoliu"))
            with pytest.raises(InputProblem, match="找不到"):
                await chat.resolve(CHAT, Person(id="nobody", name="nobody"))
            wangwu = await chat.resolve(CHAT, Person(id="wangwu", name="wangwu"))
            assert (wangwu.name, wangwu.email) == ("王五", "ww@corp.example")
            calls = len(sim.calls)
            assert (await chat.resolve(CHAT, Person(id="wangwu", name="x"))).name == "王五"
            assert len(sim.calls) == calls  # from the Identity cache
            with Session(engine) as session:
                rows = {r.user_id: r for r in session.exec(select(Identity).where(Identity.tenant == CORP))}
            assert rows["zhaoliu"].active is False and rows["wangwu"].email == "ww@corp.example"

            # cards: created once with the stable outTrackId, then updated in place
            key = f"sign:dingtalk:{CORP}:card-test"
            await chat.upsert_card(CHAT, key, build_card(_view(SignStatus.IN_PROGRESS, 0)))
            await chat.upsert_card(CHAT, key, build_card(_view(SignStatus.IN_PROGRESS, 0)))  # unchanged: no call
            card = sim.cards[track_id_for(key)]
            assert card.open_space_id == f"dtv1.card//IM_GROUP.{GROUP}" and len(card.versions) == 1
            # the create's answer was lost (no row): the retry finds the outTrackId taken and updates
            with Session(engine) as session:
                session.delete(session.exec(select(ChatMessage).where(ChatMessage.card_key == key)).one())
                session.commit()
            await chat.upsert_card(CHAT, key, build_card(_view(SignStatus.IN_PROGRESS, 1)))
            assert len(sim.cards) == 1 and len(card.versions) == 2
            assert ("createAndDeliver", "param.duplicateOutTrackId") in sim.errors
            await chat.upsert_card(CHAT, key, build_card(_view(SignStatus.COMPLETED, 2)))
            assert len(sim.cards) == 1 and card.versions[-1]["statusText"] == "已完成"
            assert sim.duplicates == 0

            # a 1:1 chat: the card goes to the robot's chat with that user, texts to the user
            direct = CHAT.model_copy(update={"chat_id": "zhangsan", "chat_kind": "direct"})
            await chat.upsert_card(direct, "direct-card", build_card(_view(SignStatus.IN_PROGRESS, 0)))
            assert sim.cards[track_id_for("direct-card")].open_space_id == "dtv1.card//IM_ROBOT.zhangsan"
            await chat.send_text(direct, None, "only to you", key="k-direct")
            assert sim.sent("zhangsan", "sampleText")[-1]["param"]["content"] == "only to you"


async def test_a_burst_over_20_qps_loses_nothing_and_repeats_nothing(settings: Settings) -> None:
    """The simulator's real 20-QPS window: the calls over it are refused as retryable; running
    every `send_text` activity again (as Temporal retries them) delivers exactly the missing ones."""
    settings.data_dir.mkdir(parents=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    sim = world(b"%PDF-")
    with running(sim) as base:
        async with httpx.AsyncClient(timeout=10) as http:
            chat = DingTalkChat(config(base), engine, http)
            acts = ChatActivities(Deps(settings=settings, engine=engine, blobs=make_blob_store(settings), http=http,
                                       chats={"dingtalk": chat}, providers={}))
            env = ActivityEnvironment()
            await chat.token.get()
            keys = [f"burst-{i}" for i in range(30)]
            sends = [TextMessageInput(request_id="r-burst", chat=CHAT, key=k, text=f"message {k}") for k in keys]
            first = await asyncio.gather(*(env.run(acts.send_text, arg) for arg in sends), return_exceptions=True)
            refused = [r for r in first if isinstance(r, ApplicationError)]
            assert len(refused) == 10 and all(r.type == "ChatUnavailable" for r in refused)
            assert all(r.next_retry_delay == timedelta(seconds=1) for r in refused)
            assert len(sim.sent(GROUP)) == 20
            sim.reset_windows()
            await asyncio.gather(*(env.run(acts.send_text, arg) for arg in sends))
            assert sorted(m["param"]["content"] for m in sim.sent(GROUP)) == sorted(f"message {k}" for k in keys)
            assert sim.duplicates == 0


# ---- inbound (the shared chat cases in tests/chat_cases/dingtalk.py cover the rest) ------------------

@pytest.fixture
def dingtalk_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """DingTalk configured through the environment, as in production (read when the API starts)."""
    for name, value in chat_env("http://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)
    return monkeypatch


@dataclass
class Api:
    url: str
    settings: Settings

    async def robot(self, http: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> httpx.Response:
        return await http.post(f"{self.url}/im/dingtalk/events", content=json.dumps(body, ensure_ascii=False),
                               headers=robot_headers(**kw))

    async def event(self, http: httpx.AsyncClient, event: dict[str, Any], **kw: Any) -> httpx.Response:
        call = encrypted(event, **kw)
        return await http.post(f"{self.url}/im/dingtalk/events", params=dict(call.params), content=call.body,
                               headers=dict(call.headers))


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


async def test_a_click_on_a_card_we_never_sent_changes_nothing(dev_env: WorkflowEnvironment, settings: Settings,
                                                              dingtalk_env: pytest.MonkeyPatch) -> None:
    with api_server(dev_env, settings) as api:
        async with httpx.AsyncClient(timeout=10) as http:
            stray = await api.event(http, click(f"sign:dingtalk:{CORP}:never-sent", "cancel", "x"))
            assert stray.status_code == 200 and decrypt_event(AES_KEY, APP_KEY, stray.json()["encrypt"]) == "success"
            assert not await exists(dev_env.client, f"sign:dingtalk:{CORP}:never-sent")
            other_key = base64.b64encode(b"k" * 32).decode().rstrip("=")
            wrong_key = await api.event(http, {"EventType": "check_url"}, key=other_key)  # not for our AES key
            assert wrong_key.status_code == 401 and wrong_key.json()["error"]["code"] == "bad_payload"


# ---- end to end on the dev server -------------------------------------------------------------

@asynccontextmanager
async def dingtalk_stack(dev_env: WorkflowEnvironment, settings: Settings, env: pytest.MonkeyPatch,
                         sim: DingTalkSim) -> AsyncIterator[tuple[Api, httpx.AsyncClient]]:
    """Simulator + the real API over HTTP + the real worker whose DingTalk connector talks to the simulator."""
    with running(sim) as base:
        env.setenv("SIGNBRIDGE_DINGTALK_API_BASE", base)
        env.setenv("SIGNBRIDGE_DINGTALK_OAPI_BASE", base)
        with api_server(dev_env, settings) as api:
            engine = get_engine(api.settings.sqlalchemy_url)
            create_all(engine)
            chat = DingTalkChat(config(base, rate_limit_backoff=0.2), engine)
            async with httpx.AsyncClient(timeout=30) as http, \
                    build_worker(dev_env.client, api.settings, chats={"dingtalk": chat}) as worker, worker:
                yield api, http


def link_for(sim: DingTalkSim, user: str) -> str | None:
    links = [m["param"]["messageUrl"] for m in sim.sent(user, "sampleLink") if "/sign/" in m["param"]["messageUrl"]]
    return str(links[-1]) if links else None


async def sign(http: httpx.AsyncClient, sim: DingTalkSim, user: str, name: str, settings: Settings) -> None:
    await sim.wait_for(lambda: link_for(sim, user) is not None, timeout=30)
    resp = await sign_with_code(http, settings, str(link_for(sim, user)), name)
    assert resp.status_code == 200, resp.text


async def wait_status(client: Client, request_id: str, status: str, timeout: float = 60) -> StatusView:
    handle = client.get_workflow_handle(request_id)
    end = time.monotonic() + timeout
    while True:
        try:
            view: StatusView | None = await handle.query("status", result_type=StatusView)
        except RPCError:
            view = None
        if view is not None and view.status.value == status:
            return view
        assert time.monotonic() < end, f"{request_id} is {view.status.value if view else '?'}, expected {status}"
        await asyncio.sleep(0.1)


async def test_file_then_command_to_signed_pdf(dev_env: WorkflowEnvironment, settings: Settings,
                                               dingtalk_env: pytest.MonkeyPatch) -> None:
    contract = sample_contract("DingTalk Contract")
    sim = world(contract)
    async with dingtalk_stack(dev_env, settings, dingtalk_env, sim) as (api, http):
        assert (await api.robot(http, file_message("dc-1", "合同.pdf", "msg-file-1"))).status_code == 200
        command = text_message("@SignBridge sign @李四 > @王五", "msg-cmd-1", at=["lisi", "wangwu"])
        first = await api.robot(http, command)
        assert first.status_code == 200
        again = await api.robot(http, command)  # DingTalk redelivers the message
        assert again.status_code == 200
        request_id = f"sign:dingtalk:{CORP}:msg-cmd-1"
        flows = [w async for w in dev_env.client.list_workflows(f"WorkflowId = '{request_id}'")]
        assert len(flows) == 1
        await sim.wait_for(lambda: bool(sim.cards), timeout=30)
        card = sim.cards[track_id_for(request_id)]
        assert card.open_space_id == f"dtv1.card//IM_GROUP.{GROUP}" and card.template_id == "tpl-signbridge"
        await sim.wait_for(lambda: card.versions[-1]["status"] == "IN_PROGRESS")

        # first signer; the same card is updated in place
        await sign(http, sim, "lisi", "李四", settings)
        await sim.wait_for(lambda: "✅ 第1组 · 李四 — 已签署" in card.versions[-1]["signersText"])
        after_first = len(card.versions)

        # the initiator clicks 催签 on the card: wangwu gets a reminder; someone else's cancel is refused
        assert (await api.event(http, click(request_id, "remind", "zhangsan"))).status_code == 200
        await sim.wait_for(lambda: any(m["param"]["title"] == "签署提醒" for m in sim.sent("wangwu", "sampleLink")))
        assert (await api.event(http, click(request_id, "cancel", "lisi"))).status_code == 200

        # a QPS storm (and expired tokens) while the second signer signs
        sim.expire_tokens()
        sim.rate_limit_next(6)
        await sign(http, sim, "wangwu", "王五", settings)
        view = await wait_status(dev_env.client, request_id, "COMPLETED")
        await sim.wait_for(lambda: card.versions[-1]["status"] == "COMPLETED")
        assert len(sim.cards) == 1 and len(card.versions) > after_first
        assert card.versions[-1]["statusText"] == "已完成" and card.versions[-1]["showRemind"] == "false"
        # the storm hits v1.0 APIs (HTTP 403) and the oapi media upload (errcode 90018) alike
        assert sum(code in ("Forbidden.AccessDenied.QpsLimitForAppkeyAndApi", "90018") for _, code in sim.errors) == 6
        assert sim.token_issued >= 2

        # the signed file reached the group once as a file (then the certificate): the original plus signatures
        await sim.wait_for(lambda: len(sim.files_to(GROUP)) == 2)
        (_, signed_pdf), (certificate_name, certificate) = sim.files_to(GROUP)
        assert view.signed_document is not None
        assert hashlib.sha256(signed_pdf).hexdigest() == view.signed_document.sha256
        assert signed_pdf.startswith(contract) and len(signed_pdf) > len(contract)
        assert "签署完成证明" in certificate_name and certificate.startswith(b"%PDF")
        # nothing lost, nothing twice: one link each (+ one reminder for wangwu)
        assert len(sim.sent("lisi", "sampleLink")) == 1 and len(sim.sent("wangwu", "sampleLink")) == 2
        assert sim.duplicates == 0
        assert [s.person.name for s in view.signers] == ["李四", "王五"]

        # a departed colleague mentioned: REJECTED, the reason posted in the group
        assert (await api.robot(http, text_message("@SignBridge 签署 @赵六", "msg-cmd-2", at=["zhaoliu"]))
                ).status_code == 200
        rejected = await wait_status(dev_env.client, f"sign:dingtalk:{CORP}:msg-cmd-2", "REJECTED")
        assert rejected.reason and "赵六" in rejected.reason
        await sim.wait_for(lambda: any("赵六" in m["param"]["content"] and "离职" in m["param"]["content"]
                                       for m in sim.sent(GROUP, "sampleText")))

        # a mention DingTalk gives no name for and the directory does not know: named by the typed
        # `@name` (order fallback), then refused by the flow's directory check with that name
        ghost = text_message("@SignBridge sign @鬼", "msg-cmd-3", at=["ghost"])
        assert (await api.robot(http, ghost)).status_code == 200
        unknown = await wait_status(dev_env.client, f"sign:dingtalk:{CORP}:msg-cmd-3", "REJECTED")
        assert unknown.reason and "找不到钉钉用户 鬼" in unknown.reason

        # a command with no file sent before it by that sender: REJECTED, the reason told in the group
        assert (await api.robot(http, text_message("sign @张三", "msg-cmd-4", sender="lisi", at=["zhangsan"]))
                ).status_code == 200  # DingTalk dropped the robot's own @name from the text
        no_file = await wait_status(dev_env.client, f"sign:dingtalk:{CORP}:msg-cmd-4", "REJECTED")
        assert no_file.reason and "没有找到要签署的文件" in no_file.reason
        await sim.wait_for(lambda: any("没有找到要签署的文件" in m["param"]["content"]
                                       for m in sim.sent(GROUP, "sampleText")))
