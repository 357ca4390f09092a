"""`Intake`: chat messages and buttons (and REST requests, and operator commands) → Temporal."""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.engine import Engine
from temporalio.client import Client, WorkflowExecution

from connectors.chat.callback import Rules
from signbridge.core import commands, options
from signbridge.core.approvals import approval_event_id
from signbridge.core.chat import (
    ACTIONS,
    QUERIES,
    ApprovalEvent,
    Busy,
    ChatAction,
    ChatEvent,
    Deadline,
    Departure,
    FileRef,
    Ignored,
    NotFound,
    Outcome,
    Refused,
    request_id_for,
)
from signbridge.core.models import (
    ActionInput,
    Actor,
    ApprovalRef,
    BulkSendInput,
    BulkView,
    ChatRef,
    ChatReplyInput,
    DocumentSource,
    Person,
    SigningRequest,
    TemplateUse,
    Timing,
)
from signbridge.core.settings import Settings
from signbridge.intake import bulk, temporal_calls
from signbridge.intake.pause import PauseSwitch
from store.repos import approval_mappings, chat_files, identities, participants
from store.tables import utcnow

FALLBACK_TITLE = {"zh": "签署请求 (signing request)", "en": "Signing request"}
REST = Deadline(accept=10.0, result=25.0)  # a REST client or the CLI can wait longer than a chat platform
log = logging.getLogger(__name__)


def _as_party(mentioned: Person, parsed: Person) -> Person:
    """The mention as the platform sent it, with the organisation the command gave it
    (`@王五(乙方科技有限公司 公章)`) — or the one the mention itself carried (the webhook IM's `org`)."""
    org = parsed.org or mentioned.org
    return mentioned.model_copy(update={"org": org}) if org is not None else mentioned


def _as_mentioned(mentioned: Person | None, parsed: Person) -> Person:
    """The person as the platform mentioned them (real name, external flag), with the contacts the
    command wrote after the mention (`@王总 13812341234`); someone named only with a contact
    (`王总:13812341234`) is no mention and stays as parsed."""
    if mentioned is None:
        return parsed
    return mentioned.model_copy(update={"email": parsed.email or mentioned.email,
                                        "mobile": parsed.mobile or mentioned.mobile})


class Intake:
    def __init__(self, client: Client, settings: Settings, engine: Engine) -> None:
        self.client = client
        self.settings = settings
        self.engine = engine
        self.pause = PauseSwitch(engine, settings.pause_check_seconds)
        self._writing: set[asyncio.Future[None]] = set()  # files being kept (`_remember_files`)
        # One thread of its own: SQLite takes one writer at a time anyway, and writes waiting for the
        # database lock (several API processes, one SQLite file) must not fill asyncio's default
        # executor, which other awaits on the callback path use.
        self._file_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-files")

    async def handle(self, received: ChatEvent | ChatAction | ApprovalEvent | Departure, rules: Rules) -> Outcome:
        """What a platform's callback (or long-connection event) carried, within its deadline."""
        if isinstance(received, ChatEvent):
            return await self.start_from_command(received, rules)
        if isinstance(received, ApprovalEvent):
            return await self.start_from_approval(received, rules)
        if isinstance(received, Departure):
            return await self.departed(received, rules.deadline)
        return await self.apply_action(received, rules.deadline)

    async def departed(self, news: Departure, deadline: Deadline = REST) -> Outcome:
        """People who left: marked so in the directory cache (no new request can name them) and
        flagged on each open flow of that platform and tenant still waiting for them (signal
        `signer_departed`: the card offers "replace signer"). Temporal out of reach: `Busy`, and the
        platform delivers the event again."""
        for user_id in news.user_ids:
            identities.mark_departed(self.engine, news.platform, news.tenant, user_id)
        flagged = await temporal_calls.signal_departed(self.client, news.platform, news.tenant, news.user_ids,
                                                       deadline.accept + deadline.result)
        if isinstance(flagged, Busy):
            return flagged
        return Ignored(f"departure: {flagged} open requests flagged")

    # ---- messages ------------------------------------------------------------------------------

    async def start_from_command(self, event: ChatEvent, rules: Rules) -> Outcome:
        """A message: its files are kept for later commands; a sign command starts a flow, with the
        problem set when it cannot go ahead (the flow says why in the chat and ends REJECTED).

        Keeping the files is a database write (with SQLite, a commit that waits for the disk). It
        runs in a thread and the answer does not wait for it: on the event loop it stalled every
        callback in flight for the length of an fsync, and awaited it still put one fsync into
        each callback's latency (docs/benchmarks.md section 1). A command needs only its own files,
        which it carries; a later command that looks files up waits for the writes still running
        in this process first (`settled`). A message that is not a command is acknowledged only
        once its files are kept: the record is then the only place they live, and a crash right
        after the acknowledgement must not lose them (the platform would not send them again)."""
        writing = self._remember_files(event)
        bot = event.bot_name or self.settings.bot_name or commands.DEFAULT_BOT_NAME
        words = options.search_words(event.text, bot)
        if words is not None:
            return await self._reply(event, rules, kind="search", words=words)
        by_id = {m.person.id: m.person for m in event.mentions}
        try:
            replacing = commands.replacement(event.text, [m.as_typed for m in event.mentions], bot_name=bot)
        except commands.CommandProblem as e:
            return await self._reply(event, rules, kind="notice", reason=e.message)
        if replacing is not None:
            old, new = replacing
            return await self._replace(event, rules, _as_mentioned(by_id.get(old.id), old),
                                       _as_mentioned(by_id.get(new.id), new))
        problem = event.problem
        try:
            parsed = commands.parse(event.text, [m.as_typed for m in event.mentions], bot_name=bot)
        except commands.CommandProblem as e:
            parsed, problem = None, problem or e.message
        if parsed is None and problem is None:
            if writing is not None:
                await asyncio.shield(writing)  # kept for a later command before the platform hears "done"
            return Ignored("not a command")
        if (reason := await self.pause.current()) is not None:
            return await self._reply(event, rules, kind="paused", reason=reason)
        if parsed is not None and parsed.bulk:
            return await self._bulk_from_command(event, parsed, problem, rules)
        template = parsed.template if parsed else None
        if not event.files:
            await self.settled()  # a file message just before this command is looked up below
        documents, named = (([DocumentSource(name=f.name, url=f.url, sha256=f.sha256) for f in event.files], True)
                            if template else self._documents(event, rules))
        if problem is None and not documents and not template:
            problem = rules.no_file
        title = (parsed.title if parsed else None) or template or (documents[0].name if named else None) \
            or FALLBACK_TITLE[self.settings.language_for(event.platform)]
        req = SigningRequest(
            request_id=request_id_for(event.platform, event.tenant, event.event_id),
            title=title,
            initiator=self._named(event.sender, event.platform, event.tenant),
            chat=ChatRef(platform=event.platform, tenant=event.tenant, chat_id=event.chat_id,
                         chat_kind=event.chat_kind, source_event_id=event.event_id),
            documents=documents,
            groups=[[_as_party(_as_mentioned(by_id.get(p.id), p), p) for p in group] for group in parsed.groups]
            if parsed else [],
            provider=(parsed.provider if parsed else None) or self.settings.default_provider,
            timing=self._timing(parsed),
            problem=problem,
            template=TemplateUse(name=template, fields=parsed.fields) if parsed and template else None,
            roles={role: p.id for role, p in parsed.roles.items()} if parsed else {},
            cc=[_as_mentioned(by_id.get(p.id), p) for p in parsed.cc] if parsed else [],
        )
        return await temporal_calls.start(self.client, req, self.settings.task_queue, rules.deadline.accept)

    # ---- approvals -------------------------------------------------------------------------------

    async def start_from_approval(self, event: ApprovalEvent, rules: Rules) -> Outcome:
        """An approval that passed becomes one flow, named after the approval instance (a redelivered
        or repeated event is `Duplicate`). The platforms' events name a definition: unmapped ones
        are none of SignBridge's business (`Ignored`, logged); a mapped one starts a flow that reads
        the instance first. The webhook IM's event carries its documents and signers itself."""
        if event.revoked:
            return await self._revoke(event, rules)
        if not event.approved:
            log.info("approval %s of %s is %s: nothing to sign", event.instance_id, event.platform, event.status)
            return Ignored(f"approval {event.instance_id} is {event.status or 'pending'}, "
                           "not approved: nothing to sign")
        source = approval_event_id(event.instance_id)
        initiator = self._named(event.initiator, event.platform, event.tenant)
        ref = ApprovalRef(platform=event.platform, tenant=event.tenant, instance_id=event.instance_id,
                          definition=event.definition, initiator_id=initiator.id, title=event.title,
                          self_contained=event.self_contained)
        problem: str | None = None
        documents: list[DocumentSource] = []
        groups: list[list[Person]] = []
        provider = self.settings.default_provider
        if event.self_contained:
            chat = ChatRef(platform=event.platform, tenant=event.tenant, chat_id=event.chat_id or initiator.id,
                           chat_kind=event.chat_kind if event.chat_id else "direct", source_event_id=source)
            documents = [DocumentSource(name=f.name, url=f.url, sha256=f.sha256) for f in event.files]
            by_id = {m.person.id: m.person for m in event.mentions}
            try:
                parsed = commands.parse(f"/sign {event.text}", [m.as_typed for m in event.mentions])
            except commands.CommandProblem as e:
                parsed, problem = None, e.message
            if parsed is not None:
                groups = [[by_id.get(p.id, p) for p in group] for group in parsed.groups]
                provider = parsed.provider or provider
            if problem is None and not documents:
                problem = "审批没有附带要签署的文件（The approval carries no document to sign）"
        else:
            mapping = approval_mappings.find(self.engine, event.platform, event.tenant, event.definition)
            if mapping is None:
                log.info("approval %s of %s definition %r: not mapped to signing", event.instance_id, event.platform,
                         event.definition)
                return Ignored(f"approval definition {event.definition!r} is not mapped to signing "
                               "(signbridge approvals map)")
            ref = ref.model_copy(update={
                "document_fields": [f.strip() for f in mapping.document_fields.split(",") if f.strip()],
                "signer_field": mapping.signer_field, "counterparty_field": mapping.counterparty_field,
                "counterparty_first": mapping.counterparty_first})
            # No chat configured: the initiator's, once known (Feishu's event does not name them: the
            # flow learns them from the instance).
            chat = ChatRef(platform=event.platform, tenant=event.tenant, chat_id=mapping.chat_id or initiator.id,
                           chat_kind="group" if mapping.chat_id else "direct", source_event_id=source)
            provider = mapping.provider or provider
        if (reason := await self.pause.current()) is not None:
            arg = ChatReplyInput(chat=chat, to=initiator, kind="paused", reason=reason)
            return await temporal_calls.start_reply(self.client, arg, f"reply:{event.platform}:{event.tenant}:"
                                                    f"{source}", self.settings.task_queue, rules.deadline.accept)
        req = SigningRequest(
            request_id=request_id_for(event.platform, event.tenant, source),
            title=event.title or (documents[0].name if documents else "")
            or FALLBACK_TITLE[self.settings.language_for(event.platform)],
            initiator=initiator, chat=chat, documents=documents, groups=groups, provider=provider,
            timing=self.settings.timing(), problem=problem, approval=ref)
        return await temporal_calls.start(self.client, req, self.settings.task_queue, rules.deadline.accept)

    async def _revoke(self, event: ApprovalEvent, rules: Rules) -> Outcome:
        """The approval was taken back: the flow it started is cancelled (as an operator would), once
        per status change; no flow (never mapped, never approved) is nothing to do."""
        request_id = request_id_for(event.platform, event.tenant, approval_event_id(event.instance_id))
        action = ChatAction(request_id=request_id, name="cancel",
                            actor=Actor(id=f"approval:{event.instance_id}", name="审批撤销 (approval revoked)",
                                        is_operator=True),
                            update_id=f"approval-revoked:{event.instance_id}:{event.status}",
                            reason=f"审批已撤销（{event.status}）（The approval was revoked: {event.status}）",
                            platform=event.platform, tenant=event.tenant)
        outcome = await self.apply_action(action, rules.deadline)
        if isinstance(outcome, NotFound) and not outcome.ended:
            return Ignored(f"approval {event.instance_id} is {event.status}: no signing flow to cancel")
        return outcome
    async def _bulk_from_command(self, event: ChatEvent, parsed: commands.ParsedCommand, problem: str | None,
                                 rules: Rules) -> Outcome:
        """`/sign 批量 模板:…` with a CSV: a `BulkSendWorkflow` (id from the event, so a redelivery is a no-op)."""
        if not event.files:
            await self.settled()
        files, _ = (bulk.sources(event.files), True) if event.files else self._documents(event, rules)
        arg = bulk.from_command(event, parsed, self.settings, problem,
                                self._named(event.sender, event.platform, event.tenant), files)
        return await self.start_bulk(arg, rules.deadline)

    async def start_bulk(self, arg: BulkSendInput, deadline: Deadline = REST) -> Outcome:
        """Start a bulk send once: `Started`, `Duplicate` (the same bulk id) or `Busy`."""
        return await temporal_calls.start_bulk_send(self.client, arg, self.settings.task_queue, deadline.accept)

    async def bulk_progress(self, bulk_id: str, within: float = REST.accept) -> BulkView | Outcome:
        return await temporal_calls.bulk_progress(self.client, bulk_id, within)

    def _timing(self, parsed: commands.ParsedCommand | None) -> Timing:
        """The installation's timing with the command's `期限:` and `提醒:`."""
        timing = self.settings.timing()
        if parsed and parsed.deadline:
            timing.deadline = parsed.deadline
        if parsed and parsed.reminders is False:
            timing.reminder_max = 0
        return timing

    async def _reply(self, event: ChatEvent, rules: Rules, *, kind: str, words: str = "", reason: str = "") -> Outcome:
        """A private answer (`ChatReplyWorkflow`) instead of a signing: search results, or the pause."""
        asker = self._named(event.sender, event.platform, event.tenant)
        arg = ChatReplyInput(chat=ChatRef(platform=event.platform, tenant=event.tenant, chat_id=event.chat_id,
                                          chat_kind=event.chat_kind, source_event_id=event.event_id),
                             to=asker, kind=kind, words=words, reason=reason,  # type: ignore[arg-type]
                             operator=asker.id in self.settings.operator_list)
        return await temporal_calls.start_reply(self.client, arg, f"reply:{event.platform}:{event.tenant}:"
                                                f"{event.event_id}", self.settings.task_queue, rules.deadline.accept)

    async def _replace(self, event: ChatEvent, rules: Rules, old: Person, new: Person) -> Outcome:
        """`/sign 替换 @李四 @赵六`: the `replace` update on the newest open request of this chat that
        李四 signs, as the sender (the flow's validator decides whether they may). What did nothing
        is said to the sender privately; what went through shows on the card."""
        found = participants.open_with_signer(self.engine, event.platform, event.tenant, event.chat_id, old.id)
        if not found:
            return await self._reply(event, rules, kind="notice", reason=(
                f"本群没有等待 {old.name} 签署的请求（No open request in this chat waits for {old.name}）"))
        outcome = await self.apply_action(ChatAction(
            request_id=found[0].request_id, name="replace", actor=Actor(id=event.sender.id, name=event.sender.name),
            update_id=f"replace:{event.event_id}", signer_ids=(old.id,), replacement=new, platform=event.platform,
            tenant=event.tenant), rules.deadline)
        if isinstance(outcome, Refused | NotFound):
            why = f"{outcome.zh}（{outcome.en}）" if isinstance(outcome, Refused) else \
                "该签署请求已结束（The request has ended）"
            return await self._reply(event, rules, kind="notice", reason=f"无法替换 {old.name}：{why}")
        return outcome

    async def start_request(self, req: SigningRequest, deadline: Deadline = REST) -> Outcome:
        """A request built elsewhere (the REST API): the same start, the same outcomes."""
        return await temporal_calls.start(self.client, req, self.settings.task_queue, deadline.accept)

    def _remember_files(self, event: ChatEvent) -> asyncio.Future[None] | None:
        """The message's files stored for later commands, in a thread (see `start_from_command`)."""
        if not event.files:
            return None
        write = asyncio.get_running_loop().run_in_executor(self._file_writer, functools.partial(
            chat_files.remember, self.engine, platform=event.platform, tenant=event.tenant, chat_id=event.chat_id,
            sender_id=event.sender.id, message_id=event.message,
            files=[chat_files.Posted(f.name, f.url, f.sha256) for f in event.files]))
        self._writing.add(write)
        write.add_done_callback(self._written)
        return write

    def _written(self, write: asyncio.Future[None]) -> None:
        self._writing.discard(write)
        if not write.cancelled() and (error := write.exception()) is not None:
            # The flow is unaffected (it carries its files); a later command naming none finds fewer.
            log.error("could not keep a chat message's files for later commands: %s", type(error).__name__)

    async def settled(self) -> None:
        """Every file write this process started is done: before files are looked up, and at shutdown."""
        if self._writing:
            await asyncio.gather(*list(self._writing), return_exceptions=True)

    def _documents(self, event: ChatEvent, rules: Rules) -> tuple[list[DocumentSource], bool]:
        """The files of the message, else of the message it replies to, else the sender's latest
        ones in this chat, else what the platform can still find. `named`: the first file's name
        is a real one (a fallback's is a placeholder, not a title)."""
        def sources(files: tuple[FileRef, ...] | list[chat_files.Posted]) -> list[DocumentSource]:
            return [DocumentSource(name=f.name, url=f.url, sha256=f.sha256) for f in files]

        where = {"platform": event.platform, "tenant": event.tenant, "chat_id": event.chat_id}
        found = sources(event.files)
        if not found and event.reply_to:
            found = sources(chat_files.in_message(self.engine, **where, message_id=event.reply_to))
            if not found:
                return sources(rules.fallback_files(event)), False
        if not found:
            found = sources(chat_files.latest(self.engine, **where, sender_id=event.sender.id,
                                              since=utcnow() - rules.file_lookback))
        if not found:
            return sources(rules.fallback_files(event)), False
        return found, True

    def _named(self, person: Person, platform: str, tenant: str) -> Person:
        """Events often carry ids only: a name we learned from the directory makes cards readable."""
        if person.name and person.name != person.id:
            return person
        name = identities.name_of(self.engine, platform, tenant, person.id) if platform else ""
        return person.model_copy(update={"name": name or person.name or person.id})

    # ---- buttons and operator actions -------------------------------------------------------------

    async def apply_action(self, action: ChatAction, deadline: Deadline = REST) -> Outcome:
        """The update `action.name` (or the status query for `status`) within `deadline`."""
        if action.name in QUERIES:
            return await temporal_calls.query_status(self.client, action.request_id, deadline.accept + deadline.result)
        if action.name not in ACTIONS:
            return Refused("unknown_action", "无法识别的操作",
                           f"Unknown action {action.name!r}; expected one of {', '.join(ACTIONS)}")
        if action.name == "replace" and (action.replacement is None or len(action.signer_ids) != 1):
            return Refused("InvalidArgument", "请指定要替换的签署人和新的签署人",
                           "Name the signer to replace and the person who signs instead")
        actor = self._actor(action)
        arg = ActionInput(actor=actor, reason=action.reason, signer_ids=list(action.signer_ids),
                          replacement=action.replacement)
        return await temporal_calls.update(self.client, action.request_id, action.name, arg, action.update_id,
                                           deadline)

    async def listing(self, query: str, limit: int, within: float = REST.accept) -> list[WorkflowExecution] | Busy:
        """The flows a visibility query finds (newest first), at most `limit`."""
        return await temporal_calls.listing(self.client, query, limit, within)

    async def status(self, request_id: str, within: float = REST.accept) -> Outcome:
        return await temporal_calls.query_status(self.client, request_id, within)

    def _actor(self, action: ChatAction) -> Actor:
        actor = action.actor
        named = self._named(Person(id=actor.id, name=actor.name), action.platform, action.tenant).name
        return actor.model_copy(update={"name": named,
                                        "is_operator": actor.is_operator or actor.id in self.settings.operator_list})

