"""The `key:value` options of a sign command, and the two commands beside `/sign`: bulk and search.

    /sign 模板:销售合同 客户名称:某某公司 金额:120000 甲方:@李四 乙方:@客户A 期限:3天 抄送:@法务
    /sign @李四 > @客户A deadline:3d reminders:off cc:@Legal provider:docusign
    /sign 批量 模板:销售合同 甲方:@李四            (with a CSV attached: one request per row)
    /sign status 销售合同    @SignBridge 查 销售合同   (the asker's requests, answered privately)

Rules:

* An option is `key:value` (or `key：value`) at the start of a word, with no space after the
  colon; a value with spaces is quoted (`"…"`, `“…”`, `「…」`). A key starting with a digit
  (`10:30`) or a value starting with `//` (`https://…`) is not an option.
* Known keys: `期限`/`deadline` (`3天`, `3d`, `48小时`, `48h`, `2周`, `2w`), `提醒`/`reminders`
  (`关`/`off`, `开`/`on`), `抄送`/`cc` (`@x`, several as `@x,@y` or the key repeated),
  `模板`/`template`, and `title`/`provider`, which `signbridge.core.commands` reads itself.
* `角色:@某人` (a key whose value is a mention) names who signs as that role: the template's
  signature field `sign:甲方`, or the anchor 【甲方签章】 in a plain PDF. The mention stays in
  the text, so `甲方:@李四 > 乙方:@客户A` still orders the signers.
* With a template, any other `key:value` is one of its fields (checked against the template at
  prepare). Without one, `name:contact` (`王总:13812341234`, a value that tries to be a mobile
  or an email, `signbridge.core.contacts`) is left in the text: it names an external signer,
  read by `signbridge.core.commands`; any other unknown key is refused with the list of the
  known ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from signbridge.core import contacts

DEADLINE_KEYS = ("期限", "deadline")
REMINDER_KEYS = ("提醒", "reminders", "reminder")
CC_KEYS = ("抄送", "cc")
TEMPLATE_KEYS = ("模板", "template")
READ_BY_COMMANDS = ("title", "标题", "provider")  # taken out of the text before these options are read
KNOWN = ("期限/deadline", "提醒/reminders", "抄送/cc", "模板/template", "title", "provider")
BULK_WORDS = ("批量", "bulk")

MIN_DEADLINE = timedelta(hours=1)
MAX_DEADLINE = timedelta(days=365)

_KEY = r"[^\s:：@＠>＞→,，、;；\"“”'「」()（）0-9][^\s:：@＠>＞→,，、;；\"“”'「」()（）]*"
_VALUE = r"\"(?P<q1>[^\"]*)\"|“(?P<q2>[^”]*)”|「(?P<q3>[^」]*)」|(?P<bare>[^\s\"“「][^\s]*)"
_OPTION = re.compile(rf"(?:(?<=^)|(?<=[\s\u3000,，、;；]))(?P<key>{_KEY})[:：](?:{_VALUE})")
_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>天|日|d|days?|周|w|weeks?|小时|h|hours?)$", re.IGNORECASE)
_UNITS = {"天": "days", "日": "days", "d": "days", "day": "days", "days": "days", "周": "weeks", "w": "weeks",
          "week": "weeks", "weeks": "weeks", "小时": "hours", "h": "hours", "hour": "hours", "hours": "hours"}
_OFF = ("关", "关闭", "off", "no", "false", "0", "否")
_ON = ("开", "开启", "on", "yes", "true", "1", "是")
_MENTION = re.compile(r"^[@＠](?P<name>[^\s@＠>＞→,，、;；:：()（）]+)$")


class OptionProblem(ValueError):
    """An option the sender must correct; `message` is bilingual."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Options:
    """What the options said. `roles` and `cc` hold the names as typed after `@`, matched to the
    message's mentions by `signbridge.core.commands`."""

    template: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)  # role -> typed name
    cc: list[str] = field(default_factory=list)  # typed names
    deadline: timedelta | None = None
    reminders: bool | None = None
    bulk: bool = False


def take_bulk(rest: str) -> tuple[bool, str]:
    """`批量` / `bulk` as the first word after the trigger: one request per row of an attached CSV."""
    m = re.match(rf"\s*(?:{'|'.join(BULK_WORDS)})(?=$|\s)", rest, re.IGNORECASE)
    return (True, rest[m.end():]) if m else (False, rest)


def take(rest: str) -> tuple[Options, str]:
    """The options of `rest` and the text left for the signers: role mentions stay, the rest goes."""
    options = Options()
    bulk, rest = take_bulk(rest)
    options.bulk = bulk
    unknown: dict[str, str] = {}
    pieces: list[str] = []
    pos = 0
    found = list(_OPTION.finditer(rest))
    templated = any(m.group("key").casefold() in TEMPLATE_KEYS for m in found)
    for m in found:
        key = m.group("key")
        value = next((v for v in m.group("q1", "q2", "q3", "bare") if v is not None), "").strip()
        if value.startswith("//") or key.casefold() in READ_BY_COMMANDS:
            continue
        if not templated and m.group("bare") is not None and contacts.attempt(value) \
                and key.casefold() not in DEADLINE_KEYS + REMINDER_KEYS + CC_KEYS:
            continue  # `王总:13812341234`: a signer known by a contact, read with the others
        pieces.append(rest[pos:m.start()])
        pos = m.end()
        folded = key.casefold()
        if folded in DEADLINE_KEYS:
            options.deadline = deadline(value)
        elif folded in REMINDER_KEYS:
            options.reminders = reminders(value)
        elif folded in CC_KEYS:
            options.cc += [n for n in _mentions(value, key) if n not in options.cc]
        elif folded in TEMPLATE_KEYS:
            if not value:
                raise OptionProblem("模板名称为空（The template name is empty）")
            options.template = value
        elif (mention := _MENTION.match(value)) is not None:
            if key in options.roles:
                raise OptionProblem(f"角色「{key}」被指定了不止一次（The role “{key}” is assigned more than once）")
            options.roles[key] = mention.group("name")
            pieces.append(" " + value + " ")  # still a signer, in its place in the order
        else:
            unknown[key] = value
    pieces.append(rest[pos:])
    if unknown and options.template is None:
        keys = "、".join(unknown)
        raise OptionProblem(
            f"无法识别的选项：{keys}。可用的选项：{'，'.join(KNOWN)}；模板字段需要先写 模板:名称"
            f"（Unknown option {', '.join(unknown)}. Known options: {', '.join(KNOWN)}; template fields need "
            "template:NAME）")
    options.fields = unknown
    return options, "".join(pieces)


def deadline(value: str) -> timedelta:
    m = _DURATION.match(value.strip())
    if m is None:
        raise OptionProblem(f"无法识别的期限「{value}」，例如 期限:3天、期限:48小时、期限:2周"
                            f"（Cannot read the deadline “{value}”; e.g. deadline:3d, deadline:48h, deadline:2w）")
    span = timedelta(**{_UNITS[m.group("unit").lower()]: float(m.group("n"))})
    if not MIN_DEADLINE <= span <= MAX_DEADLINE:
        raise OptionProblem(f"期限需在 1 小时到 365 天之间（The deadline must be between 1 hour and 365 days）"
                            f": {value}")
    return span


def reminders(value: str) -> bool:
    folded = value.strip().casefold()
    if folded in _OFF:
        return False
    if folded in _ON:
        return True
    raise OptionProblem(f"提醒只能是「开」或「关」（reminders must be on or off）: {value}")


def _mentions(value: str, key: str) -> list[str]:
    names = [part for part in re.split(r"[,，、]", value) if part]
    found = [m.group("name") for part in names if (m := _MENTION.match(part)) is not None]
    if not names or len(found) != len(names):
        raise OptionProblem(f"{key} 后面需要 @ 人，例如 抄送:@法务 或 抄送:@甲,@乙"
                            f"（{key} needs mentions, e.g. cc:@Legal or cc:@A,@B）")
    return found


def search_words(text: str, bot_name: str) -> str | None:
    """`/sign status 关键词` or `@<bot> 查 关键词`: the keywords (maybe empty: every request the
    asker may see); None for anything else."""
    pattern = (r"^\s*(?:[/／](?:sign|签署)\s+(?:status|状态|查询?)"
               rf"|[@＠]{re.escape(bot_name)}\s*(?:查询?|status|search))(?=$|\s)(?P<words>.*)$")
    m = re.match(pattern, text or "", re.IGNORECASE | re.DOTALL)
    return None if m is None else " ".join(m.group("words").split())[:100]
