"""The HTTP side of a probe: the request bytes, and knowing when the response has ended (h11).

An *application* is what rides on the crafted TCP connection, sans-IO, in the manner of h11:
`first_flight()` gives the bytes that open the conversation (the trigger a box reacts to),
`receive(data, eof)` takes the server's in-order bytes and gives what to send next,
`status` and `finished` say where the conversation stands, and `close()` gives what to say
before our FIN when we close first (`waits_for_peer_close`: give the server a moment to close
first, so that our goodbye does not cross its own). `HttpExchange` here is plain HTTP;
`probe.protocol.tls.TlsExchange` is the same HTTP inside TLS."""

from __future__ import annotations

from dataclasses import dataclass, field

import h11

from probe import __version__


def host_header(host: str, port: int, default_port: int = 80) -> str:
    """The Host header's value (RFC 9112 3.2): an IPv6 address in brackets, the port unless the default."""
    host = f"[{host}]" if ":" in host else host
    return host if port == default_port else f"{host}:{port}"


@dataclass(frozen=True)
class Request:
    """What the probe asks, with curl's options and meanings: `-X` the method, `-H` headers
    (one of the same name replaces the default one; an empty value, "Name:", removes it),
    `-A` the User-Agent, `--data` a body (POST unless -X says otherwise, with curl's
    Content-Type application/x-www-form-urlencoded unless a header gives one)."""

    method: str = "HEAD"
    headers: tuple[tuple[str, str], ...] = field(default=())
    user_agent: str | None = None  # None: probe/VERSION
    body: bytes = b""

    def header_list(self, host: str, port: int, default_port: int) -> list[tuple[str, str]]:
        defaults = [("Host", host_header(host, port, default_port)),
                    ("User-Agent", self.user_agent if self.user_agent is not None else f"probe/{__version__}"),
                    ("Accept", "*/*")]
        if self.body:
            defaults += [("Content-Type", "application/x-www-form-urlencoded"),
                         ("Content-Length", str(len(self.body)))]
        defaults.append(("Connection", "close"))
        given = {name.lower() for name, _ in self.headers}
        headers = [(name, value) for name, value in defaults if name.lower() not in given]
        return headers + [(name, value) for name, value in self.headers if value]


def build_request(request: Request | str, host: str, port: int, path: str, default_port: int = 80) -> bytes:
    """Serialize the request the probe sends, as curl would (a method alone means Request(method))."""
    request = Request(request) if isinstance(request, str) else request
    client = h11.Connection(our_role=h11.CLIENT)
    wire = client.send(h11.Request(method=request.method, target=path,
                                   headers=request.header_list(host, port, default_port)))
    if request.body:
        wire += client.send(h11.Data(data=request.body))
    return wire + client.send(h11.EndOfMessage())


@dataclass
class ResponseStatus:
    status: int | None = None
    reason: str = ""
    complete: bool = False
    malformed: str | None = None
    body_bytes: int = 0


class ResponseReader:
    """Feed it the in-order bytes the server sent; it says when the response is complete."""

    def __init__(self, method: str, host: str, port: int, path: str, default_port: int = 80):
        self._conn = h11.Connection(our_role=h11.CLIENT)
        headers = [("Host", host_header(host, port, default_port)), ("Connection", "close")]
        self._conn.send(h11.Request(method=method, target=path, headers=headers))
        self._conn.send(h11.EndOfMessage())
        self.status = ResponseStatus()

    def feed(self, data: bytes, eof: bool = False) -> ResponseStatus:
        if self.status.malformed or self.status.complete:
            return self.status
        try:
            self._conn.receive_data(data)
            if eof:
                self._conn.receive_data(b"")
            while True:
                event = self._conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    break
                if isinstance(event, h11.Response):
                    self.status.status = event.status_code
                    self.status.reason = event.reason.decode("latin-1", "replace")
                elif isinstance(event, h11.Data):
                    self.status.body_bytes += len(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self.status.complete = True
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    break
        except h11.RemoteProtocolError as error:
            self.status.malformed = str(error)
        return self.status


class HttpExchange:
    """Plain HTTP as an application of the crafted connection: one request, one response."""

    def __init__(self, request: bytes, reader: ResponseReader):
        self.request, self.reader = request, reader
        self.status = ResponseStatus()

    @classmethod
    def for_url(cls, request: Request | str, host: str, port: int, path: str,
                default_port: int = 80) -> "HttpExchange":
        request = Request(request) if isinstance(request, str) else request
        return cls(build_request(request, host, port, path, default_port),
                   ResponseReader(request.method, host, port, path, default_port))

    def first_flight(self) -> bytes:
        return self.request

    def receive(self, data: bytes, eof: bool = False) -> bytes:
        self.status = self.reader.feed(data, eof)
        return b""

    @property
    def finished(self) -> bool:
        """The response has ended: the probe may close."""
        return self.status.complete

    waits_for_peer_close = False  # HTTP closes with a FIN at once: FINs that cross are a simultaneous close

    def close(self) -> bytes:
        """What to send before our FIN: nothing for plain HTTP."""
        return b""

    def report(self) -> dict:
        """The `http` section of a report: what the response said."""
        status = self.status
        return {"status": status.status, "reason": status.reason or None, "complete": status.complete,
                "malformed": status.malformed}
