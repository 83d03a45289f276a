"""The engine's input and output: plain frozen data."""

from __future__ import annotations

from dataclasses import dataclass, field

from probe.record import PacketRecord

VERDICTS = ("clean", "server-reset", "middlebox-reset", "middlebox-response", "dropped", "no-answer",
            "unreachable", "ambiguous-reset", "expired")
# the contract's origins, and `client`: at the server's seat (`probe analyze` of a server-side capture),
# a packet the client sent (what `self` is at the client's seat)
ORIGINS = ("self", "server", "path", "middlebox", "unknown", "client")


@dataclass(frozen=True)
class Flow:
    """Who is who in one TCP exchange, and where the capture was taken."""

    client: str
    client_port: int
    server: str
    server_port: int
    vantage: str = "client"  # "client" or "server"

    def sent_by_client(self, packet: PacketRecord) -> bool:
        return (packet.proto == "tcp" and packet.src == self.client and packet.sport == self.client_port
                and packet.dst == self.server and packet.dport == self.server_port)

    def toward_client(self, packet: PacketRecord) -> bool:
        return (packet.proto == "tcp" and packet.src == self.server and packet.sport == self.server_port
                and packet.dst == self.client and packet.dport == self.client_port)

    def quotes_flow(self, packet: PacketRecord) -> bool:
        quoted = packet.quoted
        return (packet.proto == "icmp" and quoted is not None and quoted.src == self.client
                and quoted.dst == self.server and quoted.sport == self.client_port
                and quoted.dport == self.server_port)

    def belongs(self, packet: PacketRecord) -> bool:
        return self.sent_by_client(packet) or self.toward_client(packet) or self.quotes_flow(packet)


@dataclass(frozen=True)
class Attribution:
    """Where one packet came from, how sure we are, and the numbers that decided it."""

    origin: str
    confidence: str = "high"  # "high", "medium" or "low"
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Analysis:
    verdict: str
    direction: str | None
    hop: int | None
    rtt_ms: float | None
    attributions: tuple[Attribution, ...]
    explanation: str
    hop_basis: str | None = None  # how `hop` was found: "icmp", "ttl-sweep" or "trace"
    notes: tuple[str, ...] = field(default=())
