"""Render the neutral `Card` as Slack Block Kit (the workflow decides what; this decides how).

Buttons carry `action_id` = the workflow update name (`remind`, `cancel`, `retry`, plus a
read-only `status`) and `value` = the request id, which is all `connectors/chat/slack/inbound.py` needs to route
a click. Text is English unless the card was built in another language (`card.lang`).
"""

from __future__ import annotations

from typing import Any

from signbridge.core.cards import Card, CardButton
from signbridge.core.models import SignStatus

_ICON: dict[str, str] = {"waiting": ":hourglass:", "notified": ":pencil2:", "signed": ":white_check_mark:",
                         "declined": ":x:"}
_STATUS_ICON: dict[SignStatus, str] = {
    SignStatus.PREPARING: ":gear:", SignStatus.IN_PROGRESS: ":hourglass_flowing_sand:",
    SignStatus.FINISHING: ":file_folder:", SignStatus.STUCK: ":warning:", SignStatus.COMPLETED: ":white_check_mark:",
    SignStatus.DECLINED: ":x:", SignStatus.EXPIRED: ":alarm_clock:", SignStatus.CANCELLED: ":no_entry_sign:",
    SignStatus.REJECTED: ":no_entry:",
}
_LABELS = {
    "en": {"status": "Status", "document": "Document", "group": "Group", "external": "external",
           "status_button": "Status", "confirm": "Cancel this signing request?", "yes": "Yes, cancel",
           "no": "Keep it"},
    "zh": {"status": "状态", "document": "文件", "group": "第{n}组", "external": "外部",
           "status_button": "查看状态", "confirm": "确定撤销这个签署请求？", "yes": "撤销", "no": "保留"},
}


def esc(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str, limit: int = 150) -> dict[str, Any]:
    return {"type": "plain_text", "text": text[:limit] or " ", "emoji": True}


def render_card(card: Card) -> list[dict[str, Any]]:
    labels = _LABELS.get(card.lang, _LABELS["en"])
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain(card.title)}]
    lines = [f"*{labels['status']}:* {_STATUS_ICON[card.status]} {esc(card.status_text)}"]
    if card.document_name:
        sha = f"  `{card.document_sha256[:12]}…`" if card.document_sha256 else ""
        lines.append(f"*{labels['document']}:* {esc(card.document_name)}{sha}")
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}})
    if card.signers:
        groups = sorted({s.group for s in card.signers})
        rows: list[str] = []
        for g in groups:
            if len(groups) > 1:
                name = labels["group"].format(n=g + 1) if "{n}" in labels["group"] else f"{labels['group']} {g + 1}"
                rows.append(f"*{name}*")
            for s in (s for s in card.signers if s.group == g):
                ext = f" _({labels['external']})_" if s.external else ""
                rows.append(f"{_ICON.get(s.state, '•')} {esc(s.name)}{ext} — {esc(s.state_text)}")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(rows)[:3000]}})
    if card.note:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": esc(card.note)[:3000]}]})
    buttons = [_button(b, card, labels) for b in card.buttons]
    if buttons and not card.status.terminal:
        buttons.append({"type": "button", "action_id": "status", "value": card.request_id,
                        "text": _plain(labels["status_button"], 75)})
    if buttons:
        blocks.append({"type": "actions", "block_id": "signbridge_actions", "elements": buttons})
    return blocks


def _button(b: CardButton, card: Card, labels: dict[str, str]) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": b.action, "value": card.request_id,
                              "text": _plain(b.label, 75)}
    if b.action in ("remind", "retry"):
        button["style"] = "primary"
    if b.action == "cancel":
        button["style"] = "danger"
        button["confirm"] = {"title": _plain(b.label, 100), "text": _plain(labels["confirm"], 300),
                             "confirm": _plain(labels["yes"], 30), "deny": _plain(labels["no"], 30),
                             "style": "danger"}
    return button


def link_blocks(text: str, url: str | None, label: str = "Open and sign") -> list[dict[str, Any]]:
    """A message with one URL button (signing link, signed file); no button without a URL."""
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}]
    if url:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "action_id": "open_link", "url": url, "style": "primary",
             "text": _plain(label, 75)}]})
    return blocks
