"""Chat calls and publishing the flow's state (DB status, audit events, the card)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from temporalio import activity

from activities.deps import Deps
from activities.errors import connector_errors
from connectors.chat.base import ChatConnector
from signbridge.core import links
from signbridge.core.cards import build_card
from signbridge.core.models import ChatRef, FileMessageInput, LinkMessageInput, PublishInput, TextMessageInput
from store.repos import signing_records
from store.tables import SentMessage


class ChatActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name="publish")
    async def publish(self, arg: PublishInput) -> None:
        view = arg.view
        signing_records.publish(self.deps.engine, view.request_id, view.status.value, [
            {"request_id": a.request_id, "key": a.key, "action": a.action, "actor": a.actor, "detail": a.detail,
             "document_sha256": a.document_sha256} for a in arg.audits])
        card = build_card(view, lang=self.deps.settings.language_for(view.chat.platform))
        with connector_errors():
            await self.deps.chat(view.chat.platform).upsert_card(view.chat, view.request_id, card)

    @activity.defn(name="send_link")
    async def send_link(self, arg: LinkMessageInput) -> None:
        text = link_text(arg, self.deps.settings.language_for(arg.chat.platform))
        key = f"{arg.request_id}:{arg.key}"
        await self._once(arg.chat, key, lambda c: c.send_link(arg.chat, arg.to, text, arg.sign_url, key=key))

    @activity.defn(name="send_text")
    async def send_text(self, arg: TextMessageInput) -> None:
        key = f"{arg.request_id}:{arg.key}"
        await self._once(arg.chat, key, lambda c: c.send_text(arg.chat, arg.to, arg.text, key=key))

    @activity.defn(name="send_file")
    async def send_file(self, arg: FileMessageInput) -> None:
        url = links.file_url(self.deps.settings, arg.document.blob_key, arg.document.name)
        key = f"{arg.request_id}:signed-file"
        await self._once(arg.chat, key, lambda c: c.send_file(arg.chat, arg.document.name, url, arg.document, key=key))

    async def _once(self, chat: ChatRef, key: str, send: Callable[[ChatConnector], Awaitable[None]]) -> None:
        """Send unless `key` was delivered before; record it after a delivery that succeeded."""
        with Session(self.deps.engine) as session:
            if session.exec(select(SentMessage).where(SentMessage.platform == chat.platform,
                                                      SentMessage.key == key)).first() is not None:
                return
        with connector_errors():
            await send(self.deps.chat(chat.platform))
        with Session(self.deps.engine) as session:
            session.add(SentMessage(platform=chat.platform, key=key, chat_id=chat.chat_id))
            try:
                session.commit()
            except IntegrityError:  # a concurrent attempt recorded it first
                session.rollback()


def link_text(arg: LinkMessageInput, lang: str) -> str:
    """The DM that carries a signing link, in the platform's language (Chinese with English, or English)."""
    if lang == "en":
        prefix = "Reminder: " if arg.reminder else ""
        if arg.sign_url:
            return f"{prefix}please sign “{arg.title}”: {arg.sign_url}"
        return f"{prefix}please sign “{arg.title}”; the e-signature provider has sent you the invitation"
    prefix = "提醒：" if arg.reminder else ""
    if arg.sign_url:
        english = f"{'Reminder: ' if arg.reminder else ''}please sign “{arg.title}”"
        return f"{prefix}请签署「{arg.title}」：{arg.sign_url}（{english}）"
    return (f"{prefix}请签署「{arg.title}」，签署邀请已由签署服务发送"
            f"（please sign “{arg.title}”; the provider has sent you the invitation）")
