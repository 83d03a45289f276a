"""A network-namespace lab: a client, a chain of N routers and a server, with path delay.

Address plan (fixed; probes, boxes and tests rely on it)::

    client  ns {prefix}-c    c0  192.0.2.10/24        default via 192.0.2.1
       |                          192.0.2.0/24
    r1      ns {prefix}-r1   up  192.0.2.1/24         192.0.2.0/24 connected
       |                     dn  198.51.100.1/30      default via 198.51.100.2
    r2      ns {prefix}-r2   up  198.51.100.2/30      192.0.2.0/24 via 198.51.100.1
       |                     dn  198.51.100.5/30      default via 198.51.100.6
      ...   r_k.dn = 198.51.100.(4k-3)/30,  r_{k+1}.up = 198.51.100.(4k-2)/30
       |
    rN      ns {prefix}-rN   up  198.51.100.(4N-6)/30 192.0.2.0/24 via 198.51.100.(4N-7)
       |                     dn  203.0.113.1/24       203.0.113.0/24 connected
       |                          203.0.113.0/24
    server  ns {prefix}-s    s0  203.0.113.80/24 (+ add_server_address)  default via 203.0.113.1
              nginx :80 (/ and /big), abort_server :8080 (RST after the headers), :81 closed,
              nginx TLS :443 (certificate of the lab's CA, `lab.ca_file`), abort_server :8443
              (RST after the ClientHello), :444 closed,
              delay line: NFQUEUE on INPUT -i s0 and OUTPUT -o s0, delay_ms/2 each way

(With N = 1, r1.dn is 203.0.113.1/24 and r1 has both networks connected.)

IPv6 plan (beside the IPv4 one, which it leaves as it was; 2001:db8::/32 only, RFC 3849): the
same chain, one /64 per link, the IPv4 address's last number kept where it means something::

    client  c0  2001:db8:2::10/64        default via 2001:db8:2::1
    r1      up  2001:db8:2::1/64         dn  2001:db8:100:1::1/64   default via 2001:db8:100:1::2
    r_k     up  2001:db8:100:(k-1)::2/64 dn  2001:db8:100:k::1/64   2001:db8:2::/64 via 2001:db8:100:(k-1)::1
    rN      up  2001:db8:100:(N-1)::2/64 dn  2001:db8:113::1/64
    server  s0  2001:db8:113::80/64      default via 2001:db8:113::1
              nginx [::]:80 too, abort_server [::]:8080 too, [::]:81 closed, the same delay line
              (ip6tables NFQUEUE beside iptables, one queue for both families)

(`router_addr6(k)`, `client_addr6`, `server_addr6`; with N = 1, r1.dn is 2001:db8:113::1.)
No router advertisement, autoconfiguration or duplicate address detection: every address is
usable at once and only the link-local addresses and neighbour discovery join the traffic
under test.

Ready means every link is operationally up (`up()` and `restore_client_link()` wait for it). A
veth whose index equals its peer's (both 2 in their own namespaces, as `c0` and r1's `up` are)
is not an "urgent" link event for the kernel's linkwatch, which then handles its carrier up to
a second later (net/core/link_watch.c); until then the device transmits through the noop
qdisc, which drops everything. A lab handed over before that lost r1's first neighbour
advertisement: the client's first packet waited in the neighbour queue until the next
solicitation, a second later, and left together with the probe's own retransmission of it
(the duplicate SYN of the first IPv6 probe of a fresh lab; a fresh lab's first IPv6 ping took
1020 ms, its first IPv4 ping 0.08 ms: ARP was not caught by it here).

Hop numbering follows traceroute: TTL (hop limit) 1 expires at r1, TTL k at r_k, and the server
is hop N + 1. Routers answer from their `up` address (`router_addr(k)`, `router_addr6(k)`: for
ICMPv6 Linux picks the source address of the interface toward the client, RFC 4443 2.2), and
never rate-limit ICMP or ICMPv6.

The delay sits in the server namespace, so every router (and any box on it) is close to the
client and the server's answers reach a box `delay_ms` after the request passed it: an
injected reset wins the race against the real answer, as it does on a long real path.

ECMP (`Lab(ecmp_hop=k)`, 2 <= k <= N - 1): a twin of r_k, namespace {prefix}-r{k}b, stands
beside it, and r_{k-1} balances over the two with a multipath default route hashed on the
5-tuple (both families, as equal-cost multipath routers do, RFC 2992: Linux's hash policy 3
over the five fields, see ECMP_HASH for why not policy 1), so connections that differ only in the source port take either branch and one
5-tuple always the same::

    r_{k-1}  dn2 198.51.100.129/30  2001:db8:200:1::1/64   default: nexthop r_k + nexthop twin
    twin     up  198.51.100.130/30  2001:db8:200:1::2/64   (`twin_addr`: its time-exceeded)
             dn  198.51.100.133/30  2001:db8:200:2::1/64   default via r_{k+1}.up2
    r_{k+1}  up2 198.51.100.134/30  2001:db8:200:2::2/64   client side via the twin

Branch a is r_k, branch b the twin (`branch_ns`); everything back toward the client goes
through the twin, so a box on the twin sees every server packet and the client packets of the
flows hashed onto it (a real ECMP path is asymmetric as well). The hop numbering is unchanged.

Random loss: `add_loss(k, percent)` has router k drop that share of what arrives on any of its
interfaces (nftables `numgen random`; there is no netem here), `remove_loss(k)` ends it.

Every namespace, process and file the lab makes is removed by `down()`; `cleanup_stale()`
removes what a lab whose owner process died left behind (see the marker files in MARKER_DIR).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Sequence

from netns.labtls import Issued, make_pki

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MARKER_DIR = Path("/run/plab")
PREFIX = "plab"
MAX_ROUTERS = 64  # the /30 links must fit in 198.51.100.0/24

CLIENT_NET = ipaddress.ip_network("192.0.2.0/24")
TRANSIT_NET = ipaddress.ip_network("198.51.100.0/24")
SERVER_NET = ipaddress.ip_network("203.0.113.0/24")
CLIENT_ADDR = "192.0.2.10"
CLIENT_GATEWAY = "192.0.2.1"
SERVER_ADDR = "203.0.113.80"
SERVER_GATEWAY = "203.0.113.1"
CLIENT_NET6 = ipaddress.ip_network("2001:db8:2::/64")
CLIENT_ADDR6 = "2001:db8:2::10"
CLIENT_GATEWAY6 = "2001:db8:2::1"
SERVER_NET6 = ipaddress.ip_network("2001:db8:113::/64")
SERVER_ADDR6 = "2001:db8:113::80"
SERVER_GATEWAY6 = "2001:db8:113::1"

HTTP_PORT = 80
ABORT_PORT = 8080
CLOSED_PORT = 81
HTTPS_PORT = 443
TLS_ABORT_PORT = 8443
TLS_CLOSED_PORT = 444
DELAY_QUEUE = 4242  # NFQUEUE number of the delay line, in the server namespace only
INDEX_BODY = b"<!doctype html>\n<title>probe lab</title>\n<p>hello from the probe lab server</p>\n"
BIG_SIZE = 100 * 1024  # bytes served at /big

# ECMP: the twin of r_k and its links, in the top half of 198.51.100.0/24 (the chain's /30s stay
# below .128 with at most 32 routers) and in 2001:db8:200::/48
ECMP_MAX_ROUTERS = 32
ECMP_BEFORE_DN, ECMP_TWIN_UP = "198.51.100.129", "198.51.100.130"
ECMP_TWIN_DN, ECMP_AFTER_UP = "198.51.100.133", "198.51.100.134"
ECMP_BEFORE_DN6, ECMP_TWIN_UP6 = "2001:db8:200:1::1", "2001:db8:200:1::2"
ECMP_TWIN_DN6, ECMP_AFTER_UP6 = "2001:db8:200:2::1", "2001:db8:200:2::2"
# Policy 1 (L4) would first take an L4 hash the packet already carries: over a veth that is the
# sending socket's random txhash (a new one per connection, and again after a timeout), so one
# 5-tuple could take either branch. Policy 3 hashes exactly the fields named, always from the
# headers, as a router does: source and destination address, protocol, source and destination port.
ECMP_HASH = ("fib_multipath_hash_policy=3", "fib_multipath_hash_fields=0x0037")
LOSS_TABLE = "plab_loss"

STOP_TIMEOUT = 3.0  # seconds between SIGTERM and SIGKILL
COMMAND_TIMEOUT = 30.0
SERVER_READY_TIMEOUT = 10.0
LINKS_READY_TIMEOUT = 5.0  # linkwatch handles a non-urgent event within a second
POLL_INTERVAL = 0.01
NEIGHBOUR_GIVE_UP_MS = 10  # take_server_down: one ARP probe, then host unreachable (Linux's floor is 10 ms)

_counter = itertools.count()


class LabError(RuntimeError):
    """The lab could not be built, or a process in it did not start."""


class CommandFailed(subprocess.CalledProcessError):
    """A command run in the lab exited non-zero; the message carries its stderr."""

    def __str__(self) -> str:
        detail = (self.stderr or "").strip()
        return super().__str__() + (f"\n{detail}" if detail else "")


@dataclass
class _Tracked:
    proc: subprocess.Popen
    name: str
    stdout_log: Path
    stderr_log: Path
    drain: threading.Thread | None = field(default=None)


def router_up_addr(k: int) -> str:
    """Address of r_k's interface toward the client."""
    return CLIENT_GATEWAY if k == 1 else f"198.51.100.{4 * (k - 1) - 2}"


def router_dn_addr(k: int, routers: int) -> str:
    """Address of r_k's interface toward the server."""
    return SERVER_GATEWAY if k == routers else f"198.51.100.{4 * k - 3}"


def router_up_addr6(k: int) -> str:
    """IPv6 address of r_k's interface toward the client."""
    return CLIENT_GATEWAY6 if k == 1 else f"2001:db8:100:{k - 1:x}::2"


def router_dn_addr6(k: int, routers: int) -> str:
    """IPv6 address of r_k's interface toward the server."""
    return SERVER_GATEWAY6 if k == routers else f"2001:db8:100:{k:x}::1"


def _prefix_len(addr: str) -> int:
    return 24 if addr in (CLIENT_GATEWAY, SERVER_GATEWAY) else 30


class Lab:
    """Builds the topology on `up()` (or `with Lab() as lab:`) and removes it on `down()`."""

    def __init__(self, routers: int = 4, *, delay_ms: float = 50.0, loss: float = 0.0,
                 jitter_ms: float = 0.0, seed: int | None = None, prefix: str | None = None,
                 servers: bool = True, ecmp_hop: int | None = None) -> None:
        """`delay_ms` and `jitter_ms` are round-trip figures (half is applied each way);
        `loss` is the probability that the delay line drops a packet, in each direction.
        `servers=False` skips nginx and the abort server. `ecmp_hop=k` puts a twin router beside
        r_k (see "ECMP" in the module doc)."""
        if not 1 <= routers <= MAX_ROUTERS:
            raise ValueError(f"routers must be in 1..{MAX_ROUTERS}")
        if ecmp_hop is not None and not (2 <= ecmp_hop <= routers - 1 and routers <= ECMP_MAX_ROUTERS):
            raise ValueError(f"ecmp_hop must be in 2..routers-1 (a router before the pair hashes, one after joins "
                             f"it), with at most {ECMP_MAX_ROUTERS} routers")
        self.ecmp_hop = ecmp_hop
        if delay_ms < 0 or jitter_ms < 0 or not 0.0 <= loss <= 1.0:
            raise ValueError("delay_ms and jitter_ms must be >= 0 and loss in [0, 1]")
        self.routers = routers
        self.delay_ms = float(delay_ms)
        self.jitter_ms = float(jitter_ms)
        self.loss = float(loss)
        self.seed = seed
        self.servers = servers
        self.prefix = prefix or f"{PREFIX}{os.getpid()}x{next(_counter)}"
        self.server_addresses: list[str] = [SERVER_ADDR]
        self.workdir: Path | None = None
        self.pki: Issued | None = None  # the server's certificate and the lab's CA
        self.proxy_pki: Issued | None = None  # the interception CA and its certificate
        self._created: list[str] = []  # namespaces that exist, in creation order
        self._tracked: list[_Tracked] = []
        self._marker: Path | None = None
        self._is_up = False
        self._owner_pid = os.getpid()

    # --- names and addresses -------------------------------------------------------------

    @property
    def client_ns(self) -> str:
        return f"{self.prefix}-c"

    @property
    def server_ns(self) -> str:
        return f"{self.prefix}-s"

    def router_ns(self, k: int) -> str:
        self._check_hop(k)
        return f"{self.prefix}-r{k}"

    @property
    def twin_ns(self) -> str:
        """The ECMP twin of r_{ecmp_hop} (branch b; r_{ecmp_hop} itself is branch a)."""
        if self.ecmp_hop is None:
            raise ValueError("this lab has no ECMP stage")
        return f"{self.prefix}-r{self.ecmp_hop}b"

    @property
    def twin_addr(self) -> str:
        """The twin's address toward the client: the source of its ICMP time-exceeded."""
        self.twin_ns  # noqa: B018  (raises without an ECMP stage)
        return ECMP_TWIN_UP

    @property
    def rejoin_addr(self) -> str:
        """r_{k+1}'s address toward the twin: its time-exceeded for a copy that came through the
        twin leaves from there (routers answer from the interface a packet came in on)."""
        self.twin_ns  # noqa: B018
        return ECMP_AFTER_UP

    @property
    def twin_addr6(self) -> str:
        self.twin_ns  # noqa: B018
        return ECMP_TWIN_UP6

    def branch_ns(self, branch: str) -> str:
        """The router namespace of ECMP branch "a" (r_k) or "b" (the twin)."""
        if branch not in ("a", "b"):
            raise ValueError('branch must be "a" or "b"')
        return self.twin_ns if branch == "b" else self.router_ns(self.ecmp_hop or 0)

    @property
    def namespaces(self) -> list[str]:
        """All namespace names, client first, server last (the ECMP twin after its router)."""
        routers = [self.router_ns(k) for k in range(1, self.routers + 1)]
        if self.ecmp_hop is not None:
            routers.insert(self.ecmp_hop, self.twin_ns)
        return [self.client_ns, *routers, self.server_ns]

    @property
    def client_addr(self) -> str:
        return CLIENT_ADDR

    @property
    def server_addr(self) -> str:
        return SERVER_ADDR

    @property
    def client_addr6(self) -> str:
        return CLIENT_ADDR6

    @property
    def server_addr6(self) -> str:
        return SERVER_ADDR6

    def router_addr(self, k: int) -> str:
        """r_k's address toward the client: the source of its ICMP time-exceeded."""
        self._check_hop(k)
        return router_up_addr(k)

    def router_addr6(self, k: int) -> str:
        """r_k's IPv6 address toward the client: the source of its ICMPv6 time-exceeded."""
        self._check_hop(k)
        return router_up_addr6(k)

    @property
    def ca_file(self) -> Path:
        """The lab's CA certificate: what a client must trust to verify the server (curl's
        --cacert)."""
        if self.pki is None:
            raise LabError("the lab is not up, or runs no servers")
        return self.pki.ca_file

    @property
    def processes(self) -> list[subprocess.Popen]:
        """Processes the lab started and still tracks."""
        return [t.proc for t in self._tracked]

    def _check_hop(self, k: int) -> None:
        if not 1 <= k <= self.routers:
            raise ValueError(f"router {k} not in 1..{self.routers}")

    # --- lifetime ----------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Lab:
        """Build everything; on any failure, remove what was built and re-raise."""
        if self._is_up:
            return self
        self._is_up = True
        atexit.register(self._down_at_exit)
        try:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
            self.workdir.chmod(0o755)  # nginx workers run unprivileged
            self._write_marker()
            self._build_topology()
            if self.delay_ms or self.jitter_ms or self.loss:
                self._start_delay_line()
            if self.servers:
                self.pki = make_pki(self.workdir / "tls", "probe lab CA")
                self.proxy_pki = make_pki(self.workdir / "tls-proxy", "probe lab interception CA")
                self._start_servers()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop tracked processes, delete the namespaces, remove files. Safe to call again."""
        self._stop_all()
        for ns in reversed(list(self._created)):
            leftover = _netns_pids(ns)
            if leftover:
                warnings.warn(f"{ns}: processes the lab did not start are still inside: "
                              f"{leftover}; the namespace lives on until they exit",
                              RuntimeWarning, stacklevel=2)
            _run(["ip", "netns", "del", ns], check=False)
            self._created.remove(ns)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self.pki = self.proxy_pki = None
        if self._marker is not None:
            self._marker.unlink(missing_ok=True)
            self._marker = None
        if self._is_up:
            self._is_up = False
            atexit.unregister(self._down_at_exit)

    def _down_at_exit(self) -> None:
        # a forked child that exits normally inherits the registration: not its lab
        if os.getpid() == self._owner_pid:
            self.down()

    def _write_marker(self) -> None:
        MARKER_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        marker = MARKER_DIR / f"{self.prefix}.json"
        marker.write_text(json.dumps({
            "pid": os.getpid(), "starttime": _process_starttime(os.getpid()),
            "namespaces": self.namespaces, "workdir": str(self.workdir)}))
        self._marker = marker

    # --- topology ------------------------------------------------------------------------------

    def _build_topology(self) -> None:
        for ns in self.namespaces:
            _run(["ip", "netns", "add", ns])
            self._created.append(ns)
        # veth pairs, created from the client side; the peer lands directly in its namespace
        routers = [self.router_ns(k) for k in range(1, self.routers + 1)]
        _ip_batch(self.client_ns, [f"link add c0 type veth peer name up netns {routers[0]}"])
        for k, ns in enumerate(routers, start=1):
            downstream, peer = ((routers[k], "up") if k < self.routers else (self.server_ns, "s0"))
            _ip_batch(ns, [f"link add dn type veth peer name {peer} netns {downstream}"])
        if self.ecmp_hop is not None:
            k = self.ecmp_hop
            _ip_batch(routers[k - 2], [f"link add dn2 type veth peer name up netns {self.twin_ns}"])
            _ip_batch(self.twin_ns, [f"link add dn type veth peer name up2 netns {routers[k]}"])
        # sysctls before any link is up, so no router solicitation, autoconfigured address or
        # duplicate address detection appears
        for ns in self.namespaces:
            ifaces = self._interfaces(ns)
            settings = _COMMON_SYSCTLS + [f"net.ipv4.conf.{i}.rp_filter=0" for i in ifaces]
            settings += [f"net.ipv6.conf.{i}.{key}" for i in ifaces for key in _IPV6_IFACE_SYSCTLS]
            if ns in routers or (self.ecmp_hop is not None and ns == self.twin_ns):
                settings += ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
            if "dn2" in ifaces:  # the router in front of the ECMP pair hashes the 5-tuple
                settings += [f"net.{family}.{key}" for family in ("ipv4", "ipv6") for key in ECMP_HASH]
            self.exec(ns, ["sysctl", "-q", "-w", *settings])
        _ip_batch(self.client_ns, [
            "link set dev lo up",
            f"addr add {CLIENT_ADDR}/24 dev c0",
            f"addr add {CLIENT_ADDR6}/64 dev c0 nodad",
            "link set dev c0 up",
            f"route add default via {CLIENT_GATEWAY} dev c0",
            f"route add ::/0 via {CLIENT_GATEWAY6} dev c0",
        ])
        for k, ns in enumerate(routers, start=1):
            up_addr, dn_addr = router_up_addr(k), router_dn_addr(k, self.routers)
            cmds = [
                "link set dev lo up",
                f"addr add {up_addr}/{_prefix_len(up_addr)} dev up",
                f"addr add {dn_addr}/{_prefix_len(dn_addr)} dev dn",
                f"addr add {router_up_addr6(k)}/64 dev up nodad",
                f"addr add {router_dn_addr6(k, self.routers)}/64 dev dn nodad",
                "link set dev up up",
                "link set dev dn up",
            ]
            if k > 1:
                back = router_dn_addr(k - 1, self.routers)
                cmds.append(f"route add {CLIENT_NET} via {back} dev up")
                # the links behind us too: a router's own connections (a transparent proxy's)
                # leave from its dn address and their answers must find the way back
                for j in range(1, k - 1):
                    link = f"{router_dn_addr(j, self.routers)}/30"
                    cmds.append(f"route add {ipaddress.ip_network(link, strict=False)} via {back} dev up")
                back6 = router_dn_addr6(k - 1, self.routers)
                cmds.append(f"route add {CLIENT_NET6} via {back6} dev up")
                for j in range(1, k - 1):
                    cmds.append(f"route add 2001:db8:100:{j:x}::/64 via {back6} dev up")
            if k < self.routers:
                cmds.append(f"route add default via {router_up_addr(k + 1)} dev dn")
                cmds.append(f"route add ::/0 via {router_up_addr6(k + 1)} dev dn")
            _ip_batch(ns, cmds)
        if self.ecmp_hop is not None:
            self._build_ecmp()
        _ip_batch(self.server_ns, [
            "link set dev lo up",
            f"addr add {SERVER_ADDR}/24 dev s0",
            f"addr add {SERVER_ADDR6}/64 dev s0 nodad",
            "link set dev s0 up",
            f"route add default via {SERVER_GATEWAY} dev s0",
            f"route add ::/0 via {SERVER_GATEWAY6} dev s0",
        ])
        self.wait_links_ready()

    def wait_links_ready(self, timeout: float = LINKS_READY_TIMEOUT) -> None:
        """Wait until every link of the lab is operationally up and no address is tentative
        (see the module docstring: before linkwatch has run, a link drops what it sends)."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [f"{ns}/{name}" for ns in self.namespaces for name in _links_not_ready(ns)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise LabError(f"links not up after {timeout} s: {', '.join(pending)}")
            time.sleep(POLL_INTERVAL)

    def _interfaces(self, ns: str) -> list[str]:
        if ns in (self.client_ns, self.server_ns):
            return ["c0"] if ns == self.client_ns else ["s0"]
        k = self.ecmp_hop
        if k is not None and ns == self.router_ns(k - 1):
            return ["up", "dn", "dn2"]
        if k is not None and ns == self.router_ns(k + 1):
            return ["up", "up2", "dn"]
        return ["up", "dn"]

    def _build_ecmp(self) -> None:
        """The twin of r_k, its two links, the multipath default route of r_{k-1} and the return
        path through the twin (see "ECMP" in the module doc)."""
        k = self.ecmp_hop
        assert k is not None
        before, after = self.router_ns(k - 1), self.router_ns(k + 1)
        hashed = f"nexthop via {router_up_addr(k)} dev dn nexthop via {ECMP_TWIN_UP} dev dn2"
        hashed6 = f"nexthop via {router_up_addr6(k)} dev dn nexthop via {ECMP_TWIN_UP6} dev dn2"
        _ip_batch(before, [f"addr add {ECMP_BEFORE_DN}/30 dev dn2", f"addr add {ECMP_BEFORE_DN6}/64 dev dn2 nodad",
                           "link set dev dn2 up", f"route replace default {hashed}", f"route replace ::/0 {hashed6}"])
        behind = [ipaddress.ip_network(f"{router_dn_addr(j, self.routers)}/30", strict=False) for j in range(1, k)]
        behind6 = [f"2001:db8:100:{j:x}::/64" for j in range(1, k)]
        _ip_batch(self.twin_ns, [
            "link set dev lo up",
            f"addr add {ECMP_TWIN_UP}/30 dev up", f"addr add {ECMP_TWIN_DN}/30 dev dn",
            f"addr add {ECMP_TWIN_UP6}/64 dev up nodad", f"addr add {ECMP_TWIN_DN6}/64 dev dn nodad",
            "link set dev up up", "link set dev dn up",
            f"route add {CLIENT_NET} via {ECMP_BEFORE_DN} dev up",
            f"route add {CLIENT_NET6} via {ECMP_BEFORE_DN6} dev up",
            *(f"route add {net} via {ECMP_BEFORE_DN} dev up" for net in behind),
            *(f"route add {net} via {ECMP_BEFORE_DN6} dev up" for net in behind6),
            f"route add default via {ECMP_AFTER_UP} dev dn", f"route add ::/0 via {ECMP_AFTER_UP6} dev dn"])
        # everything back toward the client leaves r_{k+1} through the twin, so a box on the twin
        # sees the server's packets of every flow and half the client's (an asymmetric path)
        _ip_batch(after, [
            f"addr add {ECMP_AFTER_UP}/30 dev up2", f"addr add {ECMP_AFTER_UP6}/64 dev up2 nodad", "link set dev up2 up",
            f"route replace {CLIENT_NET} via {ECMP_TWIN_DN} dev up2",
            f"route replace {CLIENT_NET6} via {ECMP_TWIN_DN6} dev up2",
            *(f"route replace {net} via {ECMP_TWIN_DN} dev up2" for net in behind),
            *(f"route replace {net} via {ECMP_TWIN_DN6} dev up2" for net in behind6)])

    def add_loss(self, k: int, percent: int) -> None:
        """Router k drops `percent`% of the packets that arrive on any of its interfaces, before
        anything else there sees them (nftables `numgen random`, a prerouting hook at priority
        -300, ahead of the boxes' mangle hooks): random loss on the path, both directions, for
        traffic crossing router k and for what ends there (a copy that would expire at router k)."""
        if not 0 <= percent <= 100:
            raise ValueError("percent must be in 0..100")
        ruleset = (f"table inet {LOSS_TABLE} {{\n chain prerouting {{\n  type filter hook prerouting priority -300;\n"
                   f"  icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept\n"  # the link's own
                   f"  numgen random mod 100 < {percent} counter drop\n }}\n}}\n")
        self.exec(self.router_ns(k), ["nft", "-f", "-"], input=f"add table inet {LOSS_TABLE}\ndelete table inet {LOSS_TABLE}\n" + ruleset)
        # (add, then delete: a table left by an earlier call goes, and nft 1.0.6 has no `destroy`)

    def remove_loss(self, k: int) -> None:
        self.exec(self.router_ns(k), ["nft", "delete", "table", "inet", LOSS_TABLE], check=False)

    def add_server_address(self, addr: str) -> None:
        """Give the server one more address in 203.0.113.0/24 (nginx and the abort server
        listen on all addresses)."""
        ip = ipaddress.ip_address(addr)
        if ip not in SERVER_NET or addr in (SERVER_GATEWAY, str(SERVER_NET.network_address),
                                            str(SERVER_NET.broadcast_address)):
            raise ValueError(f"{addr} is not a free host address in {SERVER_NET}")
        if not self._is_up:
            raise LabError("the lab is not up")
        if addr in self.server_addresses:
            return
        _ip_batch(self.server_ns, [f"addr add {addr}/24 dev s0"])
        self.server_addresses.append(addr)

    def restore_client_link(self) -> None:
        """Bring the client's link and both its default routes back, after a test took the link
        down (which drops its IPv6 address and routes) or deleted a route."""
        _ip_batch(self.client_ns, ["link set c0 up",
                                   f"route replace default via {CLIENT_GATEWAY} dev c0",
                                   f"addr replace {CLIENT_ADDR6}/64 dev c0 nodad",
                                   f"route replace ::/0 via {CLIENT_GATEWAY6} dev c0"])
        self.wait_links_ready()

    def take_server_down(self) -> None:
        """The server's host is dead: its addresses leave s0, so nobody on its network answers
        the last router's ARP for them any more, and the last router answers what it cannot
        deliver with ICMP host unreachable (RFC 1812 4.3.3.1, 5.2.7.1; Linux: arp_error_report),
        as a router does for a powered-off host behind a switch. A real router gives up after
        about 3 s (Linux: three probes a second apart); the last router here asks once and gives
        up after NEIGHBOUR_GIVE_UP_MS, so the error comes at once and alike on every run."""
        last = self.router_ns(self.routers)
        self.exec(last, ["sysctl", "-q", "-w", *(setting.format(family=family) for family in ("ipv4", "ipv6")
                                                 for setting in ("net.{family}.neigh.dn.mcast_solicit=1",
                                                                 "net.{family}.neigh.dn.app_solicit=0",
                                                                 "net.{family}.neigh.dn.retrans_time_ms="
                                                                 f"{NEIGHBOUR_GIVE_UP_MS}"))])
        # over IPv6 the neighbour discovery that fails ends in ICMPv6 address unreachable (RFC 4443 3.1,
        # Linux: ndisc_error_report)
        _ip_batch(self.server_ns, [f"addr del {addr}/24 dev s0" for addr in self.server_addresses]
                  + [f"addr del {SERVER_ADDR6}/64 dev s0"])
        _ip_batch(last, ["neigh flush dev dn"])  # nothing it learnt before may answer for the host

    def take_server_network_unrouted(self) -> None:
        """The last router has lost its route to the server's network (its link there is down):
        it answers what it cannot forward with ICMP net unreachable at once (RFC 1812 5.2.7.1),
        as a router does when a route is missing."""
        _ip_batch(self.router_ns(self.routers), ["link set dev dn down"])

    # --- services ----------------------------------------------------------------------------

    def _start_delay_line(self) -> None:
        argv = [sys.executable, "-m", "netns.delayline", "--queue", str(DELAY_QUEUE),
                "--delay-ms", f"{self.delay_ms / 2:g}", "--jitter-ms", f"{self.jitter_ms / 2:g}",
                "--loss", f"{self.loss:g}"]
        if self.seed is not None:
            argv += ["--seed", str(self.seed)]
        self.spawn(self.server_ns, argv, name="delayline")
        # rules only once the queue is bound: a queue nobody reads would drop everything
        queue = ["-j", "NFQUEUE", "--queue-num", str(DELAY_QUEUE)]
        for chain, iface in (("INPUT", "-i"), ("OUTPUT", "-o")):
            # neighbour discovery is not the path's: it stays on the link, undelayed
            for kind in ("neighbour-solicitation", "neighbour-advertisement"):
                self.exec(self.server_ns, ["ip6tables", "-w", "-A", chain, iface, "s0", "-p", "ipv6-icmp",
                                           "--icmpv6-type", kind, "-j", "ACCEPT"])
            for tables in ("iptables", "ip6tables"):  # one queue for both families (bound to no family)
                self.exec(self.server_ns, [tables, "-w", "-A", chain, iface, "s0", *queue])

    def _start_servers(self) -> None:
        assert self.workdir is not None
        assert self.pki is not None
        conf = _write_nginx_site(self.workdir, self.pki)
        nginx = self.spawn(self.server_ns, ["nginx", "-p", str(self.workdir), "-c", str(conf),
                                            "-e", str(self.workdir / "nginx-error.log")],
                           ready_line=None, name="nginx")
        self.spawn(self.server_ns, [sys.executable, "-m", "netns.abort_server",
                                    "--port", str(ABORT_PORT), "--tls-port", str(TLS_ABORT_PORT)],
                   name="abort_server")
        self.wait_listening(nginx, HTTP_PORT, timeout=SERVER_READY_TIMEOUT)
        self.wait_listening(nginx, HTTPS_PORT, timeout=SERVER_READY_TIMEOUT)

    def wait_listening(self, proc: subprocess.Popen, port: int, timeout: float = 10.0) -> None:
        """Wait until a TCP socket listens on `port` in the namespace of `proc` (a tracked
        process), reading that namespace's /proc/PID/net/tcp; raise LabError if it exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"{self._describe(proc)} exited with {proc.returncode} before "
                               f"listening on port {port}\n{self._stderr_tail(proc)}")
            if _listening(proc.pid, port):
                return
            time.sleep(POLL_INTERVAL)
        raise LabError(f"{self._describe(proc)} not listening on port {port} after {timeout} s"
                       f"\n{self._stderr_tail(proc)}")

    # --- running things in the lab -----------------------------------------------------------

    def exec(self, ns: str, argv: Sequence[str], check: bool = True,
             timeout: float = COMMAND_TIMEOUT, input: str | None = None
             ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in namespace `ns` and wait (text output captured)."""
        return _run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout,
                    input=input, env=_child_env())

    def spawn(self, ns: str, argv: Sequence[str], ready_line: str | None = "ready",
              ready_timeout: float = 10.0, name: str | None = None) -> subprocess.Popen:
        """Start `argv` in namespace `ns`, tracked (stopped by `down()`).

        With a `ready_line`, wait until the child prints that line on stdout; raise LabError
        with its stderr if it exits first or the deadline passes (the child is then stopped).
        stdout after that point goes to `<workdir>/<name>.out`, stderr to `<name>.err`.
        """
        if self.workdir is None:
            raise LabError("the lab is not up")
        name = name or _guess_name(argv)
        stem = f"{len(self._tracked):02d}-{name}"
        stdout_log, stderr_log = self.workdir / f"{stem}.out", self.workdir / f"{stem}.err"
        with open(stderr_log, "wb") as stderr:
            # own session: Ctrl-C in a terminal reaches the lab, which stops children in
            # order, and the whole group (nginx workers too) can be signalled at once
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=stderr, env=_child_env(),
                                    start_new_session=True)
        tracked = _Tracked(proc, name, stdout_log, stderr_log)
        self._tracked.append(tracked)
        seen = b""
        if ready_line is not None:
            try:
                seen = _await_line(proc, ready_line, time.monotonic() + ready_timeout)
            except LabError as e:
                self._stop([tracked])
                self._tracked.remove(tracked)
                raise LabError(f"{name} in {ns}: {e}\nstderr:\n{_tail(stderr_log)}") from None
        tracked.drain = threading.Thread(target=_drain, args=(proc.stdout, seen, stdout_log),
                                         name=f"lab-drain-{stem}", daemon=True)
        tracked.drain.start()
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop one tracked process (SIGTERM, then SIGKILL); return its exit status."""
        tracked = [t for t in self._tracked if t.proc is proc]
        if not tracked:
            raise ValueError("not a process of this lab")
        self._stop(tracked, timeout)
        self._tracked.remove(tracked[0])
        return proc.returncode

    def _stop_all(self) -> None:
        if self._tracked:
            self._stop(list(reversed(self._tracked)))
            self._tracked.clear()

    @staticmethod
    def _stop(tracked: list[_Tracked], timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM each process group, wait (bounded), SIGKILL what is left, reap."""
        for t in tracked:
            if t.proc.poll() is None:
                _signal_group(t.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for t in tracked:
            try:
                t.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for t in tracked:
            # also reaches members left behind by a leader that has exited; the group id
            # cannot be reused while any member is alive
            _signal_group(t.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                t.proc.wait(timeout=STOP_TIMEOUT)
            if t.drain is not None:
                t.drain.join(timeout=1.0)
            elif t.proc.stdout is not None:
                t.proc.stdout.close()

    def _describe(self, proc: subprocess.Popen) -> str:
        names = [t.name for t in self._tracked if t.proc is proc]
        return f"{names[0] if names else 'process'} (pid {proc.pid})"

    def _stderr_tail(self, proc: subprocess.Popen) -> str:
        logs = [t.stderr_log for t in self._tracked if t.proc is proc]
        return _tail(logs[0]) if logs else ""


_COMMON_SYSCTLS = [
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv4.conf.lo.rp_filter=0",
    "net.ipv4.icmp_ratelimit=0",
    "net.ipv4.icmp_msgs_per_sec=100000",
    "net.ipv4.icmp_msgs_burst=100000",
    "net.ipv4.icmp_errors_use_inbound_ifaddr=1",
    "net.ipv6.conf.all.disable_ipv6=0",
    "net.ipv6.conf.default.disable_ipv6=0",
    "net.ipv6.icmp.ratelimit=0",
] + [f"net.ipv6.conf.{scope}.{key}" for scope in ("all", "default") for key in (
    "accept_ra=0", "autoconf=0", "router_solicitations=0", "accept_dad=0", "dad_transmits=0")]
_IPV6_IFACE_SYSCTLS = ("accept_ra=0", "autoconf=0", "router_solicitations=0", "accept_dad=0")


@contextlib.contextmanager
def exit_on_signals(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
                    ) -> Iterator[None]:
    """Inside the block, these signals raise SystemExit(128 + signal), so an enclosing
    `with Lab()` tears down; a second signal is ignored so it cannot cut the teardown short.
    The previous handlers come back on exit. Use it around the lab, in the main thread:

        with exit_on_signals(), Lab() as lab:
            ...
    """
    def handler(signum: int, frame: object) -> None:
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def cleanup_stale() -> list[str]:
    """Delete the namespaces of labs whose owner process has died; return their names.

    A lab is found by its marker in MARKER_DIR, or, for a `plab...` namespace without one,
    by the owner PID in its default name (`plab<pid>x<n>-...`). Only processes still inside
    such a namespace (left there by the dead lab) are killed; live labs are not touched.
    """
    removed: list[str] = []
    claimed: set[str] = set()
    existing = set(_netns_list())
    if MARKER_DIR.is_dir():
        for marker in sorted(MARKER_DIR.glob("*.json")):
            try:
                info = json.loads(marker.read_text())
                pid, namespaces = int(info["pid"]), list(info["namespaces"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            claimed.update(namespaces)
            if _owner_alive(pid, info.get("starttime")):
                continue
            for ns in namespaces:
                if ns in existing and _delete_stale(ns):
                    removed.append(ns)
            workdir = Path(str(info.get("workdir")))
            if (workdir.parent == Path(tempfile.gettempdir())
                    and workdir.name.startswith(marker.stem + "-")):
                shutil.rmtree(workdir, ignore_errors=True)
            marker.unlink(missing_ok=True)
    for ns in sorted(existing - claimed):
        m = re.fullmatch(rf"{PREFIX}(\d+)x\d+-.+", ns)
        if m and not _owner_alive(int(m.group(1)), None) and _delete_stale(ns):
            removed.append(ns)
    return removed


# --- helpers -------------------------------------------------------------------------------


def _run(argv: Sequence[str], check: bool = True, timeout: float = COMMAND_TIMEOUT,
         input: str | None = None, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                            input=input, env=env)
    if check and result.returncode != 0:
        raise CommandFailed(result.returncode, list(argv), result.stdout, result.stderr)
    return result


def _ip_batch(ns: str, commands: list[str]) -> None:
    _run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n")


def _links_not_ready(ns: str) -> list[str]:
    """The links of `ns` (loopback aside) not yet operationally up, or with a tentative address."""
    links = json.loads(_run(["ip", "-n", ns, "-j", "addr", "show"]).stdout or "[]")
    return [link["ifname"] for link in links if link["ifname"] != "lo"
            and (link.get("operstate") != "UP"
                 or any(addr.get("tentative") for addr in link.get("addr_info", [])))]


def _child_env() -> dict[str, str]:
    """Our environment, with the project importable (`python3 -m netns...`) and unbuffered."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _guess_name(argv: Sequence[str]) -> str:
    if "-m" in argv[:-1]:
        return argv[list(argv).index("-m") + 1].rsplit(".", 1)[-1]
    return Path(argv[0]).name


def _await_line(proc: subprocess.Popen, line: str, deadline: float) -> bytes:
    """Read proc's stdout until `line` appears as a whole line; return what was read."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    wanted = line.encode()
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
            raise LabError(f"exited (status {proc.returncode}) before printing {line!r}"
                           f"; stdout: {seen[-500:].decode(errors='replace')!r}")
        seen += chunk
        if any(part.strip() == wanted for part in seen.split(b"\n")[:-1]):
            return seen
    raise LabError(f"did not print {line!r} within the deadline"
                   f"; stdout: {seen[-500:].decode(errors='replace')!r}")


def _drain(stream: IO[bytes], already: bytes, log: Path) -> None:
    """Copy a child's stdout to its log until EOF, so a chatty child never blocks on a full
    pipe."""
    with stream, open(log, "ab") as out:
        out.write(already)
        out.flush()
        for chunk in iter(lambda: stream.read1(65536), b""):
            out.write(chunk)
            out.flush()


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_bytes()[-limit:].decode(errors="replace")
    except OSError:
        return ""


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _listening(pid: int, port: int) -> bool:
    """Whether the netns of `pid` has a TCP socket in LISTEN on `port` (any address, either
    family: a socket bound to :: is in tcp6 only)."""
    for name in ("tcp", "tcp6"):
        try:
            table = Path(f"/proc/{pid}/net/{name}").read_text()
        except OSError:
            continue
        for row in table.splitlines()[1:]:
            fields = row.split()
            if len(fields) > 3 and fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                return True
    return False


def _write_nginx_site(workdir: Path, pki: Issued) -> Path:
    """Config and content for nginx in `workdir`; returns the config path."""
    www = workdir / "www"
    www.mkdir(mode=0o755)
    (www / "index.html").write_bytes(INDEX_BODY)
    line = b"probe lab /big body: a response long enough to take many TCP segments.\n"
    (www / "big").write_bytes((line * (BIG_SIZE // len(line) + 1))[:BIG_SIZE])
    for f in www.iterdir():
        f.chmod(0o644)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""\
daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {workdir}/nginx-access.log;
    client_body_temp_path {workdir}/nginx-tmp-body;
    proxy_temp_path {workdir}/nginx-tmp-proxy;
    fastcgi_temp_path {workdir}/nginx-tmp-fastcgi;
    uwsgi_temp_path {workdir}/nginx-tmp-uwsgi;
    scgi_temp_path {workdir}/nginx-tmp-scgi;
    types {{ text/html html; }}
    default_type application/octet-stream;
    keepalive_timeout 5s;
    server {{
        listen {HTTP_PORT} default_server;
        listen [::]:{HTTP_PORT} default_server;
        server_name _;
        root {www};
        index index.html;
    }}
    server {{
        listen {HTTPS_PORT} ssl default_server;
        listen [::]:{HTTPS_PORT} ssl default_server;
        server_name _;
        ssl_certificate {pki.cert_file};
        ssl_certificate_key {pki.key_file};
        ssl_protocols TLSv1.2 TLSv1.3;  # nginx 1.22's default lacks TLS 1.3, today's servers have it
        root {www};
        index index.html;
    }}
}}
""")
    return conf


def _netns_list() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(ns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def _process_starttime(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (tells a reused PID apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _owner_alive(pid: int, starttime: int | None) -> bool:
    now = _process_starttime(pid)
    return now is not None and (starttime is None or now == starttime)


def _delete_stale(ns: str) -> bool:
    """Kill what a dead lab left in `ns` (it holds the namespace alive), then delete it."""
    leftover = _netns_pids(ns)
    for pid in leftover:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return _run(["ip", "netns", "del", ns], check=False).returncode == 0
