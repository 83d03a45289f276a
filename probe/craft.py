"""Turn `Segment`s into IPv4 or IPv6 packets. Builds bytes; sends nothing."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from probe.fastcraft import new_flow_label
from probe.tcp import Segment


class Crafter:
    """Builds the packets of one flow the way Linux would: over IPv4 DF set and a per-flow
    IP-ID counter; over IPv6 (`src` holds a colon) one flow label for the flow (RFC 6437; a
    random one if `flow_label` is None) and the hop limit where IPv4 has the TTL (RFC 8200 3)."""

    def __init__(self, src: str, sport: int, dst: str, dport: int, first_ip_id: int, ttl: int = 64,
                 flow_label: int | None = None):
        self.src, self.sport, self.dst, self.dport = src, sport, dst, dport
        self.next_ip_id = first_ip_id & 0xFFFF
        self.ttl = ttl
        self.version = 6 if ":" in src else 4
        self.flow_label = (new_flow_label() if flow_label is None else flow_label) if self.version == 6 else 0

    def _ip(self, ttl: int | None):
        if self.version == 6:
            return IPv6(src=self.src, dst=self.dst, hlim=ttl or self.ttl, fl=self.flow_label, tc=0)
        ip_id = self.next_ip_id
        self.next_ip_id = (self.next_ip_id + 1) & 0xFFFF
        return IP(src=self.src, dst=self.dst, ttl=ttl or self.ttl, id=ip_id, flags="DF")

    def build(self, segment: Segment, ttl: int | None = None) -> bytes:
        packet = self._ip(ttl) / TCP(
            sport=self.sport, dport=self.dport, flags=segment.flags, seq=segment.seq, ack=segment.ack,
            window=segment.window, options=list(segment.options))
        if segment.payload:
            packet = packet / segment.payload
        return bytes(packet)
