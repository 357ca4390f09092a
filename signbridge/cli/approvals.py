"""`signbridge approvals map|list|remove`: which approval definitions start signing.

An approval that passes in Feishu, DingTalk or WeCom becomes a signing request only when its
definition is mapped here (stored in the database, so every API process sees it at once): which
form fields hold the document(s), the internal signers (a contact field) and the counterparties
(a text field, `名称 email-or-mobile` per line), and which chat gets the card (none: the
initiator privately). The webhook IM's `approval.approved` carries all that itself.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.table import Table

from signbridge.cli.documents import _ready_engine
from signbridge.cli.ops import _fail, _out
from signbridge.core.settings import Settings
from store.repos import approval_mappings
from store.tables import ApprovalMapping

PLATFORMS = ("feishu", "dingtalk", "wecom")

approvals_app = typer.Typer(help="Approval definitions whose passed approvals become signing requests.",
                            no_args_is_help=True)


def _platform(platform: str) -> str:
    if platform not in PLATFORMS:
        raise _fail(f"approvals come from {', '.join(PLATFORMS)}, not {platform!r} (the webhook IM's "
                    "approval.approved needs no mapping)")
    return platform


@approvals_app.command("map")
def map_definition(
    platform: Annotated[str, typer.Argument(help="feishu, dingtalk or wecom")],
    definition: Annotated[str, typer.Argument(
        help="Feishu approval_code, DingTalk processCode or WeCom template_id")],
    document: Annotated[list[str], typer.Option(
        "--document", help="form field holding the document(s), by label, id or custom id (repeatable)")],
    signers: Annotated[str, typer.Option("--signers", help="contact field naming the internal signers")] = "",
    counterparty: Annotated[str, typer.Option(
        "--counterparty", help="text field naming external signers: `名称 email-or-mobile`, one per line")] = "",
    counterparty_first: Annotated[bool, typer.Option(
        "--counterparty-first", help="the counterparties sign before the internal signers")] = False,
    chat: Annotated[str, typer.Option("--chat", help="group chat for the card (empty: the initiator privately)")] = "",
    tenant: Annotated[str, typer.Option("--tenant", help="only this tenant (corp); empty: every tenant")] = "",
    provider: Annotated[str, typer.Option("--provider", help="e-signature provider (empty: the default)")] = "",
    subscribe: Annotated[bool, typer.Option(
        help="subscribe the app to the definition's events where the platform needs it (Feishu)")] = True,
) -> None:
    """Map DEFINITION: its approved instances become signing requests (replaces an older mapping)."""
    fields = [f.strip() for f in document if f.strip()]
    if not fields:
        raise _fail("--document must name the field that holds the document")
    if any("," in f for f in fields):
        raise _fail("a field name may not contain a comma; repeat --document for several fields")
    if not (signers.strip() or counterparty.strip()):
        raise _fail("name the signers' field (--signers) or the counterparties' field (--counterparty), or both")
    settings, engine = _ready_engine()
    row = approval_mappings.save(engine, ApprovalMapping(
        platform=_platform(platform), tenant=tenant.strip(), definition=definition.strip(),
        document_fields=",".join(fields), signer_field=signers.strip(), counterparty_field=counterparty.strip(),
        counterparty_first=counterparty_first, chat_id=chat.strip(), provider=provider.strip()))
    where = f"chat {row.chat_id}" if row.chat_id else "the initiator, privately"
    _out().print(f"mapped {row.platform} approval [bold]{row.definition}[/]: documents from "
                 f"{', '.join(fields)}; signers from {row.signer_field or '-'}; counterparties from "
                 f"{row.counterparty_field or '-'}; card to {where}")
    if subscribe:
        _subscribe(settings, row.platform, row.definition)


def _subscribe(settings: Settings, platform: str, definition: str) -> None:
    """Feishu sends approval events only for subscribed definitions: subscribe now (idempotent).
    The chat connectors are imported here, not at start-up: every other command starts faster."""
    import httpx

    from connectors.chat.base import ApprovalSubscriber, ChatError
    from connectors.chat.registry import build_chats

    async def run() -> bool | None:
        async with httpx.AsyncClient(timeout=15) as http:
            chat = build_chats(settings, http).get(platform)
            if not isinstance(chat, ApprovalSubscriber):
                return None
            return await chat.subscribe_approval(definition)

    try:
        done = asyncio.run(run())
    except ChatError as e:
        raise _fail(f"mapped, but subscribing to {definition}'s events failed: {e}; run this again once fixed "
                    "(or subscribe in the platform's console and pass --no-subscribe)") from e
    if done is not None:
        _out().print(f"subscribed to {definition}'s approval events" if done else
                     f"already subscribed to {definition}'s approval events")


@approvals_app.command("list")
def list_mappings(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
) -> None:
    """Every mapped approval definition."""
    _, engine = _ready_engine()
    rows = approval_mappings.all_mappings(engine)
    if as_json:
        typer.echo(json.dumps([{
            "platform": r.platform, "tenant": r.tenant, "definition": r.definition,
            "documents": r.document_fields.split(","), "signers": r.signer_field, "counterparty": r.counterparty_field,
            "counterparty_first": r.counterparty_first, "chat": r.chat_id, "provider": r.provider,
            "added": r.created_at.isoformat()} for r in rows], ensure_ascii=False, indent=2))
        return
    table = Table("platform", "tenant", "definition", "documents", "signers", "counterparty", "chat", "provider")
    for r in rows:
        table.add_row(r.platform, r.tenant or "*", r.definition, r.document_fields, r.signer_field or "-",
                      (r.counterparty_field or "-") + (" (first)" if r.counterparty_first else ""),
                      r.chat_id or "(initiator)", r.provider or "(default)")
    _out().print(table)


@approvals_app.command("remove")
def remove_mapping(
    platform: str, definition: str,
    tenant: Annotated[str, typer.Option("--tenant", help="the tenant it was mapped for (empty: every tenant)")] = "",
) -> None:
    """Stop starting signing from DEFINITION (flows already started carry on)."""
    _, engine = _ready_engine()
    if not approval_mappings.remove(engine, _platform(platform), tenant.strip(), definition):
        raise _fail(f"no mapping for {platform} approval {definition!r}" + (f" in {tenant}" if tenant else ""))
    _out().print(f"removed the mapping of {platform} approval {definition}")
