"""Chat calls and publishing the flow's state (DB status, audit events, the card).

Every outbound message goes through `once` (`store.repos.sent_messages`): recorded in flight before
it is sent, confirmed after, and re-sent with the same key only after a pause when its outcome
is unknown. Texts are rendered here, in the chat's language (`signbridge.messages`); signing
links are read here from where `open_group` sealed them, so none passes through Temporal.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any, Literal

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.deps import Deps
from activities.errors import connector_errors
from connectors.chat.base import ChatConnector, ChatError, ChatRejected, InputProblem, OutboundFile
from connectors.chat.directory import Departed
from connectors.notify.base import Notice, NotifyError
from connectors.notify.registry import Route, copy_notice, link_notice
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
    StatusView,
    TextMessageInput,
)
from store import audit
from store.repos import documents, participants, sent_messages, signing_links, signing_records
from store.tables import SigningRequestRecord

SEND_UNCONFIRMED = "SendUnconfirmed"
log = logging.getLogger(__name__)
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
        if view.bulk_id is not None or not view.chat.chat_id:
            # a bulk send's row: the bulk's one card reports it, the group gets no card per row; an
            # approval whose initiator is unknown yet has no chat to show a card in
            return
        card = build_card(view, lang=self.deps.settings.language_for(view.chat.platform), reached=self._reached(view))
        with connector_errors():
            await self.deps.chat(view.chat.platform).upsert_card(view.chat, view.request_id, card)

    def _reached(self, view: StatusView) -> dict[str, tuple[str, str]]:
        """How each external signer whose link went out was reached: signer id → (channel, masked
        address), by the same rule `send_link` follows."""
        reached: dict[str, tuple[str, str]] = {}
        for s in view.signers:
            if s.person.external and s.status != "waiting":
                route = self.deps.notifier.route(s.person.email, s.person.mobile)
                if route is not None:
                    reached[s.person.id] = (route.channel, route.masked)
        return reached

    async def _notify(self, request_id: str, key: str, route: Route, notice: Notice, action: str,
                      detail: dict[str, Any]) -> None:
        """One SMS or email (an external signer's link, their copy), sent once per key like every
        chat message, and recorded in the audit trail once it went out."""
        engine, namespace = self.deps.engine, f"notify:{route.channel}"
        full_key = f"{request_id}:{key}"
        claim = sent_messages.claim(engine, namespace, full_key, route.masked, self.deps.settings.resend_pause)
        if claim.action == "skip":
            return
        if claim.action == "wait":
            raise ApplicationError(
                f"{full_key}: attempt {claim.attempt} got no answer in time and may have arrived; sending it again "
                f"in {claim.wait.total_seconds():.0f} s", type=SEND_UNCONFIRMED, next_retry_delay=claim.wait)
        try:
            await route.sender.send(route.to, notice, key=full_key)
        except NotifyError as e:
            sent_messages.settle(engine, namespace, full_key, None if e.maybe_delivered else False)
            how = "SMS" if route.channel == "sms" else "email"
            wait = timedelta(seconds=e.retry_after) if e.retry_after else None
            raise ApplicationError(f"the {how} to {route.masked} did not go out: {e.message}",
                                   type="NotifyFailed", next_retry_delay=wait) from e
        sent_messages.settle(engine, namespace, full_key, True)
        audit.record(engine, request_id=request_id, key=f"{action}:{key}", action=action, actor="system",
                     detail={**detail, "channel": route.channel})

    @activity.defn(name="send_link")
    async def send_link(self, arg: LinkMessageInput) -> str | None:
        """The signer's link, privately. A reminder first asks the chat's directory whether they
        still work here: someone who left gets nothing and the answer is `DEPARTED`, which the flow
        flags on the card (a departure no platform event announced is still found). Outsiders are
        never looked up; a directory that does not answer does not hold the reminder back."""
        if arg.reminder and not arg.to.external and await self._departed(arg.chat, arg.to):
            return DEPARTED
        url = arg.sign_url or self._stored_link(arg.request_id, arg.to.id)
        if arg.to.external and url and (route := self.deps.notifier.route(arg.to.email, arg.to.mobile)):
            await self._notify(arg.request_id, arg.key, route, link_notice(arg.to.name, arg.title, url,
                                                                           reminder=arg.reminder),
                               "signer.link_sent", {"signer": arg.to.id, "sent_to": route.masked,
                                                    "reminder": arg.reminder})
            return None
        text = messages.link_message(arg.title, url, self.deps.settings.language_for(arg.chat.platform),
                                     reminder=arg.reminder)
        key = f"{arg.request_id}:{arg.key}"
        await self.once(arg.chat, key, lambda c: c.send_link(arg.chat, arg.to, text, url, key=key))
        # For the certificate of completion: when each signer was sent their link (and reminded).
        audit.record(self.deps.engine, request_id=arg.request_id, key=f"sent:{arg.key}", action="signer.link_sent",
                     actor="system", detail={"signer": arg.to.id, "reminder": arg.reminder,
                                             "via": arg.chat.platform})
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
        await self.once(arg.chat, key, lambda c: c.send_text(arg.chat, arg.to, text, key=key))

    @activity.defn(name="send_file")
    async def send_file(self, arg: FileMessageInput) -> None:
        """Every signed file into the chat as a real file (the first under the key older flows used),
        then the certificate of completion; then each CC recipient privately: a line saying what it
        is, and the same files. A file over the platform's upload limit goes as its download link,
        with the reason."""
        files = arg.documents or [arg.document]
        for index, document in enumerate(files):
            key = f"{arg.request_id}:signed-file" + (f":{index}" if index else "")
            await self._deliver(arg.chat, None, document, key, "signed")
        if arg.certificate is not None:
            await self._deliver(arg.chat, None, arg.certificate, f"{arg.request_id}:certificate", "certificate")
        lang = self.deps.settings.language_for(arg.chat.platform)
        title = self._title(arg.request_id) or files[0].name
        for person in arg.cc:
            key = f"{arg.request_id}:cc:{person.id}"
            await self.once(arg.chat, key, _text_sender(arg.chat, person, messages.render(
                "cc_files", {"title": title}, lang), key))
            for index, document in enumerate(files):
                await self._deliver(arg.chat, person, document, f"{key}:file:{index}", "signed")
            if arg.certificate is not None:
                await self._deliver(arg.chat, person, arg.certificate, f"{key}:certificate", "certificate")
        shared = [*files, *([arg.certificate] if arg.certificate else [])]
        links_ = [(d.name, links.file_url(self.deps.settings, d.blob_key, d.name)) for d in shared]
        for person in arg.email_copies:
            route = self.deps.notifier.route(person.email, None)
            if route is None:  # no email service: the initiator forwards it from the chat
                activity.logger.info("no email service for %s's copy of %s", person.id, arg.request_id)
                continue
            await self._notify(arg.request_id, f"email-copy:{person.id}", route,
                               copy_notice(person.name, title, links_), "signer.copy_sent",
                               {"signer": person.id, "sent_to": route.masked})

    def _title(self, request_id: str) -> str | None:
        record = signing_records.get(self.deps.engine, request_id)
        return record.title if record is not None else None

    async def _deliver(self, chat: ChatRef, to: Person | None, document: DocumentInfo, key: str,
                       kind: Literal["signed", "certificate"]) -> None:
        """One file, once per `key`: uploaded when the platform takes files of its size, else its
        signed download link and why (read from the blob store only when it is really sent)."""
        settings = self.deps.settings

        async def send(connector: ChatConnector) -> None:
            url = links.file_url(settings, document.blob_key, document.name)
            limit = connector.max_file_bytes
            data = self.deps.blobs.get(document.blob_key) if limit and document.size <= limit else None
            note = None
            if limit and (data is None or len(data) > limit):
                data = None
                note = messages.file_too_large(chat.platform, limit, settings.language_for(chat.platform))
            file = OutboundFile(name=document.name, sha256=document.sha256,
                                size=len(data) if data is not None else document.size, url=url, data=data,
                                note=note, kind=kind)
            try:
                await connector.send_file(chat, to, file, key=key)
            except ChatRejected as e:
                if file.data is None:
                    raise
                # The platform refused this upload for good (its type, its size by another count, a
                # missing scope): the file still reaches people, as its link with the reason.
                log.warning("%s refused the upload of %s (%s); sending its link instead", chat.platform, key, e)
                refused = messages.upload_refused(chat.platform, settings.language_for(chat.platform))
                await connector.send_file(chat, to, replace(file, data=None, note=refused), key=key)

        await self.once(chat, key, send)

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
        await self.once(arg.chat, key, _text_sender(arg.chat, arg.to, text, key))

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

    async def once(self, chat: ChatRef, key: str, send: Callable[[ChatConnector], Awaitable[None]]) -> None:
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


def _text_sender(chat: ChatRef, to: Person, text: str, key: str) -> Send:
    return lambda c: c.send_text(chat, to, text, key=key)
