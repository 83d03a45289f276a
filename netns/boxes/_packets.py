"""Reading queued packets and building the forged ones (scapy layers only), IPv4 or IPv6.

Over IPv6 the hop limit stands where IPv4 has the TTL (RFC 8200 3), there is no IP-ID (`ip_id`
reads 0 and a forged packet ignores it) and no DF (an IPv6 router never fragments: `df` reads
True, as the probe's records say); a forged packet gets a random flow label unless the box
copies one (RFC 6437: a genuine sender keeps one label per flow, an injector rarely knows it).
A queued IPv6 segment is read when TCP follows the fixed header (the lab adds no extension
headers)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from ._common import BOX_TTL


@dataclass(frozen=True)
class Segment:
    """The fields of a queued TCP segment the boxes decide on."""

    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: str
    window: int
    ttl: int
    ip_id: int
    df: bool
    payload: bytes
    flow_label: int = 0

    @property
    def end_seq(self) -> int:
        """Sequence number just after this segment's data (SYN/FIN count too)."""
        return (self.seq + len(self.payload) + ("S" in self.flags) + ("F" in self.flags)) % 2**32

    @property
    def flow(self) -> tuple[str, int, str, int]:
        """(client, client port, server, server port), the same for both directions
        as long as the caller says which side is the client."""
        return (self.src, self.sport, self.dst, self.dport)

    @property
    def reverse_flow(self) -> tuple[str, int, str, int]:
        return (self.dst, self.dport, self.src, self.sport)


def parse(data: bytes) -> Segment | None:
    """A TCP segment from the bytes NFQUEUE hands over, or None if it is not TCP."""
    if data and data[0] >> 4 == 6:
        ip6 = IPv6(data)
        if ip6.nh != 6 or TCP not in ip6:
            return None
        tcp = ip6[TCP]
        start = 40 + tcp.dataofs * 4
        payload = data[start:40 + ip6.plen] if 40 + ip6.plen >= start else b""
        return Segment(ip6.src, ip6.dst, tcp.sport, tcp.dport, tcp.seq, tcp.ack, str(tcp.flags),
                       tcp.window, ip6.hlim, 0, True, payload, ip6.fl)
    ip = IP(data)
    if ip.proto != 6 or TCP not in ip:
        return None
    tcp = ip[TCP]
    start = ip.ihl * 4 + tcp.dataofs * 4
    payload = data[start:ip.len] if ip.len >= start else b""
    return Segment(ip.src, ip.dst, tcp.sport, tcp.dport, tcp.seq, tcp.ack, str(tcp.flags),
                   tcp.window, ip.ttl, ip.id, bool(ip.flags.DF), payload)


def ip_layer(data: bytes) -> IP | IPv6:
    """The packet as scapy reads it, by its version nibble."""
    return IPv6(data) if data and data[0] >> 4 == 6 else IP(data)


def random_ip_id() -> int:
    return random.randint(1, 0xFFFF)  # 0 would be replaced by the kernel anyway


def random_flow_label() -> int:
    return random.randint(1, 0xFFFFF)


def forged(src: str, dst: str, sport: int, dport: int, *, seq: int, ack: int = 0,
           flags: str = "R", window: int = 0, ttl: int = BOX_TTL, ip_id: int | None = None,
           df: bool = False, payload: bytes = b"", flow_label: int | None = None) -> IP | IPv6:
    """One packet a box sends in someone else's name (IPv6 when the addresses are)."""
    if ":" in src:
        ip = IPv6(src=src, dst=dst, hlim=ttl, fl=random_flow_label() if flow_label is None else flow_label)
    else:
        ip = IP(src=src, dst=dst, ttl=ttl, id=random_ip_id() if ip_id is None else ip_id & 0xFFFF,
                flags="DF" if df else 0)
    tcp = TCP(sport=sport, dport=dport, seq=seq % 2**32, ack=ack % 2**32 if "A" in flags else 0,
              flags=flags, window=window)
    return ip / tcp / payload if payload else ip / tcp


def with_fresh_checksums(data: bytes, ttl_decrement: int = 0) -> bytes:
    """The same packet with its IP and TCP checksums recomputed. A copy sent on a raw socket
    must be complete; NFQUEUE completes offloaded checksums unless the queue asked for GSO
    packets (NFQA_CFG_F_GSO, which NetfilterQueue does not), so this is cheap insurance."""
    if data[0] >> 4 == 6:
        ip = IPv6(data)
        ip.hlim = max(ip.hlim - ttl_decrement, 1)
    else:
        ip = IP(data)
        ip.ttl = max(ip.ttl - ttl_decrement, 1)
        del ip.chksum
    if TCP in ip:
        del ip[TCP].chksum
    return bytes(ip)


INJECTOR_OFFSETS = (0, 1460, 4380)  # Weaver, Sommer, Paxson 2009: seq offsets of RST/ACK bursts


def burst_toward_client(req: Segment, *, ttl: int = BOX_TTL, window: int | None = None) -> list[IP | IPv6]:
    """In the server's name: a bare RST at the client's ack, then RST/ACKs at the offsets."""
    window = req.window if window is None else window
    server, client = req.dst, req.src
    first = forged(server, client, req.dport, req.sport, seq=req.ack, flags="R",
                   window=window, ttl=ttl)
    rest = [forged(server, client, req.dport, req.sport, seq=req.ack + offset, ack=req.end_seq,
                   flags="RA", window=window, ttl=ttl) for offset in INJECTOR_OFFSETS]
    return [first, *rest]


def burst_toward_server(req: Segment, *, ttl: int = BOX_TTL) -> list[IP | IPv6]:
    """In the client's name: bare RSTs at the request's start and just after it, then RST/ACKs at
    the offsets. Released next to the request, a forged packet may overtake it on the way; one
    of the two bare RSTs is then exactly at the server's next expected sequence number whichever
    arrives first (the other is out of window and silently dropped, RFC 5961)."""
    server, client = req.dst, req.src
    before = forged(client, server, req.sport, req.dport, seq=req.seq, flags="R",
                    window=req.window, ttl=ttl)
    first = forged(client, server, req.sport, req.dport, seq=req.end_seq, flags="R",
                   window=req.window, ttl=ttl)
    rest = [forged(client, server, req.sport, req.dport, seq=req.end_seq + offset, ack=req.ack,
                   flags="RA", window=req.window, ttl=ttl) for offset in INJECTOR_OFFSETS]
    return [before, first, *rest]
