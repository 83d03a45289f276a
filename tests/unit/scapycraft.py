"""The test oracle for the struct crafter (probe.protocol.craft): `Segment`s built into IPv4 or IPv6
packets by scapy. Nothing on the wire is built with it; tests hold the struct crafter's bytes
to these."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from probe.protocol.craft import StructCrafter
from probe.protocol.tcp import Segment


class Crafter(StructCrafter):
    """The struct crafter's flow (its constructor: addresses, ports, IP-ID counter, flow label),
    with every packet built by scapy instead."""

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
