"""What to probe: the URL, the name it carries, and the address to connect to.

Both families: an IPv6 address stands in a URL in brackets (`http://[2001:db8::80]/`, RFC 3986
3.2.2), and in `--resolve HOST:PORT:[ADDR]` with or without them (curl takes both). A name is
looked up for either family, in the order the system's address selection gives (RFC 6724, as
curl's first attempt), unless `-4`/`-6` pick one (curl's `--ipv4`/`--ipv6`).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from probe.errors import ProbeError, UsageError


FAMILY_NAMES = {4: "ipv4", 6: "ipv6"}


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

    @property
    def family(self) -> int:
        """4 or 6: the IP version of the address we connect to."""
        return ipaddress.ip_address(self.address).version

    def as_json(self) -> dict:
        return {"url": self.url, "host": self.host, "address": self.address, "port": self.port,
                "family": FAMILY_NAMES[self.family]}


def url_host(host: str) -> str:
    """The host as it stands in a URL or a Host header: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


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
        return f"{self.scheme}://{url_host(self.host)}{port}{self.path}"


def parse_url(text: str) -> Url:
    """Split `http[s]://HOST[:PORT][/PATH]` (or a bare host, meaning http://) into its parts."""
    text = text.strip()
    if not text:
        raise UsageError("empty URL: give http[s]://HOST[:PORT][/PATH] or a host name")
    if "://" not in text:
        if _is_ipv6_literal(text):  # a bare IPv6 address: its colons are not a port
            text = f"[{text}]"
        text = "http://" + text
    try:
        parts = urlsplit(text)
    except ValueError:  # urllib: "Invalid IPv6 URL" (an unclosed bracket)
        raise UsageError(f"bad URL {text!r}: an IPv6 address goes in brackets, e.g. http://[2001:db8::80]/") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise UsageError(f"unsupported scheme {parts.scheme!r}: only http:// and https:// URLs can be probed")
    if parts.username or parts.password:
        raise UsageError("credentials in the URL are not supported")
    host = parts.hostname
    if not host:
        raise UsageError(f"no host in URL {text!r}")
    if "[" in parts.netloc:
        if not _is_ipv6_literal(host):
            raise UsageError(f"[{host}] is not an IPv6 address: only an IPv6 address goes in brackets")
        address, zone = host.split("%", 1) if "%" in host else (host, None)
        host = _ipv6_text(ipaddress.IPv6Address(address)) + (f"%{zone}" if zone is not None else "")
        return Url(host, _url_port(parts, text, scheme), _url_path(parts), scheme)
    hostport = parts.netloc.rsplit("@", 1)[-1]
    if _is_ipv6_literal(hostport) or _is_ipv6_literal(hostport.rsplit(":", 1)[0]):  # http://2001:db8::1/
        raise UsageError(f"bad URL {text!r}: an IPv6 address goes in brackets, e.g. http://[2001:db8::80]/")
    if not host.isascii():  # an internationalised name goes on the wire (DNS, Host:) as IDNA
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise UsageError(f"{host!r} is not a valid internationalised host name") from None
    if not all(c.isalnum() or c in "._-" for c in host):
        raise UsageError(f"{host!r} is not a host name or IP address")
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
    return Url(host, _url_port(parts, text, scheme), _url_path(parts), scheme)


def _url_port(parts, text: str, scheme: str) -> int:
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"bad port in URL {text!r}: it must be a number from 1 to 65535") from None
    if port is None:
        port = DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise UsageError(f"bad port {port}: it must be from 1 to 65535")
    return port


def _url_path(parts) -> str:
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    bad = next((c for c in path if not "\x21" <= c <= "\x7e"), None)
    if bad is not None:  # HTTP allows only visible ASCII in a request target (RFC 9112, 3.2)
        raise UsageError(f"{bad!r} cannot stand in a URL's path: percent-encode it (a space is %20)")
    return path


def parse_resolve(text: str) -> Resolve:
    """Parse `HOST:PORT:ADDR` as curl does; an IPv6 ADDR may stand in brackets (`[2001:db8::80]`)."""
    fields = text.split(":", 2)
    if len(fields) != 3 or not all(fields):
        raise UsageError(f"bad --resolve {text!r}: expected HOST:PORT:ADDR, e.g. www.example.com:80:198.51.100.80 "
                         f"or www.example.com:80:[2001:db8::80]")
    host, port_text, address = fields
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"bad port in --resolve {text!r}: it must be a number from 1 to 65535")
    ip = check_address(address)
    return Resolve(host.lower(), int(port_text), str(ip))


V4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def check_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Refuse what cannot be probed over a network path (either family)."""
    if "%" in address:
        plain, zone = address.split("%", 1)
        if _is_ipv6_literal(plain) and ipaddress.IPv6Address(plain).is_link_local:
            return ipaddress.IPv6Address(f"{ipaddress.IPv6Address(plain)}%{interface_of(zone, address)}")
        raise UsageError(f"{address!r} is not an IP address (a %zone belongs to link-local IPv6 addresses only)")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(f"{address!r} is not an IP address") from None
    if ip.is_loopback or ip.is_unspecified:
        raise UsageError(f"{ip} is this host: probe needs a target across a network path")
    if ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        raise UsageError(f"{ip} is a multicast or broadcast address, not a single server")
    if ip.version == 6 and ip in V4_MAPPED:
        raise UsageError(f"{address} is an IPv4-mapped IPv6 address: probe the IPv4 address {ip.ipv4_mapped} itself")
    if ip.version == 6 and ip.is_link_local:
        raise UsageError(f"{ip} is link-local: it needs a zone, the interface of its link "
                         f"(e.g. [{ip}%eth0] in a URL, written [{ip}%25eth0] by RFC 6874)")
    return ip


def interface_of(zone: str, address: str) -> str:
    """The interface a link-local address's zone names (RFC 4007 11: a name or an index; in a
    URL the % is written %25, RFC 6874), checked to exist on this host."""
    candidates = [zone] + ([zone[2:]] if zone.startswith("25") and len(zone) > 2 else [])
    for name in candidates:
        try:
            if name.isdigit():
                return socket.if_indextoname(int(name))
            socket.if_nametoindex(name)
            return name
        except (OSError, OverflowError):
            continue
    raise UsageError(f"{address}: this host has no interface {candidates[-1]!r} (the zone names the link the "
                     f"link-local address is on: see ip link)")


def connectable(address: str) -> str:
    """The address as packets carry it: a link-local address's zone is handed to the sender
    (probe.network.wire.remember_zone) and left out, since no packet carries it."""
    if "%" not in address:
        return address
    plain, zone = address.split("%", 1)
    from probe.network.wire import remember_zone

    remember_zone(plain, socket.if_nametoindex(zone))
    return plain


def check_family(address: str, family: int | None, where: str) -> None:
    version = ipaddress.ip_address(address.split("%")[0]).version
    if family is not None and version != family:
        raise UsageError(f"{where} {address} is an IPv{version} address, but -{family} asks for IPv{family}")


_LOOKUP_FAMILY = {None: socket.AF_UNSPEC, 4: socket.AF_INET, 6: socket.AF_INET6}


def build_target(url: str, resolves: list[Resolve] | tuple[Resolve, ...] = (), family: int | None = None) -> Target:
    """Parse the URL and find the address to connect to (--resolve first, then DNS). `family`
    (4, 6 or None for either) is curl's `-4`/`-6`: a name is looked up only in it, and an
    address of the other family (in the URL or a --resolve entry) is refused."""
    host, port, path, scheme = parsed = parse_url(url)
    canonical = parsed.canonical
    entry = pinned_address(resolves, host, port, family)
    if entry is not None:
        return Target(canonical, host, connectable(entry.address), port, path, scheme)
    if is_ip_literal(host):
        address = str(check_address(host))
        check_family(address, family, "the URL's address")
        return Target(canonical, host, connectable(address), port, path, scheme)
    try:
        infos = socket.getaddrinfo(host, port, _LOOKUP_FAMILY[family], socket.SOCK_STREAM, 0,
                                   socket.AI_ADDRCONFIG)
    except (socket.gaierror, UnicodeError) as error:
        what = f" over IPv{family}" if family else ""
        raise ProbeError(f"cannot resolve {host}{what}: {getattr(error, 'strerror', None) or error}; "
                         f"use --resolve {host}:{port}:ADDR to give the address") from None
    usable = [info for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not usable:
        raise ProbeError(f"cannot resolve {host}: no IPv4 or IPv6 address; "
                         f"use --resolve {host}:{port}:ADDR to give the address")
    address = str(check_address(usable[0][4][0]))
    return Target(canonical, host, address, port, path, scheme)


def pinned_address(resolves, host: str, port: int, family: int | None = None) -> Resolve | None:
    """The --resolve entry for HOST:PORT (the first one of `family`, when one is asked: a name
    pinned to an address of each family is probed over the one -4/-6 picks); None when none
    names HOST:PORT; UsageError when every one that does is of the other family."""
    entries = [entry for entry in resolves if entry.host == host.lower() and entry.port == port]
    for entry in entries:
        if family is None or ipaddress.ip_address(entry.address.split("%")[0]).version == family:
            return entry
    if entries:
        check_family(entries[0].address, family, "--resolve address")
    return None


def targets_by_family(url: str, resolves: list[Resolve] | tuple[Resolve, ...] = ()) -> list[tuple[int, Target | str]]:
    """For `check --both-families`: (4, Target or why there is none), (6, ...). A name pinned by
    --resolve entries is probed at the entry of each family (a family without one has no
    address: curl's --resolve replaces the lookup); otherwise the name is looked up in each
    family. A literal address has one family only (UsageError); no address in either family is
    a ProbeError (exit 1)."""
    host, port, _path, _scheme = parse_url(url)
    if is_ip_literal(host):
        version = ipaddress.ip_address(host.split("%")[0]).version
        raise UsageError(f"{host} is an IPv{version} address: probing both families needs a host name "
                         f"(with --resolve {host if ':' not in host else 'HOST'}:{port}:ADDR for each family, if need be)")
    pinned = [entry for entry in resolves if entry.host == host.lower() and entry.port == port]
    found: list[tuple[int, Target | str]] = []
    for family in (4, 6):
        if pinned and all(ipaddress.ip_address(entry.address.split("%")[0]).version != family for entry in pinned):
            found.append((family, f"no IPv{family} address: the --resolve entries for {host}:{port} give "
                                  f"IPv{10 - family} only"))
            continue
        try:
            found.append((family, build_target(url, resolves, family)))
        except UsageError:
            raise
        except ProbeError as error:
            found.append((family, str(error)))
    if not any(isinstance(target, Target) for _, target in found):
        raise ProbeError(f"{host} has no address to probe in either family ({found[0][1]}; {found[1][1]})")
    return found


def checked_family(ipv4: bool, ipv6: bool) -> int | None:
    """curl's `-4`/`--ipv4` and `-6`/`--ipv6`: 4, 6, or None for whichever the name gives first."""
    if ipv4 and ipv6:
        raise UsageError("-4 and -6 exclude each other here: give one, or neither for either family "
                         "(probe check -4 -6 probes both families)")
    return 4 if ipv4 else 6 if ipv6 else None


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def _ipv6_text(ip: ipaddress.IPv6Address) -> str:
    """RFC 5952's text of an IPv6 address (an IPv4-mapped one ends in a dotted quad, 5.)."""
    return f"::ffff:{ip.ipv4_mapped}" if ip.ipv4_mapped is not None else str(ip)


def _is_ipv6_literal(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text.split("%")[0])
    except ValueError:
        return False
    return True
