"""The small pydantic models that cross the Temporal boundary.

They carry ids, names and hashes — never file bytes (files live in the blob store and travel
as `blob_key` + SHA-256). All are serialised with `pydantic_data_converter`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class SignStatus(StrEnum):
    PREPARING = "PREPARING"
    IN_PROGRESS = "IN_PROGRESS"
    FINISHING = "FINISHING"
    STUCK = "STUCK"
    COMPLETED = "COMPLETED"
    DECLINED = "DECLINED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {SignStatus.COMPLETED, SignStatus.DECLINED, SignStatus.EXPIRED, SignStatus.CANCELLED, SignStatus.REJECTED}
)


class OrgParty(BaseModel):
    """The organisation a signer signs for (`@王五(乙方科技有限公司 公章)`). `seal`: its seal is applied
    too, as a signature of its own. What the command names is `name` (and `id`, from the webhook
    IM); `prepare` fills the rest from the organisations table, so providers need nothing else."""

    name: str
    seal: bool = False
    seal_kind: str = "公章"  # 公章 | 合同专用章
    id: str | None = None  # the chat's own id of the organisation, when it sends one
    credit_code: str | None = None  # unified social credit code (set by `prepare`)
    seal_image: str | None = None  # blob key of the uploaded seal image; None: a generated round seal
    provider_ids: dict[str, str] = Field(default_factory=dict)  # e.g. {"esign_cn.org_id": …, "fadada.seal_id": …}


class Person(BaseModel):
    """A chat user or an external party. `id` is the chat user id (or a stable external id)."""

    id: str
    name: str
    email: str | None = None
    mobile: str | None = None
    external: bool = False
    org: OrgParty | None = None  # signs for this organisation (and applies its seal when `org.seal`)


class ChatRef(BaseModel):
    """Where the request came from and where its card and files go."""

    platform: str = "webhook"
    tenant: str = "default"
    chat_id: str
    chat_kind: Literal["group", "direct"] = "group"
    source_event_id: str


class DocumentSource(BaseModel):
    """How to get the document: an URL to fetch, or a blob already uploaded through the API."""

    name: str
    url: str | None = None
    blob_key: str | None = None
    sha256: str | None = None  # what the sender claims; checked against what we fetch
    # Who named `url`: the chat (fetched through that chat's file API, with its credentials) or a
    # REST caller (fetched directly, from SIGNBRIDGE_API_FILE_HOSTS only, with no credentials).
    origin: Literal["chat", "api"] = "chat"


class Timing(BaseModel):
    deadline: timedelta = timedelta(days=7)
    reminder_first_after: timedelta = timedelta(hours=24)
    reminder_every: timedelta = timedelta(hours=24)
    reminder_max: int = 3
    # The polling fallback (`workflows/signing.py`, "Polling"): a flow whose provider's webhooks are not
    # confirmed polls `poll_after` after the last change, doubling while nothing changes (at most a day
    # apart), and stops after `max_quiet_polls` polls in a row that found nothing new — until something
    # changes. The built-in provider and confirmed webhooks need no timer polls at all.
    poll_after: timedelta = timedelta(hours=1)
    max_quiet_polls: int = 6
    step_retry_window: timedelta = timedelta(minutes=30)  # then STUCK; it keeps retrying, less often


class TemplateUse(BaseModel):
    """A registered template to fill (`模板:销售合同 客户名称:某某公司`): it is the request's document."""

    name: str
    fields: dict[str, str] = Field(default_factory=dict)


class Placement(BaseModel):
    """Where one signer signs one document: a template's signature field, or beside an anchor text.
    `kind` "seal" is an organisation's seal (a later feature); documents are indexed in request order."""

    role: str
    signer_id: str
    document: int = 0
    page: int  # 0-based
    box: tuple[float, float, float, float]  # llx, lly, urx, ury in PDF points
    kind: Literal["sign", "seal"] = "sign"
    anchor: str | None = None  # the anchor text it sits beside; None for a template field
    anchor_box: tuple[float, float, float, float] | None = None  # that text's own rectangle (offsets from it)
    page_size: tuple[float, float] | None = None  # the page's width and height (providers measuring from the top)


class ApprovalRef(BaseModel):
    """The approval a signing request comes from (in `SigningRequest.approval`)."""

    platform: str
    tenant: str = "default"
    instance_id: str
    definition: str = ""  # Feishu approval_code, DingTalk processCode, WeCom template_id
    initiator_id: str = ""
    title: str = ""
    document_fields: list[str] = Field(default_factory=list)
    signer_field: str = ""
    counterparty_field: str = ""
    counterparty_first: bool = False
    # The webhook IM's `approval.approved` carries its documents and signers itself: nothing to read.
    self_contained: bool = False


class SigningRequest(BaseModel):
    """The one input of `SigningWorkflow`. `groups` sign in order; people inside a group in parallel."""

    request_id: str
    title: str
    initiator: Person
    chat: ChatRef
    documents: list[DocumentSource] = Field(default_factory=list)
    groups: list[list[Person]] = Field(default_factory=list)
    provider: str = "local"
    timing: Timing = Field(default_factory=Timing)
    # A problem the inbound adapter already found (e.g. "@王五 is not a known user"); the flow
    # posts it and ends REJECTED, so every rejection is visible in the chat and in Temporal.
    problem: str | None = None
    template: TemplateUse | None = None
    roles: dict[str, str] = Field(default_factory=dict)  # role (甲方) -> signer id, when the command named them
    cc: list[Person] = Field(default_factory=list)  # get the signed files privately; never sign
    bulk_id: str | None = None  # one row of a bulk send: its progress shows on the bulk's card, not its own
    # The internal approval this request comes from (`signbridge.core.approvals`): the flow reads
    # its documents and signers from it first, and writes its result back to it at the end.
    approval: ApprovalRef | None = None


class DocumentInfo(BaseModel):
    name: str
    sha256: str
    blob_key: str
    size: int
    pages: int
    converted_from: str | None = None  # the Office file's name when this PDF was converted from it
    original_sha256: str | None = None  # that Office file, kept beside the PDF in the blob store


class OrgInfo(BaseModel):
    """A registered organisation as one flow needs it: who may approve the use of its seal."""

    name: str
    credit_code: str
    keepers: list[Person] = Field(default_factory=list)
    requires_seal_approval: bool = False


class SealApproval(BaseModel):
    """The seal-use approval (用印审批) of one organisation in one flow."""

    org: str  # the organisation's name
    signer_id: str  # the signatory whose seal application needs it
    status: Literal["waiting", "pending", "approved", "refused"] = "waiting"
    by: str | None = None  # the keeper who decided
    reason: str | None = None
    keepers: list[str] = Field(default_factory=list)  # names, for the card


class PreparedDocument(DocumentInfo):
    """What `prepare` returns: the stored document, and the signers as the chat's directory knows
    them (names, email, mobile). Empty `groups` (older histories): keep the request's own."""

    groups: list[list[Person]] = Field(default_factory=list)
    initiator: Person | None = None
    # Every document of the request, this one first (empty in older histories: only this one),
    # and where each signer signs (empty: the automatic stamp slots).
    documents: list[DocumentInfo] = Field(default_factory=list)
    placements: list[Placement] = Field(default_factory=list)
    organisations: list[OrgInfo] = Field(default_factory=list)  # every organisation party, as registered


class SignedDocuments(DocumentInfo):
    """What `finish` returns: the first signed document, and all of them (empty in older histories)."""

    documents: list[DocumentInfo] = Field(default_factory=list)


class SignerState(BaseModel):
    person: Person
    group: int
    status: Literal["waiting", "notified", "signed", "declined"] = "waiting"
    notified_at: datetime | None = None
    signed_at: datetime | None = None
    reminders_sent: int = 0
    # Left the company while the flow waits for them (a platform departure event, or the directory
    # on a reminder): flagged on the card until the initiator or an operator replaces them.
    departed: bool = False
    replaces: str | None = None  # the id of the signer this one replaced
    locked_until: datetime | None = None  # too many wrong one-time codes: the link opens again then


class StatusView(BaseModel):
    """What the status query, the card and the REST API show."""

    request_id: str
    title: str
    status: SignStatus
    provider: str
    initiator: Person
    chat: ChatRef
    document: DocumentInfo | None = None
    signers: list[SignerState] = Field(default_factory=list)
    current_group: int = 0
    deadline: datetime | None = None
    provider_flow_id: str | None = None
    signed_document: DocumentInfo | None = None
    reason: str | None = None  # why DECLINED / REJECTED / CANCELLED / EXPIRED / STUCK
    stuck_step: str | None = None
    events_seen: int = 0
    documents: list[DocumentInfo] = Field(default_factory=list)  # all of them when there are several
    signed_documents: list[DocumentInfo] = Field(default_factory=list)
    bulk_id: str | None = None
    cc: list[Person] = Field(default_factory=list)
    approval: ApprovalRef | None = None  # the approval this request comes from
    seal_approvals: list[SealApproval] = Field(default_factory=list)


# ---- provider side ------------------------------------------------------------------------


class ProviderEvent(BaseModel):
    """One provider callback, normalised. `event_id` deduplicates redeliveries."""

    event_id: str
    provider: str
    flow_id: str
    # "locked": a signer's link is locked for a while (too many wrong one-time codes; `reason`
    # holds when it opens again, ISO 8601) — shown on the card, nothing else changes.
    kind: Literal["signed", "declined", "expired", "cancelled", "completed", "locked"]
    signer_id: str | None = None
    reason: str | None = None
    occurred_at: datetime
    raw: dict[str, Any] = Field(default_factory=dict)
    # True when the provider's callback signature doesn't cover the body (Dropbox Sign signs only
    # time + type): the workflow then acts only on what a poll of the provider confirms.
    confirm: bool = False


class PollResult(BaseModel):
    """What the `poll_flow` activity returns: the provider's events as its own state shows them, and
    when SignBridge last received a verified webhook from that provider (None: never) — a recent one
    tells the flow that the provider's webhooks work, so it stops polling on a timer."""

    events: list[ProviderEvent] = Field(default_factory=list)
    webhooks_seen_at: datetime | None = None


class CreateFlowInput(BaseModel):
    request_id: str
    provider: str
    title: str
    document: DocumentInfo
    groups: list[list[Person]]
    expires_at: datetime
    documents: list[DocumentInfo] = Field(default_factory=list)  # every document (empty: only `document`)
    placements: list[Placement] = Field(default_factory=list)

    @property
    def all_documents(self) -> list[DocumentInfo]:
        return self.documents or [self.document]


class OpenGroupInput(BaseModel):
    request_id: str
    provider: str
    flow_id: str
    group: int
    signers: list[Person]
    expires_at: datetime


class SignerLink(BaseModel):
    """What a provider connector's `open_group` hands the `open_group` activity. The activity keeps
    the URL (a bearer secret) encrypted in the database and returns none to the workflow: older
    flows' histories carry URLs here, newer ones never do."""

    signer_id: str
    url: str | None  # None when the provider notifies the signer itself


class ProviderFlowRef(BaseModel):
    request_id: str
    provider: str
    flow_id: str
    reason: str | None = None
    signer_ids: list[str] = Field(default_factory=list)


class FinishInput(BaseModel):
    request_id: str
    provider: str
    flow_id: str
    original: DocumentInfo
    expected_signatures: int
    originals: list[DocumentInfo] = Field(default_factory=list)  # every document (empty: only `original`)


# ---- chat side ----------------------------------------------------------------------------


class Actor(BaseModel):
    """Who asks for an update; `is_operator` is decided by the API from its keys and settings."""

    id: str
    name: str = ""
    is_operator: bool = False


class ActionInput(BaseModel):
    actor: Actor
    signer_ids: list[str] = Field(default_factory=list)  # for remind: empty = everyone pending; replace: the one
    reason: str | None = None
    replacement: Person | None = None  # for replace: who signs instead of `signer_ids[0]`


class SignerDeparted(BaseModel):
    """A signer left the company (signal `signer_departed`): `source` says how we learned it."""

    signer_id: str
    source: str = "directory"


class ReplaceSignerInput(BaseModel):
    """The `replace_signer` activity: at the provider, `old_id`'s link dies and `new` takes their
    place (their group, their signature slot); `opened` when that group is signing now."""

    request_id: str
    provider: str
    flow_id: str
    chat: ChatRef
    old_id: str
    new: Person
    group: int
    opened: bool
    expires_at: datetime


class AuditInput(BaseModel):
    request_id: str
    action: str
    actor: str = "system"
    detail: dict[str, Any] = Field(default_factory=dict)
    document_sha256: str | None = None
    # Idempotency: the same (request_id, key) is recorded once even if the activity retries.
    key: str


class PublishInput(BaseModel):
    """Publish the flow's state: DB status, the audit events gathered since last time, the card."""

    view: StatusView
    audits: list[AuditInput] = Field(default_factory=list)


class LinkMessageInput(BaseModel):
    request_id: str
    chat: ChatRef
    to: Person
    title: str
    # Only older flows pass the URL; newer ones leave it None and `send_link` reads the link the
    # `open_group` activity stored for (request, signer), so no signing URL enters Temporal.
    sign_url: str | None = None
    key: str  # idempotency key, unique per message of this request
    reminder: bool = False


class TextMessageInput(BaseModel):
    """A message to the chat or one person. New flows name a `kind` of `signbridge.messages` with
    its `params`, rendered in the chat's language; `text` is what older flows sent ready-made."""

    request_id: str
    chat: ChatRef
    key: str  # idempotency key (unique per request)
    text: str = ""
    to: Person | None = None  # None: to the chat
    kind: str | None = None
    params: dict[str, str] = Field(default_factory=dict)


class FileMessageInput(BaseModel):
    request_id: str
    chat: ChatRef
    document: DocumentInfo
    documents: list[DocumentInfo] = Field(default_factory=list)  # every file to deliver (empty: `document`)
    cc: list[Person] = Field(default_factory=list)  # each gets the files privately too
    certificate: DocumentInfo | None = None  # the certificate of completion, delivered after the files
    # External signers: they have no chat to get the files in, so their copy goes by email.
    email_copies: list[Person] = Field(default_factory=list)


class ChatReplyInput(BaseModel):
    """A private answer to one chat message (`ChatReplyWorkflow`): `kind` "search" lists the
    requests matching `words` that `to` may see (all of them for an operator); "paused" says why
    no signing starts; "notice" says `reason` (why a replace command did nothing)."""

    chat: ChatRef
    to: Person
    kind: Literal["search", "paused", "notice"]  # notice: `reason` is the text (a refused replace)
    words: str = ""
    reason: str = ""
    operator: bool = False


# ---- bulk sends ---------------------------------------------------------------------------


class BulkProgress(BaseModel):
    """Where a bulk send is; carried from one run of `BulkSendWorkflow` to the next (continue-as-new).

    Counts rather than rows: a 10,000-row CSV lives in the database (`bulk_rows`), the workflow
    keeps only the ids of the rows it started that have not ended."""

    status: Literal["LOADING", "RUNNING", "DONE", "CANCELLED", "REJECTED"] = "LOADING"
    total: int = 0  # data rows in the CSV
    bad: int = 0  # rows reported, never sent
    problems: list[str] = Field(default_factory=list)  # the first bad rows, in words
    next_line: int = 0  # every good row up to this CSV line has been dealt with
    all_started: bool = False
    started: int = 0  # rows whose signing request this bulk send started
    skipped: int = 0  # rows sent before (an earlier bulk send or run of the same rows): not sent again
    sent: int = 0  # rows whose signers have their links
    starting: list[str] = Field(default_factory=list)  # started, links not out yet (at most the concurrency)
    open: list[str] = Field(default_factory=list)  # started, not ended
    to_cancel: list[str] = Field(default_factory=list)  # open rows still to be told the bulk was cancelled
    outcomes: dict[str, int] = Field(default_factory=dict)  # final status of ended rows -> how many
    not_sent: int = 0  # good rows never started because the bulk was cancelled
    reason: str | None = None  # why REJECTED / who CANCELLED
    peak_starting: int = 0  # the most rows that were starting at once (never above the concurrency)
    runs: int = 1  # runs of the workflow so far (continue-as-new)

    @property
    def ended(self) -> int:
        return sum(self.outcomes.values())


class BulkSendInput(BaseModel):
    """The one input of `BulkSendWorkflow`: a template, a CSV, and what every row's request shares."""

    bulk_id: str
    title: str
    template: str
    initiator: Person
    chat: ChatRef
    csv: DocumentSource | None = None  # an upload in the blob store, or the chat's file
    provider: str = "local"
    timing: Timing = Field(default_factory=Timing)
    roles: dict[str, Person] = Field(default_factory=dict)  # roles the command gave to chat members
    cc: list[Person] = Field(default_factory=list)
    concurrency: int = 5  # rows starting at once (SIGNBRIDGE_BULK_CONCURRENCY)
    max_rows: int = 10000
    rows_per_run: int = 500  # rows started per run before continuing as new (bounded history)
    problem: str | None = None  # found before it started (no CSV attached…): said in the chat, REJECTED
    progress: BulkProgress | None = None  # None on the first run


class BulkView(BulkProgress):
    """What the `progress` query, the bulk's card and `GET /api/v1/bulk-sends/{id}` show."""

    bulk_id: str
    title: str
    template: str
    initiator: Person
    chat: ChatRef
    concurrency: int = 5


class BulkLoaded(BaseModel):
    total: int
    bad: int
    problems: list[str] = Field(default_factory=list)


class BulkPage(BaseModel):
    """The next good rows of a bulk send after CSV line `after_line`, as signing requests."""

    bulk: BulkSendInput
    after_line: int
    limit: int


class BulkRowRequest(BaseModel):
    line: int
    request: SigningRequest
    already: bool = False  # a request with this row's id exists: sent before, not again
