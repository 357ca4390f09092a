"""Contacts typed into a sign command: `@王总 13812341234`, `@王总 wang@customer.example`, `王总:13812341234`.

An external signer is reached by the contact the sender gives (the platform gives none for a
customer in a Feishu external group, a DingTalk cross-org group, a WeCom customer group or a
Slack Connect channel). The grammar (`signbridge.core.commands`) decides *where* a contact is;
this module decides *what* it is:

* A word is a **mobile attempt** when it is `+` or a digit followed by digits (hyphens allowed
  between them), seven characters or more; it is accepted as a mainland China mobile
  (`1[3-9]` + 9 digits, optionally `+86`/`86` in front) or, with `+` and a country code, as an
  E.164 number that `phonenumbers` knows as a mobile. Everything is normalised to E.164.
* A word is an **email attempt** when it contains `@` with something before it; it is accepted
  when `email-validator` accepts it (syntax only, ASCII), and normalised.

A word that is an attempt but not a valid contact is a mistake to report (listing the word), never
a contact silently dropped and never a stray word silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from signbridge.core.signers import SignerProblem, normalised_email, normalised_mobile

Kind = Literal["mobile", "email"]

_MOBILE_ATTEMPT = re.compile(r"^\+?\d[\d\-]{5,}$")
_EMAIL_ATTEMPT = re.compile(r"^[^\s@＠:：]+[@＠][^\s:：]*$")
_CN_MOBILE = re.compile(r"^(?:\+?86)?(1[3-9]\d{9})$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
EXTERNAL_PREFIX = "ext:"


@dataclass(frozen=True)
class Contact:
    kind: Kind
    value: str  # normalised: E.164 mobile or the normal form of the address


class BadContact(ValueError):
    """A word that tries to be a mobile or an email and is neither."""

    def __init__(self, token: str, kind: Kind) -> None:
        super().__init__(token)
        self.token = token
        self.kind = kind


def attempt(token: str) -> Kind | None:
    """What `token` tries to be: a mobile, an email, or nothing (an ordinary word)."""
    if _MOBILE_ATTEMPT.match(token):
        return "mobile"
    if _EMAIL_ATTEMPT.match(token):
        return "email"
    return None


def read(token: str) -> Contact:
    """The contact `token` is, normalised; `BadContact` when it tries to be one and is not;
    ValueError when it is not an attempt at all."""
    kind = attempt(token)
    if kind is None:
        raise ValueError(f"{token!r} is not a contact")
    if kind == "mobile":
        digits = token.replace("-", "")
        cn = _CN_MOBILE.match(digits)
        if cn is not None:
            return Contact("mobile", "+86" + cn.group(1))
        if digits.startswith("+") and not digits.startswith("+86") and _E164.match(digits):
            try:
                return Contact("mobile", normalised_mobile(digits))
            except SignerProblem:
                pass
        raise BadContact(token, "mobile")
    try:
        return Contact("email", normalised_email(token.replace("＠", "@")))
    except SignerProblem as e:
        raise BadContact(token, "email") from e


def external_id(contact: Contact) -> str:
    """A stable id for someone known only by a contact (`王总:13812341234`): the same person named
    twice is caught as a duplicate, and the identities cache keeps them under this id."""
    return EXTERNAL_PREFIX + contact.value.lower()


def problem_for(bad: list[BadContact]) -> str:
    """One bilingual message listing every bad contact word."""
    shown = "、".join(f"「{b.token[:64]}」" for b in bad)
    shown_en = ", ".join(f"'{b.token[:64]}'" for b in bad)
    return (f"无法识别的联系方式：{shown}。手机号请写 11 位中国大陆手机号（可加 +86）或以「+国家码」开头的国际号码，"
            "邮箱请写完整地址，例如 @王总 13812341234 或 王总:wang@customer.example"
            f"（Not a valid mobile number or email address: {shown_en}. Write an 11-digit mainland China mobile "
            "(optionally +86), an international number starting with +<country code>, or a full email address, "
            "e.g. @Wang 13812341234 or Wang:wang@customer.example）")
