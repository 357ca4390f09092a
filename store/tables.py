"""SQLModel tables. Workflows never touch these; activities and API handlers do."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC: SQLModel stores it as UTC and hands it back aware on SQLite and PostgreSQL."""
    return datetime.now(UTC)


class Identity(SQLModel, table=True):
    """A chat user (or external party) ↔ the contact data signing needs."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("platform", "tenant", "user_id"),)
    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(index=True)
    tenant: str = "default"
    user_id: str
    name: str
    email: str | None = None
    mobile: str | None = None
    external: bool = False
    active: bool = True
    updated_at: datetime = Field(default_factory=utcnow)


class Document(SQLModel, table=True):
    __tablename__ = "documents"
    sha256: str = Field(primary_key=True, max_length=64)
    name: str
    size: int
    content_type: str = "application/pdf"
    blob_key: str
    source: str = ""  # url / upload / provider:<name>
    created_at: datetime = Field(default_factory=utcnow)


class SigningRequestRecord(SQLModel, table=True):
    """Links a workflow to its provider flow and its chat message — routes provider webhooks."""

    __tablename__ = "signing_requests"
    request_id: str = Field(primary_key=True)  # == Temporal workflow id
    title: str
    provider: str
    provider_flow_id: str | None = Field(default=None, index=True)
    chat_platform: str
    tenant: str = "default"
    chat_id: str
    source_event_id: str
    card_key: str
    initiator_id: str
    document_sha256: str | None = None
    signed_sha256: str | None = None
    status: str = "PREPARING"
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    # The flow as it was last published (`StatusView` JSON): what REST and the chat's search read,
    # so a request stays findable after Temporal's retention dropped its history.
    snapshot: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    bulk_id: str | None = Field(default=None, index=True)
    # The certificate of completion once issued (blob key = SHA-256): every download is that file.
    certificate_sha256: str | None = None


class RequestParticipant(SQLModel, table=True):
    """Who may see a request in the chat's search: its initiator, signers and CC recipients."""

    __tablename__ = "request_participants"
    __table_args__ = (UniqueConstraint("request_id", "person_id", "role"),
                      Index("ix_request_participants_person", "platform", "person_id"))
    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True)
    platform: str
    person_id: str
    role: str  # initiator | signer | cc


class Template(SQLModel, table=True):
    """A registered template: its PDF (converted when it came as an Office file) and what it asks for."""

    __tablename__ = "templates"
    name: str = Field(primary_key=True, max_length=100)
    sha256: str = Field(max_length=64)  # blob key of the template PDF
    source_name: str
    fields: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of text field names
    roles: str = Field(sa_column=Column(Text, nullable=False))  # JSON list of signing roles, in order
    created_by: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Organisation(SQLModel, table=True):
    """A company that signs as a party: its credit code, seal, seal keepers and provider ids."""

    __tablename__ = "organisations"
    credit_code: str = Field(primary_key=True, max_length=18)  # unified social credit code (GB 32100-2015)
    name: str = Field(unique=True, max_length=200)
    seal_image_key: str | None = None  # blob key of the uploaded seal (PNG); None: a generated round seal
    keepers: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON [{"id", "name"}]
    requires_seal_approval: bool = False
    provider_ids: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON {"esign_cn.org_id": …}
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class BulkSend(SQLModel, table=True):
    """One bulk send: a template and a CSV, one signing request per good row."""

    __tablename__ = "bulk_sends"
    bulk_id: str = Field(primary_key=True)
    title: str
    template: str
    initiator_id: str
    chat_platform: str
    tenant: str = "default"
    chat_id: str
    status: str = "RUNNING"  # RUNNING | DONE | CANCELLED
    created_at: datetime = Field(default_factory=utcnow)


class BulkRow(SQLModel, table=True):
    """One CSV row of a bulk send; `request_id` once its flow was started, `problem` if it is bad."""

    __tablename__ = "bulk_rows"
    __table_args__ = (UniqueConstraint("bulk_id", "row_key"),)
    id: int | None = Field(default=None, primary_key=True)
    bulk_id: str = Field(index=True)
    row_key: str = Field(max_length=64)
    line: int  # line number in the CSV (header = 1)
    values: str = Field(sa_column=Column(Text, nullable=False))  # JSON object: column -> value
    problem: str | None = None
    request_id: str | None = None


class Switch(SQLModel, table=True):
    """An operator's switch (`pause`: new signing requests are refused during an incident)."""

    __tablename__ = "switches"
    name: str = Field(primary_key=True, max_length=32)
    on: bool = False
    reason: str = ""
    set_by: str = ""
    set_at: datetime = Field(default_factory=utcnow)


class AuditEvent(SQLModel, table=True):
    """Append-only; `hash` = SHA-256 over the previous row's hash and this row's content."""

    __tablename__ = "audit_events"
    __table_args__ = (UniqueConstraint("request_id", "seq"), UniqueConstraint("request_id", "key"))
    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True)
    seq: int
    key: str
    action: str
    actor: str
    detail: str = Field(sa_column=Column(Text, nullable=False))  # canonical JSON
    ip: str | None = None
    user_agent: str | None = None
    document_sha256: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    prev_hash: str
    hash: str


class LocalFlow(SQLModel, table=True):
    """The built-in provider's own state for one flow."""

    __tablename__ = "local_flows"
    flow_id: str = Field(primary_key=True)
    request_id: str = Field(unique=True)
    title: str
    original_sha256: str
    current_blob_key: str
    current_sha256: str
    version: int = 0  # optimistic lock: each signature appends to the version it read
    status: str = "open"  # open | completed | declined | revoked
    expires_at: datetime
    created_at: datetime = Field(default_factory=utcnow)


class LocalDocument(SQLModel, table=True):
    """One document of a built-in flow. Flows made before several documents existed have no rows:
    their one document is `LocalFlow.current_*`, which always mirrors document 0."""

    __tablename__ = "local_documents"
    __table_args__ = (UniqueConstraint("flow_id", "position"),)
    id: int | None = Field(default=None, primary_key=True)
    flow_id: str = Field(index=True)
    position: int
    name: str
    original_sha256: str
    current_blob_key: str
    # JSON {signer id: [page, x1, y1, x2, y2]}: where that signer's signature goes on this document.
    placements: str = Field(default="{}", sa_column=Column(Text, nullable=False, server_default="{}"))


class LocalSigner(SQLModel, table=True):
    __tablename__ = "local_signers"
    __table_args__ = (UniqueConstraint("flow_id", "signer_id"),)
    id: int | None = Field(default=None, primary_key=True)
    flow_id: str = Field(index=True)
    signer_id: str
    name: str
    email: str | None = None
    mobile: str | None = None
    external: bool = False
    group: int
    position: int  # order of this signer in the whole flow: places the visible stamp
    # The organisation this signer signs for, and whether its seal is applied (a second signature).
    org_name: str | None = None
    org_credit_code: str | None = None
    seal: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    seal_kind: str | None = None
    seal_image_key: str | None = None
    token_hash: str | None = Field(default=None, unique=True)
    token_expires_at: datetime | None = None
    status: str = "waiting"  # waiting | open | signed | declined | dead
    acted_at: datetime | None = None
    decline_reason: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    # One-time codes (see `SignCode`): when the last code was sent (one a minute), wrong codes in
    # a row, the end of a lock after too many, and how the signer proved who they were when they
    # signed: "email_code", "sms_code", an SSO method, or "chat_link" (only held the link: codes off, or
    # no contact on record).
    last_code_at: datetime | None = None
    code_failures: int = 0
    locked_until: datetime | None = None
    verification: str | None = None


class SignCode(SQLModel, table=True):
    """A one-time code sent to a signer of the built-in provider. Only its HMAC is kept (keyed by
    the server secret and bound to the signer's row), so the table never holds a usable code."""

    __tablename__ = "sign_codes"
    id: int | None = Field(default=None, primary_key=True)
    signer_row: int = Field(index=True)  # local_signers.id
    channel: str  # email | sms
    sent_to: str  # masked, for the page and the audit trail
    code_hash: str
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    used_at: datetime | None = None


class SsoTicket(SQLModel, table=True):
    """One step of chat single sign-on on a signing link, kept only as the SHA-256 of its secret.

    `kind`: "state" (an OAuth round trip begun: single use, minutes), "session" (the browser that
    finished it is verified as the signer on this link, in a cookie), "assertion" (a webhook IM
    `sso` assertion already redeemed: kept until it expires so it cannot be used twice). Every
    ticket is bound to one signer on one link (`token_hash`).
    """

    __tablename__ = "sso_tickets"
    key_hash: str = Field(primary_key=True, max_length=64)
    kind: str
    platform: str
    flow_id: str = Field(index=True)
    signer_id: str
    token_hash: str = Field(max_length=64)
    subject: str | None = None  # the platform's user id, once known
    subject_name: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    used_at: datetime | None = None


class LocalEvent(SQLModel, table=True):
    """Events the built-in provider emitted: an outbox. The signing page delivers each at once and
    marks it `delivered_at`; what it could not deliver the worker's relay signals again (claiming it
    by `delivery_attempts`, next try at `next_delivery_at`) until it arrives. `poll` replays them."""

    __tablename__ = "local_events"
    event_id: str = Field(primary_key=True)
    flow_id: str = Field(index=True)
    kind: str
    signer_id: str | None = None
    reason: str | None = None
    occurred_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = Field(default=None, index=True)
    delivery_attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    next_delivery_at: datetime | None = None


class ProviderWebhookSeen(SQLModel, table=True):
    """When each provider's last webhook with a valid signature arrived: a poll tells a waiting flow
    that the provider's webhooks work, and the flow stops polling on a timer."""

    __tablename__ = "provider_webhooks_seen"
    provider: str = Field(primary_key=True)
    last_verified_at: datetime


class ChatMessage(SQLModel, table=True):
    """Where a card (or another message we update in place) lives on its platform.

    `ref` holds the platform's handle as JSON: Slack channel + ts, Feishu message_id, DingTalk
    outTrackId, WeCom response_code — whatever the connector needs to update the same message.
    """

    __tablename__ = "chat_messages"
    __table_args__ = (UniqueConstraint("platform", "card_key"),)
    id: int | None = Field(default=None, primary_key=True)
    platform: str
    card_key: str = Field(index=True)
    chat_id: str
    ref: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class SentMessage(SQLModel, table=True):
    """Outbound messages (links, texts, the signed file) by idempotency key: sent once.

    Activities run at least once — a retried local activity, a worker killed after the send, a
    chat that answers after the client gave up — so a send is recorded as in flight (`sending`)
    before it is made and as `sent` once the chat confirmed it (`store.repos.sent_messages` says when
    to send, wait or skip): a duplicate DM is visible to people, a duplicate row is not.
    """

    __tablename__ = "sent_messages"
    __table_args__ = (UniqueConstraint("platform", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    platform: str
    key: str
    chat_id: str
    sent_at: datetime = Field(default_factory=utcnow)  # when it was confirmed (first recorded, for `sending`)
    state: str = Field(default="sent", sa_column_kwargs={"server_default": "sent"})  # sending | sent | failed
    attempts: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    last_attempt_at: datetime | None = None


class InboundEvent(SQLModel, table=True):
    """Chat events stored before they are acknowledged (long connections, stream mode).

    Until the `chat_files` revision, file messages were kept here too (platform "feishu:file",
    "dingtalk:file", and "wecom" rows keyed "file:…"); that migration moved them to `ChatFile`.
    """

    __tablename__ = "inbound_events"
    __table_args__ = (UniqueConstraint("platform", "event_id"),)
    id: int | None = Field(default=None, primary_key=True)
    platform: str
    event_id: str
    payload: str = Field(sa_column=Column(Text, nullable=False))
    status: str = "stored"  # stored | handled | failed
    received_at: datetime = Field(default_factory=utcnow)
    handled_at: datetime | None = None


class ChatFile(SQLModel, table=True):
    """A file someone posted in a chat, so a later command can use it (`store/repos/chat_files.py`).

    `url` is how the platform's connector fetches it again (`DocumentSource.url`); `position`
    orders the files of one message. Looked up by the message a command replies to, or as the
    sender's latest file message in the chat.
    """

    __tablename__ = "chat_files"
    __table_args__ = (
        UniqueConstraint("platform", "tenant", "chat_id", "message_id", "position"),
        Index("ix_chat_files_sender", "platform", "chat_id", "sender_id", "received_at"),
        Index("ix_chat_files_message", "platform", "chat_id", "message_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    platform: str
    tenant: str = ""
    chat_id: str
    sender_id: str
    message_id: str
    position: int = 0
    name: str
    url: str = Field(sa_column=Column(Text, nullable=False))
    sha256: str | None = None
    received_at: datetime = Field(default_factory=utcnow)


class ProviderLink(SQLModel, table=True):
    """A SignBridge-hosted chat link to a provider's short-lived signing page (DocuSign embedded).

    The provider's own URL expires within minutes, so the chat gets a stable link instead; each
    click mints a fresh provider URL. Only the token's SHA-256 is stored (like `LocalSigner`).
    One row per (provider, flow, signer): minting a new link replaces the previous one.
    """

    __tablename__ = "provider_links"
    __table_args__ = (UniqueConstraint("provider", "flow_id", "signer_id"),)
    token_hash: str = Field(primary_key=True, max_length=64)
    provider: str
    flow_id: str = Field(index=True)
    signer_id: str
    expires_at: datetime
    created_at: datetime = Field(default_factory=utcnow)


class SigningLinkRecord(SQLModel, table=True):
    """A signer's signing link, encrypted (`signbridge.link_vault`), one row per (request, signer).

    The link is a bearer secret (the built-in provider's token, an external provider's signing
    URL), so it never travels through Temporal: the `open_group` activity stores it here and
    `send_link` reads it back when it DMs the signer (and again for reminders). The key is
    derived from `SIGNBRIDGE_LINK_SECRET`, so a copy of the database alone holds no usable link.
    """

    __tablename__ = "signing_links"
    __table_args__ = (UniqueConstraint("request_id", "signer_key"),)
    id: int | None = Field(default=None, primary_key=True)
    request_id: str = Field(index=True)
    signer_key: str = Field(max_length=64)  # SHA-256 of the signer id: ids can be long, the index must not be
    sealed_url: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


class ApprovalMapping(SQLModel, table=True):
    """Which approval definition starts signing, and which form fields hold what
    (`signbridge approvals map`). A field is named by its id, custom id or label; `document_fields`
    is comma-separated. `tenant` "" matches every tenant of the platform; `chat_id` "" sends the
    card to the initiator privately."""

    __tablename__ = "approval_mappings"
    __table_args__ = (UniqueConstraint("platform", "tenant", "definition"),)
    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(index=True)
    tenant: str = ""
    definition: str
    document_fields: str
    signer_field: str = ""
    counterparty_field: str = ""
    counterparty_first: bool = False
    chat_id: str = ""
    provider: str = ""  # empty: SIGNBRIDGE_DEFAULT_PROVIDER
    created_at: datetime = Field(default_factory=utcnow)


class ValidatedVersion(SQLModel, table=True):
    """A signed PDF version whose every signature was validated (intact, valid, trusted, no
    disallowed change), keyed by its SHA-256, with the reports (JSON). A later version that extends
    it byte for byte has only its newer signatures validated (`signbridge.pdf.pades.validate_pdf_from`).
    Only fully valid versions are recorded: a row is a proof, never a verdict to re-check."""

    __tablename__ = "validated_versions"
    sha256: str = Field(primary_key=True, max_length=64)
    size: int
    signatures: int
    reports: str  # JSON list of SignatureReport fields
    validated_at: datetime = Field(default_factory=utcnow)
