"""Chat calls and publishing the flow's state (DB status, audit events, the card).

Every outbound message goes through `_once` (`store.repos.sent_messages`): recorded in flight before
it is sent, confirmed after, and re-sent with the same key only after a pause when its outcome
is unknown. Texts are rendered here, in the chat's language (`signbridge.messages`); signing
links are read here from where `open_group` sealed them, so none passes through Temporal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.errors import connector_errors
from connectors.chat.base import ChatConnector, ChatError, InputProblem
from connectors.chat.directory import Departed
from signbridge.core import links, messages
from signbridge.core.cards import Lang, build_card, status_text
from signbridge.core.models import (
    ChatRef,
    ChatReplyInput,
    DocumentInfo,
    FileMessageInput,
    LinkMessageInput,
    Person,
    PublishInput,
    SignStatus,
    TextMessageInput,
)
from store.repos import documents, participants, sent_messages, signing_links, signing_records
from store.tables import SigningRequestRecord

SEND_UNCONFIRMED = "SendUnconfirmed"
DEPARTED = "departed"  # what `send_link` answers for a reminder to someone who left


class ChatActivities:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    @activity.defn(name="publish")
    async def publish(self, arg: PublishInput) -> None:
        """Database and audit first, the card last: when the chat is down the database still
        shows the flow's state (STUCK included), and a retry only repeats the card."""
        view = arg.view
        signing_records.publish(self.deps.engine, view.request_id, view.status.value, [
            {"request_id": a.request_id, "key": a.key, "action": a.action, "actor": a.actor, "detail": a.detail,
             "document_sha256": a.document_sha256} for a in arg.audits], snapshot=view.model_dump_json())
        if view.status.terminal:
            signing_links.forget(self.deps.engine, view.request_id)
        if view.bulk_id is not None:
            return  # a bulk send's row: the bulk's one card reports it, the group gets no card per row
        card = build_card(view, lang=self.deps.settings.language_for(view.chat.platform))
        with connector_errors():
            await self.deps.chat(view.chat.platform).upsert_card(view.chat, view.request_id, card)

    @activity.defn(name="send_link")
    async def send_link(self, arg: LinkMessageInput) -> str | None:
        """The signer's link, privately. A reminder first asks the chat's directory whether they
        still work here: someone who left gets nothing and the answer is `DEPARTED`, which the flow
        flags on the card (a departure no platform event announced is still found). Outsiders are
        never looked up; a directory that does not answer does not hold the reminder back."""
        if arg.reminder and not arg.to.external and await self._departed(arg.chat, arg.to):
            return DEPARTED
        url = arg.sign_url or self._stored_link(arg.request_id, arg.to.id)
        text = messages.link_message(arg.title, url, self.deps.settings.language_for(arg.chat.platform),
                                     reminder=arg.reminder)
        key = f"{arg.request_id}:{arg.key}"
        await self._once(arg.chat, key, lambda c: c.send_link(arg.chat, arg.to, text, url, key=key))
        return None

    async def _departed(self, chat: ChatRef, person: Person) -> bool:
        try:
            await self.deps.chat(chat.platform).resolve(chat, person)
        except Departed:
            return True
        except (InputProblem, ChatError) as e:
            activity.logger.info("directory check of %s skipped: %s", person.id, e)
        return False

    @activity.defn(name="send_text")
    async def send_text(self, arg: TextMessageInput) -> None:
        text = (messages.render(arg.kind, arg.params, self.deps.settings.language_for(arg.chat.platform))
                if arg.kind else arg.text)
        key = f"{arg.request_id}:{arg.key}"
        await self._once(arg.chat, key, lambda c: c.send_text(arg.chat, arg.to, text, key=key))

    @activity.defn(name="send_file")
    async def send_file(self, arg: FileMessageInput) -> None:
        """Every signed file to the chat (the first under the key older flows used), then each CC
        recipient privately."""
        files = arg.documents or [arg.document]
        for index, document in enumerate(files):
            url = links.file_url(self.deps.settings, document.blob_key, document.name)
            key = f"{arg.request_id}:signed-file" + (f":{index}" if index else "")
            await self._once(arg.chat, key, _file_sender(arg.chat, document, url, key))
        lang = self.deps.settings.language_for(arg.chat.platform)
        for person in arg.cc:
            lines = "\n".join(f"{d.name}: {links.file_url(self.deps.settings, d.blob_key, d.name)}" for d in files)
            text = messages.render("cc_copy", {"files": lines}, lang)
            key = f"{arg.request_id}:cc:{person.id}"
            await self._once(arg.chat, key, _text_sender(arg.chat, person, text, key))

    @activity.defn(name="chat_reply")
    async def chat_reply(self, arg: ChatReplyInput) -> None:
        """A private answer (`ChatReplyWorkflow`): the asker's matching requests, or the pause notice."""
        lang = self.deps.settings.language_for(arg.chat.platform)
        if arg.kind == "paused":
            text = messages.render("paused", {"reason": arg.reason}, lang)
        elif arg.kind == "notice":
            text = arg.reason
        else:
            found = participants.search(self.deps.engine, arg.chat.platform, None if arg.operator else arg.to.id,
                                        arg.words, tenant=arg.chat.tenant)
            rows = "\n".join(self._search_row(r, lang) for r in found)
            text = messages.render("search_results" if found else "search_empty",
                                   {"words": arg.words or "*", "rows": rows}, lang)
        key = f"reply:{arg.chat.source_event_id}"
        await self._once(arg.chat, key, _text_sender(arg.chat, arg.to, text, key))

    def _search_row(self, record: SigningRequestRecord, lang: Lang) -> str:
        """One line: title, state (in words), when, and the signed file's download link."""
        status = SignStatus(record.status) if record.status in SignStatus.__members__ else None
        state = status_text(status, lang) if status else record.status
        line = f"· {record.title} — {state} — {record.created_at:%Y-%m-%d}"
        if record.signed_sha256:
            name = documents.name_of(self.deps.engine, record.signed_sha256) or f"{record.title}.pdf"
            line += f" — {links.file_url(self.deps.settings, record.signed_sha256, name)}"
        return line

    def _stored_link(self, request_id: str, signer_id: str) -> str | None:
        sealed = signing_links.sealed_link(self.deps.engine, request_id, signer_id)
        return self.deps.vault.open(sealed) if sealed else None

    async def _once(self, chat: ChatRef, key: str, send: Callable[[ChatConnector], Awaitable[None]]) -> None:
        """Send unless `key` was delivered; after an attempt of unknown outcome, only after a pause."""
        engine, platform = self.deps.engine, chat.platform
        claim = sent_messages.claim(engine, platform, key, chat.chat_id, self.deps.settings.resend_pause)
        if claim.action == "skip":
            return
        if claim.action == "wait":
            raise ApplicationError(
                f"{key}: attempt {claim.attempt} got no answer in time and may have arrived; sending it again "
                f"with the same idempotency key in {claim.wait.total_seconds():.0f} s",
                type=SEND_UNCONFIRMED, next_retry_delay=claim.wait)
        with connector_errors():
            try:
                await send(self.deps.chat(platform))
            except ChatError as e:
                sent_messages.settle(engine, platform, key, None if getattr(e, "maybe_delivered", False) else False)
                raise
        sent_messages.settle(engine, platform, key, True)


Send = Callable[[ChatConnector], Awaitable[None]]


def _file_sender(chat: ChatRef, document: DocumentInfo, url: str, key: str) -> Send:
    return lambda c: c.send_file(chat, document.name, url, document, key=key)


def _text_sender(chat: ChatRef, to: Person, text: str, key: str) -> Send:
    return lambda c: c.send_text(chat, to, text, key=key)
