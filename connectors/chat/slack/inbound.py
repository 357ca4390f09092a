"""Slack inbound: `POST /im/slack/events`, `/im/slack/interactions`, `/im/slack/commands`.

Each callback's signature is verified on the raw bytes first (`SignatureVerifier`, 300 s
window): a forged, unsigned or stale request gets 401 and starts nothing. Slack waits 3 s:

* `url_verification` → echo the challenge.
* `app_mention` / `message.im` → a `ChatEvent` with id `event_id` (Slack retries — possibly
  while the first attempt is still running — hit the same flow id). Mentions (`<@U123>`) are
  typed `@U123`; names and emails come from `users.info` within `RESOLVE_BUDGET`, and a
  deactivated signer is the request's problem at once. A Slack Connect user (`users.info` gives
  another workspace's `team_id`; a sender's `user_team` differs from the event's team) is
  `Person(external=True)`, reached by the contact the command gives (`<@U9> wang@x.example`,
  Slack's `<mailto:…>` links read back as the address) or the email their profile shares. A
  file sent to the bot in a DM is addressed to it; a mention with a file and no command keeps
  the file for a later `/sign`.
* `/sign` slash command → the same; its document is the user's latest file seen in the channel,
  else looked up in the channel's history when the flow runs (`slack:latest:…`). Answered with
  ephemeral text.
* `block_actions` from the card → a `ChatAction` named by the button's `action_id`, update id
  from the action's `action_ts`. Slack ignores the body of a block_actions answer and shows a
  warning icon for anything but 200, so a refusal or a status lookup is answered 200 and
  explained to the clicking user in an ephemeral message through the action's `response_url`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook.async_client import AsyncWebhookClient
from sqlalchemy.engine import Engine

from connectors.chat.base import ChatConnector
from connectors.chat.callback import Callback, CallbackRejected, Received, Reply, Route, Rules, json_object
from connectors.chat.directory import Departed, resolve_within
from connectors.chat.slack.client import PLATFORM, SlackConfig, file_source_url, latest_file_url, load_config
from signbridge.core import chat, commands
from signbridge.core.models import Actor, ChatRef, Person, StatusView
from signbridge.core.settings import Settings
from signbridge.core.untrusted import unix_time

log = logging.getLogger(__name__)

ROUTES = (Route("/im/slack/events"), Route("/im/slack/interactions"), Route("/im/slack/commands"))
MAX_BODY_BYTES = 1024 * 1024
RESOLVE_BUDGET = 1.5  # seconds of the 3 s deadline spent on users.info at most
_USER_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_OTHER_TOKEN = re.compile(r"<[#!][^>]*>")
_LINK = re.compile(r"<(https?://[^>|]+)(?:\|[^>]*)?>")
_CONTACT_LINK = re.compile(r"<(?:mailto|tel):([^>|]+)(?:\|[^>]*)?>")  # Slack links typed addresses and numbers
SLACK_HOOKS = "https://hooks.slack.com/"
NO_FILE = "No document to sign: attach the PDF to the same message that mentions SignBridge."
LATEST_FILE = "document.pdf"  # the placeholder name of "the user's latest file", looked up when the flow runs


@dataclass(frozen=True)
class SlashCommand(chat.ChatEvent):
    """`/sign …`: answered with ephemeral text, not an event acknowledgement."""


def _latest_file(event: chat.ChatEvent) -> tuple[chat.FileRef, ...]:
    """A slash command carries no file: the user's latest one in the channel's history, looked up
    when the flow runs (a mention without a file is told to attach one)."""
    if not isinstance(event, SlashCommand):
        return ()
    return (chat.FileRef(LATEST_FILE, latest_file_url(event.chat_id, event.sender.id)),)


# Accepted (durable) within 2 s, the result 0.5 s more: together under Slack's 3 s.
RULES = Rules(deadline=chat.Deadline(accept=2.0, result=0.5), no_file=NO_FILE, fallback_files=_latest_file)


@dataclass(frozen=True)
class Click(chat.ChatAction):
    """A card button, with where to explain the outcome to the person who clicked."""

    response_url: str | None = None


def slack_text(text: str, bot_user_id: str | None, bot_name: str) -> tuple[str, list[str]]:
    """Slack's markup → the shared grammar's plain text and the mentioned user ids.

    `<@U123>` → `@U123` (a mention named by its id until the directory names it), the bot's own
    mention → `@<bot name>`, channel/special mentions dropped, `&gt;` etc. unescaped last so a
    typed `>` is the group separator again."""
    mentioned: list[str] = []

    def user(m: re.Match[str]) -> str:
        uid = m.group(1)
        if uid == bot_user_id:
            return f"@{bot_name}"
        if uid not in mentioned:
            mentioned.append(uid)
        return f" @{uid} "

    text = _USER_MENTION.sub(user, text or "")
    text = _LINK.sub(lambda m: m.group(1), _OTHER_TOKEN.sub(" ", text))
    text = _CONTACT_LINK.sub(lambda m: m.group(1), text)
    text = text.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
    return text.strip(), mentioned


def _tenant(team: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", team) or "default"


class SlackInbound:
    platform = PLATFORM
    rules = RULES
    max_body = MAX_BODY_BYTES

    def __init__(self, config: SlackConfig, directory: ChatConnector, bot_name: str) -> None:
        self.config = config
        self.directory = directory
        self.bot_name = bot_name or commands.DEFAULT_BOT_NAME

    def __repr__(self) -> str:  # never the secrets
        return f"SlackInbound(api_base={self.config.base!r})"

    async def receive(self, call: Callback) -> Received:
        self._verify(call)
        if call.path.endswith("/interactions"):
            return self._interaction(call.body)
        if call.path.endswith("/commands"):
            return await self._command(call.body)
        return await self._event(json_object(call.body))

    def _verify(self, call: Callback) -> None:
        timestamp = call.headers.get("X-Slack-Request-Timestamp") or ""
        signature = call.headers.get("X-Slack-Signature") or ""
        if unix_time(timestamp) is None or not signature.isascii():
            raise CallbackRejected(401, "bad_signature",
                                   "Rejected: missing X-Slack-Signature or X-Slack-Request-Timestamp")
        if not SignatureVerifier(self.config.signing_secret.get_secret_value()).is_valid(call.body, timestamp,
                                                                                          signature):
            raise CallbackRejected(401, "bad_signature", "Rejected: the signature does not match or the timestamp "
                                                         "is more than 300 s off")

    # ---- messages -------------------------------------------------------------------------------

    async def _event(self, envelope: dict[str, Any]) -> Received:
        if envelope.get("type") == "url_verification":
            return Reply(200, {"challenge": envelope.get("challenge", "")})
        if envelope.get("type") != "event_callback":
            return Reply(200, {"ok": True, "ignored": envelope.get("type")})
        event = envelope.get("event") or {}
        kind = event.get("type")
        is_dm = kind == "message" and event.get("channel_type") == "im"
        if kind != "app_mention" and not is_dm:
            return Reply(200, {"ok": True, "ignored": kind})
        if event.get("bot_id") or event.get("subtype") not in (None, "file_share"):
            return Reply(200, {"ok": True, "ignored": "bot or edited message"})
        team, event_id = str(envelope.get("team_id") or event.get("team") or "default"), str(envelope.get("event_id")
                                                                                                or "")
        if not event_id or not event.get("user") or not event.get("channel"):
            raise CallbackRejected(400, "invalid_event", "event_id, event.user and event.channel are required")
        text, mentioned = slack_text(event.get("text", ""), self._bot_user_id(envelope, event.get("text", "")),
                                     self.bot_name)
        files = tuple(chat.FileRef(str(f.get("name") or f.get("title") or "document.pdf"),
                                   file_source_url(str(f["id"]))) for f in event.get("files") or [] if f.get("id"))
        if is_dm and files and not commands.is_command(text, self.bot_name):
            text = f"/sign {text}"  # a file sent to the bot in a DM is addressed to it
        user_team = str(event.get("user_team") or team)  # a Slack Connect sender's home workspace
        return await self._message(chat.ChatEvent, team=team, event_id=event_id, channel=str(event["channel"]),
                                   direct=is_dm, user=str(event["user"]), text=text, mentioned=mentioned,
                                   files=files, message_id=str(event.get("ts") or ""),
                                   outsider=user_team != team)

    async def _command(self, body: bytes) -> Received:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        user, channel, trigger = form.get("user_id", ""), form.get("channel_id", ""), form.get("trigger_id", "")
        if not user or not channel or not trigger:
            raise CallbackRejected(400, "invalid_command", "user_id, channel_id and trigger_id are required")
        text, mentioned = slack_text(form.get("text", ""), self.config.bot_user_id, self.bot_name)
        team = form.get("team_id", "default")
        return await self._message(SlashCommand, team=team, event_id=f"cmd-{trigger}",
                                   channel=channel, direct=channel.startswith("D"), user=user,
                                   text=f"/sign {text}", mentioned=mentioned, files=(), message_id="",
                                   outsider=bool(form.get("user_team_id")) and form.get("user_team_id") != team)

    async def _message(self, kind: type[chat.ChatEvent], *, team: str, event_id: str, channel: str, direct: bool,
                       user: str, text: str, mentioned: list[str], files: tuple[chat.FileRef, ...],
                       message_id: str, outsider: bool = False) -> chat.ChatEvent:
        """Names and emails from users.info; a Slack Connect user (another workspace's `team_id`
        there, or the sender's `user_team`) is external."""
        tenant = _tenant(team)
        people: dict[str, Person] = {}
        problem: str | None = None
        if commands.is_command(text, self.bot_name):  # names and emails for the flow and the signing page
            where = ChatRef(platform=PLATFORM, tenant=team, chat_id=channel, source_event_id=event_id)
            found = await resolve_within(self.directory, where, [Person(id=i, name=i) for i in [user, *mentioned]],
                                         RESOLVE_BUDGET)
            people = {i: r for i, r in found.items() if isinstance(r, Person)}
            problem = next((r.message for r in found.values() if isinstance(r, Departed)), None)
        sender = people.get(user, Person(id=user, name=""))
        if outsider:
            sender = sender.model_copy(update={"external": True})
        return kind(platform=PLATFORM, tenant=tenant, chat_id=channel, chat_kind="direct" if direct else "group",
                    sender=sender, event_id=event_id, text=text,
                    mentions=tuple(chat.Mention(people.get(i, Person(id=i, name=i)), typed=i) for i in mentioned),
                    files=files, message_id=message_id, problem=problem)

    def _bot_user_id(self, envelope: dict[str, Any], text: str) -> str | None:
        if self.config.bot_user_id:
            return self.config.bot_user_id
        for auth in envelope.get("authorizations") or []:
            if auth.get("is_bot") and auth.get("user_id"):
                return str(auth["user_id"])
        first = _USER_MENTION.match((text or "").lstrip())  # an app_mention starts with the bot's mention
        return first.group(1) if first else None

    # ---- buttons --------------------------------------------------------------------------------

    def _interaction(self, body: bytes) -> Received:
        payload = json_object(parse_qs(body.decode("utf-8", "replace")).get("payload", [""])[0])
        if payload.get("type") != "block_actions" or not payload.get("actions"):
            return Reply(200, {"ok": True, "ignored": payload.get("type")})
        action = payload["actions"][0]
        name, request_id = str(action.get("action_id", "")), str(action.get("value", ""))
        if name not in chat.ACTIONS + chat.QUERIES or not request_id.startswith("sign:"):
            return Reply(200, {"ok": True, "ignored": name})  # URL buttons (signing links) report clicks too
        user = payload.get("user") or {}
        team = str((payload.get("team") or {}).get("id") or "")
        return Click(request_id=request_id, name=name,
                     actor=Actor(id=str(user.get("id", "")), name=str(user.get("name") or user.get("username") or "")),
                     update_id=f"slack:{action.get('action_ts') or payload.get('trigger_id')}:{name}",
                     platform=PLATFORM, tenant=team, response_url=self._response_url(payload.get("response_url")))

    def _response_url(self, url: Any) -> str | None:
        """Only Slack's own hooks host (or the configured API host, for a private Slack/simulator):
        the URL comes from a verified request, but we still never POST wherever a body says."""
        if not isinstance(url, str):
            return None
        api_origin = "/".join(self.config.api_base.split("/", 3)[:3]) + "/"
        return url if url.startswith((SLACK_HOOKS, api_origin)) else None

    # ---- answers --------------------------------------------------------------------------------

    def reply(self, received: chat.Incoming, outcome: chat.Outcome) -> Reply:
        if isinstance(received, Click):
            return self._click_reply(received, outcome)
        if isinstance(received, SlashCommand):
            return self._command_reply(outcome)
        match outcome:
            case chat.Started() | chat.Duplicate():
                body: dict[str, Any] = {"ok": True, "request_id": outcome.request_id,
                                        "started": isinstance(outcome, chat.Started)}
                if outcome.problem:
                    body.update(status="rejected", reason=outcome.problem)
                return Reply(200, body)
            case chat.Ignored():
                return Reply(200, {"ok": True, "ignored": outcome.reason})
            case chat.Busy():
                return Reply.busy(outcome)  # Slack retries an event three times
        return Reply(200, {"ok": True})

    @staticmethod
    def _command_reply(outcome: chat.Outcome) -> Reply:
        match outcome:
            case chat.Started(problem=str()) | chat.Duplicate(problem=str()):
                return Reply(200, {"response_type": "ephemeral", "text": outcome.problem,
                                   "request_id": outcome.request_id})
            case chat.Started() | chat.Duplicate() if outcome.request_id.startswith("reply:"):
                return Reply(200, {"response_type": "ephemeral", "request_id": outcome.request_id,
                                   "text": "SignBridge answers you in a direct message."})
            case chat.Started() | chat.Duplicate():
                return Reply(200, {"response_type": "ephemeral", "request_id": outcome.request_id,
                                   "text": "Starting a signing request with the last file you shared in this channel. "
                                           "If you haven't shared one yet, attach the PDF and mention SignBridge "
                                           "instead."})
            case chat.Applied() | chat.Accepted():  # `/sign replace @old @new`: the card shows the change
                return Reply(200, {"response_type": "ephemeral", "request_id": outcome.request_id,
                                   "text": "Done: the card shows the new signer."})
        # Slack never sends a slash command again: tell the person to.
        return Reply(200, {"response_type": "ephemeral",
                           "text": "SignBridge is busy right now; please run the command again in a moment."})

    @staticmethod
    def _click_reply(click: Click, outcome: chat.Outcome) -> Reply:
        match outcome:
            case chat.Applied() if click.name in chat.QUERIES:
                return Reply(200, {"ok": True, "request_id": outcome.request_id, "status": outcome.view.status.value},
                             after=_ephemeral(click.response_url, status_text(outcome.view)))
            case chat.Applied():
                return Reply(200, {"ok": True, "request_id": outcome.request_id, "action": click.name,
                                   "status": outcome.view.status.value})
            case chat.Accepted():
                return Reply(202, {"ok": True, "request_id": outcome.request_id, "action": click.name,
                                   "accepted": True})
            case chat.Refused() if click.response_url:
                return Reply(200, {"ok": False, "request_id": click.request_id, "action": click.name,
                                   "error": {"code": outcome.code, "message": outcome.en}},
                             after=_ephemeral(click.response_url, f":no_entry: {outcome.en}"))
            case chat.Refused():  # nowhere to explain it: the plain refusal, Slack shows the button as failed
                return Reply.error(403 if outcome.permission else 409, outcome.code, outcome.en)
            case chat.NotFound(ended=True):
                return Reply.error(409, "already_ended", f"The request {outcome.request_id} has already ended")
            case chat.NotFound():
                return Reply.error(404, "not_found", f"No signing request {outcome.request_id}")
            case chat.Busy():
                return Reply.busy(outcome)  # a click is not redelivered: the user clicks again
        return Reply(200, {"ok": True})


def status_text(view: StatusView) -> str:
    pending = ", ".join(s.person.name for s in view.signers if s.status == "notified")
    signed = sum(s.status == "signed" for s in view.signers)
    text = f"*{view.title}*: {view.status.value} — {signed} of {len(view.signers)} signed"
    if pending:
        text += f"; waiting for {pending}"
    if view.reason:
        text += f" ({view.reason})"
    return text


def _ephemeral(url: str | None, text: str) -> Any:
    """After the 200 went out: an ephemeral message only the clicking user sees."""
    if url is None:
        return None

    async def send() -> None:
        try:
            resp = await AsyncWebhookClient(url, timeout=5).send(text=text, response_type="ephemeral",
                                                                  replace_original=False)
            if resp.status_code != 200:
                log.warning("slack response_url answered %s: %s", resp.status_code, resp.body)
        except Exception:  # the click was handled; only the explanation is lost
            log.warning("slack response_url failed", exc_info=True)

    return send


def build(settings: Settings, engine: Engine, chat: ChatConnector | None) -> SlackInbound | None:
    config = load_config()
    if not config.enabled or chat is None:
        return None
    return SlackInbound(config, chat, settings.bot_name)


__all__ = ["Click", "SlackInbound", "SlashCommand", "build", "slack_text", "status_text"]
