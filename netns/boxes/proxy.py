"""A transparent proxy: terminates the client's TCP at this router and opens its own to the server.

Imitates interception proxies of ISPs, schools and companies (e.g. Squid in intercept mode;
Weaver, Kreibich, Dam and Paxson measured them in "Here Be Web Proxies", PAM 2014). The
client's handshake is answered by the router (router's TTL and IP-ID), the server sees the
router's address, and data is relayed both ways. The proxy mirrors how each side ends: a FIN
becomes a FIN (half-close), a reset from the server or a refused connection becomes a reset
toward the client (close with SO_LINGER 0).

`iptables -t nat -A PREROUTING -p tcp --dport PORT -j REDIRECT --to-ports LISTEN_PORT`, and the
original destination comes back from SO_ORIGINAL_DST; over IPv6 the same with ip6tables and
IP6T_SO_ORIGINAL_DST (one listener per family).
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Callable

from . import _common

SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv6/ip6_tables.h: the same number, at the IPv6 level
MAX_CONNECTIONS = 64
CONNECT_TIMEOUT = 5.0
IDLE_TIMEOUT = 30.0


def original_destination(conn: socket.socket) -> tuple[str, int]:
    if conn.family == socket.AF_INET6:  # a sockaddr_in6: family, port, flow info, address, scope
        raw = conn.getsockopt(socket.IPPROTO_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port, = struct.unpack("!H", raw[2:4])
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port
    raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, = struct.unpack("!H", raw[2:4])
    return socket.inet_ntoa(raw[4:8]), port


def reset(sock: socket.socket) -> None:
    """Close with a RST instead of a FIN."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def pipe(src: socket.socket, dst: socket.socket, aborted: threading.Event) -> None:
    """Copy src -> dst until EOF (then half-close dst) or an error (then flag an abort and
    wake the other direction's reader; SHUT_RD sends nothing, so the reset comes later)."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                dst.shutdown(socket.SHUT_WR)
                return
            dst.sendall(data)
    except OSError:
        aborted.set()
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass


def relay(client: socket.socket, slots: threading.BoundedSemaphore) -> None:
    try:
        try:
            server = socket.create_connection(original_destination(client), timeout=CONNECT_TIMEOUT)
        except OSError:
            reset(client)
            return
        client.settimeout(IDLE_TIMEOUT)
        server.settimeout(IDLE_TIMEOUT)
        aborted = threading.Event()
        upstream = threading.Thread(target=pipe, args=(client, server, aborted), daemon=True)
        upstream.start()
        pipe(server, client, aborted)
        upstream.join(IDLE_TIMEOUT)
        if aborted.is_set():
            reset(client)
            reset(server)
        else:
            client.close()
            server.close()
    finally:
        slots.release()


def serve_redirected(box: str, port: int, listen_port: int,
                     handle: Callable[[socket.socket, threading.BoundedSemaphore], None]) -> None:
    """Redirect connections to `port` to a listener on `listen_port` and run `handle(client,
    slots)` in a thread for each (it must release its slot); past MAX_CONNECTIONS, reset."""
    _common.refuse_root_namespace()
    listeners = []
    for family, anywhere in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listener.bind((anywhere, listen_port))
        listener.listen(64)
        listeners.append(listener)
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def acceptor(listener: socket.socket):
        def accept_one() -> None:
            client, _ = listener.accept()
            if not slots.acquire(blocking=False):
                reset(client)
                return
            threading.Thread(target=handle, args=(client, slots), daemon=True).start()
        return accept_one

    spec = ["-p", "tcp", "--dport", str(port), "-j", "REDIRECT", "--to-ports", str(listen_port)]
    readers = {listener.fileno(): acceptor(listener) for listener in listeners}
    _common.serve(box, [("nat", "PREROUTING", spec)], readers, lambda: [listener.close() for listener in listeners])


def main() -> None:
    p = _common.parser("proxy", __doc__, uses_trigger=False)
    p.add_argument("--listen-port", type=int, default=3129, help="where REDIRECT sends connections")
    args = p.parse_args()
    serve_redirected("proxy", args.port, args.listen_port, relay)


if __name__ == "__main__":
    main()
