"""`ChatReplyWorkflow`: one private answer to a chat message that starts no signing — a search
(`/sign status 关键词`), or a command refused because signing is paused.

A workflow rather than a send from the API process, for the same reasons a signing request is
one: its id comes from the chat event (`reply:{platform}:{tenant}:{event id}`), so a redelivered
callback answers once; the chat call is retried through outages; and the answer (which carries
download links, bearer secrets) is rendered inside the activity, never written into history.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from signbridge.core.models import ChatReplyInput

WORKFLOW_NAME = "ChatReplyWorkflow"


@workflow.defn(name=WORKFLOW_NAME)
class ChatReplyWorkflow:
    @workflow.run
    async def run(self, arg: ChatReplyInput) -> None:
        await workflow.execute_local_activity(
            "chat_reply", arg, start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5)),
            summary="Answer the asker privately")
