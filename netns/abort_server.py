"""A server that answers every request with a genuine RST.

It accepts, reads the request headers (up to the blank line, a size cap or a time limit) or,
on `--tls-port`, the first TLS record (the ClientHello: its 5-byte header and the length it
announces), then closes with SO_LINGER (on, 0), so the kernel aborts the connection with a RST
that comes
from the server's own stack: the reference for "the server reset it", as opposed to a reset
forged on the path. One thread, one selector, non-blocking sockets; prints `ready` once
listening and exits 0 on SIGTERM/SIGINT.

    python3 -m netns.abort_server [--host ::] [--port 8080] [--tls-port 8443]
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
TLS_RECORD_HEADER = 5


def headers_read(received: bytes) -> bool:
    return b"\r\n\r\n" in received


def client_hello_read(received: bytes) -> bool:
    """The first TLS record is complete (an application that aborts once it has read the
    ClientHello, before any answer)."""
    return (len(received) >= TLS_RECORD_HEADER
            and len(received) >= TLS_RECORD_HEADER + int.from_bytes(received[3:5], "big"))


def abort(conn: socket.socket) -> None:
    """Close so that the kernel sends RST instead of FIN."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already reset by the peer; closing is all that is left
    conn.close()


def serve(host: str, port: int, tls_port: int | None = None) -> None:
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    sel = selectors.DefaultSelector()
    listeners = {}  # listener -> when its connections have read enough
    for listen_port, request_read in ((port, headers_read), (tls_port, client_hello_read)):
        if listen_port is None:
            continue
        listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if ":" in host:  # "::": both families on one socket (IPv4 clients as ::ffff:a.b.c.d)
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        listener.bind((host, listen_port))
        listener.listen(128)
        listener.setblocking(False)
        sel.register(listener, selectors.EVENT_READ, request_read)
        listeners[listener] = request_read
    pending: dict[socket.socket, tuple[float, bytearray]] = {}  # conn -> (deadline, bytes read)
    print("ready", flush=True)
    try:
        while not stopping:
            for key, _ in sel.select(TICK):
                if key.fileobj in listeners:
                    try:
                        conn, _addr = key.fileobj.accept()
                    except (BlockingIOError, ConnectionAbortedError):
                        continue
                    conn.setblocking(False)
                    pending[conn] = (time.monotonic() + HEADER_TIMEOUT, bytearray())
                    sel.register(conn, selectors.EVENT_READ, key.data)
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
                if not chunk or key.data(received) or len(received) >= MAX_HEADER_BYTES:
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
        for listener in listeners:
            listener.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m netns.abort_server",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="::", help="'::' takes both families on one socket")
    p.add_argument("--port", type=int, default=8080, help="reset after the HTTP request headers")
    p.add_argument("--tls-port", type=int, help="reset after the TLS ClientHello")
    args = p.parse_args(argv)
    serve(args.host, args.port, args.tls_port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
