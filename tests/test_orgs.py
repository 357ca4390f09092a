"""Organisations: the credit code check, the party grammar, the card's wording, seal images, the
`signbridge orgs` commands and `/api/v1/organisations` — each with the bad input it must refuse."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from PIL import Image
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from api.main import create_app
from signbridge.cli.main import app
from signbridge.core import commands
from signbridge.core.cards import build_card
from signbridge.core.models import ChatRef, OrgParty, Person, SealApproval, SignerState, SignStatus, StatusView
from signbridge.core.orgs import CreditCodeProblem, normalise_credit_code, party_label, uscc_check_character
from signbridge.core.settings import Settings
from signbridge.pdf.pades import default_font_path
from signbridge.pdf.seal import SEAL_RED, SealImageProblem, checked_seal_image, round_seal

runner = CliRunner()
AUTH = {"Authorization": "Bearer test-api-key"}
MENTIONS = [{"id": "u-2", "name": "王五"}, {"id": "u-1", "name": "李四"}]


# ---- unified social credit code (GB 32100-2015) ---------------------------------------------


@pytest.mark.parametrize("code", ["91350100M000100Y43", "9144030071526726XG", "91310000ma1fl4xq3a"])
def test_valid_credit_codes_pass_and_are_upper_cased(code: str) -> None:
    assert normalise_credit_code(f" {code} ") == code.upper()


@pytest.mark.parametrize(("code", "why"), [
    ("91350100M000100Y44", "check character"),  # one digit off: the check character catches it
    ("91350100M000100Y4", "18 characters"),
    ("91350100M0001O0Y43", "does not allow: O"),  # the letter O is never used
    ("91350100M000I00Y43", "does not allow: I"),
])
def test_bad_credit_codes_say_why(code: str, why: str) -> None:
    with pytest.raises(CreditCodeProblem, match=why):
        normalise_credit_code(code)


def test_check_character_of_the_standard_example() -> None:
    assert uscc_check_character("91350100M000100Y4") == "3"


# ---- the party grammar and the card ---------------------------------------------------------


@pytest.mark.parametrize("text", ["/sign @王五(乙方科技有限公司 公章) > @李四",
                                  "/sign @王五（乙方科技有限公司　公章）然后@李四"])
def test_a_party_may_be_an_organisation(text: str) -> None:
    parsed = commands.parse(text, MENTIONS)
    assert parsed is not None
    [[wang], [li]] = parsed.groups
    assert wang.id == "u-2" and wang.org == OrgParty(name="乙方科技有限公司", seal=True, seal_kind="公章")
    assert li.org is None


def test_seal_kind_and_signing_for_a_company_without_its_seal() -> None:
    parsed = commands.parse("/sign @王五(乙方科技有限公司 合同专用章) @李四(甲方科技有限公司)", MENTIONS)
    assert parsed is not None
    [[wang, li]] = parsed.groups
    assert wang.org is not None and wang.org.seal_kind == "合同专用章" and wang.org.seal
    assert li.org is not None and li.org.name == "甲方科技有限公司" and not li.org.seal


@pytest.mark.parametrize(("text", "why"), [("/sign @王五(乙方科技有限公司 公章", "not closed"),
                                           ("/sign @王五( 公章 )", "Name the organisation")])
def test_bad_party_text_is_a_command_problem(text: str, why: str) -> None:
    with pytest.raises(commands.CommandProblem, match=why):
        commands.parse(text, MENTIONS)


def test_cards_name_the_company_and_who_signs_for_it() -> None:
    wang = Person(id="u-2", name="王五", org=OrgParty(name="乙方科技有限公司", seal=True))
    assert party_label(wang) == "乙方科技有限公司（王五 代签，公章）"
    assert party_label(wang, "en") == "乙方科技有限公司 (signed by 王五, company seal)"
    li = Person(id="u-1", name="李四", org=OrgParty(name="甲方科技有限公司"))
    assert party_label(li) == "甲方科技有限公司（李四 代签）"
    view = StatusView(request_id="r", title="t", status=SignStatus.IN_PROGRESS, provider="local", initiator=li,
                      chat=ChatRef(chat_id="g", source_event_id="e"), signers=[SignerState(person=wang, group=0)],
                      seal_approvals=[SealApproval(org="乙方科技有限公司", signer_id="u-2", status="pending",
                                                   keepers=["赵六"])])
    card = build_card(view)
    assert card.signers[0].name == "乙方科技有限公司（王五 代签，公章）"
    assert [b.action for b in card.buttons][:2] == ["approve_seal", "refuse_seal"]
    assert [b.label for b in card.buttons][:2] == ["同意用印", "拒绝"]
    assert card.as_dict()["seals"] == ["乙方科技有限公司 用印审批：待审批（印章管理员 赵六）"]


# ---- seal images ------------------------------------------------------------------------------


def _png(size: tuple[int, int], colour: tuple[int, int, int] = (255, 255, 255), fmt: str = "PNG") -> bytes:
    out = BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt)
    return out.getvalue()


def test_an_uploaded_seal_is_reencoded_with_white_made_transparent() -> None:
    image = Image.new("RGB", (60, 60), (255, 255, 255))
    image.paste(SEAL_RED[:3], (20, 20, 40, 40))
    out = BytesIO()
    image.save(out, format="JPEG", quality=95)
    checked = Image.open(BytesIO(checked_seal_image(out.getvalue(), 1 << 20)))
    assert checked.format == "PNG" and checked.mode == "RGBA"
    assert checked.getpixel((2, 2))[3] == 0  # the white corner is see-through
    assert checked.getpixel((30, 30))[3] == 255 and checked.getpixel((30, 30))[0] > 200  # the red stays


@pytest.mark.parametrize(("data", "why"), [
    (b"%PDF-1.7 not an image", "not a readable image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "not a readable image"),  # a PNG header, nothing behind it
    (_png((10, 10), fmt="GIF"), "PNG or JPEG"),
    (_png((4100, 10)), "4100×10"),  # small file, too many pixels
    (b"\0" * (2 << 20), "larger than"),
])
def test_a_seal_that_is_not_an_image_or_is_huge_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(SealImageProblem, match=why):
        checked_seal_image(data, 1 << 20)


def test_the_generated_seal_is_a_red_ring_with_a_star_and_the_name() -> None:
    image = Image.open(BytesIO(round_seal("乙方科技有限公司", "合同专用章", default_font_path())))
    w, h = image.size
    assert image.getpixel((w // 2, h // 2))[:3] == SEAL_RED[:3]  # the star's centre
    assert image.getpixel((w // 2, 14))[:3] == SEAL_RED[:3]  # the ring at the top
    assert image.getpixel((2, 2))[3] == 0  # outside the ring: transparent
    assert round_seal("乙方科技有限公司", "公章", default_font_path()) != round_seal(
        "丙方科技有限公司", "公章", default_font_path())  # the name is drawn


# ---- the CLI ------------------------------------------------------------------------------


def _env(settings: Settings) -> dict[str, str]:
    return {"SIGNBRIDGE_DATA_DIR": str(settings.data_dir), "SIGNBRIDGE_DATABASE_URL": settings.sqlalchemy_url,
            "SIGNBRIDGE_ENVIRONMENT": "development", "COLUMNS": "250"}


def test_orgs_commands(settings: Settings, tmp_path: Path) -> None:
    env = _env(settings)
    added = runner.invoke(app, ["orgs", "add", "--name", "乙方科技有限公司", "--code", "91350100m000100y43",
                                "--keeper", "u-2:王五", "--seal-approval", "--provider-id", "esign_cn.seal_id=s-1"],
                          env=env)
    assert added.exit_code == 0, added.output
    assert "91350100M000100Y43" in added.output and "seal approval on" in added.output
    bad = runner.invoke(app, ["orgs", "add", "--name", "丙方", "--code", "91350100M000100Y44"], env=env)
    assert bad.exit_code == 1 and "check character" in bad.output
    seal = tmp_path / "seal.png"
    seal.write_bytes(_png((80, 80), (200, 0, 0)))
    assert runner.invoke(app, ["orgs", "seal-import", "乙方科技有限公司", str(seal)], env=env).exit_code == 0
    fake = tmp_path / "seal.txt"
    fake.write_bytes(b"not an image")
    refused = runner.invoke(app, ["orgs", "seal-import", "91350100M000100Y43", str(fake)], env=env)
    assert refused.exit_code == 1 and "not a readable image" in refused.output
    unknown = runner.invoke(app, ["orgs", "seal-import", "没有的公司", str(seal)], env=env)
    assert unknown.exit_code == 1 and "No organisation 没有的公司" in unknown.output
    kept = runner.invoke(app, ["orgs", "keepers", "乙方科技有限公司", "--add", "u-6:赵六", "--remove", "u-2"], env=env)
    assert kept.exit_code == 0 and "赵六 (u-6)" in kept.output and "王五" not in kept.output
    listed = runner.invoke(app, ["orgs", "list", "--json"], env=env)
    [row] = json.loads(listed.output)
    assert row["keepers"] == [{"id": "u-6", "name": "赵六"}] and row["seal_image"]
    assert row["provider_ids"] == {"esign_cn.seal_id": "s-1"} and row["requires_seal_approval"] is True
    table = runner.invoke(app, ["orgs", "list"], env=env)
    assert "乙方科技有限公司" in table.output and "uploaded" in table.output


# ---- the API --------------------------------------------------------------------------------


async def test_organisations_api(dev_env: WorkflowEnvironment, settings: Settings) -> None:
    application = create_app(settings, dev_env.client)
    async with application.router.lifespan_context(application), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application), base_url="http://signbridge.test") as http:
        body = {"name": "乙方科技有限公司", "credit_code": "91350100M000100Y43",
                "keepers": [{"id": "u-2", "name": "王五"}]}
        assert (await http.post("/api/v1/organisations", json=body)).status_code == 401
        created = await http.post("/api/v1/organisations", json=body, headers=AUTH)
        assert created.status_code == 201 and created.json()["seal_image"] is False
        wrong = await http.post("/api/v1/organisations", headers=AUTH,
                                json={**body, "credit_code": "91350100M000100Y44"})
        assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "invalid_credit_code"
        same_name = await http.post("/api/v1/organisations", headers=AUTH,
                                    json={**body, "credit_code": "9144030071526726XG"})
        assert same_name.status_code == 409
        unknown_id = await http.post("/api/v1/organisations", headers=AUTH,
                                     json={**body, "provider_ids": {"nobody.id": "x"}})
        assert unknown_id.status_code == 400 and "nobody.id" in unknown_id.json()["error"]["message"]
        seal = await http.put("/api/v1/organisations/91350100M000100Y43/seal", content=_png((50, 50), (220, 0, 0)),
                              headers={**AUTH, "Content-Type": "image/png"})
        assert seal.status_code == 200 and seal.json()["seal_image"] is True
        not_image = await http.put("/api/v1/organisations/91350100M000100Y43/seal", content=b"<html>",
                                   headers={**AUTH, "Content-Type": "image/png"})
        assert not_image.status_code == 400 and not_image.json()["error"]["code"] == "invalid_seal_image"
        huge = await http.put("/api/v1/organisations/91350100M000100Y43/seal", content=b"\0" * (1024 * 1024 + 1),
                              headers={**AUTH, "Content-Type": "image/png"})
        assert huge.status_code == 413
        keepers = await http.put("/api/v1/organisations/乙方科技有限公司/keepers", headers=AUTH,
                                 json={"add": [{"id": "u-6", "name": "赵六"}], "remove": ["u-2"]})
        assert keepers.json()["keepers"] == [{"id": "u-6", "name": "赵六"}]
        assert (await http.get("/api/v1/organisations/没有", headers=AUTH)).status_code == 404
        listed = await http.get("/api/v1/organisations", headers=AUTH)
        assert [o["credit_code"] for o in listed.json()] == ["91350100M000100Y43"]


def test_a_rest_signer_may_sign_for_an_organisation() -> None:
    from api.requests import PersonIn

    person = PersonIn.model_validate({"id": "u-2", "name": "王五", "org": {"name": "乙方科技有限公司", "seal": True,
                                                                          "seal_kind": "合同专用章"}}).person()
    assert person.org == OrgParty(name="乙方科技有限公司", seal=True, seal_kind="合同专用章")
    assert PersonIn.model_validate({"id": "u-1", "name": "李四"}).person().org is None
