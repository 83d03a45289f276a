"""Turn `Segment`s into IPv4 packets. Builds bytes; sends nothing."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP

from probe.tcp import Segment


class Crafter:
    """Builds the packets of one flow the way Linux would: DF set, a per-flow IP-ID counter."""

    def __init__(self, src: str, sport: int, dst: str, dport: int, first_ip_id: int, ttl: int = 64):
        self.src, self.sport, self.dst, self.dport = src, sport, dst, dport
        self.next_ip_id = first_ip_id & 0xFFFF
        self.ttl = ttl

    def build(self, segment: Segment, ttl: int | None = None) -> bytes:
        ip_id = self.next_ip_id
        self.next_ip_id = (self.next_ip_id + 1) & 0xFFFF
        packet = IP(src=self.src, dst=self.dst, ttl=ttl or self.ttl, id=ip_id, flags="DF") / TCP(
            sport=self.sport, dport=self.dport, flags=segment.flags, seq=segment.seq, ack=segment.ack,
            window=segment.window, options=list(segment.options))
        if segment.payload:
            packet = packet / segment.payload
        return bytes(packet)
