"""Turn connector failures into the ApplicationErrors the workflow's retry policy understands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from temporalio.exceptions import ApplicationError

from connectors.chat.base import ChatError
from connectors.esign.base import ProviderError
from connectors.fetch import FetchFailed

REJECTED = "Rejected"


def rejected(message: str) -> ApplicationError:
    """Bad user input: never retried; the workflow posts `message` and ends REJECTED."""
    return ApplicationError(message, type=REJECTED, non_retryable=True)


@contextmanager
def connector_errors() -> Iterator[None]:
    """Retry what may heal (outages, rate limits — after the delay the platform asks for);
    fail at once what won't (a 4xx refusal), which the workflow then shows as STUCK."""
    try:
        yield
    except (ChatError, ProviderError, FetchFailed) as e:
        retry_after = getattr(e, "retry_after", None)
        if getattr(e, "non_retryable", False):
            raise ApplicationError(str(e), type=type(e).__name__, non_retryable=True) from e
        raise ApplicationError(
            str(e),
            type=type(e).__name__,
            next_retry_delay=timedelta(seconds=float(retry_after)) if retry_after else None,
        ) from e
