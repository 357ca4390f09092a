"""The command grammar every platform shares: who signs, in which order, and what gets refused."""

from __future__ import annotations

from typing import Any

import pytest

from signbridge.core.commands import CommandProblem, ParsedCommand, is_command, parse
from signbridge.core.models import Person

LISI: dict[str, Any] = {"id": "u-2", "name": "李四"}
WANGWU: dict[str, Any] = {"id": "u-3", "name": "王五"}
CUSTOMER: dict[str, Any] = {"id": "x-9", "name": "客户A", "email": "a@customer.example", "external": True}
ALICE: dict[str, Any] = {"id": "s-1", "name": "Alice"}
BOB: dict[str, Any] = {"id": "s-2", "name": "Bob"}
CAROL: dict[str, Any] = {"id": "s-3", "name": "Carol", "mobile": "+15550100", "external": True}
MENTIONS: list[dict[str, Any]] = [LISI, WANGWU, CUSTOMER, ALICE, BOB, CAROL]


def ids(cmd: ParsedCommand | None) -> list[list[str]]:
    assert cmd is not None
    return [[p.id for p in group] for group in cmd.groups]


def parsed_ok(text: str, mentions: list[dict[str, Any]] | None = None) -> ParsedCommand:
    parsed = parse(text, MENTIONS if mentions is None else mentions)
    assert parsed is not None
    return parsed


def problem(text: str, mentions: list[dict[str, Any]] | None = None) -> str:
    with pytest.raises(CommandProblem) as err:
        parse(text, MENTIONS if mentions is None else mentions)
    return err.value.message


@pytest.mark.parametrize("text", [
    "", "hello", "please sign this", "/signature @李四", "sign @李四", "@SignBridge hello",
    "看一下 /sign @李四", "@Somebody sign @李四",
])
def test_ordinary_chat_is_not_a_command(text: str) -> None:
    assert parse(text, MENTIONS) is None
    assert not is_command(text)


@pytest.mark.parametrize("text", [
    "/sign @李四", "  /sign @李四", "/SIGN @李四", "/签署 @李四", "@SignBridge sign @李四",
    "@SignBridge 签署 @李四", "@signbridge Sign @李四", "@SignBridge签署 @李四", "＠SignBridge 签署 @李四",
])
def test_every_way_to_start(text: str) -> None:
    assert ids(parse(text, MENTIONS)) == [["u-2"]]


def test_bot_name_is_configurable() -> None:
    assert parse("@签署助手 签署 @李四", MENTIONS, bot_name="签署助手") is not None
    assert parse("@SignBridge sign @李四", MENTIONS, bot_name="签署助手") is None


def test_parallel_signers_form_one_group() -> None:
    cmd = parse("/sign @李四 @王五", MENTIONS)
    assert ids(cmd) == [["u-2", "u-3"]]
    assert cmd is not None and cmd.groups[0][0] == Person(id="u-2", name="李四")


@pytest.mark.parametrize("sep", [">", "＞", "→", "然后", "then", "THEN"])
def test_serial_separators(sep: str) -> None:
    assert ids(parse(f"/sign @李四 {sep} @王五 {sep} @客户A", MENTIONS)) == [["u-2"], ["u-3"], ["x-9"]]


def test_mixed_parallel_then_serial() -> None:
    cmd = parse("/sign @李四 @王五 > @客户A", MENTIONS)
    assert ids(cmd) == [["u-2", "u-3"], ["x-9"]]
    assert cmd is not None and cmd.groups[1][0].external and cmd.groups[1][0].email == "a@customer.example"
    assert [p.name for p in cmd.signers] == ["李四", "王五", "客户A"]


def test_separators_may_touch_names() -> None:
    assert ids(parse("/sign @李四>@王五然后@客户A", MENTIONS)) == [["u-2"], ["u-3"], ["x-9"]]
    assert ids(parse("@SignBridge 签署 @李四、@王五，@Alice", MENTIONS)) == [["u-2", "u-3", "s-1"]]


def test_mentions_glued_to_words_and_email_addresses() -> None:
    assert ids(parse("/sign 请@李四 签，然后@王五", MENTIONS)) == [["u-2"], ["u-3"]]
    assert ids(parse("/sign @李四 抄送 zs@corp.example", MENTIONS)) == [["u-2"]]


def test_english_names_and_then() -> None:
    cmd = parse("@SignBridge sign @Alice @Bob then @Carol", MENTIONS)
    assert ids(cmd) == [["s-1", "s-2"], ["s-3"]]


def test_then_inside_a_word_is_not_a_separator() -> None:
    assert ids(parse("/sign @Alice authentic thenceforth @Bob", MENTIONS)) == [["s-1", "s-2"]]


def test_stray_words_and_bot_mention_are_ignored() -> None:
    mentions: list[dict[str, Any]] = [*MENTIONS, {"id": "bot", "name": "SignBridge"}]
    assert ids(parse("@SignBridge 签署 请 @李四 和 @王五 签一下 > @客户A", mentions)) == [["u-2", "u-3"], ["x-9"]]


def test_title_forms() -> None:
    assert parsed_ok('/sign @李四 title:"销售合同 2024"').title == "销售合同 2024"
    assert parsed_ok("/sign 标题：“采购 合同” @李四").title == "采购 合同"
    assert parsed_ok("/sign @李四 --title Q3-renewal").title == "Q3-renewal"
    assert parsed_ok('/sign @李四 --title "Q3 renewal" > @王五').title == "Q3 renewal"
    assert parsed_ok("/sign @李四").title is None
    cmd = parse('/sign title:"A > B" @李四 > @王五', MENTIONS)
    assert cmd is not None and cmd.title == "A > B" and ids(cmd) == [["u-2"], ["u-3"]]


def test_provider_option() -> None:
    cmd = parse("/sign @李四 provider:DocuSign", MENTIONS)
    assert cmd is not None and cmd.provider == "docusign" and ids(cmd) == [["u-2"]]
    assert parsed_ok("/sign @李四").provider is None


def test_same_name_twice_maps_to_mentions_in_order() -> None:
    twins: list[dict[str, Any]] = [{"id": "u-a", "name": "张伟"}, {"id": "u-b", "name": "张伟"}]
    assert ids(parse("/sign @张伟 > @张伟", twins)) == [["u-a"], ["u-b"]]


def test_longest_name_wins_and_prefixes_never_match() -> None:
    mentions: list[dict[str, Any]] = [{"id": "u-1", "name": "李四"}, {"id": "u-9", "name": "李四光"}]
    assert ids(parse("/sign @李四光 @李四", mentions)) == [["u-9", "u-1"]]
    msg = problem("/sign @李四光", [{"id": "u-1", "name": "李四"}])
    assert "@李四光" in msg


def test_accepts_person_objects() -> None:
    assert ids(parse("/sign @李四", [Person(id="u-2", name="李四")])) == [["u-2"]]


# ---- problems ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["/sign", "/sign   ", "@SignBridge 签署", "/sign 请签一下"])
def test_no_signers(text: str) -> None:
    msg = problem(text)
    assert "没有指定签署人" in msg and "No signers" in msg


def test_unknown_mention() -> None:
    msg = problem("/sign @李四 @王六 > @客户A")
    assert msg.startswith("无法识别 @王六：") and "Cannot recognise @王六" in msg


def test_unknown_mention_glued_to_separator() -> None:
    assert "无法识别 @赵七：" in problem("/sign @李四 @赵七然后@王五")


def test_typed_name_without_structured_mention() -> None:
    assert "无法识别 @李四" in problem("/sign @李四", [])


def test_same_person_twice() -> None:
    msg = problem("/sign @李四 > @李四")
    assert "李四" in msg and "more than once" in msg
    assert "more than once" in problem("/sign @李四 @王五 @李四")


def test_external_signer_needs_a_contact() -> None:
    mentions: list[dict[str, Any]] = [{"id": "x-1", "name": "客户B", "external": True}]
    msg = problem("/sign @客户B", mentions)
    assert "客户B" in msg and "neither an email nor a mobile" in msg
    blank: list[dict[str, Any]] = [{"id": "x-1", "name": "客户B", "email": " ", "external": True}]
    assert "客户B" in problem("/sign @客户B", blank)
    ok: list[dict[str, Any]] = [{"id": "x-1", "name": "客户B", "mobile": "+8613800000000", "external": True}]
    assert ids(parse("/sign @客户B", ok)) == [["x-1"]]


def test_internal_signer_needs_no_contact() -> None:
    assert ids(parse("/sign @李四", [{"id": "u-2", "name": "李四"}])) == [["u-2"]]


@pytest.mark.parametrize("text", [
    "/sign @李四 > > @王五", "/sign > @李四", "/sign @李四 >", "/sign @李四 然后 then @王五",
])
def test_empty_group(text: str) -> None:
    msg = problem(text)
    assert "组签署人为空" in msg and "is empty" in msg


def test_empty_group_message_names_the_group() -> None:
    assert "第 2 组" in problem("/sign @李四 > > @王五") and "group 2" in problem("/sign @李四 > > @王五")
