"""Reading what strangers send: JSON, timestamps and secrets compared, bounded before use.

Every callback, webhook and REST body reaches SignBridge before anyone is authenticated, so the
first code to touch it must not be the one to fail: a 100,000-deep JSON array exhausts the
parser's recursion (a 500 instead of a 400), a 400-digit timestamp overflows the float it is
compared with, and `hmac.compare_digest` raises on non-ASCII `str`. These helpers turn each such
input into a plain refusal the caller maps to its 4xx.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Annotated, Any

from pydantic import StringConstraints, ValidationError

MAX_JSON_DEPTH = 32  # the deepest real payload (a Feishu card callback) nests 6 levels
MAX_TIMESTAMP_DIGITS = 16  # unix milliseconds until the year 318857
MAX_ID_CHARS = 160  # a chat user, chat or event id from a caller; platforms' own are 11-64 characters
# Temporal's longest workflow or update id as docker-compose configures it (`limit.maxIDLength`);
# `sign:<platform>:<tenant>:<event id>` stays inside it with a 64-character tenant.
MAX_WORKFLOW_ID_CHARS = 255

# An id a caller chose (a user, chat or event id): it becomes part of workflow ids, search
# attributes and database keys, so it is short and free of control characters (PostgreSQL
# refuses NUL in text, a log line must stay one line).
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS, pattern=r"^[^\x00-\x1f\x7f]+$")]


class UntrustedInputError(ValueError):
    """The input is refused; `code` names why (`invalid_json`, `too_deep`), the message says it in words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def load_json(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads`, refusing what is not JSON (or not UTF-8) and anything nested deeper than `max_depth`."""
    try:
        data = json.loads(raw)
    except RecursionError as e:  # deeper than the parser's own limit: far past ours
        raise UntrustedInputError("too_deep", f"JSON nested deeper than {max_depth} levels") from e
    except ValueError as e:  # not JSON, not UTF-8, or a number of more than 4,300 digits
        raise UntrustedInputError("invalid_json", f"The body is not JSON: {e}") from e
    if _deeper_than(data, max_depth):
        raise UntrustedInputError("too_deep", f"JSON nested deeper than {max_depth} levels")
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    """Iterative (no recursion to exhaust), stops at the first container past `limit`."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def unix_time(value: str | None, millis: bool = False) -> float | None:
    """Seconds since the epoch from a header's ASCII digits (milliseconds when `millis`); None for
    anything else, including digit strings long enough to overflow a float."""
    if not value:
        return None
    value = value.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > MAX_TIMESTAMP_DIGITS:
        return None
    return int(value) / 1000 if millis else float(int(value))


def is_stale(value: str | None, tolerance: float, millis: bool = False, now: float | None = None) -> bool:
    """True unless `value` is a well-formed timestamp within `tolerance` seconds of now."""
    at = unix_time(value, millis)
    return at is None or abs((time.time() if now is None else now) - at) > tolerance


def same(given: str | bytes, expected: str | bytes) -> bool:
    """Constant-time equality for secrets, whatever characters the caller sent."""
    a = given.encode("utf-8", "surrogateescape") if isinstance(given, str) else given
    b = expected.encode("utf-8", "surrogateescape") if isinstance(expected, str) else expected
    return hmac.compare_digest(a, b)


def problems(error: ValidationError, at_most: int = 5) -> str:
    """What failed validation and where, without echoing the input (it may be megabytes, or a secret)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:at_most])
