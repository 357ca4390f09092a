"""`GET /sso/{platform}/callback`: where a chat platform's sign-in comes back (one-tap signing).

Thin: `signbridge.intake.sso.finish` checks the single-use `state` against the browser's cookie,
has the platform exchange the code and compares the user with the link's signer. A verified
browser gets its session cookie (scoped to the link) and goes back to the signing page; anything
else is a page that says why (recorded in the request's audit trail), with the way to sign by
typed name instead. Nothing is ever signed here.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from api import page_render
from api.deps import EngineDep, SettingsDep, SsosDep
from api.errors import responses
from api.sign_pages import HTML, _secure, _who, sso_refused_page, with_session
from signbridge.core.sso import PLATFORM_WORDS, SsoUnavailable
from signbridge.intake import sso as chat_sso

router = APIRouter(tags=["signing pages"])


@router.get("/sso/{platform}/callback", response_class=Response, responses={
    303: {"description": "Verified: back to the signing page"}, **responses(403, 404, 410, 503, media_type=HTML)})
async def callback(platform: str, request: Request, settings: SettingsDep, engine: EngineDep,
                   ssos: SsosDep) -> Response:
    ip, user_agent = _who(request)
    link_token = request.cookies.get(chat_sso.LINK_COOKIE)
    try:
        verified = await chat_sso.finish(engine, settings, ssos, platform, dict(request.query_params), link_token,
                                         ip, user_agent)
    except chat_sso.SsoFailed as failed:
        return sso_refused_page(request, failed)
    except SsoUnavailable:
        zh, en = PLATFORM_WORDS.get(platform, (platform, platform))
        back = f"/sign/{link_token}?manual=1" if link_token else None
        return _secure(page_render.message(("请稍后重试", "Please try again"), [
            (f"{zh}暂时无法确认您的身份，请稍后重试，或输入姓名签署。",
             f"{en} could not confirm who you are just now; try again shortly, or type your name to sign.")],
            status=503, error=True, back=back, back_words=("回到签署页面", "Back to the signing page")))
    # The link cookie stays until it expires (minutes): a replayed or stripped callback from this
    # browser can then still be put on the right request's audit trail.
    return _secure(with_session(settings, RedirectResponse(f"/sign/{verified.token}", 303), verified))
