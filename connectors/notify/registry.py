"""Which sender reaches whom, from the settings (`SIGNBRIDGE_SMTP_*`, `SIGNBRIDGE_ALIYUN_SMS_*`,
`SIGNBRIDGE_TENCENT_SMS_*`).

A person with a mobile number gets SMS when an SMS service is configured, else email when they
have an address and SMTP is configured. In development, a channel with no service configured is
served by the development sender (`dev.py`: the log and the development mailbox), so `make run`
works with nothing set up; in production it stays unavailable and callers say so in words.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from connectors.notify import aliyun_sms, smtp, tencent_sms
from connectors.notify.base import Channel, Notice, Sender
from connectors.notify.dev import DevSender
from signbridge.core.settings import DEVELOPMENT, Settings
from signbridge.core.signers import mask_email, mask_mobile

CODE_MINUTES = 10


@dataclass(frozen=True)
class Route:
    """How one person is reached: the sender, the address it sends to, and that address masked."""

    sender: Sender
    to: str
    masked: str

    @property
    def channel(self) -> Channel:
        return self.sender.channel


@dataclass
class Notifier:
    email: Sender | None = None
    sms: Sender | None = None

    def route(self, email: str | None, mobile: str | None) -> Route | None:
        """SMS to the mobile if possible, else email to the address; None when neither can be reached."""
        if mobile and self.sms is not None:
            return Route(self.sms, mobile, mask_mobile(mobile))
        if email and self.email is not None:
            return Route(self.email, email, mask_email(email))
        return None

    @property
    def channels(self) -> list[Channel]:
        pairs: list[tuple[Channel, Sender | None]] = [("email", self.email), ("sms", self.sms)]
        return [c for c, s in pairs if s is not None]


def build_notifier(settings: Settings, http: httpx.AsyncClient) -> Notifier:
    email: Sender | None = smtp.build(settings)
    sms_senders: dict[str, Sender | None] = {"aliyun": aliyun_sms.build(settings, http),
                                              "tencent": tencent_sms.build(settings, http)}
    preferred = settings.sms_provider.strip().lower()
    sms = sms_senders.get(preferred) or sms_senders["aliyun"] or sms_senders["tencent"]
    if settings.environment == DEVELOPMENT:
        email = email or DevSender(settings, "email")
        sms = sms or DevSender(settings, "sms")
    return Notifier(email=email, sms=sms)


def code_notice(code: str, minutes: int = CODE_MINUTES) -> Notice:
    return Notice(
        purpose="code", subject=f"SignBridge 签署验证码 {code} / signing code",
        text=(f"您的签署验证码是 {code}，{minutes} 分钟内有效。请勿告诉他人。\n"
              f"Your SignBridge signing code is {code}. It is valid for {minutes} minutes; do not share it."),
        params={"code": code})


def link_notice(name: str, title: str, url: str, reminder: bool = False) -> Notice:
    zh = "提醒：" if reminder else ""
    en = "Reminder: " if reminder else ""
    return Notice(
        purpose="link", subject=f"{zh}请签署「{title}」/ {en}please sign “{title}”",
        text=(f"{name}，您好：\n{zh}请签署「{title}」：{url}\n打开链接后，我们会向您发送验证码以确认身份。\n\n"
              f"{en}Please sign “{title}”: {url}\nWhen you open the link we send you a code to confirm it is you."),
        params={"name": name, "title": title, "url": url})


def copy_notice(name: str, title: str, files: list[tuple[str, str]]) -> Notice:
    """An external signer's copy of what they signed, by email: each file (and the certificate of
    completion) as its signed download link, since they have no chat to receive the files in."""
    lines = "\n".join(f"{file_name}: {url}" for file_name, url in files)
    return Notice(
        purpose="copy", subject=f"「{title}」已签署完成 / “{title}” is signed",
        text=(f"{name}，您好：\n「{title}」已由所有签署人签署完成，文件如下（链接有时效，请及时下载）：\n{lines}\n\n"
              f"“{title}” has been signed by everyone. Your copy (the links expire; download them soon):\n{lines}"),
        params={"name": name, "title": title, "files": lines})
