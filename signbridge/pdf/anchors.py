"""Anchor texts in a plain PDF — 【甲方签章】 or `{{sign:乙方}}` — and where a signature goes next to one.

pdfminer.six gives every character its box, so an anchor's rectangle is exact (PDF user space,
origin bottom left). The search is per text line: an anchor broken across two lines is not
found (and the role then signs in the automatic slot, or the request is refused when the
command named the role). An anchor written twice is ambiguous and refused by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from io import BytesIO

from pdfminer.high_level import extract_pages
from pdfminer.layout import LAParams, LTChar, LTTextContainer, LTTextLine

from signbridge.pdf.forms import Box

# 【甲方签章】 【乙方签字】 【甲方盖章】 or {{sign:乙方}} / {{seal:乙方}}
_ANCHOR = re.compile(r"【(?P<cn>[^【】\s]{1,20}?)(?P<cnkind>签章|签字|签名|盖章)】"
                     r"|\{\{\s*(?P<kind>sign|seal)\s*:\s*(?P<role>[^{}\s]{1,40})\s*\}\}")
STAMP_SIZE = (160.0, 48.0)  # the signature stamp (signbridge.pdf.pades STAMP_WIDTH/HEIGHT)
_GAP = 4.0


@dataclass(frozen=True)
class Anchor:
    role: str
    kind: str  # sign | seal
    text: str
    page: int  # 0-based
    box: Box


def find_anchors(data: bytes) -> list[Anchor]:
    """Every anchor in the document, in reading order."""
    found: list[Anchor] = []
    for number, page in enumerate(extract_pages(BytesIO(data), laparams=LAParams())):
        for element in page:
            if not isinstance(element, LTTextContainer):
                continue
            for line in element:
                if not isinstance(line, LTTextLine):
                    continue
                chars = [c for c in line if isinstance(c, LTChar)]
                text = "".join(c.get_text() for c in chars)
                for m in _ANCHOR.finditer(text):
                    seg = chars[m.start():m.end()]
                    if not seg:
                        continue
                    role = m.group("cn") or m.group("role")
                    kind = "seal" if (m.group("kind") == "seal" or m.group("cnkind") == "盖章") else "sign"
                    box = (min(c.x0 for c in seg), min(c.y0 for c in seg), max(c.x1 for c in seg),
                           max(c.y1 for c in seg))
                    found.append(Anchor(role, kind, m.group(0), number, box))
    return found


def beside(anchor: Box, page: Box) -> Box:
    """The stamp's rectangle right of the anchor, vertically centred on it; moved below the anchor
    (left-aligned with it) when the page has no room on the right."""
    width, height = STAMP_SIZE
    x1, y1, x2, y2 = anchor
    middle = (y1 + y2) / 2
    left, bottom = x2 + _GAP, middle - height / 2
    if left + width > page[2]:
        left, bottom = max(page[0], min(x1, page[2] - width)), y1 - height - _GAP
    bottom = max(page[1], min(bottom, page[3] - height))
    return (round(left, 1), round(bottom, 1), round(left + width, 1), round(bottom + height, 1))
