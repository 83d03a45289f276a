"""How the engine's time grows with a flow's length: `analyze_flow` on one long download.

    python3 bench/engine_speed.py [--sizes 100,1000,10000]

Each flow is a download as a capture on the client's side records it: handshake, request, data
segments from the server (we acknowledge every second one), FIN both ways; the "forged" variant
adds, half-way through, a reset in the server's name from a nearer box, so that the reset
signals and the forged-reset branch of the verdict run too. Pure computation: nothing is sent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from probe.engine import Flow, analyze_flow  # noqa: E402
from probe.record import PacketRecord  # noqa: E402

CLIENT, SERVER = "192.0.2.10", "198.51.100.80"
FLOW = Flow(CLIENT, 40000, SERVER, 80)
MSS = 1448


def _tcp(t, ours, flags, seq, ack, ip_id, payload=b"", ttl=None):
    src, dst, sport, dport = (CLIENT, SERVER, 40000, 80) if ours else (SERVER, CLIENT, 80, 40000)
    return PacketRecord(t=t, src=src, dst=dst, proto="tcp", ttl=ttl or (64 if ours else 52), ip_id=ip_id % 65536,
                        df=True, tos=0, ip_len=40 + len(payload), flags=flags, sport=sport, dport=dport,
                        seq=seq % 2**32, ack=ack % 2**32, win=502 if ours else 65160, payload=payload)


def download(packets: int, forged: bool) -> list[PacketRecord]:
    """About `packets` packets of one download, 20 ms round trip."""
    rtt, isn, irs = 0.020, 1_000_000, 3_000_000_000
    request = b"GET /big HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
    out = [_tcp(0.0, True, "S", isn, 0, 1), _tcp(rtt, False, "SA", irs, isn + 1, 0),
           _tcp(rtt + 0.0001, True, "A", isn + 1, irs + 1, 2),
           _tcp(rtt + 0.0002, True, "PA", isn + 1, irs + 1, 3, request)]
    end, seq, t, n = isn + 1 + len(request), irs + 1, 2 * rtt, 0
    segments = max(1, (packets - 7) * 2 // 3)
    for n in range(segments):
        out.append(_tcp(t, False, "A", seq, end, 100 + n, b"x" * MSS))
        seq += MSS
        if n % 2:
            out.append(_tcp(t + 0.00005, True, "A", end, seq, 4 + n))
        if forged and n == segments // 2:
            out.append(_tcp(t + 0.0001, False, "RA", seq + 4380, end, 31337, ttl=60))
        t += 0.0004
    out += [_tcp(t, False, "FA", seq, end, 100 + segments), _tcp(t + 0.0001, True, "FA", end, seq + 1, 9),
            _tcp(t + rtt, False, "A", seq + 1, end + 1, 101 + segments)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    args = parser.parse_args()
    for size in (int(s) for s in args.sizes.split(",")):
        for forged in (False, True):
            packets = download(size, forged)
            started = time.perf_counter()
            analysis = analyze_flow(packets, FLOW)
            seconds = time.perf_counter() - started
            print(f"{len(packets):8d} packets {'forged' if forged else 'clean ':6s} {seconds * 1000:10.1f} ms  "
                  f"{seconds / len(packets) * 1e6:8.1f} us/packet  verdict {analysis.verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
