"""The playground chat's memory: what people said, SignBridge's answers and everything it posted
back, plus the files people dropped — all under `<data dir>/playground/`, nothing elsewhere.

A transcript is an append-only JSON-lines file of entries numbered from 1 (`seq`), kept in memory
too: the page draws it all on load and then follows new entries as they come (`wait`). It is the
chat's own record, not SignBridge's: SignBridge keeps its state in its database and Temporal, and
the playground only sees what the webhook IM protocol shows a company chat.
"""

from __future__ import annotations

import asyncio
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


class Transcript:
    def __init__(self, root: Path) -> None:
        self.root = private_dir(root)
        self.files = private_dir(root / "files")
        self.path = private_file(root / "transcript.jsonl")
        self._lock = threading.Lock()
        self.entries: list[Entry] = [json.loads(line) for line in self.path.read_text("utf-8").splitlines() if line]
        self._changed = asyncio.Event()

    def append(self, kind: str, **fields: Any) -> Entry:
        """Record one entry and wake whoever follows the transcript (call it on the event loop)."""
        with self._lock:
            entry = {"seq": len(self.entries) + 1, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                     "kind": kind, **fields}
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self.entries.append(entry)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return entry

    def since(self, seq: int) -> list[Entry]:
        return self.entries[max(seq, 0):]

    def get(self, seq: int) -> Entry | None:
        return self.entries[seq - 1] if 0 < seq <= len(self.entries) else None

    def seen(self, idempotency_key: str) -> bool:
        """SignBridge sent this outbound call already (a retry whose first answer it did not get)."""
        return any(e.get("body", {}).get("idempotency_key") == idempotency_key
                   for e in self.entries if e["kind"] == "outbound")

    async def wait(self, seq: int, timeout: float) -> None:
        """Until there is an entry after `seq`, or `timeout` seconds passed."""
        if len(self.entries) > seq:
            return
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
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
