"""The `key:value` options of a sign command (same grammar on every platform), bulk and search."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from signbridge.core.commands import CommandProblem, parse
from signbridge.core.options import search_words

LISI: dict[str, Any] = {"id": "u-2", "name": "李四"}
WANGWU: dict[str, Any] = {"id": "u-3", "name": "王五"}
LEGAL: dict[str, Any] = {"id": "u-7", "name": "法务"}
CUSTOMER: dict[str, Any] = {"id": "x-9", "name": "客户A", "email": "a@customer.example", "external": True}
MENTIONS = [LISI, WANGWU, LEGAL, CUSTOMER]


def test_template_fields_roles_and_options_in_one_command() -> None:
    cmd = parse("/sign 模板:销售合同 客户名称:某某公司 金额:120000 甲方:@李四 乙方:@客户A 期限:3天 提醒:关 抄送:@法务",
                MENTIONS)
    assert cmd is not None
    assert cmd.template == "销售合同"
    assert cmd.fields == {"客户名称": "某某公司", "金额": "120000"}
    assert {role: p.id for role, p in cmd.roles.items()} == {"甲方": "u-2", "乙方": "x-9"}
    assert [[p.id for p in g] for g in cmd.groups] == [["u-2", "x-9"]]  # role mentions still sign, in parallel
    assert [p.id for p in cmd.cc] == ["u-7"]  # a copy, not a signer
    assert cmd.deadline == timedelta(days=3)
    assert cmd.reminders is False


def test_role_mentions_keep_their_order_and_english_keys_work() -> None:
    cmd = parse('/sign template:Sales 甲方:@李四 > 乙方:@客户A deadline:48h reminders:on cc:@法务,@王五 '
                'title:"Q3 renewal" provider:docusign', MENTIONS)
    assert cmd is not None
    assert [[p.id for p in g] for g in cmd.groups] == [["u-2"], ["x-9"]]
    assert cmd.deadline == timedelta(hours=48) and cmd.reminders is True
    assert [p.id for p in cmd.cc] == ["u-7", "u-3"]
    assert cmd.title == "Q3 renewal" and cmd.provider == "docusign"


@pytest.mark.parametrize(("text", "needle"), [
    ("/sign @李四 颜色:红", "颜色"),  # no template: an unknown key is refused with the known ones
    ("/sign @李四 期限:明天", "Cannot read the deadline"),
    ("/sign @李四 期限:400天", "between 1 hour and 365 days"),
    ("/sign @李四 提醒:也许", "on or off"),
    ("/sign @李四 抄送:法务", "needs mentions"),
    ("/sign @李四 抄送:@不存在", "Cannot recognise @不存在"),
    ("/sign 甲方:@李四 甲方:@王五", "assigned more than once"),
])
def test_bad_options_are_refused_with_a_reason(text: str, needle: str) -> None:
    with pytest.raises(CommandProblem) as err:
        parse(text, MENTIONS)
    assert needle in err.value.message
    if "颜色" in text:
        assert "期限/deadline" in err.value.message and "抄送/cc" in err.value.message


def test_words_with_colons_that_are_not_options() -> None:
    cmd = parse("/sign @李四 see https://intranet.example/x at 10:30", MENTIONS)
    assert cmd is not None and cmd.fields == {} and [p.id for p in cmd.signers] == ["u-2"]


def test_bulk_needs_no_signer_in_the_text() -> None:
    cmd = parse("/sign 批量 模板:销售合同", MENTIONS)
    assert cmd is not None and cmd.bulk and cmd.template == "销售合同" and cmd.groups == [[]]
    with pytest.raises(CommandProblem):
        parse("/sign 模板:销售合同", MENTIONS)  # not bulk: someone must sign


@pytest.mark.parametrize(("text", "words"), [
    ("/sign status 销售合同", "销售合同"), ("@SignBridge 查 销售合同 2024", "销售合同 2024"),
    ("@SignBridge 查", ""), ("/签署 查询 合同", "合同"),
    ("/sign @李四", None), ("@Other 查 x", None), ("查 销售合同", None),
])
def test_search_command(text: str, words: str | None) -> None:
    assert search_words(text, "SignBridge") == words
