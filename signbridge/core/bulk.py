"""Reading a bulk send's CSV: one signing request per row of a template.

    客户名称,金额,乙方,乙方邮箱,乙方手机
    某某公司,120000,王经理,wang@customer.example,
    另一家公司,8000,赵总,,13800138000

The header names the template's text fields and, for each signing role the command did not give
to a chat member (`甲方:@李四` signs every row as 甲方), the person signing as that role on each
row: `角色` (name) with `角色邮箱` / `角色手机` (also `角色_email`, `角色_mobile`, `角色_name`).
Those people are external signers; their link goes to that email or mobile. An optional
`row_key` column names a row's identity explicitly.

What is refused as a whole (`BulkProblem`, nothing is started): a file that is neither UTF-8
(with or without a BOM) nor GBK/GB18030, no header, a header missing a column the template needs,
no data rows, more rows than `SIGNBRIDGE_BULK_MAX_ROWS`. What is reported per row while the good
rows go ahead (`CsvRow.problem`): an empty value, a row with too few or too many cells, an
unusable email or mobile, a row that repeats an earlier one.

**Row identity.** A row's key is the SHA-256 of the template's name and the row's own values
(the columns above, sorted by column: other columns, their order and the line number do not
count), or of its `row_key` when the CSV has one. Its signing request's id is derived from that
key, so a row that was sent once — by this bulk send, by a re-run of the same command, or by a
later CSV that repeats it — is never sent again; to send the same row again on purpose, give it a
new `row_key`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

from signbridge.core.models import Person
from signbridge.core.signers import SignerProblem, checked_person

KEY_COLUMN = "row_key"
NAME_SUFFIXES = ("", "姓名", "_name")
EMAIL_SUFFIXES = ("邮箱", "_email", "email")
MOBILE_SUFFIXES = ("手机", "手机号", "_mobile", "mobile")
MAX_CELL_CHARS = 1000
MAX_SHOWN_PROBLEMS = 20


class BulkProblem(ValueError):
    """The CSV as a whole cannot be used; `message` is Chinese, then English in brackets."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class CsvRow:
    line: int  # line of the CSV file (the header is line 1)
    key: str  # 64 hex characters: the row's identity (see the module docstring)
    values: dict[str, str]  # the columns that count: template fields and the CSV roles' contacts
    problem: str | None = None


@dataclass(frozen=True)
class Sheet:
    """What a bulk send's CSV holds, every row checked."""

    encoding: str
    columns: list[str]
    rows: list[CsvRow]

    @property
    def good(self) -> list[CsvRow]:
        return [r for r in self.rows if r.problem is None]

    @property
    def bad(self) -> list[CsvRow]:
        return [r for r in self.rows if r.problem is not None]


def decode(data: bytes) -> tuple[str, str]:
    """The CSV's text and its encoding: UTF-8 (a BOM is dropped) or else GBK's superset GB18030 —
    what Excel on a Chinese Windows saves as "CSV"."""
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(encoding), "utf-8" if encoding == "utf-8-sig" else "gbk"
        except UnicodeDecodeError:
            continue
    raise BulkProblem("CSV 文件既不是 UTF-8 也不是 GBK 编码，请另存为「CSV UTF-8」"
                      "（The CSV is neither UTF-8 nor GBK; save it as “CSV UTF-8”）")


def _column(header: Sequence[str], role: str, suffixes: Sequence[str]) -> str | None:
    folded = {h.casefold(): h for h in header}
    return next((folded[(role + s).casefold()] for s in suffixes if (role + s).casefold() in folded), None)


@dataclass(frozen=True)
class RoleColumns:
    role: str
    name: str
    email: str | None
    mobile: str | None


def role_columns(header: Sequence[str], role: str) -> RoleColumns | None:
    name = _column(header, role, NAME_SUFFIXES)
    email, mobile = _column(header, role, EMAIL_SUFFIXES), _column(header, role, MOBILE_SUFFIXES)
    if name is None or not (email or mobile):
        return None
    return RoleColumns(role, name, email, mobile)


def expected_columns(fields: Sequence[str], csv_roles: Sequence[str]) -> list[str]:
    """What the header needs, as a person would write it (for messages and `templates list`)."""
    return [*fields, *(c for r in csv_roles for c in (r, f"{r}邮箱", f"{r}手机"))]


def read_sheet(data: bytes, *, template: str, fields: Sequence[str], roles: Sequence[str],
               fixed_roles: Sequence[str], max_rows: int) -> Sheet:
    """Every row of the CSV checked against the template (`fields`, `roles`); the roles in
    `fixed_roles` are signed by a chat member named in the command and need no columns."""
    text, encoding = decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise BulkProblem("CSV 文件是空的（The CSV is empty）") from None
    except csv.Error as e:
        raise BulkProblem(f"CSV 无法读取（The CSV cannot be read: {e}）") from e
    csv_roles = [r for r in roles if r not in fixed_roles]
    columns = {r: role_columns(header, r) for r in csv_roles}
    missing = [f for f in fields if f not in header] + [
        f"{r}（及 {r}邮箱 或 {r}手机）" for r, c in columns.items() if c is None]
    if missing:
        expected = "，".join(expected_columns(fields, csv_roles))
        raise BulkProblem(f"CSV 缺少列：{'、'.join(missing)}。模板「{template}」需要的列：{expected}"
                          f"（The CSV lacks the column(s) {', '.join(missing)}; template “{template}” needs: "
                          f"{expected}）")
    if len(set(header)) != len(header):
        twice = sorted({h for h in header if header.count(h) > 1})
        raise BulkProblem(f"CSV 的列名重复：{'、'.join(twice)}（Column names appear twice: {', '.join(twice)}）")
    used = list(dict.fromkeys([*fields, *(c for rc in columns.values() if rc
                                          for c in (rc.name, rc.email, rc.mobile) if c)]))
    explicit_key = KEY_COLUMN in header
    rows: list[CsvRow] = []
    seen: dict[str, int] = {}
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue  # blank lines (Excel leaves them at the end)
            if len(rows) >= max_rows:
                raise BulkProblem(f"CSV 超过 {max_rows} 行的上限，请分批发送（The CSV has more than {max_rows} "
                                  f"rows, the limit (SIGNBRIDGE_BULK_MAX_ROWS); split it）")
            rows.append(_row(line, header, cells, used, fields, columns, template, explicit_key, seen))
    except csv.Error as e:
        raise BulkProblem(f"CSV 第 {reader.line_num} 行无法读取（Line {reader.line_num} of the CSV cannot be "
                          f"read: {e}）") from e
    if not rows:
        raise BulkProblem("CSV 只有表头，没有数据行（The CSV has a header but no rows）")
    return Sheet(encoding=encoding, columns=header, rows=rows)


def _row(line: int, header: list[str], cells: list[str], used: list[str], fields: Sequence[str],
         columns: dict[str, RoleColumns | None], template: str, explicit_key: bool, seen: dict[str, int]) -> CsvRow:
    record = {h: (cells[i].strip() if i < len(cells) else None) for i, h in enumerate(header)}
    values = {c: record[c] or "" for c in used}
    identity = (record.get(KEY_COLUMN) or "") if explicit_key else json.dumps(values, sort_keys=True,
                                                                                ensure_ascii=False)
    key = hashlib.sha256(f"{template}\x1f{identity}".encode()).hexdigest()
    problem = _problem(header, cells, record, fields, columns)
    if problem is None and explicit_key and not record.get(KEY_COLUMN):
        problem = f"{KEY_COLUMN} 为空（{KEY_COLUMN} is empty）"
    if problem is None:
        if key in seen:
            problem = f"与第 {seen[key]} 行重复（repeats line {seen[key]}）"
        else:
            seen[key] = line
    return CsvRow(line=line, key=key, values=values, problem=problem)


def _problem(header: list[str], cells: list[str], record: dict[str, str | None], fields: Sequence[str],
             columns: dict[str, RoleColumns | None]) -> str | None:
    if len(cells) > len(header):
        return f"有 {len(cells)} 个单元格，表头只有 {len(header)} 列（{len(cells)} cells for {len(header)} columns）"
    if len(cells) < len(header):
        absent = "、".join(header[len(cells):])
        return f"缺少列：{absent}（missing column(s): {', '.join(header[len(cells):])}）"
    empty = [f for f in fields if not record.get(f)]
    empty += [rc.name for rc in columns.values() if rc and not record.get(rc.name)]
    if empty:
        return f"缺少：{'、'.join(empty)}（missing value(s): {', '.join(empty)}）"
    long = [h for h, v in record.items() if v and len(v) > MAX_CELL_CHARS]
    if long:
        return f"{'、'.join(long)} 超过 {MAX_CELL_CHARS} 个字（longer than {MAX_CELL_CHARS} characters）"
    for rc in columns.values():
        if rc is None:
            continue
        email, mobile = record.get(rc.email or "") or "", record.get(rc.mobile or "") or ""
        if not email and not mobile:
            return (f"{rc.role} {record.get(rc.name)} 没有邮箱或手机号（{rc.role} {record.get(rc.name)} has "
                    "neither an email nor a mobile number）")
        try:
            checked_person(Person(id="csv", name=record.get(rc.name) or "", email=email or None,
                                  mobile=mobile or None, external=True))
        except SignerProblem as e:
            return e.message
    return None


def row_signers(values: dict[str, str], roles: Sequence[str], fixed: dict[str, Person]) -> dict[str, Person]:
    """Who signs each role on this row: the command's chat member, else the row's external person
    (id `csv:<email or mobile>`, so the same customer is the same signer on every row)."""
    header = list(values)
    people: dict[str, Person] = {}
    for role in roles:
        if role in fixed:
            people[role] = fixed[role]
            continue
        rc = role_columns(header, role)
        if rc is None:
            continue
        email = values.get(rc.email or "") or None
        mobile = values.get(rc.mobile or "") or None
        person = checked_person(Person(id="csv", name=values[rc.name], email=email, mobile=mobile, external=True))
        people[role] = person.model_copy(update={"id": f"csv:{person.email or person.mobile}"})
    return people


def csv_key(template: str, data: bytes) -> str:
    """The identity of a whole CSV sent with a template: a re-run of the same file finds its bulk send."""
    return hashlib.sha256(template.encode() + b"\x1f" + data).hexdigest()


def shown_problems(rows: Sequence[CsvRow], limit: int = MAX_SHOWN_PROBLEMS) -> list[str]:
    """The bad rows in words, for a card or a message: "第 7 行：缺少：金额（…）"."""
    lines = [f"第 {r.line} 行 / line {r.line}: {r.problem}" for r in rows if r.problem][:limit]
    more = sum(1 for r in rows if r.problem) - len(lines)
    return lines + ([f"…另有 {more} 行 / {more} more"] if more > 0 else [])
