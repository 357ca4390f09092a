"""Approvals that become signing tasks: the neutral shapes and the one mapping from a form to signers.

An internal approval (Feishu approval v4, DingTalk OA, WeCom 审批, or the webhook IM's own
workflow system) passes; SignBridge turns it into one `SigningRequest` and, when the flow ends,
writes the result back to the approval. The pieces, bottom up:

* `ApprovalRef` travels inside the `SigningRequest` (`approval`): which instance, of which
  definition, who started it, and the mapping that was configured when the event came in (so a
  mapping changed later cannot change a running flow). The flow's id comes from the instance id
  (`request_id_for(platform, tenant, "approval-<instance>")`), so an event delivered twice
  starts one flow.
* `ApprovalForm` is what a platform's connector reads back from the platform (`read_approval`):
  the instance's status and its form fields, each already normalised to files, people or text.
* `content_of(form, ref)` is the mapping, written once for every platform: the document fields'
  files, the signers field's people (one group, in parallel), the counterparty field's external
  parties (`名称 email-or-mobile` per line, the next group). Whatever is missing is the user's
  input to fix (`ApprovalProblem`, a bilingual reason): the flow says it and ends REJECTED.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from signbridge.core.models import ApprovalRef, DocumentInfo, DocumentSource, Person

APPROVAL_EVENT_PREFIX = "approval-"


def approval_event_id(instance_id: str) -> str:
    """The `source_event_id` of an approval's flow: the instance, not the delivery, names it."""
    return f"{APPROVAL_EVENT_PREFIX}{instance_id}"


class FormField(BaseModel):
    """One field of an approval form, normalised: `keys` are every name it may be mapped by (its id,
    custom id, label); a file field has `files`, a contact field `people`, any other `text`."""

    keys: list[str]
    kind: Literal["file", "contact", "text", "other"] = "other"
    files: list[DocumentSource] = Field(default_factory=list)
    people: list[Person] = Field(default_factory=list)
    text: str = ""


class ApprovalForm(BaseModel):
    """An approval instance as its platform shows it now."""

    instance_id: str
    definition: str = ""
    approved: bool
    status: str = ""  # the platform's own word for it (APPROVED, COMPLETED/agree, 2, …)
    title: str = ""
    initiator_id: str = ""
    fields: list[FormField] = Field(default_factory=list)


class ApprovalContent(BaseModel):
    """What `read_approval` hands the workflow: the documents and signers the approval names, who
    started it (Feishu's event does not say), or the `problem` the initiator must fix."""

    title: str
    documents: list[DocumentSource] = Field(default_factory=list)
    groups: list[list[Person]] = Field(default_factory=list)
    initiator: Person | None = None
    problem: str | None = None


class ApprovalResultInput(BaseModel):
    """The flow's end, to write back to its approval (`approval_result` activity, once per flow)."""

    request_id: str
    approval: ApprovalRef
    chat_platform: str
    chat_id: str
    chat_kind: Literal["group", "direct"] = "group"
    status: str  # the flow's terminal status
    title: str
    reason: str | None = None
    initiator: Person
    signed: list[DocumentInfo] = Field(default_factory=list)


@dataclass(frozen=True)
class ApprovalResult:
    """What a connector writes back: the text (in the chat's language), the signed files' links."""

    status: str
    text: str
    files: tuple[tuple[str, str, str], ...] = ()  # (name, url, sha256)
    request_id: str = ""
    initiator_id: str = ""  # who started the approval (Feishu's comment needs an author)


class ApprovalProblem(Exception):
    """The approval cannot become a signing task as it is (no attachment, no signer, not approved)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _find(form: ApprovalForm, key: str) -> FormField | None:
    wanted = key.strip().casefold()
    return next((f for f in form.fields if any(k.strip().casefold() == wanted for k in f.keys if k)), None)


_ENTRY_SPLIT = re.compile(r"[\n;；]+")
_EMAIL = re.compile(r"[^\s<>()（）,，]+@[^\s<>()（）,，]+\.[^\s<>()（）,，]+")
_MOBILE = re.compile(r"(?:\+\d{1,3}[ -]?)?\d[\d-]{6,}\d")  # spaces only after a country code


def counterparties(text: str) -> list[Person]:
    """`客户A a@customer.example` / `客户B +8613800000000`, one per line (or `;`): external signers.
    An entry without an email or a mobile cannot be reached: `ApprovalProblem`."""
    people: list[Person] = []
    for raw in _ENTRY_SPLIT.split(text):
        entry = raw.strip()
        if not entry:
            continue
        email = _EMAIL.search(entry)
        mobile = None if email else _MOBILE.search(entry)
        contact = email or mobile
        if contact is None:
            raise ApprovalProblem(f"对方签署人「{entry}」没有邮箱或手机号（The counterparty “{entry}” has neither an "
                                  "email nor a mobile number）")
        name = (entry[:contact.start()] + entry[contact.end():]).strip(" \t,，:：<>()（）") or contact.group(0)
        value = contact.group(0).replace(" ", "").replace("-", "")
        digest = hashlib.sha256(value.casefold().encode()).hexdigest()[:16]
        people.append(Person(id=f"x-{digest}", name=name, external=True,
                             email=value if email else None, mobile=None if email else value))
    return people


def content_of(form: ApprovalForm, ref: ApprovalRef) -> ApprovalContent:
    """The mapping: documents from the document fields, signers from the signers field, then the
    counterparties. Raises `ApprovalProblem` with what the initiator must fix."""
    label = ref.title or form.title or ref.instance_id
    if not form.approved:
        raise ApprovalProblem(f"审批「{label}」尚未通过（状态 {form.status}），不会发起签署"
                              f"（The approval “{label}” is not approved (status {form.status}); nothing is signed）")
    documents: list[DocumentSource] = []
    for key in ref.document_fields:
        found = _find(form, key)
        if found is not None:
            documents += found.files
    if not documents:
        fields = "、".join(ref.document_fields) or "-"
        raise ApprovalProblem(f"审批「{label}」的附件字段（{fields}）中没有文件（The approval “{label}” has no "
                              f"attachment in its document field {fields}）")
    signers_field = _find(form, ref.signer_field) if ref.signer_field else None
    signers = list(dict.fromkeys(p.id for p in signers_field.people)) if signers_field else []
    by_id = {p.id: p for p in signers_field.people} if signers_field else {}
    internal = [by_id[i] for i in signers]
    external: list[Person] = []
    if ref.counterparty_field and (field := _find(form, ref.counterparty_field)) is not None:
        external = field.people or counterparties(field.text)
    if not internal and not external:
        raise ApprovalProblem(f"审批「{label}」没有填写签署人（字段 {ref.signer_field or '-'}）"
                              f"（The approval “{label}” names no signer in its field {ref.signer_field or '-'}）")
    groups = [g for g in ([external, internal] if ref.counterparty_first else [internal, external]) if g]
    return ApprovalContent(title=ref.title or form.title or documents[0].name, documents=documents, groups=groups,
                           initiator=initiator_of(form, ref))


def initiator_of(form: ApprovalForm, ref: ApprovalRef) -> Person | None:
    """Who started the approval: the platform's instance says it, else the event did."""
    user = form.initiator_id or ref.initiator_id
    return Person(id=user, name=user) if user else None
