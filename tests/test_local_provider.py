"""The built-in provider on its own (no HTTP, no Temporal): flows, links, revocation, polling."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select, text

from connectors.esign import local
from connectors.esign.base import ProviderError
from connectors.esign.local import LocalProvider
from signbridge.core.models import CreateFlowInput, DocumentInfo, OpenGroupInput, Person
from signbridge.core.settings import Settings
from signbridge.pdf.pades import validate_pdf
from signbridge.pdf.sample import sample_contract
from store.blobs import FileBlobStore
from store.db import create_all, get_engine
from store.tables import LocalFlow, LocalSigner, utcnow

A = Person(id="u-1", name="Alice Chen")
B = Person(id="u-2", name="王五")
C = Person(id="x-9", name="客户A", email="a@customer.example", external=True)


@dataclass
class Env:
    settings: Settings
    engine: Engine
    blobs: FileBlobStore
    provider: LocalProvider
    original: bytes
    document: DocumentInfo

    def create_input(self, request_id: str, groups: list[list[Person]]) -> CreateFlowInput:
        return CreateFlowInput(request_id=request_id, provider="local", title="销售合同", document=self.document,
                               groups=groups, expires_at=utcnow() + timedelta(days=7))

    def open_input(self, request_id: str, flow_id: str, group: int, people: list[Person]) -> OpenGroupInput:
        return OpenGroupInput(request_id=request_id, provider="local", flow_id=flow_id, group=group,
                              signers=people, expires_at=utcnow() + timedelta(days=7))

    def signers(self, flow_id: str) -> list[LocalSigner]:
        with Session(self.engine) as s:
            return list(s.exec(select(LocalSigner).where(LocalSigner.flow_id == flow_id)
                               .order_by(LocalSigner.position)))  # type: ignore[arg-type]

    def flow(self, flow_id: str) -> LocalFlow:
        with Session(self.engine) as s:
            flow = s.get(LocalFlow, flow_id)
        assert flow is not None
        return flow


@pytest.fixture
def env(settings: Settings) -> Iterator[Env]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = get_engine(settings.sqlalchemy_url)
    create_all(engine)
    blobs = FileBlobStore(settings.data_dir / "blobs")
    original = sample_contract("Provider test", pages=1)
    key = blobs.put(original)
    document = DocumentInfo(name="contract.pdf", sha256=key, blob_key=key, size=len(original), pages=1)
    yield Env(settings, engine, blobs, LocalProvider(settings, engine, blobs), original, document)


def token_of(url: str | None) -> str:
    assert url
    return url.rsplit("/sign/", 1)[1]


async def test_create_flow_is_idempotent(env: Env) -> None:
    req = env.create_input("sign:test:idem", [[A, B], [C]])
    flow_id = await env.provider.create_flow(req)
    assert flow_id == "local-" + hashlib.sha256(b"sign:test:idem").hexdigest()[:24]
    assert await env.provider.create_flow(req) == flow_id
    with Session(env.engine) as s:
        assert len(s.exec(select(LocalFlow)).all()) == 1
    flow = env.flow(flow_id)
    assert (flow.version, flow.status, flow.current_blob_key) == (0, "open", env.document.blob_key)
    signers = env.signers(flow_id)
    assert [(s.signer_id, s.group, s.position, s.status) for s in signers] == [
        ("u-1", 0, 1, "waiting"), ("u-2", 0, 2, "waiting"), ("x-9", 1, 3, "waiting")]


async def test_open_group_stores_only_token_hashes(env: Env) -> None:
    flow_id = await env.provider.create_flow(env.create_input("sign:test:tokens", [[A, B], [C]]))
    links = await env.provider.open_group(env.open_input("sign:test:tokens", flow_id, 0, [A, B]))
    assert [link.signer_id for link in links] == ["u-1", "u-2"]
    tokens = [token_of(link.url) for link in links]
    for link, token in zip(links, tokens, strict=True):
        assert link.url == f"{env.settings.public_url}/sign/{token}"
        assert len(base64.urlsafe_b64decode(token + "=")) == 32  # 256 bits
    by_id = {s.signer_id: s for s in env.signers(flow_id)}
    assert by_id["u-1"].token_hash == hashlib.sha256(tokens[0].encode()).hexdigest()
    assert by_id["u-1"].status == "open" and by_id["x-9"].status == "waiting" and by_id["x-9"].token_hash is None

    # The raw token is nowhere in the database: not in any column of any table, not in the files.
    with env.engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            for row in conn.execute(text(f'SELECT * FROM "{table.name}"')):
                assert not any(t in str(value) for value in row for t in tokens), table.name
    db_path = env.settings.data_dir / "signbridge.db"
    for path in [db_path, db_path.with_name(db_path.name + "-wal")]:
        if path.exists():
            assert not any(t.encode() in path.read_bytes() for t in tokens)


async def test_reopening_a_group_kills_the_earlier_links(env: Env) -> None:
    flow_id = await env.provider.create_flow(env.create_input("sign:test:reopen", [[A]]))
    first = token_of((await env.provider.open_group(env.open_input("sign:test:reopen", flow_id, 0, [A])))[0].url)
    second = token_of((await env.provider.open_group(env.open_input("sign:test:reopen", flow_id, 0, [A])))[0].url)
    assert first != second
    assert local.find_signer_by_token(env.engine, first) is None
    found = local.find_signer_by_token(env.engine, second)
    assert found is not None and found[0].signer_id == "u-1"
    with pytest.raises(local.LinkProblem) as refused:
        await local.sign(env.settings, env.engine, env.blobs, first, typed_name=A.name, consent=True,
                         ip=None, user_agent=None)
    assert refused.value.kind == "unknown"


async def test_revoke_kills_links_and_leaves_completed_flows_alone(env: Env) -> None:
    flow_id = await env.provider.create_flow(env.create_input("sign:test:revoke", [[A, B]]))
    links = await env.provider.open_group(env.open_input("sign:test:revoke", flow_id, 0, [A, B]))
    await env.provider.revoke(flow_id, "cancelled by 张三")
    assert env.flow(flow_id).status == "revoked"
    assert {s.status for s in env.signers(flow_id)} == {"dead"}
    found = local.find_signer_by_token(env.engine, token_of(links[0].url))
    assert found is not None
    problem = local.link_problem(*found, utcnow())
    assert problem is not None and problem.code == "link_revoked"
    await env.provider.revoke(flow_id, "again")  # no-op
    with pytest.raises(ProviderError):
        await env.provider.open_group(env.open_input("sign:test:revoke", flow_id, 0, [A, B]))

    done = await env.provider.create_flow(env.create_input("sign:test:done", [[A]]))
    [link] = await env.provider.open_group(env.open_input("sign:test:done", done, 0, [A]))
    await local.sign(env.settings, env.engine, env.blobs, token_of(link.url), typed_name=" alice  CHEN ",
                     consent=True, ip="198.51.100.1", user_agent="pytest")
    assert env.flow(done).status == "completed"
    await env.provider.revoke(done, "too late")
    assert env.flow(done).status == "completed"
    assert [s.status for s in env.signers(done)] == ["signed"]


async def test_poll_replays_the_events_the_pages_delivered(env: Env) -> None:
    flow_id = await env.provider.create_flow(env.create_input("sign:test:poll", [[A, B]]))
    assert await env.provider.poll(flow_id) == []
    links = {link.signer_id: token_of(link.url)
             for link in await env.provider.open_group(env.open_input("sign:test:poll", flow_id, 0, [A, B]))}
    signed = await local.sign(env.settings, env.engine, env.blobs, links["u-1"], typed_name="Alice Chen",
                              consent=True, ip=None, user_agent=None)
    declined = await local.decline(env.engine, links["u-2"], reason="  价格不对  ", ip=None, user_agent=None)
    assert signed.event.event_id == f"{flow_id}:u-1:signed"
    assert (declined.kind, declined.reason, declined.event_id) == ("declined", "价格不对", f"{flow_id}:u-2:declined")
    assert await env.provider.poll(flow_id) == [signed.event, declined]
    # A decline ends the flow at once: nobody else can sign it any more.
    assert env.flow(flow_id).status == "declined"


async def test_download_signed_refuses_before_completion(env: Env) -> None:
    flow_id = await env.provider.create_flow(env.create_input("sign:test:download", [[A], [B]]))
    with pytest.raises(ProviderError):
        await env.provider.download_signed(flow_id)
    [link] = await env.provider.open_group(env.open_input("sign:test:download", flow_id, 0, [A]))
    first = await local.sign(env.settings, env.engine, env.blobs, token_of(link.url), typed_name="Alice Chen",
                             consent=True, ip=None, user_agent=None)
    assert first.before_sha256 == env.document.sha256 and env.flow(flow_id).version == 1
    with pytest.raises(ProviderError):
        await env.provider.download_signed(flow_id)
    [link] = await env.provider.open_group(env.open_input("sign:test:download", flow_id, 1, [B]))
    await local.sign(env.settings, env.engine, env.blobs, token_of(link.url), typed_name="王五",
                     consent=True, ip=None, user_agent=None)
    signed = await env.provider.download_signed(flow_id)
    assert signed.startswith(env.original)
    assert hashlib.sha256(signed).hexdigest() == env.flow(flow_id).current_sha256


async def test_sign_checks_consent_and_name(env: Env) -> None:
    flow_id = await env.provider.create_flow(env.create_input("sign:test:checks", [[B]]))
    [link] = await env.provider.open_group(env.open_input("sign:test:checks", flow_id, 0, [B]))
    token = token_of(link.url)
    for name, consent, code in [("王五", False, "consent_required"), ("李四", True, "name_mismatch"),
                                ("", True, "name_mismatch")]:
        with pytest.raises(local.LinkProblem) as refused:
            await local.sign(env.settings, env.engine, env.blobs, token, typed_name=name, consent=consent,
                             ip=None, user_agent=None)
        assert (refused.value.kind, refused.value.code) == ("invalid", code)
    assert env.flow(flow_id).version == 0


async def test_a_long_name_signs_and_typed_invisible_characters_do_not_matter(env: Env) -> None:
    """Names past X.509's 64-character common name sign (folded into the certificate); a typed
    zero-width space or direction mark (pasted from a chat) is ignored like extra spaces are."""
    long = Person(id="u-9", name="Bartholomew Alexander Montgomery-Fitzwilliam van der Berg-Oppenheimer III")
    flow_id = await env.provider.create_flow(env.create_input("sign:test:long", [[long]]))
    [link] = await env.provider.open_group(env.open_input("sign:test:long", flow_id, 0, [long]))
    typed = "\u200e" + long.name.replace(" ", " \u200b", 3)
    signed = await local.sign(env.settings, env.engine, env.blobs, token_of(link.url), typed_name=typed,
                              consent=True, ip=None, user_agent=None)
    assert env.flow(flow_id).status == "completed"
    ca = local.installation_ca(env.settings)
    [report] = await asyncio.to_thread(validate_pdf, env.blobs.get(signed.document_sha256), [ca.certificate])
    assert (report.signer_name, report.intact, report.valid, report.trusted) == (long.name, True, True, True)
