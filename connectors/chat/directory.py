"""The user-directory cache every chat connector shares, and naming people within a budget.

A platform's directory (Feishu contacts, DingTalk `user/get`, WeCom `user/get`, Slack
`users.info`) is asked at most once per `max_age` per user: the answer is kept in the
`identities` table (`store/repos/identities.py`), next to what `signbridge identities import`
wrote. Someone who left (or was deactivated) cannot sign: that is the user's input to fix, an
`InputProblem`, in the chat's language.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from sqlalchemy.engine import Engine

from connectors.chat.base import ChatConnector, InputProblem
from signbridge.core.models import ChatRef, Person
from store.repos import identities
from store.repos.identities import Contact

log = logging.getLogger(__name__)


class Departed(InputProblem):
    """The person left the company or their account was deactivated: they cannot sign."""


def departed(name: str, lang: str) -> Departed:
    if lang == "en":
        return Departed(f"{name} has been deactivated and cannot sign")
    return Departed(f"{name} 已离职或账号已停用，不能签署（{name} has left the company or the account is "
                        "deactivated, so they cannot sign）")


class Directory:
    """`resolve` for one platform: the cache first, the platform's `lookup` when it is stale."""

    def __init__(self, engine: Engine, platform: str, max_age: timedelta, lang: str = "zh") -> None:
        self.engine = engine
        self.platform = platform
        self.max_age = max_age
        self.lang = lang

    async def resolve(self, chat: ChatRef, person: Person, lookup: Callable[[], Awaitable[Contact]]) -> Person:
        """`person` with the directory's name, email and mobile; `lookup` may raise `InputProblem`
        (no such user) or a `ChatError` (retry later). Someone already known as external is
        returned as is (never looked up); one the platform's lookup says is from outside (a Slack
        Connect user) comes back `external`."""
        if person.external:
            return person
        row = identities.fresh(self.engine, self.platform, chat.tenant, person.id, self.max_age)
        if row is None:
            row = identities.remember(self.engine, self.platform, chat.tenant, person.id, await lookup())
        if not row.active:
            raise departed(row.name or person.name, self.lang)
        return person.model_copy(update={"name": row.name or person.name, "email": row.email or person.email,
                                         "mobile": row.mobile or person.mobile,
                                         "external": person.external or row.external})


async def resolve_within(chat: ChatConnector, where: ChatRef, people: list[Person],
                         budget: float) -> dict[str, Person | BaseException]:
    """Ask the directory about `people` in parallel for at most `budget` seconds (a callback must be
    answered within the platform's deadline); who was not answered in time is left out, and the
    flow's own resolve step checks every signer again."""
    if not people:
        return {}
    tasks = {asyncio.ensure_future(chat.resolve(where, p)): p.id for p in people}
    done, pending = await asyncio.wait(tasks, timeout=budget)
    for task in pending:
        task.cancel()
    if pending:
        log.info("%s: the directory did not name %d people within %.1f s", chat.platform, len(pending), budget)
    return {tasks[t]: t.exception() or t.result() for t in done}
