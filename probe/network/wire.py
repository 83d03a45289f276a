"""The only place that touches the network: one capture, one raw sender, kernel timestamps.

The capture is an AF_PACKET socket opened (and filtered) before the first packet leaves,
so a reply can never arrive before we listen. It takes both families: IPv4 and IPv6 frames
(ethertypes 0x0800 and 0x86DD) to or from the probed addresses, with every ICMP and ICMPv6
error (RFC 4443 2.1: types below 128) and echo reply, which are matched to flows by what they quote. It sees our own outgoing packets as well,
with the kernel's timestamp of when they were handed to the device: both ends of the RTT
come from the same clock, not from Python timers.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import select
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from probe.errors import ProbeError, UsageError

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
IP_ETHERTYPES = (ETH_P_IP, ETH_P_IPV6)
SO_TIMESTAMPNS = 35
SO_MARK = 36
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
SKF_AD_PROTOCOL = -0x1000  # SKF_AD_OFF + SKF_AD_PROTOCOL: the frame's ethertype
PROBE_MARK = 0x70726f62  # "prob": our crafted packets carry it, so the guard lets them pass
SNAPLEN = 65535


@dataclass(frozen=True)
class Frame:
    """A captured IPv4 or IPv6 packet with its kernel timestamp (seconds) and whether we sent it."""

    t: float
    data: bytes
    outgoing: bool


class Capture:
    """Every IPv4 or IPv6 packet to or from the given addresses (and every ICMP/ICMPv6 error), both directions."""

    def __init__(self, addresses: list[str], buffer_bytes: int = 4 << 20):
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise ProbeError("cannot open a packet capture: run as root (or with CAP_NET_RAW)") from None
        try:
            self._attach(fleet_filter(addresses))
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self._set_buffer(buffer_bytes)
            self.sock.setblocking(False)
            self._drain()  # frames queued before the filter was attached are not ours
        except BaseException:
            self.sock.close()
            raise

    def _attach(self, program: bytes) -> None:
        buf = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def _set_buffer(self, buffer_bytes: int) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)

    def _drain(self) -> None:
        for _ in range(100000):
            try:
                self.sock.recv(SNAPLEN)
            except BlockingIOError:
                return

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, timeout: float) -> list[Frame]:
        """Wait up to `timeout` seconds for frames, then return all that are queued."""
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        if not ready:
            return []
        frames = []
        for _ in range(4096):
            try:
                data, ancillary, _flags, address = self.sock.recvmsg(SNAPLEN, 64)
            except BlockingIOError:
                break
            if address[1] not in IP_ETHERTYPES:
                continue
            stamp = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= 16:
                    seconds, nanoseconds = struct.unpack("qq", payload[:16])
                    stamp = seconds + nanoseconds / 1e9
            if stamp is None:
                stamp = time.time()
            frames.append(Frame(stamp, data, address[2] == PACKET_OUTGOING))
        return frames

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Capture":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


BPF_MAX_INSTRUCTIONS = 4096  # the kernel's limit for a classic BPF program (BPF_MAXINSNS)
SO_RCVBUFFORCE = 33
SOL_PACKET = 263
PACKET_STATISTICS = 6


_LD_W_ABS, _LD_B_ABS, _JA, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x30, 0x05, 0x15, 0x35, 0x06
_ACCEPT, _DROP = (_RET_K, 0, 0, SNAPLEN), (_RET_K, 0, 0, 0)
ICMPV6_INFORMATIONAL = 128  # RFC 4443 2.1: types 0-127 are errors; 129 is the echo reply the sweeps wait for
ICMPV6_ECHO_REPLY = 129


def _assemble(ins: list[tuple]) -> bytes:
    return b"".join(struct.pack("HBBI", *i) for i in ins)


def _bpf_icmpv6(not_icmpv6: list[tuple]) -> list[tuple]:
    """After the ethertype said IPv6: with ICMPv6 (next header 58) straight after the fixed
    header, accept an error or an echo reply (the sweeps wait for those); other ICMPv6 and every
    other next header go on to `not_icmpv6`."""
    return [(_LD_B_ABS, 0, 0, 6), (_JEQ_K, 0, 4, 58),
            (_LD_B_ABS, 0, 0, 40), (_JGE_K, 0, 1, ICMPV6_INFORMATIONAL), (_JEQ_K, 0, 1, ICMPV6_ECHO_REPLY),
            _ACCEPT] + not_icmpv6


def _by_family(ipv4: list[tuple], ipv6: list[tuple]) -> bytes:
    """One program: the ethertype picks the IPv4 part or the IPv6 part (over the IPv4 part with
    an unconditional jump, which has 32 bits of reach where a conditional one has 8); any other
    ethertype is dropped. Each part ends in its own return."""
    return _assemble([(_LD_W_ABS, 0, 0, SKF_AD_PROTOCOL & 0xFFFFFFFF), (_JEQ_K, 1, 0, ETH_P_IP),
                      (_JA, 0, 0, len(ipv4))] + ipv4 + [(_JEQ_K, 1, 0, ETH_P_IPV6), _DROP] + ipv6)


def _bpf_tcp_icmp() -> bytes:
    """Classic BPF on cooked frames: every TCP, ICMP and ICMPv6 packet of either family (no address test)."""
    ipv4 = [(_LD_B_ABS, 0, 0, 9), (_JEQ_K, 1, 0, 6), (_JEQ_K, 0, 1, 1), _ACCEPT, _DROP]  # TCP or ICMP
    ipv6 = _bpf_icmpv6([(_LD_B_ABS, 0, 0, 6), (_JEQ_K, 0, 1, 6), _ACCEPT, _DROP])  # ICMPv6 as above, or TCP
    return _by_family(ipv4, ipv6)


def _ipv4_words(address: str) -> list[int]:
    return [struct.unpack("!I", socket.inet_aton(address))[0]]


def _ipv6_words(address: str) -> list[int]:
    return list(struct.unpack("!4I", socket.inet_pton(socket.AF_INET6, address)))


def _address_tests(addresses: list[str], offsets: tuple[int, int], words) -> list[tuple]:
    """For each offset (source, destination) and address, a test followed by its own accept.
    A one-word (IPv4) address is one comparison after one load per offset; a four-word (IPv6)
    one compares its words in turn, a mismatch jumping to the next address's test. Every jump
    is shorter than one address's test, so none nears classic BPF's 255-instruction limit."""
    ins = []
    for offset in offsets:
        if addresses and len(words(addresses[0])) == 1:
            ins.append((_LD_W_ABS, 0, 0, offset))
            for address in addresses:
                ins += [(_JEQ_K, 0, 1, words(address)[0]), _ACCEPT]
            continue
        for address in addresses:
            parts = words(address)
            for i, word in enumerate(parts):
                ins += [(_LD_W_ABS, 0, 0, offset + 4 * i), (_JEQ_K, 0, 2 * (len(parts) - i) - 1, word)]
            ins.append(_ACCEPT)
    return ins


def _bpf_addresses(addresses: list[str]) -> bytes:
    """Classic BPF on cooked frames: packets from or to one of `addresses`, and ICMP errors.
    With IPv4 addresses only, IPv4 packets and every ICMP (the program of the IPv4-only probe,
    4 instructions per address); with IPv6 addresses too, IPv6 packets beside them, with every
    ICMPv6 error and echo reply. Each test is followed by its own `accept`, so no conditional
    jump is longer than one address's test (a classic BPF jump reaches 255 instructions at
    most: a layout with one jump to a shared `accept` holds only 127 addresses)."""
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]
    ipv4 = [(_LD_B_ABS, 0, 0, 9), (_JEQ_K, 0, 1, 1), _ACCEPT] + _address_tests(v4, (12, 16), _ipv4_words) + [_DROP]
    if not v6:
        return _assemble([(_LD_W_ABS, 0, 0, SKF_AD_PROTOCOL & 0xFFFFFFFF), (_JEQ_K, 1, 0, ETH_P_IP), _DROP] + ipv4)
    return _by_family(ipv4, _bpf_icmpv6(_address_tests(v6, (8, 24), _ipv6_words) + [_DROP]))


IPV6_ADDRESS_COST = 32  # an IPv6 test is 18 classic instructions, 8 of them loads that the kernel expands
# when it translates the program: measured here, 131 IPv6 addresses still attach and 132 do not


def fleet_filter(addresses: list[str]) -> bytes:
    """The filter for many flows: a test per address while the program fits classic BPF's
    4096 instructions (4 per IPv4 address + 9: 1,021 IPv4 addresses; an IPv6 address counts
    as 32: 127 of them), else every TCP, ICMP and ICMPv6 packet, which the caller sorts out in
    userspace (one flow-table lookup per packet)."""
    unique = sorted(set(addresses))
    cost = sum(IPV6_ADDRESS_COST if ":" in address else 4 for address in unique)
    if unique and cost + (18 if cost > 4 * len(unique) else 9) <= BPF_MAX_INSTRUCTIONS:
        return _bpf_addresses(unique)
    return _bpf_tcp_icmp()


class FleetCapture(Capture):
    """One capture for the many flows of a batch: the same frames as `Capture`, a filter that
    stays within classic BPF's limit however many addresses there are (`fleet_filter`), a
    receive buffer large enough for bursts (forced past rmem_max where we may), and the
    kernel's count of frames it had to drop (`drops`)."""

    def __init__(self, addresses: list[str], buffer_bytes: int = 32 << 20):
        self.dropped = 0
        super().__init__(addresses, buffer_bytes)
        self.drops()  # what the kernel counted before the filter was in place is not ours
        self.dropped = 0

    def watch(self, addresses: list[str]) -> None:
        """Re-attach the filter for this set of addresses (the kernel swaps it atomically;
        frames already queued stay queued)."""
        self._attach(fleet_filter(addresses))

    def _set_buffer(self, buffer_bytes: int) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, buffer_bytes)
        except PermissionError:
            super()._set_buffer(buffer_bytes)

    def drops(self) -> int:
        """Frames the kernel dropped for this socket since it opened (buffer full): a batch
        whose capture lost frames says so instead of judging on missing packets."""
        _packets, dropped = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.dropped += dropped  # the kernel resets its counters on every read
        return self.dropped


_ZONES: dict[str, int] = {}  # link-local address -> the index of the interface of its link (its zone)


def remember_zone(address: str, index: int) -> None:
    """A link-local address means one host only on one link (RFC 4007): every socket address
    made for it carries that interface as its scope id. Packets do not carry it, so the flow,
    the guard and the capture keep the plain address."""
    _ZONES[address] = index


def sockaddr(address: str, port: int) -> tuple:
    """The socket address of `address`: with its scope id when it is a link-local one we know."""
    index = _ZONES.get(address)
    return (address, port) if index is None else (address, port, 0, index)


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class RawSender:
    """Sends finished IPv4 or IPv6 packets, marked so the guard never drops them.

    IPv4: IPPROTO_RAW implies IP_HDRINCL (raw(7)). IPv6: an AF_INET6 IPPROTO_RAW socket sends
    the whole packet as given, fixed header included (Linux sets hdrincl for it, af_inet6.c, and
    rawv6_send_hdrinc fills in nothing), so the hop limit, flow label and TCP checksum are ours:
    the crafters write them. The socket of a family opens on its first packet (an IPv4-only
    run never needs IPv6), the IPv4 one at once, so missing privileges show before anything."""

    def __init__(self, families: tuple[int, ...] = (4,), interface: str | None = None):
        self.socks: dict[int, socket.socket] = {}
        self.interface = interface
        try:
            for family in families:
                self._sock(socket.AF_INET6 if family == 6 else socket.AF_INET)
        except BaseException:
            self.close()
            raise

    def _sock(self, family: int) -> socket.socket:
        if family not in self.socks:
            try:
                sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
            except PermissionError:
                raise ProbeError("cannot open a raw socket: run as root (or with CAP_NET_RAW and CAP_NET_ADMIN)") from None
            except OSError as error:  # EAFNOSUPPORT: IPv6 is disabled in this kernel
                raise ProbeError(f"cannot open a raw IPv6 socket: {error.strerror}") from None
            self.socks[family] = sock
            if self.interface is not None:
                bind_to_device(sock, self.interface)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_MARK, PROBE_MARK)
            except PermissionError:
                raise ProbeError("cannot open a raw socket: run as root (or with CAP_NET_RAW and CAP_NET_ADMIN)") from None
        return self.socks[family]

    def send(self, packet: bytes, destination: str) -> None:
        family = _family(destination)
        try:
            self._sock(family).sendto(packet, sockaddr(destination, 0))
        except OSError as error:
            if error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                raise ProbeError(f"no route to {destination}: {error.strerror}") from None
            if error.errno == errno.EPERM:
                raise ProbeError(f"sending to {destination} was refused by a local firewall rule") from None
            raise

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()

    def __enter__(self) -> "RawSender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


TRANSIENT_SEND_ERRORS = (errno.ENOBUFS, errno.EAGAIN)


def send_or_lose(sender, packet: bytes, destination: str) -> bool:
    """The one send-error policy of every loop. A transient error (the device queue is full:
    ENOBUFS, EAGAIN) loses the packet before the wire, as congestion would, and the state
    machine retransmits what matters: False, and nothing raised. A packet that left gives
    True. Anything else raises (ProbeError for no route or a local rule, as RawSender says)."""
    try:
        sender.send(packet, destination)
    except OSError as error:
        if error.errno in TRANSIENT_SEND_ERRORS:
            return False
        raise
    return True


def bind_to_device(sock: socket.socket, interface: str) -> None:
    """Make `sock` send through `interface` only (SO_BINDTODEVICE, socket(7)), as ping -I and
    curl --interface do; an interface this host does not have is a usage error."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
    except OSError as error:
        if error.errno == errno.ENODEV:
            raise UsageError(f"-i {interface}: this host has no such interface") from None
        raise


def source_address(destination: str, port: int, interface: str | None = None) -> str:
    """The address the kernel would use to reach `destination` (a route lookup; sends nothing),
    through `interface` when one is given."""
    with socket.socket(_family(destination), socket.SOCK_DGRAM) as udp:
        if interface is not None:
            bind_to_device(udp, interface)
        try:
            udp.connect(sockaddr(destination, port))
        except OSError as error:
            if error.errno == errno.EACCES:  # the kernel refuses a broadcast destination without SO_BROADCAST
                raise UsageError(f"{destination} is a broadcast address of this host's network, "
                                 f"not a single server") from None
            raise ProbeError(f"no route to {destination}: {error.strerror}") from None
        local = udp.getsockname()
        if destination in _ZONES:  # our end of a link-local path is link-local on the same link
            remember_zone(local[0], _ZONES[destination])
        return local[0]


def local_addresses() -> set[str]:
    """The IPv4 and IPv6 addresses of this host's interfaces (to refuse probing ourselves)."""
    addresses = set()
    try:
        with open("/proc/net/fib_trie") as trie:
            lines = trie.read().splitlines()
    except OSError:
        lines = []
    for previous, line in zip(lines, lines[1:]):
        if "/32 host LOCAL" in line:
            addresses.add(previous.split()[-1])
    try:
        with open("/proc/net/if_inet6") as table:  # 32 hex digits, then index, prefix, scope, flags, name
            for row in table:
                raw = bytes.fromhex(row.split()[0])
                addresses.add(socket.inet_ntop(socket.AF_INET6, raw))
    except (OSError, ValueError, IndexError):
        pass
    return addresses


class PortReservation:
    """Holds a port so no other connection of this host takes it: a kernel-chosen ephemeral one,
    or `port` (--source-port), refused in one line when something of this host already has it."""

    def __init__(self, address: str, port: int = 0):
        self.sock = socket.socket(_family(address), socket.SOCK_STREAM)
        try:
            self.sock.bind(sockaddr(address, port))
        except OSError as error:
            self.sock.close()
            if port and error.errno == errno.EADDRINUSE:
                raise ProbeError(f"source port {port} is already in use on this host") from None
            raise
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def random_u32() -> int:
    return struct.unpack("!I", os.urandom(4))[0]


def _boot_secret() -> bytes:
    """A secret that lasts as long as the host's boot, as the kernel's own TCP secrets do, so
    that successive runs on one host agree; the boot id is random per boot (random(4))."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_bytes().strip()
    except OSError:
        return _PROCESS_SECRET


_PROCESS_SECRET = os.urandom(16)


def _keyed_u32(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), key=_boot_secret()[:64], digest_size=4).digest()
    return struct.unpack("!I", digest)[0]


def initial_sequence(client: str, client_port: int, server: str, server_port: int) -> int:
    """The ISN of a new connection as RFC 6528 asks and Linux makes it (secure_tcp_seq): a
    keyed hash of the addresses and ports plus a clock ticking every 64 ns. A purely random ISN
    sometimes falls behind the last one of the same four-tuple, and a server (or a SYN proxy
    speaking for us, which replays our ISN and timestamp) still holding that connection in
    TIME-WAIT then answers the SYN with the old connection's ACK (RFC 9293 3.10.7.4, Linux's
    tcp_timewait_state_process) instead of a SYN-ACK."""
    return (_keyed_u32("isn", client, client_port, server, server_port) + (time.time_ns() >> 6)) % (1 << 32)


def timestamp_offset(client: str, server: str) -> int:
    """The TCP timestamp clock's offset for one pair of addresses (RFC 7323 7.1, Linux's
    secure_tcp_ts_off): random-looking to the server, the same for every connection of the pair,
    so added to the monotonic clock the timestamps of successive connections (and runs) only go
    forward, as PAWS and a server's TIME-WAIT check expect (a new SYN with a newer timestamp
    reopens a TIME-WAIT four-tuple)."""
    return _keyed_u32("ts", client, server)
