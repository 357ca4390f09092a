"""Registering a template (the CLI's `signbridge templates add` and `POST /api/v1/templates`).

An Office file is converted first, with the same converter as documents in the chat; the PDF must
be one a template can be: readable, with at least one `sign:角色` signature field. What is stored
is the PDF (in the blob store) and its field and role names (for listing and for messages).
"""

from __future__ import annotations

import asyncio
import json

import httpx
from sqlalchemy.engine import Engine

from connectors.convert.base import ConversionProblem, ConverterUnavailable, is_office
from connectors.convert.registry import build_converter
from signbridge.core.settings import Settings
from signbridge.pdf.check import DocumentProblem, check_pdf
from signbridge.pdf.forms import FormProblem, TemplateForm, fill_and_flatten, read_form
from store.blobs import BlobStore
from store.repos import templates
from store.tables import Template

MAX_NAME = 100


class TemplateProblem(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def register(settings: Settings, engine: Engine, blobs: BlobStore, *, name: str, file_name: str, data: bytes,
                   by: str) -> tuple[Template, TemplateForm]:
    name = name.strip()
    if not name or len(name) > MAX_NAME or any(c in name for c in ":：\n\r\t"):
        raise TemplateProblem(f"模板名称需为 1–{MAX_NAME} 个字符，不含冒号（A template name is 1–{MAX_NAME} characters "
                              "without colons）")
    try:
        if is_office(file_name, data):
            async with httpx.AsyncClient() as http:
                data = await build_converter(settings, http).to_pdf(file_name, data)
        form = await asyncio.to_thread(_checked_form, settings, data)
    except (ConversionProblem, DocumentProblem, FormProblem) as e:
        raise TemplateProblem(e.message) from e
    except ConverterUnavailable as e:
        raise TemplateProblem(f"转换服务暂时不可用，请稍后重试（The converter is unavailable: {e}）") from e
    row = Template(name=name, sha256=blobs.put(data), source_name=file_name,
                   fields=json.dumps(form.field_names, ensure_ascii=False),
                   roles=json.dumps(form.roles, ensure_ascii=False), created_by=by)
    templates.save(engine, row)
    return row, form


def _checked_form(settings: Settings, data: bytes) -> TemplateForm:
    """CPU-bound (runs in a thread): what will be signed is the filled, flattened copy, so that copy
    must pass every document check."""
    form = read_form(data)
    check_pdf(fill_and_flatten(data, dict.fromkeys(form.field_names, "0"), settings.stamp_font),
              settings.max_document_bytes)
    return form
