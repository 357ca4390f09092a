"""One-time codes of the built-in provider's signing page: issuing with a resend clock, checking
with a count of wrong tries and a lock.

Every limit is a conditional UPDATE on the signer's row, so a storm of requests (many tabs, a
script) cannot slip two codes into one minute or more than the allowed wrong tries past the lock:
the database decides, not a read followed by a write.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import and_, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from store.tables import LocalSigner, SignCode


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _naive(t: datetime) -> datetime:
    """Every timestamp is written zone-aware, in UTC (the column type insists)."""
    return _aware(t).astimezone(UTC)


@dataclass(frozen=True)
class Refusal:
    """`too_soon`: a code went out less than the gap ago; `locked`: too many wrong codes."""

    kind: Literal["too_soon", "locked"]
    retry_after: float  # seconds


def claim_send(engine: Engine, signer_row: int, now: datetime, gap: timedelta) -> Refusal | datetime | None:
    """Take the right to send a code now. Returns the previous send time (None for the first)
    to hand back to `release` if the send fails, or a Refusal."""
    with Session(engine) as session:
        row = session.get(LocalSigner, signer_row)
        if row is None:
            raise LookupError(signer_row)
        if row.locked_until and _aware(row.locked_until) > now:
            return Refusal("locked", (_aware(row.locked_until) - now).total_seconds())
        previous = row.last_code_at
        allowed = or_(col(LocalSigner.last_code_at).is_(None), col(LocalSigner.last_code_at) <= _naive(now - gap))
        result = session.execute(update(LocalSigner).where(col(LocalSigner.id) == signer_row, allowed)
                                 .values(last_code_at=_naive(now)))
        session.commit()
        if result.rowcount:  # type: ignore[attr-defined]
            return previous
        fresh = session.get(LocalSigner, signer_row)
        session.refresh(fresh)  # type: ignore[arg-type]
        assert fresh is not None and fresh.last_code_at is not None
        return Refusal("too_soon", max(1.0, (_aware(fresh.last_code_at) + gap - now).total_seconds()))


def release(engine: Engine, signer_row: int, previous: datetime | None, claimed_at: datetime) -> None:
    """The send failed: give the minute back (unless another send claimed it since)."""
    with Session(engine) as session:
        session.execute(update(LocalSigner).where(col(LocalSigner.id) == signer_row,
                                                  col(LocalSigner.last_code_at) == _naive(claimed_at))
                        .values(last_code_at=previous))
        session.commit()


def store(engine: Engine, signer_row: int, channel: str, sent_to: str, code_hash: str, now: datetime,
          ttl: timedelta) -> int:
    """The new code; every earlier unused code of this signer stops working."""
    with Session(engine) as session:
        session.execute(update(SignCode).where(col(SignCode.signer_row) == signer_row,
                                               col(SignCode.used_at).is_(None),
                                               col(SignCode.expires_at) > _naive(now))
                        .values(expires_at=_naive(now)))
        code = SignCode(signer_row=signer_row, channel=channel, sent_to=sent_to, code_hash=code_hash,
                        created_at=_naive(now), expires_at=_naive(now + ttl))
        session.add(code)
        session.commit()
        assert code.id is not None
        return code.id


def forget(engine: Engine, code_id: int) -> None:
    """A code whose send failed never reached anyone: drop it."""
    with Session(engine) as session:
        row = session.get(SignCode, code_id)
        if row is not None:
            session.delete(row)
            session.commit()


@dataclass(frozen=True)
class Verdict:
    """`ok` (channel: how it was sent), `wrong` (tries left), `locked` (until), `expired`,
    `used` (already spent), `none` (no code was ever sent)."""

    kind: Literal["ok", "wrong", "locked", "expired", "used", "none"]
    channel: str = ""
    sent_to: str = ""
    tries_left: int = 0
    locked_until: datetime | None = None
    newly_locked: bool = False


def check(engine: Engine, signer_row: int, matches: Callable[[str], bool], now: datetime, max_wrong: int,
          lock_for: timedelta) -> Verdict:
    """Check a code against the signer's newest one. `matches(stored_hash)` compares in constant time."""
    with Session(engine, expire_on_commit=False) as session:
        signer = session.get(LocalSigner, signer_row)
        if signer is None:
            raise LookupError(signer_row)
        if signer.locked_until and _aware(signer.locked_until) > now:
            return Verdict("locked", locked_until=_aware(signer.locked_until))
        code = session.exec(select(SignCode).where(SignCode.signer_row == signer_row)
                            .order_by(col(SignCode.id).desc())).first()
        if code is None:
            return Verdict("none")
        if matches(code.code_hash):
            if code.used_at is not None:
                return Verdict("used", code.channel, code.sent_to)
            if _aware(code.expires_at) <= now:
                return Verdict("expired", code.channel, code.sent_to)
            spent = session.execute(update(SignCode).where(col(SignCode.id) == code.id,
                                                           col(SignCode.used_at).is_(None))
                                    .values(used_at=_naive(now)))
            session.execute(update(LocalSigner).where(col(LocalSigner.id) == signer_row).values(code_failures=0))
            session.commit()
            if not spent.rowcount:  # type: ignore[attr-defined]
                return Verdict("used", code.channel, code.sent_to)
            return Verdict("ok", code.channel, code.sent_to)
        # Wrong: count it; the try that reaches the limit locks the link and voids the code.
        session.execute(update(LocalSigner).where(col(LocalSigner.id) == signer_row)
                        .values(code_failures=col(LocalSigner.code_failures) + 1))
        until = now + lock_for
        locked = session.execute(update(LocalSigner).where(
            col(LocalSigner.id) == signer_row, col(LocalSigner.code_failures) >= max_wrong,
            and_(or_(col(LocalSigner.locked_until).is_(None), col(LocalSigner.locked_until) <= _naive(now))))
            .values(locked_until=_naive(until), code_failures=0))
        if locked.rowcount:  # type: ignore[attr-defined]
            session.execute(update(SignCode).where(col(SignCode.signer_row) == signer_row,
                                                   col(SignCode.used_at).is_(None))
                            .values(expires_at=_naive(now)))
        session.commit()
        if locked.rowcount:  # type: ignore[attr-defined]
            return Verdict("locked", locked_until=until, newly_locked=True)
        session.refresh(signer)
        return Verdict("wrong", code.channel, code.sent_to, tries_left=max(0, max_wrong - signer.code_failures))


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def set_verification(engine: Engine, signer_row: int, method: str) -> None:
    with Session(engine) as session:
        session.execute(update(LocalSigner).where(col(LocalSigner.id) == signer_row).values(verification=method))
        session.commit()
