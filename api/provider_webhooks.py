"""`POST /esign/{provider}/webhook`: verify, normalise, audit the raw payload, signal the workflow.

Answers 401 (and starts nothing) for a bad signature, the provider's expected reply otherwise.
A Temporal outage answers 503 so the provider redelivers; unknown flows and unknown event types
are acknowledged and ignored (a provider must not retry what we will never route).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from sqlalchemy.engine import Engine

from api.chat import CALLBACK_BODY
from api.deps import ClientDep, EngineDep
from api.errors import ApiError, responses
from connectors.esign.base import WebhookRejected
from signbridge.core.chat import Busy
from signbridge.intake.provider_events import FlowEnded, UnknownFlow, deliver, workflow_id_for
from store import audit
from store.repos import webhooks_seen
from store.tables import utcnow

router = APIRouter(tags=["provider webhooks"])
# Temporal's client retries an unreachable frontend for ~10 s; the provider gets its 503 sooner.
DELIVERY_SECONDS = 5.0
log = logging.getLogger(__name__)


# Each provider's last verified webhook is written at most this often per API process.
SEEN_EVERY_SECONDS = 60.0
_last_seen: dict[tuple[str, str], float] = {}  # (database, provider) -> monotonic time


def _seen(engine: Engine, provider: str) -> None:
    """A webhook with a valid signature arrived: the provider's webhooks reach us. Waiting flows learn
    it from their next poll and stop polling on a timer (`webhooks_seen`, `workflows/signing.py`)."""
    now, key = time.monotonic(), (str(engine.url), provider)
    if key in _last_seen and now - _last_seen[key] < SEEN_EVERY_SECONDS:
        return
    try:
        webhooks_seen.record(engine, provider, utcnow())
    except Exception as e:  # a hint for polling only: never fail the provider's delivery over it
        log.warning("could not record %s's webhook: %s", provider, type(e).__name__)
        return
    _last_seen[key] = now


@router.post("/esign/{provider}/webhook", response_class=Response, openapi_extra=CALLBACK_BODY, responses={
    200: {"description": "The reply the provider expects", "content": {"text/plain": {"schema": {"type": "string"}},
                                                                      "application/json": {"schema": {}}}},
    **responses(400, 401, 404, 503)})
async def provider_webhook(provider: Annotated[str, Path(max_length=32)], request: Request, client: ClientDep,
                           engine: EngineDep) -> Response:
    hooks = request.app.state.provider_webhooks
    hook = hooks.get(provider)
    if hook is None:
        raise ApiError(404, "unknown_provider", "No webhook for this provider (is it configured?)")
    body = await request.body()
    try:
        events, reply = hook.parse(request.headers, request.query_params, body)
    except WebhookRejected as e:
        raise ApiError(401, "bad_signature", str(e)) from e
    except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as e:  # a shape no provider sends
        log.warning("%s webhook payload could not be read: %s", provider, type(e).__name__)
        raise ApiError(400, "invalid_payload", "The webhook payload is not one this provider sends") from e
    _seen(engine, provider)
    for event in events:
        try:
            request_id = workflow_id_for(engine, event.provider, event.flow_id)
        except UnknownFlow:
            log.info("ignoring %s event %s for unknown flow %s", provider, event.event_id, event.flow_id)
            continue
        audit.record(engine, request_id=request_id, key=f"webhook:{event.event_id}",
                     action=f"provider.{event.kind}", actor=provider,
                     detail={"event_id": event.event_id, "signer": event.signer_id, "raw": event.raw},
                     ip=request.client.host if request.client else None,
                     user_agent=request.headers.get("user-agent"))
        try:
            async with asyncio.timeout(DELIVERY_SECONDS):
                await deliver(client, engine, event)
        except UnknownFlow:
            continue
        except FlowEnded:
            log.info("ignoring %s event %s: its signing request has ended", provider, event.event_id)
            continue
        except Exception as e:  # Temporal unreachable: make the provider retry later
            log.warning("could not deliver %s event %s: %s", provider, event.event_id, type(e).__name__)
            raise ApiError(503, "unavailable", "Temporarily unable to accept the event; retry",
                           retry_after=Busy.retry_after) from e
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type)
