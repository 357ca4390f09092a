"""Feishu/Lark card JSON 2.0 for SignBridge's neutral `Card`, and the small cards it DMs.

Why plain-text `div`s rather than markdown: names and titles come from chat users, and
markdown would let `**` or `[x](url)` in a name change how the card looks. Every card carries
`config.update_multi: true` because Feishu only lets `PATCH /im/v1/messages/{id}` update a
shared card — one that declared it both before and after the update.

Feishu refuses cards over 30 KB; a card with very many signers drops signer lines (and says
how many) rather than fail to post.
"""

from __future__ import annotations

import json
from typing import Any

from signbridge.core.cards import Card, CardSigner

MAX_CARD_BYTES = 30 * 1024

# Header colours (Feishu template names) per status.
_TEMPLATE = {
    "PREPARING": "blue", "IN_PROGRESS": "blue", "FINISHING": "turquoise", "STUCK": "orange",
    "COMPLETED": "green", "DECLINED": "red", "EXPIRED": "grey", "CANCELLED": "grey", "REJECTED": "red",
}
_BUTTON_TYPE = {"remind": "primary", "retry": "primary", "cancel": "danger", "status": "default"}

_TEXT = {
    "zh": {"document": "文件", "signers": "签署人", "group": "第 {n} 组", "note": "说明", "external": "外部",
           "more": "……另有 {n} 位签署人", "sign": "去签署", "download": "下载已签署文件"},
    "en": {"document": "Document", "signers": "Signers", "group": "Group {n}", "note": "Note",
           "external": "external", "more": "… and {n} more signers", "sign": "Sign now",
           "download": "Download the signed file"},
}


def _text(content: str) -> dict[str, Any]:
    return {"tag": "div", "text": {"tag": "plain_text", "content": content}}


def _signer_line(s: CardSigner, t: dict[str, str]) -> str:
    mark = {"signed": "✅", "declined": "❌", "notified": "⏳"}.get(s.state, "•")
    external = f"（{t['external']}）" if s.external else ""
    return f"{mark} {s.name}{external} — {s.state_text}"


def _signer_elements(card: Card, t: dict[str, str], limit: int | None) -> list[dict[str, Any]]:
    groups: dict[int, list[CardSigner]] = {}
    for s in card.signers:
        groups.setdefault(s.group, []).append(s)
    elements: list[dict[str, Any]] = []
    shown = 0
    for g in sorted(groups):
        lines: list[str] = []
        for s in groups[g]:
            if limit is not None and shown >= limit:
                break
            lines.append(_signer_line(s, t))
            shown += 1
        if lines:
            label = t["group"].format(n=g + 1) if len(groups) > 1 else t["signers"]
            elements.append(_text(f"{label}\n" + "\n".join(lines)))
    if shown < len(card.signers):
        elements.append(_text(t["more"].format(n=len(card.signers) - shown)))
    return elements


def render_card(card: Card) -> dict[str, Any]:
    """The status card: header with status tag, document, signers per group, note, buttons."""
    for limit in (None, 50, 20, 5, 0):
        data = _render(card, limit)
        if len(card_content(data).encode()) <= MAX_CARD_BYTES:
            return data
    return _render(card, 0)


def _render(card: Card, limit: int | None) -> dict[str, Any]:
    t = _TEXT[card.lang]
    elements: list[dict[str, Any]] = []
    if card.document_name:
        doc = f"{t['document']}：{card.document_name}"
        if card.document_sha256:
            doc += f"\nSHA-256：{card.document_sha256[:16]}…"
        elements.append(_text(doc))
    if card.signers:
        elements.append({"tag": "hr"})
        elements.extend(_signer_elements(card, t, limit))
    if card.note:
        elements.append({"tag": "hr"})
        elements.append(_text(f"{t['note']}：{card.note[:1000]}"))
    if card.buttons:
        elements.append({
            "tag": "column_set",
            "horizontal_spacing": "8px",
            "columns": [
                {"tag": "column", "width": "auto", "elements": [{
                    "tag": "button",
                    "text": {"tag": "plain_text", "content": b.label},
                    "type": _BUTTON_TYPE.get(b.action, "default"),
                    "behaviors": [{"type": "callback",
                                   "value": {"action": b.action, "request_id": card.request_id}}],
                }]}
                for b in card.buttons
            ],
        })
    return {
        "schema": "2.0",
        "config": {"update_multi": True, "width_mode": "fill"},
        "header": {
            "title": {"tag": "plain_text", "content": card.title[:200]},
            "template": _TEMPLATE.get(card.status.value, "blue"),
            "text_tag_list": [{"tag": "text_tag", "text": {"tag": "plain_text", "content": card.status_text},
                               "color": _TEMPLATE.get(card.status.value, "blue")}],
        },
        "body": {"elements": elements},
    }


def link_card(text: str, url: str, lang: str = "zh") -> dict[str, Any]:
    """A DM with the message and one button that opens `url` (the signing page, the signed file)."""
    label = _TEXT.get(lang, _TEXT["zh"])["sign"]
    return _button_card(text, label, url)


def file_card(name: str, sha256: str, url: str, lang: str = "zh", note: str | None = None) -> dict[str, Any]:
    """A file's download link (a file over Feishu's upload limit), with `note` saying why."""
    t = _TEXT.get(lang, _TEXT["zh"])
    text = f"{name}\nSHA-256：{sha256}" + (f"\n{note}" if note else "")
    return _button_card(text, t["download"], url, title=name)


def _button_card(text: str, label: str, url: str, title: str | None = None) -> dict[str, Any]:
    card: dict[str, Any] = {
        "schema": "2.0",
        "config": {"update_multi": True, "width_mode": "fill"},
        "body": {"elements": [
            _text(text),
            {"tag": "button", "text": {"tag": "plain_text", "content": label}, "type": "primary",
             "behaviors": [{"type": "open_url", "default_url": url}]},
        ]},
    }
    if title:
        card["header"] = {"title": {"tag": "plain_text", "content": title[:200]}, "template": "green"}
    return card


def card_content(card: dict[str, Any]) -> str:
    """The `content` string Feishu wants for msg_type interactive (compact, UTF-8 kept)."""
    return json.dumps(card, ensure_ascii=False, separators=(",", ":"))
