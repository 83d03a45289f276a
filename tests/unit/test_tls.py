"""HTTPS on the crafted connection: OpenSSL on both ends in memory, certificates made here."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from probe.protocol.http import HttpExchange
from probe.protocol.tls import TlsExchange, client_hello_sni, describe, judge_certificate, tls_records
from tests.unit.tlskit import MemoryServer, make_ca, make_leaf, write_pem


def converse(client: TlsExchange, server: MemoryServer, rounds: int = 10) -> bytes:
    """Run the conversation to its end; returns the client's last flight."""
    flight = client.first_flight()
    for _ in range(rounds):
        answer = server.feed(flight)
        flight = client.receive(answer)
        if client.finished:
            return flight
    raise AssertionError("the conversation did not end")


def exchange(name="www.example.com", sni=None, cafile=None) -> TlsExchange:
    return TlsExchange(HttpExchange.for_url("HEAD", name, 443, "/", default_port=443),
                       server_name=name if sni is None else sni, verify_name=name, cafile=cafile)


@pytest.fixture
def ca():
    return make_ca()


def test_a_full_https_exchange_reads_the_response_and_verifies_against_the_given_ca(tmp_path, ca):
    client = exchange(cafile=write_pem(tmp_path, "ca.pem", ca))
    hello = client.first_flight()
    assert client_hello_sni(hello[5:]) == "www.example.com"
    assert describe(hello) == "ClientHello (SNI www.example.com)"
    client = exchange(cafile=write_pem(tmp_path, "ca.pem", ca))
    converse(client, MemoryServer(tmp_path, make_leaf(ca, ["www.example.com"])))
    last = client.close()  # the server kept the connection open: our close_notify
    facts = client.facts
    assert facts.handshake == "complete" and facts.version == "TLSv1.3" and facts.alpn == "http/1.1"
    assert facts.verified and facts.verify_problems == []
    assert client.http.status.status == 200 and client.finished
    assert tls_records(last) == ["Application Data"]  # close_notify, encrypted under TLS 1.3
    assert facts.certificate["sans"] == ["www.example.com"]


def test_no_sni_is_sent_when_asked_for_none(tmp_path, ca):
    client = exchange(sni="", cafile=write_pem(tmp_path, "ca.pem", ca))
    hello = client.first_flight()
    assert client_hello_sni(hello[5:]) is None and describe(hello) == "ClientHello (no SNI)"
    assert client.facts.sni is None


def test_an_address_as_host_sends_no_sni_and_the_report_says_none(tmp_path, ca):
    client = exchange(name="198.51.100.80")
    assert client_hello_sni(client.first_flight()[5:]) is None and client.facts.sni is None


def test_another_sni_than_the_host_is_sent_and_the_certificate_still_judged_for_the_host(tmp_path, ca):
    client = exchange(sni="innocent.example", cafile=write_pem(tmp_path, "ca.pem", ca))
    assert client_hello_sni(client.first_flight()[5:]) == "innocent.example"


@pytest.mark.parametrize("names, issuer, days, problem", [
    (["other.example"], "ca", (-1, 30), "it is for other.example, not www.example.com"),
    (["www.example.com"], "self", (-1, 30), "it is self-signed"),
    (["www.example.com"], "proxy", (-1, 30), "its issuer (proxy CA) is not in the trust store"),
    (["www.example.com"], "ca", (-30, -2), "it expired on"),
])
def test_a_certificate_that_does_not_validate_is_a_finding_with_its_reason(tmp_path, ca, names, issuer, days,
                                                                             problem):
    proxy = make_ca("proxy CA")
    leaf = make_leaf({"ca": ca, "self": None, "proxy": proxy}[issuer], names, days)
    chain = [leaf.cert.public_bytes(Encoding.DER)]
    facts, verified, problems, store = judge_certificate(chain, "www.example.com", write_pem(tmp_path, "ca.pem", ca))
    assert not verified
    assert any(p.startswith(problem) for p in problems), problems
    assert store.endswith("ca.pem") and facts["sans"] == names


def test_a_wildcard_covers_one_label_only(tmp_path, ca):
    leaf = make_leaf(ca, ["*.example.com"])
    chain = [leaf.cert.public_bytes(Encoding.DER)]
    cafile = write_pem(tmp_path, "ca.pem", ca)
    assert judge_certificate(chain, "www.example.com", cafile)[1]
    assert not judge_certificate(chain, "a.b.example.com", cafile)[1]
    assert not judge_certificate(chain, "example.com", cafile)[1]


def test_a_server_certificate_for_another_name_is_reported_over_the_wire(tmp_path, ca):
    client = exchange(cafile=write_pem(tmp_path, "ca.pem", ca))
    converse(client, MemoryServer(tmp_path, make_leaf(make_ca("proxy CA"), ["www.example.com"])))
    assert client.facts.handshake == "complete" and client.http.status.status == 200  # never stopped
    assert client.facts.verified is False
    assert client.facts.verify_problems == ["its issuer (proxy CA) is not in the trust store, "
                                            "as with an intercepting proxy's own CA"]


def test_a_plaintext_answer_on_the_tls_port_fails_the_handshake_with_openssls_reason():
    client = exchange()
    client.first_flight()
    client.receive(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    assert client.facts.handshake == "failed" and client.finished
    assert "wrong version number" in client.facts.error or "record" in client.facts.error
    assert client.status.malformed.startswith("TLS: ")


def test_an_alert_instead_of_a_server_hello_fails_the_handshake_and_names_the_alert():
    client = exchange()
    client.first_flight()
    alert = bytes([21, 3, 3, 0, 2, 2, 112])  # fatal unrecognized_name
    assert describe(alert) == "Alert (fatal, unrecognized_name)"
    client.receive(alert)
    assert client.facts.handshake == "failed" and "unrecognized name" in client.facts.error


@pytest.mark.parametrize("payload, name", [
    (bytes([20, 3, 3, 0, 1, 1]) + bytes([23, 3, 3, 0, 3]) + b"abc", "ChangeCipherSpec, Application Data"),
    (bytes([22, 3, 3, 0, 40]) + bytes([2, 0, 0, 36]) + bytes(36), "ServerHello"),
    (bytes([22, 3, 3, 0, 40]) + bytes([2, 0, 0, 36]) + bytes(10), "ServerHello (continues)"),
    (bytes([20, 3, 3, 0, 1, 1]) + bytes([22, 3, 3, 0, 5]) + bytes([99, 1, 2, 3, 4]),
     "ChangeCipherSpec, Encrypted Handshake Message"),
    (bytes([21, 3, 3, 0, 26]) + bytes(26), "Encrypted Alert"),
    ((bytes([23, 3, 3, 0, 2]) + b"xy") * 3 + bytes([21, 3, 3, 0, 2, 1, 0]),
     "Application Data x3, Alert (warning, close_notify)"),
    (b"HTTP/1.1 403 Forbidden\r\nServer: x\r\n\r\n", "HTTP/1.1 403 Forbidden"),
    (b"\x00\x01garbage", ""),
    (bytes([22, 9, 3, 0, 4]) + bytes(4), ""),  # not TLS: the version's major is not 3
])
def test_records_are_named_as_wireshark_names_them(payload, name):
    assert describe(payload) == name


def test_a_truncated_client_hello_yields_no_sni_rather_than_an_error(tmp_path):
    hello = exchange().first_flight()
    for cut in (6, 20, 50, len(hello) // 2):
        client_hello_sni(hello[5:cut])  # no exception
    assert tls_records(hello[:60]) == ["ClientHello (continues)"] or tls_records(hello[:60])[0].startswith(
        "ClientHello")


# --- TLS riding on the crafted TCP connection ----------------------------------------------------


def _tcp_conversation(tmp_path, ca, mss: int, drop_first_data: bool = False, server_closes: bool = False):
    """A ClientConnection carrying TLS, and a hand-made server end (the in-memory TLS server
    behind sequence numbers): returns every segment the client sent and the connection."""
    from probe.protocol.tcp import ClientConnection
    from tests.unit.conftest import from_server

    app = exchange(cafile=write_pem(tmp_path, "ca.pem", ca))
    server = MemoryServer(tmp_path, make_leaf(ca, ["www.example.com"]), close_after_response=server_closes)
    connection = ClientConnection("192.0.2.10", 40000, "198.51.100.80", 443, app, isn=1000)
    sent = list(connection.start(0.0))
    irs, server_nxt, expected = 5000, 5001, 1001  # the server's next sequence number, and the client's
    options = (("MSS", mss), ("SAckOK", True), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7))
    now = 0.05
    out = connection.on_packet(from_server(now, "SA", irs, 1001, options=options), now)
    dropped, fin_sent = False, False
    for _ in range(40):
        sent += out
        data = b""
        for segment in out:
            if segment.payload and segment.seq == expected:
                if drop_first_data and not dropped and segment.purpose == "data":
                    dropped = True
                    continue
                data += segment.payload
                expected += len(segment.payload)
        now += 0.05
        if not data:
            if connection.done or connection.progress.closed_politely:
                break
            if connection.deadline is None:
                break
            now = max(now, connection.deadline)
            out = connection.on_timer(now)
            continue
        answer = server.feed(data)
        out = connection.on_packet(from_server(now, "A", server_nxt, expected), now) if not answer else []
        for start in range(0, len(answer), mss):
            chunk = answer[start:start + mss]
            last = start + mss >= len(answer)
            flags = "FPA" if server.closed and last and not fin_sent else "PA"
            out += connection.on_packet(from_server(now, flags, server_nxt, expected, payload=chunk), now)
            server_nxt += len(chunk) + ("F" in flags)
            fin_sent = fin_sent or "F" in flags
    return sent, connection, app


def test_tls_over_the_state_machine_sends_the_client_hello_as_the_request_and_closes_with_close_notify(
        tmp_path, ca):
    sent, connection, app = _tcp_conversation(tmp_path, ca, mss=1460)
    data = [segment for segment in sent if segment.payload]
    assert data[0].purpose == "request" and describe(data[0].payload) == "ClientHello (SNI www.example.com)"
    assert connection.request == data[0].payload
    assert all(segment.purpose == "data" for segment in data[1:])
    assert app.http.status.status == 200 and app.facts.verified
    assert sent[-1].flags == "FA"  # close_notify went out before our FIN
    assert "A" in data[-1].flags and data[-1].seq + len(data[-1].payload) == sent[-1].seq


def test_when_the_server_closes_first_we_answer_its_fin_with_a_fin_alone(tmp_path, ca):
    """nginx says close_notify and FIN right after the response (Connection: close): a
    close_notify of ours would reach its closed socket and draw a reset."""
    sent, connection, app = _tcp_conversation(tmp_path, ca, mss=1460, server_closes=True)
    data = [segment for segment in sent if segment.payload]
    fin = next(segment for segment in sent if "F" in segment.flags)
    assert not fin.payload and data[-1].seq < fin.seq  # nothing of ours after the response's request
    assert app.facts.closed_by_peer and app.http.status.status == 200
    assert connection.state.value in ("done", "last-ack")


def test_a_small_mss_splits_what_tls_sends_and_a_lost_segment_is_retransmitted_from_its_start(tmp_path, ca):
    sent, connection, app = _tcp_conversation(tmp_path, ca, mss=100, drop_first_data=True)
    data = [segment for segment in sent if segment.payload]
    assert all(len(segment.payload) <= 100 for segment in data[1:])  # what follows the ClientHello is cut
    retransmitted = [segment for segment in data if segment.purpose == "retransmission"]
    assert retransmitted and len(retransmitted[0].payload) <= 100
    first_data = next(segment for segment in data if segment.purpose == "data")
    assert retransmitted[0].seq == first_data.seq and retransmitted[0].payload == first_data.payload
    assert app.http.status.status == 200


# --- what the report says about it ---------------------------------------------------------------


def test_the_report_carries_http_and_tls_sections_and_says_the_certificate_in_one_sentence(tmp_path, ca):
    from probe.render.report import application_sections, summary_lines

    client = exchange(cafile=write_pem(tmp_path, "ca.pem", ca))
    converse(client, MemoryServer(tmp_path, make_leaf(make_ca("proxy CA"), ["www.example.com"]),
                                  response=b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"))
    sections = application_sections(client)
    assert sections["http"] == {"status": 403, "reason": "Forbidden", "complete": True, "malformed": None}
    assert sections["tls"]["verified"] is False and sections["tls"]["sni"] == "www.example.com"
    document = {"verdict": "clean", "direction": None, "hop": None, "rtt_ms": 20.0,
                "explanation": "The server answered the request.", **sections}
    first, _, tls = summary_lines(document).splitlines()
    assert first.endswith("http: 403 Forbidden")
    assert tls.startswith("TLS 1.3 with ") and "its issuer (proxy CA) is not in the trust store" in tls


def test_plain_http_has_an_http_section_and_no_tls_section():
    from probe.render.report import application_sections

    http = HttpExchange.for_url("HEAD", "www.example.com", 80, "/")
    http.receive(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    assert application_sections(http) == {"http": {"status": 404, "reason": "Not Found", "complete": True,
                                                   "malformed": None}}


# --- the request curl's options make -------------------------------------------------------------


def test_curls_request_options_make_the_bytes_curl_would_send():
    from probe.commands.common import request_options
    from probe.protocol.http import build_request

    request = request_options("post", ["X-Trace: 1", "Accept: text/html", "Connection:"], "curl/8.5.0", "q=blocked")
    wire = build_request(request, "www.example.com", 80, "/search").decode()
    head, _, body = wire.partition("\r\n\r\n")
    lines = head.split("\r\n")
    assert lines[0] == "POST /search HTTP/1.1" and body == "q=blocked"
    headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
    names = [name.lower() for name, _ in headers]
    assert ("user-agent", "curl/8.5.0") in [(n.lower(), v) for n, v in headers]
    assert names.count("accept") == 1 and ("Accept", "text/html") in headers  # replaced, not added
    assert "connection" not in names  # 'Connection:' removed the default
    assert ("Content-Length", "9") in headers and ("X-Trace", "1") in headers


def test_data_alone_means_post_and_no_option_means_head():
    from probe.commands.common import request_options

    assert request_options(None, data="a=1").method == "POST"
    assert request_options(None) == request_options("HEAD")
    assert request_options("options").method == "OPTIONS"


def test_a_post_over_tls_reaches_the_server_with_its_body(tmp_path, ca):
    from probe.commands.common import request_options

    request = request_options(None, ["X-Probe: 1"], None, "q=1")
    client = TlsExchange(HttpExchange.for_url(request, "www.example.com", 443, "/", default_port=443),
                         server_name="www.example.com", verify_name="www.example.com",
                         cafile=write_pem(tmp_path, "ca.pem", ca))
    server = MemoryServer(tmp_path, make_leaf(ca, ["www.example.com"]))
    converse(client, server)
    assert server.received.startswith(b"POST / HTTP/1.1\r\n") and server.received.endswith(b"\r\n\r\nq=1")
    assert b"X-Probe: 1\r\n" in server.received
