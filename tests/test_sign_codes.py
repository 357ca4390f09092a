"""One-time codes on the built-in provider's signing page, over real HTTP (ASGI) with the real
senders: a real SMTP server (aiosmtpd), the Aliyun and Tencent SMS simulators, and the
development mailbox; a Temporal dev server receives what the page delivers (the link locking)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import Session, col, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from api.main import create_app
from connectors.esign.local import LocalProvider
from signbridge.core.models import Person
from store import audit
from store.db import create_all
from store.tables import LocalSigner, SignCode, utcnow
from tests.codes import latest_code
from tests.conftest import make_settings
from tests.sim import aliyun_sms_sim as ali
from tests.sim import tencent_sms_sim as tc
from tests.sim.smtp_server import smtp_server
from tests.test_sign_pages import CLIENT_IP, JSON, Flow, Pages, RecordingWorkflow, secure

WANG = Person(id="x-1", name="王总", mobile="+8613812341234", external=True)
LIU = Person(id="x-2", name="刘总", email="liu@customer.example", external=True)
ZHAO = Person(id="x-3", name="赵总", mobile="+8613998765432", external=True)
LI = Person(id="u-1", name="李四")  # internal, no contact on record


@asynccontextmanager
async def page_stack(dev_env: WorkflowEnvironment, data_dir: Path, **overrides: Any) -> AsyncIterator[Pages]:
    settings = make_settings(data_dir, **overrides)
    app = create_app(settings, dev_env.client)
    async with app.router.lifespan_context(app), Worker(
        dev_env.client, task_queue=settings.task_queue, workflows=[RecordingWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ), httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(CLIENT_IP, 50000)),
                         base_url="http://signbridge.test", timeout=60) as http:
        create_all(app.state.engine)  # outside development the API leaves the schema to `signbridge db upgrade`
        yield Pages(http=http, client=dev_env.client, settings=settings,
                    provider=LocalProvider(settings, app.state.engine, app.state.blobs))


@pytest.fixture
async def pages(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Pages]:
    """No sender configured, in development: codes go to the development mailbox."""
    async with page_stack(dev_env, tmp_path / "data") as p:
        yield p


def signer_row(p: Pages, flow: Flow, signer_id: str) -> LocalSigner:
    with Session(p.provider.engine) as s:
        row = s.exec(select(LocalSigner).where(LocalSigner.flow_id == flow.flow_id,
                                               LocalSigner.signer_id == signer_id)).one()
    return row


def actions(p: Pages, flow: Flow) -> list[str]:
    return [e.action for e in audit.trail_of(p.provider.engine, flow.request_id)]


async def sign(p: Pages, path: str, name: str, code: str | None) -> httpx.Response:
    data = {"name": name, "consent": "yes", **({"code": code} if code is not None else {})}
    return await p.http.post(path, data=data, headers=JSON)


async def test_external_signer_gets_a_code_by_email_at_a_real_smtp_server_and_signs(
        dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    with smtp_server() as (url, box):
        async with page_stack(dev_env, tmp_path / "data", smtp_url=url,
                              smtp_from="SignBridge <sign@corp.example>") as p:
            flow = await p.flow([[LIU]])
            path = flow.links["x-2"]
            page = secure(await p.http.get(path))
            assert 'action="' + path + '/code"' in page.text and 'name="code"' in page.text
            assert "l***@customer.example" in page.text and "liu@customer.example" not in page.text

            missing = await sign(p, path, "刘总", None)
            assert missing.status_code == 400 and missing.json()["error"]["code"] == "code_required"
            sent = secure(await p.http.post(f"{path}/code", headers=JSON))
            assert sent.json() == {"status": "sent", "channel": "email", "sent_to": "l***@customer.example",
                                   "valid_minutes": 10}
            [mail] = box.to("liu@customer.example")
            code = re.search(r"\b(\d{6})\b", mail.get_content()).group(1)  # type: ignore[union-attr]
            wrong = f"{(int(code) + 1) % 10**6:06d}"
            refused = await sign(p, path, "刘总", wrong)
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "code_wrong"
            assert "4" in refused.json()["error"]["message"]

            signed = secure(await sign(p, path, "刘总", code))
            assert signed.status_code == 200 and signed.json()["status"] == "signed"
            assert signer_row(p, flow, "x-2").verification == "email_code"
            trail = audit.trail_of(p.provider.engine, flow.request_id)
            [done] = [e for e in trail if e.action == "signer.signed"]
            assert json.loads(done.detail)["verification"] == "email_code" and done.ip == CLIENT_IP
            assert {"signer.code_sent", "signer.code_rejected"} <= {e.action for e in trail}
            [event] = await p.events(flow, 1)
            assert (event.kind, event.signer_id) == ("signed", "x-2")
            again = await sign(p, path, "刘总", code)  # the link is spent, and so is the code
            assert again.status_code == 410


@pytest.mark.parametrize("service", ["aliyun", "tencent"])
async def test_external_signer_gets_a_code_by_sms_and_signs(dev_env: WorkflowEnvironment, tmp_path: Path,
                                                            service: str) -> None:
    sim_context = ali.aliyun_sms() if service == "aliyun" else tc.tencent_sms()
    with sim_context as (url, sim):
        settings: dict[str, Any] = (
            dict(aliyun_sms_access_key_id=ali.KEY_ID, aliyun_sms_access_key_secret=ali.KEY_SECRET,
                 aliyun_sms_sign_name=ali.SIGN_NAME, aliyun_sms_code_template=ali.CODE_TEMPLATE,
                 aliyun_sms_link_template=ali.LINK_TEMPLATE, aliyun_sms_endpoint=url)
            if service == "aliyun" else
            dict(tencent_sms_secret_id=tc.SECRET_ID, tencent_sms_secret_key=tc.SECRET_KEY,
                 tencent_sms_sdk_app_id=tc.APP_ID, tencent_sms_sign_name=tc.SIGN_NAME,
                 tencent_sms_code_template_id=tc.CODE_TEMPLATE, tencent_sms_link_template_id=tc.LINK_TEMPLATE,
                 tencent_sms_endpoint=url))
        async with page_stack(dev_env, tmp_path / "data", **settings) as p:
            flow = await p.flow([[WANG]])
            path = flow.links["x-1"]
            view = (await p.http.get(path, headers=JSON)).json()
            assert (view["code_channel"], view["code_sent_to"]) == ("sms", "138****1234")
            sent = await p.http.post(f"{path}/code", headers=JSON)
            assert sent.status_code == 200 and sent.json()["sent_to"] == "138****1234"
            [code] = sim.codes_to("13812341234")
            soon = await p.http.post(f"{path}/code", headers=JSON)  # our own limit answers first
            assert soon.status_code == 429 and soon.json()["error"]["code"] == "code_too_soon"
            assert 1 <= int(soon.headers["Retry-After"]) <= 60 and sim.codes_to("13812341234") == [code]
            signed = await sign(p, path, "王总", code)
            assert signed.status_code == 200, signed.text
            assert signer_row(p, flow, "x-1").verification == "sms_code"


async def test_a_provider_rate_limit_reads_try_again_in_n_seconds(dev_env: WorkflowEnvironment,
                                                                  tmp_path: Path) -> None:
    """Aliyun allows one code a minute per number: a code sent for another flow to the same number
    a moment ago makes this one wait, in words and with Retry-After; the minute is not used up."""
    with ali.aliyun_sms() as (url, sim):
        async with page_stack(dev_env, tmp_path / "data", aliyun_sms_access_key_id=ali.KEY_ID,
                              aliyun_sms_access_key_secret=ali.KEY_SECRET, aliyun_sms_sign_name=ali.SIGN_NAME,
                              aliyun_sms_code_template=ali.CODE_TEMPLATE, aliyun_sms_endpoint=url) as p:
            first, second = await p.flow([[WANG]]), await p.flow([[WANG]])
            assert (await p.http.post(f"{first.links['x-1']}/code", headers=JSON)).status_code == 200
            limited = await p.http.post(f"{second.links['x-1']}/code", headers=JSON)
            assert limited.status_code == 429 and limited.json()["error"]["code"] == "code_rate_limited"
            assert limited.headers["Retry-After"] == "60" and "60" in limited.json()["error"]["message"]
            assert sim.refused == ["isv.BUSINESS_LIMIT_CONTROL"]
            assert signer_row(p, second, "x-1").last_code_at is None  # may ask again as soon as Aliyun allows
            assert "signer.code_failed" in actions(p, second)


async def test_five_wrong_codes_lock_the_link_for_fifteen_minutes_and_tell_the_flow(pages: Pages) -> None:
    flow = await pages.flow([[LIU]])
    path = flow.links["x-2"]
    assert (await pages.http.post(f"{path}/code", headers=JSON)).status_code == 200
    code = latest_code(pages.settings, "x-2")
    wrong = f"{(int(code) + 7) % 10**6:06d}"
    for left in (4, 3, 2, 1):
        resp = await sign(pages, path, "刘总", wrong)
        assert resp.status_code == 400 and f"{left}" in resp.json()["error"]["message"]
    locked = await sign(pages, path, "刘总", wrong)
    assert locked.status_code == 429 and locked.json()["error"]["code"] == "link_locked"
    assert 890 <= int(locked.headers["Retry-After"]) <= 900
    # Locked: even the right code, and a new code, wait for the lock to end.
    assert (await sign(pages, path, "刘总", code)).json()["error"]["code"] == "link_locked"
    again = await pages.http.post(f"{path}/code", headers=JSON)
    assert again.status_code == 429 and again.json()["error"]["code"] == "link_locked"
    [event] = await pages.events(flow, 1)
    assert (event.kind, event.signer_id) == ("locked", "x-2") and event.reason
    trail = actions(pages, flow)
    assert trail.count("signer.code_rejected") == 6 and trail.count("signer.code_refused") == 1
    # Fifteen minutes later (the clock moved by editing the lock): a new code works.
    with Session(pages.provider.engine) as s:
        s.execute(update(LocalSigner).where(col(LocalSigner.signer_id) == "x-2")
                  .values(locked_until=utcnow() - timedelta(seconds=1), last_code_at=None))
        s.commit()
    assert (await sign(pages, path, "刘总", code)).json()["error"]["code"] == "code_expired"  # voided by the lock
    assert (await pages.http.post(f"{path}/code", headers=JSON)).status_code == 200
    assert (await sign(pages, path, "刘总", latest_code(pages.settings, "x-2"))).status_code == 200


async def test_codes_are_stored_only_as_hashes(pages: Pages) -> None:
    flow = await pages.flow([[LIU]])
    await pages.http.post(f"{flow.links['x-2']}/code", headers=JSON)
    code = latest_code(pages.settings, "x-2")
    with Session(pages.provider.engine) as s:
        [row] = s.exec(select(SignCode)).all()
    assert len(row.code_hash) == 64 and code not in row.code_hash and code not in repr(row.model_dump())
    assert row.sent_to == "l***@customer.example"
    with sqlite3.connect(pages.settings.data_dir / "signbridge.db") as db:
        dump = "\n".join(db.iterdump())
    assert "liu@customer.example" in dump and f"'{code}'" not in dump and f":{code}" not in dump


async def test_a_code_works_only_on_the_link_it_was_sent_for(pages: Pages) -> None:
    flow = await pages.flow([[LIU, ZHAO]])
    await pages.http.post(f"{flow.links['x-2']}/code", headers=JSON)
    liu_code = latest_code(pages.settings, "x-2")
    not_sent = await sign(pages, flow.links["x-3"], "赵总", liu_code)
    assert not_sent.json()["error"]["code"] == "code_not_sent"
    await pages.http.post(f"{flow.links['x-3']}/code", headers=JSON)
    if latest_code(pages.settings, "x-3") != liu_code:  # one in a million: the same six digits
        crossed = await sign(pages, flow.links["x-3"], "赵总", liu_code)
        assert crossed.json()["error"]["code"] == "code_wrong"
    assert (await sign(pages, flow.links["x-2"], "刘总", liu_code)).status_code == 200
    assert signer_row(pages, flow, "x-3").status == "open"


async def test_expired_and_malformed_codes_are_refused(pages: Pages) -> None:
    flow = await pages.flow([[LIU]])
    path = flow.links["x-2"]
    await pages.http.post(f"{path}/code", headers=JSON)
    code = latest_code(pages.settings, "x-2")
    for bad in ("12345", "abcdef", "１２３４５６", "1" * 64):
        resp = await sign(pages, path, "刘总", bad)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "code_wrong"
    with Session(pages.provider.engine) as s:
        s.execute(update(SignCode).values(expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    expired = await sign(pages, path, "刘总", code)
    assert expired.status_code == 400 and expired.json()["error"]["code"] == "code_expired"
    assert signer_row(pages, flow, "x-2").status == "open"


async def test_a_storm_of_code_requests_sends_one_code(pages: Pages) -> None:
    flow = await pages.flow([[LIU]])
    answers = await asyncio.gather(*(pages.http.post(f"{flow.links['x-2']}/code", headers=JSON)
                                     for _ in range(12)))
    assert sorted(a.status_code for a in answers) == [200] + [429] * 11
    assert all("Retry-After" in a.headers for a in answers if a.status_code == 429)
    from connectors.notify.dev import read_outbox
    assert len([e for e in read_outbox(pages.settings) if e["purpose"] == "code"]) == 1


async def test_the_code_step_works_without_javascript(pages: Pages) -> None:
    flow = await pages.flow([[LIU]])
    path = flow.links["x-2"]
    page = secure(await pages.http.post(f"{path}/code"))  # a plain form post
    assert page.status_code == 200 and "验证码已发送至邮箱 l***@customer.example" in page.text
    assert 'name="code"' in page.text and "<script" not in page.text
    too_soon = secure(await pages.http.post(f"{path}/code"))
    assert too_soon.status_code == 429 and "秒后" in too_soon.text and too_soon.headers["Retry-After"]
    signed = await pages.http.post(path, data={"name": "刘总", "consent": "yes",
                                               "code": latest_code(pages.settings, "x-2")})
    assert signed.status_code == 200 and "已签署" in signed.text


async def test_who_needs_no_code(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    """An internal signer with no contact on record signs with the link their chat delivered;
    with SIGNBRIDGE_SIGN_CODES=off nobody is asked. Both are recorded as "chat_link"."""
    async with page_stack(dev_env, tmp_path / "on") as p:
        flow = await p.flow([[LI]])
        assert (await p.http.get(flow.links["u-1"], headers=JSON)).json()["code_required"] is False
        assert 'name="code"' not in (await p.http.get(flow.links["u-1"])).text
        asked = await p.http.post(f"{flow.links['u-1']}/code", headers=JSON)
        assert asked.status_code == 400 and asked.json()["error"]["code"] == "code_not_needed"
        assert (await sign(p, flow.links["u-1"], "李四", None)).status_code == 200
        assert signer_row(p, flow, "u-1").verification == "chat_link"
    async with page_stack(dev_env, tmp_path / "off", sign_codes="off") as p:
        flow = await p.flow([[LIU]])
        assert (await sign(p, flow.links["x-2"], "刘总", None)).status_code == 200
        assert signer_row(p, flow, "x-2").verification == "chat_link"


async def test_with_no_sender_configured_internal_signers_keep_the_chat_link(dev_env: WorkflowEnvironment,
                                                                              tmp_path: Path) -> None:
    """Outside development nothing stands in for a missing email or SMS service: an internal signer
    whose email no sender can use signs with the link their chat delivered ("chat_link"), as before codes
    existed. (An external signer never gets that far: `prepare` refuses them, tests/test_external_links.py.)"""
    wang_wu = Person(id="u-2", name="王五", email="ww@corp.example")
    async with page_stack(dev_env, tmp_path / "data", environment="staging") as p:
        flow = await p.flow([[wang_wu]])
        assert (await p.http.get(flow.links["u-2"], headers=JSON)).json()["code_required"] is False
        resp = await p.http.post(f"{flow.links['u-2']}/code", headers=JSON)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "code_not_needed"
        assert (await sign(p, flow.links["u-2"], "王五", None)).status_code == 200
        assert signer_row(p, flow, "u-2").verification == "chat_link"



def test_the_limits_hold_on_postgresql(pg_url: str) -> None:
    """The resend clock, the wrong-code count and the lock are conditional updates: the same on
    PostgreSQL as on SQLite."""
    from store.db import get_engine
    from store.repos import sign_codes
    from store.tables import LocalFlow

    engine = get_engine(pg_url)
    create_all(engine)
    now = utcnow()
    with Session(engine) as s:
        s.add(LocalFlow(flow_id="f-pg", request_id="r-pg", title="t", original_sha256="0" * 64,
                        current_blob_key="0" * 64, current_sha256="0" * 64, version=0, status="open",
                        expires_at=now + timedelta(days=1)))
        row = LocalSigner(flow_id="f-pg", signer_id="x-1", name="王总", group=0, position=1, status="open")
        s.add(row)
        s.commit()
        s.refresh(row)
    assert row.id is not None
    gap = timedelta(minutes=1)
    assert sign_codes.claim_send(engine, row.id, now, gap) is None  # the first code
    refused = sign_codes.claim_send(engine, row.id, now + timedelta(seconds=20), gap)
    assert isinstance(refused, sign_codes.Refusal) and refused.kind == "too_soon" and 39 <= refused.retry_after <= 41
    sign_codes.store(engine, row.id, "sms", "138****1234", "h" * 64, now, timedelta(minutes=10))
    verdicts = [sign_codes.check(engine, row.id, lambda _: False, now, 5, timedelta(minutes=15)) for _ in range(5)]
    assert [v.kind for v in verdicts] == ["wrong"] * 4 + ["locked"] and verdicts[-1].newly_locked
    assert [v.tries_left for v in verdicts[:4]] == [4, 3, 2, 1]
    locked = sign_codes.claim_send(engine, row.id, now + timedelta(minutes=2), gap)
    assert isinstance(locked, sign_codes.Refusal) and locked.kind == "locked"
    later = now + timedelta(minutes=16)
    assert sign_codes.claim_send(engine, row.id, later, gap) == now  # the lock is over: the previous send time
    sign_codes.store(engine, row.id, "sms", "138****1234", "k" * 64, later, timedelta(minutes=10))
    ok = sign_codes.check(engine, row.id, lambda stored: stored == "k" * 64, later, 5, timedelta(minutes=15))
    assert ok.kind == "ok" and ok.channel == "sms"
    again = sign_codes.check(engine, row.id, lambda stored: stored == "k" * 64, later, 5, timedelta(minutes=15))
    assert again.kind == "used"
    engine.dispose()
