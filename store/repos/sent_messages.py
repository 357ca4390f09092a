"""Send once: when an outbound message may be sent, must wait, or was sent already.

A send is recorded as in flight (`sending`) before it is made. If the chat confirms it, it is
`sent` and never made again. If the chat refused it or could not be reached, it is `failed` and
the next attempt sends at once. If the outcome is unknown — the chat did not answer in time, the
worker died mid-send — it stays `sending`, and the next attempt re-sends (with the same
idempotency key) only after a pause that doubles with each attempt: by then a slow chat has
finished the earlier request, so a chat that honours the key drops the copy instead of racing it.
Every attempt is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from store.tables import SentMessage, utcnow

MAX_PAUSE = timedelta(minutes=10)


@dataclass(frozen=True)
class Claim:
    """`send` now (as attempt `attempt`), `skip` (sent before), or `wait` for `wait` first."""

    action: Literal["send", "skip", "wait"]
    attempt: int = 0
    wait: timedelta = timedelta()


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def pause_after(attempts: int, pause: timedelta) -> timedelta:
    return min(pause * 2 ** max(attempts - 1, 0), MAX_PAUSE)


def claim(engine: Engine, platform: str, key: str, chat_id: str, pause: timedelta,
          now: datetime | None = None) -> Claim:
    now = now or utcnow()
    with Session(engine) as session:
        row = session.exec(select(SentMessage).where(SentMessage.platform == platform,
                                                     SentMessage.key == key)).first()
        if row is None:
            session.add(SentMessage(platform=platform, key=key, chat_id=chat_id, state="sending", attempts=1,
                                    last_attempt_at=now, sent_at=now))
            try:
                session.commit()
            except IntegrityError:  # another attempt claimed it this instant: its outcome is unknown yet
                return Claim("wait", wait=pause)
            return Claim("send", attempt=1)
        if row.state == "sent":
            return Claim("skip", attempt=row.attempts)
        if row.state == "sending" and row.last_attempt_at is not None:
            due = _aware(row.last_attempt_at) + pause_after(row.attempts, pause)
            if now < due:
                return Claim("wait", attempt=row.attempts, wait=due - now)
        # Conditional on the attempt count we read: of two concurrent attempts, one sends.
        taken = session.execute(
            update(SentMessage)
            .where(col(SentMessage.id) == row.id, col(SentMessage.attempts) == row.attempts)
            .values(state="sending", attempts=row.attempts + 1, last_attempt_at=now)
        ).rowcount  # type: ignore[attr-defined]
        session.commit()
        return Claim("send", attempt=row.attempts + 1) if taken else Claim("wait", wait=pause)


def settle(engine: Engine, platform: str, key: str, delivered: bool | None) -> None:
    """Record the outcome: True sent, False not delivered (send again at once), None unknown."""
    if delivered is None:
        return
    with Session(engine) as session:
        session.execute(
            update(SentMessage)
            .where(col(SentMessage.platform) == platform, col(SentMessage.key) == key)
            .values(state="sent" if delivered else "failed", **({"sent_at": utcnow()} if delivered else {}))
        )
        session.commit()
