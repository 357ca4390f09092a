"""Fetch a document from a URL someone else named, without letting that URL reach inside.

A file URL in a chat event or a REST call is untrusted input: pointed at `169.254.169.254`, at
SignBridge's own API or at an intranet host, an unguarded GET turns SignBridge into a proxy into
its own network (SSRF). `fetch` therefore

- accepts only `http`/`https` URLs without user info, on the hosts the operator listed
  (`FetchPolicy.hosts`), and never SignBridge's own public origin;
- checks the address it connects to, for every connection: no loopback, private, link-local,
  CGNAT, multicast, reserved or metadata address (IPv4 embedded in IPv6 included) unless its
  network is allow-listed. The check sits in the connection itself (an httpcore network backend
  that resolves the name once and connects to the address it checked), so a DNS answer that
  changes between check and connect (rebinding) cannot slip through;
- follows at most `max_redirects` redirects by hand, checking each hop like the first, and sends
  the caller's credentials (the webhook IM's signature) only to the first URL's origin;
- answers `FetchRefused` (the input is wrong: retrying cannot help; the message names the host,
  never the URL, which may hold a token) or `FetchFailed` (an outage, 5xx, 429 or timeout: retry).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Any

import anyio
import httpcore
import httpx

from connectors.http import read_within
from signbridge.core.settings import Settings

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Not global, yet `ipaddress.is_global` says so on some Python versions: IETF protocol assignments
# (Oracle Cloud's metadata service answers at 192.0.0.192).
ALWAYS_INTERNAL = (ip_network("192.0.0.0/24"),)
NAT64 = ip_network("64:ff9b::/96")  # the last 32 bits are an IPv4 address the gateway reaches
RETRY_STATUSES = frozenset({408, 425, 429})
MIB = 1024 * 1024


class FetchRefused(Exception):
    """The URL or its answer is not usable (bad URL, forbidden host, 4xx, too large): the user's input."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FetchFailed(Exception):
    """Outage, timeout, 5xx or rate limit: retrying later may work."""


@dataclass(frozen=True)
class FetchPolicy:
    hosts: tuple[str, ...]  # names (or `*.suffix`) a URL and each redirect may name
    hosts_setting: str  # the setting an operator changes to add a host, named in refusals
    allow_networks: tuple[IPNetwork, ...] = ()  # internal networks that may still be reached
    own_origin: str | None = None  # SignBridge's public URL: never fetched from…
    own_paths: tuple[str, ...] = ()  # …but for files right under these paths (development's playground chat)
    timeout: float = 30.0  # the whole fetch, redirects included
    max_redirects: int = 5

    @classmethod
    def from_settings(cls, settings: Settings, hosts: Iterable[str], hosts_setting: str) -> FetchPolicy:
        return cls(hosts=tuple(hosts), hosts_setting=hosts_setting,
                   allow_networks=tuple(settings.fetch_allow_network_list), own_origin=settings.public_url,
                   own_paths=settings.fetchable_own_paths, timeout=settings.fetch_timeout_seconds)


def _own_file(path: str, prefixes: tuple[str, ...]) -> bool:
    """A single file name right under one of `prefixes` (no further segments, no dots, no escapes)."""
    return any(path.startswith(p) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", path[len(p):]) for p in prefixes)


def is_internal(ip: IPAddress) -> bool:
    """True for every address that is not a public unicast address, IPv4 inside IPv6 unwrapped."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return is_internal(embedded)
    return not ip.is_global or ip.is_multicast or any(ip in net for net in ALWAYS_INTERNAL)


def address_refused(ip: IPAddress, allow_networks: Iterable[IPNetwork]) -> bool:
    allowed = [a for a in (ip, _embedded_ipv4(ip)) if a is not None]
    if any(a in net for a in allowed for net in allow_networks):
        return False
    return is_internal(ip)


def _embedded_ipv4(ip: IPAddress) -> IPv4Address | None:
    if isinstance(ip, IPv4Address):
        return None
    if ip in NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.ipv4_mapped or ip.sixtofour


async def fetch(url: str, *, name: str, policy: FetchPolicy, max_bytes: int,
                credentials: Mapping[str, str] | None = None) -> bytes:
    """The body of `url` (at most `max_bytes`), or `FetchRefused` / `FetchFailed`."""
    first = _checked(url, name, policy)
    target = first
    transport = _GuardedTransport(policy.allow_networks)
    try:
        async with asyncio.timeout(policy.timeout), httpx.AsyncClient(
                transport=transport, timeout=policy.timeout, trust_env=False) as http:
            for _ in range(policy.max_redirects + 1):
                headers = dict(credentials or {}) if _origin(target) == _origin(first) else {}
                async with http.stream("GET", target, headers=headers) as resp:
                    if resp.is_redirect:
                        target = _checked(_join(target, resp.headers["location"]), name, policy)
                        continue
                    _raise_for_status(resp.status_code, name, target.host)
                    return await read_within(resp, max_bytes, _too_big(name, target.host, max_bytes))
    except InternalAddress as e:
        log.warning("refused to fetch %s from %s: it resolves to internal address %s", name, e.host, e.ip)
        raise FetchRefused(f"无法下载 {name}：{e.host} 指向内部网络地址（Cannot fetch {name}: {e.host} "
                           "points to an internal network address）") from None
    except (httpx.HTTPError, TimeoutError) as e:
        raise FetchFailed(f"could not fetch {name} from {target.host} ({type(e).__name__}: {e})") from e
    raise FetchRefused(f"无法下载 {name}：{first.host} 重定向超过 {policy.max_redirects} 次（Cannot fetch {name}: "
                       f"{first.host} redirected more than {policy.max_redirects} times）")


def _checked(url: str, name: str, policy: FetchPolicy) -> httpx.URL:
    """Everything about one hop that can be decided before connecting."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = httpx.URL("")
    host = parsed.host
    if parsed.scheme not in ("http", "https") or not host or not 0 < (parsed.port or 80) < 65536:
        other = f"{parsed.scheme}://{host}" if parsed.scheme not in ("http", "https", "") else ""
        raise FetchRefused(f"无法下载 {name}：只接受 http/https 网址{'，不接受 ' + other if other else ''}（Cannot "
                           f"fetch {name}: only http and https URLs are accepted{', not ' + other if other else ''}）")
    if parsed.userinfo:
        raise FetchRefused(f"无法下载 {name}：{host} 的地址不能带用户名或密码（Cannot fetch {name}: the URL on "
                           f"{host} must not carry a user name or password）")
    if policy.own_origin and _origin(parsed) == _origin(httpx.URL(policy.own_origin)) and not _own_file(
            parsed.path, policy.own_paths):
        raise FetchRefused(f"无法下载 {name}：{host} 是 SignBridge 自己的地址（Cannot fetch {name}: {host} is "
                           "SignBridge itself）")
    if not any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in policy.hosts):
        raise FetchRefused(f"无法下载 {name}：{host} 不是允许的文件来源（Cannot fetch {name}: {host} is not an "
                           f"allowed file host; an administrator can add it to {policy.hosts_setting}）")
    return parsed


def _join(base: httpx.URL, location: str) -> str:
    try:
        return str(base.join(location))
    except httpx.InvalidURL:
        return ""  # refused by `_checked` as not an http(s) URL


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


def _raise_for_status(status: int, name: str, host: str) -> None:
    """2xx: go on. Outages and rate limits: retry. Anything else the server meant: refused."""
    if 200 <= status < 300:
        return
    if status >= 500 or status in RETRY_STATUSES:
        raise FetchFailed(f"could not fetch {name} from {host} (HTTP {status})")
    raise FetchRefused(f"无法下载 {name}：{host} 拒绝提供文件（HTTP {status}）（Cannot fetch {name}: {host} "
                       f"answered HTTP {status}; send the file again）")


def _too_big(name: str, host: str, max_bytes: int) -> FetchRefused:
    mb = max_bytes // MIB
    return FetchRefused(f"无法下载 {name}：{host} 上的文件超过 {mb} MB 的上限（Cannot fetch {name}: the file "
                        f"on {host} is larger than the {mb} MB limit）")


# ---- the connection-level address check ---------------------------------------------------------


class InternalAddress(Exception):
    """Raised inside the connection: `host` resolved to `ip`, which policy forbids."""

    def __init__(self, host: str, ip: IPAddress) -> None:
        super().__init__(f"{host} resolves to internal address {ip}")
        self.host = host
        self.ip = ip


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolve once, refuse if any answer is internal, connect to the checked addresses only."""

    def __init__(self, allow_networks: Iterable[IPNetwork]) -> None:
        self._allow = tuple(allow_networks)
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        for ip in addresses:
            if address_refused(ip, self._allow):
                raise InternalAddress(host, ip)
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for ip in addresses:
            try:
                return await self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never used for fetching")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    @staticmethod
    async def _resolve(host: str, port: int, timeout: float | None) -> list[IPAddress]:
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError as e:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from e
        except OSError as e:
            raise httpcore.ConnectError(f"cannot resolve {host} ({e})") from e
        found: list[IPAddress] = []
        for info in infos:
            ip = ip_address(str(info[4][0]).split("%", 1)[0])
            if ip not in found:
                found.append(ip)
        return found


@cache
def _ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport over `_GuardedBackend`. httpx has no parameter for the network backend
    (encode/httpx#3749), so the connection pool it builds is replaced by one that has it."""

    def __init__(self, allow_networks: Iterable[IPNetwork]) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(ssl_context=_ssl_context(),
                                                  network_backend=_GuardedBackend(allow_networks))
