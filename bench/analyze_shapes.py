"""`probe analyze` beside `tshark -r F -q -z conv,tcp` on the shapes of issue 17, in one run.

    python3 bench/analyze_shapes.py [--packets 1000000] [--runs 3] [--shapes short,long,mix,old] [--keep DIR]
        [--json] [--no-tshark]

Writes each capture reproducibly (a fixed seed), then times the two tools on it interleaved
(probe, tshark, probe, tshark, ...; a fresh process each, so that a neighbour's load falls on both)
and prints the median wall time, the median CPU time (user and system, the workers' included:
steadier than the wall clock on a shared machine), the median peak memory (the child's ru_maxrss,
or the summed proportional memory of it and its workers if larger) and the ratios:

- `short`: short HTTP flows of 8 packets (handshake, request, one answer segment, FIN both ways,
  the last ACK), overlapping as on a busy link; 1 in 50 reset by a forged burst of three resets
  toward the client after the request (then the server's answer, and the client's reset to it).
- `long`: 200 downloads of 5,000 packets each, all under way at once, each frame cut to 96 bytes
  as `tcpdump -s 96` does; 1 in 10 cut half-way by a forged burst.
- `waves`: `long`'s downloads 200 at a time, one wave after another: at one million packets the
  same traffic as `long`, at ten million a ten times longer capture of the same link (where `long`
  has ten times as many downloads open at once; memory follows the flows open at once, each
  bounded by `flows.KEEP_ALL` packets kept, so `waves` is the one to read for "flat").
- `mix`: half the packets of each, interleaved, cut to 96 bytes too.
- `old`: `analyze_speed.py`'s capture (short exchanges, downloads, closed ports, DNS, ...).

`--json` adds `probe analyze --json` to each run. Nothing is sent anywhere: it only writes files.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from analyze_speed import ETH, MSS, ROOT, generate, ip4, tcp_packet  # noqa: E402

SNAPLEN = 96


def _tree_memory(pid: int) -> int:
    """The memory (bytes) of a process and all its descendants: the sum of their proportional set
    sizes (Pss, /proc/PID/smaps_rollup: a page shared by n processes, as forked workers share
    their parent's, counts 1/n in each), else of their resident sizes."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            try:
                with open(f"/proc/{current}/smaps_rollup") as handle:
                    total += next(int(line.split()[1]) * 1024 for line in handle if line.startswith("Pss:"))
            except (OSError, StopIteration):
                with open(f"/proc/{current}/statm") as handle:
                    total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    pending += [int(child) for child in handle.read().split()]
        except (OSError, ValueError):
            continue
    return total


def timed(argv: list[str]) -> tuple[float, float, int, float]:
    """Run argv in a child; (wall seconds, peak memory in MB, exit status, CPU seconds (user and
    system) of the child and its own children: on a shared machine the steadier of the two times).
    The peak memory is the larger of the child's ru_maxrss (its largest process) and the memory of
    it and its descendants together (`_tree_memory`, sampled every 20 ms): `probe analyze` forks
    workers for big captures."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})  # cwd: `-m` looks there first
    peak = [0]

    def sample() -> None:
        while child.returncode is None:
            peak[0] = max(peak[0], _tree_memory(child.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _pid, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    return (time.perf_counter() - started, max(usage.ru_maxrss * 1024, peak[0]) / 2**20, child.returncode,
            usage.ru_utime + usage.ru_stime)


START = 1_700_000_000.0


def _client(rng: random.Random, t: float, client: bytes, server: bytes, port: int):
    """The packet-making helpers of one flow as a client-side capture sees it."""
    rtt = rng.uniform(0.005, 0.12)
    state = {"cid": rng.getrandbits(16), "sid": rng.getrandbits(16)}
    ttl_back = 64 - rng.randint(5, 20)

    def mine(dt, flags, seq, ack, payload=b""):
        state["cid"] += 1
        return t + dt, tcp_packet(client, server, port, 80, flags, seq, ack, 64, state["cid"], payload)

    def theirs(dt, flags, seq, ack, payload=b""):
        state["sid"] += 1
        return t + dt, tcp_packet(server, client, 80, port, flags, seq, ack, ttl_back, state["sid"], payload, win=65160)

    def forged(dt, seq, ack):
        return t + dt, tcp_packet(server, client, 80, port, "RA", seq, ack, ttl_back + 3, rng.getrandbits(16))

    return rtt, mine, theirs, forged


def short_flow(rng: random.Random, t: float, client: bytes, server: bytes, port: int, cut: bool) -> list:
    """8 packets; a forged flow: handshake, request, three forged resets, the answer, our reset."""
    rtt, mine, theirs, forged = _client(rng, t, client, server, port)
    isn, their = rng.getrandbits(32), rng.getrandbits(32)
    request = b"GET /%d HTTP/1.1\r\nHost: www.example.com\r\n\r\n" % port
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + b"x" * 300
    end, their_end = isn + 1 + len(request), their + 1 + len(answer)
    out = [mine(0, "S", isn, 0), theirs(rtt, "SA", their, isn + 1), mine(rtt + 0.0001, "A", isn + 1, their + 1),
           mine(rtt + 0.0002, "PA", isn + 1, their + 1, request)]
    if cut:
        return out + [forged(rtt * 1.3 + i * 0.00002, their + 1 + i * MSS, end) for i in range(3)] + [
            theirs(2 * rtt + 0.001, "PA", their + 1, end, answer), mine(2 * rtt + 0.0011, "R", end, 0)]
    return out + [theirs(2 * rtt + 0.001, "PA", their + 1, end, answer),
                  mine(2 * rtt + 0.0011, "FA", end, their_end), theirs(3 * rtt + 0.0011, "FA", their_end, end + 1),
                  mine(3 * rtt + 0.0012, "A", end + 1, their_end + 1)]


def long_flow(rng: random.Random, t: float, client: bytes, server: bytes, port: int, packets: int, cut: bool):
    """A download of `packets` packets (we acknowledge every second segment); a cut one ends half-way
    in a forged burst and our reset. Yields (t, packet) in time order."""
    rtt, mine, theirs, forged = _client(rng, t, client, server, port)
    isn, their = rng.getrandbits(32), rng.getrandbits(32)
    request = b"GET /big HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
    end = isn + 1 + len(request)
    yield mine(0, "S", isn, 0)
    yield theirs(rtt, "SA", their, isn + 1)
    yield mine(rtt + 0.0001, "A", isn + 1, their + 1)
    yield mine(rtt + 0.0002, "PA", isn + 1, their + 1, request)
    left, seq, dt, n = packets - 4, their + 1, 2 * rtt, 0
    closing = 8 if cut else 3
    while left > closing:
        yield theirs(dt, "A", seq, end, b"x" * MSS)
        seq += MSS
        left -= 1
        n += 1
        if n % 2 == 0 and left > closing:
            yield mine(dt + 0.00005, "A", end, seq)
            left -= 1
        dt += 0.0004
        if cut and left <= packets // 2 - 4:
            break
    if cut:
        for i in range(3):
            yield forged(dt + i * 0.00002, seq + i * MSS, end)
        yield theirs(dt + 0.0004, "A", seq, end, b"x" * MSS)
        yield mine(dt + 0.0005, "R", end, 0)
        return
    yield theirs(dt, "FA", seq, end)
    yield mine(dt + 0.0001, "FA", end, seq + 1)
    yield theirs(dt + rtt, "A", seq + 1, end + 1)


class Writer:
    """A tcpdump-format Ethernet capture, each frame cut to `snaplen` bytes (its length on the wire kept)."""

    def __init__(self, path: Path, snaplen: int = 262144):
        self.handle = open(path, "wb")
        self.snaplen = snaplen
        self.handle.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, 1))
        self.written = 0

    def write(self, stamp: float, packet: bytes) -> None:
        frame = ETH + packet
        seconds = int(stamp)
        kept = frame[:self.snaplen]
        self.handle.write(struct.pack("<IIII", seconds, int((stamp - seconds) * 1e6), len(kept), len(frame)) + kept)
        self.written += 1

    def close(self) -> int:
        self.handle.close()
        return self.written


def _addresses(rng: random.Random):
    clients = [ip4(f"10.{a}.{b}.{c}") for a in range(1, 3) for b in range(0, 50) for c in range(1, 250)]
    servers = [ip4(f"{net}.{n}") for net in ("198.51.100", "203.0.113") for n in range(1, 250)]
    return clients, servers


def short_packets(rng: random.Random, packets: int):
    """The short-flow traffic, in time order: about `packets` packets (whole flows)."""
    clients, servers = _addresses(rng)
    pending: list = []
    t, n, made = START, 0, 0
    while made < packets:
        t += rng.expovariate(1000.0)
        cut = rng.random() < 1 / 50
        flow = short_flow(rng, t, rng.choice(clients), rng.choice(servers), rng.randint(1024, 65535), cut)
        made += len(flow)
        for stamp, packet in flow:
            n += 1
            heapq.heappush(pending, (stamp, n, packet))
        while pending and pending[0][0] <= t - 1.0:
            stamp, _n, packet = heapq.heappop(pending)
            yield stamp, packet
    while pending:
        stamp, _n, packet = heapq.heappop(pending)
        yield stamp, packet


def long_packets(rng: random.Random, flows: int, per_flow: int, begin: float = START):
    """`flows` downloads of `per_flow` packets, all under way at once, in time order."""
    clients, servers = _addresses(rng)
    streams = [long_flow(rng, begin + rng.uniform(0, 1), rng.choice(clients), rng.choice(servers),
                         rng.randint(1024, 65535), per_flow, rng.random() < 1 / 10) for _ in range(flows)]
    return heapq.merge(*streams, key=lambda event: event[0])


def long_waves(rng: random.Random, flows: int, per_flow: int, at_once: int = 200):
    """`flows` downloads as `long_packets`, `at_once` at a time: each wave starts a second after the
    last packet of the one before. A longer capture of the same link, where `long` at ten million
    packets is ten times as many downloads under way at once."""
    start = 0.0
    for first in range(0, flows, at_once):
        last = start
        for stamp, packet in long_packets(rng, min(at_once, flows - first), per_flow, START + start):
            last = stamp
            yield stamp, packet
        start = last - START + 1.0


def write_shape(shape: str, path: Path, packets: int, seed: int = 17) -> int:
    """Write one shape's capture; return the number of packets written."""
    if shape == "old":
        return generate(path, packets, seed)
    rng = random.Random(seed)
    writer = Writer(path, SNAPLEN if shape in ("long", "waves", "mix") else 262144)
    if shape == "short":
        events = short_packets(rng, packets)
    elif shape == "long":
        events = long_packets(rng, max(1, packets // 5000), 5000)
    elif shape == "waves":
        events = long_waves(rng, max(1, packets // 5000), 5000)
    else:  # mix: the short flows and a quarter as many downloads, interleaved by time
        events = heapq.merge(short_packets(rng, packets // 2), long_packets(random.Random(seed + 1),
                                                                            max(1, packets // 10000), 5000),
                             key=lambda event: event[0])
    for stamp, packet in events:
        writer.write(stamp, packet)
    return writer.close()


def _count(path: Path) -> int:
    """The packets in a capture (tcpdump's format), by its record headers."""
    count = 0
    with open(path, "rb") as handle:
        handle.seek(24)
        while header := handle.read(16):
            handle.seek(struct.unpack("<IIII", header)[2], 1)
            count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each tool (medians are printed)")
    parser.add_argument("--shapes", default="short,long,mix,old")
    parser.add_argument("--json", action="store_true", help="time `probe analyze --json` too")
    parser.add_argument("--keep", help="a folder for the captures, reused when they are there")
    parser.add_argument("--no-tshark", action="store_true",
                        help="time probe alone (at ten million packets tshark needs gigabytes)")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="probe-shapes-"))
    folder.mkdir(parents=True, exist_ok=True)
    have_tshark = shutil.which("tshark") is not None and not args.no_tshark
    print("| capture | packets | `probe analyze` | `tshark -q -z conv,tcp` | tshark / probe, wall (CPU) | "
          "probe / tshark, memory |" + (" `probe analyze --json` |" if args.json else ""))
    print("|---|---|---|---|---|---|" + ("---|" if args.json else ""))
    for shape in args.shapes.split(","):
        path = folder / f"{shape}-{args.packets}.pcap"
        if not path.exists():
            write_shape(shape, path, args.packets)
        count = _count(path)
        tools = {"probe": [sys.executable, "-m", "probe", "analyze", str(path)]}
        if have_tshark:
            tools["tshark"] = ["tshark", "-r", str(path), "-q", "-z", "conv,tcp"]
        if args.json:
            tools["json"] = [sys.executable, "-m", "probe", "analyze", "--json", str(path)]
        runs: dict[str, list] = {name: [] for name in tools}
        for _ in range(args.runs):  # interleaved: a neighbour's load falls on every tool alike
            for name, argv in tools.items():
                runs[name].append(timed(argv))
        median = {name: [statistics.median(r[i] for r in rs) for i in (0, 1, 3)] + [sorted({r[2] for r in rs})]
                  for name, rs in runs.items()}

        def cell(name: str) -> str:
            wall, peak, cpu, codes = median[name]
            return f"{wall:.2f} s ({cpu:.2f} s CPU), {peak:.0f} MB" + (f", exit {codes}" if name != "tshark" else "")

        cells = [shape, f"{count:,}", cell("probe")]
        if have_tshark:
            cells += [cell("tshark"), f"{median['tshark'][0] / median['probe'][0]:.2f} "
                                      f"({median['tshark'][2] / median['probe'][2]:.2f})",
                      f"{median['probe'][1] / median['tshark'][1]:.2f}"]
        else:
            cells += ["not run" if args.no_tshark else "not installed", "-", "-"]
        if args.json:
            cells.append(cell("json") + f" ({median['json'][0] / median['probe'][0]:.2f}x the table's time)")
        print("| " + " | ".join(cells) + " |", flush=True)
    if not args.keep:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
