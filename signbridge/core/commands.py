"""The sign command grammar, shared by every chat platform.

    /sign @李四 @王五 > @客户A title:"销售合同 2024"
    @SignBridge 签署 @李四 然后 @王五
    @SignBridge sign @Alice @Bob then @Carol --title Q3-renewal provider:local

Rules, in the order they are applied:

* **Start.** The message must begin with `/sign` (or `/签署`) or with `@<bot> sign` / `@<bot> 签署`
  (bot name configurable, default "SignBridge"; case-insensitive). Anything else is ordinary
  chat and `parse` returns `None` so the adapter ignores it.
* **Options** (anywhere after the start, removed before the signers are read):
  `title:"…"` / `标题：“…”` / `--title "…"` (quotes optional for a one-word title) and
  `provider:NAME` / `--provider NAME`.
* **Signers.** `@name` tokens are matched by exact name against the platform's structured
  mentions (the text alone is never trusted to identify a person). Names contain no spaces;
  CJK names are fine and may touch a separator (`@李四然后@王五`). If two mentions share a
  name, the n-th `@name` in the text is the n-th such mention. A mention of the bot itself is
  skipped. Words that are neither mentions nor separators are ignored.
* **Organisations.** `@王五(乙方科技有限公司 公章)` (or full-width `（…）`): 王五 signs for that
  organisation; a seal word (`公章`, `合同专用章`, `seal`) has its seal applied as well. A
  mention may already carry its organisation (the webhook IM's `org` and `seal`).
* **Contacts.** A mobile number or an email address right after a mention is that person's
  contact (`@王总 13812341234`, `@王总 wang@customer.example`, both in either order): an
  external signer is reached by it, an internal one keeps what the directory has and gets it only
  where the directory has none. Someone who is not a mention at all is named with their contact,
  `王总:13812341234` (or `王总：wang@customer.example`), and signs as an external party with the id
  `ext:<contact>`. Without a template only: with one, `key:value` is a template field. What a
  contact may be is `signbridge.core.contacts`; a word in a contact's place that tries to be one
  and is not (`@王总 1381234`, `王总:wang@`) is refused, listing every such word.
* **Order.** Mentions separated by spaces (or `,` `，` `、`) sign in parallel; `>`, `＞`, `→`,
  `然后` or the word `then` starts the next group.

`/sign 替换 @李四 @赵六` (`replacement`) is not a new request: 赵六 signs in the place of 李四, who
left, in the newest open request of that chat that 李四 signs.

Problems the sender must fix raise `CommandProblem` with a bilingual message: no signers, an
`@name` no mention matches, a person named twice, an external signer with neither email nor
mobile, a contact that is not one, an empty group (`> >`, or a separator at either end).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from signbridge.core import contacts, options, orgs
from signbridge.core.models import OrgParty, Person

DEFAULT_BOT_NAME = "SignBridge"

_SPACE = " \t\r\n\u3000,，、;；"
# Characters that end an `@name` token besides whitespace and separators.
_NAME_END = _SPACE + "@＠>＞→.。:：!！?？()（）[]【】\"'“”"
_SEPARATOR = re.compile(r">|＞|→|然后|then(?![A-Za-z0-9_])", re.IGNORECASE)
_TITLE = re.compile(
    r"(?:--title\s+|(?:title|标题)\s*[:：]\s*)"
    r"(?:\"(?P<q1>[^\"]*)\"|“(?P<q2>[^”]*)”|'(?P<q3>[^']*)'|「(?P<q4>[^」]*)」|(?P<bare>[^\s\"“']+))",
    re.IGNORECASE,
)
_PROVIDER = re.compile(r"(?:--provider\s+|provider\s*[:：]\s*)(?P<name>[A-Za-z0-9_-]+)", re.IGNORECASE)

Mention = Person | Mapping[str, Any]


class CommandProblem(Exception):
    """The message is a sign command, but one the sender must correct; `message` says how."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ParsedCommand:
    groups: list[list[Person]]
    title: str | None = None
    provider: str | None = None
    # The `key:value` options (`signbridge.core.options`): a template and its fields, who signs
    # as which role, people who get a copy, the deadline, reminders off, one request per CSV row.
    template: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    roles: dict[str, Person] = field(default_factory=dict)
    cc: list[Person] = field(default_factory=list)
    deadline: timedelta | None = None
    reminders: bool | None = None
    bulk: bool = False

    @property
    def signers(self) -> list[Person]:
        return [p for group in self.groups for p in group]


def _trigger(bot_name: str) -> re.Pattern[str]:
    return re.compile(
        rf"^\s*(?:[/／](?:sign|签署)|[@＠]{re.escape(bot_name)}\s*(?:sign|签署))(?=$|[\s>＞→@＠,，、])",
        re.IGNORECASE,
    )


def is_command(text: str, bot_name: str = DEFAULT_BOT_NAME) -> bool:
    """Cheap check adapters can use before doing any work for a message."""
    return bool(_trigger(bot_name).match(text or ""))


def parse(text: str, mentions: Sequence[Mention], bot_name: str = DEFAULT_BOT_NAME) -> ParsedCommand | None:
    """`None` for ordinary chat; a `ParsedCommand`; or `CommandProblem` for a command to fix."""
    start = _trigger(bot_name).match(text or "")
    if start is None:
        return None
    rest = text[start.end():]
    title, rest = _take_title(rest)
    provider, rest = _take_provider(rest)
    try:
        opts, rest = options.take(rest)
    except options.OptionProblem as e:
        raise CommandProblem(e.message) from e
    people = [m if isinstance(m, Person) else Person.model_validate(dict(m)) for m in mentions]
    people = [p for p in people if p.name.casefold() != bot_name.casefold()]
    groups = _read_groups(rest, people, bot_name, named_contacts=opts.template is None)
    if not (opts.bulk and not any(groups)):  # a bulk send's signers may all come from its CSV
        _check(groups)
    signers = {p.name: p for group in groups for p in group}
    cc = [_named(name, people, bot_name) for name in opts.cc]
    return ParsedCommand(groups=groups, title=title, provider=provider, template=opts.template, fields=opts.fields,
                         roles={role: signers[name] for role, name in opts.roles.items()},
                         cc=[p for p in cc if p.name not in signers], deadline=opts.deadline,
                         reminders=opts.reminders, bulk=opts.bulk)


_REPLACE = re.compile(r"\s*(?:替换|replace)(?=$|[\s@＠])", re.IGNORECASE)
REPLACE_USAGE = ("替换签署人请写：/sign 替换 @原签署人 @新签署人（新签署人不在群里时写 名字:手机号）"
                 "（To replace a signer: /sign replace @old @new, or name:mobile for someone not in the chat）")


def replacement(text: str, mentions: Sequence[Mention],
                bot_name: str = DEFAULT_BOT_NAME) -> tuple[Person, Person] | None:
    """`/sign 替换 @李四 @赵六` (`replace`): who leaves the order and who signs in their place (the
    new one with a contact, or as `名字:手机号`, like any signer); None for any other message;
    `CommandProblem` for a replace command that does not name exactly those two."""
    start = _trigger(bot_name).match(text or "")
    if start is None:
        return None
    verb = _REPLACE.match(text, start.end())
    if verb is None:
        return None
    people = [m if isinstance(m, Person) else Person.model_validate(dict(m)) for m in mentions]
    people = [p for p in people if p.name.casefold() != bot_name.casefold()]
    named = [p for group in _read_groups(text[verb.end():], people, bot_name) for p in group]
    if len(named) != 2 or named[0].id == named[1].id:
        raise CommandProblem(REPLACE_USAGE)
    return named[0], named[1]


def _named(name: str, people: list[Person], bot_name: str) -> Person:
    """The mention named `name` (for `抄送:@x`): like a signer's, the text alone never names a person."""
    found = next((p for p in people if p.name == name), None)
    if found is None:
        raise CommandProblem(f"无法识别 @{name}：请从成员列表中选择要 @ 的人，不要手动输入名字"
                             f"（Cannot recognise @{name}: pick the person from the mention list instead of typing "
                             "the name）")
    return found


def _take_title(rest: str) -> tuple[str | None, str]:
    m = _TITLE.search(rest)
    if m is None:
        return None, rest
    value = next((v for v in m.group("q1", "q2", "q3", "q4", "bare") if v is not None), "").strip()
    return value or None, rest[: m.start()] + " " + rest[m.end():]


def _take_provider(rest: str) -> tuple[str | None, str]:
    m = _PROVIDER.search(rest)
    if m is None:
        return None, rest
    return m.group("name").lower(), rest[: m.start()] + " " + rest[m.end():]


_NOT_IN_NAME = r"\s@＠>＞→,，、;；:：\"“”'「」()（）"
_NAMED_CONTACT = re.compile(rf"^(?P<name>[^{_NOT_IN_NAME}0-9][^{_NOT_IN_NAME}]*)[:：](?P<contact>\S+)$")


def _read_groups(rest: str, people: list[Person], bot_name: str, named_contacts: bool = True) -> list[list[Person]]:
    groups: list[list[Person]] = [[]]
    by_name: dict[str, list[Person]] = {}
    for p in people:
        by_name.setdefault(p.name, []).append(p)
    used: dict[str, int] = {}  # name -> how many `@name` of that name were read so far
    names = sorted(by_name, key=len, reverse=True)  # longest first: `@李四光` before `@李四`
    bad: list[contacts.BadContact] = []
    pos = 0
    while pos < len(rest):
        ch = rest[pos]
        if ch in _SPACE:
            pos += 1
            continue
        sep = _SEPARATOR.match(rest, pos)
        if sep is not None:  # words are skipped whole, so `then` here always starts a word
            groups.append([])
            pos = sep.end()
            continue
        if ch in "@＠":
            pos += 1
            name = next((n for n in names if rest.startswith(n, pos) and _ends_name(rest, pos + len(n))), None)
            if name is None:
                unknown = _raw_name(rest, pos)
                pos += len(unknown)
                if unknown and unknown.casefold() != bot_name.casefold():
                    raise CommandProblem(
                        f"无法识别 @{unknown}：请从成员列表中选择要 @ 的人，不要手动输入名字"
                        f"（Cannot recognise @{unknown}: pick the person from the mention list instead of "
                        "typing the name）"
                    )
                continue
            candidates = by_name[name]
            index = used.get(name, 0)
            used[name] = index + 1
            pos += len(name)
            party, pos = _take_party(rest, pos, name)
            person, pos = _with_contacts(candidates[min(index, len(candidates) - 1)], rest, pos, bad)
            groups[-1].append(person.model_copy(update={"org": party}) if party else person)
            continue
        end = _skip_word(rest, pos)
        named = _NAMED_CONTACT.match(rest[pos:end]) if named_contacts else None
        if named is not None and contacts.attempt(named.group("contact")):
            try:
                found = contacts.read(named.group("contact"))
            except contacts.BadContact as e:
                bad.append(e)
            else:
                groups[-1].append(Person(id=contacts.external_id(found), name=named.group("name"), external=True,
                                         email=found.value if found.kind == "email" else None,
                                         mobile=found.value if found.kind == "mobile" else None))
        pos = end
    if bad:
        raise CommandProblem(contacts.problem_for(bad))
    return groups


def _take_party(rest: str, pos: int, name: str) -> tuple[OrgParty | None, int]:
    """`(乙方科技有限公司 公章)` right after `@王五` (ASCII or full-width parentheses): the person
    signs for that organisation, and applies its seal when a seal word is there."""
    if pos >= len(rest) or rest[pos] not in "(（":
        return None, pos
    end = next((i for i in range(pos + 1, len(rest)) if rest[i] in ")）"), -1)
    if end < 0:
        raise CommandProblem(f"@{name} 后的括号没有闭合，应写作 @{name}(公司名称 公章)"
                             f"（The parenthesis after @{name} is not closed: write @{name}(Company name seal)）")
    party = orgs.parse_party(rest[pos + 1:end])
    if party is None:
        raise CommandProblem(f"@{name} 后的括号里没有公司名称，应写作 @{name}(公司名称 公章)"
                             f"（Name the organisation in the parentheses after @{name}: @{name}(Company name seal)）")
    return party, end + 1


def _with_contacts(person: Person, rest: str, pos: int, bad: list[contacts.BadContact]) -> tuple[Person, int]:
    """The mention with the contacts written right after it (`@王总 13812341234 wang@x.example`),
    and where reading goes on. A word there that tries to be a contact and is not goes to `bad`."""
    while True:
        start = pos
        while start < len(rest) and rest[start] in _SPACE:
            start += 1
        end = start
        while end < len(rest) and rest[end] not in _SPACE and rest[end] not in ">＞→" \
                and not rest.startswith("然后", end):
            end += 1
        word = rest[start:end]
        if not word or contacts.attempt(word) is None:
            return person, pos
        try:
            found = contacts.read(word)
        except contacts.BadContact as e:
            bad.append(e)
        else:
            person = person.model_copy(update={found.kind: found.value})
        pos = end


def _ends_name(rest: str, pos: int) -> bool:
    """A matched name must end at a boundary, so `@李四光` never silently means `@李四`."""
    return (pos >= len(rest) or rest[pos] in _NAME_END or rest.startswith("然后", pos)
            or bool(re.match(r"then(?![A-Za-z0-9_])", rest[pos:], re.IGNORECASE)))


def _raw_name(rest: str, pos: int) -> str:
    end = pos
    while end < len(rest) and rest[end] not in _NAME_END and not rest.startswith("然后", end):
        end += 1
    return rest[pos:end]


def _skip_word(rest: str, pos: int) -> int:
    """Skip a word that is not a mention. `请@李四` stops at the `@`; an e-mail address
    (`a.b@corp.example`: `@` right after an ASCII letter or digit) is skipped whole."""
    end = pos + 1
    while end < len(rest) and rest[end] not in _SPACE and rest[end] not in ">＞→" \
            and not rest.startswith("然后", end):
        before = rest[end - 1]
        if rest[end] in "@＠" and not (before.isascii() and (before.isalnum() or before in "._-+")):
            break
        end += 1
    return end


def _check(groups: list[list[Person]]) -> None:
    if not any(groups):
        raise CommandProblem(
            "没有指定签署人：请 @ 需要签署的人，例如 /sign @李四 @王五 > @客户A"
            "（No signers: mention the people who must sign, e.g. /sign @Alice @Bob > @Carol）"
        )
    for i, group in enumerate(groups, start=1):
        if not group:
            raise CommandProblem(
                f"第 {i} 组签署人为空：「>」「然后」「then」的前后都需要 @ 至少一位签署人"
                f"（Signing group {i} is empty: put at least one @mention on each side of “>”, “然后” or “then”）"
            )
    seen: set[str] = set()
    for person in (p for g in groups for p in g):
        if person.id in seen:
            raise CommandProblem(
                f"{person.name} 被指定了不止一次，每位签署人只能出现一次"
                f"（{person.name} is named more than once; each signer may appear only once）"
            )
        seen.add(person.id)
        if person.external and not (person.email or "").strip() and not (person.mobile or "").strip():
            raise CommandProblem(
                f"外部签署人 {person.name} 没有邮箱或手机号，无法发送签署链接：请在 @{person.name} 后面写上，"
                f"例如 @{person.name} 13812341234"
                f"（External signer {person.name} has neither an email nor a mobile number to receive the "
                f"signing link: write one after the mention, e.g. @{person.name} 13812341234）"
            )


_TYPED = re.compile(r"[@＠]([^\s@＠>＞→,，、;；:：()（）]+)")


def typed_mentions(text: str, bot_name: str = DEFAULT_BOT_NAME) -> list[str]:
    """The `@names` as typed, first occurrence each, in order, the bot's own left out — for
    platforms whose messages carry no (or nameless) structured mentions (WeCom, DingTalk)."""
    found: list[str] = []
    for m in _TYPED.finditer(text or ""):
        token = re.split(r"然后|then$", m.group(1))[0]
        if token and token.casefold() != bot_name.casefold() and token not in found:
            found.append(token)
    return found
