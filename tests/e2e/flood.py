"""A bounded flood of traffic that is not the probe's, onto the client's link (lab only).

Run in a lab router's namespace; frames go out of IFACE straight to the client's MAC through a
packet socket, so they can be anything, including IPv4 headers the kernel would refuse to send
(IHL below 5 or past the end, a wrong version, a lying total length, runts). Kinds, in turn:
TCP from the server's address to ports of the client outside its ephemeral range (so never the
probe's own flow), and from other server ports; ICMP errors from a router quoting other flows or
garbage; echo requests; later fragments that look like the server's TCP to any port, and first
fragments; UDP; broken IPv4. Stops at SIGTERM or after MAX packets, whichever is first; prints
"ready" once the socket is open and "sent N" at the end.

    python3 tests/e2e/flood.py IFACE DST_MAC CLIENT SERVER ROUTER [--rate PPS] [--max N]
"""

from __future__ import annotations

import argparse
import random
import signal
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))  # the repository
from probe.protocol.craft import _checksum as checksum  # noqa: E402 (the Internet checksum, RFC 1071)

ETH_P_IP = 0x0800
SAFE_PORTS = list(range(1, 1024)) + list(range(61001, 65536))  # outside 32768-60999, Linux's default range
KINDS = ("tcp", "tcp-other-sport", "icmp-error", "icmp-garbage", "echo", "later-fragment", "first-fragment", "udp",
         "broken")


def ip(src: str, dst: str, proto: int, body: bytes, *, ttl: int = 64, fragment: int = 0x4000, ip_id: int = 0) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), ip_id, fragment, ttl, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + body


def tcp(sport: int, dport: int, flags: int, rnd: random.Random, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, rnd.getrandbits(32), rnd.getrandbits(32), 0x50, flags,
                       rnd.getrandbits(16), 0, 0) + payload


def packet(kind: str, args, rnd: random.Random) -> bytes:
    client, server, router = args.client, args.server, args.router
    if kind == "tcp":
        return ip(server, client, 6, tcp(80, rnd.choice(SAFE_PORTS), rnd.getrandbits(8), rnd), ttl=rnd.randrange(1, 256))
    if kind == "tcp-other-sport":
        return ip(server, client, 6, tcp(rnd.choice((81, 443, 8080, 22)), rnd.randrange(1, 65536),
                                         rnd.getrandbits(8), rnd, b"HTTP/1.1 403 Forbidden\r\n\r\n"))
    if kind == "icmp-error":
        inner = ip(client, server, 6, tcp(rnd.choice(SAFE_PORTS), rnd.choice((80, 443)), 0x18, rnd), ttl=1)[:28]
        return ip(router, client, 1, struct.pack("!BBHI", rnd.choice((3, 11, 12)), rnd.randrange(16), 0, 0) + inner)
    if kind == "icmp-garbage":
        return ip(rnd.choice((router, server)), client, 1, struct.pack("!BBHI", rnd.choice((3, 4, 5, 11, 12)),
                                                                      rnd.randrange(16), 0, 0) + rnd.randbytes(40))
    if kind == "echo":
        body = struct.pack("!BBHHH", 8, 0, 0, rnd.getrandbits(16), 1) + rnd.randbytes(16)
        return ip(rnd.choice((router, server)), client, 1, body[:2] + struct.pack("!H", checksum(body)) + body[4:])
    if kind == "later-fragment":
        return ip(server, client, 6, tcp(80, rnd.randrange(1, 65536), 0x04, rnd), fragment=rnd.randrange(1, 0x2000),
                  ip_id=rnd.getrandbits(16))
    if kind == "first-fragment":
        return ip(server, client, 6, tcp(80, rnd.choice(SAFE_PORTS), 0x18, rnd, rnd.randbytes(64)), fragment=0x2000,
                  ip_id=rnd.getrandbits(16))
    if kind == "udp":
        return ip(server, client, 17, struct.pack("!HHHH", 53, rnd.randrange(1, 65536), 8, 0))
    good = ip(server, client, 6, tcp(80, rnd.choice(SAFE_PORTS), 0x04, rnd))
    lie = rnd.randrange(5)
    if lie == 0:
        return bytes([0x40 | rnd.randrange(5)]) + good[1:]  # IHL below 5
    if lie == 1:
        return bytes([0x4F]) + good[1:]  # IHL 15: options past the end
    if lie == 2:
        return bytes([0x60 | rnd.randrange(16)]) + good[1:]  # version 6 on an IPv4 ethertype
    if lie == 3:
        return good[:2] + struct.pack("!H", rnd.choice((0, 19, 65535))) + good[4:]  # total length lies
    return good[:rnd.randrange(1, 20)]  # a runt


def main() -> int:
    parser = argparse.ArgumentParser()
    for name in ("iface", "dst_mac", "client", "server", "router"):
        parser.add_argument(name)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--max", type=int, default=30000)
    args = parser.parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    rnd = random.Random(8)
    mac = bytes.fromhex(args.dst_mac.replace(":", ""))
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    print("ready", flush=True)
    sent, start = 0, time.monotonic()
    while not stop and sent < args.max:
        frame = packet(KINDS[sent % len(KINDS)], args, rnd)
        try:
            sock.sendto(frame, (args.iface, ETH_P_IP, 0, 0, mac))
        except OSError:
            pass  # a runt the driver refuses: counted as not sent
        else:
            sent += 1
        ahead = start + sent / args.rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing to the rate, not waiting for a condition
    print(f"sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
