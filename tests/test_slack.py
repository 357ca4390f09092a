"""Slack both ways, over real HTTP: signatures, events, buttons, the connector against a Slack
simulator (`tests/sim/slack_sim.py`), and the whole flow on the real Temporal dev server.

Golden files: `SIGNBRIDGE_UPDATE_GOLDEN=1 pytest tests/test_slack.py -k golden` rewrites them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from slack_sdk.signature import Clock, SignatureVerifier
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from connectors.chat.base import ChatRejected, ChatUnavailable, InputProblem
from connectors.chat.slack.cards import render_card
from connectors.chat.slack.client import SlackChat, SlackConfig, build
from signbridge.core.cards import build_card
from signbridge.core.models import ChatRef, DocumentInfo, DocumentSource, Person, SignerState, SignStatus, StatusView
from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from store.db import create_all, get_engine
from tests.chat_cases.slack import SECRET, TOKEN, mention, signed
from tests.codes import sign_with_code
from tests.sim.servers import free_port, serve
from tests.sim.slack_sim import SlackSim
from worker import build_worker

GOLDEN = Path(__file__).parent / "golden"
CHAT = ChatRef(platform="slack", tenant="T1", chat_id="C1", source_event_id="e-1")


# ---- helpers ----------------------------------------------------------------------------------

def click(action: str, request_id: str, user: str, response_url: str | None = None) -> bytes:
    payload = {"type": "block_actions", "team": {"id": "T1"}, "user": {"id": user, "name": user.lower()},
               "response_url": response_url,
               "trigger_id": f"tr-{uuid.uuid4().hex[:8]}", "channel": {"id": "C1"},
               "actions": [{"action_id": action, "value": request_id, "type": "button",
                            "action_ts": f"{time.time():.6f}"}]}
    return urlencode({"payload": json.dumps(payload)}).encode()


def sim_world(contract: bytes) -> SlackSim:
    sim = SlackSim(TOKEN)
    sim.add_user("U0", "Alice", "alice@corp.example")
    sim.add_user("U1", "Bob", "bob@corp.example")
    sim.add_user("U2", "Carol", "carol@corp.example")
    sim.add_user("U9", "Gone Dave", "dave@corp.example", deleted=True)
    sim.add_channel("C1")
    sim.share_file("F1", "contract.pdf", contract, "U0", "C1")
    return sim


@pytest.fixture
def slack_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Slack configured through the environment, as in production (the API reads it per app)."""
    monkeypatch.setenv("SIGNBRIDGE_SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("SIGNBRIDGE_SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("SIGNBRIDGE_SLACK_API_BASE", "http://127.0.0.1:9/api/")  # nothing listens there
    return monkeypatch


@dataclass
class Api:
    url: str
    settings: Settings

    async def post(self, http: httpx.AsyncClient, path: str, body: bytes, headers: dict[str, str] | None = None,
                   content_type: str = "application/json") -> httpx.Response:
        return await http.post(f"{self.url}/im/slack/{path}", content=body,
                               headers={**(signed(body) if headers is None else headers), "Content-Type": content_type})


@contextmanager
def api_server(dev_env: WorkflowEnvironment, settings: Settings) -> Iterator[Api]:
    port = free_port()
    settings = settings.model_copy(update={
        "public_url": f"http://127.0.0.1:{port}",
        "temporal_address": dev_env.client.service_client.config.target_host,
        "step_retry_window": timedelta(seconds=20),
    })
    with serve(create_app(settings), port=port) as url:
        yield Api(url, settings)


# ---- signatures and inbound -------------------------------------------------------------------

def test_published_signature_vector() -> None:
    body = ("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
            "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
            "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
            "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

    class At(Clock):
        def __init__(self, now: float) -> None:
            self._now = now

        def now(self) -> float:
            return self._now

    verifier = SignatureVerifier("8f742231b10e8888abcd99yyyzzz85a5", clock=At(1531420618 + 299))
    assert verifier.generate_signature(timestamp="1531420618", body=body) == expected
    assert verifier.is_valid(body, "1531420618", expected)
    assert not SignatureVerifier("8f742231b10e8888abcd99yyyzzz85a5", clock=At(1531420618 + 301)).is_valid(
        body, "1531420618", expected)


# ---- the connector against the simulator ------------------------------------------------------

async def test_connector_against_simulator(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    contract = sample_contract("Connector")
    with sim_world(contract) as sim:
        async with httpx.AsyncClient() as http:
            chat = SlackChat(SlackConfig(signing_secret=SECRET, bot_token=TOKEN, api_base=sim.api_base),  # type: ignore[arg-type]
                             engine, http)
            bob = await chat.resolve(CHAT, Person(id="U1", name="U1"))
            assert (bob.name, bob.email) == ("Bob", "bob@corp.example")
            with pytest.raises(InputProblem, match="has been deactivated"):
                await chat.resolve(CHAT, Person(id="U9", name="U9"))
            assert await chat.download(CHAT, DocumentSource(name="c.pdf", url="slack:file:F1"), 10**7) == contract
            assert await chat.download(CHAT, DocumentSource(name="c.pdf", url="slack:latest:C1:U0"), 10**7) == contract
            with pytest.raises(InputProblem, match="larger than"):
                await chat.download(CHAT, DocumentSource(name="c.pdf", url="slack:file:F1"), 100)
            with pytest.raises(InputProblem):
                await chat.download(CHAT, DocumentSource(name="c.pdf", url="slack:file:F404"), 10**7)
            with pytest.raises(InputProblem, match="attach the PDF"):
                await chat.download(CHAT, DocumentSource(name="c.pdf", url="slack:latest:C1:U2"), 10**7)

            card = build_card(_view(SignStatus.IN_PROGRESS), lang="en")
            await chat.upsert_card(CHAT, "req-1", card)
            await chat.upsert_card(CHAT, "req-1", card)  # a retried activity: updates, never posts again
            assert len(sim.cards("C1")) == 1 and sim.cards("C1")[0].updates == 1
            await chat.send_link(CHAT, Person(id="U1", name="Bob"), "please sign", "http://x/sign/t", key="k1")
            assert len(sim.dms("U1")) == 1  # sent once per key: tests/test_chat_activities.py

            del sim.messages[("C1", sim.cards("C1")[0].ts)]  # someone deleted the card: it comes back once
            await chat.upsert_card(CHAT, "req-1", card)
            await chat.upsert_card(CHAT, "req-1", card)
            assert len(sim.cards("C1")) == 1 and sim.cards("C1")[0].updates == 1

            sim.rate_limit_next(1, retry_after=7)
            with pytest.raises(ChatUnavailable) as unavailable:
                await chat.upsert_card(CHAT, "req-2", card)
            assert unavailable.value.retry_after == 7
            with pytest.raises(ChatRejected, match="channel_not_found"):
                await chat.upsert_card(CHAT.model_copy(update={"chat_id": "C404"}), "req-3", card)
            bad = SlackChat(SlackConfig(signing_secret=SECRET, bot_token="xoxb-wrong", api_base=sim.api_base),  # type: ignore[arg-type]
                            engine, http)
            with pytest.raises(ChatRejected, match="invalid_auth"):
                await bad.upsert_card(CHAT, "req-4", card)
            assert len(sim.cards("C1")) == 1


# ---- cards ------------------------------------------------------------------------------------

def _view(status: SignStatus) -> StatusView:
    doc = DocumentInfo(name="Q3 renewal.pdf", sha256="ab" * 32, blob_key="ab" * 32, size=1234, pages=2)
    states = {SignStatus.IN_PROGRESS: ("signed", "notified", "waiting"),
              SignStatus.STUCK: ("signed", "notified", "waiting"),
              SignStatus.COMPLETED: ("signed", "signed", "signed")}[status]
    people = [Person(id="U1", name="Bob"), Person(id="U2", name="Carol <C&O>"),
              Person(id="x-1", name="Customer", email="c@customer.example", external=True)]
    return StatusView(
        request_id="sign:slack:T1:Ev1", title="Q3 renewal", status=status, provider="local",
        initiator=Person(id="U0", name="Alice"), chat=CHAT, document=doc,
        signers=[SignerState(person=p, group=0 if i < 2 else 1, status=s)  # type: ignore[arg-type]
                 for i, (p, s) in enumerate(zip(people, states, strict=True))],
        deadline=datetime(2030, 1, 1, tzinfo=UTC),
        signed_document=doc.model_copy(update={"sha256": "cd" * 32}) if status == SignStatus.COMPLETED else None,
        reason="The provider did not answer for 30 minutes (create)" if status == SignStatus.STUCK else None,
        stuck_step="create" if status == SignStatus.STUCK else None,
    )


@pytest.mark.parametrize("status", [SignStatus.IN_PROGRESS, SignStatus.STUCK, SignStatus.COMPLETED])
def test_golden_cards(status: SignStatus) -> None:
    blocks = render_card(build_card(_view(status), lang="en"))
    path = GOLDEN / f"slack_{status.value.lower()}.json"
    if os.environ.get("SIGNBRIDGE_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(blocks, indent=2, ensure_ascii=False) + "\n")
    assert blocks == json.loads(path.read_text())


# ---- end to end on the dev server -------------------------------------------------------------

def link_url(message: Any) -> str | None:
    for block in message.blocks:
        for element in block.get("elements", []):
            if element.get("url") and "/sign/" in element["url"]:
                return str(element["url"])
    return None


async def sign_via_dm(http: httpx.AsyncClient, sim: SlackSim, user: str, name: str, settings: Settings) -> None:
    await sim.wait_for(lambda: any(link_url(m) for m in sim.dms(user)), timeout=60)
    urls = {link_url(m) for m in sim.dms(user)} - {None}
    assert len(urls) == 1  # reminders resend the same link
    resp = await sign_with_code(http, settings, str(urls.pop()), name)
    assert resp.status_code == 200, resp.text


async def wait_status(client: Client, request_id: str, status: str, timeout: float = 90) -> StatusView:
    handle = client.get_workflow_handle(request_id)
    end = time.monotonic() + timeout
    while True:
        view: StatusView = await handle.query("status", result_type=StatusView)
        if view.status.value == status:
            return view
        assert time.monotonic() < end, f"{request_id} is {view.status.value}, expected {status}"
        await asyncio.sleep(0.1)


def signed_counts(message: Any) -> list[int]:
    return [json.dumps(v, ensure_ascii=False).count(" — signed") for v in message.versions]


@asynccontextmanager
async def slack_stack(dev_env: WorkflowEnvironment, settings: Settings, env: pytest.MonkeyPatch,
                      contract: bytes) -> AsyncIterator[tuple[SlackSim, Api, httpx.AsyncClient]]:
    """Simulator + real API over HTTP + the real worker whose Slack connector talks to the simulator."""
    with sim_world(contract) as sim:
        env.setenv("SIGNBRIDGE_SLACK_API_BASE", sim.api_base)
        with api_server(dev_env, settings) as api:
            config = SlackConfig(signing_secret=SECRET, bot_token=TOKEN, api_base=sim.api_base)  # type: ignore[arg-type]
            async with httpx.AsyncClient(timeout=30) as http, build_worker(
                    dev_env.client, api.settings,
                    chats={"slack": SlackChat(config, get_engine(api.settings.sqlalchemy_url), http)}) as worker, \
                    worker:
                yield sim, api, http


async def test_mention_to_signed_pdf(dev_env: WorkflowEnvironment, settings: Settings,
                                     slack_env: pytest.MonkeyPatch) -> None:
    contract = sample_contract("Slack Contract")
    async with slack_stack(dev_env, settings, slack_env, contract) as (sim, api, http):
        body = json.dumps(mention("<@UBOT> sign <@U1> &gt; <@U2>", files=["F1"])).encode()
        resp = await api.post(http, "events", body)
        assert resp.status_code == 200 and resp.json()["started"] is True, resp.text
        request_id = resp.json()["request_id"]
        await sim.wait_for(lambda: bool(sim.cards("C1")) and "Waiting" in json.dumps(sim.cards("C1")[0].blocks))

        # the remind button: refused for a signer who did not start the request, fine for the initiator
        # Slack shows a warning icon for anything but 200: the refusal is explained to the
        # clicking user in an ephemeral message through the response_url instead.
        refused = await api.post(http, "interactions", click("remind", request_id, "U1", sim.response_url()),
                                 content_type="application/x-www-form-urlencoded")
        assert refused.status_code == 200 and refused.json()["error"]["code"] == "PermissionDenied", refused.text
        await sim.wait_for(lambda: len(sim.responses) == 1)
        assert sim.responses[0]["response_type"] == "ephemeral" and sim.responses[0]["replace_original"] is False
        assert "Only the initiator" in sim.responses[0]["text"], sim.responses
        no_url = await api.post(http, "interactions", click("remind", request_id, "U1"),
                                content_type="application/x-www-form-urlencoded")
        assert no_url.status_code == 403, no_url.text  # nowhere to explain: the plain refusal
        elsewhere = await api.post(http, "interactions",
                                   click("remind", request_id, "U1", "https://attacker.example/actions/x"),
                                   content_type="application/x-www-form-urlencoded")
        assert elsewhere.status_code == 403, elsewhere.text  # never POST to a host that isn't Slack's
        accepted = await api.post(http, "interactions", click("remind", request_id, "U0", sim.response_url()),
                                  content_type="application/x-www-form-urlencoded")
        assert accepted.status_code in (200, 202), accepted.text
        status = await api.post(http, "interactions", click("status", request_id, "U2", sim.response_url()),
                                content_type="application/x-www-form-urlencoded")
        assert status.json()["status"] == "IN_PROGRESS"
        await sim.wait_for(lambda: len(sim.responses) == 2)
        assert "IN_PROGRESS" in sim.responses[1]["text"] and "0 of 2 signed" in sim.responses[1]["text"], sim.responses

        await sign_via_dm(http, sim, "U1", "Bob", settings)
        await sign_via_dm(http, sim, "U2", "Carol", settings)
        view = await wait_status(dev_env.client, request_id, "COMPLETED")
        await sim.wait_for(lambda: "Completed" in json.dumps(sim.cards("C1")[0].blocks))

        # the signed PDF, then the certificate, uploaded into the channel as files
        await sim.wait_for(lambda: len(sim.shared_files("C1")) == 2)
        files = [m for m in sim.posted("C1") if "Signed document" in m.text]
        assert len(files) == 1 and view.signed_document is not None
        signed_file, certificate = sim.shared_files("C1")
        assert signed_file.data.startswith(contract) and view.signed_document.sha256[:16] in files[0].text
        assert hashlib.sha256(signed_file.data).hexdigest() == view.signed_document.sha256
        assert certificate.data.startswith(b"%PDF") and "签署完成证明" in certificate.name
        cards = sim.cards("C1")
        assert len(cards) == 1
        assert sim.count("chat.postMessage") + sim.count("files.completeUploadExternal") == len(sim.posted())
        counts = signed_counts(cards[0])
        assert counts == sorted(counts) and counts[-1] == 2 and 1 in counts  # updated after each signature
        assert [s.person.name for s in view.signers] == ["Bob", "Carol"]  # names from users.info


async def test_rate_limit_storm(dev_env: WorkflowEnvironment, settings: Settings,
                                slack_env: pytest.MonkeyPatch) -> None:
    contract = sample_contract("Storm")
    async with slack_stack(dev_env, settings, slack_env, contract) as (sim, api, http):
        body = json.dumps(mention("<@UBOT> sign <@U1>", files=["F1"])).encode()
        resp = await api.post(http, "events", body)
        assert resp.status_code == 200, resp.text
        sim.rate_limit_next(3)  # the flow's first calls: the document, the card, the link
        request_id = resp.json()["request_id"]
        await sim.wait_for(lambda: any(link_url(m) for m in sim.dms("U1")), timeout=60)
        sim.rate_limit_next(3)
        await sign_via_dm(http, sim, "U1", "Bob", settings)
        await wait_status(dev_env.client, request_id, "COMPLETED")
        await sim.wait_for(lambda: "Completed" in json.dumps(sim.cards("C1")[0].blocks), timeout=60)
        await sim.wait_for(lambda: any("Signed document" in m.text for m in sim.posted("C1")), timeout=60)
        assert sim.rate_limited == 6
        assert len(sim.cards("C1")) == 1
        assert len([m for m in sim.dms("U1") if link_url(m)]) == 1
        assert len([m for m in sim.posted("C1") if "Signed document" in m.text]) == 1


async def test_slash_command_dm_and_deactivated(dev_env: WorkflowEnvironment, settings: Settings,
                                                slack_env: pytest.MonkeyPatch) -> None:
    async with slack_stack(dev_env, settings, slack_env, sample_contract("Slash")) as (sim, api, http):
        form_ct = "application/x-www-form-urlencoded"

        def command(user: str, text: str) -> bytes:
            return urlencode({"team_id": "T1", "channel_id": "C1", "user_id": user, "command": "/sign",
                              "text": text, "trigger_id": f"tr.{uuid.uuid4().hex[:10]}"}).encode()

        # /sign carries no file: the user's latest file in the channel (U0 shared F1 in C1) is the document
        resp = await api.post(http, "commands", command("U0", "<@U1|bob> title:Slash"), content_type=form_ct)
        assert resp.status_code == 200 and resp.json()["response_type"] == "ephemeral", resp.text
        request_id = resp.json()["request_id"]
        await sim.wait_for(lambda: any(link_url(m) for m in sim.dms("U1")), timeout=60)
        cancel = await api.post(http, "interactions", click("cancel", request_id, "U0"), content_type=form_ct)
        assert cancel.status_code in (200, 202), cancel.text
        await wait_status(dev_env.client, request_id, "CANCELLED")

        # nothing shared by U2 in this channel: the flow explains it in the chat and ends REJECTED
        resp = await api.post(http, "commands", command("U2", "<@U1>"), content_type=form_ct)
        view = await wait_status(dev_env.client, resp.json()["request_id"], "REJECTED")
        assert view.reason and "attach the PDF" in view.reason
        await sim.wait_for(lambda: any("attach the PDF" in json.dumps(m.blocks) + m.text for m in sim.posted("C1")))

        # a deactivated signer is refused up front, visibly
        body = json.dumps(mention("<@UBOT> sign <@U9>", files=["F1"])).encode()
        resp = await api.post(http, "events", body)
        assert resp.json()["status"] == "rejected" and "deactivated" in resp.json()["reason"]
        await wait_status(dev_env.client, resp.json()["request_id"], "REJECTED")

        # a DM to the bot with a file is a command; chit-chat in a DM is ignored
        dm = mention("sign <@U2>", files=["F1"])
        dm["event"].update(type="message", channel="DU0", channel_type="im", subtype="file_share")
        resp = await api.post(http, "events", json.dumps(dm).encode())
        assert resp.json()["started"] is True, resp.text
        chat = mention("hello", files=[])
        chat["event"].update(type="message", channel="DU0", channel_type="im")
        resp = await api.post(http, "events", json.dumps(chat).encode())
        assert resp.json()["ignored"] == "not a command"
        await sim.wait_for(lambda: any(link_url(m) for m in sim.dms("U2")), timeout=60)
        assert len(sim.cards("DU0")) == 1


def test_slack_markup_and_build_from_env(settings: Settings, slack_env: pytest.MonkeyPatch) -> None:
    from connectors.chat.slack.inbound import slack_text
    from signbridge.core import commands

    text, mentions = slack_text("<@UBOT> sign <@U1|bob>, <@U2> &gt; <@U3> <#C9|general> <!here> title:\"A &amp; B\"",
                                "UBOT", "SignBridge")
    assert mentions == ["U1", "U2", "U3"]
    parsed = commands.parse(text, [{"id": m, "name": m} for m in mentions], bot_name="SignBridge")
    assert parsed is not None and [[p.id for p in g] for g in parsed.groups] == [["U1", "U2"], ["U3"]]
    assert parsed.title == "A & B"
    slack_env.setenv("SIGNBRIDGE_SLACK_API_BASE", "http://slack.test/api")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    chat = build(settings, httpx.AsyncClient())
    assert isinstance(chat, SlackChat) and chat.platform == "slack" and chat.config.base == "http://slack.test/api/"
    assert TOKEN not in repr(chat) and TOKEN not in repr(chat.config)
