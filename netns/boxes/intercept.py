"""A TLS-intercepting proxy: terminates TCP, and TLS for blocked names with a certificate of its
own CA, and fetches from the server over a TLS connection of its own.

Imitates Kazakhstan's HTTPS interception of July 2019 (Raman et al., "Investigating Large Scale
HTTPS Interception in Kazakhstan", IMC 2020; Censored Planet's report of 2019): an in-path box
answered the handshake of connections whose ClientHello named one of a list of domains with a
certificate issued by the "Qaznet Trust Network" CA, which users were told to install, and
relayed the decrypted traffic to the real server; other names passed untouched. Commercial
interception appliances work the same way (Allot at Vodafone Spain, Ververis et al. 2021).

Every connection to `--port` is redirected to the box (`iptables -t nat REDIRECT`, as `proxy`),
so the client's handshake is always answered by the router. The box peeks at the first segment
the client sends: a whole ClientHello naming the trigger (see _tls; a split one does not match)
is held while the box opens its own TCP and TLS connection to the original destination with the
same server name (as mitmproxy does by default, option `upstream_cert`, to learn the server's
certificate before it forges one; this box presents one fixed certificate for every lab name),
without checking the server's certificate (many appliances do not: Waked, Mannan and Youssef,
"To Intercept or Not to Intercept", AsiaCCS 2018); then it answers the client with `--cert`/
`--key` (the lab's interception CA, which the probe does not trust) and relays the decrypted
bytes both ways. The client's TCP handshake is answered at once, its ClientHello only after the
box's own handshakes with the server.
Anything else is relayed as bytes, as `proxy` does. Whichever side ends first (close_notify or
FIN) ends both, with close_notify; an error or a reset resets the client.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading

from . import _common, _tls
from .proxy import CONNECT_TIMEOUT, IDLE_TIMEOUT, original_destination, relay, reset, serve_redirected

PEEK_BYTES = 16 * 1024 + 5  # one whole TLS record
CLOSE_TIMEOUT = 1.0  # how long a close_notify may wait for the peer's


def intercepted_name(client: socket.socket, trigger: str) -> str | None:
    """The server name of the client's ClientHello if it names the trigger (the bytes stay in
    the socket), else None. Waits for the client's first segment at most IDLE_TIMEOUT."""
    readable, _, _ = select.select([client], [], [], IDLE_TIMEOUT)
    if not readable:
        return None
    hello = _tls.read_client_hello(client.recv(PEEK_BYTES, socket.MSG_PEEK))
    if hello.status == _tls.FOUND and _tls.names_match(hello.server_name, trigger):
        return hello.server_name
    return None


def tls_relay(client: ssl.SSLSocket, server: ssl.SSLSocket) -> bool:
    """Copy decrypted bytes both ways until one side ends (True) or fails (False). One thread
    (an SSL object must not be read and written from two threads at once), reading without
    blocking: a readable socket may hold a record without data (a TLS 1.3 session ticket) or
    half a record, and waiting on it would stall the other direction."""
    peers = {client: server, server: client}
    try:
        while True:
            ready = [s for s in peers if s.pending()] or select.select(list(peers), [], [], IDLE_TIMEOUT)[0]
            if not ready:
                return False
            for source in ready:
                source.settimeout(0)
                try:
                    data = source.recv(PEEK_BYTES)
                except ssl.SSLWantReadError:
                    continue
                finally:
                    source.settimeout(IDLE_TIMEOUT)
                if not data:
                    return True
                peers[source].sendall(data)
    except (OSError, ssl.SSLError):
        return False


def close_politely(sock: ssl.SSLSocket) -> None:
    """close_notify, then close (FIN); the peer's close_notify is awaited a moment at most."""
    try:
        sock.settimeout(CLOSE_TIMEOUT)
        sock.unwrap().close()
    except (OSError, ssl.SSLError, ValueError):
        sock.close()


def intercept(client: socket.socket, name: str, context: ssl.SSLContext) -> None:
    """Connect to the server first (TCP and TLS, with the client's server name), then answer
    the client's ClientHello with our certificate, then relay."""
    upstream = ssl.create_default_context()
    upstream.check_hostname = False
    upstream.verify_mode = ssl.CERT_NONE
    upstream.set_alpn_protocols(["http/1.1"])
    try:
        raw = socket.create_connection(original_destination(client), timeout=CONNECT_TIMEOUT)
        tls_server = upstream.wrap_socket(raw, server_hostname=name)
    except (OSError, ssl.SSLError):
        reset(client)
        return
    try:
        client.settimeout(IDLE_TIMEOUT)
        tls_client = context.wrap_socket(client, server_side=True)
    except (OSError, ssl.SSLError):
        # the client refused our certificate (it sent an alert) or went away; the wrapper
        # has closed the client's socket
        close_politely(tls_server)
        return
    tls_server.settimeout(IDLE_TIMEOUT)
    if tls_relay(tls_client, tls_server):
        close_politely(tls_client)
        close_politely(tls_server)
    else:
        reset(tls_client)
        reset(tls_server)


def handle(client: socket.socket, trigger: str, context: ssl.SSLContext,
           slots: threading.BoundedSemaphore) -> None:
    try:
        name = intercepted_name(client, trigger)
    except OSError:
        name = None  # the client is gone: relay() finds out and cleans up
    if name is None:
        relay(client, slots)  # releases the slot
        return
    try:
        intercept(client, name, context)
    finally:
        slots.release()


def main() -> None:
    p = _common.parser("intercept", __doc__)
    p.add_argument("--cert", required=True, help="the certificate shown to intercepted clients (PEM)")
    p.add_argument("--key", required=True, help="its private key (PEM)")
    p.add_argument("--listen-port", type=int, default=3130, help="where REDIRECT sends connections")
    args = p.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["http/1.1"])
    serve_redirected("intercept", args.port, args.listen_port,
                     lambda client, slots: handle(client, args.trigger, context, slots))


if __name__ == "__main__":
    main()
