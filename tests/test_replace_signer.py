"""A signer who leaves the company while a flow waits for them: found, flagged, replaced.

Found by the chat's directory before their reminder (or told by a platform's departure event: the
`signer_departed` signal), flagged on the card with a "replace signer" button; the initiator (or
an operator) replaces them through the webhook IM's signed `replace` action: the old link dies at
the provider, the new signer gets theirs, signs, and the flow completes with the new signer's
signature. Real worker, real built-in provider and signing pages, time-skipping server.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from connectors.chat.directory import departed
from connectors.chat.webhook import signature
from connectors.chat.webhook.client import WebhookChat
from signbridge.core.models import Person, SignerDeparted, StatusView
from signbridge.core.settings import Settings
from tests.harness import INITIATOR, A, B, Harness, harness

D = Person(id="u-5", name="赵六")
SECRET = "test-webhook-secret"


class LeavingDirectory:
    """The webhook chat, with a directory in which people in `gone` have left the company."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.platform, self.gone = inner, inner.platform, set[str]()
        self.asked: list[str] = []

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)

    async def resolve(self, chat: Any, person: Person) -> Person:
        self.asked.append(person.id)
        if person.id in self.gone:
            raise departed(person.name, "zh")
        return person


async def replace(h: Harness, request_id: str, who: str, old: str, new: dict[str, Any]) -> httpx.Response:
    """The webhook IM's card button, as the company's chat sends it (signed)."""
    body = json.dumps({"event_id": f"replace-{who}-{old}-{new['id']}", "type": "action",
                       "sender": {"id": who, "name": "someone"},
                       "action": {"request_id": request_id, "name": "replace", "signer_ids": [old],
                                  "replacement": new}}, ensure_ascii=False).encode()
    return await h.http.post("/im/webhook/events", content=body,
                             headers={**signature.headers(SECRET, body), "Content-Type": "application/json"})


async def _record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    if os.environ.get("SIGNBRIDGE_RECORD_HISTORIES") == "1":
        (Path(__file__).parent / "histories" / f"{name}.json").write_text((await handle.fetch_history()).to_json())


async def test_a_departed_signer_is_flagged_then_replaced_and_the_flow_completes(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    async with httpx.AsyncClient() as http:
        chats: dict[str, Any] = {}
        async with harness(ts_env, settings, chats=chats) as h:
            directory = LeavingDirectory(WebhookChat(h.settings.webhook_outbound_url, SECRET, http))
            chats["webhook"] = directory
            handle = await h.start([[A], [B]])
            old_link = h.path(await h.link(handle, A))
            directory.gone.add(A.id)  # 李四 leaves; no platform event says so

            await ts_env.sleep(timedelta(hours=25))  # the reminder is due: the directory is asked first
            await h.sink.wait_for(lambda: any(s.get("state") == "departed" for s in h.cards(handle)[-1]["signers"]),
                                  timeout=10)
            card = h.cards(handle)[-1]
            assert {"action": "replace", "label": "替换签署人：李四", "signer_ids": [A.id]} in card["buttons"]
            told = [m for m in h.sink.messages if m.get("type") == "message" and m.get("to") == INITIATOR.id
                    and "李四 已离职" in str(m.get("text"))]
            assert told, "the initiator is told privately"
            assert not [m for m in h.links_for(handle, A) if "提醒" in m["text"]], "nobody reminds someone who left"

            stranger = await replace(h, handle.id, "u-77", A.id, {"id": D.id, "name": D.name})
            assert stranger.status_code == 403 and stranger.json()["error"]["code"] == "PermissionDenied"
            twice = await replace(h, handle.id, INITIATOR.id, A.id, {"id": B.id, "name": B.name})
            assert twice.status_code == 409, twice.text  # 王五 signs already: one signature per person
            done = await replace(h, handle.id, INITIATOR.id, A.id, {"id": D.id, "name": D.name})
            assert done.status_code in (200, 202), done.text

            new_link = h.path(await h.link(handle, D))
            gone = await h.http.get(old_link, headers={"Accept": "application/json"})
            assert gone.status_code == 410 and gone.json()["error"]["code"] == "signer_replaced", gone.text
            refused = await h.http.post(old_link, data={"name": A.name, "consent": "yes"},
                                        headers={"Accept": "application/json"})
            assert refused.status_code == 410, refused.text

            signed = await h.http.post(new_link, data={"name": D.name, "consent": "yes"},
                                       headers={"Accept": "application/json"})
            assert signed.status_code == 200, signed.text
            await h.sign(handle, B)
            view: StatusView = await handle.result()
            assert view.status == "COMPLETED"
            first = view.signers[0]
            assert (first.person.id, first.replaces, first.status, first.departed) == (D.id, A.id, "signed", False)
            await _record(handle, "replaced-signer")


async def test_a_departure_event_flags_the_signer_without_waiting_for_a_reminder(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A, B]])
        await h.link(handle, A)
        await handle.signal("signer_departed", SignerDeparted(signer_id=B.id, source="feishu"))
        await h.sink.wait_for(lambda: any(s.get("state") == "departed" and s.get("name") == B.name
                                          for s in h.cards(handle)[-1]["signers"]), timeout=10)
        await handle.signal("signer_departed", SignerDeparted(signer_id="nobody", source="feishu"))  # not a signer
        await h.sign(handle, A)
        view = await h.status(handle)
        assert [(s.person.id, s.departed) for s in view.signers] == [(A.id, False), (B.id, True)]
        await handle.cancel()


async def command(h: Harness, who: dict[str, Any], text: str, mentions: list[dict[str, Any]]) -> httpx.Response:
    body = json.dumps({"event_id": f"cmd-{uuid.uuid4().hex[:12]}", "type": "message",
                       "chat": {"id": "g-1", "kind": "group"}, "sender": who, "text": text,
                       "mentions": mentions}, ensure_ascii=False).encode()
    return await h.http.post("/im/webhook/events", content=body,
                             headers={**signature.headers(SECRET, body), "Content-Type": "application/json"})


async def test_the_chat_command_replaces_a_signer_in_the_newest_open_request_of_the_chat(
    ts_env: WorkflowEnvironment, settings: Settings
) -> None:
    """`/sign 替换 @李四 @赵六` on a platform whose buttons cannot ask who signs instead: as the
    initiator it replaces; as anyone else it changes nothing and they are told why, privately."""
    mentions = [{"id": A.id, "name": A.name}, {"id": D.id, "name": D.name}]
    async with harness(ts_env, settings) as h:
        handle = await h.start([[A], [B]])
        old_link = h.path(await h.link(handle, A))
        await handle.signal("signer_departed", SignerDeparted(signer_id=A.id, source="dingtalk"))
        await h.sink.wait_for(lambda: any(s.get("state") == "departed" for s in h.cards(handle)[-1]["signers"]),
                              timeout=10)

        stranger = {"id": "u-77", "name": "路人"}
        assert (await command(h, stranger, "/sign 替换 @李四 @赵六", mentions)).status_code in (200, 202)
        await h.sink.wait_for(lambda: any(m.get("to") == "u-77" and "无法替换 李四" in str(m.get("text"))
                                          for m in h.sink.messages), timeout=10)
        assert (await command(h, {"id": INITIATOR.id, "name": INITIATOR.name}, "/sign 替换 @李四", mentions[:1])
                ).status_code in (200, 202)  # who signs instead is missing: told how to write it
        await h.sink.wait_for(lambda: any(m.get("to") == INITIATOR.id and "/sign 替换 @原签署人 @新签署人"
                                          in str(m.get("text")) for m in h.sink.messages), timeout=10)

        resp = await command(h, {"id": INITIATOR.id, "name": INITIATOR.name}, "/sign 替换 @李四 @赵六", mentions)
        assert resp.status_code in (200, 202), resp.text
        new_link = h.path(await h.link(handle, D))
        assert (await h.http.get(old_link, headers={"Accept": "application/json"})).status_code == 410
        signed = await h.http.post(new_link, data={"name": D.name, "consent": "yes"},
                                   headers={"Accept": "application/json"})
        assert signed.status_code == 200, signed.text
        await h.sign(handle, B)
        view: StatusView = await handle.result()
        assert view.status == "COMPLETED" and [s.person.id for s in view.signers] == [D.id, B.id]
