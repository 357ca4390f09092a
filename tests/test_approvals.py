"""Approvals that become signing tasks: the mapping (pure), the mapping store and CLI, and the
webhook IM's `approval.approved` end to end over the real Temporal dev server — one flow per
approval however often the event comes, the signed file written back as `approval.update`.

The chat platforms' approvals (Feishu, DingTalk, WeCom) have their end-to-end tests beside their
simulators: `tests/test_approvals_platforms.py`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from signbridge.core.approvals import (
    ApprovalForm,
    ApprovalProblem,
    ApprovalRef,
    FormField,
    content_of,
    counterparties,
)
from signbridge.core.models import DocumentSource, Person
from signbridge.core.settings import Settings
from store import audit
from store.db import create_all, get_engine
from store.repos import approval_mappings
from store.tables import ApprovalMapping
from tests.test_e2e import MENTIONS, in_process_worker, stack
from tests.test_workflow import _record

REF = ApprovalRef(platform="feishu", instance_id="inst-1", document_fields=["合同"], signer_field="签署人",
                  counterparty_field="对方")
DOC = DocumentSource(name="合同.pdf", url="feishu-approval://inst-1/w1/0")


def form(*fields: FormField, approved: bool = True) -> ApprovalForm:
    return ApprovalForm(instance_id="inst-1", approved=approved, status="APPROVED" if approved else "PENDING",
                        title="采购合同审批", fields=list(fields))


FILES = FormField(keys=["w1", "合同"], kind="file", files=[DOC])
SIGNERS = FormField(keys=["w2", "签署人"], kind="contact", people=[Person(id="ou_a", name="李四"),
                                                               Person(id="ou_a", name="李四")])
OTHER = FormField(keys=["w3", "对方"], kind="text", text="客户A a@customer.example\n客户B +86 138-0000-0002")


def test_the_mapping_takes_documents_signers_then_counterparties() -> None:
    content = content_of(form(FILES, SIGNERS, OTHER), REF)
    assert content.title == "采购合同审批" and content.documents == [DOC]
    assert [[p.name for p in g] for g in content.groups] == [["李四"], ["客户A", "客户B"]]
    external = content.groups[1]
    assert external[0].email == "a@customer.example" and external[1].mobile == "+8613800000002"
    assert all(p.external for p in external) and external[0].id != external[1].id
    first = content_of(form(FILES, SIGNERS, OTHER), REF.model_copy(update={"counterparty_first": True}))
    assert [[p.name for p in g] for g in first.groups] == [["客户A", "客户B"], ["李四"]]
    # fields are found by label, id or custom id, whatever their case
    assert content_of(form(FILES, SIGNERS), REF.model_copy(update={"document_fields": ["W1"]})).documents == [DOC]


@pytest.mark.parametrize(("fields", "approved", "words"), [
    ((SIGNERS,), True, "没有文件"),
    ((FILES,), True, "没有填写签署人"),
    ((FILES, SIGNERS), False, "尚未通过"),
    ((FILES, FormField(keys=["对方"], kind="text", text="客户C 没有联系方式")), True, "没有邮箱或手机号"),
])
def test_what_the_initiator_must_fix(fields: tuple[FormField, ...], approved: bool, words: str) -> None:
    with pytest.raises(ApprovalProblem) as e:
        content_of(form(*fields, approved=approved), REF)
    assert words in e.value.message


def test_counterparties_are_stable_ids() -> None:
    assert counterparties("A a@x.example") == counterparties("  A a@x.example ;")
    assert counterparties("") == []
    # digits in a name are not a phone number; a country code may stand apart
    [named] = counterparties("客户2024 13800000001")
    assert (named.name, named.mobile) == ("客户2024", "13800000001")
    [coded] = counterparties("Acme Ltd, +86 138-0000-0003")
    assert (coded.name, coded.mobile) == ("Acme Ltd", "+8613800000003")


def test_mappings_are_stored_replaced_and_removed(settings: Settings) -> None:
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    approval_mappings.save(engine, ApprovalMapping(platform="feishu", definition="D1", document_fields="合同"))
    approval_mappings.save(engine, ApprovalMapping(platform="feishu", tenant="t1", definition="D1",
                                                   document_fields="附件", chat_id="oc_1"))
    assert approval_mappings.find(engine, "feishu", "t1", "D1").document_fields == "附件"  # type: ignore[union-attr]
    assert approval_mappings.find(engine, "feishu", "t2", "D1").document_fields == "合同"  # type: ignore[union-attr]
    approval_mappings.save(engine, ApprovalMapping(platform="feishu", definition="D1", document_fields="文件"))
    assert approval_mappings.find(engine, "feishu", "t2", "D1").document_fields == "文件"  # type: ignore[union-attr]
    assert len(approval_mappings.all_mappings(engine)) == 2
    assert approval_mappings.remove(engine, "feishu", "", "D1") and not approval_mappings.remove(engine, "feishu", "",
                                                                                                 "D1")
    assert approval_mappings.find(engine, "feishu", "t2", "D1") is None


def test_the_approvals_cli_maps_lists_and_removes(settings: Settings) -> None:
    from typer.testing import CliRunner

    from signbridge.cli.main import app

    runner = CliRunner()
    env = {"SIGNBRIDGE_DATA_DIR": str(settings.data_dir), "SIGNBRIDGE_DATABASE_URL": settings.sqlalchemy_url,
           "SIGNBRIDGE_ENVIRONMENT": "development", "COLUMNS": "250"}
    mapped = runner.invoke(app, ["approvals", "map", "feishu", "DEF-1", "--document", "合同", "--document", "附件",
                                 "--signers", "签署人", "--counterparty", "对方", "--chat", "oc_1"], env=env)
    assert mapped.exit_code == 0, mapped.output
    assert "DEF-1" in mapped.output and "合同, 附件" in mapped.output and "chat oc_1" in mapped.output
    listed = runner.invoke(app, ["approvals", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.output)
    assert row["documents"] == ["合同", "附件"] and row["signers"] == "签署人" and row["chat"] == "oc_1"
    # bad input: a platform without approvals, no signer field, no document field — nothing stored
    for args, words in ((["slack", "D", "--document", "f", "--signers", "s"], "not 'slack'"),
                        (["wecom", "D", "--document", "f"], "--signers"),
                        (["wecom", "D", "--document", " ", "--signers", "s"], "--document")):
        refused = runner.invoke(app, ["approvals", "map", *args], env=env)
        assert refused.exit_code == 1 and words in refused.output, refused.output
    assert len(json.loads(runner.invoke(app, ["approvals", "list", "--json"], env=env).output)) == 1
    assert runner.invoke(app, ["approvals", "remove", "feishu", "DEF-1"], env=env).exit_code == 0
    gone = runner.invoke(app, ["approvals", "remove", "feishu", "DEF-1"], env=env)
    assert gone.exit_code == 1 and "no mapping" in gone.output


def test_mapping_a_feishu_definition_subscribes_to_its_events(settings: Settings) -> None:
    from typer.testing import CliRunner

    from signbridge.cli.main import app
    from tests.sim.feishu_sim import FeishuSim

    runner = CliRunner()
    with FeishuSim() as sim:
        env = {"SIGNBRIDGE_DATA_DIR": str(settings.data_dir), "SIGNBRIDGE_DATABASE_URL": settings.sqlalchemy_url,
               "SIGNBRIDGE_ENVIRONMENT": "development", "COLUMNS": "250", "SIGNBRIDGE_FEISHU_APP_ID": "cli_test",
               "SIGNBRIDGE_FEISHU_APP_SECRET": "secret", "SIGNBRIDGE_FEISHU_API_BASE": sim.url}
        args = ["approvals", "map", "feishu", "DEF-9", "--document", "合同", "--signers", "签署人"]
        first = runner.invoke(app, args, env=env)
        assert first.exit_code == 0 and "subscribed to DEF-9" in first.output, first.output
        again = runner.invoke(app, args, env=env)  # Feishu answers 1390007: fine, said so
        assert again.exit_code == 0 and "already subscribed" in again.output, again.output
        assert sim.subscriptions == {"DEF-9"}
        sim.app_secret = "rotated"  # the app's credentials are wrong: the mapping is kept, the failure said
        sim.expire_tokens()
        failed = runner.invoke(app, ["approvals", "map", "feishu", "DEF-10", "--document", "合同", "--signers", "x"],
                               env=env)
        assert failed.exit_code == 1 and "subscribing to DEF-10's events failed" in failed.output, failed.output
        listed = json.loads(runner.invoke(app, ["approvals", "list", "--json"], env=env).output)
        assert {r["definition"] for r in listed} == {"DEF-9", "DEF-10"}


# ---- the webhook IM's approval.approved, end to end ------------------------------------------------

def approved_event(files: str, approval_id: str, event_id: str | None = None, text: str = "@李四 > @客户A",
                   with_file: bool = True) -> dict[str, Any]:
    return {"event_id": event_id or f"ap-{uuid.uuid4().hex[:10]}", "type": "approval.approved",
            "approval": {"id": approval_id, "title": "采购合同审批"},
            "initiator": {"id": "u-0", "name": "张三", "email": "zs@corp.example"},
            "chat": {"id": "g-approvals", "kind": "group"}, "text": text,
            "mentions": [MENTIONS[0], MENTIONS[2]],
            "files": [{"name": "contract.pdf", "url": f"{files}/f/contract.pdf"}] if with_file else []}


async def test_webhook_approval_starts_one_flow_and_gets_the_signed_file(dev_env: WorkflowEnvironment,
                                                                        settings: Settings) -> None:
    with stack(dev_env, settings) as s:
        async with in_process_worker(dev_env, s.settings), httpx.AsyncClient(timeout=30) as http:
            approval_id = f"AP-{uuid.uuid4().hex[:8]}"
            event = approved_event(s.files, approval_id)
            first = await s.send(http, event)
            assert first.status_code == 202 and first.json()["started"] is True, first.text
            request_id = first.json()["request_id"]
            assert request_id == f"sign:webhook:default:approval-{approval_id}"
            # the same event again, and a second event for the same approval: one flow
            for again in (event, approved_event(s.files, approval_id)):
                resp = await s.send(http, again)
                assert resp.status_code == 200 and resp.json() == {"ok": True, "request_id": request_id,
                                                                   "started": False}, resp.text

            await s.sign(http, request_id, "u-1", "李四")
            await s.sign(http, request_id, "x-9", "客户A")
            view = await s.wait_status(http, request_id, "COMPLETED")
            assert view["title"] == "采购合同审批" and view["chat"]["chat_id"] == "g-approvals"
            assert view["approval"]["instance_id"] == approval_id and view["approval"]["self_contained"] is True
            cards = s.sink.cards(request_id)
            assert cards and all("来自审批「采购合同审批」" in c["note"] for c in cards)
            await s.sink.wait_for(lambda: bool(s.sink.of_type("approval.update")), timeout=30)
            update = s.sink.of_type("approval.update")
            assert len(update) == 1 and update[0]["approval_id"] == approval_id
            assert update[0]["status"] == "COMPLETED" and update[0]["request_id"] == request_id
            assert update[0]["file"]["sha256"] == view["signed_document"]["sha256"]
            signed = (await http.get(update[0]["file"]["url"])).content
            assert signed.startswith(s.contract) and len(signed) > len(s.contract)
            assert update[0]["idempotency_key"] == f"{request_id}:approval-result"
            await _record(dev_env.client.get_workflow_handle(request_id), "approval-webhook")

            # an approval without a file: the flow says why in the approval's chat, ends REJECTED,
            # and the approval is told too
            bare_id = f"AP-{uuid.uuid4().hex[:8]}"
            bare = await s.send(http, approved_event(s.files, bare_id, with_file=False))
            assert bare.status_code == 202 and bare.json()["status"] == "rejected", bare.text
            bare_request = bare.json()["request_id"]
            await s.wait_status(http, bare_request, "REJECTED")
            await s.sink.wait_for(lambda: len(s.sink.of_type("approval.update")) == 2, timeout=30)
            ended = s.sink.of_type("approval.update")[1]
            assert ended["approval_id"] == bare_id and ended["status"] == "REJECTED" and ended["file"] is None
            assert "没有附带要签署的文件" in ended["text"]
            said = [m for m in s.sink.of_type("message") if m.get("chat_id") == "g-approvals" and not m.get("to")]
            assert any("没有附带要签署的文件" in m["text"] for m in said)

            # the IM is down when the flow ends: the answer to the approval waits, then arrives once
            down_id = f"AP-{uuid.uuid4().hex[:8]}"
            s.sink.outage(503)
            down = await s.send(http, approved_event(s.files, down_id, with_file=False))
            assert down.status_code == 202, down.text
            await s.sink.wait_for(lambda: sum(a.status == 503 for a in s.sink.attempts) >= 2, timeout=30)
            s.sink.recover()
            await s.sink.wait_for(lambda: any(m["approval_id"] == down_id for m in s.sink.of_type("approval.update")),
                                  timeout=90)
            await s.wait_status(http, down.json()["request_id"], "REJECTED")
            assert len([m for m in s.sink.of_type("approval.update") if m["approval_id"] == down_id]) == 1

            # no initiator: a clear 400, nothing started
            broken = approved_event(s.files, f"AP-{uuid.uuid4().hex[:8]}")
            del broken["initiator"]
            resp = await s.send(http, broken)
            assert resp.status_code == 400 and "initiator" in resp.json()["error"]["message"]

        engine = get_engine(s.settings.sqlalchemy_url)
        actions = [e.action for e in audit.trail_of(engine, request_id)]
        assert "approval.written_back" in actions and actions.index("request.received") < actions.index(
            "approval.written_back")
