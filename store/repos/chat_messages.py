"""Where a card (or a message sent once per key) lives on its platform: `ChatMessage` rows.

`ref` is the platform's handle as JSON (Slack channel + ts, Feishu message_id, DingTalk
outTrackId, WeCom msgid and response code); only the platform's connector reads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.tables import ChatMessage, utcnow

Ref = dict[str, Any]


def _row(session: Session, platform: str, key: str) -> ChatMessage | None:
    return session.exec(select(ChatMessage).where(ChatMessage.platform == platform,
                                                  ChatMessage.card_key == key)).first()


def get(engine: Engine, platform: str, key: str) -> ChatMessage | None:
    with Session(engine, expire_on_commit=False) as session:
        return _row(session, platform, key)


def ref(engine: Engine, platform: str, key: str) -> Ref | None:
    row = get(engine, platform, key)
    return json.loads(row.ref) if row is not None else None


def save(engine: Engine, platform: str, key: str, chat_id: str, value: Ref, *, restart: bool = False) -> None:
    """Upsert the handle; `restart` dates the row anew (Feishu: a fresh card restarts its update window)."""
    with Session(engine) as session:
        row = _row(session, platform, key) or ChatMessage(platform=platform, card_key=key, chat_id=chat_id, ref="{}")
        row.ref = json.dumps(value, ensure_ascii=False)
        row.updated_at = utcnow()
        if restart:
            row.created_at = row.updated_at
        session.add(row)
        session.commit()


def change(engine: Engine, platform: str, key: str, update: Callable[[Ref], Ref | None]) -> bool:
    """Read-modify-write the handle in one transaction; `update` returns the new value or None to
    leave it. False when there is no such row."""
    with Session(engine) as session:
        row = _row(session, platform, key)
        if row is None:
            return False
        new = update(json.loads(row.ref))
        if new is not None:
            row.ref = json.dumps(new, ensure_ascii=False)
            row.updated_at = utcnow()
            session.add(row)
            session.commit()
        return True


def touch(engine: Engine, platform: str, key: str) -> None:
    change(engine, platform, key, lambda value: value)


def key_by_ref(engine: Engine, platform: str, field: str, value: str) -> str | None:
    """The key of the row whose handle has `field == value` (DingTalk: a card callback's outTrackId)."""
    with Session(engine) as session:
        rows = session.exec(select(ChatMessage).where(ChatMessage.platform == platform,
                                                      col(ChatMessage.ref).contains(value))).all()
    return next((r.card_key for r in rows if json.loads(r.ref).get(field) == value), None)
