"""The message catalogue: every kind in both languages, the parameters the workflow sends."""

from __future__ import annotations

import re

import pytest

from signbridge.core.messages import TEMPLATES, UnknownMessage, link_message, render

# What the workflow asks for (workflows/signing.py `_tell`).
WORKFLOW_KINDS = {"rejected": {"reason": "r"}, "declined": {"who": "w", "title": "t", "reason": "r"},
                  "expired": {"title": "t"}}


def test_every_kind_speaks_both_languages_with_the_same_parameters() -> None:
    for kind, by_lang in TEMPLATES.items():
        assert set(by_lang) == {"zh", "en"}, kind
        fields = {lang: set(re.findall(r"{(\w+)}", text)) for lang, text in by_lang.items()}
        assert fields["zh"] == fields["en"], kind
    for kind, params in WORKFLOW_KINDS.items():
        assert render(kind, params, "zh") and render(kind, params, "en")


def test_rendering() -> None:
    assert render("expired", {"title": "合同"}, "zh") == "「合同」已过签署期限，流程已关闭。"
    assert render("rejected", {"reason": ""}, "en").endswith("none given")
    with pytest.raises(UnknownMessage):
        render("nope", {}, "zh")
    with pytest.raises(UnknownMessage):
        render("declined", {"who": "w"}, "en")  # a parameter missing is a bug, said as one
    # A value is not a template.
    assert render("rejected", {"reason": "{title} 不对"}, "zh") == "无法发起签署：{title} 不对"


def test_link_messages() -> None:
    assert link_message("合同", "https://x/sign/t", "zh") == "请签署「合同」：https://x/sign/t（please sign “合同”）"
    assert link_message("合同", "https://x/sign/t", "en", reminder=True) == "Reminder: please sign “合同”: https://x/sign/t"
    assert link_message("合同", None, "zh", reminder=True).startswith("提醒：请签署「合同」，签署邀请已由签署服务发送")
    assert "provider has sent you" in link_message("C", None, "en")
