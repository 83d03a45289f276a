"""What to probe: the URL, the name it carries, and the address to connect to."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from probe.errors import ProbeError, UsageError


@dataclass(frozen=True)
class Target:
    url: str
    host: str
    address: str
    port: int
    path: str
    scheme: str = "http"

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def as_json(self) -> dict:
        return {"url": self.url, "host": self.host, "address": self.address, "port": self.port}


@dataclass(frozen=True)
class Resolve:
    """One `--resolve HOST:PORT:ADDR` entry, with curl's meaning."""

    host: str
    port: int
    address: str


DEFAULT_PORTS = {"http": 80, "https": 443}


class Url(NamedTuple):
    host: str
    port: int
    path: str
    scheme: str = "http"

    @property
    def canonical(self) -> str:
        """The URL as reports name it: scheme and host lower-case, the default port left out."""
        port = "" if self.port == DEFAULT_PORTS[self.scheme] else f":{self.port}"
        return f"{self.scheme}://{self.host}{port}{self.path}"


def parse_url(text: str) -> Url:
    """Split `http[s]://HOST[:PORT][/PATH]` (or a bare host, meaning http://) into its parts."""
    text = text.strip()
    if not text:
        raise UsageError("empty URL: give http[s]://HOST[:PORT][/PATH] or a host name")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UsageError(f"unsupported scheme {parts.scheme!r}: only http:// and https:// URLs can be probed")
    if parts.username or parts.password:
        raise UsageError("credentials in the URL are not supported")
    host = parts.hostname
    if not host:
        raise UsageError(f"no host in URL {text!r}")
    if ":" in host:
        raise UsageError(f"IPv6 targets are not supported yet: {host}")
    if not host.isascii():  # an internationalised name goes on the wire (DNS, Host:) as IDNA
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise UsageError(f"{host!r} is not a valid internationalised host name") from None
    if not all(c.isalnum() or c in "._-" for c in host):
        raise UsageError(f"{host!r} is not a host name or IPv4 address")
    last_label = host.rstrip(".").rsplit(".", 1)[-1]
    if last_label.isdigit() or last_label.lower().startswith("0x"):
        # no top-level domain is numeric: this is an address, and only the plain dotted-quad form
        # is taken (the resolver would read "1.2.3" as 1.2.0.3 and "010.1.1.1" as octal: a probe
        # must never go somewhere other than where the user thinks)
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise UsageError(f"{host!r} is not a plain IPv4 address: write four decimal numbers, "
                             f"e.g. 198.51.100.80") from None
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"bad port in URL {text!r}: it must be a number from 1 to 65535") from None
    if port is None:
        port = DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise UsageError(f"bad port {port}: it must be from 1 to 65535")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    bad = next((c for c in path if not "\x21" <= c <= "\x7e"), None)
    if bad is not None:  # HTTP allows only visible ASCII in a request target (RFC 9112, 3.2)
        raise UsageError(f"{bad!r} cannot stand in a URL's path: percent-encode it (a space is %20)")
    return Url(host, port, path, scheme)


def parse_resolve(text: str) -> Resolve:
    """Parse `HOST:PORT:ADDR` as curl does."""
    fields = text.split(":")
    if len(fields) != 3 or not all(fields):
        raise UsageError(f"bad --resolve {text!r}: expected HOST:PORT:ADDR, e.g. www.example.com:80:198.51.100.80")
    host, port_text, address = fields
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"bad port in --resolve {text!r}: it must be a number from 1 to 65535")
    check_address(address)
    return Resolve(host.lower(), int(port_text), address)


def check_address(address: str) -> ipaddress.IPv4Address:
    """Refuse what cannot be probed over a network path."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(f"{address!r} is not an IP address") from None
    if ip.version != 4:
        raise UsageError(f"IPv6 targets are not supported yet: {address}")
    if ip.is_loopback or ip.is_unspecified:
        raise UsageError(f"{address} is this host: probe needs a target across a network path")
    if ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise UsageError(f"{address} is a multicast or broadcast address, not a single server")
    return ip


def build_target(url: str, resolves: list[Resolve] | tuple[Resolve, ...] = ()) -> Target:
    """Parse the URL and find the address to connect to (--resolve first, then DNS)."""
    host, port, path, scheme = parsed = parse_url(url)
    canonical = parsed.canonical
    for entry in resolves:
        if entry.host == host.lower() and entry.port == port:
            return Target(canonical, host, entry.address, port, path, scheme)
    if _is_ip_literal(host):
        check_address(host)
        return Target(canonical, host, host, port, path, scheme)
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ProbeError(f"cannot resolve {host}: {getattr(error, 'strerror', None) or error}; "
                         f"use --resolve {host}:{port}:ADDR to give the address") from None
    address = infos[0][4][0]
    check_address(address)
    return Target(canonical, host, address, port, path, scheme)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
