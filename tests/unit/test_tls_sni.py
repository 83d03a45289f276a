"""The lab boxes' ClientHello reader (netns/boxes/_tls.py), on real ClientHellos: OpenSSL's own,
made by Python's ssl over MemoryBIO, whole, cut short, split over two records, and damaged."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from netns.abort_server import client_hello_read
from netns.boxes import _common, _tls


def client_hello(server_hostname: str | None, *, max_version: ssl.TLSVersion | None = None) -> bytes:
    """The first bytes a TLS client sends, as they would go into a TCP segment."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if max_version is not None:
        context.maximum_version = max_version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


HELLO = client_hello("blocked.example")


@pytest.mark.parametrize("max_version", [None, ssl.TLSVersion.TLSv1_2])
def test_reads_the_server_name_of_a_real_client_hello(max_version):
    hello = client_hello("WWW.Blocked.Example", max_version=max_version)
    assert _tls.read_client_hello(hello) == _tls.ClientHelloRead(_tls.FOUND, "www.blocked.example")
    assert _common.is_trigger(hello, "blocked.example", "sni")


def test_a_client_hello_without_a_name_has_no_sni():
    assert _tls.read_client_hello(client_hello(None)).status == _tls.NO_SNI
    # an address is never sent as a server name (RFC 6066 3)
    assert _tls.read_client_hello(client_hello("203.0.113.80")).status == _tls.NO_SNI


def test_another_name_is_not_a_trigger_though_its_bytes_may_be():
    control = client_hello("www.example.com")
    assert not _common.is_trigger(control, "blocked.example", "sni")
    lookalike = client_hello("notblocked.example")
    assert _common.is_trigger(lookalike, "blocked.example", "bytes")  # the string match would fire
    assert not _common.is_trigger(lookalike, "blocked.example", "sni")
    assert not _tls.names_match("blocked.example.evil", "blocked.example")


def test_a_plaintext_request_is_not_tls():
    request = b"HEAD / HTTP/1.1\r\nHost: blocked.example\r\n\r\n"
    assert _tls.read_client_hello(request).status == _tls.NOT_TLS
    assert _common.is_trigger(request, "blocked.example", "bytes")
    assert not _common.is_trigger(request, "blocked.example", "sni")


def test_a_client_hello_cut_anywhere_never_matches_and_says_it_is_split():
    for end in range(1, len(HELLO)):
        read = _tls.read_client_hello(HELLO[:end])
        assert read.status != _tls.FOUND
        if end >= _tls.RECORD_HEADER:
            assert read.status == _tls.SPLIT, end
    assert not client_hello_read(HELLO[:-1]) and client_hello_read(HELLO)


def test_a_client_hello_split_over_two_records_is_not_reassembled():
    message = HELLO[_tls.RECORD_HEADER:]
    half = len(message) // 2

    def record(fragment: bytes) -> bytes:
        return HELLO[:3] + len(fragment).to_bytes(2, "big") + fragment

    two_records = record(message[:half]) + record(message[half:])
    assert _tls.read_client_hello(two_records).status == _tls.SPLIT


def test_a_length_that_points_outside_the_message_is_malformed():
    at = _tls.RECORD_HEADER + _tls.HANDSHAKE_HEADER + 2 + 32  # the session id's length
    at += 1 + HELLO[at]
    at += 2 + int.from_bytes(HELLO[at:at + 2], "big")  # past the cipher suites
    at += 1 + HELLO[at]  # past the compression methods: the extensions' length
    damaged = HELLO[:at] + b"\xff\xff" + HELLO[at + 2:]
    assert _tls.read_client_hello(damaged).status == _tls.MALFORMED


@given(st.lists(st.tuples(st.integers(0, len(HELLO) - 1), st.integers(0, 255)), max_size=8))
def test_damaged_bytes_never_raise(changes):
    damaged = bytearray(HELLO)
    for at, value in changes:
        damaged[at] = value
    read = _tls.read_client_hello(bytes(damaged))
    assert read.status in (_tls.NOT_TLS, _tls.SPLIT, _tls.MALFORMED, _tls.NO_SNI, _tls.FOUND)


TRIPWIRE_GFW = Path(__file__).resolve().parents[2] / ".." / "shared" / "realworld" / "tripwire" / "tripwire-1597963966.pcap"


@pytest.mark.skipif(not TRIPWIRE_GFW.exists(), reason="no realworld corpus")
def test_reads_the_client_hellos_of_a_real_capture():
    """Tripwire's GFW capture (../shared/realworld): browsers' ClientHellos of 2020, not OpenSSL's;
    the four without a server name carry encrypted SNI (extension 0xffce) instead, as scapy's TLS
    layer shows."""
    from probe.files.pcap import read_records

    reads = [_tls.read_client_hello(r.payload) for r in read_records(str(TRIPWIRE_GFW))
             if r.dport == 443 and r.payload[:1] == b"\x16"]
    assert {read.status for read in reads} == {_tls.FOUND, _tls.NO_SNI}
    assert {read.server_name for read in reads if read.status == _tls.FOUND} == {"www.wikipedia.org"}
    assert sum(read.status == _tls.FOUND for read in reads) == 12
