"""Which converter this installation uses: Gotenberg when `SIGNBRIDGE_GOTENBERG_URL` is set, else
LibreOffice when `soffice` is installed, else a refusal that names what to install."""

from __future__ import annotations

import httpx

from connectors.convert.base import Converter, NoConverter
from connectors.convert.gotenberg import GotenbergConverter
from connectors.convert.libreoffice import LibreOfficeConverter, find_soffice
from signbridge.core.settings import Settings


def build_converter(settings: Settings, http: httpx.AsyncClient) -> Converter:
    if settings.gotenberg_url:
        return GotenbergConverter(settings.gotenberg_url, http, settings.convert_timeout_seconds)
    soffice = find_soffice(settings.soffice_path)
    if soffice:
        return LibreOfficeConverter(soffice, settings.convert_timeout_seconds)
    return NoConverter()
