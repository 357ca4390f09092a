"""The one interface every sender implements, and the errors the callers map to words.

A `Notice` says *what* to tell someone (`purpose` "code" or "link", with its parameters) and
carries the text for channels that take free text (email). SMS services send only approved
templates, so an SMS sender ignores the text and fills its configured template with `params`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

Channel = Literal["email", "sms"]
Purpose = Literal["code", "link", "copy"]


@dataclass(frozen=True)
class Notice:
    purpose: Purpose
    subject: str
    text: str
    # code: {"code"}; link: {"name", "title", "url"}; copy: {"name", "title", "files"}
    params: dict[str, str] = field(default_factory=dict)


class NotifyError(Exception):
    """A send that did not go out.

    `retry_after`: the service limits how often this recipient may get a message ("try again in
    N s"); `permanent`: retrying cannot help (a number the service refuses, a template not
    approved); otherwise a fault of the moment (network, 5xx) that a retry may cure.
    `maybe_delivered`: the request went out and no answer came back.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False,
                 maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.permanent = permanent
        self.maybe_delivered = maybe_delivered


class Sender(Protocol):
    """Sends one notice to one address (an email address, or a mobile number in E.164)."""

    name: str
    channel: Channel

    async def send(self, to: str, notice: Notice, *, key: str) -> None:
        """`key` identifies this message (for the service's own dedupe or reference field)."""
        ...
