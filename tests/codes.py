"""The one-time code step of the signing page, as a signer does it: ask for a code, read it where it
arrived (the development mailbox here; a real SMTP server or an SMS simulator in tests/test_sign_codes.py)
and sign with it."""

from __future__ import annotations

from typing import Any

import httpx

from connectors.notify.dev import read_outbox
from signbridge.core.settings import Settings

JSON = {"Accept": "application/json"}


def latest_code(settings: Settings, signer_id: str) -> str:
    """The newest code the development sender 'sent' to this signer."""
    codes = [e for e in read_outbox(settings) if e["purpose"] == "code" and f":{signer_id}:code:" in e["key"]]
    assert codes, f"no code was sent to {signer_id}"
    return str(codes[-1]["params"]["code"])


def latest_link(settings: Settings, to: str, title: str | None = None) -> str | None:
    """The newest signing link the development sender 'sent' to this address (an external signer)."""
    links = [e for e in read_outbox(settings, to=to) if e["purpose"] == "link"
             and (title is None or e["params"].get("title") == title)]
    return str(links[-1]["params"]["url"]) if links else None


async def code_for(http: httpx.AsyncClient, settings: Settings, path: str) -> str:
    """Ask for a code on this link (if it needs one) and return it; "" when none is needed."""
    view = await http.get(path, headers=JSON)
    assert view.status_code == 200, view.text
    if not view.json().get("code_required"):
        return ""
    sent = await http.post(f"{path}/code", headers=JSON)
    assert sent.status_code == 200, sent.text
    return latest_code(settings, view.json()["signer_id"])


async def sign_with_code(http: httpx.AsyncClient, settings: Settings, path: str, name: str,
                         headers: dict[str, str] | None = None, **form: Any) -> httpx.Response:
    """Sign as `name` on `path`, doing the code step first when the link asks for one."""
    code = await code_for(http, settings, path)
    data = {"name": name, "consent": "yes", **form, **({"code": code} if code else {})}
    return await http.post(path, data=data, headers=headers or {})


def mailed_links(settings: Settings, request_id: str, signer_id: str) -> list[dict[str, Any]]:
    """Links the development sender 'sent' to an external signer of this request (by email or
    SMS), shaped like the chat's link messages (`sign_url`)."""
    def for_signer(key: str) -> bool:  # `link:<id>`, `reminder:<id>:<n>`, `remind-now:<id>:<n>`; ids may hold ":"
        _, _, rest = key[len(request_id) + 1:].partition(":")
        return rest == signer_id or rest.rsplit(":", 1)[0] == signer_id

    return [{"sign_url": e["params"]["url"], **e} for e in read_outbox(settings)
            if e["purpose"] == "link" and e["key"].startswith(request_id + ":") and for_signer(e["key"])]


async def link_mailed_to(settings: Settings, to: str, timeout: float = 30) -> str:
    """Wait for the signing link the development sender 'sent' to this address (an external signer)."""
    import asyncio
    import time

    end = time.monotonic() + timeout
    while (link := latest_link(settings, to)) is None:
        assert time.monotonic() < end, f"no signing link reached {to} in {timeout:.0f} s"
        await asyncio.sleep(0.2)
    return link
