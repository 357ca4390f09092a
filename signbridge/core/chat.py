"""What a chat platform hands to the intake, and what the intake answers.

Every platform's `inbound` module turns a verified callback (or a long-connection frame) into a
`ChatEvent` (a message: maybe a command, maybe a file) or a `ChatAction` (a card button), and
renders the intake's `Outcome` the platform's way (an HTTP status, a Feishu toast, an empty
WeCom reply, an ack the listener keeps or retries). The types live here, in the bottom layer,
because both sides need them: the platform packages produce and render them, `signbridge.intake`
acts on them. None of them knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from signbridge.core.models import Actor, Person, StatusView

# The workflow's updates a card button may ask for; a seal keeper's 同意用印 / 拒绝 are the last two.
ACTIONS = ("remind", "cancel", "retry", "replace", "approve_seal", "refuse_seal")
QUERIES = ("status",)  # buttons answered from the flow's status query, changing nothing


def request_id_for(platform: str, tenant: str, event_id: str) -> str:
    """The flow a chat event starts: derived from the event, so a redelivery finds it instead."""
    return f"sign:{platform}:{tenant}:{event_id}"


@dataclass(frozen=True)
class FileRef:
    """A file in a chat message, as the platform's connector can fetch it again (`DocumentSource.url`)."""

    name: str
    url: str
    sha256: str | None = None


@dataclass(frozen=True)
class Mention:
    """A mentioned person, and how the text names them (`@typed`): the grammar matches `typed`,
    the flow gets `person` (WeCom and Slack type ids, the directory knows the names)."""

    person: Person
    typed: str = ""

    @property
    def as_typed(self) -> Person:
        return self.person.model_copy(update={"name": self.typed or self.person.name})


@dataclass(frozen=True)
class ChatEvent:
    """One chat message, verified and normalised. `event_id` is the platform's id of this delivery's
    event (stable across redeliveries); the flow it starts is `sign:{platform}:{tenant}:{event_id}`."""

    platform: str
    tenant: str
    chat_id: str
    sender: Person
    event_id: str
    text: str = ""
    chat_kind: Literal["group", "direct"] = "group"
    mentions: tuple[Mention, ...] = ()
    files: tuple[FileRef, ...] = ()  # files in this very message
    reply_to: str | None = None  # the message this one replies to (its file is the document)
    message_id: str = ""  # the platform's id of this message (what a later reply names); default event_id
    bot_name: str | None = None  # the bot's name on this platform when it differs from the setting
    problem: str | None = None  # something the platform side already found wrong (a deactivated signer)

    @property
    def message(self) -> str:
        return self.message_id or self.event_id


@dataclass(frozen=True)
class ChatAction:
    """A card button (or an operator's command): the workflow update `name` on `request_id`.

    `update_id` comes from the platform's event, so a redelivered click is applied once. The
    intake makes the actor an operator when their id is in `SIGNBRIDGE_OPERATORS`."""

    request_id: str
    name: str
    actor: Actor
    update_id: str | None = None
    reason: str | None = None
    signer_ids: tuple[str, ...] = ()
    platform: str = ""  # where the click came from: names the actor from the directory cache
    tenant: str = ""
    replacement: Person | None = None  # "replace": who signs instead of `signer_ids[0]`


@dataclass(frozen=True)
class Departure:
    """People who left the company (Feishu `contact.user.deleted_v3`, DingTalk `user_leave_org`,
    WeCom `change_contact`/`delete_user`): the intake marks them departed in the directory cache
    and flags them on every open flow of this platform and tenant still waiting for them."""

    platform: str
    tenant: str
    user_ids: tuple[str, ...]
    event_id: str = ""




@dataclass(frozen=True)
class ApprovalEvent:
    """An approval changed state (Feishu `approval_instance`, DingTalk `bpms_instance_change`, WeCom
    `sys_approval_change`, the webhook IM's `approval.approved`). `approved`: the event says it
    passed; anything else starts nothing. The flow it starts is named after `instance_id`, so a
    redelivery (or a second event for the same instance) finds it instead.

    The webhook IM's event is `self_contained`: it carries the chat, the signers (`text` in the
    command grammar, with `mentions`) and the `files`; the platforms' events carry ids only and the
    flow reads the instance through the platform's approval API, mapped by `signbridge approvals map`."""

    platform: str
    tenant: str
    instance_id: str
    event_id: str
    approved: bool
    initiator: Person
    # The approval was taken back after all (Feishu REVERTED/CANCELED/DELETED, DingTalk
    # terminate/delete, WeCom withdrawn or deleted): a flow it started is cancelled.
    revoked: bool = False
    definition: str = ""
    status: str = ""
    title: str = ""
    self_contained: bool = False
    chat_id: str = ""
    chat_kind: Literal["group", "direct"] = "group"
    text: str = ""
    mentions: tuple[Mention, ...] = ()
    files: tuple[FileRef, ...] = ()


@dataclass(frozen=True)
class Deadline:
    """How long the platform waits for our answer, split the way an update needs it: Temporal must
    accept (make durable) within `accept`, else `Busy`; its result is awaited `result` more, else
    `Accepted`. A start uses `accept`."""

    accept: float
    result: float = 0.0


# ---- outcomes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Started:
    """A new flow. With `problem` it runs only to say in the chat why it cannot go ahead (REJECTED)."""

    request_id: str
    problem: str | None = None


@dataclass(frozen=True)
class Duplicate:
    """The flow for this event exists already: a redelivery."""

    request_id: str
    problem: str | None = None


@dataclass(frozen=True)
class Ignored:
    """Nothing to do: ordinary chat, a file kept for a later command, a button for nothing we run."""

    reason: str


@dataclass(frozen=True)
class Refused:
    """The flow (its update validator) or the intake said no; `code` is the validator's error type."""

    code: str
    zh: str
    en: str

    @property
    def permission(self) -> bool:
        return self.code == "PermissionDenied"


@dataclass(frozen=True)
class NotFound:
    """No such flow, or (`ended`) one that has finished and takes no more actions."""

    request_id: str
    ended: bool = False


@dataclass(frozen=True)
class Busy:
    """Temporal did not answer within the platform's deadline: nothing is known to have happened.
    The platform should deliver again (same event id: at most one flow, one update)."""

    retry_after: int = 5


@dataclass(frozen=True)
class Applied:
    """The update ran (or the status was read): the flow as it is now."""

    request_id: str
    view: StatusView = field(repr=False)


@dataclass(frozen=True)
class Accepted:
    """The update is durable but its result was not ready within the deadline; the card will show it."""

    request_id: str


Outcome = Started | Duplicate | Ignored | Refused | NotFound | Busy | Applied | Accepted


Incoming = ChatEvent | ChatAction | ApprovalEvent | Departure  # what a platform's callback can carry to the intake
