"""`signbridge identities import FILE.csv`: map chat users to the contact data signing needs.

The file is what IT admins export from their IM's admin console (often through Excel, hence
`utf-8-sig` for the BOM). Columns: platform, tenant, user_id, name, email, mobile, active
(and optionally external); only platform, user_id and name are required.

Choices, and why:
- **All or nothing.** Every bad row is reported with its line number and nothing is written,
  so a half-imported directory never silently drops people; fix the file and run it again.
- **Blank cells keep what is stored.** WeCom's API stopped handing out email and mobile to
  self-built apps, so its exports have those columns empty while an admin may have entered them
  elsewhere earlier; an import must not wipe them. Such rows are accepted with a note, because a
  person without email or mobile can still sign through the built-in provider's chat link, but
  not with providers that identify signers by email or mobile.
- Upsert on (platform, tenant, user_id) — the table's unique key.
- Names, emails and mobiles are cleaned, checked and normalised (E.164) by the same rules
  `prepare` applies to every signer (`signbridge.signers`), so what is imported is signable.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from connectors.chat.registry import PLATFORMS
from signbridge.core.signers import SignerProblem, clean_name, normalised_email, normalised_mobile
from store.repos import identities

REQUIRED = ("platform", "user_id", "name")
OPTIONAL = ("tenant", "email", "mobile", "active", "external")
TRUE = {"1", "true", "yes", "y", "是"}
FALSE = {"0", "false", "no", "n", "否"}


@dataclass
class Parsed:
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (line, values)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    notes: list[str] = field(default_factory=list)


def _flag(value: str, line: int, column: str, errors: list[str]) -> bool | None:
    v = value.strip().lower()
    if not v:
        return None
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    errors.append(f"line {line}: {column} must be true/false (or 1/0, yes/no), got {value!r}")
    return None


def parse(text: str) -> Parsed:
    out = Parsed()
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if missing or unknown:
        out.errors.append("line 1: header " + "; ".join(
            ([f"missing column(s) {', '.join(missing)}"] if missing else [])
            + ([f"unknown column(s) {', '.join(unknown)}"] if unknown else []))
            + f" (expected {', '.join(REQUIRED + OPTIONAL)})")
        return out
    reader.fieldnames = header
    seen: dict[tuple[str, str, str], int] = {}
    for raw in reader:
        line = reader.line_num
        if None in raw:
            out.errors.append(f"line {line}: more cells than header columns")
            continue
        cell = {k: (v or "").strip() for k, v in raw.items()}
        cell["name"] = clean_name(cell.get("name", ""))  # as prepare cleans signers' names
        if not any(cell.values()):
            continue  # blank line
        before = len(out.errors)
        platform = cell["platform"].lower()
        if platform not in PLATFORMS:
            out.errors.append(f"line {line}: platform {cell['platform']!r} is not one of {', '.join(PLATFORMS)}")
        for col in ("user_id", "name"):
            if not cell[col]:
                out.errors.append(f"line {line}: {col} is empty")
        email, mobile = cell.get("email", ""), cell.get("mobile", "")
        try:
            email = normalised_email(email) if email else ""
        except SignerProblem:
            out.errors.append(f"line {line}: email {email!r} is not an email address")
        try:
            mobile = normalised_mobile(mobile) if mobile else ""
        except SignerProblem:
            out.errors.append(f"line {line}: mobile {cell['mobile']!r} is not a mobile number (+8613800000000)")
        active = _flag(cell.get("active", ""), line, "active", out.errors)
        external = _flag(cell.get("external", ""), line, "external", out.errors)
        key = (platform, cell.get("tenant") or "default", cell["user_id"])
        if key in seen:
            out.errors.append(f"line {line}: repeats {'/'.join(key)} from line {seen[key]}")
        seen.setdefault(key, line)
        if len(out.errors) > before:
            continue
        if not email and not mobile:
            why = ("WeCom does not give self-built apps email or mobile" if platform == "wecom"
                   else "no email or mobile in the file")
            out.notes.append(f"line {line}: {cell['name']} ({key[2]}) has no email or mobile ({why}); kept what "
                             "is stored, and they can sign only through chat links until these are filled in")
        out.rows.append((line, {"platform": key[0], "tenant": key[1], "user_id": key[2], "name": cell["name"],
                                "email": email or None, "mobile": mobile or None, "active": active,
                                "external": external}))
    return out


def upsert(engine: Engine, parsed: Parsed) -> ImportResult:
    """Write every parsed row in one transaction; blank (None) values leave stored ones alone."""
    created, updated = identities.import_rows(engine, [
        (v["platform"], v["tenant"], v["user_id"],
         identities.Contact(name=v["name"], email=v["email"], mobile=v["mobile"], active=v["active"],
                            external=v["external"]))
        for _, v in parsed.rows])
    return ImportResult(created=created, updated=updated, notes=list(parsed.notes))
