"""The flows every provider must carry end to end, run against each provider's simulator.

Parametrised over the `FLOW` of every provider test module (how to run its simulator behind the
real worker and API over HTTP, and how a person signs or declines there): a decline ends the
flow for everyone, a provider outage shows up as STUCK and one operator retry finishes it
without a second flow at the provider, lost callbacks are caught by polling, and a SignBridge
deadline closes the flow at the provider too. What only one provider does stays in its module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from signbridge.core.models import ActionInput, Actor, Person
from signbridge.core.settings import Settings
from tests.provider_cases import E2E, FlowCase, SimSigning
from tests.test_docuseal import FLOW as DOCUSEAL
from tests.test_docusign import FLOW as DOCUSIGN
from tests.test_dropbox_sign import FLOW as DROPBOX_SIGN
from tests.test_esign_cn import FLOW as ESIGN_CN
from tests.test_fadada import FLOW as FADADA

OPERATOR = Actor(id="ops-1", name="Ops", is_operator=True)


@dataclass
class Flow:
    rig: E2E
    at: SimSigning
    a: Person
    b: Person

    async def provider_flow(self, handle: Any) -> str:
        """The provider's id for the flow, once SignBridge has created it there."""
        view = await self.rig.wait(handle, lambda v: v.provider_flow_id is not None
                                   and v.status.value == "IN_PROGRESS")
        flow_id = str(view.provider_flow_id)
        assert self.at.knows(flow_id)
        return flow_id

    async def links_reach(self, handle: Any, *people: Person) -> None:
        await self.rig.sink.wait_for(lambda: all(self.rig.links(handle, p) for p in people), timeout=20)


@pytest.fixture(params=[DOCUSEAL, DOCUSIGN, DROPBOX_SIGN, ESIGN_CN, FADADA], ids=lambda case: case.name)
async def flow(request: pytest.FixtureRequest, dev_env: WorkflowEnvironment, settings: Settings,
               monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Flow]:
    case: FlowCase = request.param
    async with case.run(dev_env, settings, monkeypatch) as (rig, at):
        yield Flow(rig, at, *case.people)


async def test_a_decline_ends_the_flow_for_everyone(flow: Flow) -> None:
    handle = await flow.rig.start([[flow.a, flow.b]])
    flow_id = await flow.provider_flow(handle)
    await flow.links_reach(handle, flow.a, flow.b)
    await flow.at.decline(flow_id, flow.b, "价格不对")
    view = await flow.rig.result(handle)
    assert view.status.value == "DECLINED" and "价格不对" in (view.reason or "")
    assert not flow.at.may_sign(flow_id, flow.a)


async def test_an_outage_sticks_then_one_retry_completes(flow: Flow) -> None:
    flow.at.sim.down = True
    handle = await flow.rig.start([[flow.a]], step_retry_window=timedelta(seconds=2))
    view = await flow.rig.wait(handle, lambda v: v.status.value == "STUCK")
    assert view.stuck_step == "create" and "503" in (view.reason or "")
    # Retried while still down (a STUCK flow also retries by itself, and one that healed first
    # would refuse the update); the provider comes back and the next try, soon after, succeeds.
    await handle.execute_update("retry", ActionInput(actor=OPERATOR))
    flow.at.sim.down = False
    flow_id = await flow.provider_flow(handle)
    assert len(flow.at.flows()) == 1  # the retried create did not make a second flow at the provider
    await flow.links_reach(handle, flow.a)
    await flow.at.sign(flow_id, flow.a)
    assert (await flow.rig.result(handle)).status.value == "COMPLETED"


async def test_lost_callbacks_are_caught_by_polling(flow: Flow) -> None:
    handle = await flow.rig.start([[flow.a]], poll_after=timedelta(seconds=1))
    flow_id = await flow.provider_flow(handle)
    flow.at.sim.mute = True
    await flow.at.sign(flow_id, flow.a)
    view = await flow.rig.result(handle)
    assert view.status.value == "COMPLETED" and view.events_seen == 2  # signed + completed, from a poll


async def test_the_deadline_expires_the_flow_and_closes_it_at_the_provider(flow: Flow) -> None:
    handle = await flow.rig.start([[flow.a]], deadline=timedelta(seconds=3), reminder_max=0)
    flow_id = await flow.provider_flow(handle)
    assert flow.at.may_sign(flow_id, flow.a)
    view = await flow.rig.result(handle)
    assert view.status.value == "EXPIRED"
    assert not flow.at.may_sign(flow_id, flow.a)


async def test_a_signer_the_provider_cannot_reach_is_rejected_at_prepare(flow: Flow) -> None:
    """Every provider but the built-in one identifies people by a mobile or an email: a signer with
    neither is the sender's to fix. It ends REJECTED at prepare saying whose contact is missing and
    how to give it — not a create step failing until the flow shows STUCK, where a retry can't help."""
    nobody = Person(id="u-7", name="赵六")
    handle = await flow.rig.start([[flow.a], [nobody]])
    view = await flow.rig.result(handle)
    assert view.status.value == "REJECTED", view
    # e签宝, 法大大 and DocuSeal take either; DocuSign and Dropbox Sign only an email
    needs = {"docusign": "邮箱", "dropbox_sign": "邮箱"}.get(flow.rig.provider, "手机号或邮箱")
    assert f"请补充赵六的{needs}：" in (view.reason or ""), view.reason
    assert "@赵六 " in (view.reason or "") and "signbridge identities import" in (view.reason or "")
    assert not flow.at.flows(), "nothing may be created at the provider"
    said = [m for m in flow.rig.sink.messages if m.get("type") == "message" and "请补充赵六" in str(m.get("text"))]
    assert said, "the reason is posted in the chat"
