"""One neutral status card, built from the workflow's `StatusView`; each chat connector renders it.

Keeping the card platform-neutral means the workflow decides *what* people see once and the
connectors only decide *how* their platform draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from typing import Literal

from signbridge.core.models import SealApproval, SignerState, SignStatus, StatusView
from signbridge.core.orgs import party_label

Lang = Literal["zh", "en"]

_STATUS_TEXT: dict[SignStatus, tuple[str, str]] = {
    SignStatus.PREPARING: ("准备中", "Preparing"),
    SignStatus.IN_PROGRESS: ("签署中", "Waiting for signatures"),
    SignStatus.FINISHING: ("归档中", "Finishing"),
    SignStatus.STUCK: ("处理受阻，正在自动重试", "Stuck — retrying by itself (an operator can retry now)"),
    SignStatus.COMPLETED: ("已完成", "Completed"),
    SignStatus.DECLINED: ("已拒签", "Declined"),
    SignStatus.EXPIRED: ("已过期", "Expired"),
    SignStatus.CANCELLED: ("已撤销", "Cancelled"),
    SignStatus.REJECTED: ("无法发起", "Rejected"),
}

_SIGNER_TEXT: dict[str, tuple[str, str]] = {
    "waiting": ("待轮到", "queued"),
    "notified": ("待签署", "to sign"),
    "signed": ("已签署", "signed"),
    "declined": ("已拒签", "declined"),
}


@dataclass(frozen=True)
class CardSigner:
    name: str
    group: int
    state: str  # waiting | notified | signed | declined | departed (left the company: to replace)
    state_text: str
    external: bool
    signer_id: str = ""
    # An external signer: how their link went out, masked ("链接已通过短信发送给 王总（138****1234）").
    reached: str | None = None


@dataclass(frozen=True)
class CardButton:
    action: Literal["remind", "cancel", "retry", "status", "replace", "approve_seal", "refuse_seal"]
    label: str
    signer_id: str | None = None  # "replace": whose place is taken


@dataclass(frozen=True)
class Card:
    request_id: str
    title: str
    status: SignStatus
    status_text: str
    document_name: str | None
    document_sha256: str | None
    signers: list[CardSigner]
    note: str | None
    buttons: list[CardButton] = field(default_factory=list)
    lang: Lang = "zh"
    # One line per organisation whose seal needs approval: "乙方科技有限公司 用印审批：待审批（印章管理员 赵六）".
    seals: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "request_id": self.request_id,
            "title": self.title,
            "status": self.status.value,
            "status_text": self.status_text,
            "document": {"name": self.document_name, "sha256": self.document_sha256},
            "signers": [
                {"name": s.name, "group": s.group, "state": s.state, "state_text": s.state_text,
                 "external": s.external, **({"signer_id": s.signer_id} if s.signer_id else {}),
                 **({"reached": s.reached} if s.reached else {})}
                for s in self.signers
            ],
            "note": self.note,
            "buttons": [{"action": b.action, "label": b.label, **({"signer_ids": [b.signer_id]} if b.signer_id else {})}
                        for b in self.buttons],
            **({"seals": self.seals} if self.seals else {}),
        }


_BUTTONS: dict[str, tuple[str, str]] = {
    "remind": ("催签", "Remind"),
    "cancel": ("撤销", "Cancel"),
    "retry": ("重试", "Retry"),
    "approve_seal": ("同意用印", "Approve seal"),
    "refuse_seal": ("拒绝", "Refuse seal"),
    "replace": ("替换签署人", "Replace signer"),
}
_DEPARTED = ("已离职，需替换", "left the company — replace them")
_SEAL_TEXT: dict[str, tuple[str, str]] = {
    "waiting": ("待轮到", "queued"),
    "pending": ("待审批", "awaiting approval"),
    "approved": ("已同意", "approved"),
    "refused": ("已拒绝", "refused"),
}


def seal_line(a: SealApproval, lang: Lang = "zh") -> str:
    i = 0 if lang == "zh" else 1
    keepers = "、".join(a.keepers)
    decided = f"，{a.by}" if a.by and lang == "zh" else (f", by {a.by}" if a.by else "")
    if lang == "zh":
        return f"{a.org} 用印审批：{_SEAL_TEXT[a.status][i]}{decided}（印章管理员 {keepers}）"
    return f"{a.org} seal-use approval: {_SEAL_TEXT[a.status][i]}{decided} (seal keepers {keepers})"


_CHANNEL_TEXT = {"sms": ("短信", "SMS"), "email": ("邮件", "email")}


def reached_text(name: str, channel: str, masked: str, lang: Lang = "zh") -> str:
    """How an external signer's link went out, never their full number or address."""
    zh, en = _CHANNEL_TEXT.get(channel, (channel, channel))
    return f"链接已通过{zh}发送给 {name}（{masked}）" if lang == "zh" else f"link sent to {name} by {en} ({masked})"


def _signer_text(s: SignerState, i: int, lang: Lang, reached: tuple[str, str] | None) -> str:
    text = _SIGNER_TEXT[s.status][i]
    if s.status == "notified" and s.locked_until is not None:
        at = s.locked_until.astimezone(UTC).strftime("%H:%M")
        text += (f"（验证码错误次数过多，链接锁定至 {at} UTC）" if lang == "zh"
                 else f" (too many wrong codes: link locked until {at} UTC)")
    if reached and s.status != "signed":
        zh, en = _CHANNEL_TEXT.get(reached[0], reached)
        text += f" · 链接已通过{zh}发送（{reached[1]}）" if lang == "zh" else f" · link sent by {en} ({reached[1]})"
    return text


def build_card(view: StatusView, lang: Lang = "zh", reached: dict[str, tuple[str, str]] | None = None) -> Card:
    """`reached`: external signer id → (channel, masked address) of the link sent to them."""
    i = 0 if lang == "zh" else 1
    reached = reached or {}
    status = view.status
    buttons: list[CardButton] = []
    if status == SignStatus.IN_PROGRESS:
        buttons = [CardButton("remind", _BUTTONS["remind"][i]), CardButton("cancel", _BUTTONS["cancel"][i])]
        buttons += [CardButton("replace", f"{_BUTTONS['replace'][i]}：{s.person.name}" if i == 0 else
                               f"{_BUTTONS['replace'][i]}: {s.person.name}", signer_id=s.person.id)
                    for s in view.signers if s.departed and s.status in ("waiting", "notified")]
    elif status == SignStatus.STUCK:
        buttons = [CardButton("retry", _BUTTONS["retry"][i]), CardButton("cancel", _BUTTONS["cancel"][i])]
    if status == SignStatus.IN_PROGRESS and any(a.status == "pending" for a in view.seal_approvals):
        buttons = [CardButton("approve_seal", _BUTTONS["approve_seal"][i]),
                   CardButton("refuse_seal", _BUTTONS["refuse_seal"][i]), *buttons]
    doc = view.signed_document or view.document
    seals = [seal_line(a, lang) for a in view.seal_approvals]
    return Card(
        request_id=view.request_id,
        title=view.title,
        status=status,
        status_text=_STATUS_TEXT[status][i],
        document_name=document_text(view, lang) if doc else None,
        document_sha256=doc.sha256 if doc else None,
        signers=[
            CardSigner(party_label(s.person, lang), s.group, "departed", _DEPARTED[i], s.person.external, s.person.id)
            if s.departed and s.status in ("waiting", "notified") else
            CardSigner(party_label(s.person, lang), s.group, s.status,
                       _signer_text(s, i, lang, reached.get(s.person.id)), s.person.external, s.person.id,
                       reached_text(s.person.name, *reached[s.person.id], lang) if s.person.id in reached else None)
            for s in view.signers
        ],
        # Every platform draws the note, so the seal-use approvals go there too.
        note="\n".join(x for x in [view.reason or _approval_note(view, lang), *seals] if x) or None,
        buttons=buttons,
        lang=lang,
        seals=seals,
    )


def _approval_note(view: StatusView, lang: Lang) -> str | None:
    """Where a request from an approval came from, so the card ties the chat to the approval."""
    if view.approval is None:
        return None
    label = view.approval.title or view.approval.instance_id
    return f"来自审批「{label}」（{view.approval.instance_id}）" if lang == "zh" else \
        f"From the approval “{label}” ({view.approval.instance_id})"


def document_text(view: StatusView, lang: Lang = "zh") -> str | None:
    """The card's document line: the name; "已转换为 PDF（3 页）" for a converted Office file;
    "3 份文件：…" for several."""
    docs = view.signed_documents or view.documents
    doc = view.signed_document or view.document
    if len(docs) > 1:
        names = ("、" if lang == "zh" else ", ").join(d.name for d in docs)
        return f"{len(docs)} 份文件：{names}" if lang == "zh" else f"{len(docs)} files: {names}"
    if doc is None:
        return None
    if doc.converted_from:
        return (f"{doc.name}（由 {doc.converted_from} 已转换为 PDF（{doc.pages} 页））" if lang == "zh"
                else f"{doc.name} (converted to PDF from {doc.converted_from}, {doc.pages} pages)")
    return doc.name


def status_text(status: SignStatus, lang: Lang = "zh") -> str:
    return _STATUS_TEXT[status][0 if lang == "zh" else 1]
