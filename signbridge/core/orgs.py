"""Organisations as signing parties: the unified social credit code and how a party is named.

A company signs through a person (the signatory, 经办人) who signs for it and has its seal applied.
The code here is pure (no I/O): the command grammar, the cards, the intake and the providers
share it.
"""

from __future__ import annotations

from signbridge.core.models import OrgParty, Person

# GB 32100-2015: 18 characters from this alphabet (no I, O, S, V, Z); the 18th is a check character.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# The kinds of seal a command may name; the first word of each pair is what cards show.
SEAL_WORDS = {"公章": "公章", "合同专用章": "合同专用章", "合同章": "合同专用章", "seal": "公章",
              "contract-seal": "合同专用章"}
SEAL_KIND_EN = {"公章": "company seal", "合同专用章": "contract seal"}


class CreditCodeProblem(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def uscc_check_character(first17: str) -> str:
    """The check character of a unified social credit code whose first 17 characters are given."""
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def normalise_credit_code(code: str) -> str:
    """`code` upper-cased and checked (GB 32100-2015): 18 characters of the standard's alphabet,
    the last one the check character. Raises CreditCodeProblem saying what is wrong."""
    value = code.strip().upper()
    if len(value) != 18:
        raise CreditCodeProblem(f"统一社会信用代码应为 18 位，收到 {len(value)} 位"
                                f"（A unified social credit code has 18 characters, got {len(value)}）")
    bad = sorted({c for c in value if c not in USCC_ALPHABET})
    if bad:
        raise CreditCodeProblem(f"统一社会信用代码含有不允许的字符 {''.join(bad)}（The code contains characters the "
                                f"standard does not allow: {''.join(bad)}; I, O, S, V and Z are never used）")
    expected = uscc_check_character(value[:17])
    if value[17] != expected:
        raise CreditCodeProblem(f"统一社会信用代码校验位错误，请核对（The check character of {value} is wrong: the "
                                "code is mistyped）")
    return value


def party_label(person: Person, lang: str = "zh") -> str:
    """How cards name a signer: "乙方科技有限公司（王五 代签，公章）" for a company's signatory."""
    org = person.org
    if org is None:
        return person.name
    if lang == "zh":
        return f"{org.name}（{person.name} 代签{'，' + org.seal_kind if org.seal else ''}）"
    return f"{org.name} (signed by {person.name}{', ' + SEAL_KIND_EN.get(org.seal_kind, 'seal') if org.seal else ''})"


def sealing(people: list[Person]) -> list[Person]:
    """The signers whose organisation's seal is applied (one seal signature each)."""
    return [p for p in people if p.org is not None and p.org.seal]


def parse_party(inside: str) -> OrgParty | None:
    """The words in `@王五(乙方科技有限公司 公章)`: an organisation name and, optionally, a seal word.
    None when no organisation is named."""
    words = inside.split()
    kind = next((SEAL_WORDS[w.casefold() if w.isascii() else w] for w in words
                 if (w.casefold() if w.isascii() else w) in SEAL_WORDS), None)
    name = " ".join(w for w in words if (w.casefold() if w.isascii() else w) not in SEAL_WORDS).strip()
    if not name:
        return None
    return OrgParty(name=name, seal=kind is not None, seal_kind=kind or "公章")


def seal_refusal(provider: str, note: str = "") -> str:
    """Why a request with an organisation's seal cannot go to `provider` (refused at `prepare`,
    never silently signed as a person)."""
    why = f"：{note}" if note else ""
    return (f"签署服务 {provider} 无法加盖组织印章{why}；请改用 provider:local、provider:esign_cn 或 provider:fadada"
            f"（The provider {provider} cannot apply an organisation's seal{': ' + note if note else ''}; use "
            "provider:local, provider:esign_cn or provider:fadada）")
