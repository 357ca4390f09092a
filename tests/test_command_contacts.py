"""Contacts in a sign command: `@王总 13812341234`, `@王总 wang@customer.example`, `王总:13812341234`.

The same grammar serves every platform (`signbridge.core.commands`), so these tests are the
grammar's; the platforms' own tests show that what they hand over reaches the flow.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signbridge.core import contacts
from signbridge.core.commands import CommandProblem, ParsedCommand, parse
from signbridge.core.models import Person

LISI: dict[str, Any] = {"id": "u-2", "name": "李四"}
WANG: dict[str, Any] = {"id": "ou_ext", "name": "王总", "external": True}  # an external group's customer
MENTIONS = [LISI, WANG]


def parsed(text: str, mentions: list[dict[str, Any]] | None = None) -> ParsedCommand:
    result = parse(text, MENTIONS if mentions is None else mentions)
    assert result is not None
    return result


def problem(text: str) -> str:
    with pytest.raises(CommandProblem) as err:
        parse(text, MENTIONS)
    return err.value.message


def person(cmd: ParsedCommand, person_id: str) -> Person:
    return next(p for p in cmd.signers if p.id == person_id)


@pytest.mark.parametrize(("typed", "mobile"), [
    ("13812341234", "+8613812341234"), ("+8613812341234", "+8613812341234"), ("8613812341234", "+8613812341234"),
    ("138-1234-1234", "+8613812341234"), ("19912341234", "+8619912341234"), ("+14155550123", "+14155550123"),
    ("+447911123456", "+447911123456"),
])
def test_a_mobile_after_a_mention_is_that_persons(typed: str, mobile: str) -> None:
    cmd = parsed(f"/sign @李四 > @王总 {typed}")
    assert [[p.id for p in g] for g in cmd.groups] == [["u-2"], ["ou_ext"]]
    wang = person(cmd, "ou_ext")
    assert (wang.mobile, wang.email, wang.external, wang.name) == (mobile, None, True, "王总")
    assert person(cmd, "u-2").mobile is None  # the contact belongs to the mention it follows only


def test_an_email_and_a_mobile_after_a_mention_in_either_order() -> None:
    for text in ("/sign @王总 Wang@Customer.Example 13812341234 @李四",
                 "/sign @王总 13812341234 Wang@Customer.Example @李四"):
        cmd = parsed(text)
        wang = person(cmd, "ou_ext")
        assert (wang.email, wang.mobile) == ("Wang@customer.example", "+8613812341234")
        assert [[p.id for p in g] for g in cmd.groups] == [["ou_ext", "u-2"]]


@pytest.mark.parametrize("colon", [":", "："])
def test_a_name_with_a_contact_is_an_external_signer(colon: str) -> None:
    cmd = parsed(f"/sign @李四 > 王总{colon}13812341234 赵总{colon}zhao@customer.example")
    assert [[p.id for p in g] for g in cmd.groups] == [["u-2"], ["ext:+8613812341234", "ext:zhao@customer.example"]]
    wang, zhao = cmd.groups[1]
    assert (wang.name, wang.mobile, wang.external) == ("王总", "+8613812341234", True)
    assert (zhao.name, zhao.email, zhao.external) == ("赵总", "zhao@customer.example", True)


def test_the_same_contact_twice_is_one_person_named_twice() -> None:
    assert "named more than once" in problem("/sign 王总:13812341234 > 王经理:+8613812341234 王总:138-1234-1234")


def test_with_a_template_name_colon_value_is_a_field() -> None:
    cmd = parsed("/sign 模板:销售合同 @李四 客户电话:13812341234")
    assert cmd.fields == {"客户电话": "13812341234"}
    assert [[p.id for p in g] for g in cmd.groups] == [["u-2"]]


@pytest.mark.parametrize("bad", ["1381234123", "12812341234", "+86138123412345", "+8612812341234", "1381234-",
                                 "+999123456789", "wang@", "wang@customer", "wang@customer..example"])
def test_a_contact_that_is_not_one_is_refused_by_name(bad: str) -> None:
    for text in (f"/sign @王总 {bad}", f"/sign @李四 王总:{bad}"):
        message = problem(text)
        assert f"「{bad}」" in message and f"'{bad}'" in message, message
        assert "手机号" in message and "email" in message


def test_every_bad_contact_is_listed_at_once() -> None:
    message = problem("/sign @王总 1381234 > 赵总:zhao@ @李四")
    assert "「1381234」" in message and "「zhao@」" in message


def test_an_external_mention_without_any_contact_is_told_how_to_give_one() -> None:
    message = problem("/sign @李四 > @王总")
    assert "王总" in message and "neither an email nor a mobile" in message and "@王总 13812341234" in message


def test_ordinary_words_after_a_mention_stay_ordinary() -> None:
    cmd = parsed("/sign @李四 please 2 copies > @王总 wang@customer.example thanks")
    assert [[p.id for p in g] for g in cmd.groups] == [["u-2"], ["ou_ext"]]
    assert person(cmd, "u-2").model_dump() == Person(**LISI).model_dump()


# ---- properties --------------------------------------------------------------------------------

CN_MOBILES = st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)
LOCAL_PARTS = st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z0-9]{1,5})?", fullmatch=True)
DOMAINS = st.from_regex(r"[a-z][a-z0-9]{1,10}\.(com|cn|example|org)", fullmatch=True)
NAMES = st.text(alphabet="王李张赵钱孙总经理客户甲乙丙", min_size=1, max_size=4)


@given(mobile=CN_MOBILES, plus86=st.booleans(), name=NAMES)
def test_any_mainland_mobile_reaches_the_signer_in_e164(mobile: str, plus86: bool, name: str) -> None:
    typed = f"+86{mobile}" if plus86 else mobile
    for text, who in ((f"/sign @王总 {typed}", "ou_ext"), (f"/sign {name}:{typed}", f"ext:+86{mobile}")):
        cmd = parsed(text)
        assert person(cmd, who).mobile == f"+86{mobile}"


@given(local=LOCAL_PARTS, domain=DOMAINS, name=NAMES)
def test_any_plain_address_reaches_the_signer(local: str, domain: str, name: str) -> None:
    address = f"{local}@{domain}"
    cmd = parsed(f"/sign {name}：{address} > @王总 {address.upper()}")
    (first,), (second,) = cmd.groups
    assert (first.id, first.email, first.name) == (f"ext:{address}", address, name)
    assert second.email is not None and second.email.lower() == address


@given(digits=st.from_regex(r"[0-9]{7,10}", fullmatch=True))
def test_too_short_numbers_are_never_taken_for_a_mobile(digits: str) -> None:
    assert f"「{digits}」" in problem(f"/sign @王总 {digits}")


@given(token=st.text(min_size=1, max_size=30).filter(lambda t: not any(c.isspace() for c in t)))
def test_a_contact_is_either_read_or_refused_never_half_read(token: str) -> None:
    kind = contacts.attempt(token)
    if kind is None:
        with pytest.raises(ValueError):
            contacts.read(token)
        return
    try:
        found = contacts.read(token)
    except contacts.BadContact as e:
        assert e.token == token and e.kind == kind
    else:
        assert found.kind == kind
        assert found.value.startswith("+") if kind == "mobile" else "@" in found.value


WORDS = st.sampled_from(["@李四", "@王总", "13812341234", "+8613812341234", "1381234", "wang@customer.example",
                         "wang@", "王总:13812341234", "赵总：zhao@x.example", ">", "然后", "then", "请", "title:合同",
                         "期限:3天", "抄送:@李四", "模板:合同", "电话:138", "，", "@", ":", "＠王总"])


@given(words=st.lists(WORDS, max_size=12))
def test_any_mix_of_mentions_contacts_and_words_parses_or_says_why(words: list[str]) -> None:
    """Whatever the order, a command is read or refused with a message; nothing else escapes, and
    every contact that reaches a signer is normalised."""
    try:
        cmd = parse("/sign " + " ".join(words), MENTIONS)
    except CommandProblem as e:
        assert e.message
        return
    assert cmd is not None
    for p in cmd.signers:
        assert p.mobile is None or contacts.read(p.mobile).value == p.mobile
        assert p.email is None or "@" in p.email
        assert not p.id.startswith("ext:") or (p.external and (p.mobile or p.email))
