"""The one path from chat (and REST, and the operator CLI) into Temporal.

`Intake.start_from_command(event)` owns "a chat message → maybe a signing flow": the command
grammar, finding the documents (in the message, in the message it replies to, the sender's latest
file in that chat, or the platform's own fallback), recording a problem the flow must report,
building the `SigningRequest` with `Settings.timing()`, and the start. `Intake.apply_action(action)`
owns "a button → a workflow update within the platform's deadline". Both answer an `Outcome`
(`signbridge.core.chat`); every caller maps it its own way — an HTTP status, a Feishu toast, the
listener's ack-or-retry, a row in the CLI's table — so no caller decides anything from an HTTP
status or an error message.

Temporal not answering within the deadline is `Busy`, never an exception: the platform delivers
again and, the flow id coming from the event id (and the update id from the click), a retried
delivery starts at most one flow and applies an update once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from signbridge.intake.intake import Intake

__all__ = ["Intake"]


def __getattr__(name: str) -> Any:
    """`Intake` is imported on first use: the worker imports only `provider_events` (its relay), and
    `Intake`'s own imports (command grammar, chat connectors, templates) would slow its start-up."""
    if name == "Intake":
        from signbridge.intake.intake import Intake

        return Intake
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
