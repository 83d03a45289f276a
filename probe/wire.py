"""The only place that touches the network: one capture, one raw sender, kernel timestamps.

The capture is an AF_PACKET socket opened (and filtered) before the first packet leaves,
so a reply can never arrive before we listen. It sees our own outgoing packets as well,
with the kernel's timestamp of when they were handed to the device: both ends of the RTT
come from the same clock, not from Python timers.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import struct
import time
from dataclasses import dataclass

from probe.errors import ProbeError, UsageError

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
SO_TIMESTAMPNS = 35
SO_MARK = 36
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
SKF_AD_PROTOCOL = -0x1000  # SKF_AD_OFF + SKF_AD_PROTOCOL: the frame's ethertype
PROBE_MARK = 0x70726f62  # "prob": our crafted packets carry it, so the guard lets them pass
SNAPLEN = 65535


@dataclass(frozen=True)
class Frame:
    """A captured IPv4 packet with its kernel timestamp (seconds) and whether we sent it."""

    t: float
    data: bytes
    outgoing: bool


class Capture:
    """Every IPv4 packet to or from the given addresses (and every ICMP), both directions."""

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
            if address[1] != ETH_P_IP:
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


def _bpf_tcp_icmp() -> bytes:
    """Classic BPF on cooked frames: every IPv4 TCP or ICMP packet (no address test)."""
    ld_w_abs, ld_b_abs, jeq_k, ret_k = 0x20, 0x30, 0x15, 0x06
    ins = [(ld_w_abs, 0, 0, SKF_AD_PROTOCOL & 0xFFFFFFFF), (jeq_k, 0, 4, ETH_P_IP),  # not IPv4: drop
           (ld_b_abs, 0, 0, 9), (jeq_k, 1, 0, 6), (jeq_k, 0, 1, 1),  # TCP or ICMP: accept
           (ret_k, 0, 0, SNAPLEN), (ret_k, 0, 0, 0)]
    return b"".join(struct.pack("HBBI", *i) for i in ins)


def _bpf_addresses(addresses: list[str]) -> bytes:
    """Classic BPF on cooked frames: IPv4 packets from or to one of `addresses`, and all ICMP.
    Each test is followed by its own `accept`, so no jump is longer than one instruction
    (a classic BPF jump reaches 255 instructions at most: a layout with one jump to a shared
    `accept` holds only 127 addresses)."""
    ld_w_abs, ld_b_abs, jeq_k, ret_k = 0x20, 0x30, 0x15, 0x06
    accept, drop = (ret_k, 0, 0, SNAPLEN), (ret_k, 0, 0, 0)
    ins = [(ld_w_abs, 0, 0, SKF_AD_PROTOCOL & 0xFFFFFFFF), (jeq_k, 1, 0, ETH_P_IP), drop,
           (ld_b_abs, 0, 0, 9), (jeq_k, 0, 1, 1), accept]
    for offset in (12, 16):
        ins.append((ld_w_abs, 0, 0, offset))
        for address in addresses:
            ins += [(jeq_k, 0, 1, struct.unpack("!I", socket.inet_aton(address))[0]), accept]
    ins.append(drop)
    return b"".join(struct.pack("HBBI", *i) for i in ins)


def fleet_filter(addresses: list[str]) -> bytes:
    """The filter for many flows: a test per address while the program fits classic BPF's
    4096 instructions (4 per address + 9: 1,021 addresses), else every TCP and ICMP packet,
    which the caller sorts out in userspace (one flow-table lookup per packet)."""
    unique = sorted(set(addresses))
    if unique and 4 * len(unique) + 9 <= BPF_MAX_INSTRUCTIONS:
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


class RawSender:
    """Sends finished IPv4 packets (IP_HDRINCL), marked so the guard never drops them."""

    def __init__(self):
        try:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self.sock.setsockopt(socket.SOL_SOCKET, SO_MARK, PROBE_MARK)
        except PermissionError:
            raise ProbeError("cannot open a raw socket: run as root (or with CAP_NET_RAW and CAP_NET_ADMIN)") from None

    def send(self, packet: bytes, destination: str) -> None:
        try:
            self.sock.sendto(packet, (destination, 0))
        except OSError as error:
            if error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                raise ProbeError(f"no route to {destination}: {error.strerror}") from None
            if error.errno == errno.EPERM:
                raise ProbeError(f"sending to {destination} was refused by a local firewall rule") from None
            raise

    def close(self) -> None:
        self.sock.close()

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


def source_address(destination: str, port: int) -> str:
    """The address the kernel would use to reach `destination` (a route lookup; sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.connect((destination, port))
        except OSError as error:
            if error.errno == errno.EACCES:  # the kernel refuses a broadcast destination without SO_BROADCAST
                raise UsageError(f"{destination} is a broadcast address of this host's network, "
                                 f"not a single server") from None
            raise ProbeError(f"no route to {destination}: {error.strerror}") from None
        return udp.getsockname()[0]


def local_addresses() -> set[str]:
    """The IPv4 addresses of this host's interfaces (to refuse probing ourselves)."""
    addresses = set()
    try:
        with open("/proc/net/fib_trie") as trie:
            lines = trie.read().splitlines()
    except OSError:
        return addresses
    for previous, line in zip(lines, lines[1:]):
        if "/32 host LOCAL" in line:
            addresses.add(previous.split()[-1])
    return addresses


class PortReservation:
    """Holds a kernel-chosen ephemeral port so no other connection of this host takes it."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((address, 0))
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def random_u32() -> int:
    return struct.unpack("!I", os.urandom(4))[0]
