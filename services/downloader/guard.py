"""Where the downloader may connect: no SSRF through an answer's URL.

An answer names the URL to fetch, so whoever controls an answer (or a redirect)
could make the downloader read `http://127.0.0.1:4151/stats` or the cloud
metadata service. Every connection, the first and each redirect hop's, goes
through `GuardedBackend`: it resolves the host once, refuses loopback, private,
link-local (metadata), multicast and other non-public addresses unless the
operator allowed that host or range (`--allow-download-host`), and connects to
the very address it checked, so a DNS server answering differently the second
time (rebinding) gets no second question.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_HOSTNAME = re.compile(r"^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$")


class DownloadRefused(Exception):
    """The URL's host is not a public address and nobody allowed it."""


def refused_kind(ip: IPAddress) -> str | None:
    """What makes `ip` off limits ("loopback", "private" …), or None for a public address.

    IPv6 forms that carry an IPv4 address (mapped, 6to4, NAT64) are judged by it."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour
        if inner is None and ip in _NAT64:
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if inner is not None:
            return refused_kind(inner)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata)"
    if ip.is_private:
        return "private"
    if ip.is_multicast:
        return "multicast"
    if not ip.is_global:
        return "non-public"
    return None


@dataclass(frozen=True)
class Allowance:
    """Hosts (by name or address, optionally one port) and ranges the operator allowed."""

    hosts: frozenset[tuple[str, int | None]] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Allowance:
        """`HOST`, `HOST:PORT`, `[IPv6]:PORT` or `CIDR`; ValueError naming a bad entry."""
        hosts: set[tuple[str, int | None]] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"{raw!r} is not a CIDR range") from None
                continue
            hosts.add(_host_port(raw, entry))
        return cls(frozenset(hosts), tuple(networks))

    def __bool__(self) -> bool:
        return bool(self.hosts or self.networks)

    def host_allowed(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".").strip("[]")
        return (host, port) in self.hosts or (host, None) in self.hosts

    def address_allowed(self, ip: IPAddress, port: int) -> bool:
        return self.host_allowed(str(ip), port) or any(ip in net for net in self.networks)


def _host_port(raw: str, entry: str) -> tuple[str, int | None]:
    host, port = entry, ""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{raw!r}: bad port {port!r}")
    host = host.rstrip(".")
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ValueError(f"{raw!r} is not HOST, HOST:PORT or CIDR") from None
    return host, int(port) if port else None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the address check before every TCP connect."""

    def __init__(self, allowance: Allowance, inner: httpcore.AsyncNetworkBackend | None = None):
        self.allowance = allowance
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._checked_addresses(host, port, timeout)
        failure: Exception | None = None
        for ip in addresses:  # the addresses checked, never the name again
            try:
                return await self.inner.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def _checked_addresses(
        self, host: str, port: int, timeout: float | None
    ) -> list[IPAddress]:
        try:
            async with asyncio.timeout(timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses: list[IPAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if ip not in addresses:
                addresses.append(ip)
        if self.allowance.host_allowed(host, port):
            return addresses
        for ip in addresses:
            kind = refused_kind(ip)
            if kind is not None and not self.allowance.address_allowed(ip, port):
                shown = host if host == str(ip) else f"{host} ({ip})"
                raise DownloadRefused(
                    f"refused: {shown}:{port} is a {kind} address "
                    "(allow it with --allow-download-host if it is meant)"
                )
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DownloadRefused("refused: unix sockets are never downloaded from")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport whose every connection goes through `GuardedBackend`; no proxy
    from the environment (a proxy would make the check on the proxy, not the target)."""

    def __init__(
        self, allowance: Allowance, *, limits: httpx.Limits, ssl_context: ssl.SSLContext
    ) -> None:
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allowance),
        )
