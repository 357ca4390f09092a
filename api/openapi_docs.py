"""What `/docs` (Swagger UI) and `/redoc` show beyond what FastAPI derives from the routes.

Both pages and their scripts are served by SignBridge itself (`fastapi-offline` ships the Swagger
UI and ReDoc bundles in its wheel), so the documentation works on a machine without internet.

Some routes read their body themselves — the chat platforms' callbacks must be verified on the
raw bytes before anything is parsed, the REST create takes JSON or multipart — so FastAPI cannot
see what they expect. Here their bodies are documented as the models that parse them (the webhook
IM's events as a union discriminated by `type`) with examples that are accepted when sent (signed,
for the webhook IM: how to sign is in the route's description).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, TypeAdapter

from connectors.chat.webhook.inbound import ActionEvent, ApprovalApprovedEvent, MessageEvent
from connectors.chat.webhook.signature import SIGNATURE_HEADER, TIMESTAMP_HEADER

WEBHOOK_EVENTS_PATH = "/im/webhook/events"
WebhookEvent: TypeAdapter[MessageEvent | ActionEvent | ApprovalApprovedEvent] = TypeAdapter(
    Annotated[MessageEvent | ActionEvent | ApprovalApprovedEvent, Field(discriminator="type")])

MESSAGE_EXAMPLE: dict[str, Any] = {
    "event_id": "e-123", "type": "message",
    "chat": {"id": "g-1", "kind": "group"},
    "sender": {"id": "u-1", "name": "张三", "email": "zs@corp.example", "mobile": "+8613800000000"},
    "text": "/sign @李四 @王五 > @客户A",
    "mentions": [{"id": "u-2", "name": "李四"}, {"id": "u-3", "name": "王五"},
                 {"id": "x-9", "name": "客户A", "email": "a@customer.example", "external": True}],
    "files": [{"name": "contract.pdf", "url": "https://im.corp.example/f/1"}],
}
ACTION_EXAMPLE: dict[str, Any] = {
    "event_id": "e-124", "type": "action",
    "sender": {"id": "u-1", "name": "张三"},
    "action": {"request_id": "sign:webhook:default:e-123", "name": "remind"},
}
APPROVAL_EXAMPLE: dict[str, Any] = {
    "event_id": "e-125", "type": "approval.approved",
    "approval": {"id": "AP-2026-0042", "title": "采购合同审批"},
    "initiator": {"id": "u-1", "name": "张三", "email": "zs@corp.example"},
    "chat": {"id": "g-1", "kind": "group"},
    "text": "@李四 > @客户A",
    "mentions": [{"id": "u-2", "name": "李四"},
                 {"id": "x-9", "name": "客户A", "email": "a@customer.example", "external": True}],
    "files": [{"name": "contract.pdf", "url": "https://im.corp.example/f/1"}],
}

WEBHOOK_DESCRIPTION = f"""A company's own chat tool sends its events here (README, "Generic webhook IM protocol").

**Signed**, like everything SignBridge posts back: `{TIMESTAMP_HEADER}: <unix seconds>` and
`{SIGNATURE_HEADER}: v1=<hex HMAC-SHA256(SIGNBRIDGE_WEBHOOK_SECRET, "<timestamp>.<raw body>")>`.
A timestamp more than 300 s off or a wrong signature is 401 and starts nothing. To send an example:

```sh
BODY='{{"event_id": "e-123", "type": "message", ...}}'
TS=$(date +%s)
SIG=$(printf '%s.%s' "$TS" "$BODY" | openssl dgst -sha256 -hmac "$SIGNBRIDGE_WEBHOOK_SECRET" -r | cut -d' ' -f1)
curl -H "{TIMESTAMP_HEADER}: $TS" -H "{SIGNATURE_HEADER}: v1=$SIG" -H 'Content-Type: application/json' \\
     --data "$BODY" http://127.0.0.1:8000{WEBHOOK_EVENTS_PATH}
```

`type: "message"` starts a signing (202, `request_id` in the answer; 200 for a redelivered event
id) or is ordinary chat (200 `ignored`); `type: "action"` is a card button (200 with the flow's
status, 202 when accepted but not finished in time); `type: "approval.approved"` is an approval
that passed and names what to sign (202; 200 for any later event of the same approval id — one
flow per approval; its end comes back as outbound `approval.update`)."""

WEBHOOK_OPERATION: dict[str, Any] = {
    "summary": "Webhook IM: a chat message, a card button or an approval that passed",
    "description": WEBHOOK_DESCRIPTION,
    "parameters": [
        {"name": TIMESTAMP_HEADER, "in": "header", "required": True, "schema": {"type": "string"},
         "description": "Unix seconds when the request was signed", "example": "1733338380"},
        {"name": SIGNATURE_HEADER, "in": "header", "required": True, "schema": {"type": "string"},
         "description": "`v1=` and the hex HMAC-SHA256 of `<timestamp>.<raw body>`"},
    ],
    "requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/WebhookEvent"},
        "examples": {
            "message": {"summary": "张三 asks 李四 and 王五, then 客户A, to sign contract.pdf",
                        "value": MESSAGE_EXAMPLE},
            "action": {"summary": "张三 presses 催签 (remind) on the card", "value": ACTION_EXAMPLE},
            "approval": {"summary": "张三's purchase approval passed: 李四, then 客户A, sign contract.pdf",
                         "value": APPROVAL_EXAMPLE},
        }}}},
}


ASSETS = "/docs/assets"  # where fastapi-offline's Swagger UI and ReDoc files are served
# ReDoc's sidebar shows a logo from cdn.redoc.ly: a policy that allows nothing from elsewhere keeps
# the page from reaching out (it renders the same without the logo).
REDOC_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                "worker-src 'self' blob:; frame-ancestors 'none'")


def redoc_page(app: FastAPI) -> None:
    """`/redoc` from SignBridge's own copy of ReDoc, loading nothing from elsewhere."""

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{ASSETS}/redoc.standalone.js", redoc_favicon_url=f"{ASSETS}/favicon.png",
                              with_google_fonts=False)
        page.headers["Content-Security-Policy"] = REDOC_POLICY
        return page


def document(app: FastAPI, *models: type[BaseModel]) -> None:
    """Put what routes read themselves into the OpenAPI components — `models` and the webhook IM's
    events (`WebhookEvent`, its parts prefixed `Webhook…`: the REST API has a `ChatIn` of its own) —
    where the routes' `openapi_extra` request bodies refer to them."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI's, cached after the first call: adding the same again changes nothing
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            _add(components, model.__name__, model.model_json_schema(ref_template=REF.format(prefix="")))
        _add(components, "WebhookEvent", WebhookEvent.json_schema(ref_template=REF.format(prefix="Webhook")),
             prefix="Webhook")
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


REF = "#/components/schemas/{prefix}{{model}}"


def _add(components: dict[str, Any], name: str, schema: dict[str, Any], prefix: str = "") -> None:
    """Add `schema` and its `$defs` (named `prefix` + name); two different schemas under one name
    would make a `$ref` point at the wrong one, so that is refused."""
    defs = {prefix + key: value for key, value in schema.pop("$defs", {}).items()}
    for key, value in {**defs, name: schema}.items():
        if components.setdefault(key, value) != value:
            raise ValueError(f"two different schemas are called {key} in the OpenAPI document")
