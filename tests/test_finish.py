"""`finish` heartbeats, so a heartbeat timeout notices a worker that died during it within seconds.

Runs the real activity (SDK ActivityEnvironment, which records heartbeats) against the real
built-in provider, with a flow signed through the real signing code.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from temporalio.testing import ActivityEnvironment

from activities import documents
from activities.deps import Deps
from activities.documents import DocumentActivities
from connectors.esign import local, validated
from connectors.esign.local import LocalProvider
from signbridge.core.models import CreateFlowInput, DocumentInfo, FinishInput, OpenGroupInput, Person
from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from store import audit
from store.blobs import FileBlobStore
from store.db import create_all, get_engine
from store.tables import ValidatedVersion, utcnow

A = Person(id="u-1", name="李四")


class HeldDownload:
    """The real provider, whose download waits until `release` is set (a slow file server)."""

    def __init__(self, inner: LocalProvider, release: asyncio.Event) -> None:
        self.inner, self.release = inner, release

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    async def download_signed(self, flow_id: str) -> bytes:
        await self.release.wait()
        return await self.inner.download_signed(flow_id)


async def _signed_flow(settings: Settings, request_id: str, title: str, people: list[Person],
                       ) -> tuple[Engine, FileBlobStore, LocalProvider, DocumentInfo, str]:
    """A built-in flow whose serial signers (one group each) have all signed on the real signing code."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    blobs = FileBlobStore(settings.data_dir / "blobs")
    provider = LocalProvider(settings, engine, blobs)
    original = sample_contract(title)
    key = blobs.put(original)
    document = DocumentInfo(name="contract.pdf", sha256=key, blob_key=key, size=len(original), pages=2)
    expires = utcnow() + timedelta(days=1)
    flow_id = await provider.create_flow(CreateFlowInput(request_id=request_id, provider="local", title="合同",
                                                         document=document, groups=[[p] for p in people],
                                                         expires_at=expires))
    for group, person in enumerate(people):
        [link] = await provider.open_group(OpenGroupInput(request_id=request_id, provider="local", flow_id=flow_id,
                                                          group=group, signers=[person], expires_at=expires))
        assert link.url
        await local.sign(settings, engine, blobs, link.url.rsplit("/sign/", 1)[1], typed_name=person.name,
                         consent=True, ip=None, user_agent=None)
    return engine, blobs, provider, document, flow_id


async def test_finish_heartbeats_while_it_waits_and_at_each_stage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(documents, "FINISH_HEARTBEAT_EVERY", timedelta(milliseconds=20))
    engine, blobs, provider, document, flow_id = await _signed_flow(settings, "sign:test:finish", "Finish test", [A])
    original = blobs.get(document.blob_key)

    beats: list[tuple[Any, ...]] = []
    release = asyncio.Event()

    def on_heartbeat(*details: Any) -> None:
        beats.append(details)
        if sum(1 for d in beats if not d) >= 3:  # three periodic beats while the download was held
            release.set()

    env = ActivityEnvironment()
    env.on_heartbeat = on_heartbeat
    async with httpx.AsyncClient() as http:
        acts = DocumentActivities(Deps(settings=settings, engine=engine, blobs=blobs, http=http, chats={},
                                       providers={"local": HeldDownload(provider, release)}))  # type: ignore[dict-item]
        info = await env.run(acts.finish, FinishInput(request_id="sign:test:finish", provider="local",
                                                      flow_id=flow_id, original=document, expected_signatures=1))
    assert info.name == "contract.signed.pdf" and blobs.get(info.blob_key).startswith(original)
    stages = [d[0] for d in beats if d]
    assert stages == ["downloading", "validating", "storing"]
    assert beats.index(("validating",)) >= 4  # the periodic beats came while the download was held


async def test_finish_validates_only_what_the_signing_pages_did_not(settings: Settings) -> None:
    """Two serial signers through the real signing code: each signature is validated by the page
    that made it, on top of the version it extends; `finish` then re-verifies none of them and
    says so in the audit trail. A file that extends no validated version is validated in full."""
    B = Person(id="u-2", name="王五")
    request_id = "sign:test:incremental"
    engine, blobs, provider, document, flow_id = await _signed_flow(settings, request_id, "Incremental finish", [A, B])
    signed = await provider.download_signed(flow_id)
    assert validated.base_for(engine, signed) is not None  # the second page recorded the final version

    async with httpx.AsyncClient() as http:
        acts = DocumentActivities(Deps(settings=settings, engine=engine, blobs=blobs, http=http, chats={},
                                       providers={"local": provider}))
        info = await ActivityEnvironment().run(acts.finish, FinishInput(
            request_id=request_id, provider="local", flow_id=flow_id, original=document, expected_signatures=2))
    assert blobs.get(info.blob_key) == signed
    [row] = [r for r in audit.trail_of(engine, request_id) if r.action == "document.signed"]
    detail = json.loads(row.detail)
    assert [s["signer"] for s in detail["signatures"]] == ["李四", "王五"]
    assert all(s["intact"] and s["valid"] and s["trusted"] for s in detail["signatures"])
    assert detail["validated_now"] == [] and detail["validated_on_top_of"] == info.sha256

    # Without the records (an older installation's flow): every signature is verified again.
    with Session(engine) as session:
        for version in session.exec(select(ValidatedVersion)).all():
            session.delete(version)
        session.commit()
    async with httpx.AsyncClient() as http:
        acts = DocumentActivities(Deps(settings=settings, engine=engine, blobs=blobs, http=http, chats={},
                                       providers={"local": provider}))
        await ActivityEnvironment().run(acts.finish, FinishInput(
            request_id="sign:test:incremental-2", provider="local", flow_id=flow_id, original=document,
            expected_signatures=2))
    [row] = [r for r in audit.trail_of(engine, "sign:test:incremental-2") if r.action == "document.signed"]
    detail = json.loads(row.detail)
    assert detail["validated_now"] == ["Signature1", "Signature2"] and detail["validated_on_top_of"] is None
