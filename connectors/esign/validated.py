"""Which signed versions were validated already, so `finish` validates only what is new.

The built-in provider makes one version per signature, each the previous one plus an incremental
update. The signing page validates the new signature right after making it, on top of the
version it signed (`signbridge.pdf.jobs.sign_job`), and records the result here; `finish` then
looks for the longest recorded version its file starts with and validates only what follows
(`signbridge.pdf.pades.validate_pdf_from`). A file that extends no recorded version gets the
full validation, and its result is recorded in turn.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re

from sqlalchemy.engine import Engine

from signbridge.pdf.pades import SignatureReport, ValidatedBase, Validation
from store.repos import validated_versions
from store.tables import ValidatedVersion

# Where a revision of a PDF may end: "%%EOF", then an optional end of line.
_EOF = re.compile(rb"%%EOF(\r\n|\r|\n)?")


def _report_json(r: SignatureReport) -> dict[str, object]:
    return {"field_name": r.field_name, "signer_name": r.signer_name, "intact": r.intact, "valid": r.valid,
            "trusted": r.trusted, "coverage": r.coverage, "modification_ok": r.modification_ok,
            "signed_at": r.signed_at.isoformat() if r.signed_at else None}


def _report(d: dict[str, object]) -> SignatureReport:
    signed_at = d.get("signed_at")
    return SignatureReport(field_name=str(d["field_name"]), signer_name=str(d["signer_name"]),
                           intact=bool(d["intact"]), valid=bool(d["valid"]), trusted=bool(d["trusted"]),
                           coverage=str(d["coverage"]), modification_ok=bool(d["modification_ok"]),
                           signed_at=dt.datetime.fromisoformat(signed_at) if isinstance(signed_at, str) else None)


def revision_ends(data: bytes) -> dict[str, int]:
    """SHA-256 → length of every prefix of `data` that ends a revision ("%%EOF" and what may follow
    it), the whole file included; one pass of hashing however many revisions there are."""
    ends = sorted({m.end() for m in _EOF.finditer(data)} | {m.start() + 5 for m in _EOF.finditer(data)}
                  | {len(data)})
    digest, done, found = hashlib.sha256(), 0, {}
    for end in ends:
        digest.update(data[done:end])
        done = end
        found[digest.copy().hexdigest()] = end
    return found


def base_for(engine: Engine, data: bytes) -> ValidatedBase | None:
    """The longest validated version `data` starts with, if any."""
    ends = revision_ends(data)
    rows = validated_versions.find(engine, ends)
    if not rows:
        return None
    best = max(rows, key=lambda row: ends[row.sha256])
    return ValidatedBase(size=ends[best.sha256], sha256=best.sha256,
                         reports=tuple(_report(d) for d in json.loads(best.reports)))


def record(engine: Engine, data: bytes, validation: Validation) -> bool:
    """Remember `data` as validated if every signature in it passed; True when it did."""
    if not validation.ok:
        return False
    validated_versions.record(engine, ValidatedVersion(
        sha256=hashlib.sha256(data).hexdigest(), size=len(data), signatures=len(validation.reports),
        reports=json.dumps([_report_json(r) for r in validation.reports], ensure_ascii=False)))
    return True
