"""One-tap signing by chat single sign-on: binding a chat sign-in to one signer on one link.

Written once for every platform; each platform contributes only its OAuth client
(`connectors/chat/<platform>/sso.py`) or, for the webhook IM, its assertion check.

How a browser becomes "verified as 李四 on this link":

- **OAuth** (Feishu, DingTalk, WeCom, Slack). `begin` stores a `state` ticket — random, single
  use, `STATE_TTL`, only its SHA-256 kept — bound to the signer and the link, and the page sets a
  short cookie holding the link's token on the callback path, so the callback is bound to the
  browser that started it. `finish` consumes the state once, checks that cookie against it, has
  the platform exchange the code for the user, and compares that user with the signer: the same
  platform user id (`Person.id`: Feishu open_id, DingTalk/WeCom userid, Slack user id) and, where
  the request knows it, the same tenant/workspace.
- **Webhook IM assertion** (`sso=` on the link): verified (signature, expiry, audience), its `sub`
  must be the signer, and it is redeemed once (its digest is kept until it expires).

Either way the result is a session ticket whose secret goes into a cookie scoped to the link's
path (`/sign/<token>`), valid `SESSION_TTL`: the page shows "已通过飞书身份验证：李四" and signs
with the consent box alone. A forwarded link opened by someone else gets no session: they are
refused with a page that says so, and every refusal is in the request's audit trail.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from connectors.chat.sso import ChatSso, cancelled
from connectors.chat.webhook import sso as webhook_sso
from connectors.esign import local
from signbridge.core.settings import Settings
from signbridge.core.sso import PLATFORM_WORDS, ChatIdentity, SsoProof, SsoRefused, method
from store import audit
from store.repos import local_flows, signing_records, sso_tickets
from store.tables import LocalFlow, LocalSigner, SsoTicket, utcnow

log = logging.getLogger(__name__)

STATE_TTL = timedelta(minutes=10)  # the platforms' codes live 3-5 minutes; the round trip is seconds
SESSION_TTL = timedelta(minutes=30)  # long enough to read the document, short for a shared device
PURGE_AFTER = timedelta(days=1)  # expired tickets are kept this long (for the audit of late replays)
SESSION_COOKIE = "sb_sso"  # path /sign/<token>: the verified session
LINK_COOKIE = "sb_sso_link"  # path /sso/<platform>/callback: which link the round trip is for


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def redirect_uri(settings: Settings, platform: str) -> str:
    """The callback URL to register with the platform."""
    return f"{settings.public_url}/sso/{platform}/callback"


def _nonce(settings: Settings, state: str) -> str:
    """Derived from the state (OIDC nonce): nothing more to store, and unguessable without the secret."""
    key = settings.link_secret.get_secret_value().encode()
    return hmac.new(key, f"sso-nonce:{state}".encode(), hashlib.sha256).hexdigest()[:32]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Link:
    """An open signing link with what SSO needs: where the request came from."""

    token: str
    signer: LocalSigner
    flow: LocalFlow
    platform: str
    tenant: str


def open_link(engine: Engine, token: str) -> Link | local.LinkProblem:
    found = local.find_signer_by_token(engine, token)
    if found is None:
        return local.unknown_link()
    signer, flow = found
    problem = local.link_problem(signer, flow, utcnow())
    if problem:
        return problem
    record = signing_records.get(engine, flow.request_id)
    return Link(token, signer, flow, record.chat_platform if record else "", record.tenant if record else "")


def offered(ssos: Mapping[str, ChatSso], link: Link) -> str | None:
    """The platform whose sign-in this link offers: the chat the request came from, when its SSO is
    on. External signers are not in the company's chat directory: they never get it."""
    return link.platform if link.platform in ssos and not link.signer.external else None


@dataclass(frozen=True)
class Verified:
    """A finished sign-in: the session cookie's secret and what it proves."""

    token: str
    session: str
    proof: SsoProof


class SsoFailed(Exception):
    """A sign-in that proved nothing: the refusal to show, and the link to go back to (if known)."""

    def __init__(self, refused: SsoRefused, token: str | None = None, status: int = 403) -> None:
        super().__init__(refused.en)
        self.refused = refused
        self.token = token
        self.status = status


def _record(engine: Engine, flow: LocalFlow, signer_id: str, action: str, detail: dict[str, object],
            ip: str | None, user_agent: str | None) -> None:
    audit.record(engine, request_id=flow.request_id, key=f"sso:{signer_id}:{action}:{secrets.token_hex(8)}",
                 action=action, actor=signer_id, detail={"flow_id": flow.flow_id, **detail}, ip=ip,
                 user_agent=user_agent, document_sha256=flow.current_sha256)


def _refuse(engine: Engine, flow: LocalFlow | None, signer_id: str, platform: str, refused: SsoRefused,
            ip: str | None, user_agent: str | None, token: str | None = None, **detail: object) -> SsoFailed:
    """Record the attempt on the request's audit trail (when the request is known) and say why."""
    if flow is not None:
        _record(engine, flow, signer_id, "signer.sso_refused",
                {"platform": platform, "code": refused.code, **detail}, ip, user_agent)
    log.info("chat sign-in refused (%s, %s): %s", platform, refused.code, refused.en)
    return SsoFailed(refused, token)


def _wrong_user(link: Link, identity: ChatIdentity) -> SsoRefused:
    zh, en = PLATFORM_WORDS.get(identity.platform, (identity.platform, identity.platform))
    who = identity.name or identity.user_id
    return SsoRefused("sso_wrong_user",
                      f"您登录的{zh}账号（{who}）不是此链接的签署人。此链接只能由{link.signer.name}本人签署；"
                      "如果链接是转发给您的，请联系发起人。",
                      f"The {en} account you are signed in with ({who}) is not this link's signer. Only "
                      f"{link.signer.name} can sign with it; if it was forwarded to you, contact the sender.")


def _matches(link: Link, identity: ChatIdentity) -> bool:
    """The chat user is the signer: the same user id on the request's platform, and the same
    tenant/workspace when both sides know it (an open_id of another Feishu tenant is not ours)."""
    if identity.platform != link.platform or identity.user_id != link.signer.signer_id:
        return False
    known = link.tenant not in ("", "default")
    return not (known and identity.tenant and identity.tenant != link.tenant)


def _session(engine: Engine, link: Link, identity: ChatIdentity, ip: str | None, user_agent: str | None,
             via: str) -> Verified:
    secret = secrets.token_urlsafe(32)
    now = utcnow()
    name = identity.name or link.signer.name
    sso_tickets.add(engine, SsoTicket(
        key_hash=digest(secret), kind="session", platform=identity.platform, flow_id=link.flow.flow_id,
        signer_id=link.signer.signer_id, token_hash=local.token_hash(link.token), subject=identity.user_id,
        subject_name=name, created_at=now, expires_at=now + SESSION_TTL))
    _record(engine, link.flow, link.signer.signer_id, "signer.sso_verified",
            {"platform": identity.platform, "method": method(identity.platform), "via": via,
             "subject": identity.user_id, "subject_name": name, "tenant": identity.tenant}, ip, user_agent)
    return Verified(link.token, secret, SsoProof(link.flow.flow_id, link.signer.signer_id, identity.platform,
                                                 identity.user_id, name))


# ---- OAuth ---------------------------------------------------------------------------------


def begin(engine: Engine, settings: Settings, sso: ChatSso, link: Link) -> str:
    """A fresh single-use state for this signer on this link; the platform's authorize URL."""
    state = secrets.token_hex(24)  # letters and digits only: WeCom allows nothing else
    now = utcnow()
    sso_tickets.purge(engine, now - PURGE_AFTER)  # the table holds minutes' worth of tickets, not years'
    sso_tickets.add(engine, SsoTicket(
        key_hash=digest(state), kind="state", platform=sso.platform, flow_id=link.flow.flow_id,
        signer_id=link.signer.signer_id, token_hash=local.token_hash(link.token), created_at=now,
        expires_at=now + STATE_TTL))
    return sso.authorize_url(redirect_uri(settings, sso.platform), state, _nonce(settings, state), link.tenant)


def _state_problem(ticket: SsoTicket | None, now: datetime) -> SsoRefused:
    if ticket is not None and ticket.used_at is not None:
        return SsoRefused("sso_state_used", "此验证请求已使用过，请回到签署页面重新验证",
                          "This sign-in was already used; go back to the signing page and verify again")
    if ticket is not None and _aware(ticket.expires_at) <= now:
        return SsoRefused("sso_state_expired", "验证超时，请回到签署页面重新验证",
                          "The sign-in took too long; go back to the signing page and verify again")
    return SsoRefused("sso_state_invalid", "验证请求无效，请回到聊天中重新打开签署链接",
                      "This sign-in request is not valid; open the signing link from the chat again")


async def finish(engine: Engine, settings: Settings, ssos: Mapping[str, ChatSso], platform: str,
                 query: Mapping[str, str], link_token: str | None, ip: str | None,
                 user_agent: str | None) -> Verified:
    """The platform's callback: a verified session, or `SsoFailed` (recorded) — never a signature."""
    sso = ssos.get(platform)
    if sso is None:
        raise SsoFailed(SsoRefused("sso_off", "此聊天平台的身份验证未开启", "Sign-in with this chat is not enabled"),
                        status=404)
    state = query.get("state") or ""
    now = utcnow()
    ticket = sso_tickets.consume(engine, digest(state), "state", now) if 0 < len(state) <= 256 else None
    if ticket is None:
        # Whose attempt was it? The state's own row if it ever existed, else the link this browser
        # started from (its cookie): the refusal goes on that request's audit trail.
        seen = sso_tickets.get(engine, digest(state)) if 0 < len(state) <= 256 else None
        started = open_link(engine, link_token) if link_token and seen is None else None
        started = started if isinstance(started, Link) else None
        flow = local_flows.flow(engine, seen.flow_id) if seen else started.flow if started else None
        signer_id = seen.signer_id if seen else started.signer.signer_id if started else ""
        raise _refuse(engine, flow, signer_id, platform, _state_problem(seen, now), ip, user_agent,
                      link_token if flow else None, state="missing" if not state else "not usable")
    flow = local_flows.flow(engine, ticket.flow_id)
    if ticket.platform != platform or not link_token or not hmac.compare_digest(
            local.token_hash(link_token), ticket.token_hash):
        refused = SsoRefused("sso_other_browser", "请在打开签署链接的同一浏览器中完成验证",
                             "Finish the sign-in in the same browser that opened the signing link")
        raise _refuse(engine, flow, ticket.signer_id, platform, refused, ip, user_agent)
    link = open_link(engine, link_token)
    if isinstance(link, local.LinkProblem):
        raise SsoFailed(SsoRefused(link.code, link.zh, link.en), status=410 if link.kind == "gone" else 404)
    if (problem := cancelled(query)) is not None:
        raise _refuse(engine, link.flow, link.signer.signer_id, platform, problem, ip, user_agent, link.token)
    try:
        identity = await sso.identify(query, redirect_uri(settings, platform), _nonce(settings, state))
    except SsoRefused as refused:
        raise _refuse(engine, link.flow, link.signer.signer_id, platform, refused, ip, user_agent, link.token) \
            from None
    if not _matches(link, identity):
        raise _refuse(engine, link.flow, link.signer.signer_id, platform, _wrong_user(link, identity), ip,
                      user_agent, link.token, subject=identity.user_id, tenant=identity.tenant)
    return _session(engine, link, identity, ip, user_agent, via="oauth")


# ---- the webhook IM's assertion ---------------------------------------------------------------


def redeem_assertion(engine: Engine, settings: Settings, link: Link, assertion: str, ip: str | None,
                     user_agent: str | None, now: float | None = None) -> Verified | None:
    """`sso=` on a link the webhook IM opened: a verified session, `SsoFailed` (recorded), or None
    for an external signer's genuine assertion (it does not replace their own verification)."""
    signer_id, platform = link.signer.signer_id, webhook_sso.PLATFORM
    if link.platform != platform:
        other = SsoRefused("sso_wrong_platform", "此链接不接受该身份凭证", "This link does not take that assertion")
        raise _refuse(engine, link.flow, signer_id, platform, other, ip, user_agent, link.token)
    try:
        identity, exp = webhook_sso.verify(settings.webhook_secret.get_secret_value(), assertion,
                                           time.time() if now is None else now,
                                           f"{settings.public_url}/sign/{link.token}")
    except SsoRefused as bad:
        raise _refuse(engine, link.flow, signer_id, platform, bad, ip, user_agent, link.token) from None
    if link.signer.external and identity.user_id == signer_id:
        # Genuine, but an external person proves who they are to SignBridge itself (a one-time
        # code), not through the company's chat: the page carries on without a session.
        _record(engine, link.flow, signer_id, "signer.sso_not_used",
                {"platform": platform, "reason": "external signer", "subject": identity.user_id}, ip, user_agent)
        return None
    if not _matches(link, identity):
        raise _refuse(engine, link.flow, signer_id, platform, _wrong_user(link, identity), ip, user_agent,
                      link.token, subject=identity.user_id)
    used = SsoTicket(key_hash=webhook_sso.assertion_digest(assertion), kind="assertion", platform=platform,
                     flow_id=link.flow.flow_id, signer_id=signer_id, token_hash=local.token_hash(link.token),
                     subject=identity.user_id, expires_at=datetime.fromtimestamp(exp, UTC))
    if not sso_tickets.add(engine, used):
        again = SsoRefused("sso_assertion_used", "此身份凭证已使用过，请回到聊天中重新打开签署链接",
                           "This sign-in assertion was already used; open the signing link from the chat again")
        raise _refuse(engine, link.flow, signer_id, platform, again, ip, user_agent, link.token)
    return _session(engine, link, identity, ip, user_agent, via="assertion")


# ---- the page ---------------------------------------------------------------------------------


def proof(engine: Engine, session: str | None, link: Link) -> SsoProof | None:
    """What the browser's session cookie proves on this link, if anything."""
    if not session or len(session) > 200:
        return None
    ticket = sso_tickets.live_session(engine, digest(session), local.token_hash(link.token), utcnow())
    if ticket is None or ticket.signer_id != link.signer.signer_id or ticket.flow_id != link.flow.flow_id:
        return None
    return SsoProof(ticket.flow_id, ticket.signer_id, ticket.platform, ticket.subject or "",
                    ticket.subject_name or link.signer.name)
