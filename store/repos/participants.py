"""Who may see a request in the chat's search (`RequestParticipant`), and that search itself."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, or_, select

from store.db import committed
from store.repos.signing_records import title_has
from store.tables import RequestParticipant, SigningRequestRecord


def remember(engine: Engine, request_id: str, platform: str, people: dict[str, str]) -> None:
    """`people`: person id -> role (initiator | signer | cc). Idempotent."""
    for person_id, role in people.items():
        with Session(engine) as session:
            session.add(RequestParticipant(request_id=request_id, platform=platform, person_id=person_id, role=role))
            committed(session)


def search(engine: Engine, platform: str, person_id: str | None, words: str, limit: int = 10,
           tenant: str | None = None) -> list[SigningRequestRecord]:
    """Newest first: requests whose title holds every word, among those `person_id` takes part in
    (every request of the platform and tenant when `person_id` is None: an operator)."""
    query = select(SigningRequestRecord).where(SigningRequestRecord.chat_platform == platform)
    if tenant is not None:
        query = query.where(SigningRequestRecord.tenant == tenant)
    if person_id is not None:
        mine = select(RequestParticipant.request_id).where(RequestParticipant.platform == platform,
                                                           RequestParticipant.person_id == person_id)
        query = query.where(or_(col(SigningRequestRecord.request_id).in_(mine),
                                SigningRequestRecord.initiator_id == person_id))
    query = query.where(*title_has(words))
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(query.order_by(col(SigningRequestRecord.created_at).desc()).limit(limit)).all())


def open_with_signer(engine: Engine, platform: str, tenant: str, chat_id: str, signer_id: str,
                     limit: int = 5) -> list[SigningRequestRecord]:
    """Newest first: the requests of this chat still in progress that `signer_id` signs — where a
    chat command `/sign 替换 @李四 @赵六` looks for the request to change."""
    signs = select(RequestParticipant.request_id).where(RequestParticipant.platform == platform,
                                                        RequestParticipant.person_id == signer_id,
                                                        RequestParticipant.role == "signer")
    query = select(SigningRequestRecord).where(
        SigningRequestRecord.chat_platform == platform, SigningRequestRecord.tenant == tenant,
        SigningRequestRecord.chat_id == chat_id, SigningRequestRecord.status == "IN_PROGRESS",
        col(SigningRequestRecord.request_id).in_(signs))
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(query.order_by(col(SigningRequestRecord.created_at).desc()).limit(limit)).all())
