"""DocuSign embedded signing through a SignBridge link: `GET /esign/docusign/sign/{token}`.

DocuSign's recipient-view URL is single-use and expires 5 minutes after it is made, but chat
links are clicked hours later (and reminders re-post the same link). So the chat gets a
SignBridge link (minted by `DocuSignProvider.open_group`, 256-bit token, only its SHA-256 stored,
bound to one envelope recipient, valid until the request's deadline) and every click here:

1. looks the token up — unknown → 404, past the deadline → 410, both without calling DocuSign;
2. asks the connector for a FRESH recipient view (`recipient_view`) and answers 303 to it;
3. a signer who already signed or declined, or a closed envelope, gets a page saying so;
   DocuSign failing gets a 502 page asking to try again (never a stack trace).

DocuSign sends the signer back to `GET /esign/docusign/return?event=...`: a "done, you can close
this" page only. Status comes from the Connect webhook (and polling), never from this redirect,
which anyone can forge.

Chat platforms fetch links to build previews; those fetches get a plain page and make no DocuSign
call (each would spend API quota and a view). Like `api/sign_pages.py`, every answer is
`no-store`, sends no referrer (the token is in the URL) and cannot be framed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.engine import Engine

from api import page_render
from api.deps import EngineDep, SettingsDep
from api.errors import responses
from api.sign_pages import SECURITY_HEADERS
from connectors.esign import docusign
from connectors.esign.base import NothingToSign, ProviderError, RecipientViews
from signbridge.core.settings import Settings
from store.blobs import BlobStore
from store.repos import provider_links
from store.tables import ProviderLink, utcnow

log = logging.getLogger(__name__)

router = APIRouter(tags=["signing pages"])

VIEW_TIMEOUT_SECONDS = 15.0  # the signer is waiting on this page
MAX_TOKEN_LENGTH = 200
# Link-preview fetchers (User-Agent substrings, lower case): they must not mint views.
PREVIEW_AGENTS = ("slackbot", "slack-imgproxy", "facebookexternalhit", "twitterbot", "discordbot", "telegrambot",
                  "linkedinbot", "whatsapp", "skypeuripreview", "microsoftpreview", "embedly", "bitlybot")


def now() -> datetime:
    """The clock links are checked against (tests move it)."""
    return utcnow()


# ---- pages ---------------------------------------------------------------------------------


def _page(status: int, zh: tuple[str, str], en: tuple[str, str]) -> Response:
    """A bilingual page: (heading, text) in Chinese, then in English (the signing pages' template)."""
    return _secure(page_render.message((zh[0], en[0]), [(zh[1], en[1])], status=status, error=status >= 400))


def _secure(resp: Response) -> Response:
    resp.headers.update(SECURITY_HEADERS)
    return resp


NOT_FOUND = (404, ("链接无效", "请检查链接是否完整，或在聊天中打开最新的签署链接。"),
             ("This link is not valid",
              "Check that the link is complete, or open the latest signing link in the chat."))
EXPIRED = (410, ("链接已过期", "签署期限已过。如仍需签署，请联系发起人重新发起。"),
           ("This link has expired", "The signing deadline has passed. Ask the sender to start a new request."))
PREVIEW = (200, ("DocuSign 签署", "打开此链接即可在 DocuSign 上签署。"),
           ("DocuSign signing", "Open this link to sign on DocuSign."))
NOT_CONFIGURED = (503, ("暂时无法签署", "此服务器未配置 DocuSign，请联系管理员。"),
                  ("Signing is not available", "DocuSign is not configured on this server; contact your admin."))
UNAVAILABLE = (502, ("DocuSign 暂时无法打开", "DocuSign 暂时没有响应。请稍等一分钟后重试：再次点击聊天中的链接即可。"),
               ("DocuSign could not be opened", "DocuSign is not answering right now. Please wait a minute and "
                "try again: click the link in the chat once more."))
FINISHED = {
    "signed": (200, ("您已签署", "无需再次签署，可以关闭此页面。所有人签署后，文件会发送到聊天中。"),
               ("You have already signed", "There is nothing more to do; you can close this page. "
                "The signed file will be posted in the chat once everyone has signed.")),
    "declined": (200, ("您已拒绝签署", "发起人会在聊天中看到。可以关闭此页面。"),
                 ("You declined to sign", "The sender can see this in the chat. You can close this page.")),
    "closed": (410, ("签署已结束", "此签署请求已完成、被撤回或已过期，无需再签署。"),
               ("This signing request is closed", "It was completed, cancelled or has expired; "
                "there is nothing to sign.")),
}
RETURNED = {
    "signing_complete": (("签署完成", "您已签署，可以关闭此页面。所有人签署后，文件会发送到聊天中。"),
                         ("Signed", "You can close this page. The signed file will be posted in the chat "
                          "once everyone has signed.")),
    "decline": (("已拒绝签署", "发起人会在聊天中看到。可以关闭此页面。"),
                ("You declined to sign", "The sender can see this in the chat. You can close this page.")),
    "cancel": (("尚未签署", "您暂时离开了签署页面。需要签署时，再次点击聊天中的链接即可。"),
               ("Not signed yet", "You left without signing. Click the link in the chat again when you are ready.")),
    "session_timeout": (("会话已超时", "请再次点击聊天中的链接继续签署。"),
                        ("The session timed out", "Click the link in the chat again to continue.")),
    "ttl_expired": (("会话已超时", "请再次点击聊天中的链接继续签署。"),
                    ("The session timed out", "Click the link in the chat again to continue.")),
}
RETURNED_DEFAULT = (("已返回", "可以关闭此页面。"), ("Done", "You can close this page."))


# ---- helpers -------------------------------------------------------------------------------


def find_link(engine: Engine, token: str) -> ProviderLink | None:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    link = provider_links.by_token_hash(engine, docusign.link_token_hash(token))
    return link if link is not None and link.provider == docusign.PROVIDER else None


def _is_preview(request: Request) -> bool:
    agent = request.headers.get("user-agent", "").lower()
    return any(name in agent for name in PREVIEW_AGENTS)


@asynccontextmanager
async def docusign_views(settings: Settings, engine: Engine, blobs: BlobStore) -> AsyncIterator[RecipientViews | None]:
    """The API process's DocuSign connector for the app's lifetime (its access token is cached
    with it, its connections closed at shutdown); None when DocuSign is not configured."""
    if not docusign.DocuSignConfig().enabled:
        yield None
        return
    async with httpx.AsyncClient(timeout=VIEW_TIMEOUT_SECONDS) as http:
        yield docusign.build(settings, engine, blobs, http)


# ---- routes --------------------------------------------------------------------------------


@router.get("/esign/docusign/sign/{token}", response_class=Response, responses={
    200: {"description": "A page saying why there is nothing to sign", "content": {"text/html": {}}},
    303: {"description": "To DocuSign's signing page, made for this click"},
    **responses(404, 410, 502, 503, media_type="text/html")})
async def docusign_sign(token: str, request: Request, settings: SettingsDep, engine: EngineDep) -> Response:
    link = find_link(engine, token)
    if link is None:
        return _page(*NOT_FOUND)
    if link.expires_at <= now():
        return _page(*EXPIRED)
    if _is_preview(request):
        return _page(*PREVIEW)
    provider: RecipientViews | None = request.app.state.docusign_views
    if provider is None:
        return _page(*NOT_CONFIGURED)
    try:
        url = await provider.recipient_view(link.flow_id, link.signer_id,
                                            f"{settings.public_url}/esign/docusign/return")
    except NothingToSign as done:
        return _page(*FINISHED[done.state])
    except ProviderError as e:
        log.warning("DocuSign recipient view for %s/%s failed: %s", link.flow_id, link.signer_id, e)
        return _page(*UNAVAILABLE)
    except Exception:  # whatever it is, the signer sees a retry page, the log gets the trace
        log.exception("DocuSign recipient view for %s/%s failed", link.flow_id, link.signer_id)
        return _page(*UNAVAILABLE)
    log.info("DocuSign recipient view opened for %s/%s", link.flow_id, link.signer_id)
    return _secure(RedirectResponse(url, status_code=303))


@router.get("/esign/docusign/return", response_class=Response,
            responses={200: {"description": "A page", "content": {"text/html": {}}}})
async def docusign_return(event: str = "") -> Response:
    """Where DocuSign sends the signer afterwards (`?event=signing_complete|decline|cancel|...`).
    Informational only: the Connect webhook is the source of truth for the signer's status."""
    zh, en = RETURNED.get(event, RETURNED_DEFAULT)
    return _page(200, zh, en)
