"""Email and SMS senders (`connectors.notify`) against a real SMTP server and the SMS simulators,
whose signature checks are themselves pinned to the vendors' published examples here."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from connectors.notify import aliyun_sms, tencent_sms
from connectors.notify.base import NotifyError
from connectors.notify.dev import DevSender, read_outbox
from connectors.notify.registry import build_notifier, code_notice, link_notice
from connectors.notify.smtp import SmtpSender
from signbridge.core.settings import Settings
from signbridge.core.signers import mask_email, mask_mobile
from tests.conftest import make_settings
from tests.sim import aliyun_sms_sim as ali
from tests.sim import tencent_sms_sim as tc
from tests.sim.smtp_server import smtp_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def test_aliyun_v3_signature_matches_the_published_example() -> None:
    query = {"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}
    headers = {"host": "ecs.cn-shanghai.aliyuncs.com", "x-acs-action": "RunInstances",
               "x-acs-content-sha256": aliyun_sms.EMPTY_SHA256, "x-acs-date": "2023-10-26T09:01:01Z",
               "x-acs-signature-nonce": "d410180a5abf7fe235dd9b74aca91fc0", "x-acs-version": "2014-05-26"}
    request, _ = aliyun_sms.canonical_request("POST", "/", query, headers, b"")
    assert hashlib.sha256(request.encode()).hexdigest() == \
        "29622f5feb1e9fcaaa2e276a72889c975f7b16f00e02be1ca34965b18cd85015"
    assert aliyun_sms.authorization("YourAccessKeyId", "YourAccessKeySecret", "POST", "/", query, headers, b"") == (
        "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders=host;x-acs-action;x-acs-content-sha256;"
        "x-acs-date;x-acs-signature-nonce;x-acs-version,"
        "Signature=e521358f7776c97df52e6b2891a8bc73026794a071b50c3323388c4e0df64804")


def test_tencent_tc3_signature_matches_the_published_example() -> None:
    payload = b'{"Limit": 1, "Filters": [{"Values": ["\\u672a\\u547d\\u540d"], "Name": "instance-name"}]}'
    assert hashlib.sha256(payload).hexdigest() == "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
    assert tencent_sms.signature("Gu5t9xGARNpq86cd98joQYCN3EXAMPLE", "cvm", "cvm.tencentcloudapi.com", 1551113065,
                                 payload) == "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"


async def test_smtp_sends_through_a_real_server_with_login() -> None:
    with smtp_server() as (url, box):
        sender = SmtpSender(url, "SignBridge <no-reply@corp.example>", 10)
        await sender.send("wang@customer.example", code_notice("123456"), key="flow:x-9:code:1")
        [msg] = box.to("wang@customer.example")
        assert "123456" in msg["Subject"] and "123456" in msg.get_content()
        assert msg["From"] == "SignBridge <no-reply@corp.example>" and msg["Message-ID"].endswith("@corp.example>")

        box.refuse.add("gone@customer.example")
        with pytest.raises(NotifyError) as refused:
            await sender.send("gone@customer.example", code_notice("654321"), key="k2")
        assert refused.value.permanent

        wrong = SmtpSender(url.replace("smtp-test-password", "wrong"), "x@corp.example", 10)
        with pytest.raises(NotifyError) as denied:
            await wrong.send("wang@customer.example", code_notice("111111"), key="k3")
        assert denied.value.permanent and len(box.messages) == 1


async def test_smtp_unreachable_is_a_fault_of_the_moment() -> None:
    with smtp_server() as (url, _):
        dead = url.rsplit(":", 1)[0]
    sender = SmtpSender(f"{dead}:1", "x@corp.example", 5)
    with pytest.raises(NotifyError) as e:
        await sender.send("a@customer.example", code_notice("123456"), key="k")
    assert not e.value.permanent and e.value.retry_after is None


def _aliyun(url: str, http: httpx.AsyncClient, secret: str = ali.KEY_SECRET) -> aliyun_sms.AliyunSms:
    return aliyun_sms.AliyunSms(http, key_id=ali.KEY_ID, secret=secret, sign_name=ali.SIGN_NAME,
                                code_template=ali.CODE_TEMPLATE, link_template=ali.LINK_TEMPLATE, endpoint=url)


async def test_aliyun_sends_and_maps_its_minute_limit_to_a_wait(http: httpx.AsyncClient) -> None:
    with ali.aliyun_sms() as (url, sim):
        sender = _aliyun(url, http)
        await sender.send("+8613812341234", code_notice("246810"), key="flow:x-1:code:1")
        await sender.send("+8613812341234", link_notice("王总", "合同", "https://s.example/sign/t"), key="link")
        assert sim.codes_to("13812341234") == ["246810"] and sim.links_to("13812341234") == ["https://s.example/sign/t"]
        with pytest.raises(NotifyError) as limited:
            await sender.send("+8613812341234", code_notice("135790"), key="flow:x-1:code:2")
        assert limited.value.retry_after == 60 and not limited.value.permanent
        assert sim.refused == ["isv.BUSINESS_LIMIT_CONTROL"]
        with pytest.raises(NotifyError) as illegal:
            await sender.send("+1555", code_notice("135790"), key="k")
        assert illegal.value.permanent and "isv.MOBILE_NUMBER_ILLEGAL" in illegal.value.message


async def test_aliyun_refuses_a_wrong_signature(http: httpx.AsyncClient) -> None:
    with ali.aliyun_sms() as (url, sim):
        with pytest.raises(NotifyError) as e:
            await _aliyun(url, http, secret="not-the-secret").send("13812341234", code_notice("123456"), key="k")
        assert e.value.permanent and sim.refused == ["SignatureDoesNotMatch"] and not sim.sent


def _tencent(url: str, http: httpx.AsyncClient, key: str = tc.SECRET_KEY) -> tencent_sms.TencentSms:
    return tencent_sms.TencentSms(http, secret_id=tc.SECRET_ID, secret_key=key, app_id=tc.APP_ID,
                                  sign_name=tc.SIGN_NAME, code_template=tc.CODE_TEMPLATE,
                                  link_template=tc.LINK_TEMPLATE, region="ap-guangzhou", endpoint=url)


async def test_tencent_sends_and_maps_its_thirty_second_limit_to_a_wait(http: httpx.AsyncClient) -> None:
    with tc.tencent_sms() as (url, sim):
        sender = _tencent(url, http)
        await sender.send("+8613912345678", code_notice("864209"), key="flow:x-2:code:1")
        assert sim.codes_to("13912345678") == ["864209"]
        with pytest.raises(NotifyError) as limited:
            await sender.send("+8613912345678", code_notice("864209"), key="again")
        assert limited.value.retry_after == 30 and sim.refused == ["LimitExceeded.PhoneNumberThirtySecondLimit"]
        with pytest.raises(NotifyError) as wrong:
            await _tencent(url, http, key="nope").send("+8613912345678", code_notice("1"), key="k")
        assert wrong.value.permanent and sim.refused[-1] == "AuthFailure.SignatureFailure"
        with pytest.raises(NotifyError) as number:
            await sender.send("+86139", code_notice("123456"), key="k")
        assert number.value.permanent and "IncorrectPhoneNumber" in number.value.message


def test_senders_are_chosen_from_the_settings(tmp_path: Path) -> None:
    http = httpx.AsyncClient()
    dev = build_notifier(make_settings(tmp_path), http)
    assert isinstance(dev.email, DevSender) and isinstance(dev.sms, DevSender)
    production = Settings(environment="production", data_dir=tmp_path)
    none = build_notifier(production, http)
    assert none.email is None and none.sms is None and none.route("a@x.example", "+8613812341234") is None
    both = build_notifier(Settings(
        environment="production", data_dir=tmp_path, smtp_url="smtp://relay.corp.example:25",
        aliyun_sms_access_key_id="id", aliyun_sms_access_key_secret="s", aliyun_sms_sign_name="签桥",
        aliyun_sms_code_template="SMS_1", tencent_sms_secret_id="id", tencent_sms_secret_key="k",
        tencent_sms_sdk_app_id="1400", tencent_sms_sign_name="签桥", tencent_sms_code_template_id="1",
        sms_provider="tencent"), http)
    assert isinstance(both.sms, tencent_sms.TencentSms) and isinstance(both.email, SmtpSender)
    route = both.route("wang@customer.example", "+8613812341234")
    assert route is not None and (route.channel, route.masked) == ("sms", "138****1234")
    route = both.route("wang@customer.example", None)
    assert route is not None and (route.channel, route.masked) == ("email", "w***@customer.example")


async def test_development_sender_logs_and_keeps_a_mailbox(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="signbridge.notify.dev"):
        await DevSender(settings, "sms").send("+8613812341234", code_notice("314159"), key="f:x-1:code:1")
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("DEVELOPMENT ONLY") and "314159" in line and "138****1234" in line
    assert "13812341234" not in line
    [entry] = read_outbox(settings)
    assert entry["params"]["code"] == "314159" and entry["to"] == "+8613812341234"


def test_masks_show_enough_to_recognise_never_to_dial() -> None:
    assert mask_mobile("+8613812341234") == mask_mobile("13812341234") == "138****1234"
    assert mask_mobile("+15555550100") == "+1 555***0100"
    assert mask_email("wang@customer.example") == "w***@customer.example"


async def test_the_mailbox_reader_skips_an_entry_still_being_written(tmp_path: Path) -> None:
    """The worker appends while the playground or a test reads: half a line is not yet an entry."""
    from connectors.notify.dev import outbox_path

    settings = make_settings(tmp_path)
    await DevSender(settings, "email").send("wang@customer.example", code_notice("271828"), key="f:x-1:code:1")
    whole = outbox_path(settings).read_bytes()
    second = whole.replace(b"271828", b"161803").replace(b"code:1", b"code:2")
    with outbox_path(settings).open("ab") as f:
        f.write(second[: len(second) // 2])  # a writer half-way through its line
        f.flush()
        assert [e["params"]["code"] for e in read_outbox(settings)] == ["271828"]
        f.write(second[len(second) // 2:])
    assert [(e["seq"], e["params"]["code"]) for e in read_outbox(settings)] == [(1, "271828"), (2, "161803")]
