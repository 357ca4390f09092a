"""Development only: a sender that sends nothing.

When no email or SMS service is configured and `SIGNBRIDGE_ENVIRONMENT` is `development`, codes
and links are written to the log with a "DEVELOPMENT ONLY" line, and appended to a development
mailbox (`<data dir>/dev-outbox.jsonl`) that the playground shows and `signbridge demo` reads.
Never built outside development: there a missing sender is a configuration problem, said in words.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from connectors.notify.base import Channel, Notice
from signbridge.core.settings import Settings
from signbridge.core.signers import mask_email, mask_mobile
from store.tables import utcnow

log = logging.getLogger("signbridge.notify.dev")
OUTBOX = "dev-outbox.jsonl"
_LOCK = threading.Lock()


def outbox_path(settings: Settings) -> Path:
    return settings.data_dir / OUTBOX


class DevSender:
    name = "development"

    def __init__(self, settings: Settings, channel: Channel) -> None:
        self.path = outbox_path(settings)
        self.channel = channel

    async def send(self, to: str, notice: Notice, *, key: str) -> None:
        shown = mask_mobile(to) if self.channel == "sms" else mask_email(to)
        log.warning("DEVELOPMENT ONLY — nothing was sent (no %s service is configured): %s to %s: %s",
                    "SMS" if self.channel == "sms" else "email", notice.purpose, shown, notice.text)
        entry = {"at": utcnow().isoformat(), "channel": self.channel, "to": to, "purpose": notice.purpose,
                 "subject": notice.subject, "text": notice.text, "params": notice.params, "key": key}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with _LOCK:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


def read_outbox(settings: Settings, to: str | None = None, after: int = 0) -> list[dict[str, Any]]:
    """The development mailbox, oldest first, each entry numbered (`seq`); only `to`'s if given."""
    path = outbox_path(settings)
    if not path.is_file():
        return []
    entries = []
    # Each entry is appended as one line ending in "\n"; what follows the last "\n" is an entry
    # another process is still writing: read it next time, whole.
    complete = path.read_bytes().split(b"\n")[:-1]
    for seq, raw in enumerate(complete, start=1):
        line = raw.decode("utf-8")
        if seq <= after or not line.strip():
            continue
        entry = json.loads(line)
        if to is None or entry["to"] == to:
            entries.append({"seq": seq, **entry})
    return entries
