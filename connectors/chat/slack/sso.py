"""One-tap signing for Slack: "Sign in with Slack" (OpenID Connect).

`GET slack.com/openid/connect/authorize?response_type=code&state&client_id&scope=openid,profile
&redirect_uri&nonce` (plus `team=T…` to pre-select the request's workspace) comes back with a
`code`, exchanged at `POST /api/openid.connect.token` (client_id, client_secret, code,
redirect_uri, grant_type) for a user token and an `id_token` (RS256). The id_token is checked
against Slack's published keys (`/openid/connect/keys`): issuer `https://slack.com`, audience
our client id, our nonce, not expired. `POST /api/openid.connect.userInfo` with the user token
then names the user: `https://slack.com/user_id` (what SignBridge's `Person.id` is on Slack, and
the id_token's `sub`) and `https://slack.com/team_id`.

Slack opens links in the system browser, so this is one tap with the browser's Slack session
rather than a silent in-app sign-in. Settings `SIGNBRIDGE_SLACK_SSO_*` (the app's OAuth client id
and secret, from "Basic Information"); add `{SIGNBRIDGE_PUBLIC_URL}/sso/slack/callback` to its
Redirect URLs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.chat.slack.client import SlackConfig
from connectors.chat.sso import call, code_refused, the_code
from signbridge.core.settings import Settings
from signbridge.core.sso import ChatIdentity, SsoUnavailable

PLATFORM = "slack"
USER_ID = "https://slack.com/user_id"
TEAM_ID = "https://slack.com/team_id"
KEYS_SECONDS = 3600.0  # Slack's signing keys are re-read at most hourly (and at once on an unknown kid)


class SlackSsoConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGNBRIDGE_SLACK_SSO_", env_file=None, extra="ignore")

    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    authorize_url: str = "https://slack.com/openid/connect/authorize"
    keys_url: str = "https://slack.com/openid/connect/keys"
    issuer: str = "https://slack.com"
    timeout_seconds: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.client_id and self.client_secret.get_secret_value())


class SlackSso:
    platform = PLATFORM

    def __init__(self, api: SlackConfig, config: SlackSsoConfig, http: httpx.AsyncClient) -> None:
        self.api = api
        self.config = config
        self.http = http
        self._keys: dict[str, Any] = {}
        self._keys_at = 0.0

    def authorize_url(self, redirect_uri: str, state: str, nonce: str, tenant: str | None = None) -> str:
        query = {"response_type": "code", "state": state, "client_id": self.config.client_id,
                 "scope": "openid,profile", "redirect_uri": redirect_uri, "nonce": nonce}
        if tenant and tenant.startswith("T"):
            query["team"] = tenant
        return f"{self.config.authorize_url}?{urlencode(query)}"

    async def identify(self, query: Mapping[str, str], redirect_uri: str, nonce: str) -> ChatIdentity:
        _, token = await call(self.http, "POST", f"{self.api.base}openid.connect.token", "Slack openid.connect.token",
                              self.config.timeout_seconds, data={
                                  "client_id": self.config.client_id,
                                  "client_secret": self.config.client_secret.get_secret_value(),
                                  "code": the_code(query), "redirect_uri": redirect_uri,
                                  "grant_type": "authorization_code"})
        if not token.get("ok") or not token.get("access_token") or not token.get("id_token"):
            raise code_refused("Slack", str(token.get("error") or "no token"))
        claims = await self._claims(str(token["id_token"]), nonce)
        _, info = await call(self.http, "POST", f"{self.api.base}openid.connect.userInfo",
                             "Slack openid.connect.userInfo", self.config.timeout_seconds,
                             headers={"Authorization": f"Bearer {token['access_token']}"})
        if not info.get("ok") or info.get("sub") != claims.get("sub") or not info.get(USER_ID):
            raise code_refused("Slack", f"userInfo {info.get('error') or 'does not match the id_token'}")
        return ChatIdentity(PLATFORM, str(info[USER_ID]), str(info.get("name") or ""),
                            str(info.get(TEAM_ID) or "") or None)

    async def _claims(self, id_token: str, nonce: str) -> dict[str, Any]:
        """The id_token's claims once its signature, issuer, audience, expiry and nonce hold."""
        try:
            kid = jwt.get_unverified_header(id_token).get("kid", "")
        except jwt.PyJWTError as e:
            raise code_refused("Slack", f"id_token: {e}") from e
        key = await self._key(str(kid))
        try:
            claims: dict[str, Any] = jwt.decode(id_token, key, algorithms=["RS256"], audience=self.config.client_id,
                                                issuer=self.config.issuer, options={"require": ["exp", "sub"]})
        except jwt.PyJWTError as e:
            raise code_refused("Slack", f"id_token: {e}") from e
        if claims.get("nonce") != nonce:
            raise code_refused("Slack", "id_token nonce is not ours")
        return claims

    async def _key(self, kid: str) -> Any:
        if kid not in self._keys or time.monotonic() - self._keys_at > KEYS_SECONDS:
            _, jwks = await call(self.http, "GET", self.config.keys_url, "Slack openid keys",
                                      self.config.timeout_seconds)
            try:
                self._keys = {str(k.get("kid")): jwt.PyJWK.from_json(json.dumps(k)).key for k in jwks.get("keys", [])}
            except jwt.PyJWTError as e:
                raise SsoUnavailable(f"Slack openid keys: {e}") from e
            self._keys_at = time.monotonic()
        if kid not in self._keys:
            raise code_refused("Slack", f"id_token signed by unknown key {kid[:40]!r}")
        return self._keys[kid]


def build(settings: Settings, http: httpx.AsyncClient, chat: object | None) -> SlackSso | None:
    config = SlackSsoConfig()
    return SlackSso(SlackConfig(), config, http) if config.enabled else None
