"""Checks on who must sign, shared by every way a request can arrive (chat command, REST, CSV import).

`prepare` runs `checked_signers` on the people as the chat's directory resolved them, so whatever
path a request came by, what reaches a certificate, a stamp, a provider or a card is clean:

- **Names** are cleaned rather than refused: invisible and bidi control characters (zero-width
  spaces and joiners, LRM/RLM, embeddings and overrides, isolates, the BOM, every other
  format/control/private-use/unassigned code point, and the invisible "filler" letters) are
  removed, and any run of whitespace becomes one space. A directory name often carries a stray
  zero-width character from copy and paste, and refusing the whole request for it would help no
  one; an override, on the other hand, could make a certificate or a stamp read as someone else,
  so it never gets that far. A name that is empty after cleaning, or longer than
  `MAX_NAME_CHARS`, is refused.
- **Email addresses** are checked by `email-validator` (syntax only, no DNS): one address, no
  display name, no spaces, a domain with a dot, ASCII (so it fits a certificate's
  subjectAltName and every provider's API).
- **Mobile numbers** must be E.164 (`+` and country code) or a mainland Chinese number, and a
  mobile (not a landline) by `phonenumbers`' numbering plan; they are normalised to E.164.

Every refusal is a `SignerProblem` whose message is Chinese, then English in full-width brackets.
"""

from __future__ import annotations

import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from signbridge.core.models import Person

# The longest name a signer can be asked to type on the signing page (its input's maxlength) and
# that the stamp still shows readably; X.509's 64-character common-name limit is handled by
# folding (see signbridge/pdf/pki.py), not here.
MAX_NAME_CHARS = 200
# Letters that draw nothing: Hangul fillers, the braille blank and the combining grapheme joiner.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5")
_MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
_SHOWN_CHARS = 64


class SignerProblem(ValueError):
    """A signer's data cannot be used; `message` says why, in Chinese then English."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def clean_name(name: str) -> str:
    """The name with invisible and bidi control characters removed and whitespace collapsed (NFC)."""
    spaced = "".join(" " if ch.isspace() else ch for ch in unicodedata.normalize("NFC", name))
    visible = "".join(ch for ch in spaced
                      if unicodedata.category(ch)[0] != "C" and ch not in _INVISIBLE_LETTERS)
    return " ".join(visible.split())


def _shown(value: str) -> str:
    """A value as it may appear in a message: cleaned, and cut short if it is long."""
    cleaned = clean_name(value)
    return cleaned if len(cleaned) <= _SHOWN_CHARS else cleaned[:_SHOWN_CHARS - 1] + "…"


def normalised_email(raw: str) -> str:
    """The address in its normal form (domain lower-cased, IDN domains in ASCII), or SignerProblem."""
    try:
        checked = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as e:
        shown = _shown(raw)
        raise SignerProblem(f"邮箱地址「{shown}」无效（The email address '{shown}' is not valid: {e}）") from e
    return str(checked.ascii_email)


def normalised_mobile(raw: str) -> str:
    """The mobile number in E.164 (`+8613800138000`), or SignerProblem.

    Numbers without a country code are read as mainland Chinese ones, the only national format
    accepted; everything else needs `+` and its country code.
    """
    shown = _shown(raw)
    refused = SignerProblem(f"手机号「{shown}」无效，请使用「+国家码」开头的国际格式或 11 位中国大陆手机号"
                            f"（The mobile number '{shown}' is not valid: use +<country code><number> or an "
                            "11-digit mainland China mobile number）")
    try:
        number = phonenumbers.parse(raw, "CN")
    except phonenumbers.NumberParseException as e:
        raise refused from e
    if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) not in _MOBILE_TYPES:
        raise refused
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def checked_person(person: Person) -> Person:
    """The person with a clean name and normalised contacts, or SignerProblem saying what is wrong."""
    name = clean_name(person.name)
    if not name:
        raise SignerProblem(f"签署人 {_shown(person.id)} 没有姓名（Signer {_shown(person.id)} has no name: "
                            "it is empty or made only of invisible characters）")
    if len(name) > MAX_NAME_CHARS:
        raise SignerProblem(f"签署人姓名超过 {MAX_NAME_CHARS} 个字：{_shown(name)}（The name of signer "
                            f"{_shown(name)} is longer than {MAX_NAME_CHARS} characters）")
    email = (person.email or "").strip()
    mobile = (person.mobile or "").strip()
    try:
        email = normalised_email(email) if email else ""
        mobile = normalised_mobile(mobile) if mobile else ""
    except SignerProblem as e:
        raise SignerProblem(f"{name}: {e.message}") from e
    return person.model_copy(update={"name": name, "email": email or None, "mobile": mobile or None})


def checked_signers(groups: list[list[Person]]) -> list[list[Person]]:
    """Every signer through `checked_person`, then the order's own rules (`signer_problem`)."""
    checked = [[checked_person(p) for p in group] for group in groups]
    problem = signer_problem(checked)
    if problem:
        raise SignerProblem(problem)
    return checked


def signer_problem(groups: list[list[Person]]) -> str | None:
    """Why these signer groups can't be used, in words for the chat; None when they can."""
    if not groups or not any(groups):
        return "没有指定签署人（No signers were named: mention the people who must sign）"
    if any(not g for g in groups):
        return "签署顺序中有空的一组（An empty signing group: check the '>' separators）"
    seen: set[str] = set()
    for group in groups:
        for p in group:
            name = _shown(p.name)
            if p.id in seen:
                return f"{name} 被指定了两次（{name} is named twice; each person signs once）"
            seen.add(p.id)
            if p.external and not (p.email or p.mobile):
                return (f"外部签署人 {name} 缺少邮箱或手机号（External signer {name} needs an email "
                        "or a mobile number to receive the signing link）")
    return None


_CONTACT_WORDS = {"mobile": ("手机号", "mobile number"), "email": ("邮箱", "email address")}


def unreachable_signers(provider: str, needs: frozenset[str], groups: list[list[Person]]) -> str | None:
    """Why the provider cannot take these signers — each needs one of the contacts in `needs`
    ("mobile", "email") and some have none — and how the sender supplies them; None when it can.

    A missing mobile is the sender's to fix, not an outage: caught at prepare, it ends the flow
    REJECTED with this message instead of a create step that fails until someone sees it STUCK."""
    if not needs:
        return None
    missing = [_shown(p.name) for g in groups for p in g if not any(getattr(p, kind) for kind in needs)]
    if not missing:
        return None
    kinds = [k for k in ("mobile", "email") if k in needs]
    zh = "或".join(_CONTACT_WORDS[k][0] for k in kinds)
    en = " or ".join(_CONTACT_WORDS[k][1] for k in kinds)
    example = "13812341234" if "mobile" in needs else "name@example.com"
    first = missing[0]
    return (f"请补充{'、'.join(missing)}的{zh}：签署服务 {provider} 需要用它识别签署人。请在命令里 @{first} 后面写上，"
            f"例如 @{first} {example}，或由管理员用 signbridge identities import 导入后重新发起"
            f"（Add the {en} of {', '.join(missing)}: the provider {provider} needs it to identify each signer. "
            f"Write it after the mention, e.g. @{first} {example}, or have an admin import it with "
            "`signbridge identities import`, then send the command again）")


def mask_mobile(mobile: str) -> str:
    """A mobile number as people may see it on a card or a page: `138****1234` (mainland China,
    without +86), `+1 555***0100` elsewhere — enough to recognise one's own number, not to dial it."""
    digits = "".join(ch for ch in mobile if ch.isdigit())
    country = ""
    if mobile.strip().startswith("+"):
        try:
            parsed = phonenumbers.parse(mobile, None)
            country, digits = str(parsed.country_code), str(parsed.national_number)
        except phonenumbers.NumberParseException:
            pass
    if len(digits) < 7:
        masked = "*" * len(digits)
    else:
        keep_head = 3 if len(digits) >= 10 else 2
        masked = digits[:keep_head] + "*" * (len(digits) - keep_head - 4) + digits[-4:]
    return masked if country in ("", "86") else f"+{country} {masked}"


def mask_email(email: str) -> str:
    """`w***@customer.example`: the first letter of the mailbox and the whole domain."""
    local, at, domain = email.strip().rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"
