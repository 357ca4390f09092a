"""The built-in provider's signing pages: `GET /sign/{token}` and the form posts under it.

Thin like every handler: the provider (`connectors.esign.local`) checks links and signs; these
routes pick the status code, render Chinese-first pages (or JSON for `Accept: application/json`,
which `signbridge demo` and the tests use) and hand the resulting event to the workflow.

The token is the only credential and it sits in the URL, so every answer is `no-store`, sends
no referrer, cannot be framed and loads nothing from elsewhere (see `SECURITY_HEADERS`).
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pypdf import PdfReader
from sqlalchemy.engine import Engine
from temporalio.client import Client

from api.deps import BlobsDep, ClientDep, EngineDep, NotifierDep, SettingsDep
from api.errors import error_body, responses
from connectors.esign import local
from connectors.notify.registry import Notifier
from signbridge.core.models import ProviderEvent
from signbridge.core.settings import Settings
from signbridge.core.signers import MAX_NAME_CHARS
from signbridge.intake.provider_events import deliver
from signbridge.pdf.render import render_page_png
from store.blobs import BlobStore
from store.files import private_dir
from store.repos import documents, local_flows
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


# ---- responses -----------------------------------------------------------------------------


def _secure(resp: Response) -> Response:
    resp.headers.update(SECURITY_HEADERS)
    return resp


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _problem(request: Request, problem: local.LinkProblem, back: str | None = None) -> Response:
    status = STATUS[problem.kind]
    headers = {"Retry-After": str(max(1, int(problem.retry_after + 0.999)))} if problem.retry_after else {}
    if _wants_json(request):
        message = f"{problem.zh} / {problem.en}"
        return _secure(JSONResponse(error_body(problem.code, message), status_code=status, headers=headers))
    heading = {404: ("链接无效", "This link is not valid"), 410: ("链接已失效", "This link no longer works"),
               400: ("无法提交", "Could not submit"), 503: ("请稍后重试", "Please try again"),
               422: ("无法签署", "This document cannot be signed"), 429: ("请稍后再试", "Please wait")}[status]
    body = f"<p>{_e(problem.zh)}</p><p class=en>{_e(problem.en)}</p>"
    if back and status in (400, 429):
        body += f'<p><a href="{_e(back)}">返回 / Back</a></p>'
    return _secure(HTMLResponse(_layout(heading, body), status_code=status, headers=headers))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


CSS = """
*{box-sizing:border-box}body{margin:0;font:16px/1.6 system-ui,-apple-system,"PingFang SC","Microsoft YaHei",
sans-serif;color:#1f2328;background:#f6f8fa}main{max-width:860px;margin:0 auto;padding:24px 16px 64px}
h1{font-size:1.5rem;margin:.2em 0}.en{color:#59636e;font-size:.92em;margin-top:0}
.card{background:#fff;border:1px solid #d1d9e0;border-radius:10px;padding:16px 20px;margin:16px 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}dt{color:#59636e}
dd{margin:0;overflow-wrap:anywhere}code{font-size:.85em}
.pages img{display:block;width:100%;height:auto;border:1px solid #d1d9e0;margin:12px 0;background:#fff}
label{display:block;margin:10px 0 4px}input[type=text],textarea{width:100%;padding:10px;font:inherit;
border:1px solid #8c959f;border-radius:6px}.check{display:flex;gap:8px;align-items:flex-start}
.check input{margin-top:6px}button{font:inherit;padding:10px 22px;border-radius:6px;border:0;cursor:pointer;
margin-top:12px}.sign{background:#1f883d;color:#fff}.decline{background:#fff;color:#cf222e;
border:1px solid #cf222e}details summary{cursor:pointer;color:#cf222e}
"""


def _layout(heading: tuple[str, str], body: str) -> str:
    zh, en = heading
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{_e(zh)} · SignBridge</title><style>{CSS}</style></head><body><main>"
        f"<h1>{_e(zh)}</h1><p class=en>{_e(en)}</p>{body}</main></body></html>"
    )


def _code_section(base: str, code_to: tuple[str, str, str] | None, notice: str | None) -> tuple[str, str]:
    """(the "send code" form, the code field of the signing form) for a signer who needs a code;
    plain forms, so the page works without JavaScript."""
    if code_to is None:
        return "", ""
    sent = f"<p><strong>{_e(notice)}</strong></p>" if notice else ""
    ask = f"""
<section class=card><form method=post action="{base}/code">
<p>为确认是您本人，请获取验证码，我们会发送到您的{_e(code_to[0])} {_e(code_to[1])}。<br>
<span class=en>To confirm it is you, we send a one-time code to your {_e(code_to[2])} {_e(code_to[1])}.</span></p>{sent}
<button class=decline type=submit>获取验证码 / Send code</button>
</form></section>"""
    field = """
<label for=code>验证码（6 位数字）/ One-time code (6 digits)</label>
<input type=text id=code name=code required inputmode=numeric autocomplete=one-time-code maxlength=6
 pattern="[0-9]{6}">"""
    return ask, field


def _sign_page(token: str, signer: LocalSigner, flow: LocalFlow, doc_name: str, pages: int,
               others: list[tuple[str, str, int]] | None = None, code_to: tuple[str, str, str] | None = None,
               notice: str | None = None) -> str:
    """`others`: the flow's further documents (name, SHA-256, pages); one consent signs them all.
    `code_to`: where a one-time code goes (("手机", "138****1234", "mobile")), None when none is needed."""
    base = f"/sign/{_e(token)}"
    ask_code, code_field = _code_section(base, code_to, notice)
    current = ""
    if flow.version:
        current = (f"<dt>当前版本 / Current version</dt><dd><code>{_e(flow.current_sha256)}</code>"
                   f"（已有 {flow.version} 个签名 / {flow.version} signature(s) so far）</dd>")
    images = "".join(f'<img src="{base}/pages/{n}.png" alt="第 {n} 页 / Page {n}" loading="lazy">'
                     for n in range(1, pages + 1))
    for index, (name, sha, count) in enumerate(others or [], start=1):
        images += (f"<h2>{_e(name)}</h2><p class=en><code>{_e(sha)}</code></p>"
                   + "".join(f'<img src="{base}/documents/{index}/pages/{n}.png" alt="{_e(name)} {n}" loading="lazy">'
                             for n in range(1, count + 1)))
    if others:
        doc_name = f"{doc_name}（共 {len(others) + 1} 份文件 / {len(others) + 1} documents）"
    body = f"""
<section class=card><dl>
<dt>文件 / Document</dt><dd>{_e(doc_name)}</dd>
<dt>SHA-256</dt><dd><code>{_e(flow.original_sha256)}</code></dd>{current}
<dt>签署人 / Signer</dt><dd>{_e(signer.name)}</dd>
<dt>页数 / Pages</dt><dd>{pages}</dd>
</dl></section>
<section class=pages>{images}</section>{ask_code}
<section class=card><form method=post action="{base}">
<label for=name>请输入您的全名以签署 / Type your full name to sign</label>
<input type=text id=name name=name required autocomplete=off maxlength={TYPED_NAME_MAX}
 placeholder="{_e(signer.name)}">{code_field}
<label class=check><input type=checkbox name=consent value=yes required>
<span>我已阅读以上文件，同意以电子签名方式签署，其效力等同于手写签名。<br>
<span class=en>I have read this document and agree to sign it electronically; my electronic signature is
as binding as a handwritten one.</span></span></label>
<button class=sign type=submit>签署 / Sign</button>
</form></section>
<section class=card><details><summary>拒绝签署 / Decline to sign</summary>
<form method=post action="{base}/decline">
<label for=reason>原因（必填）/ Reason (required)</label>
<textarea id=reason name=reason required maxlength={local.MAX_REASON} rows=3></textarea>
<button class=decline type=submit>拒绝签署 / Decline</button>
</form></details></section>"""
    return _layout((flow.title, "Please review and sign"), body)


# ---- helpers -------------------------------------------------------------------------------


def _lookup(engine: Engine, token: str) -> tuple[LocalSigner, LocalFlow, str] | local.LinkProblem:
    """The link's signer, flow and document name — or why the link can't be used."""
    found = local.find_signer_by_token(engine, token)
    if found is None:
        return local.unknown_link()
    signer, flow = found
    problem = local.link_problem(signer, flow, utcnow())
    return problem or (signer, flow, documents.name_of(engine, flow.original_sha256) or flow.title)


_PAGE_COUNTS: dict[str, int] = {}


def _count_pages(data: bytes) -> int:
    """The document was checked (`check_pdf`) before the flow began; here only the count is needed."""
    return len(PdfReader(BytesIO(data)).pages)


async def _page_count(blobs: BlobStore, blob_key: str) -> int:
    """Pages of a stored version; versions never change (content-addressed), so cache forever."""
    if blob_key not in _PAGE_COUNTS:
        count = await asyncio.to_thread(_count_pages, blobs.get(blob_key))
        if len(_PAGE_COUNTS) > 4096:
            _PAGE_COUNTS.clear()
        _PAGE_COUNTS[blob_key] = count
    return _PAGE_COUNTS[blob_key]


def _render_cached(settings: Settings, blobs: BlobStore, blob_key: str, page: int) -> bytes:
    """Runs in a thread: the PNG from the disk cache, or rendered and cached (written atomically)."""
    path = settings.data_dir / "pages" / f"{blob_key}-{page}.png"
    if path.exists():
        return path.read_bytes()
    png = render_page_png(blobs.get(blob_key), page - 1)
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
    """Best effort: the event is already stored, and the workflow's `poll` fallback replays it."""
    try:
        async with asyncio.timeout(DELIVERY_TIMEOUT_SECONDS):
            await deliver(client, engine, event)
    except Exception as e:  # any failure is covered by polling; never fail the signer's request
        log.warning("could not deliver %s to its workflow (polling will pick it up): %s", event.event_id, e)


def _sso(request: Request) -> object | None:
    """What chat single sign-on established for this browser (`local.verified_by_sso` reads it);
    nothing yet: every signer who needs a code enters one."""
    return None


def _who(request: Request) -> tuple[str | None, str | None]:
    """The signer's IP and User-Agent, for the audit trail."""
    return (request.client.host if request.client else None), request.headers.get("user-agent")


# ---- routes --------------------------------------------------------------------------------


@router.get("/sign/{token}", response_class=Response, responses={**PAGE, **responses(404, 410, media_type=HTML)})
async def sign_page(token: str, request: Request, settings: SettingsDep, engine: EngineDep,
                    blobs: BlobsDep, notifier: NotifierDep) -> Response:
    return await _render(token, request, settings, engine, blobs, notifier)


def _code_target(settings: Settings, notifier: Notifier, signer: LocalSigner) -> tuple[str, str] | None:
    """Where this signer's code would go, masked: (channel, shown address); None: no code needed."""
    route = notifier.route(signer.email, signer.mobile)
    if route is None or not local.verification_needed(settings, signer, notifier):
        return None
    return route.channel, route.masked


def _code_words(target: tuple[str, str] | None) -> tuple[str, str, str] | None:
    if target is None:
        return None
    channel, masked = target
    return ("手机", masked, "mobile") if channel == "sms" else ("邮箱", masked, "email")


async def _render(token: str, request: Request, settings: Settings, engine: Engine, blobs: BlobStore,
                  notifier: Notifier, notice: str | None = None,
                  sent: local.CodeSent | None = None) -> Response:
    found = _lookup(engine, token)
    if isinstance(found, local.LinkProblem):
        return _problem(request, found)
    signer, flow, doc_name = found
    pages = await _page_count(blobs, flow.current_blob_key)
    others = [(d.name, d.original_sha256, d.current_blob_key, await _page_count(blobs, d.current_blob_key))
              for d in local_flows.documents(engine, flow.flow_id)[1:]]
    target = _code_target(settings, notifier, signer)
    if _wants_json(request):
        return _secure(JSONResponse({
            "status": "open", "signer_id": signer.signer_id, "name": signer.name, "title": flow.title,
            "code_required": target is not None,
            "code_channel": (target[0] or None) if target else None,
            "code_sent_to": (target[1] or None) if target else None,
            "document": {"name": doc_name, "sha256": flow.original_sha256,
                         "current_sha256": flow.current_sha256, "pages": pages},
            "page_urls": [f"/sign/{token}/pages/{n}.png" for n in range(1, pages + 1)],
            "documents": [{"name": doc_name, "sha256": flow.original_sha256, "pages": pages}] + [
                {"name": name, "sha256": sha, "current_sha256": key, "pages": count,
                 "page_urls": [f"/sign/{token}/documents/{i}/pages/{n}.png" for n in range(1, count + 1)]}
                for i, (name, sha, key, count) in enumerate(others, start=1)],
        }))
    return _secure(HTMLResponse(_sign_page(token, signer, flow, doc_name, pages,
                                           [(name, sha, count) for name, sha, _, count in others],
                                           code_to=_code_words(target), notice=notice)))


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
    where = "手机" if sent.channel == "sms" else "邮箱"
    notice = (f"验证码已发送至{where} {sent.sent_to}，{sent.valid_minutes} 分钟内有效。"
              f" / The code was sent to {sent.sent_to}; it is valid for {sent.valid_minutes} minutes.")
    return await _render(token, request, settings, engine, blobs, notifier, notice=notice)


PNG = {200: {"description": "The page as an image", "content": {"image/png": {"schema": {
    "type": "string", "format": "binary"}}}}, **responses(404, 410, media_type=HTML)}


@router.get("/sign/{token}/pages/{page}.png", response_class=Response, responses=PNG)
async def page_png(token: str, page: str, request: Request, settings: SettingsDep, engine: EngineDep,
                   blobs: BlobsDep) -> Response:
    return await _page(token, "0", page, request, settings, engine, blobs)


@router.get("/sign/{token}/documents/{document}/pages/{page}.png", response_class=Response, responses=PNG)
async def document_page_png(token: str, document: str, page: str, request: Request, settings: SettingsDep,
                            engine: EngineDep, blobs: BlobsDep) -> Response:
    """A page of the flow's further documents (a request with several)."""
    return await _page(token, document, page, request, settings, engine, blobs)


def _number(value: str) -> int:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= MAX_PAGE_DIGITS else -1


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
    number = _number(page)
    if not 1 <= number <= await _page_count(blobs, blob_key):
        return _problem(request, no_page)
    try:
        png = await asyncio.to_thread(_render_cached, settings, blobs, blob_key, number)
    except IndexError:
        return _problem(request, local.LinkProblem("unknown", "page_not_found", "没有这一页", "No such page"))
    return _secure(Response(png, media_type="image/png"))


@router.post("/sign/{token}", response_class=Response,
             responses={**PAGE, **responses(400, 404, 410, 422, 503, media_type=HTML)})
async def submit_signature(token: str, request: Request, settings: SettingsDep, engine: EngineDep,
                           blobs: BlobsDep, client: ClientDep, notifier: NotifierDep,
                           name: Annotated[str, Form()] = "", consent: Annotated[str, Form()] = "",
                           code: Annotated[str, Form()] = "") -> Response:
    """Sign: `name` (the signer's own), `consent=yes`, and `code` (the one-time code) unless the
    signer is verified otherwise."""
    ip, user_agent = _who(request)
    try:
        result = await local.sign(settings, engine, blobs, token, typed_name=name, consent=consent == "yes",
                                  ip=ip, user_agent=user_agent, code=code[:64], sso=_sso(request),
                                  notifier=notifier)
    except local.LinkProblem as problem:
        if problem.event is not None:  # the link just locked: the card says so
            await _deliver(client, engine, problem.event)
        return _problem(request, problem, back=f"/sign/{token}")
    await _deliver(client, engine, result.event)
    if _wants_json(request):
        return _secure(JSONResponse({"status": "signed", "signer_id": result.signer_id,
                                     "document_sha256": result.document_sha256}))
    body = (f"<section class=card><p>您已成功签署，可以关闭此页面。签署完成后，文件会发送到聊天中。</p>"
            f"<p class=en>You have signed. You can close this page; the signed file will be posted in the "
            f"chat once everyone has signed.</p><dl><dt>SHA-256</dt><dd><code>{_e(result.document_sha256)}</code>"
            f"</dd></dl></section>")
    return _secure(HTMLResponse(_layout(("已签署", "Signed"), body)))


@router.post("/sign/{token}/decline", response_class=Response,
             responses={**PAGE, **responses(400, 404, 410, 503, media_type=HTML)})
async def submit_decline(token: str, request: Request, engine: EngineDep, client: ClientDep,
                         reason: Annotated[str, Form()] = "") -> Response:
    ip, user_agent = _who(request)
    try:
        event = await local.decline(engine, token, reason=reason, ip=ip, user_agent=user_agent)
    except local.LinkProblem as problem:
        return _problem(request, problem, back=f"/sign/{token}")
    await _deliver(client, engine, event)
    if _wants_json(request):
        return _secure(JSONResponse({"status": "declined", "signer_id": event.signer_id,
                                     "reason": event.reason}))
    body = ("<section class=card><p>您已拒绝签署，发起人会在聊天中看到您的原因。</p>"
            "<p class=en>You declined to sign. The sender will see your reason in the chat.</p></section>")
    return _secure(HTMLResponse(_layout(("已拒绝签署", "Declined"), body)))
