"""Where each signer signs each document: a template's `sign:角色` fields, else anchor texts
(【甲方签章】, `{{sign:乙方}}`) in a plain PDF, else nowhere in particular (the automatic slots).

Roles go to signers as the command named them (`甲方:@李四`), else in order: the first role
found to the first signer, and so on. Everything the sender must fix is a `PlacementProblem`:
a role the command names that no document has a place for, an anchor written twice in one
document (which of the two?), a template role nobody was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from signbridge.core.models import Placement
from signbridge.pdf.anchors import beside, find_anchors
from signbridge.pdf.forms import Box, TemplateForm


class PlacementProblem(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Slot:
    document: int
    role: str
    page: int
    box: Box
    anchor: str | None
    anchor_box: Box | None = None
    page_size: tuple[float, float] | None = None


def template_slots(form: TemplateForm, document: int = 0, page_boxes: Sequence[Box] = ()) -> list[Slot]:
    return [Slot(document, s.role, s.page, s.box, None, None,
                 _size(page_boxes[s.page]) if s.page < len(page_boxes) else None)
            for s in form.slots if s.kind == "sign"]


def anchor_slots(document: int, name: str, pdf: bytes, page_boxes: Sequence[Box]) -> list[Slot]:
    anchors = [a for a in find_anchors(pdf) if a.kind == "sign"]
    seen: dict[str, list[int]] = {}
    for a in anchors:
        seen.setdefault(a.role, []).append(a.page + 1)
    twice = {role: pages for role, pages in seen.items() if len(pages) > 1}
    if twice:
        role, pages = next(iter(twice.items()))
        where = "、".join(str(p) for p in pages)
        raise PlacementProblem(f"{name} 中「{role}」的签署位置出现了 {len(pages)} 次（第 {where} 页），"
                               "无法确定签在哪里；"
                               f"请只保留一处（In {name} the signing place of “{role}” appears {len(pages)} times, "
                               f"on pages {', '.join(str(p) for p in pages)}; keep one）")
    return [Slot(document, a.role, a.page, beside(a.box, page_boxes[a.page]), a.text, a.box,
                 _size(page_boxes[a.page])) for a in anchors]


def _size(box: Box) -> tuple[float, float]:
    return (round(box[2] - box[0], 2), round(box[3] - box[1], 2))


def placements(slots: list[Slot], signer_ids: list[str], named: dict[str, str],
               required: Sequence[str] = ()) -> list[Placement]:
    """Each slot whose role has a signer, as a `Placement`. `named`: role → signer id from the
    command; `required`: roles that must have a signer (a template's)."""
    roles = list(dict.fromkeys(s.role for s in slots))
    missing_place = [r for r in named if r not in roles]
    if missing_place:
        role = missing_place[0]
        raise PlacementProblem(f"文件中没有找到「{role}」的签署位置（模板签名域 sign:{role}、文字 【{role}签章】 或 "
                               f"{{{{sign:{role}}}}}）（No signing place for “{role}” in the documents: a template "
                               f"field sign:{role}, or the text 【{role}签章】 or {{{{sign:{role}}}}}）")
    mapping = dict(named) if named else dict(zip(roles, signer_ids, strict=False))
    unassigned = [r for r in required if r not in mapping]
    if unassigned:
        listed = "、".join(unassigned)
        raise PlacementProblem(f"模板需要为 {listed} 指定签署人，例如 {unassigned[0]}:@某人"
                               f"（The template needs a signer for {', '.join(unassigned)}, e.g. "
                               f"{unassigned[0]}:@someone）")
    return [Placement(role=s.role, signer_id=mapping[s.role], document=s.document, page=s.page, box=s.box,
                      anchor=s.anchor, anchor_box=s.anchor_box, page_size=s.page_size)
            for s in slots if s.role in mapping]
