"""Files people posted in a chat, so a later command can name them (`ChatFile` rows).

Some platforms cannot put a file and a command in one message (Feishu, DingTalk, WeCom), and on
every platform a command may reply to a file or follow it. The intake remembers each file
message here; a command then uses the files of the message it replies to, else the sender's
latest file message in that chat. Rows moved here from the listener's inbox keep an empty
tenant (it was not recorded then) and count for every tenant of their chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from store.db import insert_once
from store.tables import ChatFile

UNKNOWN_TENANT = ""


@dataclass(frozen=True)
class Posted:
    name: str
    url: str
    sha256: str | None = None


def remember(engine: Engine, *, platform: str, tenant: str, chat_id: str, sender_id: str, message_id: str,
             files: list[Posted]) -> None:
    """Idempotent: a redelivered file message is stored once."""
    for position, file in enumerate(files):
        insert_once(engine, ChatFile(platform=platform, tenant=tenant, chat_id=chat_id, sender_id=sender_id,
                                     message_id=message_id, position=position, name=file.name, url=file.url,
                                     sha256=file.sha256))


def _query(platform: str, tenant: str, chat_id: str) -> SelectOfScalar[ChatFile]:
    return select(ChatFile).where(ChatFile.platform == platform, ChatFile.chat_id == chat_id,
                                  col(ChatFile.tenant).in_([tenant, UNKNOWN_TENANT]))


def _posted(rows: list[ChatFile]) -> list[Posted]:
    return [Posted(r.name, r.url, r.sha256) for r in sorted(rows, key=lambda r: r.position)]


def in_message(engine: Engine, *, platform: str, tenant: str, chat_id: str, message_id: str) -> list[Posted]:
    """The files of one message (the one a command replies to), whoever posted it."""
    with Session(engine) as session:
        return _posted(list(session.exec(_query(platform, tenant, chat_id).where(ChatFile.message_id == message_id))))


def latest(engine: Engine, *, platform: str, tenant: str, chat_id: str, sender_id: str,
           since: datetime) -> list[Posted]:
    """The files of the sender's latest file message in this chat posted after `since`."""
    with Session(engine) as session:
        newest = session.exec(_query(platform, tenant, chat_id).where(
            ChatFile.sender_id == sender_id, col(ChatFile.received_at) >= since,
        ).order_by(col(ChatFile.id).desc())).first()
        if newest is None:
            return []
        return _posted(list(session.exec(_query(platform, tenant, chat_id).where(
            ChatFile.message_id == newest.message_id))))
