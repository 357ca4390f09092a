"""What a signing flow's "current details" say in the Temporal UI: where it is, in words.

An operator opening a flow in the Temporal UI sees its current details first (markdown, set with
`workflow.set_current_details`; not part of the history, so the wording can change without
touching running flows). They always say where the flow is — checking, waiting for whom and until
when, finishing, ended and why — and, when it is STUCK, at which step, on what (the chat's API, the
provider, with the HTTP status when there is one), since when, and the command that retries now:

    **STUCK** 卡在：更新群卡片 — 聊天接口 503，自 12-04 18:53 UTC 起，正在自动重试
    立即重试 / retry now: `signbridge requests retry sign:webhook:default:e-123`
    Stuck at "update the card" — chat API 503 since 12-04 18:53 UTC: webhook chat failed card.upsert (HTTP 503)

Chinese first (the people who run SignBridge mostly read it), then English. Pure functions of the
workflow's state, so they run inside the workflow sandbox.
"""

from __future__ import annotations

import re
from datetime import datetime

from signbridge.core.models import SignStatus

# Activity → (Chinese, English) name of the step, as an operator would say it.
STEPS: dict[str, tuple[str, str]] = {
    "prepare": ("获取并检查文件和签署人", "fetch and check the document and the signers"),
    "create_flow": ("在签署服务创建流程", "create the flow at the provider"),
    "open_group": ("开启下一组签署", "open the next signing group"),
    "publish": ("更新群卡片", "update the card"),
    "send_link": ("发送签署链接", "send a signing link"),
    "send_text": ("在聊天中发消息", "post a message in the chat"),
    "poll": ("查询签署服务", "poll the provider"),
    "remind": ("在签署服务催签", "remind at the provider"),
    "revoke": ("撤销签署服务的流程", "revoke the provider's flow"),
    "finish": ("下载并校验已签文件", "download and check the signed document"),
    "send_file": ("把已签文件发到聊天", "deliver the signed document to the chat"),
}
CHAT_STEPS = frozenset({"publish", "send_link", "send_text", "send_file"})
PROVIDER_STEPS = frozenset({"create_flow", "open_group", "poll", "remind", "revoke", "finish"})
MAX_ERROR_CHARS = 300

_STATUS_ZH = {
    SignStatus.COMPLETED: "已完成", SignStatus.DECLINED: "已拒签", SignStatus.EXPIRED: "已过期",
    SignStatus.CANCELLED: "已撤销", SignStatus.REJECTED: "无法发起",
}


def when(t: datetime) -> str:
    """Month-day hour:minute in UTC, said as UTC: the operator's UI may be in any timezone."""
    return t.strftime("%m-%d %H:%M UTC")


def checking() -> str:
    return "**检查中** 正在获取并检查文件和签署人\nChecking the document and the signers"


def creating(provider: str) -> str:
    return f"**创建中** 正在签署服务（{provider}）创建流程\nCreating the flow at the provider ({provider})"


def waiting(group: int, groups: int, names: list[str], deadline: datetime | None) -> str:
    by_zh = f"，截止 {when(deadline)}" if deadline else ""
    by_en = f", deadline {when(deadline)}" if deadline else ""
    return (f"**等待签署** 第 {group + 1}/{groups} 组：{'、'.join(names)}{by_zh}\n"
            f"Waiting for group {group + 1} of {groups}: {', '.join(names)}{by_en}")


def finishing() -> str:
    return ("**归档中** 全部已签，正在下载、校验并发送已签文件\n"
            "All signed: downloading, checking and delivering the signed document")


def finished(status: SignStatus, reason: str | None) -> str:
    why = f"：{reason}" if reason else ""
    return f"**{status.value}** {_STATUS_ZH.get(status, status.value)}{why}\nFinished: {status.value}" + (
        f" — {reason}" if reason else "")


def stuck(request_id: str, activity: str, step: str, error: str, since: datetime, by_itself: bool = True) -> str:
    """STUCK: the step, on what, since when, and the command that retries now."""
    zh_step, _ = STEPS.get(activity, (step, step))
    zh_cause, en_cause = cause(activity, error)
    zh_next = "正在自动重试" if by_itself else "等待运维重试"
    en_next = "retrying by itself" if by_itself else "waiting for an operator's retry"
    return (f"**STUCK** 卡在：{zh_step} — {zh_cause}，自 {when(since)} 起，{zh_next}\n"
            f"立即重试 / retry now: `signbridge requests retry {request_id}`\n"
            f'Stuck at "{step}" — {en_cause} since {when(since)}, {en_next}: {_short(error)}')


def cause(activity: str, error: str) -> tuple[str, str]:
    """("聊天接口 503", "chat API 503"): whose API failed, and how, from the step and its error."""
    if activity in CHAT_STEPS:
        zh, en = "聊天接口", "chat API"
    elif activity in PROVIDER_STEPS:
        zh, en = "签署服务", "provider"
    else:
        zh, en = "文件获取", "document fetch"
    lowered = error.lower()
    if status := re.search(r"\bHTTP (\d{3})\b", error):
        return f"{zh} {status.group(1)}", f"{en} {status.group(1)}"
    if "timed out" in lowered or "timeout" in lowered:
        return f"{zh}超时", f"{en} timed out"
    if "unreachable" in lowered or "connect" in lowered:
        return f"{zh}无法连接", f"{en} unreachable"
    return f"{zh}出错", f"{en} failed"


def recovered(step: str, tries: int, where: str) -> str:
    return f"{where}\n（“{step}” 重试 {tries} 次后已恢复 / went through again after {tries} retries）"


def _short(error: str) -> str:
    flat = " ".join(error.split())
    return flat if len(flat) <= MAX_ERROR_CHARS else flat[: MAX_ERROR_CHARS - 1] + "…"
