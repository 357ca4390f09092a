"""Approvals of Feishu, DingTalk and WeCom becoming signing flows, end to end: the platform's
simulator holds the approval (its form, attachments and comments, with the platform's shapes, auth
and error codes), its event is pushed to the real API the way the platform signs or encrypts it,
and the real worker runs the flow on the Temporal dev server. Each approval starts exactly one
flow however often its event comes, and the result is written back to it.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from connectors.chat.dingtalk.inbound import decrypt_event
from connectors.chat.feishu.client import FeishuChat
from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from store import audit
from store.db import create_all, get_engine
from store.repos import approval_mappings
from store.tables import ApprovalMapping
from tests.chat_cases.dingtalk import AES_KEY as DT_AES
from tests.chat_cases.dingtalk import APP_KEY as DT_APP
from tests.chat_cases.dingtalk import CORP as DT_CORP
from tests.chat_cases.dingtalk import GROUP as DT_GROUP
from tests.chat_cases.dingtalk import env as dingtalk_chat_env
from tests.chat_cases.feishu import ENV as FEISHU_ENV
from tests.chat_cases.feishu import KEY as FEISHU_KEY
from tests.chat_cases.feishu import TENANT as FEISHU_TENANT
from tests.chat_cases.feishu import TOKEN as FEISHU_TOKEN
from tests.chat_cases.wecom import CORP as WC_CORP
from tests.chat_cases.wecom import env as wecom_chat_env
from tests.codes import link_mailed_to, sign_with_code
from tests.sim.feishu_sim import FeishuSim, encrypt, push_headers
from tests.sim.servers import free_port
from tests.test_dingtalk import dingtalk_stack
from tests.test_dingtalk import sign as dingtalk_sign
from tests.test_dingtalk import wait_status as dingtalk_wait
from tests.test_dingtalk import world as dingtalk_world
from tests.test_feishu import Stack as FeishuStack
from tests.test_feishu import api as feishu_api
from tests.test_feishu import feishu_config
from tests.test_wecom import sign as wecom_sign
from tests.test_wecom import wecom_stack
from tests.test_wecom import world as wecom_world
from tests.test_workflow import _record
from worker import build_worker


async def exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
        return True
    except RPCError:
        return False


def mapping(platform: str, definition: str, **extra: Any) -> ApprovalMapping:
    return ApprovalMapping(platform=platform, definition=definition, document_fields="合同",
                           signer_field="签署人", counterparty_field="对方", **extra)


# ---- Feishu approval v4 -------------------------------------------------------------------------------

def feishu_event(instance: str, code: str, status: str = "APPROVED", event_uuid: str | None = None) -> dict[str, Any]:
    """The v1 `approval_instance` envelope Feishu pushes (no initiator in it)."""
    return {"ts": f"{time.time():.6f}", "uuid": event_uuid or uuid.uuid4().hex, "token": FEISHU_TOKEN,
            "type": "event_callback",
            "event": {"app_id": "cli_test", "tenant_key": FEISHU_TENANT, "type": "approval_instance",
                      "approval_code": code, "instance_code": instance, "status": status,
                      "operate_time": str(int(time.time() * 1000)),
                      "instance_operate_time": str(int(time.time() * 1000))}}


async def feishu_push(http: httpx.AsyncClient, url: str, payload: dict[str, Any]) -> httpx.Response:
    raw = json.dumps({"encrypt": encrypt(FEISHU_KEY, json.dumps(payload, ensure_ascii=False))}).encode()
    return await http.post(url, content=raw, headers=push_headers(FEISHU_KEY, raw))


def feishu_widgets(contract: bytes | None, signers: list[str]) -> list[dict[str, Any]]:
    widgets: list[dict[str, Any]] = [
        {"id": "widget_contact", "custom_id": "signers", "name": "签署人", "type": "contact", "value": signers,
         "open_ids": signers},
        {"id": "widget_text", "name": "对方", "type": "input", "value": "客户A a@customer.example"},
        {"id": "widget_amount", "name": "金额", "type": "amount", "value": 12000},
    ]
    if contract is not None:
        widgets.insert(0, {"id": "widget_file", "name": "合同", "type": "attachmentV2",
                           "files": [("采购合同.pdf", contract)]})
    return widgets


async def test_feishu_approval_becomes_one_flow_and_gets_a_comment(dev_env: WorkflowEnvironment, settings: Settings,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    contract = sample_contract("Purchase Contract", pages=1)
    port = free_port()
    settings = settings.model_copy(update={"public_url": f"http://127.0.0.1:{port}",
                                           "step_retry_window": timedelta(seconds=30)})
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    approval_mappings.save(engine, mapping("feishu", "DEF-PURCHASE"))
    with FeishuSim() as sim, feishu_api(dev_env, settings, monkeypatch, FEISHU_ENV, port=port) as url:
        sim.add_user("ou_init", "张三", email="zs@corp.example")
        sim.add_user("ou_a", "李四", email="ls@corp.example")
        sim.add_instance("INST-1", "DEF-PURCHASE", "ou_init", feishu_widgets(contract, ["ou_a"]))
        sim.add_instance("INST-2", "DEF-PURCHASE", "ou_init", feishu_widgets(None, ["ou_a"]), name="空附件审批")
        sim.add_instance("INST-3", "DEF-OTHER", "ou_init", feishu_widgets(contract, ["ou_a"]))
        sim.add_instance("INST-4", "DEF-PURCHASE", "ou_init", feishu_widgets(contract, ["ou_a"]), name="撤销的审批")
        chat = FeishuChat(feishu_config(sim.url), engine)
        stack = FeishuStack(api=url, sim=sim, client=dev_env.client, settings=settings)
        events = f"{url}/im/feishu/events"
        async with build_worker(dev_env.client, settings, chats={"feishu": chat}) as worker, worker, \
                httpx.AsyncClient(timeout=30) as http:
            # still pending: nothing to sign
            pending = await feishu_push(http, events, feishu_event("INST-1", "DEF-PURCHASE", status="PENDING"))
            assert pending.status_code == 200 and "not approved" in pending.json()["ignored"], pending.text
            # an approval definition nobody mapped: ignored, said so, nothing started
            other = await feishu_push(http, events, feishu_event("INST-3", "DEF-OTHER"))
            assert other.status_code == 200 and "not mapped" in other.json()["ignored"], other.text
            request_id = f"sign:feishu:{FEISHU_TENANT}:approval-INST-1"
            assert not await exists(dev_env.client, request_id)

            approved = feishu_event("INST-1", "DEF-PURCHASE")
            first = await feishu_push(http, events, approved)
            assert first.status_code == 200 and first.json() == {"ok": True, "request_id": request_id,
                                                                 "started": True}, first.text
            for again in (approved, feishu_event("INST-1", "DEF-PURCHASE")):  # redelivered; a second event
                resp = await feishu_push(http, events, again)
                assert resp.json() == {"ok": True, "request_id": request_id, "started": False}, resp.text

            await stack.sign(http, "ou_a", "李四")
            # the counterparty is outside the company: their link came by email (the development sender)
            customer = await link_mailed_to(settings, "a@customer.example")
            assert (await sign_with_code(http, settings, customer, "客户A")).status_code == 200
            view = await stack.wait_status(request_id, "COMPLETED")
            assert view.title == "采购合同审批" and view.initiator.id == "ou_init"
            assert [s.person.name for s in view.signers] == ["李四", "客户A"]
            await sim.wait_for(lambda: bool(sim.comments.get("INST-1")))
            await _record(dev_env.client.get_workflow_handle(request_id), "approval-feishu")

            # an approval without an attachment: the initiator is told privately, the approval too
            bare_id = (await feishu_push(http, events, feishu_event("INST-2", "DEF-PURCHASE"))).json()["request_id"]
            rejected = await stack.wait_status(bare_id, "REJECTED")
            assert rejected.reason and "没有文件" in rejected.reason
            await sim.wait_for(lambda: bool(sim.comments.get("INST-2")))

            # approved, then reverted by its initiator while 李四 has not signed: the flow is cancelled
            revoked_id = (await feishu_push(http, events, feishu_event("INST-4", "DEF-PURCHASE"))).json()["request_id"]
            await sim.wait_for(lambda: len([m for m in sim.sent_to("ou_a") if m.msg_type == "interactive"]) >= 2)
            reverted = await feishu_push(http, events, feishu_event("INST-4", "DEF-PURCHASE", status="REVERTED"))
            assert reverted.status_code == 200, reverted.text
            cancelled = await stack.wait_status(revoked_id, "CANCELLED")
            assert cancelled.reason and "REVERTED" in cancelled.reason
            await sim.wait_for(lambda: bool(sim.comments.get("INST-4")))
            assert "CANCELLED" in sim.comments["INST-4"][0]["text"]
            # a reverted approval that never started a flow: nothing to cancel, said so
            never = await feishu_push(http, events, feishu_event("INST-3", "DEF-OTHER", status="REVERTED"))
            assert "no signing flow" in never.json()["ignored"], never.text

        # the card went to the initiator privately (no chat configured), and stayed one card
        assert len(stack.status_cards("ou_init")) == 3  # one per approval
        assert "已完成" in stack.status_cards("ou_init")[0].content
        # one comment per approval, by the initiator, with the signed file attached by URL
        (comment,) = sim.comments["INST-1"]
        assert comment["user_id"] == "ou_init" and comment["user_id_type"] == "open_id"
        assert "已签署完成" in comment["text"] and view.signed_document is not None
        assert comment["files"][0]["extra"] == view.signed_document.sha256
        async with httpx.AsyncClient(timeout=30) as http:
            signed = (await http.get(comment["files"][0]["url"])).content
        assert signed.startswith(contract) and len(signed) > len(contract)
        (ended,) = sim.comments["INST-2"]
        assert "未完成签署" in ended["text"] and "没有文件" in ended["text"] and ended["files"] == []
        said = [json.loads(m.content)["text"] for m in sim.sent_to("ou_init") if m.msg_type == "text"]
        assert any("没有文件" in t for t in said)
        actions = [e.action for e in audit.trail_of(engine, request_id)]
        assert {"approval.read", "approval.written_back", "request.completed"} <= set(actions)


# ---- DingTalk OA -------------------------------------------------------------------------------------

def dingtalk_event(instance: str, code: str, kind: str = "finish", result: str = "agree",
                   event_id: str | None = None, staff: str = "zhangsan") -> dict[str, Any]:
    """`bpms_instance_change` as the encrypted event subscription delivers it."""
    now = int(time.time() * 1000)
    return {"EventType": "bpms_instance_change", "processInstanceId": instance, "processCode": code,
            "corpId": DT_CORP, "createTime": now - 60_000, "finishTime": now, "title": "张三提交的采购合同审批",
            "type": kind, "result": result, "staffId": staff, "eventId": event_id or uuid.uuid4().hex,
            "url": f"https://aflow.dingtalk.com/dingtalk/mobile/homepage.htm?procInstId={instance}"}


def dingtalk_values(contract: bytes | None) -> list[dict[str, Any]]:
    values: list[dict[str, Any]] = [
        {"id": "InnerContactField-1", "name": "签署人", "componentType": "InnerContactField", "value": "李四",
         "extValue": json.dumps([{"emplId": "lisi", "name": "李四", "avatar": ""}], ensure_ascii=False)},
        {"id": "TextField-2", "name": "对方", "componentType": "TextField", "value": ""},
    ]
    if contract is not None:
        values.insert(0, {"id": "DDAttachment-1", "name": "合同", "componentType": "DDAttachment",
                          "files": [("采购合同.pdf", contract)]})
    return values


@pytest.fixture
def dingtalk_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """DingTalk configured through the environment (read when the API starts)."""
    for name, value in dingtalk_chat_env("http://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)
    return monkeypatch


async def test_dingtalk_approval_becomes_one_flow_and_gets_a_comment(dev_env: WorkflowEnvironment,
                                                                    settings: Settings,
                                                                    dingtalk_env: pytest.MonkeyPatch) -> None:
    contract = sample_contract("DingTalk Purchase")
    sim = dingtalk_world(contract)
    sim.add_instance("PI-1", "PROC-PURCHASE", "zhangsan", dingtalk_values(contract))
    sim.add_instance("PI-2", "PROC-PURCHASE", "zhangsan", dingtalk_values(contract), status="RUNNING", result="")
    sim.add_instance("PI-3", "PROC-PURCHASE", "ghost", dingtalk_values(contract))
    async with dingtalk_stack(dev_env, settings, dingtalk_env, sim) as (dt, http):
        engine = get_engine(dt.settings.sqlalchemy_url)
        approval_mappings.save(engine, mapping("dingtalk", "PROC-PURCHASE", chat_id=DT_GROUP))
        # refused, or not finished: nothing starts; every answer is DingTalk's encrypted `success`
        for ignored in (dingtalk_event("PI-1", "PROC-PURCHASE", result="refuse"),
                        dingtalk_event("PI-1", "PROC-PURCHASE", kind="start", result="")):
            resp = await dt.event(http, ignored)
            assert resp.status_code == 200 and decrypt_event(DT_AES, DT_APP, resp.json()["encrypt"]) == "success"
        request_id = f"sign:dingtalk:{DT_CORP}:approval-PI-1"
        assert not await exists(dev_env.client, request_id)

        event = dingtalk_event("PI-1", "PROC-PURCHASE")
        for again in (event, event, dingtalk_event("PI-1", "PROC-PURCHASE")):  # redelivered; a second event
            resp = await dt.event(http, again)
            assert resp.status_code == 200 and decrypt_event(DT_AES, DT_APP, resp.json()["encrypt"]) == "success"
        flows = [w async for w in dev_env.client.list_workflows(f"WorkflowId = '{request_id}'")]
        assert len(flows) == 1

        await dingtalk_sign(http, sim, "lisi", "李四", dt.settings)
        view = await dingtalk_wait(dev_env.client, request_id, "COMPLETED")
        assert view.chat.chat_id == DT_GROUP and view.initiator.name == "张三"
        await sim.wait_for(lambda: bool(sim.comments.get("PI-1")))
        # the card lived in the configured group; the signed file went there too
        assert any(c.open_space_id == f"dtv1.card//IM_GROUP.{DT_GROUP}" for c in sim.cards.values())
        (comment,) = sim.comments["PI-1"]
        assert comment["commentUserId"] == "zhangsan" and "已签署完成" in comment["text"]
        assert view.signed_document is not None
        signed_url = next(word for word in comment["text"].split() if word.startswith("http"))
        signed = (await http.get(signed_url)).content
        assert signed.startswith(contract) and len(signed) > len(contract)

        # the event says finished/agree, but the instance itself is still running (a forged or stale
        # event): the flow says so in the group and on the approval, and signs nothing
        resp = await dt.event(http, dingtalk_event("PI-2", "PROC-PURCHASE"))
        assert resp.status_code == 200
        not_yet = await dingtalk_wait(dev_env.client, f"sign:dingtalk:{DT_CORP}:approval-PI-2", "REJECTED")
        assert not_yet.reason and "尚未通过" in not_yet.reason and not not_yet.signers
        await sim.wait_for(lambda: bool(sim.comments.get("PI-2")))
        await sim.wait_for(lambda: any("尚未通过" in m["param"].get("content", "")
                                       for m in sim.sent(DT_GROUP, "sampleText")))
        assert len(sim.comments["PI-1"]) == 1  # written back once

        # started by someone DingTalk does not know (gone since): REJECTED, and DingTalk refuses a
        # comment in their name — recorded in the audit trail, not tried forever
        resp = await dt.event(http, dingtalk_event("PI-3", "PROC-PURCHASE", staff="ghost"))
        assert resp.status_code == 200
        ghost_id = f"sign:dingtalk:{DT_CORP}:approval-PI-3"
        await dingtalk_wait(dev_env.client, ghost_id, "REJECTED")
        await dev_env.client.get_workflow_handle(ghost_id).result()  # the flow closed
        actions = [e.action for e in audit.trail_of(engine, ghost_id)]
        assert "approval.write_back_refused" in actions and "approval.written_back" not in actions
        assert "PI-3" not in sim.comments


# ---- WeCom approval ----------------------------------------------------------------------------------

def wecom_event(sp_no: str, template: str, status: int = 2, applyer: str = "zhangsan") -> str:
    """`sys_approval_change` (decrypted): nested `ApprovalInfo`, times in seconds, no event id."""
    now = int(time.time())
    return (f"<xml><ToUserName><![CDATA[{WC_CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
            f"<CreateTime>{now}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[sys_approval_change]]></Event><AgentID>1000002</AgentID>"
            f"<ApprovalInfo><SpNo>{sp_no}</SpNo><SpName><![CDATA[采购合同]]></SpName><SpStatus>{status}</SpStatus>"
            f"<TemplateId><![CDATA[{template}]]></TemplateId><ApplyTime>{now - 3600}</ApplyTime>"
            f"<Applyer><UserId><![CDATA[{applyer}]]></UserId><Party><![CDATA[1]]></Party></Applyer>"
            f"<StatuChangeEvent>2</StatuChangeEvent></ApprovalInfo></xml>")


def wecom_contents(contract: bytes | None) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = [
        {"control": "Contact", "id": "Contact-1", "title": [{"text": "签署人", "lang": "zh_CN"}],
         "value": {"members": [{"userid": "lisi", "name": "李四"}]}},
        {"control": "Text", "id": "Text-2", "title": [{"text": "对方", "lang": "zh_CN"}],
         "value": {"text": "客户A a@customer.example"}},
    ]
    if contract is not None:
        contents.insert(0, {"control": "File", "id": "File-1", "title": [{"text": "合同", "lang": "zh_CN"}],
                            "files": [("采购合同.pdf", contract)]})
    return contents


@pytest.fixture
def wecom_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in wecom_chat_env("http://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)
    return monkeypatch


async def test_wecom_approval_becomes_one_flow_and_tells_the_initiator(dev_env: WorkflowEnvironment,
                                                                      settings: Settings,
                                                                      wecom_env: pytest.MonkeyPatch) -> None:
    contract = sample_contract("WeCom Purchase")
    sim = wecom_world(contract)
    sim.add_approval("202612050001", "tpl-purchase", "zhangsan", wecom_contents(contract))
    sim.add_approval("202612050002", "tpl-purchase", "zhangsan", wecom_contents(None))
    async with wecom_stack(dev_env, settings, wecom_env, sim) as (wc, http):
        engine = get_engine(wc.settings.sqlalchemy_url)
        approval_mappings.save(engine, mapping("wecom", "tpl-purchase", counterparty_first=True))
        request_id = f"sign:wecom:{WC_CORP}:approval-202612050001"
        # still in progress, or for a template nobody mapped: nothing starts; the answer is empty
        for ignored in (wecom_event("202612050001", "tpl-purchase", status=1),
                        wecom_event("202612050001", "tpl-other")):
            resp = await wc.post(http, ignored)
            assert resp.status_code == 200 and resp.text == ""
        assert not await exists(dev_env.client, request_id)

        for _ in range(2):  # WeCom retries (there is no event id): one flow
            resp = await wc.post(http, wecom_event("202612050001", "tpl-purchase"))
            assert resp.status_code == 200 and resp.text == ""
        flows = [w async for w in dev_env.client.list_workflows(f"WorkflowId = '{request_id}'")]
        assert len(flows) == 1

        # the counterparty signs first (as mapped): outside the company, their link came by email
        customer = await link_mailed_to(wc.settings, "a@customer.example")
        assert (await sign_with_code(http, wc.settings, customer, "客户A")).status_code == 200
        await wecom_sign(http, sim, "lisi", "李四", wc.settings)
        view = await dingtalk_wait(dev_env.client, request_id, "COMPLETED")
        assert [[s.person.name for s in view.signers if s.group == g] for g in (0, 1)] == [["客户A"], ["李四"]]

        # no API comments on a WeCom approval: the initiator gets the result, with the signed file
        def results() -> list[str]:
            return [m["text"]["content"] for m in sim.sent("zhangsan", "text")
                    if m["text"]["content"].startswith("审批 202612050001")]

        await sim.wait_for(lambda: bool(results()))
        (said,) = results()
        assert "已签署完成" in said and view.signed_document is not None
        signed = (await http.get(next(w for w in said.split() if w.startswith("http")))).content
        assert signed.startswith(contract) and len(signed) > len(contract)

        # no attachment: REJECTED, the initiator told why (the flow's message and the result)
        resp = await wc.post(http, wecom_event("202612050002", "tpl-purchase"))
        assert resp.status_code == 200
        bare = await dingtalk_wait(dev_env.client, f"sign:wecom:{WC_CORP}:approval-202612050002", "REJECTED")
        assert bare.reason and "没有文件" in bare.reason
        await sim.wait_for(lambda: any(m["text"]["content"].startswith("审批 202612050002")
                                       for m in sim.sent("zhangsan", "text")))
        assert len(results()) == 1  # written back once


async def test_feishu_connector_reads_forms_downloads_attachments_and_keeps_its_token(settings: Settings) -> None:
    """The connector alone against the simulator: table rows walked, a fresh URL per download, the
    token sent only to Feishu's own API host, an unknown instance a problem for the initiator."""
    from connectors.chat.base import InputProblem
    from signbridge.core.models import ApprovalRef, ChatRef, DocumentSource

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    contract = sample_contract("Feishu connector")
    chat_ref = ChatRef(platform="feishu", tenant=FEISHU_TENANT, chat_id="ou_init", chat_kind="direct",
                       source_event_id="approval-T")
    with FeishuSim() as sim:
        table = {"id": "widget_table", "name": "明细", "type": "fieldList", "value": [[
            {"id": "widget_row_file", "name": "附件", "type": "attachmentV2",
             "ext": "附件一.pdf", "value": ["/approval-files/row-1"]}]]}
        sim.approval_files["row-1"] = contract
        sim.add_instance("T-1", "DEF-T", "ou_init", [*feishu_widgets(contract, ["ou_a", "ou_b"]), table])
        chat = FeishuChat(feishu_config(sim.url), engine)
        ref = ApprovalRef(platform="feishu", instance_id="T-1", document_fields=["合同", "附件"],
                          signer_field="signers")
        form = await chat.read_approval(ref)
        assert form.approved and form.initiator_id == "ou_init" and form.title == "采购合同审批"
        by_key = {f.keys[0]: f for f in form.fields}
        assert [f.name for f in by_key["widget_file"].files] == ["采购合同.pdf"]
        assert [p.id for p in by_key["widget_contact"].people] == ["ou_a", "ou_b"]
        assert by_key["widget_row_file"].files[0].url == "feishu-approval://T-1/widget_row_file/0"
        assert by_key["widget_amount"].text == "12000"
        for field in (by_key["widget_file"], by_key["widget_row_file"]):
            assert await chat.download(chat_ref, field.files[0], 10_000_000) == contract
        reads = sim.instance_reads
        sim.files_need_token = True  # Feishu wants the token after all: sent, to its own host only
        assert await chat.download(chat_ref, by_key["widget_file"].files[0], 10_000_000) == contract
        assert sim.instance_reads == reads + 1  # a fresh URL for every download
        sim.file_base = sim.url.replace("127.0.0.1", "localhost")  # attachments on another host
        with pytest.raises(InputProblem, match="Feishu's own API host"):
            await chat.download(chat_ref, by_key["widget_file"].files[0], 10_000_000)
        with pytest.raises(InputProblem, match="MB"):
            sim.file_base = ""
            await chat.download(chat_ref, by_key["widget_file"].files[0], 1000)
        gone = DocumentSource(name="x.pdf", url="feishu-approval://T-1/widget_file/5")
        with pytest.raises(InputProblem, match="no longer in the approval"):
            await chat.download(chat_ref, gone, 10_000_000)
        with pytest.raises(InputProblem, match="1390001"):
            await chat.read_approval(ref.model_copy(update={"instance_id": "NOPE"}))
