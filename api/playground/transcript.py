"""The playground chat's memory: what people said, SignBridge's answers and everything it posted
back, plus the files people dropped — all under `<data dir>/playground/`, nothing elsewhere.

A transcript is an append-only JSON-lines file of entries numbered from 1 (`seq`), kept in memory
too: the page draws it all on load and then follows new entries as they come (`wait`). The file,
not the memory, is the truth: the API runs as several processes (`SIGNBRIDGE_API_PROCESSES`), and
an outbound post may land in one while the page follows another. So every append takes an
exclusive `flock` on the file and numbers its entry after the last line there, and every read
first picks up the lines other processes appended (a size check when nothing changed). It is the
chat's own record, not SignBridge's: SignBridge keeps its state in its database and Temporal, and
the playground only sees what the webhook IM protocol shows a company chat.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from signbridge.core.links import download_name
from store.files import private_dir, private_file

Entry = dict[str, Any]
FOLLOW_POLL = 0.25  # seconds between looks at the file for other processes' entries


class Transcript:
    def __init__(self, root: Path) -> None:
        self.root = private_dir(root)
        self.files = private_dir(root / "files")
        self.path = private_file(root / "transcript.jsonl")
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._read_to = 0  # bytes of the file already in `_entries`
        self._changed = asyncio.Event()
        self._sync()

    def _sync(self) -> None:
        """Take in the lines appended since the last read (by this process or another)."""
        with self._lock:
            if self.path.stat().st_size == self._read_to:
                return
            with self.path.open("rb") as f:
                f.seek(self._read_to)
                data = f.read()
            complete = data[:data.rfind(b"\n") + 1]  # a line being written by another process waits
            self._entries.extend(json.loads(line) for line in complete.decode("utf-8").splitlines() if line)
            self._read_to += len(complete)

    @property
    def entries(self) -> list[Entry]:
        self._sync()
        return self._entries

    def append(self, kind: str, **fields: Any) -> Entry:
        """Record one entry and wake whoever follows the transcript (call it on the event loop)."""
        with self.path.open("a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            self._sync()
            with self._lock:
                entry = {"seq": len(self._entries) + 1, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                         "kind": kind, **fields}
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
                f.flush()
        self._sync()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return entry

    def since(self, seq: int) -> list[Entry]:
        return self.entries[max(seq, 0):]

    def get(self, seq: int) -> Entry | None:
        entries = self.entries
        return entries[seq - 1] if 0 < seq <= len(entries) else None

    def seen(self, idempotency_key: str) -> bool:
        """SignBridge sent this outbound call already (a retry whose first answer it did not get)."""
        return any(e.get("body", {}).get("idempotency_key") == idempotency_key
                   for e in self.entries if e["kind"] == "outbound")

    async def wait(self, seq: int, timeout: float) -> None:
        """Until there is an entry after `seq`, or `timeout` seconds passed. An append in this
        process wakes the waiter at once; one in another process is seen within `FOLLOW_POLL`."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while len(self.entries) <= seq:
            left = until - loop.time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, FOLLOW_POLL))
            except TimeoutError:
                pass

    # ---- files -------------------------------------------------------------------------------

    def keep_file(self, name: str, data: bytes) -> Entry:
        """Store a dropped file under its content hash; returns what a message carries about it."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.files / digest
        if not path.exists():
            tmp = self.files / f".{digest}.tmp"
            private_file(tmp).write_bytes(data)
            os.replace(tmp, path)
        return {"id": digest[:32], "name": download_name(name, "file.pdf"), "sha256": digest, "size": len(data)}

    def file(self, file_id: str) -> bytes | None:
        if len(file_id) != 32 or not all(c in "0123456789abcdef" for c in file_id):
            return None
        found = next(iter(self.files.glob(f"{file_id}*")), None)
        return found.read_bytes() if found is not None and not found.name.startswith(".") else None
