"""Search attributes stay within Temporal's limits, however many or long the signer ids.

Temporal refuses a value over 2 KB; on an upsert it terminates the flow — after the links went
out, with the card still saying IN_PROGRESS. 60 Feishu `open_id`s (35 characters each) are
2.3 KB, and a chat mention id can be anything.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from signbridge.core.models import Person
from signbridge.core.search_attributes import LIST_MAX_BYTES, encoded_size, keyword, keyword_list
from signbridge.core.settings import Settings
from signbridge.core.temporal import SA_INITIATOR, SA_PENDING
from tests.harness import harness

VALUE_LIMIT = 2048  # the dev server's (and Temporal's default) limit.searchAttributesSizeOfValue


def test_keywords_and_lists_fit() -> None:
    assert keyword("ou_123") == "ou_123"
    long = keyword("中" * 3000)
    assert encoded_size(long) <= 256 and long.startswith("中") and "…#" in long
    assert keyword("中" * 3000) == long and keyword("中" * 2999) != long  # stable and still distinct
    ids = [f"ou_{uuid.uuid4().hex}" for _ in range(60)]
    fitted = keyword_list(ids)
    assert encoded_size(fitted) <= LIST_MAX_BYTES and fitted[:-1] == ids[: len(fitted) - 1]
    assert fitted[-1] == f"+{60 - len(fitted) + 1} more"
    assert keyword_list(["x" * 10_000, "u-1"]) == ["u-1", "+1 more"]
    assert keyword_list(ids[:3]) == ids[:3]


async def test_sixty_long_ids_and_a_10kb_id_never_terminate_the_flow(
        dev_env: WorkflowEnvironment, settings: Settings) -> None:
    signers = [Person(id=f"ou_{uuid.uuid4().hex}", name=f"签署人{i}") for i in range(60)]
    signers.append(Person(id="ou_" + "x" * 10_000, name="长编号"))
    async with harness(dev_env, settings) as h:
        initiator_sa_checked = False
        handle = await h.start([signers], timing=h.timing(step_retry_window=timedelta(minutes=2)))
        view = await h.wait_status(handle, "IN_PROGRESS", timeout=60)
        if view.status == "IN_PROGRESS":
            await h.sink.wait_for(lambda: all(h.links_for(handle, p) for p in signers), timeout=60)
            described = await handle.describe()
            assert described.status == WorkflowExecutionStatus.RUNNING, described.status
            pending = described.typed_search_attributes.get(SA_PENDING) or []
            assert len(json.dumps(list(pending))) <= VALUE_LIMIT and pending[-1].endswith("more")
            initiator_sa_checked = described.typed_search_attributes.get(SA_INITIATOR) == "u-0"
            for person in signers:  # one after the other: 61 at once would mostly lose the version race
                await h.sign(handle, person)
        final = await handle.result()
        assert final.status == "COMPLETED" or (final.status == "REJECTED" and final.reason), final
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED  # not TERMINATED
        assert initiator_sa_checked or final.status == "REJECTED"
