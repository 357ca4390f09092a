"""`signbridge demo`: plays the playground chat from the command line, over public HTTP only.

The playground (`/playground`, served by the API in development) is the company chat of a
development stack: it speaks the signed webhook IM protocol to SignBridge and receives its cards,
links and files. The demo uses it the way a person would in the browser — drops the contract,
sends `/sign @李四 @王五 > @客户A` as 张三 (两位同事并行，然后一位外部客户), opens each signer's
link as that person and signs — then downloads the signed PDF and checks it against the
installation CA that SignBridge publishes.
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

        for group in GROUPS:
            links = {p: await chat.until(link_for(p), timeout, f"{p}'s signing link") for p in group}
            for person, entry in links.items():
                opened = await http.get(f"/playground/open/{entry['seq']}", params={"as": person})
                sign_url = opened.headers["location"]
                name = next(p["name"] for p in state.json()["people"] if p["id"] == person)
                # The chat's `sso` assertion on the link: an internal signer comes back verified
                # (a session cookie for this link) and signs with the consent alone.
                view = await http.get(sign_url, headers={"Accept": "application/json"}, follow_redirects=True)
                verified = view.status_code == 200 and view.json().get("verified")
                print(f"→ {name} opens their link and signs" + (" with one tap (verified by the chat)"
                                                                if verified else ""))
                form = {"consent": "yes"} if verified else {"name": name, "consent": "yes"}
                signed = await http.post(sign_url.split("?", 1)[0], data=form, headers={"Accept": "application/json"})
                if signed.status_code != 200:
                    raise DemoFailed(f"{name} could not sign: {signed.status_code} {signed.text[:300]}")
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
