"""The built-in provider's signing pages: `GET /sign/{token}` and the form posts under it.

Thin like every handler: the provider (`connectors.esign.local`) checks links and signs; these
routes pick the status code, render Chinese-first pages (or JSON for `Accept: application/json`,
which `signbridge demo` and the tests use) and hand the resulting event to the workflow.

The token is the only credential and it sits in the URL, so every answer is `no-store`, sends
no referrer, cannot be framed and loads nothing from elsewhere (see `SECURITY_HEADERS`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pypdf import PdfReader
from sqlalchemy.engine import Engine
from temporalio.client import Client

from api import page_render
from api.deps import BlobsDep, ClientDep, EngineDep, NotifierDep, SettingsDep, SsosDep
from api.errors import error_body, responses
from connectors.chat.sso import ChatSso
from connectors.esign import local
from connectors.notify.registry import Notifier
from signbridge.core.links import file_url
from signbridge.core.models import ProviderEvent, StatusView
from signbridge.core.settings import Settings
from signbridge.core.signers import MAX_NAME_CHARS
from signbridge.core.sso import PLATFORM_WORDS, SsoProof, in_app_browser
from signbridge.intake import sso as chat_sso
from signbridge.intake.provider_events import FlowEnded, deliver
from signbridge.pdf.render import page_texts, render_page_png
from store.blobs import BlobStore
from store.files import private_dir
from store.repos import documents, local_flows, signing_records
from store.tables import LocalFlow, LocalSigner, utcnow

log = logging.getLogger(__name__)

router = APIRouter(tags=["signing pages"])

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}
HTML = "text/html"
# Every page answers HTML, or JSON for `Accept: application/json`.
PAGE: dict[int | str, dict[str, Any]] = {200: {"description": "The page (HTML), or its content as JSON", "content": {
    HTML: {"schema": {"type": "string"}}, "application/json": {"schema": {"type": "object"}}}}}
STATUS = {"unknown": 404, "gone": 410, "invalid": 400, "busy": 503, "unsignable": 422, "limited": 429}
DELIVERY_TIMEOUT_SECONDS = 10.0
MAX_PAGE_DIGITS = 5  # no document that passes `check_pdf` has 100,000 pages
# The name input's maxlength: browsers count UTF-16 units, so any name `prepare` accepts fits.
TYPED_NAME_MAX = 2 * MAX_NAME_CHARS
# Page images per pixel density: `render_page_png` scale (1.0 = 72 dpi). The page offers all of
# them in a `srcset`; the browser picks by the screen's pixel ratio.
DENSITIES = {1: 1.5, 2: 3.0, 3: 4.5}
# The image slot the browser plans for: twice the width it is shown at, so a pinch zoom up to 2×
# stays sharp on any screen (beyond that, a tap opens the largest rendering on its own).
IMAGE_SIZES = "(max-width: 860px) 200vw, 1672px"
PAGE_TEXT_MAX = 20_000  # characters of one page's text given to screen readers


# ---- responses -----------------------------------------------------------------------------


def _secure(resp: Response) -> Response:
    resp.headers.update(SECURITY_HEADERS)
    return resp


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


HEADINGS = {404: ("链接无效", "This link is not valid"), 410: ("链接已失效", "This link no longer works"),
            400: ("无法提交", "Could not submit"), 503: ("请稍后重试", "Please try again"),
            422: ("无法签署", "This document cannot be signed"), 429: ("请稍后再试", "Please wait")}


def _problem(request: Request, problem: local.LinkProblem, back: str | None = None,
             download_url: str | None = None) -> Response:
    status = STATUS[problem.kind]
    headers = {"Retry-After": str(max(1, int(problem.retry_after + 0.999)))} if problem.retry_after else {}
    if _wants_json(request):
        message = f"{problem.zh} / {problem.en}"
        return _secure(JSONResponse(error_body(problem.code, message), status_code=status, headers=headers))
    resp = page_render.message(HEADINGS[status], [(problem.zh, problem.en)], status=status, error=status != 410,
                               back=back if status in (400, 429) else None, download_url=download_url)
    resp.headers.update(headers)
    return _secure(resp)


# ---- helpers -------------------------------------------------------------------------------


def _lookup(engine: Engine, token: str) -> tuple[LocalSigner, LocalFlow, str] | local.LinkProblem:
    """The link's signer, flow and document name — or why the link can't be used."""
    found = local.find_signer_by_token(engine, token)
    if found is None:
        return local.unknown_link()
    signer, flow = found
    problem = local.link_problem(signer, flow, utcnow())
    return problem or (signer, flow, documents.name_of(engine, flow.original_sha256) or flow.title)


def _download_url(settings: Settings, engine: Engine, flow: LocalFlow) -> str | None:
    """Where a signer gets the signed file: only once every signature is in (the flow is complete)."""
    if flow.status != "completed":
        return None
    name = documents.name_of(engine, flow.original_sha256) or f"{flow.title}.pdf"
    return file_url(settings, flow.current_blob_key, name)


def _gone_download(settings: Settings, engine: Engine, token: str, problem: local.LinkProblem) -> str | None:
    """A signer who opens their link again after everyone signed gets the signed file there."""
    found = local.find_signer_by_token(engine, token) if problem.code == "link_signed" else None
    return _download_url(settings, engine, found[1]) if found else None


@dataclass(frozen=True)
class DocLayout:
    """What the page needs of one stored version: its page sizes (points)."""

    sizes: list[tuple[float, float]]


_LAYOUTS: dict[str, DocLayout] = {}
_TEXTS: dict[str, list[str]] = {}
_CACHE_MAX = 512


def _read_layout(data: bytes) -> DocLayout:
    """The document was checked (`check_pdf`) before the flow began; here only its pages' shape."""
    sizes = []
    for page in PdfReader(BytesIO(data)).pages:
        width, height = float(page.mediabox.width), float(page.mediabox.height)
        sizes.append((height, width) if (page.rotation or 0) % 180 else (width, height))
    return DocLayout(sizes)


def _read_texts(data: bytes) -> list[str]:
    return [" ".join(text.split()) for text in page_texts(data, PAGE_TEXT_MAX)]


async def _layout(blobs: BlobStore, blob_key: str) -> DocLayout:
    """The layout of a stored version; versions never change (content-addressed), so cache it."""
    if blob_key not in _LAYOUTS:
        layout = await asyncio.to_thread(_read_layout, blobs.get(blob_key))
        if len(_LAYOUTS) > _CACHE_MAX:
            _LAYOUTS.clear()
        _LAYOUTS[blob_key] = layout
    return _LAYOUTS[blob_key]


async def _texts(blobs: BlobStore, blob_key: str) -> list[str]:
    """Each page's text for screen readers (the page, not the page images, asks for it)."""
    if blob_key not in _TEXTS:
        try:
            texts = await asyncio.to_thread(_read_texts, blobs.get(blob_key))
        except Exception:  # a document pdfium cannot read has no text to offer; its images still show
            log.warning("no page text for %s", blob_key, exc_info=True)
            texts = []
        if len(_TEXTS) > _CACHE_MAX:
            _TEXTS.clear()
        _TEXTS[blob_key] = texts
    return _TEXTS[blob_key]


async def _page_count(blobs: BlobStore, blob_key: str) -> int:
    return len((await _layout(blobs, blob_key)).sizes)


def _render_cached(settings: Settings, blobs: BlobStore, blob_key: str, page: int, density: int = 1) -> bytes:
    """Runs in a thread: the PNG from the disk cache, or rendered and cached (written atomically)."""
    suffix = "" if density == 1 else f"@{density}x"
    path = settings.data_dir / "pages" / f"{blob_key}-{page}{suffix}.png"
    if path.exists():
        return path.read_bytes()
    png = render_page_png(blobs.get(blob_key), page - 1, DENSITIES[density])
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(png)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return png


async def _deliver(client: Client, engine: Engine, event: ProviderEvent) -> None:
    """Deliver at once and mark the stored event delivered; a failure leaves it to the worker's
    relay (`signbridge/intake/relay.py`), which signals it again until it arrives."""
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT_SECONDS):
            await deliver(client, engine, event)
    except FlowEnded:
        pass  # nothing left to hear it: done
    except Exception as e:  # the relay delivers it later; never fail the signer's request
        log.warning("could not deliver %s to its workflow (the relay will): %s", event.event_id, e)
        return
    local_flows.mark_delivered(engine, event.event_id, utcnow())


def _who(request: Request) -> tuple[str | None, str | None]:
    """The signer's IP and User-Agent, for the audit trail."""
    return (request.client.host if request.client else None), request.headers.get("user-agent")


# ---- the page --------------------------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _deadline(flow: LocalFlow, signer: LocalSigner) -> datetime:
    """When this link stops working: the flow's deadline, or the link's own if it ends sooner."""
    ends = [_aware(flow.expires_at), *([_aware(signer.token_expires_at)] if signer.token_expires_at else [])]
    return min(ends)


def deadline_words(moment: datetime, settings: Settings, now: datetime | None = None) -> tuple[str, str]:
    """The deadline as people read it, in the signers' time zone: ("12月11日 17:49", "11 Dec 17:49 (UTC+8)");
    the year only when it is not this year's."""
    local_time = _aware(moment).astimezone(settings.zone)
    this_year = (now or utcnow()).astimezone(settings.zone).year == local_time.year
    offset = local_time.utcoffset()
    hours = offset.total_seconds() / 3600 if offset else 0.0
    zone = "UTC" if not hours else f"UTC{hours:+g}"
    zh = ("" if this_year else f"{local_time.year}年") + f"{local_time.month}月{local_time.day}日 {local_time:%H:%M}"
    year = "" if this_year else f" {local_time.year}"
    en = f"{local_time.day} {local_time:%b}{year} {local_time:%H:%M} ({zone})"
    return zh, en


_FILE_SUFFIX = re.compile(r"\.(pdf|docx?|xlsx?|pptx?|odt|ods|odp|rtf|wps|et)$", re.IGNORECASE)


def display_title(title: str) -> str:
    """A request titled after its file reads as a document's name: 《采购合同》, not 《采购合同.pdf》."""
    return _FILE_SUFFIX.sub("", title).strip() or title


def _asker(engine: Engine, request_id: str) -> str | None:
    """Who asked for the signatures, by name, as the flow last published it."""
    record = signing_records.get(engine, request_id)
    if record is None or not record.snapshot:
        return None
    try:
        return StatusView.model_validate_json(record.snapshot).initiator.name or None
    except ValueError:
        return None


@dataclass(frozen=True)
class PageImage:
    number: int
    src: str
    srcset: str
    full: str
    width: int
    height: int
    text: str


@dataclass(frozen=True)
class DocView:
    index: int
    name: str
    sha256: str
    current_sha256: str
    page_count: int
    pages: list[PageImage]


def _images(prefix: str, layout: DocLayout, texts: list[str]) -> list[PageImage]:
    """Each page at every density; `prefix` is the document's page path (…/pages). Pixel sizes
    are rounded up, as pdfium renders them."""
    pages = []
    for number, (width, height) in enumerate(layout.sizes, start=1):
        text = texts[number - 1] if number <= len(texts) else ""
        srcset = ", ".join(f"{prefix}/{number}{'' if d == 1 else f'@{d}x'}.png {math.ceil(width * scale)}w"
                           for d, scale in DENSITIES.items())
        base = DENSITIES[1]
        pages.append(PageImage(number=number, src=f"{prefix}/{number}.png", srcset=srcset,
                               full=f"{prefix}/{number}@{max(DENSITIES)}x.png",
                               width=math.ceil(width * base), height=math.ceil(height * base), text=text))
    return pages


async def _documents(blobs: BlobStore, engine: Engine, token: str, flow: LocalFlow, doc_name: str,
                     with_text: bool = True) -> list[DocView]:
    """The flow's documents as the page shows them; one consent signs them all."""
    base = f"/sign/{token}"
    first = await _layout(blobs, flow.current_blob_key)
    texts = await _texts(blobs, flow.current_blob_key) if with_text else []
    views = [DocView(0, doc_name, flow.original_sha256, flow.current_sha256, len(first.sizes),
                     _images(f"{base}/pages", first, texts))]
    for index, doc in enumerate(local_flows.documents(engine, flow.flow_id)[1:], start=1):
        layout = await _layout(blobs, doc.current_blob_key)
        texts = await _texts(blobs, doc.current_blob_key) if with_text else []
        views.append(DocView(index, doc.name, doc.original_sha256, doc.current_blob_key, len(layout.sizes),
                             _images(f"{base}/documents/{index}/pages", layout, texts)))
    return views


async def _sign_page(request: Request, settings: Settings, engine: Engine, blobs: BlobStore, token: str,
                     signer: LocalSigner, flow: LocalFlow, doc_name: str, *, status: int = 200,
                     error: local.LinkProblem | None = None, typed_name: str = "", consent: bool = False,
                     reason: str = "", verified: SsoProof | None = None, offer: str | None = None,
                     notifier: Notifier | None = None, notice: str | None = None) -> Response:
    deadline_zh, deadline_en = deadline_words(_deadline(flow, signer), settings)
    target = _code_target(settings, notifier, signer, verified) if notifier else None
    body = page_render.render(
        "page.html", heading_zh=flow.title, heading_en="Please review and sign", base=f"/sign/{token}",
        initiator=_asker(engine, flow.request_id), title=display_title(flow.title), deadline_zh=deadline_zh,
        deadline_en=deadline_en, signer_name=signer.name, version=flow.version,
        documents=await _documents(blobs, engine, token, flow, doc_name), sizes=IMAGE_SIZES,
        error=(error.zh, error.en) if error else None, typed_name=typed_name, consent=consent, reason=reason,
        name_max=TYPED_NAME_MAX, reason_max=local.MAX_REASON, verified=_verified_words(verified),
        sso_start=_start_words(token, offer) if not verified else None, party=_party(signer),
        code_to=_code_words(target), notice=notice)
    return _secure(HTMLResponse(body, status_code=status))


def _code_target(settings: Settings, notifier: Notifier, signer: LocalSigner,
                 verified: SsoProof | None) -> tuple[str, str] | None:
    """Where this signer's one-time code would go, masked: (channel, shown address); None: no code
    needed (codes off, nothing can reach them, or chat sign-in already verified them)."""
    if local.verified_by_sso(signer, verified):
        return None
    route = notifier.route(signer.email, signer.mobile)
    if route is None or not local.verification_needed(settings, signer, notifier):
        return None
    return route.channel, route.masked


def _code_words(target: tuple[str, str] | None) -> dict[str, str] | None:
    if target is None:
        return None
    channel, masked = target
    zh, en = ("手机", "mobile") if channel == "sms" else ("邮箱", "email")
    return {"zh": zh, "en": en, "to": masked}


def _party(signer: LocalSigner) -> dict[str, Any] | None:
    """For a company's signatory: whom they sign for, and that its seal is applied with their signature."""
    if not signer.org_name:
        return None
    kind = signer.seal_kind or "公章"
    return {"name": signer.org_name, "seal": signer.seal, "kind": kind,
            "kind_en": "contract seal" if kind == "合同专用章" else "seal"}


# ---- one-tap signing (chat single sign-on) ---------------------------------------------------


def _verified_words(proof: SsoProof | None) -> dict[str, str] | None:
    if proof is None:
        return None
    zh, en = PLATFORM_WORDS.get(proof.platform, (proof.platform, proof.platform))
    return {"platform_zh": zh, "platform_en": en, "name": proof.name, "method": proof.method}


def _start_words(token: str, platform: str | None) -> dict[str, str] | None:
    if platform is None:
        return None
    zh, en = PLATFORM_WORDS.get(platform, (platform, platform))
    return {"url": f"/sign/{token}/sso", "platform": platform, "platform_zh": zh, "platform_en": en}


def secure_cookies(settings: Settings) -> bool:
    return settings.public_url.startswith("https://")


def with_session(settings: Settings, resp: Response, verified: chat_sso.Verified) -> Response:
    """The verified session, for this link's pages only (path `/sign/<token>`), HttpOnly, Lax."""
    resp.set_cookie(chat_sso.SESSION_COOKIE, verified.session, max_age=int(chat_sso.SESSION_TTL.total_seconds()),
                    path=f"/sign/{verified.token}", secure=secure_cookies(settings), httponly=True, samesite="lax")
    return resp


def _proof(request: Request, engine: Engine, token: str) -> tuple[chat_sso.Link | None, SsoProof | None]:
    link = chat_sso.open_link(engine, token)
    if isinstance(link, local.LinkProblem):
        return None, None
    return link, chat_sso.proof(engine, request.cookies.get(chat_sso.SESSION_COOKIE), link)


def _verified(request: Request, engine: Engine, token: str) -> SsoProof | None:
    """What the browser's chat sign-in proves on this link; without a session cookie nothing, and
    no database lookups (the signing POST looks the link up itself)."""
    if not request.cookies.get(chat_sso.SESSION_COOKIE):
        return None
    return _proof(request, engine, token)[1]


def sso_refused_page(request: Request, failed: chat_sso.SsoFailed) -> Response:
    """Why the sign-in proved nothing, and the way on: the same link, signing by typed name."""
    refused = failed.refused
    if _wants_json(request):
        return _secure(JSONResponse(error_body(refused.code, f"{refused.zh} / {refused.en}"),
                                    status_code=failed.status))
    back = f"/sign/{failed.token}?manual=1" if failed.token else None
    return _secure(page_render.message(("身份验证未通过", "Sign-in not accepted"), [(refused.zh, refused.en)],
                                       status=failed.status, error=True, back=back,
                                       back_words=("回到签署页面，输入姓名签署",
                                                   "Back to the signing page, to sign by name")))


def _assertion(request: Request, settings: Settings, engine: Engine, token: str, assertion: str) -> Response:
    """`?sso=<assertion>` from the webhook IM: redeemed once, then the clean link with a session."""
    link = chat_sso.open_link(engine, token)
    if isinstance(link, local.LinkProblem):
        return _problem(request, link, download_url=_gone_download(settings, engine, token, link))
    if chat_sso.proof(engine, request.cookies.get(chat_sso.SESSION_COOKIE), link) is not None:
        return _secure(RedirectResponse(f"/sign/{token}", 303))  # a reload: this browser is verified already
    ip, user_agent = _who(request)
    try:
        verified = chat_sso.redeem_assertion(engine, settings, link, assertion, ip, user_agent)
    except chat_sso.SsoFailed as failed:
        return sso_refused_page(request, failed)
    clean = RedirectResponse(f"/sign/{token}", 303)
    return _secure(with_session(settings, clean, verified) if verified else clean)


# ---- routes --------------------------------------------------------------------------------


SIGN_IN: dict[int | str, dict[str, Any]] = {303: {
    "description": "To the chat's sign-in, or (after `sso=`) to the page without the assertion"}}


@router.get("/sign/{token}", response_class=Response,
            responses={**PAGE, **SIGN_IN, **responses(403, 404, 410, media_type=HTML)})
async def sign_page(token: str, request: Request, settings: SettingsDep, engine: EngineDep,
                    blobs: BlobsDep, ssos: SsosDep, notifier: NotifierDep,
                    sso: Annotated[str | None, Query(max_length=2048, description=(
                        "The webhook IM's signed assertion of who opened the link (`<payload>.<sig>`)"))] = None,
                    via: Annotated[str | None, Query(max_length=32, description=(
                        "The chat the link was opened in: start its sign-in"))] = None,
                    manual: Annotated[str | None, Query(max_length=1, description=(
                        "`1`: do not start the chat's sign-in by itself"))] = None) -> Response:
    """The signing page. `sso=<assertion>`: the webhook IM vouches for who opened it (redeemed once,
    then the page again without it). Opened in the in-app browser of the chat the request came from
    (or with `via=<platform>`), the page starts that chat's sign-in by itself unless `manual=1`."""
    if assertion := sso:
        return _assertion(request, settings, engine, token, assertion)
    found = _lookup(engine, token)
    if isinstance(found, local.LinkProblem):
        return _problem(request, found, download_url=_gone_download(settings, engine, token, found))
    signer, flow, doc_name = found
    local.opened(engine, signer, flow, *_who(request))
    link, verified = _proof(request, engine, token)
    offer = chat_sso.offered(ssos, link) if link else None
    target = _code_target(settings, notifier, signer, verified)
    if _wants_json(request):
        views = await _documents(blobs, engine, token, flow, doc_name, with_text=False)
        first = views[0]
        deadline = deadline_words(_deadline(flow, signer), settings)
        return _secure(JSONResponse({
            "status": "open", "signer_id": signer.signer_id, "name": signer.name, "title": flow.title,
            "organisation": {"name": signer.org_name, "seal": signer.seal} if signer.org_name else None,
            "initiator": _asker(engine, flow.request_id), "deadline": _deadline(flow, signer).isoformat(),
            "deadline_words": {"zh": deadline[0], "en": deadline[1]},
            "document": {"name": doc_name, "sha256": flow.original_sha256,
                         "current_sha256": flow.current_sha256, "pages": first.page_count},
            "page_urls": [p.src for p in first.pages],
            "documents": [{"name": doc_name, "sha256": flow.original_sha256, "pages": first.page_count}] + [
                {"name": v.name, "sha256": v.sha256, "current_sha256": v.current_sha256, "pages": v.page_count,
                 "page_urls": [p.src for p in v.pages]} for v in views[1:]],
            "verified": _verified_words(verified),
            "sso": _start_words(token, offer) if offer and not verified else None,
            "code_required": target is not None,
            "code_channel": target[0] if target else None,
            "code_sent_to": target[1] if target else None,
        }))
    if offer and not verified and manual != "1" and \
            (via == offer or in_app_browser(request.headers.get("user-agent")) == offer):
        return _secure(RedirectResponse(f"/sign/{token}/sso", 303))
    return await _sign_page(request, settings, engine, blobs, token, signer, flow, doc_name, verified=verified,
                            offer=offer, notifier=notifier)


# The "send code" button's form carries no field: the link says who the code is for.
CODE_BODY: dict[str, Any] = {"requestBody": {"required": False, "description": "Empty: the form has only its button",
                                             "content": {"application/x-www-form-urlencoded": {"schema": {
                                                 "type": "object", "properties": {}}}}}}


@router.post("/sign/{token}/code", response_class=Response, openapi_extra=CODE_BODY,
             responses={**PAGE, **responses(400, 404, 410, 429, 503, media_type=HTML)})
async def send_code(token: str, request: Request, settings: SettingsDep, engine: EngineDep, blobs: BlobsDep,
                    notifier: NotifierDep) -> Response:
    """Send a one-time code to the signer's mobile (SMS) or email: 6 digits, valid 10 minutes,
    at most one a minute (429 + Retry-After); the page then asks for it."""
    ip, user_agent = _who(request)
    try:
        sent = await local.request_code(settings, engine, notifier, token, ip=ip, user_agent=user_agent)
    except local.LinkProblem as problem:
        return _problem(request, problem, back=f"/sign/{token}")
    if _wants_json(request):
        return _secure(JSONResponse({"status": "sent", "channel": sent.channel, "sent_to": sent.sent_to,
                                     "valid_minutes": sent.valid_minutes}))
    found = _lookup(engine, token)
    if isinstance(found, local.LinkProblem):
        return _problem(request, found)
    where = "手机" if sent.channel == "sms" else "邮箱"
    notice = (f"验证码已发送至{where} {sent.sent_to}，{sent.valid_minutes} 分钟内有效。"
              f" / The code was sent to {sent.sent_to}; it is valid for {sent.valid_minutes} minutes.")
    verified = _verified(request, engine, token)
    return await _sign_page(request, settings, engine, blobs, token, *found, verified=verified, notifier=notifier,
                            notice=notice)


@router.get("/sign/{token}/sso", response_class=Response, responses={303: {"description": "To the chat's sign-in"},
                                                                     **responses(404, 410, media_type=HTML)})
async def start_sso(token: str, request: Request, settings: SettingsDep, engine: EngineDep,
                    ssos: SsosDep) -> Response:
    """Begin the chat's sign-in for this link: a single-use `state`, then the platform's authorize URL."""
    link = chat_sso.open_link(engine, token)
    if isinstance(link, local.LinkProblem):
        return _problem(request, link)
    platform = chat_sso.offered(ssos, link)
    sso: ChatSso | None = ssos.get(platform) if platform else None
    if sso is None:
        return _problem(request, local.LinkProblem("unknown", "sso_not_offered", "此链接不支持聊天身份验证",
                                                   "This link does not offer a chat sign-in"))
    resp = RedirectResponse(chat_sso.begin(engine, settings, sso, link), 303)
    resp.set_cookie(chat_sso.LINK_COOKIE, token, max_age=int(chat_sso.STATE_TTL.total_seconds()),
                    path=f"/sso/{sso.platform}/callback", secure=secure_cookies(settings), httponly=True,
                    samesite="lax")
    return _secure(resp)


PNG = {200: {"description": "The page as an image", "content": {"image/png": {"schema": {
    "type": "string", "format": "binary"}}}}, **responses(404, 410, media_type=HTML)}


@router.get("/sign/{token}/pages/{page}.png", response_class=Response, responses=PNG)
async def page_png(token: str, page: str, request: Request, settings: SettingsDep, engine: EngineDep,
                   blobs: BlobsDep) -> Response:
    """Page `page` (1-based) of the document; `{page}@2x` and `@3x` are sharper renderings for
    screens of that pixel ratio and for zooming in."""
    return await _page(token, "0", page, request, settings, engine, blobs)


@router.get("/sign/{token}/documents/{document}/pages/{page}.png", response_class=Response, responses=PNG)
async def document_page_png(token: str, document: str, page: str, request: Request, settings: SettingsDep,
                            engine: EngineDep, blobs: BlobsDep) -> Response:
    """A page of the flow's further documents (a request with several)."""
    return await _page(token, document, page, request, settings, engine, blobs)


def _number(value: str) -> int:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= MAX_PAGE_DIGITS else -1


def _page_and_density(value: str) -> tuple[int, int]:
    """"3" → (3, 1); "3@2x" → (3, 2); anything else → (-1, 1)."""
    number, at, density = value.partition("@")
    if not at:
        return _number(number), 1
    d = _number(density.removesuffix("x")) if density.endswith("x") else -1
    return (_number(number), d) if d in DENSITIES else (-1, 1)


async def _page(token: str, document: str, page: str, request: Request, settings: Settings, engine: Engine,
                blobs: BlobStore) -> Response:
    found = _lookup(engine, token)
    if isinstance(found, local.LinkProblem):
        return _problem(request, found)
    flow = found[1]
    no_page = local.LinkProblem("unknown", "page_not_found", "没有这一页", "No such page")
    index = _number(document)
    docs = local_flows.documents(engine, flow.flow_id) if index > 0 else []
    if index < 0 or (index > 0 and index >= len(docs)):
        return _problem(request, no_page)
    blob_key = docs[index].current_blob_key if index > 0 else flow.current_blob_key
    number, density = _page_and_density(page)
    if not 1 <= number <= await _page_count(blobs, blob_key):
        return _problem(request, no_page)
    try:
        png = await asyncio.to_thread(_render_cached, settings, blobs, blob_key, number, density)
    except IndexError:
        return _problem(request, no_page)
    return _secure(Response(png, media_type="image/png"))


async def _form_problem(request: Request, settings: Settings, engine: Engine, blobs: BlobStore, token: str,
                        problem: local.LinkProblem, notifier: Notifier | None = None, **kept: Any) -> Response:
    """A form the signer must correct: the page again, with the reason on top and what they typed
    kept; any other problem (the link died meanwhile) is its own page."""
    if problem.kind != "invalid" or _wants_json(request):
        return _problem(request, problem, back=f"/sign/{token}")
    found = _lookup(engine, token)
    if isinstance(found, local.LinkProblem):
        return _problem(request, found)
    verified = _verified(request, engine, token)
    return await _sign_page(request, settings, engine, blobs, token, *found, status=STATUS[problem.kind],
                            error=problem, verified=verified, notifier=notifier, **kept)


@router.post("/sign/{token}", response_class=Response,
             responses={**PAGE, **responses(400, 404, 410, 422, 429, 503, media_type=HTML)})
async def submit_signature(token: str, request: Request, settings: SettingsDep, engine: EngineDep,
                           blobs: BlobsDep, client: ClientDep, notifier: NotifierDep,
                           name: Annotated[str, Form()] = "", consent: Annotated[str, Form()] = "",
                           code: Annotated[str, Form()] = "") -> Response:
    """Sign: `consent=yes`, and unless chat sign-in verified the signer, `name` (their own) and
    `code` (the one-time code) where a code can reach them."""
    ip, user_agent = _who(request)
    verified = _verified(request, engine, token)
    try:
        result = await local.sign(settings, engine, blobs, token, typed_name=name, consent=consent == "yes",
                                  ip=ip, user_agent=user_agent, code=code[:64], sso=verified, notifier=notifier)
    except local.LinkProblem as problem:
        if problem.event is not None:  # the link just locked: the card says so
            await _deliver(client, engine, problem.event)
        return await _form_problem(request, settings, engine, blobs, token, problem, notifier=notifier,
                                   typed_name=name[:TYPED_NAME_MAX], consent=consent == "yes")
    await _deliver(client, engine, result.event)
    flow = local_flows.flow(engine, result.event.flow_id)
    download = _download_url(settings, engine, flow) if flow else None
    if _wants_json(request):
        return _secure(JSONResponse({"status": "signed", "signer_id": result.signer_id,
                                     "document_sha256": result.document_sha256, "complete": download is not None,
                                     **({"download_url": download} if download else {})}))
    if download:
        lines = [("您已签署，所有签署人都已完成签署。已签文件会发送到聊天中，也可以在这里下载。",
                  "You have signed, and so has everyone else. The signed file is posted in the chat; "
                  "you can also download it here.")]
    else:
        lines = [("您已成功签署，可以关闭此页面。其他签署人完成后，已签文件会发送到聊天中。",
                  "You have signed. You can close this page; the signed file will be posted in the chat "
                  "once everyone has signed.")]
    return _secure(page_render.message(("已签署", "Signed"), lines, sha256=result.document_sha256,
                                       download_url=download))


@router.post("/sign/{token}/decline", response_class=Response,
             responses={**PAGE, **responses(400, 404, 410, 503, media_type=HTML)})
async def submit_decline(token: str, request: Request, settings: SettingsDep, engine: EngineDep, blobs: BlobsDep,
                         client: ClientDep, reason: Annotated[str, Form()] = "") -> Response:
    ip, user_agent = _who(request)
    try:
        event = await local.decline(engine, token, reason=reason, ip=ip, user_agent=user_agent)
    except local.LinkProblem as problem:
        return await _form_problem(request, settings, engine, blobs, token, problem,
                                   reason=reason[:local.MAX_REASON * 2])
    await _deliver(client, engine, event)
    if _wants_json(request):
        return _secure(JSONResponse({"status": "declined", "signer_id": event.signer_id,
                                     "reason": event.reason}))
    return _secure(page_render.message(("已拒绝签署", "Declined"), [
        ("您已拒绝签署，发起人会在聊天中看到您的原因。",
         "You declined to sign. The sender will see your reason in the chat.")]))
