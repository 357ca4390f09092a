"""One-tap signing for Feishu/Lark: the web app OAuth flow (网页应用登录).

`GET accounts.feishu.cn/open-apis/authen/v1/authorize?client_id&redirect_uri&state` — inside the
Feishu client the consent page is skipped — comes back with a `code` (5 minutes, single use),
exchanged at `POST /open-apis/authen/v2/oauth/token` (RFC 6749 body: grant_type, client_id,
client_secret, code, redirect_uri) for a user_access_token, which reads
`GET /open-apis/authen/v1/user_info`: `open_id` (what SignBridge's `Person.id` is on Feishu),
`tenant_key`, `name`. Error 20010: the user may not use the app (its 可用范围).

Settings `SIGNBRIDGE_FEISHU_SSO_*`; off until `ENABLED=true`, because the redirect URL
`{SIGNBRIDGE_PUBLIC_URL}/sso/feishu/callback` must first be registered in the app's 安全设置.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.chat.feishu.client import PLATFORM, FeishuConfig
from connectors.chat.sso import call, code_refused, the_code
from signbridge.core.settings import Settings
from signbridge.core.sso import ChatIdentity, SsoRefused, SsoUnavailable

NO_PERMISSION = 20010
RETRY_LATER = frozenset({20050})  # "server error, try again" (unconfirmed beyond the doc's table)


class FeishuSsoConfig(BaseSettings):
    """`SIGNBRIDGE_FEISHU_SSO_*` (Lark: accounts.larksuite.com / open.larksuite.com)."""

    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_FEISHU_SSO_", env_file=None, extra="ignore")

    enabled: bool = False
    authorize_url: str = "https://accounts.feishu.cn/open-apis/authen/v1/authorize"
    token_url: str = ""  # empty: {SIGNBRIDGE_FEISHU_API_BASE}/open-apis/authen/v2/oauth/token


class FeishuSso:
    platform = PLATFORM

    def __init__(self, app: FeishuConfig, config: FeishuSsoConfig, http: httpx.AsyncClient) -> None:
        self.app = app
        self.config = config
        self.http = http

    def authorize_url(self, redirect_uri: str, state: str, nonce: str, tenant: str | None = None) -> str:
        query = {"client_id": self.app.app_id, "redirect_uri": redirect_uri, "state": state}
        return f"{self.config.authorize_url}?{urlencode(query)}"

    async def identify(self, query: Mapping[str, str], redirect_uri: str, nonce: str) -> ChatIdentity:
        token_url = self.config.token_url or f"{self.app.base}/open-apis/authen/v2/oauth/token"
        _, token = await call(self.http, "POST", token_url, "Feishu oauth/token", self.app.timeout_seconds, json={
            "grant_type": "authorization_code", "client_id": self.app.app_id,
            "client_secret": self.app.app_secret.get_secret_value(), "code": the_code(query),
            "redirect_uri": redirect_uri})
        code = int(token.get("code") or 0)
        if code == NO_PERMISSION:
            raise SsoRefused("sso_no_permission", "您没有使用此飞书应用的权限，请联系管理员或输入姓名签署",
                             "You may not use this Feishu app (ask your admin), or type your name to sign")
        if code in RETRY_LATER:
            raise SsoUnavailable(f"Feishu oauth/token: {code}")
        if code or not token.get("access_token"):
            raise code_refused("Feishu", f"{code} {token.get('error') or ''} {token.get('error_description') or ''}")
        _, info = await call(self.http, "GET", f"{self.app.base}/open-apis/authen/v1/user_info",
                             "Feishu user_info", self.app.timeout_seconds,
                             headers={"Authorization": f"Bearer {token['access_token']}"})
        data = info.get("data") or {}
        if int(info.get("code") or 0) or not isinstance(data, dict) or not data.get("open_id"):
            raise code_refused("Feishu", f"user_info {info.get('code')} {info.get('msg') or ''}")
        return ChatIdentity(PLATFORM, str(data["open_id"]), str(data.get("name") or ""),
                            str(data.get("tenant_key") or "") or None)


def build(settings: Settings, http: httpx.AsyncClient, chat: object | None) -> FeishuSso | None:
    config, app = FeishuSsoConfig(), FeishuConfig()
    return FeishuSso(app, config, http) if config.enabled and app.enabled else None
