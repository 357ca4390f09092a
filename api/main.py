"""The FastAPI app: thin handlers that verify, normalise and hand over to Temporal (through the intake)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel
from temporalio.client import Client

from api import chat, errors, esign_links, health, limits, metrics, provider_webhooks, requests, sign_pages, templates
from api.metrics import install_metrics
from connectors.chat.registry import build_chats, build_inbounds
from connectors.esign.registry import build_webhooks
from signbridge.core.settings import DEVELOPMENT, Settings, get_settings
from signbridge.core.temporal import connect
from signbridge.intake import Intake
from store.blob_factory import make_blob_store
from store.db import create_all, get_engine
from store.files import private_dir

log = logging.getLogger(__name__)


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
            create_all(app.state.engine)  # elsewhere `signbridge db upgrade` (alembic) owns the schema
        app.state.blobs = make_blob_store(settings)
        app.state.temporal = client or await connect(settings)
        app.state.provider_webhooks = build_webhooks(settings)
        app.state.intake = Intake(app.state.temporal, settings, app.state.engine)
        async with httpx.AsyncClient(timeout=10) as http, \
                esign_links.docusign_views(settings, app.state.engine, app.state.blobs) as views:
            # The chat connectors name mentioned people through their platform's directory.
            app.state.inbounds = build_inbounds(settings, app.state.engine, build_chats(settings, http))
            app.state.docusign_views = views
            yield

    app = FastAPI(title="SignBridge", version="0.1.0", lifespan=lifespan)
    errors.install(app)
    upload_limit = settings.max_document_bytes + limits.MAX_BODY_BYTES  # the file and the request's JSON
    app.add_middleware(limits.RequestLimits, max_body=lambda scope: upload_limit if requests.is_upload(scope)
                       else limits.MAX_BODY_BYTES)
    install_metrics(app)  # outermost: refusals are counted too
    for module in (health, chat, sign_pages, provider_webhooks, requests, templates, metrics, esign_links):
        app.include_router(module.router)
    _document(app, requests.NewRequest)
    return app


def _document(app: FastAPI, *models: type[BaseModel]) -> None:
    """Put models that routes read themselves (JSON or multipart, parsed by hand) into the
    OpenAPI components, where the routes' `openapi_extra` request bodies refer to them."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            if model.__name__ not in components:
                own = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update({**own.pop("$defs", {}), model.__name__: own})
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
