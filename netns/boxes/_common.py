"""What every box shares: its options, its rules, its queue, its raw sender and its lifetime.

A box runs inside one router namespace (`ip netns exec NS python3 -m netns.boxes.NAME`).
`serve()` installs the box's iptables rules there, prints `ready` once the queue (if any) is
bound and the rules are in, and on SIGTERM/SIGINT/SIGHUP removes exactly those rules and
returns, so the process exits 0.

The queue is bound *before* the rules that feed it are installed, so no packet can reach a
queue nobody reads. A callback that raises still gives its packet a verdict (accept): a
packet without a verdict would sit in the kernel until the queue is unbound.

Both families: every rule goes to iptables and to ip6tables (`Rules.add`), unless it names an
address of one family (then only that family's tool takes it); the few IPv4 words that
ip6tables spells otherwise are translated (`IP6_WORDS`: REJECT's ICMP types, RFC 4443 3.1). The
NFQUEUE numbers are shared by both families, so one queue and one callback see both. The raw
sender sends a packet of either family; `_packets` reads and builds both.

Caveat for stacking boxes on one router: an NFQUEUE verdict of "accept" ends that packet's
walk through the chain it was queued from (it resumes at the next hook), so two queue boxes
in the same chain do not both see a packet the first one matched.
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import os
import select
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Callable

from . import _tls

DEFAULT_TRIGGER = "blocked.example"
DEFAULT_PORT = 80
BOX_TTL = 64  # what a Linux box would put in a packet of its own
MATCHES = ("bytes", "sni")
HOOKS = {"prerouting": ("mangle", "PREROUTING"), "forward": ("filter", "FORWARD")}


def parser(box: str, doc: str, *, queue: int | None = None, where: str | None = None,
           wheres: tuple[str, ...] = ("prerouting", "forward"),
           uses_trigger: bool = True, sni: bool = False) -> argparse.ArgumentParser:
    """The options every box accepts (so a lab can pass the same ones to all); `queue` and
    `where` are this box's defaults, None when it does not use them; `sni`: the box also
    takes `--match sni` (the trigger is the server name of a TLS ClientHello)."""
    summary = (doc or "").strip().split("\n\n")[0].replace("\n", " ")
    p = argparse.ArgumentParser(prog=f"python3 -m netns.boxes.{box}", description=summary)
    unused = " (not used by this box)"
    p.add_argument("--trigger", default=DEFAULT_TRIGGER,
                   help="bytes that make a client->server segment a trigger, case-insensitive"
                        + ("" if uses_trigger else unused))
    if sni:
        p.add_argument("--match", choices=MATCHES, default="bytes",
                       help="bytes: the trigger anywhere in a client->server segment (an HTTP "
                            "Host or URL); sni: a segment holding a whole TLS ClientHello whose "
                            "server name is the trigger or a name under it (see _tls)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="the server's TCP port")
    p.add_argument("--queue", type=int, default=queue,
                   help="NFQUEUE number" + (unused if queue is None else ""))
    if where is None:
        p.add_argument("--where", choices=("prerouting", "forward"), help="not used by this box")
    else:
        p.add_argument("--where", choices=wheres, default=where,
                       help="prerouting: -t mangle PREROUTING (sees TTL-limited copies before "
                            "the router drops them); forward: filter FORWARD (only what this "
                            "router forwards)")
    return p


def hook(where: str) -> tuple[str, str]:
    """(table, chain) for --where."""
    return HOOKS[where]


def string_match(trigger: str) -> list[str]:
    """iptables arguments matching a segment whose payload contains the trigger."""
    return ["-m", "string", "--string", trigger, "--algo", "bm", "--icase"]


def nfqueue(queue: int) -> list[str]:
    """Target sending a packet to our queue (accepted unseen if the box has died)."""
    return ["-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]


def new_connection_rule(where: str, port: int, queue: int) -> tuple[str, str, list[str]]:
    """Queue the client's SYNs too, so that a box keeping a connection's state sees each new one
    (`is_new_connection`, then `FlowMemory.forget`), as a box on conntrack does: a connection
    ended by its resets and opened again on the same four-tuple is a new flow to it. (Its
    sequence numbers cannot tell: Linux draws a four-tuple's ISN from a clock, RFC 6528, so a
    new connection's request lies just after the last one's.)"""
    table, chain = hook(where)
    return table, chain, ["-p", "tcp", "--dport", str(port), "--syn", *nfqueue(queue)]


def is_new_connection(segment) -> bool:
    """A client's SYN (`new_connection_rule`)."""
    return segment is not None and segment.flags == "S"


def server_and_trigger_rules(where: str, port: int, trigger: str, queue: int) -> list[tuple[str, str, list[str]]]:
    """Queue the server's packets (to learn how they look) and the client's trigger segments."""
    table, chain = hook(where)
    return [(table, chain, ["-p", "tcp", "--sport", str(port), *nfqueue(queue)]),
            (table, chain, ["-p", "tcp", "--dport", str(port), *string_match(trigger), *nfqueue(queue)])]


def is_trigger(payload: bytes, trigger: str, match: str = "bytes") -> bool:
    """The same test as `string_match`, for packets already in Python; with match "sni", only
    a ClientHello naming the trigger (the string match then only preselects)."""
    if match == "sni":
        return _tls.sni_is(payload, trigger)
    return bool(payload) and trigger.lower().encode() in payload.lower()


# REJECT's IPv4 words and their ICMPv6 counterparts (ip6tables-extensions(8); RFC 4443 3.1 code 1
# is "communication with destination administratively prohibited")
IP6_WORDS = {"icmp-admin-prohibited": "icmp6-adm-prohibited", "icmp-net-unreachable": "icmp6-no-route",
             "icmp-host-unreachable": "icmp6-addr-unreachable", "icmp-port-unreachable": "icmp6-port-unreachable"}


def _families(spec: list[str]) -> tuple[str, ...]:
    """Which tools take a rule: the family of the addresses it names, else both."""
    versions = set()
    for word in spec:
        try:
            versions.add(ipaddress.ip_network(word, strict=False).version)
        except ValueError:
            pass
    if versions == {4}:
        return ("iptables",)
    if versions == {6}:
        return ("ip6tables",)
    return ("iptables", "ip6tables")


class Rules:
    """iptables and ip6tables rules of one box, tagged with a comment, removed in reverse order."""

    def __init__(self, box: str):
        self.tag = f"probe-box {box} {os.getpid()}"
        self.installed: list[tuple[str, str, str, list[str]]] = []

    def add(self, table: str, chain: str, spec: list[str]) -> None:
        target = spec.index("-j")
        full = spec[:target] + ["-m", "comment", "--comment", self.tag] + spec[target:]
        for tool in _families(spec):
            words = [IP6_WORDS.get(word, word) for word in full] if tool == "ip6tables" else full
            _iptables(["-t", table, "-A", chain] + words, tool)
            self.installed.append((tool, table, chain, words))

    def remove_all(self) -> None:
        while self.installed:
            tool, table, chain, full = self.installed.pop()
            _iptables(["-t", table, "-D", chain] + full, tool, check=False)


def _iptables(args: list[str], tool: str = "iptables", check: bool = True) -> None:
    done = subprocess.run([tool, "-w", "5"] + args, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{tool} {' '.join(args)}: {done.stderr.strip()}")


def refuse_root_namespace() -> None:
    """Boxes change a firewall: never the host's. They run only in a namespace made with
    `ip netns add` (PID 1's namespace may not even be readable, so test for a named one)."""
    here = os.stat("/proc/self/ns/net")
    named = Path("/run/netns")
    for entry in (named.iterdir() if named.is_dir() else ()):
        there = entry.stat()
        if (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino):
            return
    sys.exit("refusing to run outside a named network namespace; use `ip netns exec NS ...`")


class RawSender:
    """Sends complete IPv4 or IPv6 packets from this namespace, as they are built (IPPROTO_RAW:
    the header is the packet's own in both families, raw(7), af_inet6.c)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.sock6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send(self, packet) -> None:
        """`packet`: a scapy IP or IPv6 packet (checksums are computed by `bytes()`) or raw bytes.

        Linux fills in the IP-ID when it is 0 and always recomputes the IPv4 header checksum;
        over IPv6 it fills in nothing."""
        data = bytes(packet)
        if data[0] >> 4 == 6:
            self.sock6.sendto(data, (socket.inet_ntop(socket.AF_INET6, data[24:40]), 0))
        else:
            self.sock.sendto(data, (socket.inet_ntoa(data[16:20]), 0))


def warm_up_scapy() -> None:
    """The first scapy build costs tens of ms; pay it before `ready`, not during a race."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    bytes(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(flags="R"))
    bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(flags="R"))


class FlowMemory:
    """A bounded set/dict of flows (oldest forgotten first)."""

    def __init__(self, limit: int = 4096):
        self.limit = limit
        self.items: collections.OrderedDict = collections.OrderedDict()

    def __contains__(self, key) -> bool:
        return key in self.items

    def get(self, key, default=None):
        return self.items.get(key, default)

    def put(self, key, value=True) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        if len(self.items) > self.limit:
            self.items.popitem(last=False)

    def forget(self, key) -> None:
        self.items.pop(key, None)


class Queue:
    """An NFQUEUE bound to a callback; `fd` and `drain` plug into `serve()`."""

    def __init__(self, number: int, callback: Callable):
        from netfilterqueue import NetfilterQueue

        def guarded(packet):
            try:
                callback(packet)
            except Exception:
                traceback.print_exc()
                try:
                    packet.accept()
                except RuntimeError:
                    pass  # the callback had already given a verdict

        self.nfq = NetfilterQueue()
        self.nfq.bind(number, guarded)
        self.fd = self.nfq.get_fd()

    def drain(self) -> None:
        self.nfq.run(block=False)

    def close(self) -> None:
        self.nfq.unbind()


def serve(box: str, rules: list[tuple[str, str, list[str]]],
          readers: dict[int, Callable[[], None]] | None = None,
          cleanup: Callable[[], None] | None = None) -> None:
    """Install `rules`, say `ready`, call `readers[fd]()` when fd is readable, until a signal.

    Everything the readers need (queue bound, socket listening) must exist before this call."""
    stop_r, stop_w = os.pipe()
    os.set_blocking(stop_w, False)
    signal.set_wakeup_fd(stop_w)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: None)  # the wakeup byte does the work
    installed = Rules(box)
    try:
        for table, chain, spec in rules:
            installed.add(table, chain, spec)
        print("ready", flush=True)
        readers = readers or {}
        while True:
            readable, _, _ = select.select([stop_r, *readers], [], [])
            if stop_r in readable:
                break
            for fd in readable:
                readers[fd]()
    finally:
        installed.remove_all()
        if cleanup:
            cleanup()


def main_rules_only(box: str, rules: list[tuple[str, str, list[str]]]) -> None:
    refuse_root_namespace()
    serve(box, rules)


def main_queue(box: str, queue: int, callback: Callable,
               rules: list[tuple[str, str, list[str]]]) -> None:
    """Bind the queue, warm scapy up, then `serve()`."""
    refuse_root_namespace()
    warm_up_scapy()
    q = Queue(queue, callback)
    serve(box, rules, {q.fd: q.drain}, q.close)
