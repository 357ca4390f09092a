"""Small Office files built in code for the conversion tests (python-docx, openpyxl)."""

from __future__ import annotations

import io

import docx
import openpyxl

CONTRACT_TEXT = "销售合同：甲方与乙方就货物买卖达成如下协议。"


def chinese_docx(paragraphs: int = 3, anchors: tuple[str, ...] = ()) -> bytes:
    document = docx.Document()
    document.add_heading("销售合同", level=1)
    for i in range(paragraphs):
        document.add_paragraph(f"第{i + 1}条 {CONTRACT_TEXT}")
    for anchor in anchors:
        document.add_paragraph(anchor)
    buf = io.BytesIO()
    document.save(buf)
    return buf.getvalue()


def chinese_xlsx(rows: int = 5) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["品名", "数量", "单价"])
    for i in range(rows):
        sheet.append([f"货物{i + 1}号", i + 1, 100 * (i + 1)])
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()
