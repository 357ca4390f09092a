"""Every text SignBridge posts into a chat, by message kind, in Chinese and English.

The workflow decides *that* something is said (a kind and its parameters: who declined, the
title, the reason); the chat activity decides *how*, in the chat's language
(`Settings.language_for`: Chinese on the Chinese platforms and the webhook IM, English on
Slack, `SIGNBRIDGE_CARD_LANGUAGE` overrides). So the words can change, or a language be added,
without touching the workflow or the histories of running flows.

The Chinese texts keep an English gloss where a non-Chinese reader may get them (links).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

Lang = Literal["zh", "en"]

# kind -> language -> template; `{name}` placeholders are filled from the message's params.
TEMPLATES: dict[str, dict[Lang, str]] = {
    "rejected": {
        "zh": "无法发起签署：{reason}",
        "en": "The signing request could not be started: {reason}",
    },
    "declined": {
        "zh": "{who} 拒绝签署「{title}」。原因：{reason}",
        "en": "{who} declined to sign “{title}”. Reason: {reason}",
    },
    "seal_approval": {
        "zh": "用印审批：{requester} 申请在「{title}」（文件 {document}）上加盖「{org}」的{seal}，由 {signatory} 代签；"
              "相对方：{counterparties}。请在群内签署卡片上点「同意用印」或「拒绝」。",
        "en": "Seal-use approval: {requester} asks to apply the {seal} of {org} to “{title}” (document {document}), "
              "signed by {signatory}; counterparties: {counterparties}. Approve or refuse on the signing card.",
    },
    "seal_refused": {
        "zh": "{who} 拒绝为「{title}」加盖「{org}」的印章，签署已终止。原因：{reason}",
        "en": "{who} refused to apply the seal of {org} to “{title}”; the request has ended. Reason: {reason}",
    },
    "expired": {
        "zh": "「{title}」已过签署期限，流程已关闭。",
        "en": "“{title}” passed its signing deadline; the request is closed.",
    },
    "sign": {
        "zh": "请签署「{title}」：{url}（please sign “{title}”）",
        "en": "please sign “{title}”: {url}",
    },
    "sign_reminder": {
        "zh": "提醒：请签署「{title}」：{url}（Reminder: please sign “{title}”）",
        "en": "Reminder: please sign “{title}”: {url}",
    },
    "sign_by_provider": {
        "zh": "请签署「{title}」，签署邀请已由签署服务发送"
              "（please sign “{title}”; the provider has sent you the invitation）",
        "en": "please sign “{title}”; the e-signature provider has sent you the invitation",
    },
    "sign_by_provider_reminder": {
        "zh": "提醒：请签署「{title}」，签署邀请已由签署服务发送"
              "（Reminder: please sign “{title}”; the provider has sent you the invitation）",
        "en": "Reminder: please sign “{title}”; the e-signature provider has sent you the invitation",
    },
    "file_too_large": {
        "zh": "文件超过{platform} {mb} MB 上限，请用链接下载"
              "（larger than the {mb} MB limit: download it from the link）",
        "en": "The file is larger than {platform}'s {mb} MB limit: download it from the link",
    },
    "file_upload_refused": {
        "zh": "{platform}未接受文件上传，请用链接下载（the upload was refused: download it from the link）",
        "en": "{platform} refused the upload: download the file from the link",
    },
    "cc_files": {
        "zh": "抄送给您的「{title}」已签署完成，文件如下（signed copy for you）",
        "en": "A signed copy of “{title}” for you",
    },
    "signer_departed": {
        "zh": "{who} 已离职或账号已停用，无法签署「{title}」。请在卡片上点「替换签署人」指定新的签署人"
              "（{who} has left the company and cannot sign “{title}”: replace them from the card）",
        "en": "{who} has left the company and cannot sign “{title}”. Use “Replace signer” on the card "
              "to name who signs instead.",
    },
    "replace_refused": {
        "zh": "无法替换签署人 {who}：{reason}",
        "en": "Could not replace {who}: {reason}",
    },
    "paused": {
        "zh": "电子签暂停：{reason}，请按线下流程签署（e-signing is paused: {reason}; please sign on paper）",
        "en": "E-signing is paused: {reason}. Please use the offline signing process.",
    },
    "search_results": {
        "zh": "与「{words}」相关的签署请求（仅您可见）：\n{rows}",
        "en": "Signing requests matching “{words}” (only you can see this):\n{rows}",
    },
    "search_empty": {
        "zh": "没有找到与「{words}」相关、您可以查看的签署请求。",
        "en": "No signing request you may see matches “{words}”.",
    },
    "approval_completed": {
        "zh": "「{title}」已签署完成（SignBridge {request}）：{files}",
        "en": "“{title}” is signed (SignBridge {request}): {files}",
    },
    "approval_ended": {
        "zh": "「{title}」未完成签署（{status}）：{reason}（SignBridge {request}）",
        "en": "“{title}” was not signed ({status}): {reason} (SignBridge {request})",
    },
    "bulk_rejected": {
        "zh": "批量发送无法开始：{reason}",
        "en": "The bulk send could not start: {reason}",
    },
}

# Said instead of an empty parameter.
UNSAID: dict[Lang, str] = {"zh": "未说明", "en": "none given"}


class UnknownMessage(LookupError):
    """A kind (or a placeholder) the catalogue does not have: a bug, not bad input."""


# How each chat platform is named in the texts above (Chinese, English).
PLATFORM_NAMES: dict[str, tuple[str, str]] = {
    "feishu": ("飞书", "Feishu"), "dingtalk": ("钉钉", "DingTalk"), "wecom": ("企业微信", "WeCom"),
    "slack": ("Slack", "Slack"), "webhook": ("企业 IM", "the company IM"),
}


def file_too_large(platform: str, limit_bytes: int, lang: Lang) -> str:
    """Why a file went as a link: "文件超过飞书 30 MB 上限，请用链接下载"."""
    return render("file_too_large", {"platform": platform_name(platform, lang),
                                     "mb": str(limit_bytes // (1024 * 1024))}, lang)


def upload_refused(platform: str, lang: Lang) -> str:
    return render("file_upload_refused", {"platform": platform_name(platform, lang)}, lang)


def platform_name(platform: str, lang: Lang) -> str:
    zh, en = PLATFORM_NAMES.get(platform, (platform, platform))
    return zh if lang == "zh" else en


def render(kind: str, params: Mapping[str, str], lang: Lang) -> str:
    """The text of one message kind in `lang`; empty parameters read as "not given"."""
    try:
        template = TEMPLATES[kind][lang]
    except KeyError:
        raise UnknownMessage(f"no {lang} text for message kind {kind!r}") from None
    values = {k: v if v else UNSAID[lang] for k, v in params.items()}
    try:
        return template.format_map(values)
    except KeyError as e:
        raise UnknownMessage(f"message kind {kind!r} needs parameter {e.args[0]!r}") from None


def link_message(title: str, url: str | None, lang: Lang, reminder: bool = False) -> str:
    """The direct message that carries a signer's link (or says the provider sent the invitation)."""
    kind = ("sign" if url else "sign_by_provider") + ("_reminder" if reminder else "")
    return render(kind, {"title": title, "url": url or ""}, lang)
