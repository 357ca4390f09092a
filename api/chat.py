"""Every chat platform's callbacks: `/im/webhook/events`, `/im/feishu/events` and `/card`,
`/im/dingtalk/events`, `GET`+`POST /im/wecom/events`, `/im/slack/events`, `/interactions`, `/commands`.

One handler serves them all: the platform's `inbound` verifies, decrypts and parses the callback
(a forged, stale or unsigned one is 401 and starts nothing), the intake acts on the message or
button, and the platform renders the outcome the way its servers expect. The answer goes out
only after Temporal holds the request (flow started, update accepted) or after the intake said
`Busy` (then the platform is asked to deliver again). The paths come from the platforms'
`ROUTES`; a platform whose secrets are not set answers 404.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, BackgroundTasks, Request, Response

from api.errors import ApiError, responses
from api.openapi_docs import WEBHOOK_EVENTS_PATH, WEBHOOK_OPERATION
from connectors.chat import registry
from connectors.chat.callback import Callback, CallbackRejected, Inbound, Reply
from signbridge.intake import Intake

router = APIRouter(tags=["chat platforms"])


async def _body(request: Request, limit: int) -> bytes:
    raw = await request.body()
    if len(raw) > limit:
        raise ApiError(413, "too_large", f"Callbacks are limited to {limit} bytes")
    return raw


def _response(reply: Reply, background: BackgroundTasks) -> Response:
    if reply.after is not None:
        background.add_task(reply.after)
    if reply.body is None:
        return Response(b"", reply.status, dict(reply.headers), media_type=reply.media_type or "text/plain")
    if isinstance(reply.body, str):
        return Response(reply.body, reply.status, dict(reply.headers), media_type=reply.media_type or "text/plain")
    content = json.dumps(reply.body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content, reply.status, dict(reply.headers), media_type=reply.media_type or "application/json")


def _handler(platform: str) -> Callable[[Request, BackgroundTasks], Awaitable[Response]]:
    async def callback(request: Request, background: BackgroundTasks) -> Response:
        inbound: Inbound | None = request.app.state.inbounds.get(platform)
        if inbound is None:
            raise ApiError(404, "not_configured", f"{platform} is not configured on this SignBridge")
        call = Callback(path=request.url.path, method=request.method, headers=request.headers,
                        query=request.query_params, body=await _body(request, inbound.max_body))
        try:
            received = await inbound.receive(call)
        except CallbackRejected as e:
            raise ApiError(e.status, e.code, e.message) from e
        if isinstance(received, Reply):
            return _response(received, background)
        intake: Intake = request.app.state.intake
        outcome = await intake.handle(received, inbound.rules)
        return _response(inbound.reply(received, outcome), background)

    return callback


# Each platform answers in its own shape (JSON, or text such as WeCom's echo); errors are ours.
REPLY = {"description": "What the platform expects back", "content": {
    "application/json": {"schema": {}}, "text/plain": {"schema": {"type": "string"}}}}
RESPONSES = {200: REPLY, 202: {**REPLY, "description": "Taken; the flow reports in the chat"},
             **responses(400, 401, 403, 404, 409, 503)}
CALLBACK_BODY = {"requestBody": {"description": "The callback exactly as the platform signed it", "content": {
    "application/json": {"schema": {"type": "object"}}, "application/x-www-form-urlencoded": {"schema": {
        "type": "object"}}, "text/xml": {"schema": {"type": "string"}}}}}

# SignBridge's own protocol is documented field by field (`api/openapi_docs.py`); the platforms'
# callbacks are what their servers send, signed or encrypted their way.
DOCUMENTED = {("POST", WEBHOOK_EVENTS_PATH): WEBHOOK_OPERATION}

for _platform, _route in registry.routes():
    for _method in _route.methods:
        _extra = DOCUMENTED.get((_method, _route.path), CALLBACK_BODY if _method == "POST" else None)
        router.add_api_route(_route.path, _handler(_platform), methods=[_method], response_class=Response,
                             summary=f"{_platform} callback", operation_id=f"{_platform}_{_method}_{_route.path}",
                             responses=RESPONSES, openapi_extra=_extra)
