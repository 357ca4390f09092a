"""What the chat platforms' single sign-on pieces share (`connectors/chat/<platform>/sso.py`).

Each piece is an OAuth 2.0 client of its platform: `authorize_url` is where the signer's browser
goes (inside the chat app the platform skips its consent page and comes straight back), and
`identify` turns the callback's query (`code`, or DingTalk's `authCode`) into a `ChatIdentity`
through the platform's documented token and user-info endpoints. None of the platforms binds
the code to SignBridge's signing session; the caller does that with `state` (see
`signbridge/intake/sso.py`). Errors split the usual way: `SsoRefused` when the platform refused
the code or the user (the page says so; retrying the same code cannot help), `SsoUnavailable`
when it did not answer (network, 5xx, rate limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from connectors.chat.base import ChatRejected, ChatUnavailable
from signbridge.core.sso import ChatIdentity, SsoRefused, SsoUnavailable


class ChatSso(Protocol):
    platform: str

    def authorize_url(self, redirect_uri: str, state: str, nonce: str, tenant: str | None = None) -> str:
        """Where the browser signs in; the platform comes back to `redirect_uri?code=…&state=…`."""
        ...

    async def identify(self, query: Mapping[str, str], redirect_uri: str, nonce: str) -> ChatIdentity:
        """The platform user behind the callback's code (exchanged once, server-side)."""
        ...


def code_refused(platform: str, detail: str) -> SsoRefused:
    return SsoRefused("sso_code_invalid", "登录凭证无效或已使用，请回到聊天中重新打开签署链接",
                      f"The sign-in did not work ({platform}: {detail[:120]}); open the signing link "
                      "from the chat again")


def cancelled(query: Mapping[str, str]) -> SsoRefused | None:
    """The platform came back with an error instead of a code (the user declined, or a setup problem)."""
    error = query.get("error") or query.get("error_code")
    if error is None and (query.get("code") or query.get("authCode")):
        return None
    return SsoRefused("sso_cancelled", "未完成聊天身份验证，请重试或输入姓名签署",
                      f"The chat sign-in was not completed ({(error or 'no code')[:80]})")


def the_code(query: Mapping[str, str]) -> str:
    code = query.get("code") or query.get("authCode") or ""
    if not code or len(code) > 1024:
        raise code_refused("callback", "no usable code")
    return code


async def call(http: httpx.AsyncClient, method: str, url: str, who: str, timeout: float = 10.0,
               **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """One request; (status, JSON object). No answer, 5xx or 429 is `SsoUnavailable`."""
    try:
        resp = await http.request(method, url, timeout=timeout, **kwargs)
    except httpx.HTTPError as e:
        raise SsoUnavailable(f"{who}: {type(e).__name__}: {e}") from e
    if resp.status_code >= 500 or resp.status_code == 429:
        raise SsoUnavailable(f"{who}: HTTP {resp.status_code}")
    try:
        data = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise SsoUnavailable(f"{who}: HTTP {resp.status_code} without a JSON object")
    return resp.status_code, data


async def through_app(platform: str, call_app: Any) -> Any:
    """An app-token API call made through the platform's chat connector, its errors as SSO errors."""
    try:
        return await call_app
    except ChatUnavailable as e:
        raise SsoUnavailable(str(e)) from e
    except ChatRejected as e:
        raise code_refused(platform, str(e)) from e
