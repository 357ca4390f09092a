"""Render the neutral `Card` as DingTalk card data (`cardData.cardParamMap`) for a card template.

Why a flat map of strings: DingTalk's card instances (`createAndDeliver`, `PUT /v1.0/card/instances`)
take `cardParamMap` as string → string; the layout lives in a template built once in the card
platform (卡片平台) and referenced by `SIGNBRIDGE_DINGTALK_CARD_TEMPLATE_ID`. Lists (signers,
buttons) travel as JSON strings, which the template binds to loop components; the same content
is also given as plain text (`signersText`) so a simple template can show it without loops.

Buttons are toggled with `show*` flags ("true"/"false") so one template covers every state; each
button's callback params in the template are `{"action": "<remind|cancel|retry>"}`.

Nothing here is markdown: names come from chat users and must not change how the card looks.
"""

from __future__ import annotations

import json
from typing import Any

from signbridge.core.cards import Card

# Header colours per status, as the template's `statusColor` variable expects them.
_COLOR = {
    "PREPARING": "blue", "IN_PROGRESS": "blue", "FINISHING": "blue", "STUCK": "orange",
    "COMPLETED": "green", "DECLINED": "red", "EXPIRED": "gray", "CANCELLED": "gray", "REJECTED": "red",
}
_MARK = {"signed": "✅", "declined": "❌", "notified": "⏳", "waiting": "•"}
_TEXT = {
    "zh": {"document": "文件", "group": "第{n}组", "external": "外部", "note": "说明"},
    "en": {"document": "Document", "group": "Group {n}", "external": "external", "note": "Note"},
}
MAX_SIGNERS_TEXT = 4000  # keep the card well under DingTalk's card data size


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render_card(card: Card) -> dict[str, str]:
    """The `cardParamMap` for one state of the status card (all values are strings)."""
    t = _TEXT.get(card.lang, _TEXT["zh"])
    signers = [{"name": s.name, "group": s.group + 1, "state": s.state, "stateText": s.state_text,
                "external": s.external, "mark": _MARK.get(s.state, "•")} for s in card.signers]
    lines: list[str] = []
    for s in card.signers:
        external = f"（{t['external']}）" if s.external else ""
        lines.append(f"{_MARK.get(s.state, '•')} {t['group'].format(n=s.group + 1)} · {s.name}{external}"
                     f" — {s.state_text}")
    text = "\n".join(lines)
    if len(text) > MAX_SIGNERS_TEXT:
        text = text[: MAX_SIGNERS_TEXT - 1] + "…"
    actions = {b.action for b in card.buttons}
    return {
        "requestId": card.request_id,
        "lang": card.lang,
        "title": card.title[:200],
        "status": card.status.value,
        "statusText": card.status_text,
        "statusColor": _COLOR.get(card.status.value, "blue"),
        "document": f"{t['document']}：{card.document_name}" if card.document_name else "",
        "sha256": f"SHA-256：{card.document_sha256[:16]}…" if card.document_sha256 else "",
        "signers": _json(signers),
        "signersText": text,
        "note": f"{t['note']}：{card.note[:1000]}" if card.note else "",
        "buttons": _json([{"action": b.action, "label": b.label} for b in card.buttons]),
        "showRemind": str("remind" in actions).lower(),
        "showCancel": str("cancel" in actions).lower(),
        "showRetry": str("retry" in actions).lower(),
        "showSealApproval": str("approve_seal" in actions).lower(),  # 同意用印 / 拒绝, for seal keepers
    }
