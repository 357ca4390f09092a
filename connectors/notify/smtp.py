"""Email over SMTP (`aiosmtplib`), configured by one URL.

`SIGNBRIDGE_SMTP_URL`: `smtp://user:pass@host:587?starttls=1` (STARTTLS), `smtps://user:pass@host:465`
(TLS from the start) or `smtp://host:25` (a relay on the local network, no login). The sender
address is `SIGNBRIDGE_SMTP_FROM`. Each message carries a `Message-ID` derived from its key, so a
resend after an unknown outcome is recognisable as the same mail.
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from connectors.notify.base import Channel, Notice, NotifyError
from signbridge.core.settings import Settings

TRUE = ("1", "true", "yes", "on")


class SmtpSender:
    name = "smtp"
    channel: Channel = "email"

    def __init__(self, url: str, sender: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SIGNBRIDGE_SMTP_URL must look like smtp://user:pass@host:587?starttls=1 or smtps://…")
        query = parse_qs(parts.query)
        self.host = parts.hostname
        self.use_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.use_tls else 25)
        self.start_tls = (query.get("starttls", ["0"])[0].lower() in TRUE) and not self.use_tls
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout = timeout

    def _message(self, to: str, notice: Notice, key: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = notice.subject
        msg["Date"] = formatdate(localtime=False)
        domain = self.sender.rpartition("@")[2].strip("> ") or "signbridge.local"
        msg["Message-ID"] = make_msgid(idstring=hashlib.sha256(key.encode()).hexdigest()[:24], domain=domain)
        msg.set_content(notice.text)
        return msg

    async def send(self, to: str, notice: Notice, *, key: str) -> None:
        try:
            await aiosmtplib.send(self._message(to, notice, key), hostname=self.host, port=self.port,
                                  username=self.username, password=self.password, use_tls=self.use_tls,
                                  start_tls=self.start_tls if self.start_tls else False, timeout=self.timeout)
        except aiosmtplib.SMTPRecipientsRefused as e:
            raise NotifyError(f"the mail server refused the address: {e}", permanent=True) from e
        except aiosmtplib.SMTPResponseException as e:
            # 4xx: try later (greylisting, a full queue); 5xx: refused for good.
            raise NotifyError(f"the mail server answered {e.code} {e.message}", permanent=e.code >= 500,
                              retry_after=60.0 if e.code == 421 or e.code == 450 else None) from e
        except aiosmtplib.SMTPTimeoutError as e:
            raise NotifyError(f"the mail server did not answer in time: {e}", maybe_delivered=True) from e
        except (aiosmtplib.SMTPException, OSError) as e:
            raise NotifyError(f"the mail server is unreachable: {e}") from e


def build(settings: Settings) -> SmtpSender | None:
    url = settings.smtp_url.get_secret_value()
    if not url:
        return None
    return SmtpSender(url, settings.smtp_from or "SignBridge <signbridge@localhost>", settings.smtp_timeout_seconds)
