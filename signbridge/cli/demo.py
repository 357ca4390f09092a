"""`signbridge demo`: plays the playground chat from the command line, over public HTTP only.

The playground (`/playground`, served by the API in development) is the company chat of a
development stack: it speaks the signed webhook IM protocol to SignBridge and receives its cards,
links and files. The demo uses it the way a person would in the browser — drops the contract,
sends `/sign @李四 @王五 > @客户A` as 张三 (两位同事并行，然后一位外部客户), opens each signer's
link as that person (the external customer's arrives by email, not in the chat), asks for the
one-time code the page wants and reads it in the development mailbox (`/playground/api/mailbox`:
`make run` configures no email or SMS service), and signs — then downloads the signed PDF and
checks it against the installation CA that SignBridge publishes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from signbridge.pdf.sample import sample_contract

INITIATOR = "u-zhangsan"
COMMAND = "/sign @李四 @王五 > @客户A"
GROUPS = [["u-lisi", "u-wangwu"], ["x-kehu"]]


class DemoFailed(Exception):
    """The demo could not go on; the message says why, in one line."""


async def _entries(http: httpx.AsyncClient, after: int) -> list[dict[str, Any]]:
    resp = await http.get("/playground/api/entries", params={"after": after, "wait": 2})
    resp.raise_for_status()
    return resp.json()  # type: ignore[no-any-return]


class Chat:
    """What the demo has seen of the playground's transcript."""

    def __init__(self, http: httpx.AsyncClient, seen: int) -> None:
        self.http = http
        self.seen = seen
        self.outbound: list[dict[str, Any]] = []

    async def until(self, found: Any, timeout: float, what: str) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while (hit := next((e for e in self.outbound if found(e)), None)) is None:
            if time.monotonic() > end:
                raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what}")
            for entry in await _entries(self.http, self.seen):
                self.seen = entry["seq"]
                if entry["kind"] == "outbound":
                    self.outbound.append(entry)
                    _print(entry["body"])
        return hit


async def _mail(http: httpx.AsyncClient, found: Any, timeout: float, what: str) -> dict[str, Any]:
    """The first message of the development mailbox (`/playground/api/mailbox`) that `found` accepts."""
    end = time.monotonic() + timeout
    while True:
        resp = await http.get("/playground/api/mailbox")
        resp.raise_for_status()
        hit = next((e for e in reversed(resp.json()) if found(e)), None)
        if hit is not None:
            return hit  # type: ignore[no-any-return]
        if time.monotonic() > end:
            raise DemoFailed(f"timed out after {timeout:.0f} s waiting for {what} in the development mailbox")
        await asyncio.sleep(0.3)


async def _code_step(http: httpx.AsyncClient, sign_url: str, name: str, timeout: float) -> dict[str, str]:
    """The one-time code, when the page asks for one: request it, read it where it arrived (the
    development mailbox: `make run` configures no email or SMS service), hand it to the form."""
    page = await http.get(sign_url, headers={"Accept": "application/json"})
    if page.status_code != 200:
        raise DemoFailed(f"{name}'s signing page answered {page.status_code} {page.text[:300]}")
    view = page.json()
    if not view.get("code_required"):
        return {}
    base = sign_url.split("?", 1)[0]
    sent = await http.post(f"{base}/code", headers={"Accept": "application/json"})
    if sent.status_code != 200:
        raise DemoFailed(f"no code for {name}: {sent.status_code} {sent.text[:300]}")
    signer = view["signer_id"]
    mail = await _mail(http, lambda e: e["purpose"] == "code" and f":{signer}:code:" in e["key"], timeout,
                       f"{name}'s one-time code")
    code = str(mail["params"]["code"])
    print(f"  {name} asks for a one-time code: sent to {sent.json()['sent_to']} — {code} "
          "(development mailbox)")
    return {"code": code}


def _print(body: dict[str, Any]) -> None:
    kind = body.get("type")
    if kind == "card.upsert":
        card = body["card"]
        people = ", ".join(f"{s['name']}:{s['state_text']}" for s in card["signers"])
        print(f"  [card] {card['title']} — {card['status_text']} ({people})")
    elif kind == "message":
        print(f"  [message → {body.get('to') or 'the chat'}] {body['text']}")
    elif kind == "file":
        print(f"  [file] {body['name']} sha256={body['sha256'][:16]}…")


async def _demo(api_url: str, out_dir: Path, timeout: float) -> int:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        try:
            state = await http.get("/playground/api/state")
        except httpx.HTTPError as e:
            raise DemoFailed(f"no SignBridge answers at {api_url} ({e}); start it with `make run`") from e
        if state.status_code == 404:
            raise DemoFailed(f"{api_url} has no playground: it is served in development only (`make run` starts one)")
        state.raise_for_status()
        if not state.json()["outbound_here"]:
            raise DemoFailed("SignBridge posts its cards to another chat (SIGNBRIDGE_WEBHOOK_OUTBOUND_URL), not to "
                             "the playground; unset it (`make run` points it at the playground)")
        chat = Chat(http, len(state.json()["entries"]))
        dropped = (await http.post("/playground/api/files", files={
            "file": ("contract.pdf", sample_contract("SignBridge Demo Contract", pages=2), "application/pdf")})).json()
        print(f"→ 张三 drops contract.pdf and sends `{COMMAND}`")
        said = (await http.post("/playground/api/say", json={
            "by": INITIATOR, "text": COMMAND, "files": [{"id": dropped["id"], "name": dropped["name"]}]})).json()
        answer = said["answer"]
        if answer["status"] != 202:
            raise DemoFailed(f"SignBridge refused the command: {answer['status']} {answer['body']}")
        request_id = answer["body"]["request_id"]
        print(f"  accepted: {request_id}")

        def link_for(person: str) -> Any:
            return lambda e: e["body"].get("to") == person and e["body"].get("sign_url") and request_id in str(
                e["body"].get("idempotency_key", ""))

        people = {p["id"]: p for p in state.json()["people"]}
        for group in GROUPS:
            for person in group:
                name = people[person]["name"]
                if people[person].get("external"):  # not in the chat: by email (the development mailbox)
                    key = f"{request_id}:link:{person}"
                    mail = await _mail(http, lambda e, key=key: e["purpose"] == "link" and e["key"] == key,
                                       timeout, f"{name}'s signing link by email")
                    sign_url = mail["params"]["url"]
                    print(f"→ {name} gets the link by email ({mail['to']}) and opens it")
                else:
                    entry = await chat.until(link_for(person), timeout, f"{person}'s signing link")
                    opened = await http.get(f"/playground/open/{entry['seq']}", params={"as": person})
                    sign_url = opened.headers["location"]
                # The chat's `sso` assertion on a colleague's link: they come back verified (a session
                # cookie for this link) and sign with the consent alone; everyone else with a code.
                view = await http.get(sign_url, headers={"Accept": "application/json"}, follow_redirects=True)
                sign_url = sign_url.split("?", 1)[0]
                if view.status_code == 200 and view.json().get("verified"):
                    print(f"→ {name} opens their link and signs with one tap (verified by the chat)")
                    form = {"consent": "yes"}
                else:
                    if not people[person].get("external"):
                        print(f"→ {name} opens their link from the chat")
                    form = {"name": name, "consent": "yes", **await _code_step(http, sign_url, name, timeout)}
                signed = await http.post(sign_url, data=form, headers={"Accept": "application/json"})
                if signed.status_code != 200:
                    raise DemoFailed(f"{name} could not sign: {signed.status_code} {signed.text[:300]}")
                print(f"  {name} signed")
        filed = await chat.until(lambda e: e["body"].get("type") == "file"
                                 and e["body"].get("kind", "signed") == "signed", timeout, "the signed file")
        signed_pdf = (await http.get(filed["body"]["url"])).content
        ca_pem = (await http.get("/ca.pem")).content
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{request_id.rsplit(':', 1)[-1]}.signed.pdf"
    path.write_bytes(signed_pdf)
    return await asyncio.to_thread(_report, path, signed_pdf, ca_pem)


def _report(path: Path, signed: bytes, ca_pem: bytes) -> int:
    from asn1crypto import pem, x509

    from signbridge.pdf.pades import validate_pdf

    _, _, der = pem.unarmor(ca_pem)
    reports = validate_pdf(signed, [x509.Certificate.load(der)])
    print(f"\nSigned PDF: {path.resolve()}")
    ok = len(reports) == 3 and all(r.intact and r.valid and r.trusted for r in reports)
    for r in reports:
        print(f"  {r.field_name}: {r.signer_name} intact={r.intact} valid={r.valid} trusted={r.trusted}")
    print("Verification: " + ("OK — 3 valid signatures chained to the installation CA" if ok else "FAILED"))
    return 0 if ok else 1


def run_demo(api_url: str = "http://127.0.0.1:8000", out_dir: Path = Path("."), timeout: float = 120.0) -> int:
    try:
        return asyncio.run(_demo(api_url.rstrip("/"), out_dir, timeout))
    except DemoFailed as e:
        print(f"signbridge demo: {e}")
        return 1
