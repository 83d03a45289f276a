"""A server that answers every request with a genuine RST.

It accepts, reads the request headers (up to the blank line, a size cap or a time limit),
then closes with SO_LINGER (on, 0), so the kernel aborts the connection with a RST that comes
from the server's own stack: the reference for "the server reset it", as opposed to a reset
forged on the path. One thread, one selector, non-blocking sockets; prints `ready` once
listening and exits 0 on SIGTERM/SIGINT.

    python3 -m netns.abort_server [--host ::] [--port 8080]
"""

from __future__ import annotations

import argparse
import selectors
import signal
import socket
import struct
import sys
import time

MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT = 5.0  # seconds a client may take to send its headers
TICK = 0.5  # longest single wait, so stop requests and expiries are noticed


def abort(conn: socket.socket) -> None:
    """Close so that the kernel sends RST instead of FIN."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already reset by the peer; closing is all that is left
    conn.close()


def serve(host: str, port: int) -> None:
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if ":" in host:  # "::": both families on one socket (IPv4 clients as ::ffff:a.b.c.d)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind((host, port))
    listener.listen(128)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    pending: dict[socket.socket, tuple[float, bytearray]] = {}  # conn -> (deadline, bytes read)
    print("ready", flush=True)
    try:
        while not stopping:
            for key, _ in sel.select(TICK):
                if key.fileobj is listener:
                    try:
                        conn, _addr = listener.accept()
                    except (BlockingIOError, ConnectionAbortedError):
                        continue
                    conn.setblocking(False)
                    pending[conn] = (time.monotonic() + HEADER_TIMEOUT, bytearray())
                    sel.register(conn, selectors.EVENT_READ, None)
                    continue
                conn = key.fileobj
                _, received = pending[conn]
                try:
                    chunk = conn.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                received += chunk
                if not chunk or b"\r\n\r\n" in received or len(received) >= MAX_HEADER_BYTES:
                    sel.unregister(conn)
                    del pending[conn]
                    abort(conn)
            now = time.monotonic()
            for conn in [c for c, (deadline, _) in pending.items() if deadline <= now]:
                sel.unregister(conn)
                del pending[conn]
                abort(conn)
    finally:
        for conn in pending:
            abort(conn)
        sel.close()
        listener.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m netns.abort_server",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="::")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args(argv)
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
