"""Render the neutral `Card` as a WeCom `template_card` of type `button_interaction`.

Why `button_interaction`: it is the only template card whose clicks come back to our callback
(`template_card_event`) with a fresh `ResponseCode`, and a response code is the only way WeCom
lets an app update a card it already sent. Terminal cards therefore keep one harmless
"查看状态 / Status" button: clicking it costs nothing and hands us another response code.

WeCom truncates silently and refuses some over-long fields, so lengths are cut here to the
documented limits (title 26, desc 30, sub title 112, key name 5 advised / value 30, six rows).
"""

from __future__ import annotations

from typing import Any

from signbridge.core.cards import Card
from signbridge.core.models import SignStatus

SOURCE = {"zh": "SignBridge 电子签", "en": "SignBridge e-signature"}
STATUS_BUTTON = {"zh": "查看状态", "en": "Status"}
_ICON = {
    SignStatus.IN_PROGRESS: "🖊", SignStatus.STUCK: "⚠️", SignStatus.COMPLETED: "✅",
    SignStatus.DECLINED: "⛔", SignStatus.EXPIRED: "⌛", SignStatus.CANCELLED: "🚫", SignStatus.REJECTED: "❗",
}
# button styles: 1 blue (primary), 2 grey, 3 red, 4 outlined
_STYLE = {"remind": 1, "retry": 1, "cancel": 3, "status": 4}
MAX_ROWS = 6


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_card(card: Card, task_id: str) -> dict[str, Any]:
    """The `template_card` object for `message/send` (and, without task_id, the update call)."""
    zh = card.lang == "zh"
    rows: list[dict[str, Any]] = []
    if card.document_name:
        rows.append({"keyname": "文件" if zh else "File", "value": _cut(card.document_name, 30)})
    if card.document_sha256:
        rows.append({"keyname": "SHA256", "value": card.document_sha256[:16] + "…"})
    signer_rows = [{"keyname": _cut(s.name, 5), "value": f"第{s.group + 1}组 · {s.state_text}" if zh
                    else f"group {s.group + 1} · {s.state_text}"} for s in card.signers]
    room = MAX_ROWS - len(rows)
    if len(signer_rows) > room:  # keep the table readable: a summary row for the rest
        rest = signer_rows[room - 1:]
        more = f"另有 {len(rest)} 位签署人" if zh else f"{len(rest)} more signers"
        signer_rows = [*signer_rows[: room - 1], {"keyname": "…", "value": more}]
    rows += signer_rows
    buttons = [{"text": b.label, "style": _STYLE.get(b.action, 4), "key": b.action} for b in card.buttons] \
        or [{"text": STATUS_BUTTON[card.lang], "style": _STYLE["status"], "key": "status"}]
    body: dict[str, Any] = {
        "card_type": "button_interaction",
        "source": {"desc": SOURCE[card.lang], "desc_color": 0},
        "main_title": {"title": _cut(card.title, 26),
                       "desc": _cut(f"{_ICON.get(card.status, '')} {card.status_text}".strip(), 30)},
        "horizontal_content_list": rows,
        "task_id": task_id,
        "button_list": buttons,
    }
    if card.note:
        body["sub_title_text"] = _cut(card.note, 112)
    return body
