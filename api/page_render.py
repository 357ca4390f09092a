"""Rendering the pages people open from a chat (signing pages, provider link pages) with Jinja2.

The templates live in `api/page_templates/`; autoescaping is on for every template, so a
document name, a signer's name or a decline reason can never become markup. Every page is
Chinese first with English under it, works without JavaScript (none is served: the pages'
Content-Security-Policy allows no script), and is laid out for a phone's in-app browser first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).parent / "page_templates"

_env = Environment(loader=FileSystemLoader(TEMPLATES / "sign"), autoescape=True, undefined=StrictUndefined,
                   trim_blocks=True, lstrip_blocks=True, auto_reload=False)

Lines = list[tuple[str, str]]


def render(template: str, **context: Any) -> str:
    """The template filled in; a missing variable is an error (StrictUndefined), never a blank."""
    return _env.get_template(template).render(**context)


def message(heading: tuple[str, str], lines: Lines, *, status: int = 200, error: bool = False,
            back: str | None = None, sha256: str | None = None, download_url: str | None = None,
            back_words: tuple[str, str] = ("返回", "Back")) -> HTMLResponse:
    """A page that says one thing: `heading` and `lines` as (Chinese, English) pairs; `back`: a
    link onwards, labelled `back_words`."""
    body = render("message.html", heading_zh=heading[0], heading_en=heading[1], lines=lines, error=error,
                  back=back, back_words=back_words, sha256=sha256, download_url=download_url)
    return HTMLResponse(body, status_code=status)
