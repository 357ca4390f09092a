"""Search-attribute values that always fit Temporal's limits.

Temporal checks every search-attribute write against per-value and total size limits
(`limit.searchAttributesSizeOfValue`, 2 KB by default, and `limit.searchAttributesTotalSize`,
40 KB). A start that breaks them is refused; an upsert that breaks them **terminates the flow**
after its links went out, while its card still says IN_PROGRESS. Signer and initiator ids come
from the chat (a Feishu `open_id` is 35 characters, a mention id can be anything), so every value
SignBridge writes is fitted here first:

- a keyword longer than `KEYWORD_MAX_BYTES` keeps its start and gets `…#<sha256 prefix>`, so it
  stays unique and recognisable (search with the exact value finds only short ids);
- `PendingSigners` lists the pending ids that fit in `LIST_MAX_BYTES`, in signing order; ids too
  long to index and the rest are counted in a last element `+N more` (`signbridge requests show`
  lists everyone).

Pure functions without I/O: the workflow calls them inside its sandbox.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from typing import Any

# Below Temporal's 2 KB per value, with room for the JSON quoting and escapes.
KEYWORD_MAX_BYTES = 256
LIST_MAX_BYTES = 1800
# Ids above this are not worth indexing: nobody types them into a search box.
LIST_ITEM_MAX_BYTES = 200
TOTAL_MAX_BYTES = 20_000  # Temporal: 40 KB for all of a flow's attributes together


def encoded_size(value: Any) -> int:
    """Bytes the value takes in a search-attribute payload (JSON, non-ASCII escaped: the larger form)."""
    if hasattr(value, "isoformat"):
        value = value.isoformat()
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=True))


def keyword(value: str, max_bytes: int = KEYWORD_MAX_BYTES) -> str:
    """`value`, or a shortened form of it that fits `max_bytes` and still identifies it."""
    if encoded_size(value) <= max_bytes:
        return value
    tag = "…#" + hashlib.sha256(value.encode()).hexdigest()[:16]
    # The longest start of `value` that fits with the tag (the size grows with the length).
    keep = bisect.bisect_right(range(len(value) + 1), max_bytes, key=lambda n: encoded_size(value[:n] + tag)) - 1
    return value[: max(keep, 0)] + tag


def keyword_list(values: list[str], max_bytes: int = LIST_MAX_BYTES) -> list[str]:
    """As many of `values` (in order) as fit, then `+N more` for what was left out."""
    kept: list[str] = []
    for i, value in enumerate(values):
        left = len(values) - i
        if encoded_size(value) > LIST_ITEM_MAX_BYTES:
            continue
        if encoded_size([*kept, value, f"+{left} more"]) > max_bytes:
            break
        kept.append(value)
    left_out = len(values) - len(kept)
    return [*kept, f"+{left_out} more"] if left_out else kept


def fitted(value: Any) -> Any:
    """Any value SignBridge writes, fitted: strings as keywords, lists as keyword lists."""
    if isinstance(value, str):
        return keyword(value)
    if isinstance(value, list):
        return keyword_list([str(v) for v in value])
    return value


def check_total(values: list[Any]) -> None:
    """Raise before writing attributes whose sum would break Temporal's total limit.

    With every value fitted this cannot happen; it guards against a future attribute that
    forgets to fit its value (a bug fails the workflow *task*, which Temporal retries, instead
    of Temporal terminating the flow).
    """
    total = sum(encoded_size(v) for v in values)
    if total > TOTAL_MAX_BYTES:
        raise ValueError(f"search attributes of {total} bytes exceed SignBridge's budget of {TOTAL_MAX_BYTES}")
