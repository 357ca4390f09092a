"""One-tap signing for WeCom (企业微信): web OAuth inside the WeCom client.

`open.weixin.qq.com/connect/oauth2/authorize?appid=<CorpID>&redirect_uri&response_type=code
&scope=snsapi_base&state&agentid#wechat_redirect` is silent inside WeCom and comes back with a
`code` (5 minutes, single use), which the app exchanges at
`GET /cgi-bin/auth/getuserinfo?access_token&code`: a member's `userid` (what SignBridge's
`Person.id` is on WeCom), or for someone outside the corp only an `openid` /
`external_userid` — refused, they are not the internal signer. 40029: invalid code; 50001: the
redirect domain is not the app's 可信域名 (a setup problem, said in the log).

Settings `SIGNBRIDGE_WECOM_SSO_*`; off until `ENABLED=true` (make the host of
`SIGNBRIDGE_PUBLIC_URL` the app's trusted domain first). `state` is letters and digits only, ≤ 128
bytes, as WeCom requires.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from urllib.parse import urlencode

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.chat.base import ChatRejected, ChatUnavailable
from connectors.chat.sso import code_refused, the_code
from connectors.chat.wecom.client import PLATFORM, WeComChat
from signbridge.core.settings import Settings
from signbridge.core.sso import ChatIdentity, SsoRefused, SsoUnavailable

log = logging.getLogger(__name__)

UNTRUSTED_DOMAIN = 50001


class WeComSsoConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_WECOM_SSO_", env_file=None, extra="ignore")

    enabled: bool = False
    authorize_url: str = "https://open.weixin.qq.com/connect/oauth2/authorize"


class WeComSso:
    platform = PLATFORM

    def __init__(self, chat: WeComChat, config: WeComSsoConfig) -> None:
        self.chat = chat
        self.config = config

    def authorize_url(self, redirect_uri: str, state: str, nonce: str, tenant: str | None = None) -> str:
        query = {"appid": self.chat.config.corp_id, "redirect_uri": redirect_uri, "response_type": "code",
                 "scope": "snsapi_base", "state": state, "agentid": str(self.chat.config.agent_id)}
        return f"{self.config.authorize_url}?{urlencode(query)}#wechat_redirect"

    async def identify(self, query: Mapping[str, str], redirect_uri: str, nonce: str) -> ChatIdentity:
        try:
            data = await self.chat._call("GET", "/cgi-bin/auth/getuserinfo", {"code": the_code(query)})
        except ChatUnavailable as e:
            raise SsoUnavailable(str(e)) from e
        except ChatRejected as e:
            if UNTRUSTED_DOMAIN in (e.code, e.status):  # WeCom's client passes errcode as the status
                log.error("WeCom refused the sign-in (50001): make the host of SIGNBRIDGE_PUBLIC_URL the app's "
                          "trusted domain (可信域名)")
            raise code_refused("WeCom", str(e)) from e
        userid = data.get("userid") or data.get("UserId")  # the legacy API's capitalised field
        if not userid:
            raise SsoRefused("sso_not_member", "您不是本企业的成员，请输入姓名签署",
                             "You are not a member of this WeCom organisation; type your name to sign")
        return ChatIdentity(PLATFORM, str(userid), "", self.chat.config.corp_id or None)


def build(settings: Settings, http: httpx.AsyncClient, chat: object | None) -> WeComSso | None:
    config = WeComSsoConfig()
    return WeComSso(chat, config) if config.enabled and isinstance(chat, WeComChat) else None
