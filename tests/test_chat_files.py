"""The signed file and the certificate reach each chat as real files; CC recipients get them privately.

Each platform's real client runs against its simulator, which takes real multipart uploads with
the platform's documented limits (Feishu 30 MB, DingTalk and WeCom 20 MB, Slack's three-step
upload) and refuses a file message naming nothing uploaded. Over the limit the file goes as its
download link with the reason; an upload the platform refuses goes as the link too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from temporalio.testing import ActivityEnvironment

from activities.chat import ChatActivities
from activities.deps import Deps
from connectors.chat.base import ChatConnector
from connectors.chat.dingtalk.client import DingTalkChat, DingTalkConfig
from connectors.chat.feishu.client import FeishuChat, FeishuConfig
from connectors.chat.slack.client import SlackChat, SlackConfig
from connectors.chat.webhook.client import WebhookChat
from connectors.chat.wecom.client import WeComChat, WeComConfig
from signbridge.core.models import ChatRef, DocumentInfo, FileMessageInput, Person
from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from store.blob_factory import make_blob_store
from store.blobs import sha256_hex
from store.db import create_all, get_engine
from tests.sim.dingtalk_sim import DingTalkSim
from tests.sim.feishu_sim import FeishuSim
from tests.sim.servers import serve
from tests.sim.slack_sim import SlackSim
from tests.sim.webhook_sink import WebhookSink
from tests.sim.wecom_sim import WeComSim

SECRET = "files-test-secret"
LEGAL = Person(id="u-9", name="法务")
SIGNED = sample_contract("Signed contract")
CERT = sample_contract("Certificate of completion", pages=2)


@dataclass
class Chat:
    """A platform's simulator seen through what people get: `files(to)` is the (name, bytes) of each
    file message in a chat or DM, `links(to)` the text of each link message carrying a file."""

    name: str
    app: object
    client: Callable[[str, Engine, httpx.AsyncClient], ChatConnector]
    files: Callable[[str], list[tuple[str, bytes]]]
    links: Callable[[str], list[str]]
    chat_id: str = "g-1"
    dm: str = LEGAL.id  # where a DM to LEGAL lands


def feishu() -> Chat:
    sim = FeishuSim()
    return Chat("feishu", sim.app, lambda base, engine, http: FeishuChat(FeishuConfig(
        app_id=sim.app_id, app_secret=SecretStr(sim.app_secret), api_base=base), engine, http),
        sim.files_in, lambda to: [m.content for m in sim.sent_to(to) if m.msg_type == "interactive"])


def dingtalk() -> Chat:
    sim = DingTalkSim("dingkey", "dingsecret", "dingrobot")
    return Chat("dingtalk", sim.app, lambda base, engine, http: DingTalkChat(DingTalkConfig(
        app_key=sim.app_key, app_secret=SecretStr(sim.app_secret), robot_code=sim.robot_code, api_base=base,
        oapi_base=base), engine, http),
        sim.files_to, lambda to: [m["param"]["text"] for m in sim.sent(to=to, msg_key="sampleLink")])


def wecom() -> Chat:
    sim = WeComSim("wwcorp", "wecomsecret")
    return Chat("wecom", sim.app, lambda base, engine, http: WeComChat(WeComConfig(
        corp_id=sim.corp_id, corp_secret=SecretStr(sim.secret), agent_id=1, token=SecretStr("t"),
        encoding_aes_key=SecretStr("k"), api_base=base), engine, http),
        sim.files_to, lambda to: [m["textcard"]["description"] for m in sim.sent(to, "textcard")],
        chat_id="u-0")  # WeCom: the flow's conversation is the initiator's


def slack() -> Chat:
    sim = SlackSim("xoxb-files")
    sim.add_user(LEGAL.id, "Legal")
    sim.channels.add("C1")
    return Chat("slack", sim.app, lambda base, engine, http: SlackChat(SlackConfig(
        signing_secret=SecretStr("s"), bot_token=SecretStr(sim.token), api_base=f"{base}/api/"), engine, http),
        lambda channel: [(f.name, f.data) for f in sim.shared_files(channel)],
        lambda channel: [m.text + str(m.blocks) for m in sim.posted(channel) if not m.files],
        chat_id="C1", dm=f"D{LEGAL.id}")


UPLOADING = [feishu, dingtalk, wecom, slack]


@contextmanager
def running(settings: Settings, chat: Chat) -> Iterator[tuple[Engine, str]]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    with serve(chat.app) as base:
        yield engine, base


def doc(data: bytes, name: str, settings: Settings) -> DocumentInfo:
    key = make_blob_store(settings).put(data)
    return DocumentInfo(name=name, sha256=key, blob_key=key, size=len(data), pages=1)


def acts(settings: Settings, engine: Engine, http: httpx.AsyncClient, connector: ChatConnector) -> ChatActivities:
    return ChatActivities(Deps(settings=settings, engine=engine, blobs=make_blob_store(settings), http=http,
                               chats={connector.platform: connector}, providers={}))


@pytest.mark.parametrize("make", UPLOADING, ids=lambda make: make.__name__)
async def test_signed_file_and_certificate_arrive_as_files_and_cc_gets_them_privately(
        settings: Settings, make: Callable[[], Chat]) -> None:
    chat = make()
    ref = ChatRef(platform=chat.name, chat_id=chat.chat_id, source_event_id="e-1")
    signed, certificate = doc(SIGNED, "合同.signed.pdf", settings), doc(CERT, "合同-签署完成证明.pdf", settings)
    arg = FileMessageInput(request_id="r-files", chat=ref, document=signed, cc=[LEGAL], certificate=certificate)
    with running(settings, chat) as (engine, base):
        async with httpx.AsyncClient() as http:
            activities = acts(settings, engine, http, chat.client(base, engine, http))
            await ActivityEnvironment().run(activities.send_file, arg)
            await ActivityEnvironment().run(activities.send_file, arg)  # a retried activity sends nothing again
    expected = [("合同.signed.pdf", SIGNED), ("合同-签署完成证明.pdf", CERT)]
    assert chat.files(chat.chat_id) == expected
    assert chat.files(chat.dm) == expected  # the CC recipient, privately
    assert chat.links(chat.chat_id) == []


@pytest.mark.parametrize(("make", "limit_mb", "words"), [
    (feishu, 30, "文件超过飞书 30 MB 上限，请用链接下载"),
    (dingtalk, 20, "文件超过钉钉 20 MB 上限，请用链接下载"),
    (wecom, 20, "文件超过企业微信 20 MB 上限，请用链接下载"),
], ids=["feishu", "dingtalk", "wecom"])
async def test_over_the_platform_limit_the_file_goes_as_a_link_saying_why(
        settings: Settings, make: Callable[[], Chat], limit_mb: int, words: str) -> None:
    chat = make()
    big = SIGNED + b"%" + b"0" * (limit_mb * 1024 * 1024)  # one byte past the limit, and more
    ref = ChatRef(platform=chat.name, chat_id=chat.chat_id, source_event_id="e-2")
    arg = FileMessageInput(request_id="r-big", chat=ref, document=doc(big, "大合同.signed.pdf", settings))
    with running(settings, chat) as (engine, base):
        async with httpx.AsyncClient() as http:
            await ActivityEnvironment().run(acts(settings, engine, http, chat.client(base, engine, http)).send_file,
                                            arg)
    assert chat.files(chat.chat_id) == []
    [link] = chat.links(chat.chat_id)
    assert words in link and sha256_hex(big) in link


async def test_an_upload_the_platform_refuses_still_arrives_as_a_link(settings: Settings) -> None:
    """WeCom takes files of more than 5 bytes only: its refusal (40006) does not strand the flow."""
    chat = wecom()
    ref = ChatRef(platform="wecom", chat_id=chat.chat_id, source_event_id="e-3")
    arg = FileMessageInput(request_id="r-tiny", chat=ref, document=doc(b"%PDF", "tiny.pdf", settings))
    with running(settings, chat) as (engine, base):
        async with httpx.AsyncClient() as http:
            await ActivityEnvironment().run(acts(settings, engine, http, chat.client(base, engine, http)).send_file,
                                            arg)
    [link] = chat.links(chat.chat_id)
    assert "企业微信未接受文件上传，请用链接下载" in link


async def test_simulators_refuse_uploads_over_their_documented_limits() -> None:
    """The limits are enforced by the platforms too, not only by SignBridge's choice to send a link."""
    feishu_sim, wecom_sim = FeishuSim(), WeComSim("wwcorp", "wecomsecret")
    with serve(feishu_sim.app) as feishu_url, serve(wecom_sim.app) as wecom_url:
        async with httpx.AsyncClient(timeout=30) as http:
            token = (await http.post(f"{feishu_url}/open-apis/auth/v3/tenant_access_token/internal", json={
                "app_id": feishu_sim.app_id, "app_secret": feishu_sim.app_secret})).json()["tenant_access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            for data, code in ((b"", 234010), (b"0" * (30 * 1024 * 1024 + 1), 234006)):
                resp = await http.post(f"{feishu_url}/open-apis/im/v1/files", headers=auth,
                                       data={"file_type": "pdf", "file_name": "a.pdf"},
                                       files={"file": ("a.pdf", data, "application/pdf")})
                assert resp.json()["code"] == code
            resp = await http.post(f"{feishu_url}/open-apis/im/v1/messages", params={"receive_id_type": "chat_id"},
                                   headers=auth, json={"receive_id": "g-1", "msg_type": "file",
                                                       "content": '{"file_key": "file_v2_never_uploaded"}'})
            assert resp.json()["code"] != 0
            token = (await http.get(f"{wecom_url}/cgi-bin/gettoken", params={
                "corpid": "wwcorp", "corpsecret": "wecomsecret"})).json()["access_token"]
            resp = await http.post(f"{wecom_url}/cgi-bin/media/upload", params={"access_token": token, "type": "file"},
                                   files={"media": ("a.pdf", b"0" * (20 * 1024 * 1024 + 1), "application/pdf")})
            assert resp.json()["errcode"] == 40006


async def test_webhook_im_gets_file_messages_for_the_chat_and_each_cc(settings: Settings) -> None:
    """The webhook IM fetches files from their signed links: one `file` message per file, `to` the
    CC recipient for the private copies, `kind` telling the certificate apart."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    signed, certificate = doc(SIGNED, "合同.signed.pdf", settings), doc(CERT, "证明.pdf", settings)
    ref = ChatRef(chat_id="g-1", source_event_id="e-4")
    with WebhookSink(SECRET) as sink:
        async with httpx.AsyncClient() as http:
            activity = acts(settings, engine, http, WebhookChat(sink.url, SECRET, http))
            await ActivityEnvironment().run(activity.send_file, FileMessageInput(
                request_id="r-hook", chat=ref, document=signed, cc=[LEGAL], certificate=certificate))
    files = sink.of_type("file")
    assert [(f["to"], f["kind"], f["sha256"]) for f in files] == [
        (None, "signed", signed.sha256), (None, "certificate", certificate.sha256),
        (LEGAL.id, "signed", signed.sha256), (LEGAL.id, "certificate", certificate.sha256)]
    assert all(f["url"].startswith(f"{settings.public_url}/files/") for f in files)
