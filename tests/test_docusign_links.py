"""DocuSign embedded signing through SignBridge's link (`api/esign_links.py`), over real HTTP.

DocuSign's recipient-view URL works once and dies 5 minutes after it is made (the simulator
enforces both, on its own clock); the link posted in chat must still work when it is clicked
hours later, every time, and must never call DocuSign for a token it does not know.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api import esign_links
from api.main import create_app
from connectors.esign.docusign import DocuSignProvider
from signbridge.core.settings import Settings
from store.blobs import FileBlobStore
from store.tables import utcnow
from tests.provider_cases import A, B
from tests.sim.docusign_sim import DocuSignSim
from tests.sim.servers import free_port, serve
from tests.test_docusign import ACCOUNT, HMAC_KEY, IK, PUBLIC_PEM, USER, _create_input, _open, _provider, docusign_env

HOURS = 3600.0


@dataclass
class Rig:
    sim: DocuSignSim
    api_url: str
    provider: DocuSignProvider
    flow: str
    tokens: dict[str, str]  # signer id -> token of the link posted in the chat
    http: httpx.AsyncClient
    settings: Settings

    def link(self, signer_id: str) -> str:
        return f"{self.api_url}/esign/docusign/sign/{self.tokens[signer_id]}"

    def view_calls(self) -> int:
        return self.sim.calls.count(f"POST /restapi/v2.1/accounts/{ACCOUNT}/envelopes/{self.flow}/views/recipient")


@pytest.fixture
async def rig(dev_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    with DocuSignSim(IK, USER, ACCOUNT, PUBLIC_PEM, [HMAC_KEY]).running() as sim:
        docusign_env(monkeypatch, sim)
        port = free_port()
        settings = settings.model_copy(update={
            "public_url": f"http://127.0.0.1:{port}",
            "temporal_address": dev_env.client.service_client.config.target_host})
        async with httpx.AsyncClient(timeout=10) as http:
            blobs = FileBlobStore(settings.data_dir / "blobs")
            provider = _provider(sim, blobs, http, settings, public_url=settings.public_url)
            flow = await provider.create_flow(_create_input(blobs, [[A, B]]))
            links = await provider.open_group(_open(flow, [A, B]))
            prefix = f"{settings.public_url}/esign/docusign/sign/"
            assert all(str(link.url).startswith(prefix) for link in links)
            tokens = {link.signer_id: str(link.url).removeprefix(prefix) for link in links}
            with serve(create_app(settings), port=port) as api_url:
                yield Rig(sim, api_url, provider, flow, tokens, http, settings)


def _later(monkeypatch: pytest.MonkeyPatch, rig: Rig, seconds: float) -> None:
    """Hours pass for DocuSign and for SignBridge alike."""
    rig.sim.advance(seconds)
    monkeypatch.setattr(esign_links, "now", lambda: utcnow() + timedelta(seconds=rig.sim.clock_offset))


async def test_chat_link_works_twice_hours_apart(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    first = await rig.http.get(rig.link("u-1"))
    assert first.status_code == 303 and first.headers["location"].startswith(rig.sim.url + "/signing/")
    assert first.headers["cache-control"] == "no-store" and first.headers["referrer-policy"] == "no-referrer"
    assert (await rig.http.get(first.headers["location"])).status_code == 200  # valid when it was made
    assert (await rig.http.get(first.headers["location"])).status_code == 404  # DocuSign: single use

    _later(monkeypatch, rig, 3 * HOURS)  # the signer comes back to the chat in the afternoon
    second = await rig.http.get(rig.link("u-1"))
    assert second.status_code == 303 and second.headers["location"] != first.headers["location"]
    assert rig.view_calls() == 2  # one fresh view per click
    opened = await rig.http.get(second.headers["location"])
    assert opened.status_code == 200 and "Signing as" in opened.text

    # A finishes in the DocuSign session and is sent to SignBridge's return page
    session = opened.text.split('action="')[1].split('"')[0]
    done = await rig.http.post(rig.sim.url + session)
    assert done.status_code == 303
    assert done.headers["location"] == f"{rig.settings.public_url}/esign/docusign/return?event=signing_complete"
    back = await rig.http.get(done.headers["location"].replace(rig.settings.public_url, rig.api_url))
    assert back.status_code == 200 and "close this page" in back.text
    assert rig.sim.envelopes[rig.flow]["recipients"]["signers"][0]["status"] == "completed"

    # the same chat link, clicked once more: a page saying so, no view requested
    again = await rig.http.get(rig.link("u-1"))
    assert again.status_code == 200 and "already signed" in again.text and rig.view_calls() == 2


async def test_stale_or_reused_view_url_is_refused_by_docusign(rig: Rig) -> None:
    """The rules the chat link exists for, as the simulator enforces them."""
    fresh = await rig.provider.recipient_view(rig.flow, "u-1", "https://signbridge.test/return")
    rig.sim.advance(4 * 60)  # within 5 minutes: still works
    assert (await rig.http.get(fresh)).status_code == 200
    stale = await rig.provider.recipient_view(rig.flow, "u-1", "https://signbridge.test/return")
    rig.sim.advance(5 * 60 + 1)
    refused = await rig.http.get(stale)
    assert refused.status_code == 404 and "expired" in refused.json()["message"]

    # a recipient view needs clientUserId, userName, email and authenticationMethod to match
    signer = rig.sim.envelopes[rig.flow]["recipients"]["signers"][0]
    good = {"returnUrl": "https://signbridge.test/return", "authenticationMethod": "none",
            "clientUserId": signer["clientUserId"], "userName": signer["name"], "email": signer["email"]}
    url = f"{rig.sim.api_base}/v2.1/accounts/{ACCOUNT}/envelopes/{rig.flow}/views/recipient"
    headers = {"Authorization": f"Bearer {await rig.provider.auth.token()}"}
    assert (await rig.http.post(url, json=good, headers=headers)).status_code == 201
    for field, wrong in [("clientUserId", "u-2"), ("userName", "someone"), ("email", "x@corp.example"),
                         ("authenticationMethod", ""), ("returnUrl", "")]:
        resp = await rig.http.post(url, json={**good, field: wrong}, headers=headers)
        assert resp.status_code == 400, field
    assert (await rig.http.post(url, json=good)).status_code == 401  # the JWT-grant bearer token is required


async def test_bad_tokens_never_call_docusign(rig: Rig, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    calls = len(rig.sim.calls)
    token = rig.tokens["u-1"]
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (tampered, "not-a-token", "x" * 300, rig.tokens["u-1"].upper()):
        page = await rig.http.get(f"{rig.api_url}/esign/docusign/sign/{bad}")
        assert page.status_code == 404 and "not valid" in page.text, bad
    preview = await rig.http.get(rig.link("u-1"), headers={"User-Agent": "Slackbot-LinkExpanding 1.0"})
    assert preview.status_code == 200 and "Open this link" in preview.text  # a chat's link preview
    _later(monkeypatch, rig, 4 * 24 * HOURS)  # past the request's deadline (3 days)
    expired = await rig.http.get(rig.link("u-1"))
    assert expired.status_code == 410 and "expired" in expired.text
    assert len(rig.sim.calls) == calls  # not one OAuth or API request

    # only the token's SHA-256 is stored
    with closing(sqlite3.connect(rig.settings.sqlalchemy_url.removeprefix("sqlite:///"))) as db:
        dump = "\n".join(db.iterdump())
    assert token not in dump and hashlib.sha256(token.encode()).hexdigest() in dump


async def test_declined_and_closed(rig: Rig) -> None:
    await rig.sim.decline(rig.flow, str(B.email), "价格不对")
    declined = await rig.http.get(rig.link("u-2"))
    assert declined.status_code == 200 and "declined" in declined.text
    closed = await rig.http.get(rig.link("u-1"))  # a decline ends the envelope for everyone
    assert closed.status_code == 410 and "closed" in closed.text
    assert rig.view_calls() == 0


async def test_docusign_outage_is_a_retry_page(rig: Rig) -> None:
    rig.sim.down = True
    page = await rig.http.get(rig.link("u-1"))
    assert page.status_code == 502 and "try again" in page.text.lower()
    assert "Traceback" not in page.text and "503" not in page.text
    rig.sim.down = False
    assert (await rig.http.get(rig.link("u-1"))).status_code == 303  # the same link, once DocuSign is back


async def test_the_app_owns_one_docusign_connection_and_closes_it(
    dev_env: WorkflowEnvironment, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(settings, client=dev_env.client)
    async with app.router.lifespan_context(app):
        assert app.state.docusign_views is None  # not configured: the page says so, nothing is opened
    with DocuSignSim(IK, USER, ACCOUNT, PUBLIC_PEM, [HMAC_KEY]).running() as sim:
        docusign_env(monkeypatch, sim)
        app = create_app(settings, client=dev_env.client)
        async with app.router.lifespan_context(app):
            views = app.state.docusign_views
            assert isinstance(views, DocuSignProvider) and not views.http.is_closed
        assert views.http.is_closed
