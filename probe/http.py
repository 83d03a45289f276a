"""The HTTP side of a probe: the request bytes, and knowing when the response has ended (h11)."""

from __future__ import annotations

from dataclasses import dataclass

import h11

from probe import __version__


def authority(host: str, port: int) -> str:
    """The Host header's value (RFC 9112 3.2): an IPv6 address in brackets, the port unless 80."""
    host = f"[{host}]" if ":" in host else host
    return host if port == 80 else f"{host}:{port}"


def build_request(method: str, host: str, port: int, path: str) -> bytes:
    """Serialize the request the probe sends, as a curl-like client would."""
    host_header = authority(host, port)
    client = h11.Connection(our_role=h11.CLIENT)
    headers = [("Host", host_header), ("User-Agent", f"probe/{__version__}"), ("Accept", "*/*"),
               ("Connection", "close")]
    return client.send(h11.Request(method=method, target=path, headers=headers)) + client.send(h11.EndOfMessage())


@dataclass
class ResponseStatus:
    status: int | None = None
    reason: str = ""
    complete: bool = False
    malformed: str | None = None
    body_bytes: int = 0


class ResponseReader:
    """Feed it the in-order bytes the server sent; it says when the response is complete."""

    def __init__(self, method: str, host: str, port: int, path: str):
        self._conn = h11.Connection(our_role=h11.CLIENT)
        headers = [("Host", authority(host, port)), ("Connection", "close")]
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
