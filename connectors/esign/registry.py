"""Pick the e-signature providers from configuration; nothing else imports a specific provider.

Each provider module exposes `build(settings, engine, blobs, http) -> provider | None` (None when
its credentials are not configured) and `webhook(settings) -> ProviderWebhook | None`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import httpx
from sqlalchemy.engine import Engine

from connectors.esign.base import ESignProvider, ProviderWebhook
from signbridge.core.settings import Settings
from store.blobs import BlobStore

PROVIDER_MODULES = (
    "connectors.esign.local",
    "connectors.esign.esign_cn",
    "connectors.esign.fadada",
    "connectors.esign.docusign",
    "connectors.esign.dropbox_sign",
    "connectors.esign.docuseal",
)


def _modules() -> list[ModuleType]:
    found = []
    for name in PROVIDER_MODULES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    return found


def build_providers(settings: Settings, engine: Engine, blobs: BlobStore,
                    http: httpx.AsyncClient) -> dict[str, ESignProvider]:
    providers: dict[str, ESignProvider] = {}
    for module in _modules():
        provider = module.build(settings, engine, blobs, http)
        if provider is not None:
            providers[provider.name] = provider
    return providers


def build_webhooks(settings: Settings) -> dict[str, ProviderWebhook]:
    hooks: dict[str, ProviderWebhook] = {}
    for module in _modules():
        hook = getattr(module, "webhook", lambda _s: None)(settings)
        if hook is not None:
            hooks[hook.name] = hook
    return hooks
