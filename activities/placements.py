"""Where each signer signs each document: a template's `sign:角色` fields, else anchor texts
(【甲方签章】, `{{sign:乙方}}`) in a plain PDF, else nowhere in particular (the automatic slots).
Where a role's organisation seal goes likewise: `seal:乙方` fields, 【乙方盖章】 or `{{seal:乙方}}`
(used only when that role's signer applies a seal; else the seal takes the next free corner).

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
from signbridge.pdf.forms import Box, SlotKind, TemplateForm


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
    kind: SlotKind = "sign"  # "seal": where the role's organisation seal goes (`seal:乙方`, 【乙方盖章】)


def template_slots(form: TemplateForm, document: int = 0, page_boxes: Sequence[Box] = ()) -> list[Slot]:
    return [Slot(document, s.role, s.page, s.box, None, None,
                 _size(page_boxes[s.page]) if s.page < len(page_boxes) else None, s.kind)
            for s in form.slots]


def anchor_slots(document: int, name: str, pdf: bytes, page_boxes: Sequence[Box]) -> list[Slot]:
    anchors = find_anchors(pdf)
    seen: dict[tuple[str, str], list[int]] = {}
    for a in anchors:
        seen.setdefault((a.role, a.kind), []).append(a.page + 1)
    twice = {role: pages for role, pages in seen.items() if len(pages) > 1}
    if twice:
        (role, _), pages = next(iter(twice.items()))
        where = "、".join(str(p) for p in pages)
        raise PlacementProblem(f"{name} 中「{role}」的签署位置出现了 {len(pages)} 次（第 {where} 页），"
                               "无法确定签在哪里；"
                               f"请只保留一处（In {name} the signing place of “{role}” appears {len(pages)} times, "
                               f"on pages {', '.join(str(p) for p in pages)}; keep one）")
    return [Slot(document, a.role, a.page, _seal_box(a.box, page_boxes[a.page]) if a.kind == "seal"
                 else beside(a.box, page_boxes[a.page]), a.text, a.box, _size(page_boxes[a.page]),
                 "seal" if a.kind == "seal" else "sign")
            for a in anchors]


def _size(box: Box) -> tuple[float, float]:
    return (round(box[2] - box[0], 2), round(box[3] - box[1], 2))


SEAL_SIDE = 110.0  # points: the built-in seal's size (`signbridge.pdf.pades.SEAL_SIZE`)


def _seal_box(anchor: Box, page: Box) -> Box:
    """A seal is stamped over its anchor (【乙方盖章】), centred on it, kept inside the page."""
    cx, cy = (anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2
    half = SEAL_SIDE / 2
    x = min(max(cx - half, page[0]), page[2] - SEAL_SIDE)
    y = min(max(cy - half, page[1]), page[3] - SEAL_SIDE)
    return (x, y, x + SEAL_SIDE, y + SEAL_SIDE)


def placements(slots: list[Slot], signer_ids: list[str], named: dict[str, str],
               required: Sequence[str] = ()) -> list[Placement]:
    """Each slot whose role has a signer, as a `Placement`. `named`: role → signer id from the
    command; `required`: roles that must have a signer (a template's)."""
    # Roles come from the signature places first; a role with only a seal place comes after them.
    roles = list(dict.fromkeys([s.role for s in slots if s.kind == "sign"] + [s.role for s in slots]))
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
                      anchor=s.anchor, anchor_box=s.anchor_box, page_size=s.page_size, kind=s.kind)
            for s in slots if s.role in mapping]
