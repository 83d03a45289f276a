"""How fast is `probe analyze` on a big capture, beside `tshark -r FILE -q -z conv,tcp`?

    python3 bench/analyze_speed.py [--packets 1000000] [--keep FILE]
    python3 bench/analyze_speed.py --two-ended [--packets 1000000] [--probe-root DIR]

Generates an Ethernet pcap (tcpdump's format) of a realistic mix: many short HTTP exchanges
(handshake, request, a few response segments, FIN both ways), downloads of hundreds of
segments, some closed ports (RST/ACK to the SYN), some forged resets, UDP (DNS) and TCP
packets of connections that began before the capture. Flows overlap in time as on a busy
link. Then it times both tools in a fresh process each and prints packets per second and
peak memory (ru_maxrss of the child). Nothing is sent anywhere: it only writes a file.

`--two-ended` writes the same traffic twice, as the client's capture and as the server's (each
packet shifted by half the round trip one way or the other, plus a clock offset of SERVER_CLOCK;
the server's own packets with TTL 64, the client's with the hops taken off; the forged resets
only at the client), about half the packets each, and times `probe analyze --json CLIENT SERVER`.
`--probe-root` runs the probe of another tree (a checkout of an older commit), to compare.
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ETH = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
MSS = 1448
SERVER_CLOCK = 0.25  # seconds: the server's clock minus the client's, in --two-ended captures


def ip4(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


def tcp_packet(src, dst, sport, dport, flags, seq, ack, ttl, ip_id, payload=b"", win=502):
    bits = sum(1 << "FSRPAUEC".index(letter) for letter in flags)
    options = b"\x01\x01\x08\x0a" + struct.pack("!II", ip_id * 7, ip_id * 3)  # NOP NOP timestamp, as Linux
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq % 2**32, ack % 2**32, (5 + len(options) // 4) << 4, bits,
                      win, 0, 0) + options + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id & 0xFFFF, 0x4000, ttl, 6, 0, src, dst)
    return header + tcp


def udp_packet(src, dst, sport, dport, payload, ttl, ip_id):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ip_id, 0, ttl, 17, 0, src, dst) + udp


def exchange(rng: random.Random, t: float, client: bytes, server: bytes, port: int, kind: str, side: str = "client"):
    """The packets of one TCP exchange as a capture on that side sees them: (t, bytes). The server
    sees the client's packets half a round trip later, sends its own half a round trip earlier
    (by the client's clock) with TTL 64, and never sees the forged ones."""
    rtt = rng.uniform(0.005, 0.12)
    isn, their = rng.getrandbits(32), rng.getrandbits(32)
    ttl_back = 64 - rng.randint(5, 20)
    cid, sid = rng.getrandbits(16), rng.getrandbits(16)
    out = []
    at_server = side == "server"
    shift = rtt / 2 + SERVER_CLOCK if at_server else 0.0

    def mine(dt, flags, seq, ack, payload=b""):
        nonlocal cid
        cid += 1
        out.append((t + dt + shift, tcp_packet(client, server, port, 80, flags, seq, ack,
                                               ttl_back if at_server else 64, cid, payload)))

    def theirs(dt, flags, seq, ack, payload=b"", ttl=None, ip_id=None):
        nonlocal sid
        sid += 1
        if at_server and ttl is not None:
            return  # forged on the way: the server never sees it
        out.append((t + dt - (rtt if at_server else 0.0) + shift,
                    tcp_packet(server, client, 80, port, flags, seq, ack, 64 if at_server else ttl or ttl_back,
                               sid if ip_id is None else ip_id, payload, win=65160)))

    mine(0, "S", isn, 0)
    if kind == "closed":
        theirs(rtt, "RA", 0, isn + 1)
        return out
    theirs(rtt, "SA", their, isn + 1)
    mine(rtt + 0.0001, "A", isn + 1, their + 1)
    request = b"GET /%d HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.0\r\n\r\n" % port
    mine(rtt + 0.0002, "PA", isn + 1, their + 1, request)
    end = isn + 1 + len(request)
    if kind == "forged":
        theirs(rtt * 0.3, "RA", their + 1, end, ttl=ttl_back + 3, ip_id=rng.getrandbits(16))
        return out
    segments = rng.randint(150, 700) if kind == "download" else rng.randint(1, 4)
    seq, dt = their + 1, 2 * rtt
    for i in range(segments):
        theirs(dt, "PA" if i == segments - 1 else "A", seq, end, b"x" * MSS)
        seq += MSS
        if i % 2:
            mine(dt + 0.00005, "A", end, seq)
        dt += 0.0004 if kind == "download" else 0.0001
    theirs(dt, "FA", seq, end)
    mine(dt + 0.0001, "FA", end, seq + 1)
    theirs(dt + rtt, "A", seq + 1, end + 1)
    return out


def generate(path: Path, packets: int, seed: int = 1, side: str = "client") -> int:
    """Write the capture as seen on `side`; return the number of packets written."""
    import heapq

    rng = random.Random(seed)
    clients = [ip4(f"192.0.2.{n}") for n in range(2, 250)]
    servers = [ip4(f"{net}.{n}") for net in ("198.51.100", "203.0.113") for n in range(1, 250)]
    pending: list = []  # a heap of (t, n, bytes): flows interleave as on a real link
    written, t, n = 0, 1_700_000_000.0, 0
    with open(path, "wb") as handle:
        handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        while written < packets:
            t += rng.expovariate(2000.0)
            roll = rng.random()
            client, server = rng.choice(clients), rng.choice(servers)
            if roll < 0.06:
                events = [(t, udp_packet(client, ip4("198.51.100.53"), rng.randint(1024, 65535), 53,
                                         b"\x12\x34\x01\x00\x00\x01" + b"\x00" * 6 + b"\x07example\x03com\x00\x00\x01\x00\x01",
                                         64, rng.getrandbits(16)))]
            elif roll < 0.09:  # a connection that began before the capture
                events = [(t, tcp_packet(server, client, 443, rng.randint(1024, 65535), "A", rng.getrandbits(32),
                                         rng.getrandbits(32), 50, rng.getrandbits(16), b"y" * 200))]
            else:
                kind = rng.choices(["short", "download", "closed", "forged"], [0.90, 0.03, 0.04, 0.03])[0]
                events = exchange(rng, t, client, server, rng.randint(1024, 65535), kind, side)
            for event in events:
                n += 1
                heapq.heappush(pending, (event[0], n, event[1]))
            while pending and pending[0][0] <= t - 1.0:  # everything more than a second old is settled
                stamp, _n, packet = heapq.heappop(pending)
                _write(handle, stamp, ETH + packet)
                written += 1
        while pending:
            stamp, _n, packet = heapq.heappop(pending)
            _write(handle, stamp, ETH + packet)
            written += 1
    return written


def _write(handle, stamp: float, frame: bytes) -> None:
    seconds = int(stamp)
    handle.write(struct.pack("<IIII", seconds, int((stamp - seconds) * 1e6), len(frame), len(frame)) + frame)


def timed(argv: list[str], root: Path = ROOT) -> tuple[float, float, int]:
    """Run argv in a child; (wall seconds, peak RSS of that child in MB, exit status)."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root,
                             env={**os.environ, "PYTHONPATH": str(root)})  # cwd: `-m` looks there first
    _pid, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, child.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--keep", help="write the capture here and keep it (--two-ended: a folder)")
    parser.add_argument("--runs", type=int, default=1, help="time each tool this many times (best counts)")
    parser.add_argument("--two-ended", action="store_true",
                        help="a client-side and a server-side capture of the same traffic, --packets in all")
    parser.add_argument("--probe-root", type=Path, default=ROOT, help="the tree whose probe to run")
    args = parser.parse_args()
    if args.two_ended:
        return two_ended(args.packets, args.keep, args.probe_root)
    folder = tempfile.mkdtemp(prefix="probe-bench-")
    path = Path(args.keep) if args.keep else Path(folder) / "bench.pcap"
    started = time.perf_counter()
    count = generate(path, args.packets)
    print(f"generated {count} packets ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f} s: "
          f"{path}")
    tools = {"probe analyze": [sys.executable, "-m", "probe", "analyze", str(path)],
             "probe analyze --json": [sys.executable, "-m", "probe", "analyze", "--json", str(path)],
             "tshark -z conv,tcp": ["tshark", "-r", str(path), "-q", "-z", "conv,tcp"]}
    for name, argv in tools.items():
        if name.startswith("tshark") and not any(os.access(os.path.join(d, "tshark"), os.X_OK)
                                                 for d in os.environ.get("PATH", "").split(os.pathsep)):
            print(f"{name:20s} not installed (apt-get install tshark)")
            continue
        best = min((timed(argv) for _ in range(args.runs)), key=lambda r: r[0])
        seconds, peak_mb, code = best
        print(f"{name:20s} {seconds:7.2f} s  {count / seconds:10,.0f} packets/s  peak {peak_mb:6.0f} MB  exit {code}")
    if not args.keep:
        path.unlink()
        os.rmdir(folder)
    return 0


def two_ended(packets: int, keep: str | None, root: Path) -> int:
    """Time `probe analyze --json CLIENT SERVER` over the two ends of about `packets` packets
    (`keep`: the folder for client.pcap and server.pcap, reused if they are there)."""
    sys.path.insert(0, str(ROOT))
    from probe.files.pcap import ip_packets
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="probe-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = {side: folder / f"{side}.pcap" for side in ("client", "server")}
    started = time.perf_counter()
    if keep and all(path.exists() for path in paths.values()):  # made by an earlier run: compare trees on them
        count = sum(sum(1 for _ in ip_packets(str(path))) for path in paths.values())
        print(f"reusing {count} packets in two captures: {folder}")
    else:
        count = sum(generate(path, packets // 2, side=side) for side, path in paths.items())
        print(f"generated {count} packets in two captures in {time.perf_counter() - started:.1f} s: {folder}")
    argv = [sys.executable, "-m", "probe", "analyze", "--json", str(paths["client"]), str(paths["server"])]
    seconds, peak_mb, code = timed(argv, root)
    print(f"{'probe analyze --json A B':26s} {seconds:7.2f} s  {count / seconds:10,.0f} packets/s  "
          f"peak {peak_mb:6.0f} MB  exit {code}  ({root})")
    if not keep:
        for path in paths.values():
            path.unlink()
        folder.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
