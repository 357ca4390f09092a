"""Templates: read a PDF form's fields, fill its text fields and flatten it into a plain PDF.

A template is a PDF with AcroForm text fields for data (`客户名称`, `金额`) and signature fields
named by role: `sign:甲方` for a person's signature, `seal:乙方` for an organisation's seal. The
signature fields are not signed into: their rectangles are read here (`signature_slots`) and the
filled document has no form at all — every field and widget is removed, not only drawn over —
so what everyone signs is plain content, and each signature is later placed in a new field at
its role's rectangle.

Values are drawn with the same embedded CJK font as the signature stamps (so 某某公司 renders
and extracts as text), on the page content itself, before any signature: nothing changes after
the first signature but signatures.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Literal

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.layout import BoxConstraints
from pyhanko.pdf_utils.text import TextBoxStyle
from pyhanko.stamp import TextStamp, TextStampStyle
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, DictionaryObject, NameObject

from signbridge.pdf.pades import stamp_font

SlotKind = Literal["sign", "seal"]
SLOT_KINDS: tuple[SlotKind, ...] = ("sign", "seal")
Box = tuple[float, float, float, float]  # llx, lly, urx, ury (PDF points, origin bottom left)
MAX_FONT_SIZE = 12.0
MIN_FONT_SIZE = 6.0
_PADDING = 2.0
_HALF_WIDTH_EM = 0.55  # a Latin glyph of the stamp font is about half an em wide; CJK ones a whole em


class FormProblem(ValueError):
    """The template or the values for it are wrong; `message` is bilingual."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class TextField:
    name: str
    page: int  # 0-based
    box: Box


@dataclass(frozen=True)
class SignatureSlot:
    """Where `role` signs (`kind` sign) or applies its organisation's seal (`kind` seal)."""

    role: str
    kind: SlotKind
    page: int
    box: Box


@dataclass(frozen=True)
class TemplateForm:
    text_fields: list[TextField]
    slots: list[SignatureSlot]

    @property
    def field_names(self) -> list[str]:
        return list(dict.fromkeys(f.name for f in self.text_fields))

    @property
    def roles(self) -> list[str]:
        """Roles that sign, in the order of their first field (page, then top to bottom)."""
        ordered = sorted(self.slots, key=lambda s: (s.page, -s.box[3], s.box[0]))
        return list(dict.fromkeys(s.role for s in ordered if s.kind == "sign"))


def _box(rect: ArrayObject) -> Box:
    x1, y1, x2, y2 = (float(v) for v in rect)
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def _field_of(widget: DictionaryObject) -> tuple[str, str]:
    """(full name, field type) of a widget: its own /T and /FT, or its parent field's."""
    names: list[str] = []
    field_type = ""
    node: DictionaryObject | None = widget
    for _ in range(32):
        if node is None:
            break
        if "/T" in node:
            names.append(str(node["/T"]))
        if not field_type and "/FT" in node:
            field_type = str(node["/FT"])
        parent = node.get("/Parent")
        node = parent.get_object() if parent is not None else None
    return ".".join(reversed(names)), field_type


def read_form(data: bytes) -> TemplateForm:
    """The template's text fields and signature slots; `FormProblem` for a file that is no template."""
    try:
        reader = PdfReader(BytesIO(data))
        pages = list(reader.pages)
    except Exception as e:  # pypdf raises many types on malformed input
        raise FormProblem("模板不是可读的 PDF（The template is not a readable PDF）") from e
    text_fields: list[TextField] = []
    slots: list[SignatureSlot] = []
    for number, page in enumerate(pages):
        for ref in page.get("/Annots") or []:
            widget = ref.get_object()
            if widget.get("/Subtype") != "/Widget" or "/Rect" not in widget:
                continue
            name, field_type = _field_of(widget)
            box = _box(widget["/Rect"])
            if field_type == "/Tx" and name:
                text_fields.append(TextField(name, number, box))
            elif field_type == "/Sig":
                kind, _, role = name.partition(":")
                if kind in SLOT_KINDS and role.strip():
                    slots.append(SignatureSlot(role.strip(), kind, number, box))  # type: ignore[arg-type]
    if not any(s.kind == "sign" for s in slots):
        raise FormProblem("模板中没有签署位置：请添加名为 sign:角色（如 sign:甲方）的签名域"
                          "（The template has no signature field: add signature fields named sign:ROLE, "
                          "e.g. sign:甲方）")
    return TemplateForm(text_fields, slots)


def check_values(form: TemplateForm, values: dict[str, str]) -> None:
    """Every field filled, none unknown; `FormProblem` naming the template's fields otherwise."""
    names = form.field_names
    listed = "、".join(names) or "（无 / none）"
    unknown = [k for k in values if k not in names]
    missing = [n for n in names if not values.get(n, "").strip()]
    if unknown:
        raise FormProblem(f"模板没有字段：{'、'.join(unknown)}。模板的字段：{listed}"
                          f"（The template has no field {', '.join(unknown)}; its fields: {', '.join(names)}）")
    if missing:
        raise FormProblem(f"缺少模板字段：{'、'.join(missing)}。模板的字段：{listed}"
                          f"（Missing template fields: {', '.join(missing)}; its fields: {', '.join(names)}）")


def _width(text: str, size: float) -> float:
    return sum(1.0 if unicodedata.east_asian_width(ch) in ("W", "F") else _HALF_WIDTH_EM for ch in text) * size


def font_size_for(field: TextField, value: str) -> float:
    """The largest size up to 12 pt at which `value` fits its box on one line; `FormProblem` when
    even 6 pt would overflow it (a value cut off in a contract is worse than a refusal)."""
    x1, y1, x2, y2 = field.box
    room = x2 - x1 - 2 * _PADDING
    size = min(MAX_FONT_SIZE, (y2 - y1) * 0.75)
    while size >= MIN_FONT_SIZE:
        if _width(value, size) <= room:
            return size
        size -= 0.5
    fits = int(room / (MIN_FONT_SIZE * _HALF_WIDTH_EM))
    raise FormProblem(f"字段「{field.name}」的内容太长，超出了模板中的位置"
                      f"（约可容纳 {fits // 2} 个汉字或 {fits} 个字母）"
                      f"（The value of “{field.name}” is too long for its box: about {fits} Latin characters fit）")


def fill_and_flatten(data: bytes, values: dict[str, str], font_path: Path | None = None) -> bytes:
    """The template with every value drawn in its field's box and no form left (no /AcroForm,
    no widgets), as one plain revision. Call `check_values` first."""
    form = read_form(data)
    sizes = {f: font_size_for(f, values[f.name]) for f in form.text_fields}
    plain = _without_form(data)
    writer = IncrementalPdfFileWriter(BytesIO(plain), strict=False)
    for f, size in sizes.items():
        x1, y1, x2, y2 = f.box
        value = values[f.name]
        style = TextStampStyle(stamp_text="%(value)s", border_width=0, background=None,
                               text_box_style=TextBoxStyle(font=stamp_font(font_path, int(size), value),
                                                           font_size=int(size)))
        TextStamp(writer, style, text_params={"value": value},
                  box=BoxConstraints(width=x2 - x1, height=y2 - y1)).apply(f.page, int(x1), int(y1))
    out = BytesIO()
    writer.write(out)
    return _one_revision(out.getvalue())


def _without_form(data: bytes) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(BytesIO(data)))
    writer.remove_annotations(subtypes="/Widget")
    if "/AcroForm" in writer.root_object:
        del writer.root_object[NameObject("/AcroForm")]
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def _one_revision(data: bytes) -> bytes:
    """Rewritten as a single revision: the form-bearing original must not survive as an earlier one."""
    out = BytesIO()
    PdfWriter(clone_from=PdfReader(BytesIO(data))).write(out)
    return out.getvalue()
