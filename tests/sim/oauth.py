"""The chat platforms' sign-in (OAuth 2.0 / OpenID Connect) for one-tap signing, added to their simulators.

Each `attach_*` puts the platform's documented endpoints in front of an existing simulator's
routes (so they share its app credentials and app tokens), with the platform's request and
response shapes and error codes:

- authorize: checks the client id, the redirect URI and `state`, then answers 302 to
  `redirect_uri?code=…&state=…` (DingTalk: `authCode`) for whoever is signed in to the chat app
  in this "browser" (`desk.signed_in`); nobody signed in: `error=access_denied`.
- token: the code is single use, expires after `desk.code_ttl` seconds (5 minutes, as every
  platform documents), is bound to the client and the redirect URI; the client secret is checked.
- user info: only with the user token the exchange issued.

Error codes not printed in the platforms' docs are marked (unconfirmed) and are what SignBridge
must treat as "refused", whatever their number.
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute


@dataclass
class Grant:
    user: str
    client_id: str
    redirect_uri: str
    issued: float
    nonce: str = ""
    used: bool = False


@dataclass
class Desk:
    """One platform's sign-in state: who is signed in to the chat app, the codes and user tokens."""

    signed_in: str | None = None
    code_ttl: float = 300.0
    grants: dict[str, Grant] = field(default_factory=dict)
    user_tokens: dict[str, str] = field(default_factory=dict)
    exchanges: int = 0
    refused: list[str] = field(default_factory=list)

    def issue(self, client_id: str, redirect_uri: str, nonce: str = "") -> str:
        assert self.signed_in is not None
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(self.signed_in, client_id, redirect_uri, time.time(), nonce)
        return code

    def redeem(self, code: str, client_id: str, redirect_uri: str | None) -> Grant | str:
        """The grant, or why not: unknown / used / expired / redirect_uri."""
        self.exchanges += 1
        grant = self.grants.get(code)
        if grant is None or grant.client_id != client_id:
            reason = "unknown"
        elif grant.used:
            reason = "used"
        elif time.time() - grant.issued > self.code_ttl:
            reason = "expired"
        elif redirect_uri is not None and redirect_uri != grant.redirect_uri:
            reason = "redirect_uri"
        else:
            grant.used = True
            token = secrets.token_urlsafe(24)
            self.user_tokens[token] = grant.user
            self._last_token = token
            return grant
        self.refused.append(reason)
        return reason

    def expire_codes(self) -> None:
        for grant in self.grants.values():
            grant.issued -= self.code_ttl + 1


def _front(app: FastAPI, extra: FastAPI) -> None:
    """`extra`'s routes before the simulator's own (a catch-all `/api/{method}` must not win)."""
    routes: list[BaseRoute] = [r for r in extra.router.routes if getattr(r, "path", "").startswith("/")]
    app.router.routes[:0] = routes


def _back(redirect_uri: str, **query: str) -> Response:
    joiner = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{joiner}{urlencode(query)}", 302)


def _bearer(request: Request) -> str:
    return request.headers.get("authorization", "").removeprefix("Bearer ").strip()


# ---- Feishu / Lark --------------------------------------------------------------------------


def attach_feishu(sim: Any, tenant_key: str = "tenant-1") -> Desk:
    """`sim`: a `FeishuSim` (its app id/secret and users). `no_permission`: open_ids outside the
    app's 可用范围 (the token exchange answers 20010 for them)."""
    desk = Desk()
    sim.sso_tenant_key = tenant_key
    sim.no_permission = set()
    extra = FastAPI()

    @extra.get("/open-apis/authen/v1/authorize")
    async def authorize(request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != sim.app_id or not q.get("redirect_uri"):
            return JSONResponse({"code": 20001, "msg": "invalid client_id or redirect_uri"}, status_code=400)
        if desk.signed_in is None:
            return _back(q["redirect_uri"], error="access_denied", state=q.get("state", ""))
        return _back(q["redirect_uri"], code=desk.issue(q["client_id"], q["redirect_uri"]), state=q.get("state", ""))

    @extra.post("/open-apis/authen/v2/oauth/token")
    async def token(request: Request) -> Response:
        body = await request.json()
        if body.get("grant_type") != "authorization_code":
            return JSONResponse({"code": 20001, "error": "unsupported_grant_type"}, status_code=400)
        if body.get("client_id") != sim.app_id or body.get("client_secret") != sim.app_secret:
            return JSONResponse({"code": 20002, "error": "invalid_client"}, status_code=400)
        grant = desk.redeem(str(body.get("code") or ""), sim.app_id, body.get("redirect_uri"))
        if isinstance(grant, str):  # 20003 / 20004: unconfirmed numbers, invalid_grant per RFC 6749
            return JSONResponse({"code": 20004 if grant == "expired" else 20003, "error": "invalid_grant",
                                 "error_description": f"the code is {grant}"}, status_code=400)
        if grant.user in sim.no_permission:
            return JSONResponse({"code": 20010, "error": "access_denied",
                                 "error_description": "user has no permission to use the app"}, status_code=400)
        return JSONResponse({"code": 0, "access_token": desk._last_token, "expires_in": 7200,
                             "token_type": "Bearer", "scope": ""})

    @extra.get("/open-apis/authen/v1/user_info")
    async def user_info(request: Request) -> Response:
        user = desk.user_tokens.get(_bearer(request))
        if user is None:
            return JSONResponse({"code": 99991668, "msg": "Invalid access token for authorization"},
                                status_code=400)
        person = sim.users.get(user, {"name": user})
        return JSONResponse({"code": 0, "msg": "success", "data": {
            "name": person["name"], "en_name": "", "open_id": user, "union_id": f"on_{user}",
            "tenant_key": sim.sso_tenant_key, "avatar_url": ""}})

    _front(sim.app, extra)
    return desk


# ---- DingTalk -----------------------------------------------------------------------------------


def attach_dingtalk(sim: Any, corp_id: str = "ding-corp-1") -> Desk:
    """`sim`: a `DingTalkSim` (app key/secret, its app tokens for oapi). `desk.people`: userid →
    (nick, unionId); a unionId with no userid in `members` is someone outside the organisation."""
    desk = Desk()
    people: dict[str, tuple[str, str]] = {}
    members: dict[str, str] = {}  # unionId → userid
    desk.people = people  # type: ignore[attr-defined]
    desk.members = members  # type: ignore[attr-defined]
    extra = FastAPI()

    @extra.get("/oauth2/auth")
    async def authorize(request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != sim.app_key or q.get("response_type") != "code" or \
                "openid" not in (q.get("scope") or "").split() or not q.get("redirect_uri"):
            return JSONResponse({"code": "invalidParameter", "message": "bad authorize request"}, status_code=400)
        if desk.signed_in is None:
            return _back(q["redirect_uri"], error="access_denied", state=q.get("state", ""))
        return _back(q["redirect_uri"], authCode=desk.issue(q["client_id"], q["redirect_uri"]),
                     state=q.get("state", ""))

    @extra.post("/v1.0/oauth2/userAccessToken")
    async def user_token(request: Request) -> Response:
        body = await request.json()
        if body.get("clientId") != sim.app_key or body.get("clientSecret") != sim.app_secret:
            return JSONResponse({"code": "invalidClientIdOrSecret", "message": "bad client"}, status_code=400)
        if body.get("grantType") != "authorization_code":
            return JSONResponse({"code": "invalidParameter.grantType", "message": "bad grantType"}, status_code=400)
        grant = desk.redeem(str(body.get("code") or ""), sim.app_key, None)
        if isinstance(grant, str):  # the code's error name is unconfirmed
            return JSONResponse({"code": "invalidAuthCode", "message": f"authCode {grant}"}, status_code=400)
        return JSONResponse({"accessToken": desk._last_token, "refreshToken": secrets.token_urlsafe(16),
                             "expireIn": 7200, "corpId": corp_id})

    @extra.get("/v1.0/contact/users/me")
    async def me(request: Request) -> Response:
        user = desk.user_tokens.get(request.headers.get("x-acs-dingtalk-access-token", ""))
        if user is None:
            return JSONResponse({"code": "InvalidAuthentication", "message": "不合法的access_token"}, status_code=401)
        nick, union_id = people[user]
        return JSONResponse({"nick": nick, "unionId": union_id, "openId": f"open-{user}", "avatarUrl": "",
                             "stateCode": "86", "visitor": False})

    @extra.post("/topapi/user/getbyunionid")
    async def by_union_id(request: Request) -> Response:
        if (refused := sim._oapi_gate(request, "getbyunionid")) is not None:
            return refused  # type: ignore[no-any-return]
        union_id = (await request.json()).get("unionid")
        if union_id not in members:
            return JSONResponse({"errcode": 60121, "errmsg": "找不到该用户", "request_id": "sim"})
        return JSONResponse({"errcode": 0, "errmsg": "ok", "result": {"contact_type": 0,
                                                                      "userid": members[union_id]},
                             "request_id": "sim"})

    _front(sim.app, extra)
    return desk


# ---- WeCom --------------------------------------------------------------------------------------


def attach_wecom(sim: Any, agent_id: int) -> Desk:
    """`sim`: a `WeComSim`. `desk.outsiders`: people who get an `openid` only (not corp members)."""
    desk = Desk()
    outsiders: set[str] = set()
    desk.outsiders = outsiders  # type: ignore[attr-defined]
    extra = FastAPI()

    @extra.get("/connect/oauth2/authorize")
    async def authorize(request: Request) -> Response:
        q = request.query_params
        state = q.get("state", "")
        if q.get("appid") != sim.corp_id or q.get("response_type") != "code" or \
                q.get("scope") not in ("snsapi_base", "snsapi_privateinfo") or not q.get("redirect_uri") or \
                len(state) > 128 or not state.isalnum() or q.get("agentid") != str(agent_id):
            return JSONResponse({"errcode": 40001, "errmsg": "bad oauth request"}, status_code=400)
        if desk.signed_in is None:
            return _back(q["redirect_uri"], state=state)  # WeCom's "cancel": back without a code
        return _back(q["redirect_uri"], code=desk.issue(q["appid"], q["redirect_uri"]), state=state)

    @extra.get("/cgi-bin/auth/getuserinfo")
    async def user_info(request: Request) -> Response:
        if (refused := sim._gate(request, "auth/getuserinfo")) is not None:
            return refused  # type: ignore[no-any-return]
        grant = desk.redeem(request.query_params.get("code", ""), sim.corp_id, None)
        if isinstance(grant, str):
            return JSONResponse({"errcode": 40029, "errmsg": "invalid code"})
        if grant.user in outsiders:
            return JSONResponse({"errcode": 0, "errmsg": "ok", "openid": f"o-{grant.user}"})
        return JSONResponse({"errcode": 0, "errmsg": "ok", "userid": grant.user})

    _front(sim.app, extra)
    return desk


# ---- Slack (OpenID Connect) ------------------------------------------------------------------------


class SlackKeys:
    """The RSA key Slack signs id_tokens with, and its JWKS."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "sim-key-1"

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()

        def b64(n: int) -> str:
            return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

        return {"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": b64(numbers.n),
                          "e": b64(numbers.e)}]}


def attach_slack(sim: Any, client_id: str, client_secret: str, team_id: str = "T0SIM") -> Desk:
    """`sim`: a `SlackSim` (its users' names). Scopes are comma separated, as Slack's SDK sends them."""
    desk = Desk()
    keys = SlackKeys()
    desk.keys = keys  # type: ignore[attr-defined]
    desk.team_id = team_id  # type: ignore[attr-defined]
    desk.issuer = "https://slack.com"  # type: ignore[attr-defined]
    extra = FastAPI()

    @extra.get("/openid/connect/authorize")
    async def authorize(request: Request) -> Response:
        q = request.query_params
        if q.get("client_id") != client_id or q.get("response_type") != "code" or \
                "openid" not in (q.get("scope") or "").split(",") or not q.get("redirect_uri"):
            return JSONResponse({"ok": False, "error": "invalid_request"}, status_code=400)
        if desk.signed_in is None:
            return _back(q["redirect_uri"], error="access_denied", state=q.get("state", ""))
        code = desk.issue(client_id, q["redirect_uri"], q.get("nonce", ""))
        return _back(q["redirect_uri"], code=code, state=q.get("state", ""))

    @extra.post("/api/openid.connect.token")
    async def token(request: Request) -> Response:
        form = dict(await request.form())
        if form.get("client_id") != client_id:
            return JSONResponse({"ok": False, "error": "invalid_client_id"})
        if form.get("client_secret") != client_secret:
            return JSONResponse({"ok": False, "error": "bad_client_secret"})
        grant = desk.redeem(str(form.get("code") or ""), client_id, str(form.get("redirect_uri") or ""))
        if isinstance(grant, str):
            return JSONResponse({"ok": False, "error": "bad_redirect_uri" if grant == "redirect_uri"
                                 else "invalid_code"})
        now = int(time.time())
        user = grant.user
        name = sim.users.get(user, {}).get("real_name", user)
        claims = {"iss": desk.issuer, "sub": user, "aud": client_id, "exp": now + 3600, "iat": now,  # type: ignore[attr-defined]
                  "auth_time": now, "nonce": grant.nonce, "https://slack.com/user_id": user,
                  "https://slack.com/team_id": team_id, "name": name}
        id_token = jwt.encode(claims, keys.key, algorithm="RS256", headers={"kid": keys.kid})
        return JSONResponse({"ok": True, "access_token": desk._last_token, "token_type": "Bearer",
                             "id_token": id_token})

    @extra.api_route("/api/openid.connect.userInfo", methods=["GET", "POST"])
    async def user_info(request: Request) -> Response:
        user = desk.user_tokens.get(_bearer(request))
        if user is None:
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        name = sim.users.get(user, {}).get("real_name", user)
        return JSONResponse({"ok": True, "sub": user, "https://slack.com/user_id": user,
                             "https://slack.com/team_id": team_id, "name": name, "email_verified": True})

    @extra.get("/openid/connect/keys")
    async def jwks() -> Response:
        return JSONResponse(keys.jwks())

    _front(sim.app, extra)
    return desk
