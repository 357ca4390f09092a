"""The FastAPI app: thin handlers that verify, normalise and hand over to Temporal (through the intake)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from temporalio.client import Client

from api import (
    bulk,
    chat,
    errors,
    esign_links,
    health,
    limits,
    metrics,
    openapi_docs,
    organisations,
    provider_webhooks,
    requests,
    sign_pages,
    sso,
    templates,
)
from api.metrics import install_metrics
from api.playground import routes as playground
from api.playground.transcript import Transcript
from connectors.chat.registry import build_chats, build_inbounds, build_ssos
from connectors.esign.registry import build_webhooks
from connectors.notify.registry import build_notifier
from signbridge.core.settings import DEVELOPMENT, Settings, get_settings
from signbridge.core.temporal import connect
from signbridge.intake import Intake
from signbridge.pdf.pool import shutdown_pool
from store.blob_factory import make_blob_store
from store.db import create_all, get_engine
from store.files import exclusive, private_dir

log = logging.getLogger(__name__)

DESCRIPTION = """Get documents signed without leaving the chat.

- **Chat platforms** post their callbacks to `/im/<platform>/…`, each signed the platform's way;
  a company's own chat tool uses the generic webhook IM (`POST /im/webhook/events`, HMAC-signed).
- **REST** (`/api/v1/signing-requests…`) takes `Authorization: Bearer <key>` (`SIGNBRIDGE_API_KEYS`).
- **Errors** are `{"error": {"code", "message"}}` with the status each route lists; 503 carries
  `Retry-After` (Temporal did not answer in time: send the same request again).
"""


def create_app(settings: Settings | None = None, client: Client | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check_production()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        private_dir(settings.data_dir)
        if settings.environment == DEVELOPMENT and (unset := settings.development_secrets()):
            log.warning("development secrets in use (%s): never expose this API", ", ".join(unset))
        app.state.settings = settings
        app.state.engine = get_engine(settings.sqlalchemy_url)
        if settings.environment == DEVELOPMENT:
            # Elsewhere `signbridge db upgrade` (alembic) owns the schema. Several API processes start
            # at once (`SIGNBRIDGE_API_PROCESSES`): one creates, the others then find the tables.
            with exclusive(settings.data_dir / ".schema.lock"):
                create_all(app.state.engine)
            app.state.playground = Transcript(settings.data_dir / "playground")
        app.state.blobs = make_blob_store(settings)
        app.state.temporal = client or await connect(settings)
        app.state.provider_webhooks = build_webhooks(settings)
        app.state.intake = Intake(app.state.temporal, settings, app.state.engine)
        async with httpx.AsyncClient(timeout=10) as http, \
                esign_links.docusign_views(settings, app.state.engine, app.state.blobs) as views:
            # The chat connectors name mentioned people through their platform's directory.
            chats = build_chats(settings, http)
            app.state.inbounds = build_inbounds(settings, app.state.engine, chats)
            app.state.ssos = build_ssos(settings, http, chats)  # one-tap signing: each platform's sign-in
            app.state.docusign_views = views
            # One-time codes for the signing pages go out by email or SMS (`connectors.notify`).
            app.state.notifier = build_notifier(settings, http)
            try:
                yield
                await app.state.intake.settled()  # chat files still being written (Intake._remember_files)
            finally:
                await shutdown_pool()  # the signing processes, if any signature started them

    # Swagger UI (/docs) and ReDoc (/redoc) from SignBridge itself, not a CDN: they work offline.
    app = FastAPIOffline(title="SignBridge", version="0.1.0", lifespan=lifespan, static_url=openapi_docs.ASSETS,
                         description=DESCRIPTION, redoc_url=None,  # ours: `openapi_docs.redoc_page`
                         swagger_ui_parameters={"validatorUrl": None})  # no badge from validator.swagger.io
    errors.install(app)
    upload_limit = settings.max_document_bytes + limits.MAX_BODY_BYTES  # the file and the request's JSON
    app.add_middleware(limits.RequestLimits, max_body=lambda scope: upload_limit if requests.is_upload(scope)
                       or playground.is_upload(scope["path"]) else limits.MAX_BODY_BYTES)
    install_metrics(app)  # outermost: refusals are counted too
    for module in (health, chat, sign_pages, sso, provider_webhooks, requests, templates, bulk, organisations,
                   metrics, esign_links):
        app.include_router(module.router)
    app.include_router(requests.files_router)
    if settings.environment == DEVELOPMENT:  # a chat to try SignBridge in; never outside development
        app.include_router(playground.router)
        app.mount("/playground/assets", StaticFiles(directory=playground.ASSETS), name="playground-assets")
    openapi_docs.document(app, requests.NewRequest)
    openapi_docs.redoc_page(app)
    return app


def create_served_app() -> FastAPI:
    """`signbridge api`'s factory, called in each API process: uvicorn spawns its processes with
    Python's default logging, so each installs SignBridge's (secrets redacted) before the app."""
    from signbridge.cli.api_startup import ACCESS_LOG, OWN_LOGGING
    from signbridge.core.observability import configure_logging

    if os.environ.get(OWN_LOGGING):
        configure_logging()
        if os.environ.get(ACCESS_LOG):
            logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    return create_app()
