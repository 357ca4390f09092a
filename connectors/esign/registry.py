"""Pick the e-signature providers from configuration; nothing else imports a specific provider."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from connectors.esign.base import ESignProvider
from signbridge.settings import Settings
from store.blobs import BlobStore


def build_providers(settings: Settings, engine: Engine, blobs: BlobStore) -> dict[str, ESignProvider]:
    from connectors.esign.local import LocalProvider

    return {"local": LocalProvider(settings, engine, blobs)}
