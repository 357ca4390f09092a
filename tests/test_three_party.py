"""Three companies sign one contract from one group chat, on the built-in provider, end to end.

Real Temporal dev server, real HTTP (the webhook IM), real PAdES: our company (seal-use approval
on, seal keeper 赵六) signs first, then two counterparties, each signatory applying their
company's seal. The signed PDF carries six signatures — three people, three organisation seals —
all valid against the installation CA; the seals are checked as an image on the rendered page.
A keeper's refusal ends a second request DECLINED, with nothing signed.
"""

from __future__ import annotations

import asyncio
import uuid
from io import BytesIO
from typing import Any

import httpx
import pypdfium2
from PIL import Image, ImageChops, ImageDraw, ImageFont
from temporalio.testing import WorkflowEnvironment

from signbridge.core.settings import Settings
from signbridge.pdf.pades import default_font_path, validate_pdf
from signbridge.pdf.pki import InstallationCA
from tests.test_e2e import in_process_worker, stack
from tests.test_workflow import _record

AUTH = {"Authorization": "Bearer test-api-key"}
OURS = {"name": "我方科技有限公司", "credit_code": "91350100M000100Y43", "requires_seal_approval": True,
        "keepers": [{"id": "u-6", "name": "赵六"}]}
B = {"name": "乙方科技有限公司", "credit_code": "9144030071526726XG", "keepers": [{"id": "x-8", "name": "王总"}]}
C = {"name": "丙方贸易有限公司", "credit_code": "91310000MA1FL4XQ3A", "keepers": [{"id": "x-9", "name": "客户A"}]}
MENTIONS = [
    {"id": "u-1", "name": "李四"},
    {"id": "x-8", "name": "王总", "email": "wang@b.example", "external": True},
    {"id": "x-9", "name": "客户A", "email": "a@customer.example", "external": True},
]
TEXT = "/sign @李四(我方科技有限公司 公章) > @王总（乙方科技有限公司 公章） > @客户A(丙方贸易有限公司 合同专用章)"


async def _register(http: httpx.AsyncClient, api: str) -> None:
    for org in (OURS, B, C):
        r = await http.post(f"{api}/api/v1/organisations", json=org, headers=AUTH)
        assert r.status_code == 201, r.text


def _action(name: str, request_id: str, user: str, user_name: str, reason: str | None = None) -> dict[str, Any]:
    return {"event_id": f"a-{uuid.uuid4().hex[:10]}", "type": "action", "sender": {"id": user, "name": user_name},
            "action": {"request_id": request_id, "name": name, **({"reason": reason} if reason else {})}}


def _red(image: Image.Image) -> int:
    """Pixels of seal red: strong red, little green and blue."""
    r, g, b = image.convert("RGB").split()
    mask = ImageChops.multiply(r.point(lambda v: 255 if v > 180 else 0),
                               ImageChops.lighter(g, b).point(lambda v: 255 if v < 110 else 0))
    return sum(1 for v in mask.getdata() if v)


def _glyph_ink(text: str, font_size: int = 48) -> list[bytes]:
    """Each character drawn alone; the font's .notdef box for a character it lacks."""
    font = ImageFont.truetype(str(default_font_path()), font_size)
    out = []
    for ch in text:
        tile = Image.new("L", (font_size * 2, font_size * 2), 0)
        ImageDraw.Draw(tile).text((font_size, font_size), ch, font=font, fill=255, anchor="mm")
        out.append(tile.tobytes())
    return out


async def test_three_companies_sign_with_seals_and_approval(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    with stack(dev_env, settings) as s:
        async with in_process_worker(dev_env, s.settings), httpx.AsyncClient(timeout=30) as http:
            await _register(http, s.api)
            resp = await s.send(http, s.command(TEXT, MENTIONS))
            assert resp.status_code == 202, resp.text
            request_id = resp.json()["request_id"]

            # our company's seal needs its keeper first: a private message, and the card's buttons
            def asked() -> bool:
                return any(m.get("type") == "message" and m.get("to") == "u-6" and "用印审批" in m.get("text", "")
                           for m in s.sink.messages)
            await s.sink.wait_for(asked, timeout=60)
            ask = next(m for m in s.sink.messages if m.get("type") == "message" and m.get("to") == "u-6")
            assert "我方科技有限公司" in ask["text"] and "张三" in ask["text"]  # whose seal, who asks
            assert "乙方科技有限公司（王总 代签，公章）" in ask["text"]  # the counterparties
            assert s.link(request_id, "u-1") is None  # no link before the seal is approved
            cards = [m["card"] for m in s.sink.messages if m["type"] == "card.upsert"]
            assert {"approve_seal", "refuse_seal"} <= {b["action"] for b in cards[-1]["buttons"]}
            assert cards[-1]["signers"][0]["name"] == "我方科技有限公司（李四 代签，公章）"
            assert "待审批" in cards[-1]["seals"][0]

            # someone who does not keep the seal cannot approve it
            r = await s.send(http, _action("approve_seal", request_id, "x-8", "王总"))
            assert r.status_code == 403, r.text
            r = await s.send(http, _action("approve_seal", request_id, "u-6", "赵六"))
            assert r.status_code in (200, 202), r.text

            await s.sink.wait_for(lambda: s.link(request_id, "u-1") is not None, timeout=60)
            page = await http.get(str(s.link(request_id, "u-1")))
            assert "代表 / On behalf of</dt><dd>我方科技有限公司，并加盖公章" in page.text  # the signatory is told
            await s.sign(http, request_id, "u-1", "李四")
            await s.sign(http, request_id, "x-8", "王总")
            await s.sign(http, request_id, "x-9", "客户A")
            view = await s.wait_status(http, request_id, "COMPLETED", timeout=120)
            await _record(dev_env.client.get_workflow_handle(request_id), "v4-three-party-seals")
            assert view["seal_approvals"][0]["status"] == "approved" and view["seal_approvals"][0]["by"] == "赵六"

            await s.sink.wait_for(lambda: any(m["type"] == "file" for m in s.sink.messages), timeout=30)
            file_msg = next(m for m in s.sink.messages if m["type"] == "file")
            signed = (await http.get(file_msg["url"])).content
            trail = (await http.get(f"{s.api}/api/v1/signing-requests/{request_id}/audit", headers=AUTH)).json()

        # six signatures: each person's, then their company's seal, by the company's certificate
        assert signed.startswith(s.contract)
        ca = InstallationCA.load_or_create(s.settings.data_dir / "ca")
        reports = await asyncio.to_thread(validate_pdf, signed, [ca.certificate])
        assert [r.signer_name for r in reports] == ["李四", "我方科技有限公司", "王总", "乙方科技有限公司", "客户A",
                                                    "丙方贸易有限公司"]
        assert all(r.intact and r.valid and r.trusted and r.modification_ok for r in reports)
        assert [r.field_name for r in reports if r.field_name.startswith("Seal")] == ["Seal1", "Seal2", "Seal3"]
        from pyhanko.pdf_utils.reader import PdfFileReader
        sigs = PdfFileReader(BytesIO(signed)).embedded_regular_signatures
        subjects = {sig.field_name: sig.signer_cert.subject.native for sig in sigs}
        assert subjects["Seal1"]["organization_name"] == "我方科技有限公司"
        assert subjects["Seal1"]["serial_number"] == OURS["credit_code"]
        assert subjects["Seal3"]["serial_number"] == C["credit_code"]

        # the card showed each company's state; the approval is in the audit trail
        cards = [m["card"] for m in s.sink.messages if m["type"] == "card.upsert"]
        assert cards[-1]["status"] == "COMPLETED"
        assert [x["name"] for x in cards[-1]["signers"]] == ["我方科技有限公司（李四 代签，公章）",
                                                             "乙方科技有限公司（王总 代签，公章）",
                                                             "丙方贸易有限公司（客户A 代签，合同专用章）"]
        assert "已同意" in cards[-1]["seals"][0] and "赵六" in cards[-1]["seals"][0]
        assert cards[-1]["seals"][0] in cards[-1]["note"]  # every platform draws the note
        assert all(not x["external"] for x in cards[-1]["signers"][:1]) and cards[-1]["signers"][1]["external"]
        actions = [e["action"] for e in trail["events"]]
        assert "seal.approval_requested" in actions and "seal.approved" in actions and trail["chain_valid"]
        approved = next(e for e in trail["events"] if e["action"] == "seal.approved")
        assert approved["actor"] == "u-6"

        # the seals as an image: red where each seal is, CJK glyphs drawn (not .notdef boxes)
        pdf = pypdfium2.PdfDocument(signed)
        pdf.init_forms()
        page = pdf[len(pdf) - 1]
        scale = 2
        image = page.render(scale=scale, may_draw_forms=True).to_pil()
        height = page.get_height()
        boxes = [sig.sig_field["/Kids"][0]["/Rect"] if "/Kids" in sig.sig_field else sig.sig_field["/Rect"]
                 for sig in sigs if sig.field_name.startswith("Seal")]
        assert len(boxes) == 3
        for rect in boxes:
            x1, y1, x2, y2 = (float(v) for v in rect)
            crop = image.crop((round(x1 * scale), round((height - y2) * scale), round(x2 * scale),
                               round((height - y1) * scale)))
            assert _red(crop) > 0.08 * crop.width * crop.height  # ring, star and name in seal red
        outside = image.crop((0, 0, image.width, round(image.height * 0.6)))
        assert _red(outside) == 0  # nothing red above the signatures
        missing = _glyph_ink("\U000f0000")[0]  # a character the font lacks: its .notdef box
        for ink in _glyph_ink("我方科技有限公司乙丙贸易"):
            assert ink != missing and any(ink)


async def test_refused_seal_ends_declined(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    with stack(dev_env, settings) as s:
        async with in_process_worker(dev_env, s.settings), httpx.AsyncClient(timeout=30) as http:
            await _register(http, s.api)
            resp = await s.send(http, s.command(TEXT, MENTIONS))
            request_id = resp.json()["request_id"]
            await s.sink.wait_for(lambda: any(m.get("to") == "u-6" for m in s.sink.messages), timeout=60)
            r = await s.send(http, _action("refuse_seal", request_id, "u-6", "赵六", reason="合同金额未经财务审核"))
            assert r.status_code in (200, 202), r.text
            view = await s.wait_status(http, request_id, "DECLINED")
            await _record(dev_env.client.get_workflow_handle(request_id), "v4-seal-refused")
            assert "合同金额未经财务审核" in view["reason"] and "赵六" in view["reason"]
            assert view["seal_approvals"][0]["status"] == "refused"
            # nobody got a link; a second decision is refused: the flow has ended
            assert s.link(request_id, "u-1") is None
            again = await s.send(http, _action("approve_seal", request_id, "u-6", "赵六"))
            assert again.status_code in (404, 409), again.text
            trail = (await http.get(f"{s.api}/api/v1/signing-requests/{request_id}/audit", headers=AUTH)).json()
        refused = next(e for e in trail["events"] if e["action"] == "seal.refused")
        assert refused["actor"] == "u-6" and refused["detail"]["reason"] == "合同金额未经财务审核"
        assert "signer.signed" not in [e["action"] for e in trail["events"]]
        said = [m["text"] for m in s.sink.messages if m.get("type") == "message" and m.get("text")]
        assert any("拒绝为" in t and "合同金额未经财务审核" in t for t in said)


async def test_unregistered_org_and_non_keeper_are_rejected(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    with stack(dev_env, settings) as s:
        async with in_process_worker(dev_env, s.settings), httpx.AsyncClient(timeout=30) as http:
            await _register(http, s.api)
            r = await s.send(http, s.command("/sign @李四(无名有限公司 公章)", MENTIONS))
            unknown = r.json()["request_id"]
            view = await s.wait_status(http, unknown, "REJECTED")
            assert "无名有限公司" in view["reason"] and "not registered" in view["reason"]
            # 李四 does not keep 乙方's seal, and 乙方 has no seal-use approval: refused at prepare
            r = await s.send(http, s.command("/sign @李四(乙方科技有限公司 公章)", MENTIONS))
            view = await s.wait_status(http, r.json()["request_id"], "REJECTED")
            assert "does not keep the seal" in view["reason"]
            # the webhook IM's own way to say it: a mention with `org` and `seal: true`
            mentions = [{"id": "x-8", "name": "王总", "email": "wang@b.example", "external": True,
                         "org": {"id": B["credit_code"], "name": "乙方"}, "seal": True}]
            r = await s.send(http, s.command("/sign @王总", mentions))
            view = await s.wait_status(http, r.json()["request_id"], "IN_PROGRESS")
            assert view["signers"][0]["person"]["org"]["name"] == "乙方科技有限公司"
            assert view["signers"][0]["person"]["org"]["credit_code"] == B["credit_code"]
            await s.sink.wait_for(lambda: s.link(r.json()["request_id"], "x-8") is not None, timeout=30)


async def test_a_seal_approval_nobody_answers_expires_at_the_deadline(ts_env: WorkflowEnvironment,
                                                                      settings: Settings) -> None:
    """Time-skipping: the keepers never answer; at the request's deadline it ends EXPIRED, and the
    signatory never got a link."""
    from datetime import timedelta

    from signbridge.core.models import OrgParty
    from signbridge.intake.orgs import add
    from store.db import get_engine
    from store.repos.organisations import Keeper
    from tests.harness import A, harness

    async with harness(ts_env, settings) as h:
        add(get_engine(h.settings.sqlalchemy_url), name=OURS["name"], credit_code=OURS["credit_code"],
            requires_seal_approval=True, keepers=[Keeper("u-6", "赵六")])
        sealing = A.model_copy(update={"org": OrgParty(name=str(OURS["name"]), seal=True)})
        handle = await h.start([[sealing]], timing=h.timing(deadline=timedelta(days=2)))
        view = await handle.result()
        assert view.status == "EXPIRED" and view.seal_approvals[0].status == "pending"
        assert not h.links_for(handle, A)
        assert any(m.get("to") == "u-6" and "用印审批" in m.get("text", "") for m in h.sink.messages)
        from tests.test_ops_cli import cli
        shown = await cli(h, "requests", "show", handle.id)
        assert shown.exit_code == 0, shown.output
        assert "我方科技有限公司（李四 代签，公章）" in shown.output and "用印审批：待审批" in shown.output
