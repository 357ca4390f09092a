"""Slack: JSON events, form-encoded commands and interactions, signed with `X-Slack-Signature` (v0 HMAC)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from connectors.chat.slack.inbound import NO_FILE
from signbridge.core.models import DocumentSource
from tests.chat_cases import Call, ChatCase, json_body
from tests.sim.slack_sim import SlackSim

SECRET = "test-slack-signing-secret"
TOKEN = "xoxb-test-bot-token"
FORM = "application/x-www-form-urlencoded"


def signed(body: bytes, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    stamp = str(ts if ts is not None else int(time.time()))
    sig = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert sig
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": sig}


def mention(text: str, event_id: str | None = None, files: list[str] | None = None, user: str = "U0") -> dict[str, Any]:
    return {"token": "legacy", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10]}", "event_time": int(time.time()),
            "authorizations": [{"team_id": "T1", "user_id": "UBOT", "is_bot": True}],
            "event": {"type": "app_mention", "user": user, "text": text, "channel": "C1",
                      "ts": f"{time.time():.6f}", "event_ts": "1700000001.000100",
                      "files": [{"id": f, "name": "contract.pdf", "mimetype": "application/pdf"}
                                for f in files or []]}}


def click(action: str, request_id: str, user: str, response_url: str | None = None) -> bytes:
    payload = {"type": "block_actions", "team": {"id": "T1"}, "user": {"id": user, "name": user.lower()},
               "response_url": response_url, "trigger_id": f"tr-{request_id[-8:]}", "channel": {"id": "C1"},
               "actions": [{"action_id": action, "value": request_id, "type": "button",
                            "action_ts": f"{request_id[-8:]}.{user}"}]}
    return urlencode({"payload": json.dumps(payload)}).encode()


def world() -> SlackSim:
    sim = SlackSim(TOKEN)
    for uid, name in (("U0", "Alice"), ("U1", "Bob"), ("U2", "Carol"), ("U3", "Mallory")):
        sim.add_user(uid, name, f"{name.lower()}@corp.example")
    sim.add_user("U9", "Gone Dave", "dave@corp.example", deleted=True)
    sim.add_user("U7", "Wang", "wang@partner.example", team="T2")  # Slack Connect: another workspace
    sim.add_channel("C1")
    return sim


def event(body: bytes, signing: str = "valid", path: str = "/im/slack/events",
          content_type: str = "application/json") -> Call:
    headers = {"valid": signed(body), "forged": signed(body, secret="not-the-secret"),
               "stale": signed(body, ts=int(time.time()) - 301), "unsigned": {}}[signing]
    return Call("POST", path, body, {**headers, "Content-Type": content_type})


class Case(ChatCase):
    platform, tenant = "slack", "T1"
    initiator, signers, stranger = "U0", ("U1", "U2"), "U3"
    file_source = DocumentSource(name="contract.pdf", url="slack:file:F1")
    no_file = NO_FILE
    sim: SlackSim

    @contextmanager
    def simulator(self) -> Iterator[dict[str, str]]:
        with world() as self.sim:
            yield {"SIGNBRIDGE_SLACK_SIGNING_SECRET": SECRET, "SIGNBRIDGE_SLACK_BOT_TOKEN": TOKEN,
                   "SIGNBRIDGE_SLACK_API_BASE": self.sim.api_base}

    def command(self, event_id: str, signing: str = "valid") -> Call:
        return event(json_body(mention("<@UBOT> sign <@U1> &gt; <@U2>", event_id)), signing)

    outsider, outsider_contact = "U7", ("mobile", "+8613812341234")

    def external_command(self, event_id: str) -> Call:
        """A Slack Connect user, with a mobile written after the mention (their profile shares an email)."""
        return event(json_body(mention("<@UBOT> sign <@U1> &gt; <@U7> <tel:13812341234|13812341234>", event_id)))

    def file(self, event_id: str) -> Call:
        """Slack delivers a file only with a mention (or in a DM): one that is not a command."""
        return event(json_body(mention("<@UBOT> here is the contract", event_id, files=["F1"])))

    def slash(self, text: str, trigger: str, user: str = "U0") -> Call:
        return event(urlencode({"team_id": "T1", "channel_id": "C1", "user_id": user, "command": "/sign",
                                "text": text, "trigger_id": trigger}).encode(), path="/im/slack/commands",
                     content_type=FORM)

    def click(self, request_id: str, action: str, user: str) -> Call:
        return event(click(action, request_id, user, self.sim.response_url()), path="/im/slack/interactions",
                     content_type=FORM)

    def handshake(self) -> tuple[Call, Any]:
        def check(resp: httpx.Response) -> None:
            assert resp.status_code == 200 and resp.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV"}, resp.text

        return event(json_body({"type": "url_verification", "token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV"})), check

    def refused(self, resp: httpx.Response) -> None:
        """200 (anything else shows a failed button) and the reason to the clicker alone, through the
        click's response_url."""
        assert resp.status_code == 200 and resp.json()["error"]["code"] == "PermissionDenied", resp.text
