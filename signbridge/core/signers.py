"""Checks on who must sign, shared by every way a request can arrive (chat command, REST)."""

from __future__ import annotations

from signbridge.core.models import Person


def signer_problem(groups: list[list[Person]]) -> str | None:
    """Why these signer groups can't be used, in words for the chat; None when they can."""
    if not groups or not any(groups):
        return "没有指定签署人（No signers were named: mention the people who must sign）"
    if any(not g for g in groups):
        return "签署顺序中有空的一组（An empty signing group: check the '>' separators）"
    seen: set[str] = set()
    for group in groups:
        for p in group:
            if p.id in seen:
                return f"{p.name} 被指定了两次（{p.name} is named twice; each person signs once）"
            seen.add(p.id)
            if p.external and not (p.email or p.mobile):
                return (f"外部签署人 {p.name} 缺少邮箱或手机号（External signer {p.name} needs an email "
                        "or a mobile number to receive the signing link）")
    return None
