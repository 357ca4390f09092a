"""`signbridge demo`: plays a company chat against a running SignBridge, over public HTTP only.

It is the company's own IM for a minute: it serves the contract file, sends a signed `/sign`
command (两位同事并行，然后一位外部客户), receives SignBridge's signed outbound calls (cards,
signing links, the signed file), signs as each person through their link, and finally checks
the signed PDF against the installation CA that SignBridge publishes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response

from connectors.chat.webhook import signature as webhook_signature
from signbridge.core.settings import get_settings
from signbridge.pdf.sample import sample_contract

SIGNERS: list[dict[str, Any]] = [
    {"id": "u-lisi", "name": "李四"},
    {"id": "u-wangwu", "name": "王五"},
    {"id": "x-kehu", "name": "客户A", "email": "a@customer.example", "external": True},
]


class DemoChat:
    """The company chat's side: outbound receiver and file server, in a background thread."""

    def __init__(self, secret: str, contract: bytes) -> None:
        self.secret = secret
        self.contract = contract
        self.messages: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.post("/outbound")(self._outbound)
        self.app.get("/f/contract.pdf")(self._file)

    async def _outbound(self, request: Request) -> Response:
        raw = await request.body()
        try:
            webhook_signature.verify(self.secret, request.headers.get("X-SignBridge-Timestamp"),
                                     request.headers.get("X-SignBridge-Signature"), raw)
        except webhook_signature.SignatureError as e:
            print(f"  ! refused an unsigned/forged outbound call: {e}")
            return Response(status_code=401)
        msg = json.loads(raw)
        if any(m.get("idempotency_key") == msg.get("idempotency_key") for m in self.messages):
            return Response(status_code=200)  # a retried delivery we already have
        self.messages.append(msg)
        _print_message(msg)
        return Response(status_code=200)

    async def _file(self) -> Response:
        return Response(self.contract, media_type="application/pdf")

    def serve(self, port: int) -> uvicorn.Server:
        server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise SystemExit(f"could not listen on 127.0.0.1:{port} (is another demo running?)")
            time.sleep(0.05)
        return server


def _print_message(msg: dict[str, Any]) -> None:
    kind = msg.get("type")
    if kind == "card.upsert":
        card = msg["card"]
        people = ", ".join(f"{s['name']}:{s['state_text']}" for s in card["signers"])
        print(f"  [card] {card['title']} — {card['status_text']} ({people})")
    elif kind == "message":
        print(f"  [message → {msg.get('to') or msg.get('chat_id')}] {msg['text']}")
    elif kind == "file":
        print(f"  [file] {msg['name']} sha256={msg['sha256'][:16]}…")


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def _demo(api_url: str, listen_port: int, out_dir: Path, timeout: float) -> int:
    settings = get_settings()
    secret = settings.webhook_secret.get_secret_value()
    chat = DemoChat(secret, sample_contract("SignBridge Demo Contract", pages=2))
    server = chat.serve(listen_port)
    event_id = f"demo-{uuid.uuid4().hex[:10]}"
    body = {
        "event_id": event_id, "type": "message",
        "chat": {"id": "g-demo", "kind": "group"},
        "sender": {"id": "u-zhangsan", "name": "张三", "email": "zs@corp.example"},
        "text": "/sign @李四 @王五 > @客户A",
        "mentions": SIGNERS,
        "files": [{"name": "contract.pdf", "url": f"http://127.0.0.1:{listen_port}/f/contract.pdf"}],
    }
    raw = json.dumps(body, ensure_ascii=False).encode()
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            print(f"→ 张三 sends `{body['text']}` with contract.pdf")
            resp = await http.post(f"{api_url}/im/webhook/events", content=raw,
                                   headers={**webhook_signature.headers(secret, raw),
                                            "Content-Type": "application/json"})
            if resp.status_code >= 300:
                print(f"SignBridge refused the command: {resp.status_code} {resp.text}")
                return 1
            request_id = resp.json()["request_id"]
            print(f"  accepted: {request_id}")

            def link(user: str) -> str | None:
                return next((m["sign_url"] for m in chat.messages
                             if m.get("type") == "message" and m.get("to") == user and m.get("sign_url")), None)

            for group in (SIGNERS[:2], SIGNERS[2:]):
                for person in group:
                    await _wait(lambda p=person: link(p["id"]) is not None, timeout,  # type: ignore[misc]
                                f"{person['name']}'s signing link")
                for person in group:
                    url = link(person["id"])
                    assert url
                    print(f"→ {person['name']} opens {url.split('/sign/')[0]}/sign/… and signs")
                    r = await http.post(url, data={"name": person["name"], "consent": "yes"},
                                        headers={"Accept": "application/json"})
                    if r.status_code != 200:
                        print(f"  signing failed: {r.status_code} {r.text}")
                        return 1
            await _wait(lambda: any(m.get("type") == "file" for m in chat.messages), timeout, "the signed file")
            file_msg = next(m for m in chat.messages if m.get("type") == "file")
            signed = (await http.get(file_msg["url"])).content
            ca_pem = (await http.get(f"{api_url}/ca.pem")).content
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{event_id}.signed.pdf"
        path.write_bytes(signed)
        return await asyncio.to_thread(_report, path, signed, ca_pem)
    finally:
        server.should_exit = True


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


def run_demo(api_url: str = "http://127.0.0.1:8000", listen_port: int = 8765,
             out_dir: Path = Path("."), timeout: float = 120.0) -> int:
    return asyncio.run(_demo(api_url.rstrip("/"), listen_port, out_dir, timeout))
