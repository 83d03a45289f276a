"""The server name (SNI) of a TLS ClientHello, read from one TCP segment's payload, as a DPI box
reads it.

The walk follows RFC 8446 4.1.2 (the same layout as TLS 1.0-1.2, RFC 5246 7.4.1.2) and RFC 6066 3:
a handshake record (type 22, TLSPlaintext header of 5 bytes), a handshake message of type 1
(ClientHello, 4-byte header), then legacy_version, random, the session id, the cipher suites and
the compression methods, each skipped by its length prefix, then the extensions, walked until
server_name (type 0), whose list holds one host_name entry (name_type 0).

Only what one segment holds is read. A ClientHello split over several segments or records
(its record or handshake length runs past the bytes at hand) is not reassembled: it reads as
SPLIT and never matches. Some censors are known to reassemble and some not; this one does not,
so a probe that splits its ClientHello passes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HANDSHAKE_RECORD = 22
CLIENT_HELLO = 1
SERVER_NAME_EXTENSION = 0
HOST_NAME = 0
RECORD_HEADER = 5
HANDSHAKE_HEADER = 4

NOT_TLS = "not-tls"  # not a TLS handshake record holding a ClientHello
SPLIT = "split"  # a ClientHello that goes on past this segment (or this record)
MALFORMED = "malformed"  # a length prefix that points outside the message
NO_SNI = "no-sni"  # a whole ClientHello without a server_name extension
FOUND = "sni"


@dataclass(frozen=True)
class ClientHelloRead:
    """What one segment says about a ClientHello: `status` is one of the words above, and
    `server_name` the host name (lower case) when `status` is FOUND."""

    status: str
    server_name: str | None = None


class _Malformed(Exception):
    pass


class _Reader:
    """Length-prefixed fields of a byte string, front to back."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise _Malformed
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def prefixed(self, size: int) -> bytes:
        """A field preceded by its length in `size` bytes."""
        return self.take(self.number(size))

    @property
    def left(self) -> int:
        return len(self.data) - self.at


def read_client_hello(payload: bytes) -> ClientHelloRead:
    """The server name of the ClientHello that `payload` (one TCP segment's data) starts with."""
    if len(payload) < RECORD_HEADER or payload[0] != HANDSHAKE_RECORD or payload[1] != 3:
        return ClientHelloRead(NOT_TLS)
    record_length, = struct.unpack("!H", payload[3:5])
    record = payload[RECORD_HEADER:RECORD_HEADER + record_length]
    if not record or record[0] != CLIENT_HELLO:
        return ClientHelloRead(NOT_TLS if record else SPLIT)
    if len(record) < HANDSHAKE_HEADER:
        return ClientHelloRead(SPLIT)
    hello_length = int.from_bytes(record[1:4], "big")
    if len(record) < HANDSHAKE_HEADER + hello_length:
        # the record goes on in the next segment, or the message in the next record
        return ClientHelloRead(SPLIT)
    try:
        name = _server_name(_Reader(record[HANDSHAKE_HEADER:HANDSHAKE_HEADER + hello_length]))
    except _Malformed:
        return ClientHelloRead(MALFORMED)
    return ClientHelloRead(NO_SNI) if name is None else ClientHelloRead(FOUND, name)


def _server_name(hello: _Reader) -> str | None:
    hello.take(2 + 32)  # legacy_version, random
    hello.prefixed(1)  # legacy_session_id
    hello.prefixed(2)  # cipher_suites
    hello.prefixed(1)  # legacy_compression_methods
    if hello.left == 0:
        return None  # a ClientHello without extensions (TLS 1.0 allows it)
    extensions = _Reader(hello.prefixed(2))
    if hello.left:
        raise _Malformed  # bytes after the extensions
    while extensions.left:
        kind, body = extensions.number(2), extensions.prefixed(2)
        if kind != SERVER_NAME_EXTENSION:
            continue
        names = _Reader(_Reader(body).prefixed(2))
        while names.left:
            name_type, name = names.number(1), names.prefixed(2)
            if name_type == HOST_NAME:
                return name.decode("ascii", errors="replace").lower()
        return None
    return None


def names_match(server_name: str, blocked: str) -> bool:
    """Whether `server_name` is the blocked name or a name under it (`www.blocked.example` under
    `blocked.example`), as censors' domain lists usually read; case-insensitive."""
    server_name, blocked = server_name.lower().rstrip("."), blocked.lower().rstrip(".")
    return server_name == blocked or server_name.endswith("." + blocked)


def sni_is(payload: bytes, blocked: str) -> bool:
    """Whether `payload` holds a whole ClientHello naming `blocked` (or a name under it)."""
    hello = read_client_hello(payload)
    return hello.status == FOUND and names_match(hello.server_name, blocked)
