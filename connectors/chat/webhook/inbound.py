"""`POST /im/webhook/events`: a company's own chat tool talking to SignBridge (see README,
"Generic webhook IM protocol").

* The signature is checked on the raw bytes before anything is parsed; a forged, unsigned or
  stale request gets 401 and starts nothing.
* `type: "message"` → a `ChatEvent` (mentions carry their contact data; `external: true` for
  people outside the company). A file without a command is kept for a later command.
* `type: "action"` (card buttons) → a `ChatAction`, with the event id as update id so a
  redelivered click is applied once. `replace` names the signer (`signer_ids`: one id, as the
  card's "replace" button carries it) and the `replacement` (a mention: id, name, contacts,
  `external`).

Replies (JSON): a start is 202 (200 for a redelivery), ordinary chat 200 `ignored`; an update
200 with the flow's status (202 when only accepted in time); a refusal 403 (permission) or 409,
an unknown request 404, an ended one 409 `already_ended`; Temporal out of reach 503 with
`Retry-After` (the IM delivers again; the same event id starts nothing twice).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy.engine import Engine

from connectors.chat.base import ChatConnector
from connectors.chat.callback import Callback, CallbackRejected, Received, Reply, Route, Rules, json_object
from connectors.chat.webhook import signature
from signbridge.core import chat
from signbridge.core.models import Actor, OrgParty, Person
from signbridge.core.settings import Settings
from signbridge.core.untrusted import MAX_WORKFLOW_ID_CHARS, Identifier, problems

PLATFORM = "webhook"
ROUTES = (Route("/im/webhook/events"),)
MAX_BODY_BYTES = 1024 * 1024
NO_FILE = ("没有找到要签署的文件：请在同一条消息里附上合同文件"
           "（No document to sign: attach the contract to the same message）")
# The IM waits ~3 s: accepted within 2 s (else 503 and it redelivers), the result 0.8 s more (else 202).
RULES = Rules(deadline=chat.Deadline(accept=2.0, result=0.8), no_file=NO_FILE)


# ---- inbound shapes ---------------------------------------------------------------------------

# Every field is bounded: ids become workflow ids, search attributes and database keys; names
# and contacts are checked (and cleaned) at `prepare`, which says why in the chat.
MAX_MENTIONS = 100
MAX_FILES = 10


class ChatIn(BaseModel):
    id: Identifier
    kind: Literal["group", "direct"] = "group"


class SenderIn(BaseModel):
    id: Identifier
    name: str = Field(default="", max_length=200)
    email: str | None = Field(default=None, max_length=320)
    mobile: str | None = Field(default=None, max_length=64)


class OrgIn(BaseModel):
    id: str | None = Field(default=None, max_length=128)
    name: str = Field(min_length=1, max_length=200)


class MentionIn(SenderIn):
    name: str = Field(max_length=1000)  # a signer: cleaned and checked at `prepare`, which says why
    external: bool = False
    org: OrgIn | None = None  # signs for this organisation (checked against the registered ones at `prepare`)
    seal: bool = False  # and applies its seal

    def person(self) -> Person:
        org = OrgParty(name=self.org.name, id=self.org.id, seal=self.seal) if self.org else None
        return Person(**self.model_dump(exclude={"org", "seal"}), org=org)


class FileIn(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    url: str = Field(min_length=1, max_length=2000)
    sha256: str | None = Field(default=None, max_length=64)


class _Event(BaseModel):
    event_id: Identifier
    tenant: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    sender: SenderIn


class MessageEvent(_Event):
    type: Literal["message"]
    chat: ChatIn
    text: str = Field(default="", max_length=10_000)
    mentions: list[MentionIn] = Field(default_factory=list, max_length=MAX_MENTIONS)
    files: list[FileIn] = Field(default_factory=list, max_length=MAX_FILES)


class ActionIn(BaseModel):
    request_id: str = Field(min_length=1, max_length=MAX_WORKFLOW_ID_CHARS)
    name: str = Field(max_length=64)
    reason: str | None = Field(default=None, max_length=500)
    signer_ids: list[Identifier] = Field(default_factory=list, max_length=MAX_MENTIONS)
    replacement: MentionIn | None = None  # "replace": who signs instead of `signer_ids[0]`


class ActionEvent(_Event):
    type: Literal["action"]
    action: ActionIn


class ApprovalIn(BaseModel):
    id: Identifier
    title: str = Field(default="", max_length=200)


class ApprovalApprovedEvent(_Event):
    """An approval that passed in the company's own workflow system: its documents and signers
    (`text` in the command grammar, with `mentions`) come with it. `initiator` is who started the
    approval (`sender` is accepted instead); `chat` where the card goes (none: the initiator)."""

    type: Literal["approval.approved"]
    sender: SenderIn | None = None  # type: ignore[assignment]
    initiator: SenderIn | None = None
    approval: ApprovalIn
    chat: ChatIn | None = None
    text: str = Field(default="", max_length=10_000)
    mentions: list[MentionIn] = Field(default_factory=list, max_length=MAX_MENTIONS)
    files: list[FileIn] = Field(default_factory=list, max_length=MAX_FILES)


_EVENT: TypeAdapter[MessageEvent | ActionEvent | ApprovalApprovedEvent] = TypeAdapter(
    Annotated[MessageEvent | ActionEvent | ApprovalApprovedEvent, Field(discriminator="type")]
)


class WebhookInbound:
    platform = PLATFORM
    rules = RULES
    max_body = MAX_BODY_BYTES

    def __init__(self, secret: str, tolerance: int) -> None:
        self._secret = secret
        self.tolerance = tolerance

    def __repr__(self) -> str:  # never the secret
        return "WebhookInbound()"

    async def receive(self, call: Callback) -> Received:
        try:
            signature.verify(self._secret, call.headers.get(signature.TIMESTAMP_HEADER),
                             call.headers.get(signature.SIGNATURE_HEADER), call.body, tolerance=self.tolerance)
        except signature.SignatureError as e:
            raise CallbackRejected(401, "bad_signature", f"Rejected: {e.reason}") from e
        try:
            event = _EVENT.validate_python(json_object(call.body))
        except ValidationError as e:
            raise CallbackRejected(400, "invalid_event", f"Invalid event: {problems(e)}") from e
        if isinstance(event, ApprovalApprovedEvent):
            return _approval(event)
        sender = Person(id=event.sender.id, name=event.sender.name, email=event.sender.email,
                        mobile=event.sender.mobile)
        if isinstance(event, ActionEvent):
            return chat.ChatAction(request_id=event.action.request_id, name=event.action.name,
                              actor=Actor(id=sender.id, name=sender.name), update_id=event.event_id,
                              reason=event.action.reason, signer_ids=tuple(event.action.signer_ids),
                              platform=PLATFORM, tenant=event.tenant,
                              replacement=Person(**event.action.replacement.model_dump())
                              if event.action.replacement else None)
        return chat.ChatEvent(platform=PLATFORM, tenant=event.tenant, chat_id=event.chat.id, chat_kind=event.chat.kind,
                         sender=sender, event_id=event.event_id, text=event.text,
                         mentions=tuple(chat.Mention(p.person(), p.name) for p in event.mentions),
                         files=tuple(chat.FileRef(f.name, f.url, f.sha256) for f in event.files))

    def reply(self, received: chat.Incoming, outcome: chat.Outcome) -> Reply:
        match outcome:
            case chat.Started() | chat.Duplicate():
                body: dict[str, object] = {"ok": True, "request_id": outcome.request_id,
                                           "started": isinstance(outcome, chat.Started)}
                if outcome.problem is not None:
                    body.update(status="rejected", reason=outcome.problem)
                return Reply(202 if isinstance(outcome, chat.Started) else 200, body)
            case chat.Ignored():
                return Reply(200, {"ok": True, "ignored": outcome.reason})
            case chat.Applied():
                return Reply(200, {"ok": True, "request_id": outcome.request_id, "action": _name(received),
                                   "status": outcome.view.status.value})
            case chat.Accepted():
                return Reply(202, {"ok": True, "request_id": outcome.request_id, "action": _name(received),
                                   "accepted": True})
            case chat.Refused():
                status = 400 if outcome.code in ("unknown_action", "InvalidArgument") else \
                    403 if outcome.permission else 409
                return Reply.error(status, outcome.code, outcome.en)
            case chat.NotFound(ended=True):
                return Reply.error(409, "already_ended", f"The request {outcome.request_id} has already ended")
            case chat.NotFound():
                return Reply.error(404, "not_found", f"No signing request {outcome.request_id}")
            case chat.Busy():
                return Reply.busy(outcome)


def _approval(event: ApprovalApprovedEvent) -> chat.ApprovalEvent:
    who = event.initiator or event.sender
    if who is None:
        raise CallbackRejected(400, "invalid_event", "Invalid event: approval.approved needs an initiator")
    return chat.ApprovalEvent(
        platform=PLATFORM, tenant=event.tenant, instance_id=event.approval.id, event_id=event.event_id, approved=True,
        initiator=Person(id=who.id, name=who.name, email=who.email, mobile=who.mobile), status="approved",
        title=event.approval.title, self_contained=True, chat_id=event.chat.id if event.chat else "",
        chat_kind=event.chat.kind if event.chat else "direct", text=event.text,
        mentions=tuple(chat.Mention(Person(**p.model_dump()), p.name) for p in event.mentions),
        files=tuple(chat.FileRef(f.name, f.url, f.sha256) for f in event.files))


def _name(received: chat.Incoming) -> str:
    return received.name if isinstance(received, chat.ChatAction) else ""


def build(settings: Settings, engine: Engine, chat: ChatConnector | None) -> WebhookInbound:
    """Always on: the webhook secret always has a value (a real one outside development)."""
    return WebhookInbound(settings.webhook_secret.get_secret_value(), settings.webhook_tolerance_seconds)
