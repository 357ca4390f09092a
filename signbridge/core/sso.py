"""Chat single sign-on: what every platform's piece hands over, and the words the page uses.

A signing link opened inside a chat app can prove who opened it without a typed name or a
one-time code: the chat already knows its user. Each platform proves it its own way (Feishu,
DingTalk, WeCom and Slack by OAuth, in `connectors/chat/<platform>/sso.py`; the webhook IM by a
signed assertion, `connectors/chat/webhook/sso.py`); all of them end in a `ChatIdentity`, which
the intake (`signbridge/intake/sso.py`) compares with the link's signer.
"""

from __future__ import annotations

from dataclasses import dataclass

# How people name each platform, for "已通过飞书身份验证：李四".
PLATFORM_WORDS: dict[str, tuple[str, str]] = {
    "feishu": ("飞书", "Feishu"),
    "dingtalk": ("钉钉", "DingTalk"),
    "wecom": ("企业微信", "WeCom"),
    "slack": ("Slack", "Slack"),
    "webhook": ("公司聊天工具", "your company chat"),
}

# What each platform's in-app browser writes in its User-Agent (Feishu/Lark: "Lark/…" and
# "Feishu/…"; DingTalk: "DingTalk/…"; WeCom: "wxwork/…"; Slack's desktop app: "Slack/…").
# A match only decides whether the page starts the platform's sign-in by itself; the sign-in
# proves the identity, never the header.
IN_APP_MARKERS: dict[str, tuple[str, ...]] = {
    "feishu": ("lark/", "feishu"),
    "dingtalk": ("dingtalk/", "aliapp(dingtalk"),
    "wecom": ("wxwork/",),
    "slack": ("slack/", "slack_ssb"),
}


def method(platform: str) -> str:
    """The verification method recorded with a signature: "chat_sso:feishu"."""
    return f"chat_sso:{platform}"


def in_app_browser(user_agent: str | None) -> str | None:
    """The chat platform whose in-app browser sent `user_agent`, if any."""
    ua = (user_agent or "").lower()
    return next((p for p, marks in IN_APP_MARKERS.items() if any(m in ua for m in marks)), None)


@dataclass(frozen=True)
class ChatIdentity:
    """Who the chat platform says opened the link. `user_id` is the id SignBridge's `Person.id`
    carries for that platform (Feishu open_id, DingTalk/WeCom userid, Slack user id, the webhook
    IM's user id); `tenant` the workspace/tenant when the platform says it."""

    platform: str
    user_id: str
    name: str = ""
    tenant: str | None = None


@dataclass(frozen=True)
class SsoProof:
    """A browser verified by chat SSO as `signer_id` on one flow: what the signature records."""

    flow_id: str
    signer_id: str
    platform: str
    subject: str
    name: str

    @property
    def method(self) -> str:
        return method(self.platform)


class SsoRefused(Exception):
    """The sign-in did not prove the signer (bad or used code, someone else, no permission):
    shown on a page in both languages; `code` goes to the audit trail and JSON answers."""

    def __init__(self, code: str, zh: str, en: str) -> None:
        super().__init__(f"{code}: {en}")
        self.code = code
        self.zh = zh
        self.en = en


class SsoUnavailable(Exception):
    """The platform did not answer (network, 5xx, rate limit): try again in a moment."""
