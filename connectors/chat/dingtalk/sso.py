"""One-tap signing for DingTalk: OAuth 2.0 web login, which also works inside the DingTalk client.

`GET login.dingtalk.com/oauth2/auth?redirect_uri&response_type=code&client_id=<AppKey>&scope=openid
&state&prompt=consent` comes back with `authCode` (5 minutes, single use), exchanged at
`POST /v1.0/oauth2/userAccessToken {clientId, clientSecret, code, grantType}` for a user token;
`GET /v1.0/contact/users/me` (header `x-acs-dingtalk-access-token`) names the user by `unionId`,
and the app's `POST oapi /topapi/user/getbyunionid {unionid}` gives the org `userid` — the id
SignBridge's `Person.id` carries on DingTalk (a staffId). Someone outside the organisation has no
userid (errcode 60121): refused.

Settings `SIGNBRIDGE_DINGTALK_SSO_*`; off until `ENABLED=true` (register
`{SIGNBRIDGE_PUBLIC_URL}/sso/dingtalk/callback` as the app's redirect URL first). The app needs
the personal permission `Contact.User.Read`.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.chat.base import ChatRejected, ChatUnavailable
from connectors.chat.dingtalk.client import PLATFORM, DingTalkChat
from connectors.chat.sso import call, code_refused, the_code
from signbridge.core.settings import Settings
from signbridge.core.sso import ChatIdentity, SsoRefused, SsoUnavailable

NOT_IN_ORG = frozenset({"60121", "33012"})


class DingTalkSsoConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_DINGTALK_SSO_", env_file=None, extra="ignore")

    enabled: bool = False
    authorize_url: str = "https://login.dingtalk.com/oauth2/auth"


class DingTalkSso:
    platform = PLATFORM

    def __init__(self, chat: DingTalkChat, config: DingTalkSsoConfig, http: httpx.AsyncClient) -> None:
        self.chat = chat
        self.config = config
        self.http = http

    def authorize_url(self, redirect_uri: str, state: str, nonce: str, tenant: str | None = None) -> str:
        query = {"redirect_uri": redirect_uri, "response_type": "code", "client_id": self.chat.config.app_key,
                 "scope": "openid", "state": state, "prompt": "consent"}
        return f"{self.config.authorize_url}?{urlencode(query)}"

    async def identify(self, query: Mapping[str, str], redirect_uri: str, nonce: str) -> ChatIdentity:
        app = self.chat.config
        base = app.api_base.rstrip("/")
        status, token = await call(self.http, "POST", f"{base}/v1.0/oauth2/userAccessToken",
                                   "DingTalk userAccessToken", app.timeout_seconds, json={
                                       "clientId": app.app_key, "clientSecret": app.app_secret.get_secret_value(),
                                       "code": the_code(query), "grantType": "authorization_code"})
        if status >= 400 or not token.get("accessToken"):
            raise code_refused("DingTalk", f"{token.get('code') or status} {token.get('message') or ''}")
        status, me = await call(self.http, "GET", f"{base}/v1.0/contact/users/me", "DingTalk users/me",
                                app.timeout_seconds, headers={"x-acs-dingtalk-access-token": str(token["accessToken"])})
        if status >= 400 or not me.get("unionId"):
            raise code_refused("DingTalk", f"users/me {me.get('code') or status} {me.get('message') or ''}")
        try:
            found = await self.chat._oapi("/topapi/user/getbyunionid", {"unionid": me["unionId"]})
        except ChatUnavailable as e:
            raise SsoUnavailable(str(e)) from e
        except ChatRejected as e:
            if str(e.code) in NOT_IN_ORG:
                raise SsoRefused("sso_not_member", "您不是本企业钉钉组织的成员，请输入姓名签署",
                                 "You are not a member of this DingTalk organisation; type your name to sign") from e
            raise code_refused("DingTalk", str(e)) from e
        userid = (found.get("result") or {}).get("userid")
        if not userid:
            raise code_refused("DingTalk", "getbyunionid without a userid")
        return ChatIdentity(PLATFORM, str(userid), str(me.get("nick") or ""), str(token.get("corpId") or "") or None)


def build(settings: Settings, http: httpx.AsyncClient, chat: object | None) -> DingTalkSso | None:
    config = DingTalkSsoConfig()
    return DingTalkSso(chat, config, http) if config.enabled and isinstance(chat, DingTalkChat) else None
