"""Builders for the unit tests: PacketRecords made by hand, the way the capture would make them.

Everything here is plain data; nothing opens a socket. The flow is always the same client and
server (documentation addresses, RFC 5737) so that tests read as packet tables.
"""

from __future__ import annotations

from probe.engine import Flow
from probe.record import PacketRecord, Quoted

CLIENT, CLIENT_PORT = "192.0.2.10", 40000
SERVER, SERVER_PORT = "198.51.100.80", 80
ROUTER = "192.0.2.1"

OUR_TTL = 64
SERVER_TTL = 60  # the server is 5 hops away: 64 - 60 + 1

FLOW = Flow(CLIENT, CLIENT_PORT, SERVER, SERVER_PORT)

MOD32 = 1 << 32


def seq(n: int) -> int:
    """A sequence number, folded into 32 bits."""
    return n % MOD32


def _tcp(t, src, dst, sport, dport, flags, seq_no, ack_no, ttl, ip_id, win, options, payload, df=True):
    return PacketRecord(t=t, src=src, dst=dst, proto="tcp", ttl=ttl, ip_id=ip_id, df=df, tos=0,
                        ip_len=40 + len(payload), flags=flags, sport=sport, dport=dport,
                        seq=seq(seq_no), ack=seq(ack_no), win=win, options=tuple(options),
                        payload=bytes(payload))


def from_server(t: float, flags: str, seq_no: int, ack_no: int = 0, *, ttl: int = SERVER_TTL, ip_id: int = 0,
                win: int = 65160, options=(), payload: bytes = b"", df: bool = True) -> PacketRecord:
    """A TCP segment from the server's address and port to ours."""
    return _tcp(t, SERVER, CLIENT, SERVER_PORT, CLIENT_PORT, flags, seq_no, ack_no, ttl, ip_id, win,
                options, payload, df)


def from_client(t: float, flags: str, seq_no: int, ack_no: int = 0, *, ttl: int = OUR_TTL, ip_id: int = 4711,
                win: int = 502, options=(), payload: bytes = b"") -> PacketRecord:
    """A TCP segment we sent (as the capture sees it on the way out)."""
    return _tcp(t, CLIENT, SERVER, CLIENT_PORT, SERVER_PORT, flags, seq_no, ack_no, ttl, ip_id, win,
                options, payload)


def icmp_error(t: float, icmp_type: int, icmp_code: int, quoting: PacketRecord, *, src: str = ROUTER,
               ttl: int = 64, quoted_ttl: int | None = None) -> PacketRecord:
    """An ICMP error sent to us by `src`, quoting the start of one of our segments."""
    quoted = Quoted(src=quoting.src, dst=quoting.dst, proto=6,
                    ttl=quoted_ttl if quoted_ttl is not None else quoting.ttl, ip_id=quoting.ip_id,
                    tos=quoting.tos, ip_len=quoting.ip_len, sport=quoting.sport, dport=quoting.dport,
                    seq=quoting.seq)
    return PacketRecord(t=t, src=src, dst=CLIENT, proto="icmp", ttl=ttl, ip_id=0, df=False, tos=0,
                        ip_len=56, icmp_type=icmp_type, icmp_code=icmp_code, quoted=quoted)


def segment_to_record(segment, t: float) -> PacketRecord:
    """What the capture would record for a `probe.protocol.tcp.Segment` we sent."""
    return from_client(t, segment.flags, segment.seq, segment.ack, win=segment.window,
                       options=segment.options, payload=segment.payload)
