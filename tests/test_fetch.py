"""Fetching documents from URLs someone else named (connectors/fetch.py), end to end.

Most cases start a real flow (tests/harness.py: real worker, real dev server, the webhook IM's
real connector) whose file URL points at a real loopback file server, and assert the exact
REJECTED reason the chat is shown, or that the flow goes on. Two harnesses: `guarded` allows no
internal network at all (as a deployment does by default), `open` allows loopback, where the
tests' own servers listen, as an operator allows an on-premises IM.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from temporalio.testing import WorkflowEnvironment

from connectors.chat.webhook import signature as webhook_signature
from connectors.fetch import FetchFailed, FetchPolicy, FetchRefused, address_refused, fetch, is_internal
from signbridge.core.models import ActionInput, Actor, DocumentSource, StatusView
from signbridge.core.settings import Settings
from signbridge.pdf.sample import sample_contract
from tests.conftest import make_settings
from tests.harness import INITIATOR, A, Harness, harness
from tests.sim.servers import free_port, serve

SECRET = "test-webhook-secret"
CONTRACT = sample_contract("Fetch")
LIMIT = 1024 * 1024  # SIGNBRIDGE_MAX_DOCUMENT_BYTES of these tests: "1 MB"
NAME = "contract.pdf"
OWN_API = f"http://127.0.0.1:{free_port()}"  # SIGNBRIDGE_PUBLIC_URL of the open harness
ITSELF = "127.0.0.1 是 SignBridge 自己的地址（Cannot fetch contract.pdf: 127.0.0.1 is SignBridge itself）"


class FileHost:
    """A chat's file server on loopback: records every request, can fail, redirect and overflow."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []  # (path?query, headers)
        self.failures: dict[str, list[int]] = {}
        self.url = ""
        app = FastAPI()
        app.get("/{path:path}")(self._handle)
        self.app = app

    def fail(self, path: str, *statuses: int) -> None:
        """Answer the next requests for `path` with these statuses, then serve the contract."""
        self.failures[path] = list(statuses)

    def requests(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.seen if p.split("?")[0] == path]

    async def _handle(self, path: str, request: Request) -> Response:
        path = "/" + path
        self.seen.append((f"{path}?{request.url.query}", dict(request.headers)))
        pending = self.failures.get(path)
        if pending:
            return Response(status_code=pending.pop(0))
        if path.startswith("/status/"):
            return Response(status_code=int(path.rsplit("/", 1)[1]))
        if path == "/redirect":
            return RedirectResponse(request.query_params["to"], status_code=302)
        if path == "/loop":
            return RedirectResponse("/loop", status_code=302)
        if path == "/big":  # streamed, no Content-Length: only counting the bytes can stop it
            return StreamingResponse(_chunks(LIMIT + 1), media_type="application/pdf")
        if path == "/big-declared":
            return Response(b"x" * (LIMIT + 1), media_type="application/pdf")
        return Response(CONTRACT, media_type="application/pdf")


async def _chunks(total: int) -> AsyncIterator[bytes]:
    while total > 0:
        n = min(total, 64 * 1024)
        total -= n
        yield b"%" * n


@pytest.fixture(scope="module")
def files() -> Iterator[FileHost]:
    host = FileHost()
    with serve(host.app) as url:
        host.url = url
        yield host


@pytest.fixture(scope="module")
async def guarded(dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    """Every address allowed by name, no internal network allowed: only the address check refuses."""
    settings = make_settings(tmp_path_factory.mktemp("guarded") / "data", fetch_allow_networks="",
                             webhook_file_hosts="169.254.169.254,127.0.0.1,localhost,::1,0.0.0.0,10.0.0.5,100.64.0.1")
    async with harness(dev_env, settings) as h:
        yield h


@pytest.fixture(scope="module")
async def open_h(dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    settings = make_settings(tmp_path_factory.mktemp("open") / "data", fetch_allow_networks="127.0.0.1/32,::1/128",
                             webhook_file_hosts="127.0.0.1,localhost,10.0.0.5", api_file_hosts="127.0.0.1",
                             max_document_bytes=LIMIT, public_url=OWN_API)
    async with harness(dev_env, settings) as h:
        yield h


async def _rejected(h: Harness, url: str, **source: Any) -> str:
    handle = await h.start([[A]], documents=[DocumentSource(name=NAME, url=url, **source)])
    view = await h.wait_status(handle, "REJECTED")
    assert h.links_for(handle, A) == []
    return view.reason or ""


def internal(host: str) -> str:
    return (f"无法下载 {NAME}：{host} 指向内部网络地址（Cannot fetch {NAME}: {host} points to an internal network "
            "address）")


def not_allowed(host: str, setting: str = "SIGNBRIDGE_WEBHOOK_FILE_HOSTS") -> str:
    return (f"无法下载 {NAME}：{host} 不是允许的文件来源（Cannot fetch {NAME}: {host} is not an allowed file host; "
            f"an administrator can add it to {setting}）")


# ---- the address check, through the workflow --------------------------------------------------


@pytest.mark.parametrize("url, host", [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "169.254.169.254"),
    ("http://127.0.0.1:{port}/f/contract.pdf", "127.0.0.1"),
    ("http://localhost:{port}/f/contract.pdf", "localhost"),  # a name that resolves to loopback
    ("http://[::1]:{port}/f/contract.pdf", "::1"),
    ("http://0.0.0.0:{port}/f/contract.pdf", "0.0.0.0"),
    ("http://10.0.0.5/f/contract.pdf", "10.0.0.5"),
    ("http://100.64.0.1/f/contract.pdf", "100.64.0.1"),  # carrier-grade NAT (and Alibaba Cloud's metadata)
], ids=["metadata", "loopback", "localhost", "ipv6-loopback", "unspecified", "rfc1918", "cgnat"])
async def test_internal_addresses_are_rejected(guarded: Harness, files: FileHost, url: str, host: str) -> None:
    before = len(files.seen)
    port = files.url.rsplit(":", 1)[1]
    assert await _rejected(guarded, url.format(port=port)) == internal(host)
    assert len(files.seen) == before  # refused before connecting: the server never saw a request


async def test_a_host_not_listed_is_rejected_without_a_lookup(guarded: Harness) -> None:
    assert await _rejected(guarded, "https://files.attacker.example/c.pdf") == not_allowed("files.attacker.example")


# ---- what the URL itself says ------------------------------------------------------------------


@pytest.mark.parametrize("url, reason", [
    ("file:///etc/passwd", "只接受 http/https 网址，不接受 file://（Cannot fetch contract.pdf: only http and https "
                           "URLs are accepted, not file://）"),
    ("gopher://127.0.0.1:70/_SET%20x", "只接受 http/https 网址，不接受 gopher://127.0.0.1（Cannot fetch contract.pdf: "
                                       "only http and https URLs are accepted, not gopher://127.0.0.1）"),
    ("not a url", "只接受 http/https 网址（Cannot fetch contract.pdf: only http and https URLs are accepted）"),
    ("http://ops:hunter2@127.0.0.1/f/contract.pdf", "127.0.0.1 的地址不能带用户名或密码（Cannot fetch contract.pdf: "
                                                    "the URL on 127.0.0.1 must not carry a user name or password）"),
    (f"{OWN_API}/api/v1/signing-requests", "127.0.0.1 是 SignBridge 自己的地址（Cannot fetch contract.pdf: "
                                           "127.0.0.1 is SignBridge itself）"),
    # Development's playground serves the chat's files from SignBridge's origin: only a file right
    # under its path is let through, nothing that climbs out of it.
    (f"{OWN_API}/playground/files/x/../../../api/v1/signing-requests", ITSELF),
    (f"{OWN_API}/playground/files/a/b", ITSELF),
], ids=["file", "gopher", "not-a-url", "userinfo", "own-api", "own-playground-escape", "own-playground-deeper"])
async def test_unusable_urls_are_rejected_at_once(open_h: Harness, url: str, reason: str) -> None:
    assert await _rejected(open_h, url) == f"无法下载 {NAME}：{reason}"


# ---- redirects ---------------------------------------------------------------------------------


async def test_redirect_to_an_internal_address_is_rejected(open_h: Harness, files: FileHost) -> None:
    start = f"{files.url}/redirect?to=http://10.0.0.5/secret.pdf"
    assert await _rejected(open_h, start) == internal("10.0.0.5")
    assert files.requests("/redirect")  # the first hop was asked, the second never left the box


async def test_redirect_to_a_host_not_listed_is_rejected(open_h: Harness, files: FileHost) -> None:
    assert await _rejected(open_h, f"{files.url}/redirect?to=http://cdn.elsewhere.example/c.pdf") \
        == not_allowed("cdn.elsewhere.example")


async def test_redirect_loop_is_rejected(open_h: Harness, files: FileHost) -> None:
    before = len(files.requests("/loop"))
    assert await _rejected(open_h, f"{files.url}/loop") == (
        f"无法下载 {NAME}：127.0.0.1 重定向超过 5 次（Cannot fetch {NAME}: 127.0.0.1 redirected more than 5 times）")
    assert len(files.requests("/loop")) - before == 6  # the first request and five redirects, no more


async def test_signature_is_not_forwarded_to_a_redirect_target(open_h: Harness, files: FileHost) -> None:
    other = FileHost()
    with serve(other.app) as other_url:  # another host: same box, another name and port
        target = other_url.replace("127.0.0.1", "localhost") + "/f/moved.pdf"
        handle = await open_h.start([[A]], documents=[DocumentSource(
            name=NAME, url=f"{files.url}/redirect?to={target}")])
        await open_h.link(handle, A)  # fetched, checked and sent out: the flow goes on
    [first] = [headers for path, headers in files.seen if "moved.pdf" in path]
    webhook_signature.verify(SECRET, first["x-signbridge-timestamp"], first["x-signbridge-signature"], b"")
    [second] = other.requests("/f/moved.pdf")
    assert [k for k in second if k.startswith("x-signbridge")] == []
    view = await open_h.status(handle)
    assert view.document is not None and view.document.size == len(CONTRACT)


# ---- answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 404])
async def test_client_errors_are_rejected_with_the_status(open_h: Harness, files: FileHost, status: int) -> None:
    assert await _rejected(open_h, f"{files.url}/status/{status}") == (
        f"无法下载 {NAME}：127.0.0.1 拒绝提供文件（HTTP {status}）（Cannot fetch {NAME}: 127.0.0.1 answered HTTP "
        f"{status}; send the file again）")


@pytest.mark.parametrize("path", ["/big", "/big-declared"])
async def test_oversize_body_is_rejected(open_h: Harness, files: FileHost, path: str) -> None:
    assert await _rejected(open_h, f"{files.url}{path}") == (
        f"无法下载 {NAME}：127.0.0.1 上的文件超过 1 MB 的上限（Cannot fetch {NAME}: the file on 127.0.0.1 is larger "
        "than the 1 MB limit）")


async def test_server_error_is_retried_then_the_flow_goes_on(open_h: Harness, files: FileHost) -> None:
    files.fail("/f/flaky.pdf", 500, 429)
    handle = await open_h.start([[A]], documents=[DocumentSource(name=NAME, url=f"{files.url}/f/flaky.pdf")])
    await open_h.link(handle, A, timeout=30)
    assert len(files.requests("/f/flaky.pdf")) == 3
    assert (await open_h.status(handle)).status.value == "IN_PROGRESS"


async def test_outage_past_the_window_is_stuck_not_rejected_and_retry_recovers(
        open_h: Harness, files: FileHost) -> None:
    files.fail("/f/down.pdf", *[503] * 50)
    handle = await open_h.start([[A]], documents=[DocumentSource(name=NAME, url=f"{files.url}/f/down.pdf")],
                                timing=open_h.timing(step_retry_window=timedelta(seconds=3)))
    view = await open_h.wait_status(handle, "STUCK")
    assert view.stuck_step == "prepare"
    assert view.reason == f"prepare: could not fetch {NAME} from 127.0.0.1 (HTTP 503)"
    files.failures["/f/down.pdf"] = []
    await handle.execute_update("retry", ActionInput(actor=Actor(id="ops-1", name="Ops", is_operator=True)),
                                result_type=StatusView)
    await open_h.link(handle, A)


async def test_allow_listed_network_serves_the_file_with_the_chat_signature(
        open_h: Harness, files: FileHost) -> None:
    handle = await open_h.start([[A]], documents=[DocumentSource(name=NAME, url=f"{files.url}/f/signed.pdf")])
    await open_h.link(handle, A)
    [headers] = files.requests("/f/signed.pdf")
    webhook_signature.verify(SECRET, headers["x-signbridge-timestamp"], headers["x-signbridge-signature"], b"")
    view = await open_h.status(handle)
    assert view.document is not None and view.document.size == len(CONTRACT)


# ---- REST `file_url`: its own allow-list, never the chat's signature ----------------------------

AUTH = {"Authorization": "Bearer test-api-key"}


async def _rest(h: Harness, file_url: str) -> str:
    body = {"title": "采购合同", "initiator": INITIATOR.model_dump(), "groups": [[A.model_dump()]],
            "file_url": file_url, "file_name": NAME}
    resp = await h.http.post("/api/v1/signing-requests", headers=AUTH, json=body)
    assert resp.status_code == 202, resp.text
    return str(resp.json()["request_id"])


async def test_rest_file_url_needs_the_api_allow_list(open_h: Harness, files: FileHost) -> None:
    # localhost is a webhook IM file host here, but not one REST callers may name
    url = files.url.replace("127.0.0.1", "localhost") + "/f/rest-refused.pdf"
    handle = open_h.client.get_workflow_handle(await _rest(open_h, url))
    view = await open_h.wait_status(handle, "REJECTED")
    assert view.reason == not_allowed("localhost", "SIGNBRIDGE_API_FILE_HOSTS")
    assert files.requests("/f/rest-refused.pdf") == []


async def test_rest_file_url_is_fetched_without_the_chat_signature(open_h: Harness, files: FileHost) -> None:
    handle = open_h.client.get_workflow_handle(await _rest(open_h, f"{files.url}/f/rest.pdf"))
    await open_h.link(handle, A)
    [headers] = files.requests("/f/rest.pdf")
    assert [k for k in headers if k.startswith("x-signbridge")] == []


def test_rest_allow_list_is_empty_and_webhook_defaults_to_its_outbound_host(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, webhook_outbound_url="https://IM.corp.example:8443/signbridge")
    assert settings.api_file_host_list == [] and settings.fetch_allow_network_list == []
    assert settings.webhook_file_host_list == ["im.corp.example"]
    listed = Settings(data_dir=tmp_path, webhook_outbound_url="https://im.corp.example/out",
                      webhook_file_hosts="files.corp.example, [fd00::1]")
    assert listed.webhook_file_host_list == ["files.corp.example", "fd00::1"]
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        Settings(fetch_allow_networks="10.0.0.0/33")


# ---- the pieces on their own ---------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.100.100.200", "0.0.0.0",
    "224.0.0.1", "255.255.255.255", "192.0.0.192", "198.18.0.1", "::1", "::", "fe80::1", "fd00:ec2::254",
    "ff02::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:7f00:1::",
])
def test_internal_addresses(address: str) -> None:
    assert is_internal(ip_address(address))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700::1111", "::ffff:93.184.216.34"])
def test_public_addresses(address: str) -> None:
    assert not is_internal(ip_address(address))


def test_allow_listed_networks_include_their_ipv4_mapped_form() -> None:
    allowed = [ip_network("10.0.0.0/8")]
    assert not address_refused(ip_address("10.9.8.7"), allowed)
    assert not address_refused(ip_address("::ffff:10.9.8.7"), allowed)
    assert address_refused(ip_address("192.168.0.1"), allowed)


async def test_a_server_that_stalls_is_a_retryable_failure() -> None:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> Response:
        await asyncio.sleep(5)
        return Response(CONTRACT)

    with serve(app) as url:
        policy = FetchPolicy(hosts=("127.0.0.1",), hosts_setting="X", allow_networks=(ip_network("127.0.0.1"),),
                             timeout=0.5)
        with pytest.raises(FetchFailed) as failed:
            await fetch(f"{url}/slow", name="c.pdf", policy=policy, max_bytes=LIMIT)
        assert str(failed.value).startswith("could not fetch c.pdf from 127.0.0.1 (")
        with pytest.raises(FetchRefused) as refused:  # the same policy without the network: refused, not retried
            await fetch(f"{url}/slow", name="c.pdf", policy=FetchPolicy(hosts=("127.0.0.1",), hosts_setting="X"),
                        max_bytes=LIMIT)
        assert "127.0.0.1 points to an internal network address" in refused.value.message



def test_only_development_fetches_the_playground_files_from_signbridge_itself(tmp_path: Path) -> None:
    development = FetchPolicy.from_settings(make_settings(tmp_path), ["127.0.0.1"], "X")
    production = FetchPolicy.from_settings(make_settings(tmp_path, environment="production"), ["127.0.0.1"], "X")
    assert development.own_paths == ("/playground/files/",) and production.own_paths == ()
