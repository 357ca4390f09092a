"""Organisation parties at `prepare`: each one named in a request must be registered; the party is
filled in from the organisations table (credit code, seal image, provider ids) so the provider
needs nothing else, and the flow gets who may approve the use of each seal."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from signbridge.core.models import OrgInfo, OrgParty, Person
from store.repos import organisations


class PartyProblem(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _registered(engine: Engine, party: OrgParty) -> tuple[OrgParty, OrgInfo] | None:
    """By the name the command used, or by the chat's org id read as a credit code."""
    row = organisations.by_name(engine, " ".join(party.name.split()))
    if row is None and party.id:
        row = organisations.get(engine, party.id.strip().upper())
    if row is None:
        return None
    filled = party.model_copy(update={"name": row.name, "credit_code": row.credit_code,
                                      "seal_image": row.seal_image_key,
                                      "provider_ids": organisations.provider_ids_of(row)})
    info = OrgInfo(name=row.name, credit_code=row.credit_code, requires_seal_approval=row.requires_seal_approval,
                   keepers=[Person(id=k.id, name=k.name) for k in organisations.keepers_of(row)])
    return filled, info


def resolve_parties(engine: Engine, groups: list[list[Person]]) -> tuple[list[list[Person]], list[OrgInfo]]:
    """Every signer with its organisation filled in, and the organisations; PartyProblem for an
    organisation nobody registered, or a seal applied without approval by someone who does not keep it."""
    infos: dict[str, OrgInfo] = {}
    out: list[list[Person]] = []
    for group in groups:
        row: list[Person] = []
        for person in group:
            if person.org is None:
                row.append(person)
                continue
            found = _registered(engine, person.org)
            if found is None:
                raise PartyProblem(f"组织「{person.org.name}」未登记，请管理员先用 signbridge orgs add 登记"
                                   f"（The organisation {person.org.name} is not registered: an administrator adds it "
                                   "with `signbridge orgs add`）")
            party, info = found
            keepers = {k.id for k in info.keepers}
            if party.seal and not info.requires_seal_approval and person.id not in keepers:
                raise PartyProblem(f"{person.name} 不是「{info.name}」的印章管理员，不能加盖其印章；"
                                   "请由印章管理员签署，或为该组织开启用印审批"
                                   f"（{person.name} does not keep the seal of {info.name}: a seal keeper must "
                                   "sign, or the organisation must require seal-use approval）")
            if party.seal and info.requires_seal_approval and not keepers:
                raise PartyProblem(f"「{info.name}」需要用印审批，但没有登记印章管理员（{info.name} requires seal-use "
                                   "approval but has no seal keepers: add them with `signbridge orgs keepers`）")
            infos[info.credit_code] = info
            row.append(person.model_copy(update={"org": party}))
        out.append(row)
    return out, list(infos.values())
