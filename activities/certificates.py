"""The certificate of completion: built from the request's database record and audit trail.

Never from Temporal: the REST route (`GET …/certificate.pdf`) must produce it a year later, when
the flow's history is long gone. What it reads:

- the `signing_requests` row and its last published view (`snapshot`: title, documents, signers
  with their contacts, status, reason);
- the audit trail (`store.audit`): for each signer every step recorded with their id as actor or
  as `detail.signer` — link sent, page opened, code sent / verified, signed, declined with the
  reason — each with its time, IP and user agent as recorded; and the chain's head hash;
- how each signer was verified: the `method` the signing step recorded (`email_code`,
  `sms_code`, `chat_sso:<platform>`, …), else "signing link" (the built-in provider without a
  recorded method) or the provider's name (an external provider verifies in its own way).

Once made it is stored (blob store + `documents` row) and its hash kept on the request row, so
every later download is the same file the chat received, with the same signature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from activities.deps import Deps
from signbridge.core.models import DocumentInfo, PublishInput, SignerState, SignStatus, StatusView
from signbridge.core.settings import Settings
from signbridge.pdf.certificate import Line
from signbridge.pdf.jobs import certificate_job
from signbridge.pdf.pool import run_job
from store import audit
from store.blobs import BlobStore
from store.repos import documents, signing_records
from store.tables import AuditEvent, Document, SigningRequestRecord

# A certificate can be issued once the request has ended this way (REJECTED: nothing was signed).
CERTIFIABLE = frozenset({SignStatus.COMPLETED, SignStatus.DECLINED, SignStatus.EXPIRED, SignStatus.CANCELLED})

STATUS_LABELS = {
    "COMPLETED": "已完成 Completed", "DECLINED": "已拒签 Declined", "EXPIRED": "已过期 Expired",
    "CANCELLED": "已撤销 Cancelled", "IN_PROGRESS": "签署中 In progress",
    # The flow issues its certificate once every signature is in and the signed files are verified
    # and stored, just before it posts them and reports COMPLETED.
    "FINISHING": "已完成 Completed",
}
SIGNER_LABELS = {"signed": "已签署 Signed", "declined": "已拒签 Declined", "notified": "未签署 Not signed",
                 "waiting": "未轮到 Not reached"}
# Verification methods as the signing steps record them (`detail.method`), in both languages.
METHOD_LABELS = {
    "link": "签署链接 Signing link",
    "chat_link": "签署链接 Signing link",
    "email_code": "邮箱验证码 Email one-time code",
    "sms_code": "短信验证码 SMS one-time code",
    "webhook_sso": "企业 IM 身份断言 Company IM single sign-on",
}
PLATFORM_NAMES = {"feishu": "飞书 Feishu", "dingtalk": "钉钉 DingTalk", "wecom": "企业微信 WeCom",
                  "slack": "Slack", "webhook": "企业 IM Company IM", "lark": "Lark"}
# Steps by audit action. Unknown actions of a signer are listed under their own name.
STEP_LABELS = {
    "signer.link_sent": "链接已发送 Link sent",
    "signer.reminded": "已提醒 Reminder sent",
    "signer.opened": "打开签署页 Opened the signing page",
    "signer.code_sent": "验证码已发送 Code sent",
    "signer.code_verified": "验证码已验证 Code verified",
    "signer.code_failed": "验证码错误 Wrong code",
    "signer.sso_verified": "单点登录已验证 Verified by single sign-on",
    "signer.signed": "已签署 Signed",
    "signer.declined": "拒绝签署 Declined",
    "provider.signed": "服务商回调：已签署 Provider: signed",
    "provider.declined": "服务商回调：拒签 Provider: declined",
    "workflow.signed_event": "已签署 Signed",
    "workflow.declined_event": "拒绝签署 Declined",
}
# Recorded both by the provider (its signing page, or its callback) and by the flow: the flow's is
# shown only when the provider recorded nothing for that signer.
FLOW_ECHOES = {"workflow.signed_event": ("signer.signed", "provider.signed"),
               "workflow.declined_event": ("signer.declined", "provider.declined")}
METHOD_KEYS = ("method", "verification", "verified_by")


class NotCertifiable(Exception):
    """No certificate for this request (yet): `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def mask_mobile(mobile: str) -> str:
    """138****1234: the first three and last four digits of the national number."""
    digits = "".join(ch for ch in mobile if ch.isdigit())
    if mobile.strip().startswith("+86") or (len(digits) == 13 and digits.startswith("86")):
        digits = digits[2:]
    if len(digits) <= 7:
        return "*" * len(digits)
    return f"{digits[:3]}{'*' * (len(digits) - 7)}{digits[-4:]}"


def mask_email(email: str) -> str:
    """w***@x.example: the first character of the local part and the whole domain."""
    local, at, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if at else "***"


def method_label(method: str | None, provider: str) -> str:
    """A method string from the record, readable in both languages."""
    if not method:
        return METHOD_LABELS["link"] if provider == "local" else f"由服务商 {provider} 验证 Verified by {provider}"
    if method in METHOD_LABELS:
        return METHOD_LABELS[method]
    if method.startswith("chat_sso:"):
        platform = method.removeprefix("chat_sso:")
        return f"{PLATFORM_NAMES.get(platform, platform)} 单点登录 single sign-on"
    if method.startswith("provider"):
        name = method.partition(":")[2] or provider
        return f"由服务商 {name} 验证 Verified by {name}"
    return method


def _when(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _detail(row: AuditEvent) -> dict[str, Any]:
    try:
        value = json.loads(row.detail)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _concerns(row: AuditEvent, signer_id: str) -> bool:
    detail = _detail(row)
    return row.actor == signer_id or detail.get("signer") == signer_id or detail.get("signer_id") == signer_id


@dataclass(frozen=True)
class SignerSteps:
    state: SignerState
    rows: list[AuditEvent]

    @property
    def method(self) -> str | None:
        for row in reversed(self.rows):  # the latest step that says how the signer was verified
            detail = _detail(row)
            for key in METHOD_KEYS:
                if isinstance(detail.get(key), str) and detail[key]:
                    return str(detail[key])
        return None


def signer_steps(view: StatusView, trail: list[AuditEvent]) -> list[SignerSteps]:
    result = []
    for state in view.signers:
        rows = [r for r in trail if r.action not in ("group.opened",) and _concerns(r, state.person.id)]
        present = {r.action for r in rows}
        rows = [r for r in rows if not present.intersection(FLOW_ECHOES.get(r.action, ()))]
        result.append(SignerSteps(state, rows))
    return result


def certificate_lines(record: SigningRequestRecord, view: StatusView, trail: list[AuditEvent],
                      names: dict[str, str], issued_at: datetime) -> list[Line]:
    """Everything the certificate says, line by line, in 中文 and English."""
    status = record.status
    chat = PLATFORM_NAMES.get(view.chat.platform, view.chat.platform)
    lines = [
        Line("签署完成证明", size=20),
        Line("Certificate of Completion", size=14, space_before=2),
        Line(f"标题 Title: {view.title}", size=11, space_before=12),
        Line(f"状态 Status: {STATUS_LABELS.get(status, status)}"),
        Line(f"请求编号 Request: {record.request_id}"),
        Line(f"发起人 Initiator: {view.initiator.name}"),
        Line(f"签署服务 Provider: {view.provider}    来源 Chat: {chat}"),
        Line(f"创建 Created: {_when(record.created_at)}    出具 Issued: {_when(issued_at)}"),
    ]
    if view.reason and status not in ("COMPLETED", "FINISHING"):
        lines.append(Line(f"原因 Reason: {view.reason}"))
    originals = view.documents or ([view.document] if view.document else [])
    signed = view.signed_documents or ([view.signed_document] if view.signed_document else [])
    lines.append(Line(f"文件 Documents ({len(originals)})", size=12, space_before=10))
    for index, original in enumerate(originals):
        pages = f"（{original.pages} 页 pages）" if original.pages else ""
        lines.append(Line(f"{index + 1}. {original.name}{pages}", space_before=3))
        lines.append(Line(f"签署前 SHA-256 before: {original.sha256}", size=8, indent=14))
        after = signed[index].sha256 if index < len(signed) else "—"
        lines.append(Line(f"签署后 SHA-256 after:  {after}", size=8, indent=14))
        if index < len(signed):
            lines.append(Line(f"签署后文件 Signed file: {names.get(after, signed[index].name)}", size=8, indent=14,
                              grey=True))
    lines.append(Line(f"签署人 Signers ({len(view.signers)})", size=12, space_before=10))
    for number, steps in enumerate(signer_steps(view, trail), start=1):
        person = steps.state.person
        lines.append(Line(f"{number}. {person.name}" + ("（外部 external）" if person.external else "")
                          + f" — {SIGNER_LABELS.get(steps.state.status, steps.state.status)}", size=10,
                          space_before=6))
        contacts = [c for c in (mask_mobile(person.mobile) if person.mobile else None,
                                mask_email(person.email) if person.email else None) if c]
        lines.append(Line(f"联系方式 Contact: {', '.join(contacts) or '—'}    第 {steps.state.group + 1} 组 "
                          f"group {steps.state.group + 1}", indent=14))
        lines.append(Line(f"验证方式 Verified by: {method_label(steps.method, view.provider)}", indent=14))
        if steps.state.status == "signed" and steps.state.signed_at:
            lines.append(Line(f"签署时间 Signed at: {_when(steps.state.signed_at)}", indent=14))
        for row in steps.rows:
            lines.append(Line(f"· {_when(row.created_at)}  {STEP_LABELS.get(row.action, row.action)}"
                              + _step_extra(row), size=8, indent=14))
            if row.ip or row.user_agent:
                lines.append(Line(f"IP {row.ip or '—'}  UA {row.user_agent or '—'}", size=7, indent=24, grey=True))
    head = trail[-1].hash if trail else audit.GENESIS
    lines += [
        Line("审计记录 Audit trail", size=12, space_before=10),
        Line(f"事件数 Events: {len(trail)}    哈希链完整 Chain intact: "
             f"{'是 yes' if audit.verify_chain(trail) else '否 NO'}"),
        Line("审计链头哈希（出具时）Audit chain head at issue (SHA-256):"),
        Line(head, size=8, indent=14),
        Line("本证明由 SignBridge 根据签署记录生成，并以本安装的证书颁发机构签名；可用 /ca.pem 离线验证签名。",
             size=8, space_before=10, grey=True),
        Line("Issued by SignBridge from the signing record and signed by this installation's certificate "
             "authority; verify its signature offline against /ca.pem.", size=8, grey=True),
    ]
    return lines


def _step_extra(row: AuditEvent) -> str:
    detail = _detail(row)
    if row.action.endswith("declined") and detail.get("reason"):
        return f" — 原因 reason: {detail['reason']}"
    if row.action == "signer.link_sent" and detail.get("reminder"):
        return "（提醒 reminder）"
    return ""


def certificate_name(title: str) -> str:
    return f"{title}-签署完成证明.pdf"


def existing(engine: Any, blobs: BlobStore, request_id: str) -> DocumentInfo | None:
    record = signing_records.get(engine, request_id)
    if record is None or not record.certificate_sha256:
        return None
    row = documents.get(engine, record.certificate_sha256)
    return DocumentInfo(name=row.name if row else certificate_name(record.title), sha256=record.certificate_sha256,
                        blob_key=row.blob_key if row else record.certificate_sha256,
                        size=row.size if row else 0, pages=0)


async def issue(settings: Settings, engine: Any, blobs: BlobStore, request_id: str,
                *, allow_finishing: bool = False) -> DocumentInfo:
    """The request's certificate: the stored one, else made now from the record and stored.

    `allow_finishing`: the flow itself asks, with every signature in and the signed files
    stored, just before it delivers them (its status is still FINISHING)."""
    if (found := existing(engine, blobs, request_id)) is not None:
        return found
    record = signing_records.get(engine, request_id)
    if record is None:
        raise NotCertifiable("not_found", f"No signing request {request_id}")
    view = StatusView.model_validate_json(record.snapshot) if record.snapshot else None
    status = SignStatus(record.status) if record.status in SignStatus.__members__ else None
    ready = status in CERTIFIABLE or (allow_finishing and status == SignStatus.FINISHING)
    if status == SignStatus.REJECTED:
        raise NotCertifiable("rejected", f"The request was rejected before anyone could sign ({record.status}): "
                                         "there is nothing to certify")
    if not ready:
        raise NotCertifiable("not_finished", f"The request is {record.status}: a certificate of completion is "
                                             "issued once it has ended (completed, declined, expired or cancelled)")
    if view is None:
        raise NotCertifiable("no_record", f"The request {request_id} was recorded before SignBridge kept each "
                                          "request's signers in the database: no certificate can be made for it")
    trail = audit.trail_of(engine, request_id)
    signed = view.signed_documents or ([view.signed_document] if view.signed_document else [])
    names = {d.sha256: (documents.name_of(engine, d.sha256) or d.name) for d in signed}
    issued_at = datetime.now(UTC)
    lines = certificate_lines(record, view, trail, names, issued_at)
    data = await run_job(settings.signing_processes, certificate_job, lines, str((settings.data_dir / "ca").resolve()),
                         f"签署完成证明 {view.title}", f"SignBridge · {request_id}", issued_at)
    key = blobs.put(data)
    name = certificate_name(view.title)
    documents.record(engine, Document(sha256=key, name=name, size=len(data), blob_key=key,
                                      source=f"certificate:{request_id}"))
    winner = signing_records.set_certificate(engine, request_id, key)
    if winner is not None and winner != key:  # made at the same moment elsewhere: everyone hands out the first
        return existing(engine, blobs, request_id) or DocumentInfo(name=name, sha256=winner, blob_key=winner,
                                                                   size=0, pages=0)
    audit.record(engine, request_id=request_id, key="certificate", action="certificate.issued", actor="system",
                 detail={"sha256": key, "audit_head": trail[-1].hash if trail else audit.GENESIS,
                         "events": len(trail)}, document_sha256=key)
    return DocumentInfo(name=name, sha256=key, blob_key=key, size=len(data), pages=0)


class CertificateActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name="certify")
    async def certify(self, arg: PublishInput) -> DocumentInfo:
        """Write the flow's state to the database (the last signatures' audit events, the signed
        files in its view), then issue the certificate from the database alone."""
        view = arg.view
        signing_records.publish(self.deps.engine, view.request_id, view.status.value, [
            {"request_id": a.request_id, "key": a.key, "action": a.action, "actor": a.actor, "detail": a.detail,
             "document_sha256": a.document_sha256} for a in arg.audits], snapshot=view.model_dump_json())
        return await issue(self.deps.settings, self.deps.engine, self.deps.blobs, view.request_id,
                           allow_finishing=True)
