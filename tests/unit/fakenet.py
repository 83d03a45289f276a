"""A fake network for the one I/O loop (probe.network.loop): no sockets, no nft, a fake clock.

The fake server answers like the lab's: port 80 a complete HTTP exchange (SYN-ACK, the
response with FIN, the ACK of our FIN), port 81 a RST/ACK to the SYN, port 82 nothing at
all, port 83 the handshake and then silence; a router may quote a flow's request in an ICMP
error, and the last router answers everything sent to a dead address (`dead`) with ICMP host
unreachable, as after a failed ARP. Every packet is made with the struct crafter, so what the
loops read is what a capture would hold.

With `distance` set, the path has hops: the server is at hop `distance` (its packets arrive
with TTL 64 - (distance - 1)), router k is 198.51.100.k and answers a packet whose TTL runs
out there with ICMP time exceeded quoting it, and the server answers ICMP echo. A box may sit
at hop `box_at`: "tap" answers a request for `BOX_HOST` that reaches it with a forged RST/ACK
in the server's name (arriving with the box's own TTL) and lets the request go on; "syn-firewall"
answers every SYN that reaches it with a RST/ACK and lets none pass; "residual" answers a
request for `BOX_HOST` as the tap does, then resets every SYN toward the same address and port
for `residual_for` seconds (a GFW-style block of the 3-tuple); "swallow" drops the first request
for `BOX_HOST` of a four-tuple and remembers the four-tuple, letting every later one pass (the
lab's swallowing box: a box that would fool a trace reusing one four-tuple carelessly).

With `ecmp_at=k`, hop k is two routers: 198.51.100.k (branch a) and 198.51.100.(128+k) (branch
b), chosen by a hash of the five-tuple salted with `ecmp_salt` (an ECMP router hashing the
flow); the box, if any, sits on branch b only (when `box_at >= k`). With `server_state`, the
server keeps its connections by four-tuple as a kernel does: a SYN to a four-tuple it still
holds draws a challenge ACK (RFC 5961 4), a reset or a FIN exchange ends it, and `half_open`
lists what it still holds. With `exact_resets` too, it judges resets as RFC 5961 3 has Linux do:
only one at the sequence number it expects next ends a connection, one elsewhere draws a challenge
ACK, and it sends a connection at most one challenge ACK per CHALLENGE_EVERY seconds (Linux's
tcp_invalid_ratelimit), whatever asked for it (a reset or a SYN).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import socket
import struct

from probe.protocol.craft import StructCrafter, _checksum
from probe.record import parse_ip
from probe.network.target import Target
from probe.protocol.tcp import Segment
from probe.network.wire import Frame

CLIENT = "192.0.2.10"
RTT = 0.05
LAST_ROUTER = "198.51.100.14"
DEAD_HOST_ERROR_AFTER = 0.015  # seconds from a packet to a dead host to the router's error
BOX_HOST = b"Host: www.example.com"
CHALLENGE_EVERY = 0.5  # seconds: Linux's net.ipv4.tcp_invalid_ratelimit default (500 ms)
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")


class FakeNet:
    """The wire, the clock and the far side. `sent` holds every packet the probe sent."""

    def __init__(self, icmp_for: set[str] = frozenset(), dead: set[str] = frozenset(),
                 forged_unreachable: set[str] = frozenset(), distance: int | None = None,
                 box_at: int | None = None, box: str = "tap", residual_for: float = 20.0,
                 ecmp_at: int | None = None, ecmp_salt: int = 0, server_state: bool = False,
                 exact_resets: bool = False):
        self.now = 1000.0
        self.queue: list = []  # (arrival, n, Frame)
        self.n = itertools.count()
        self.sent: list = []
        self.flows_guarded: list = []
        self.watched: list = []
        self.icmp_for = icmp_for
        self.dead = dead
        self.forged_unreachable = forged_unreachable  # a box says "host unreachable"; the server answers too
        self.server_ids = itertools.count(1)
        self.max_in_flight = 0
        self.distance, self.box_at, self.box = distance, box_at, box
        self.residual_for, self.blocked_until = residual_for, None
        self.ecmp_at, self.ecmp_salt = ecmp_at, ecmp_salt
        self.swallowed: set[tuple] = set()
        self.server_state, self.connections = server_state, {}  # four-tuple -> the sequence number expected next
        self.exact_resets, self.challenged_at = exact_resets, {}  # four-tuple -> its last challenge ACK's time
        self.challenges = 0
        self.branches_met: set[str] = set()  # the ECMP branches our packets took
        self.expired_at_split: set[str] = set()  # the routers of hop `ecmp_at` that sent time-exceeded

    @property
    def half_open(self) -> list[tuple]:
        return sorted(self.connections)

    def branch(self, record) -> str:
        """The ECMP branch of a packet's five-tuple ("a" or "b")."""
        key = f"{record.src} {record.sport} {record.dst} {record.dport} 6 {self.ecmp_salt}".encode()
        return "ab"[hashlib.sha256(key).digest()[0] % 2]  # well mixed, as a router's jhash

    def clock(self) -> float:
        return self.now

    def deliver(self, raw: bytes, delay: float, outgoing: bool) -> None:
        heapq.heappush(self.queue, (self.now + delay, next(self.n), raw, outgoing))

    # the far side -------------------------------------------------------------------------
    def on_sent(self, raw: bytes) -> None:
        self.deliver(raw, 0.0, True)  # the capture sees our own packet at once
        record = parse_ip(raw, self.now)
        self.sent.append(record)
        if self.distance is not None and not self._along_the_path(raw, record):
            return
        server_ttl = 60 if self.distance is None else 64 - (self.distance - 1)
        server = StructCrafter(record.dst, record.dport, record.src, record.sport, next(self.server_ids) * 100,
                               ttl=server_ttl)

        def answer(flags, seq, ack, payload=b""):
            self.deliver(server.build(Segment(flags, seq, ack, 65160, payload)), RTT, False)

        if record.dst in self.dead:  # the last router's neighbour lookup fails: host unreachable
            self.deliver(icmp_quoting(raw, code=1, router=LAST_ROUTER), DEAD_HOST_ERROR_AFTER, False)
            return
        if record.dport == 82 or (record.dport == 83 and record.flags != "S"):
            return  # 82: nothing answers; 83: the handshake only, then silence
        key = (record.src, record.sport, record.dst, record.dport)
        if self.server_state and record.proto == "tcp":
            if "R" in record.flags:
                if not self.exact_resets or record.seq == self.connections.get(key):
                    self.connections.pop(key, None)
                elif key in self.connections:
                    self._challenge(key, answer)
                return
            if record.flags == "S" and key in self.connections:
                self._challenge(key, answer)  # a challenge ACK: the old connection's
                return
            if record.flags == "S":
                self.connections[key] = record.seq + 1
            elif key not in self.connections:
                answer("R", record.ack, 0)  # no connection here: a reset (RFC 9293 3.10.7.1)
                return
            elif "F" in record.flags:
                self.connections.pop(key, None)
            elif record.length and record.seq == self.connections[key]:
                self.connections[key] += record.length  # in order: expected next moves on
        if record.flags == "S":
            if record.dst in self.forged_unreachable:
                self.deliver(icmp_quoting(raw, code=1, router=LAST_ROUTER), RTT / 4, False)
            if record.dport == 81:
                answer("RA", 0, record.seq + 1)
            else:
                answer("SA", 7000, record.seq + 1)
        elif record.length and record.payload.startswith(b"HEAD"):
            if record.src + ":" + str(record.sport) in self.icmp_for:
                self.deliver(icmp_quoting(raw), RTT / 4, False)
                return
            answer("FPA", 7001, record.seq + record.length, RESPONSE)
        elif "F" in record.flags:
            answer("A", 7002 + len(RESPONSE), record.seq + 1)


    def _challenge(self, key: tuple, answer) -> None:
        """A challenge ACK of the connection held on `key` (RFC 5961 4, rate-limited with
        `exact_resets`)."""
        if self.exact_resets:
            if self.now - self.challenged_at.get(key, -1e9) < CHALLENGE_EVERY:
                return
            self.challenged_at[key] = self.now
        self.challenges += 1
        answer("A", 7001, self.connections[key])

    def _along_the_path(self, raw: bytes, record) -> bool:
        """The hops before the server: the box, then the router where the TTL runs out. True if
        the packet reaches the server."""
        hop_time = RTT / 2 / self.distance
        branch = self.branch(record) if self.ecmp_at is not None and record.proto == "tcp" else "a"
        if self.ecmp_at is not None and record.ttl >= self.ecmp_at:
            self.branches_met.add(branch)
        on_branch = self.ecmp_at is None or self.box_at is None or self.box_at < self.ecmp_at or branch == "b"
        if self.box_at is not None and record.ttl >= self.box_at and record.proto == "tcp" and on_branch:
            box = StructCrafter(record.dst, record.dport, record.src, record.sport, 0x4242, ttl=64 - (self.box_at - 1))
            if self.box == "syn-firewall" and record.flags == "S":
                self.deliver(box.build(Segment("RA", 0, record.seq + 1, 0)), 2 * hop_time * self.box_at, False)
                return False
            if self.box == "residual" and record.flags == "S" and self.blocked_until is not None \
                    and self.now < self.blocked_until:
                self.deliver(box.build(Segment("RA", 0, record.seq + 1, 0)), 2 * hop_time * self.box_at, False)
                return False
            if self.box == "residual" and BOX_HOST in record.payload:
                self.blocked_until = self.now + self.residual_for
            if self.box == "swallow" and BOX_HOST in record.payload:
                key = (record.src, record.sport, record.dst, record.dport)
                if key not in self.swallowed:
                    self.swallowed.add(key)
                    return False  # dropped; the four-tuple is remembered and passes from now on
            if self.box in ("tap", "residual") and BOX_HOST in record.payload:
                self.deliver(box.build(Segment("RA", 7001, record.seq + record.length, 0)),
                             2 * hop_time * self.box_at, False)
        if record.ttl < self.distance:
            number = record.ttl + (128 if branch == "b" and record.ttl == self.ecmp_at else 0)
            if record.ttl == self.ecmp_at:
                self.expired_at_split.add(f"198.51.100.{number}")
            self.deliver(icmp_quoting(raw, kind=11, code=0, router=f"198.51.100.{number}"),
                         2 * hop_time * record.ttl, False)
            return False
        if record.proto == "icmp" and record.icmp_type == 8:  # the server answers echo
            ident_seq = raw[24:28]
            body = struct.pack("!BBH", 0, 0, 0) + ident_seq
            body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
            header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 64 - (self.distance - 1), 1, 0,
                                 raw[16:20], raw[12:16])
            self.deliver(header + body, RTT, False)
            return False
        return True

    # the I/O classes the session opens -----------------------------------------------------
    def classes(self):
        net = self

        class Capture:
            def __init__(self, addresses):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

            def watch(self, addresses):
                net.watched.append(list(addresses))

            def drops(self):
                return 0

            def read(self, timeout):
                if not net.queue or net.queue[0][0] > net.now + timeout:
                    net.now += timeout
                    return []
                net.now = max(net.now, net.queue[0][0])
                frames = []
                while net.queue and net.queue[0][0] <= net.now:
                    at, _, raw, outgoing = heapq.heappop(net.queue)
                    frames.append(Frame(at, raw, outgoing))
                return frames

        class Sender:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

            def send(self, raw, destination):
                net.on_sent(raw)

        class Guard:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

            def add_flows(self, flows):
                net.flows_guarded.extend(flows)

        return Capture, Sender, Guard

    def network(self, sender=None, client: str = CLIENT):
        """The `probe.network.loop.Network` of this fake: its capture, sender (or `sender`), guard and
        clock, the struct crafter, fake ports, and every route leaving from `client`."""
        from probe.network.loop import Network

        capture, default_sender, guard = self.classes()
        return Network(capture, sender or default_sender, guard, StructCrafter, FakePort,
                       lambda address, port: client, set, self.clock, self.clock)


class FailingSender:
    """A sender that raises `error` for the n-th packet (1-based) among those whose TCP flags
    are `flags` (any packet when None), and sends everything else to the fake network; the
    packet it refused is kept in `failed`."""

    def __init__(self, net: FakeNet, nth: int, error: Exception, flags: str | None = None):
        self.net, self.nth, self.error, self.flags, self.seen = net, nth, error, flags, 0
        self.nths = {nth}  # more than one: set it after construction
        self.failed: bytes | None = None

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def send(self, raw, destination):
        if self.flags is None or parse_ip(raw, 0.0).flags == self.flags:
            self.seen += 1
            if self.seen in self.nths:
                self.failed = raw
                raise self.error
        self.net.on_sent(raw)


def icmp_quoting(raw: bytes, code: int = 13, router: str = "198.51.100.1", kind: int = 3) -> bytes:
    """An ICMP error (destination unreachable, administratively prohibited, unless `kind` and
    `code` say otherwise) from `router`, quoting the first 28 bytes of `raw`."""
    body = struct.pack("!BBHI", kind, code, 0, 0) + raw[:28]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 63, 1, 0,
                         socket.inet_aton(router), raw[12:16])
    return header + body


def target(address: str, port: int) -> Target:
    return Target(f"http://www.example.com:{port}/", "www.example.com", address, port, "/")


class FakePort:
    """An ephemeral port, as the kernel hands them out: any free one, reused once closed."""

    free = list(range(40000, 40100))

    def __init__(self, address, port: int = 0):
        if port:
            if port not in FakePort.free:
                raise OSError(98, "Address already in use")
            FakePort.free.remove(port)
            self.port = port
            return
        self.port = FakePort.free.pop(0)

    def close(self):
        FakePort.free.append(self.port)
