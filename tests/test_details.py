"""The Temporal UI's current details say where a flow is, in words (`workflows/details.py`)."""

from __future__ import annotations

from datetime import UTC, datetime

from signbridge.core.models import SignStatus
from workflows import details

SINCE = datetime(2026, 12, 4, 18, 53, tzinfo=UTC)


def test_stuck_says_the_step_on_what_since_when_and_the_command() -> None:
    text = details.stuck("sign:webhook:default:e-1", "publish", "update the card",
                         'webhook chat failed card.upsert (HTTP 503): {"ok": false}', SINCE)
    first, command, english = text.splitlines()
    assert first == "**STUCK** 卡在：更新群卡片 — 聊天接口 503，自 12-04 18:53 UTC 起，正在自动重试"
    assert command == "立即重试 / retry now: `signbridge requests retry sign:webhook:default:e-1`"
    assert english.startswith('Stuck at "update the card" — chat API 503 since 12-04 18:53 UTC, retrying by itself')


def test_the_cause_in_words() -> None:
    assert details.cause("create_flow", "provider unavailable (HTTP 503)") == ("签署服务 503", "provider 503")
    assert details.cause("send_link", "webhook chat did not answer (ReadTimeout: timed out)") == (
        "聊天接口超时", "chat API timed out")
    assert details.cause("publish", "webhook chat unreachable (ConnectError: refused)") == (
        "聊天接口无法连接", "chat API unreachable")
    assert details.cause("prepare", "boom") == ("文件获取出错", "document fetch failed")
    long = details.stuck("r", "poll", "poll provider", "x" * 5000, SINCE)
    assert len(long) < 600  # a provider's whole error page does not fill the UI


def test_every_state_has_words() -> None:
    assert "第 1/2 组：李四、王五，截止 12-04 18:53 UTC" in details.waiting(0, 2, ["李四", "王五"], SINCE)
    assert details.finished(SignStatus.CANCELLED, "合同作废").startswith("**CANCELLED** 已撤销：合同作废")
    assert "检查" in details.checking() and "local" in details.creating("local") and "归档" in details.finishing()
    assert details.recovered("update the card", 3, "WHERE").startswith("WHERE\n")
