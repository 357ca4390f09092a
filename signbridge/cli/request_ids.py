"""Short request ids: what `signbridge requests list` shows, and what every command accepts.

A request id is its workflow id, `sign:<platform>:<tenant>:<event id>` — 40 to 80 characters
that share their first 20, so an 80-column table cut them all to `sign:web…`. The short id is the
first 8 hex digits of the id's SHA-256 (like a git commit): the same for a request everywhere, no
new search attribute or column, and unique in practice (a longer prefix, up to 64 digits, is
accepted too). A full id is always accepted as it is.

Resolving a short id looks at the requests the database knows (every flow past its first
publish) and then the flows in Temporal's visibility index (one still preparing).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterable

SHORT = 8
_HEX = re.compile(r"[0-9a-f]{4,64}")
VISIBILITY_LIMIT = 20_000  # flows looked through for a short id the database does not know


class UnknownRequest(LookupError):
    """No request, or more than one, has this short id; the message says which."""


def short_id(request_id: str) -> str:
    return hashlib.sha256(request_id.encode()).hexdigest()[:SHORT]


def looks_short(ref: str) -> bool:
    return ":" not in ref and bool(_HEX.fullmatch(ref))


def matching(ref: str, ids: Iterable[str]) -> list[str]:
    return sorted({i for i in ids if hashlib.sha256(i.encode()).hexdigest().startswith(ref)})


async def resolve(ref: str, known: Iterable[str], listed: AsyncIterator[str]) -> str:
    """The full id `ref` stands for: itself when it is one, else the one request whose short id
    starts with it among `known` (the database), then `listed` (Temporal visibility)."""
    if not looks_short(ref):
        return ref
    found = matching(ref, known)
    if not found:
        seen: list[str] = []
        async for wf_id in listed:
            seen.append(wf_id)
            if len(seen) >= VISIBILITY_LIMIT:
                break
        found = matching(ref, seen)
    if len(found) == 1:
        return found[0]
    if not found:
        raise UnknownRequest(f"no signing request has the id {ref} (`signbridge requests list` shows them)")
    raise UnknownRequest(f"{ref} is the start of {len(found)} requests' ids ({', '.join(found[:5])}); "
                         "give more of it, or the full id")
