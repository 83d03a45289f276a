"""The client's TCP state machine (probe.protocol.tcp.ClientConnection), driven by hand-made packets.

The expectations come from the RFCs, not from running the code: RFC 9293 (sequence space,
RST acceptance, FIN exchange, TIME-WAIT), RFC 7323 (timestamps, window scale), RFC 6298
(retransmission backoff) and the timings the module promises (SYN after 1 s, 2 s, ...;
request after max(3 RTT, 200 ms), doubling). Times are synthetic seconds.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from probe.protocol.http import HttpExchange, ResponseReader, ResponseStatus, build_request
from probe.record import PacketRecord
from probe.protocol.tcp import ClientConnection, Settings

from .conftest import CLIENT, CLIENT_PORT, SERVER, SERVER_PORT, from_client, from_server, icmp_error, seq

REQUEST = build_request("HEAD", "www.example.com", 80, "/")
ISN = 1_000_000
IRS = 3_000_000
SERVER_TSVAL = 777
# What a Linux server puts on its SYN-ACK.
SERVER_SYN_OPTIONS = (("MSS", 1460), ("SAckOK", True), ("Timestamp", (SERVER_TSVAL, 0)), ("NOP", None),
                      ("WScale", 7))
HEAD_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 1256\r\nContent-Type: text/html\r\n\r\n"

u32 = st.integers(0, 2**32 - 1)
near_wrap = st.one_of(st.integers(2**32 - 400, 2**32 - 1), u32)


class RecordingReader:
    """Stands in for ResponseReader: keeps every byte it is fed, in order; never complete."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.eof = False

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def feed(self, data: bytes, eof: bool = False) -> ResponseStatus:
        self.chunks.append(bytes(data))
        self.eof = self.eof or eof
        return ResponseStatus()


def new_connection(isn=ISN, reader=None, settings=Settings(), request=REQUEST, ts_base=0):
    app = HttpExchange(request, reader if reader is not None else RecordingReader())
    return ClientConnection(CLIENT, CLIENT_PORT, SERVER, SERVER_PORT, app, isn=isn, settings=settings,
                            ts_base=ts_base)


def head_reader():
    return ResponseReader("HEAD", "www.example.com", 80, "/")


def establish(isn=ISN, irs=IRS, rtt=0.05, options=SERVER_SYN_OPTIONS, **kwargs):
    """Start a connection at t=0 and answer its SYN at t=rtt; return it and what it sent then."""
    connection = new_connection(isn, **kwargs)
    [syn] = connection.start(0.0)
    out = connection.on_packet(from_server(rtt, "SA", irs, syn.seq + 1, options=options), rtt)
    return connection, out


def request_end(isn=ISN) -> int:
    return seq(isn + 1 + len(REQUEST))


def fire_timers(connection, until: float, limit: int = 50):
    """Call on_timer at each deadline the connection sets (and check it is silent just before).

    Returns [(time, segments)] for every deadline reached up to `until`."""
    fired = []
    while connection.deadline is not None and connection.deadline <= until and not connection.done:
        assert len(fired) < limit, "the timer never settles"
        now = connection.deadline
        assert connection.on_timer(now - 1e-3) == [], f"a timer fired before its deadline {now}"
        fired.append((now, connection.on_timer(now)))
    return fired


def option_names(segment) -> list[str]:
    return [name for name, _ in segment.options]


def option(segment, name):
    return next((value for option_name, value in segment.options if option_name == name), None)


# --- the SYN -------------------------------------------------------------------------------------


def test_syn_carries_linux_options_in_linux_order():
    connection = new_connection()
    [syn] = connection.start(0.0)
    assert syn.flags == "S"
    assert syn.seq == ISN and syn.ack == 0 and syn.payload == b""
    assert syn.window > 0
    # Linux: MSS, SACK permitted, timestamps, NOP, window scale (20 bytes, no padding).
    assert option_names(syn) == ["MSS", "SAckOK", "Timestamp", "NOP", "WScale"]
    assert option(syn, "MSS") == Settings().mss
    assert 0 <= option(syn, "WScale") <= 14  # RFC 7323 2.3: larger shifts are treated as 14
    tsval, tsecr = option(syn, "Timestamp")
    assert tsecr == 0  # RFC 7323 3.2: nothing to echo yet
    assert not connection.done


def test_syn_retransmission_keeps_isn_and_advances_tsval():
    connection = new_connection(ts_base=5000)
    [first] = connection.start(0.0)
    [(_, [again])] = fire_timers(connection, until=1.5)
    assert again.flags == "S" and again.seq == first.seq == ISN
    assert option_names(again) == option_names(first)
    assert option(again, "Timestamp")[0] > option(first, "Timestamp")[0]  # RFC 7323: TSval is a clock


@pytest.mark.parametrize("syn_retries", [0, 1, 2, 4])
def test_syn_retransmissions_back_off_then_give_up(syn_retries):
    connection = new_connection(settings=Settings(syn_retries=syn_retries))
    connection.start(0.0)
    fired = fire_timers(connection, until=1000.0)
    # 1 s, then doubling: SYNs at 0, 1, 3, 7, ...; give up one doubled timeout after the last.
    expected_times = [2 ** (k + 1) - 1 for k in range(syn_retries + 1)]
    assert [now for now, _ in fired] == pytest.approx(expected_times)
    for _, segments in fired[:-1]:
        assert [s.flags for s in segments] == ["S"] and segments[0].seq == ISN
    assert fired[-1][1] == []
    assert connection.done and connection.progress.gave_up == "syn"
    assert connection.progress.syn_sent == syn_retries + 1
    assert connection.on_timer(5000.0) == []


# --- the SYN-ACK ---------------------------------------------------------------------------------


def test_synack_yields_handshake_ack_then_request_at_the_right_numbers():
    connection, out = establish(rtt=0.05)
    assert [s.purpose for s in out] == ["handshake-ack", "request"]
    ack, request = out
    assert ack.flags == "A" and ack.payload == b""
    assert ack.seq == ISN + 1 and ack.ack == IRS + 1
    assert set(request.flags) == {"P", "A"}
    assert request.seq == ISN + 1 and request.ack == IRS + 1 and request.payload == REQUEST
    assert connection.progress.synack_at == 0.05
    assert connection.rtt_estimate == pytest.approx(0.05)
    assert connection.progress.request_sent == 1
    assert not connection.done


def test_timestamps_echo_the_servers_tsval_when_it_offers_them():
    _, (ack, request) = establish()
    for segment in (ack, request):
        # RFC 7323 3.2: TSecr echoes the peer's TSval; NOP NOP pads the option to 12 bytes.
        assert option_names(segment) == ["NOP", "NOP", "Timestamp"]
        assert option(segment, "Timestamp")[1] == SERVER_TSVAL


def test_no_timestamps_when_the_server_does_not_offer_them():
    _, (ack, request) = establish(options=(("MSS", 1460),))
    assert option(ack, "Timestamp") is None and option(request, "Timestamp") is None  # RFC 7323 3.2


def test_window_is_scaled_only_when_both_sides_sent_wscale():
    syn = new_connection().start(0.0)[0]
    shift = option(syn, "WScale")
    _, (scaled_ack, _) = establish(options=SERVER_SYN_OPTIONS)
    _, (plain_ack, _) = establish(options=(("MSS", 1460),))
    assert plain_ack.window == syn.window  # RFC 7323 2.2: no scaling without the peer's WScale
    assert syn.window - (1 << shift) < scaled_ack.window << shift <= syn.window


@given(wrong_ack=u32.filter(lambda a: a != ISN + 1), flags=st.sampled_from(["SA", "A"]))
def test_an_unacceptable_ack_in_syn_sent_draws_a_reset_at_its_ack_and_nothing_else(wrong_ack, flags):
    """RFC 9293 3.10.7.3: in SYN-SENT, SEG.ACK =< ISS or > SND.NXT is answered <SEQ=SEG.ACK><CTL=RST>
    and the segment dropped. A bare ACK is the challenge ACK (RFC 5961 4) of a server that still
    holds an earlier connection on the four-tuple: the reset clears it for our retransmitted SYN."""
    connection = new_connection()
    connection.start(0.0)
    [reset] = connection.on_packet(from_server(0.05, flags, IRS, wrong_ack, options=SERVER_SYN_OPTIONS), 0.05)
    assert (reset.flags, reset.seq, reset.payload) == ("R", wrong_ack, b"")
    assert connection.progress.synack_at is None and connection.progress.request_sent == 0
    # still in SYN-SENT: the SYN is retransmitted, and the right SYN-ACK is taken later
    [(_, [syn])] = fire_timers(connection, until=1.5)
    assert syn.flags == "S"
    out = connection.on_packet(from_server(1.1, "SA", IRS, ISN + 1, options=SERVER_SYN_OPTIONS), 1.1)
    assert [s.purpose for s in out] == ["handshake-ack", "request"]


def test_repeated_synack_draws_another_handshake_ack():
    connection, _ = establish()
    out = connection.on_packet(from_server(0.3, "SA", IRS, ISN + 1, options=SERVER_SYN_OPTIONS), 0.3)
    assert [(s.flags, s.seq, s.ack, s.payload) for s in out] == [("A", request_end(), IRS + 1, b"")]


# --- retransmitting the request ------------------------------------------------------------------


@pytest.mark.parametrize("rtt", [0.001, 0.05, 0.0667, 0.1, 0.4])
@pytest.mark.parametrize("retries", [2, 3, 5])
def test_request_retransmissions_back_off_from_three_rtts_then_give_up(rtt, retries):
    connection, (_, request) = establish(rtt=rtt, settings=Settings(data_retries=retries))
    fired = fire_timers(connection, until=10_000.0)
    rto = max(3 * rtt, 0.2)  # srtt + 4 * (srtt / 2), floored at Linux's 200 ms
    expected_times = [rtt + rto * (2 ** (k + 1) - 1) for k in range(retries + 1)]
    assert [now for now, _ in fired] == pytest.approx(expected_times)
    for _, segments in fired[:-1]:
        [again] = segments
        assert again.purpose == "retransmission"
        assert (again.flags, again.seq, again.ack, again.payload) == (request.flags, request.seq, request.ack,
                                                                      REQUEST)
    assert fired[-1][1] == []
    assert connection.done and connection.progress.gave_up == "request"
    assert connection.progress.request_sent == 1 + retries


def test_default_settings_retransmit_the_request_at_least_twice():
    connection, _ = establish()
    fire_timers(connection, until=10_000.0)
    assert connection.progress.gave_up == "request"
    assert connection.progress.request_sent >= 3


def test_acknowledged_request_is_not_retransmitted():
    connection, _ = establish(rtt=0.05)
    assert connection.on_packet(from_server(0.1, "A", IRS + 1, request_end()), 0.1) == []
    assert connection.progress.request_acked
    fired = fire_timers(connection, until=5.0)  # the idle watchdog is 10 s away
    assert all(segments == [] for _, segments in fired)
    assert not connection.done and connection.progress.request_sent == 1


def test_retransmission_after_a_partial_ack_keeps_bytes_at_their_sequence_numbers():
    connection, _ = establish(rtt=0.05)
    connection.on_packet(from_server(0.1, "A", IRS + 1, ISN + 1 + 10), 0.1)  # the server took 10 bytes
    [(_, [again])] = fire_timers(connection, until=0.35)
    offset = seq(again.seq - (ISN + 1))
    assert again.payload == REQUEST[offset:offset + len(again.payload)]


def test_idle_connection_gives_up_after_the_idle_timeout():
    connection, _ = establish(rtt=0.05, settings=Settings(idle_timeout=10.0))
    connection.on_packet(from_server(0.1, "A", IRS + 1, request_end()), 0.1)
    assert connection.on_timer(10.0) == [] and not connection.done
    fire_timers(connection, until=10.2)
    assert connection.done and connection.progress.gave_up == "idle"


# --- receiving the response ----------------------------------------------------------------------


def test_in_order_data_is_acked_and_fed_to_the_reader():
    connection, _ = establish()
    out = connection.on_packet(from_server(0.1, "PA", IRS + 1, request_end(), payload=b"HTTP/1.1 200"), 0.1)
    assert [(s.flags, s.seq, s.ack) for s in out] == [("A", request_end(), IRS + 1 + 12)]
    assert connection.app.reader.data == b"HTTP/1.1 200"
    assert connection.progress.request_acked
    out = connection.on_packet(from_server(0.11, "PA", IRS + 13, request_end(), payload=b" OK\r\n"), 0.11)
    assert [s.ack for s in out] == [IRS + 1 + 17]
    assert connection.app.reader.data == b"HTTP/1.1 200 OK\r\n"


def test_out_of_order_data_draws_a_duplicate_ack_and_is_not_fed():
    connection, _ = establish()
    out = connection.on_packet(from_server(0.1, "PA", IRS + 101, request_end(), payload=b"x" * 50), 0.1)
    assert [(s.flags, s.ack, s.purpose) for s in out] == [("A", IRS + 1, "duplicate-ack")]
    assert connection.app.reader.data == b""
    # the segment before it fills the hole: only that is taken (no reassembly queue is promised)
    out = connection.on_packet(from_server(0.12, "PA", IRS + 1, request_end(), payload=b"y" * 100), 0.12)
    assert [s.ack for s in out] == [IRS + 101] and connection.app.reader.data == b"y" * 100


def test_overlapping_retransmission_feeds_only_the_new_bytes():
    connection, _ = establish()
    stream = bytes(range(200))
    connection.on_packet(from_server(0.1, "PA", IRS + 1, request_end(), payload=stream[:100]), 0.1)
    out = connection.on_packet(from_server(0.2, "PA", IRS + 1 + 50, request_end(), payload=stream[50:150]), 0.2)
    assert [s.ack for s in out] == [IRS + 1 + 150]
    assert connection.app.reader.data == stream[:150]
    out = connection.on_packet(from_server(0.3, "PA", IRS + 1, request_end(), payload=stream[:100]), 0.3)
    assert [(s.ack, s.purpose) for s in out] == [(IRS + 1 + 150, "duplicate-ack")]
    assert connection.app.reader.data == stream[:150]


@given(irs=near_wrap, stream=st.binary(min_size=1, max_size=300),
       pieces=st.lists(st.tuples(st.integers(0, 299), st.integers(1, 120)), min_size=1, max_size=25))
def test_reader_only_ever_sees_the_in_order_prefix(irs, stream, pieces):
    connection, _ = establish(irs=irs)
    reader = connection.app.reader
    for i, (start, size) in enumerate(pieces):
        start = min(start, len(stream) - 1)
        end = min(start + size, len(stream))
        had = len(reader.data)
        t = 0.1 + i * 0.001
        out = connection.on_packet(from_server(t, "PA", irs + 1 + start, request_end(),
                                               payload=stream[start:end]), t)
        assert reader.data == stream[:len(reader.data)]
        expected = end if start <= had < end else had
        assert len(reader.data) == expected
        [ack] = out
        assert ack.flags == "A" and ack.seq == request_end() and ack.ack == seq(irs + 1 + expected)
        assert ack.purpose == ("ack" if expected > had else "duplicate-ack")


def test_tsecr_follows_the_servers_latest_tsval():
    connection, _ = establish()
    data = from_server(0.1, "PA", IRS + 1, request_end(), payload=b"HTTP/1.1 200",
                       options=(("NOP", None), ("NOP", None), ("Timestamp", (SERVER_TSVAL + 50, 100))))
    [ack] = connection.on_packet(data, 0.1)
    assert option(ack, "Timestamp")[1] == SERVER_TSVAL + 50  # RFC 7323 4.3: TS.Recent <- SEG.TSval


def test_icmp_error_does_not_change_the_connection():
    from probe.record import PacketRecord

    connection, _ = establish()
    icmp = PacketRecord(t=0.1, src="192.0.2.1", dst=CLIENT, proto="icmp", ttl=64, ip_id=0, df=False, tos=0,
                        ip_len=56, icmp_type=3, icmp_code=13)
    assert connection.on_packet(icmp, 0.1) == []
    assert not connection.done
    [(_, [again])] = fire_timers(connection, until=0.3)
    assert again.purpose == "retransmission"


# --- ICMP errors ---------------------------------------------------------------------------------
# Linux's tcp_v4_err: in SYN-SENT, any destination unreachable but "fragmentation needed", a time
# exceeded or a parameter problem ends the attempt at once (connect() fails); once established,
# every ICMP error is soft (kept for the timeout's message, RFC 1122 4.2.3.9), and an ICMP error
# counts only if the sequence number it quotes is one we have sent and not seen acknowledged
# (RFC 5927 4.1).


def our_syn(connection) -> PacketRecord:
    [syn] = connection.start(0.0)
    return from_client(0.0, "S", syn.seq)


@pytest.mark.parametrize("icmp_type, code", [(3, 0), (3, 1), (3, 2), (3, 3), (3, 9), (3, 10), (3, 13), (11, 0),
                                             (12, 0)])
def test_a_hard_icmp_error_to_the_syn_ends_the_attempt_at_once(icmp_type, code):
    connection = new_connection()
    syn = our_syn(connection)
    assert connection.on_packet(icmp_error(0.01, icmp_type, code, syn), 0.01) == []
    assert connection.done and connection.deadline is None
    assert connection.progress.icmp_error == (icmp_type, code) and connection.progress.icmp_at == 0.01
    assert connection.progress.syn_sent == 1 and connection.progress.gave_up is None
    assert fire_timers(connection, until=100.0) == [] and connection.on_timer(100.0) == []


@pytest.mark.parametrize("icmp_type, code", [(3, 4), (3, 16), (4, 0), (5, 1)])
def test_fragmentation_needed_source_quench_and_redirect_do_not_end_the_attempt(icmp_type, code):
    connection = new_connection()
    syn = our_syn(connection)
    assert connection.on_packet(icmp_error(0.01, icmp_type, code, syn), 0.01) == []
    assert not connection.done and connection.progress.icmp_error is None
    [(_, [again])] = fire_timers(connection, until=1.5)
    assert again.flags == "S"


@pytest.mark.parametrize("quoted_seq", [ISN - 1, ISN + 2, ISN + 100_000, None])
def test_an_icmp_error_quoting_a_sequence_number_we_did_not_send_is_ignored(quoted_seq):
    connection = new_connection()
    syn = our_syn(connection)
    error = icmp_error(0.01, 3, 1, syn)
    error = dataclasses.replace(error, quoted=dataclasses.replace(error.quoted, seq=quoted_seq))
    assert connection.on_packet(error, 0.01) == []
    assert not connection.done
    [(_, [again])] = fire_timers(connection, until=1.5)
    assert again.flags == "S"


def test_an_icmp_error_quoting_another_flow_is_ignored():
    connection = new_connection()
    syn = our_syn(connection)
    error = icmp_error(0.01, 3, 1, syn)
    error = dataclasses.replace(error, quoted=dataclasses.replace(error.quoted, sport=CLIENT_PORT + 1))
    assert connection.on_packet(error, 0.01) == [] and not connection.done


@pytest.mark.parametrize("icmp_type, code", [(3, 1), (3, 3), (3, 13), (11, 0)])
def test_icmp_errors_are_soft_once_established(icmp_type, code):
    connection, [_, request] = establish()
    error = icmp_error(0.06, icmp_type, code, from_client(0.05, "PA", request.seq, payload=request.payload))
    assert connection.on_packet(error, 0.06) == []
    assert not connection.done and connection.progress.icmp_error is None
    [(_, [again])] = fire_timers(connection, until=0.3)
    assert again.purpose == "retransmission"


def test_a_synack_after_the_icmp_error_is_remembered_for_the_closing_reset():
    # a forged or stale error: the server did answer. Like the kernel (no socket any more), we
    # send nothing at once, but the close resets what the server holds (seq = its ack).
    connection = new_connection()
    syn = our_syn(connection)
    connection.on_packet(icmp_error(0.01, 3, 1, syn), 0.01)
    assert connection.on_packet(from_server(0.05, "SA", IRS, ISN + 1, options=SERVER_SYN_OPTIONS), 0.05) == []
    assert connection.done and connection.irs == IRS
    assert connection.snd_una == connection.snd_nxt == ISN + 1


def test_a_synack_that_does_not_acknowledge_our_syn_is_not_remembered():
    connection = new_connection()
    syn = our_syn(connection)
    connection.on_packet(icmp_error(0.01, 3, 1, syn), 0.01)
    connection.on_packet(from_server(0.05, "SA", IRS, ISN + 7), 0.05)
    assert connection.irs is None


# --- closing -------------------------------------------------------------------------------------


def test_server_fin_draws_our_fin_and_its_ack_closes_politely():
    connection, _ = establish()
    response_end = IRS + 1 + len(HEAD_RESPONSE)
    connection.on_packet(from_server(0.1, "PA", IRS + 1, request_end(), payload=HEAD_RESPONSE), 0.1)
    out = connection.on_packet(from_server(0.101, "FA", response_end, request_end()), 0.101)
    # one segment: our FIN, which also acknowledges the server's FIN (it occupies one number)
    assert [(set(s.flags), s.seq, s.ack) for s in out] == [({"F", "A"}, request_end(), response_end + 1)]
    assert connection.progress.server_fin and not connection.done
    assert connection.app.reader.eof
    out = connection.on_packet(from_server(0.15, "A", response_end + 1, request_end() + 1), 0.15)
    assert out == []
    assert connection.progress.closed_politely and connection.done
    assert connection.on_timer(100.0) == []


def test_fin_with_data_is_answered_by_one_fin_covering_both():
    connection, _ = establish()
    response_end = IRS + 1 + len(HEAD_RESPONSE)
    out = connection.on_packet(from_server(0.1, "FPA", IRS + 1, request_end(), payload=HEAD_RESPONSE), 0.1)
    fins = [s for s in out if "F" in s.flags]
    assert len(fins) == 1 and fins[0].ack == response_end + 1 and fins[0].seq == request_end()
    assert connection.app.reader.data == HEAD_RESPONSE


def test_ack_that_does_not_cover_our_fin_does_not_close():
    connection, _ = establish()
    response_end = IRS + 1 + len(HEAD_RESPONSE)
    connection.on_packet(from_server(0.1, "FPA", IRS + 1, request_end(), payload=HEAD_RESPONSE), 0.1)
    connection.on_packet(from_server(0.15, "A", response_end + 1, request_end()), 0.15)
    assert not connection.done and not connection.progress.closed_politely
    [(_, [again])] = fire_timers(connection, until=0.5)
    assert "F" in again.flags and again.seq == request_end()  # our FIN is retransmitted


def test_out_of_order_fin_is_not_taken():
    connection, _ = establish()
    out = connection.on_packet(from_server(0.1, "FA", IRS + 1 + 500, request_end()), 0.1)
    assert all("F" not in s.flags for s in out)
    assert not connection.progress.server_fin


def test_complete_response_without_server_fin_makes_us_close_first():
    connection, _ = establish(reader=head_reader())
    response_end = IRS + 1 + len(HEAD_RESPONSE)
    out = connection.on_packet(from_server(0.1, "PA", IRS + 1, request_end(), payload=HEAD_RESPONSE), 0.1)
    assert connection.progress.response_complete and connection.progress.response_status == 200
    [fin] = [s for s in out if "F" in s.flags]
    assert fin.seq == request_end() and fin.ack == response_end and "A" in fin.flags
    assert not connection.done
    # the server acknowledges our FIN and sends its own: we acknowledge it, and it is over
    out = connection.on_packet(from_server(0.15, "FA", response_end, request_end() + 1), 0.15)
    assert [(s.flags, s.seq, s.ack) for s in out] == [("A", request_end() + 1, response_end + 1)]
    assert connection.progress.closed_politely and connection.done


def test_incomplete_response_does_not_make_us_close():
    connection, _ = establish(reader=ResponseReader("GET", "www.example.com", 80, "/"))
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"z" * 50
    out = connection.on_packet(from_server(0.1, "PA", IRS + 1, request_end(), payload=partial), 0.1)
    assert all("F" not in s.flags for s in out)
    assert not connection.progress.response_complete


def test_retransmitted_fin_after_we_closed_first_is_acknowledged():
    connection, _ = establish(reader=head_reader())
    response_end = IRS + 1 + len(HEAD_RESPONSE)
    connection.on_packet(from_server(0.1, "PA", IRS + 1, request_end(), payload=HEAD_RESPONSE), 0.1)
    connection.on_packet(from_server(0.15, "FA", response_end, request_end() + 1), 0.15)
    assert connection.progress.closed_politely
    out = connection.on_packet(from_server(0.5, "FA", response_end, request_end() + 1), 0.5)
    assert [(s.flags, s.ack) for s in out] == [("A", response_end + 1)]


# --- resets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1, 1000, 60000])
def test_in_window_reset_ends_the_exchange(offset):
    connection, _ = establish()
    assert connection.on_packet(from_server(0.06, "R", IRS + 1 + offset, 0, win=0), 0.06) == []
    assert connection.done and connection.progress.reset_at == 0.06
    assert fire_timers(connection, until=1000.0) == []  # no retransmission, no FIN
    assert connection.on_timer(1000.0) == []


def test_data_after_a_reset_is_still_acknowledged():
    connection, _ = establish()
    connection.on_packet(from_server(0.06, "RA", IRS + 1, request_end()), 0.06)
    assert connection.done
    out = connection.on_packet(from_server(0.1, "PA", IRS + 1, request_end(), payload=HEAD_RESPONSE), 0.1)
    end = IRS + 1 + len(HEAD_RESPONSE)
    assert [(s.flags, s.seq, s.ack, s.purpose, s.payload) for s in out] == [
        ("A", request_end(), end, "ack-after-reset", b"")]
    out = connection.on_packet(from_server(0.11, "FA", end, request_end()), 0.11)
    assert [(s.flags, s.ack, s.purpose) for s in out] == [("A", end + 1, "ack-after-reset")]
    # nothing else is sent of our own: no FIN, no retransmission, no answer to a gap or a RST
    assert connection.on_packet(from_server(0.12, "PA", end + 1000, request_end(), payload=b"x"), 0.12) == []
    assert connection.on_packet(from_server(0.13, "R", end + 1, 0), 0.13) == []
    assert connection.on_timer(100.0) == []


@pytest.mark.parametrize("offset", [-1, -1000, 64240, 100_000, 2**31])
def test_out_of_window_reset_is_ignored(offset):
    connection, _ = establish()
    assert connection.on_packet(from_server(0.06, "R", IRS + 1 + offset, 0), 0.06) == []
    assert not connection.done and connection.progress.reset_at is None
    [(_, [again])] = fire_timers(connection, until=0.3)
    assert again.purpose == "retransmission"


def our_window_shift() -> int:
    return option(new_connection().start(0.0)[0], "WScale")


@pytest.mark.parametrize("inside", [True, False])
def test_reset_acceptance_uses_the_window_we_advertised(inside):
    connection, (ack, _) = establish()  # window scaling agreed: the window field is in 2**shift units
    advertised = ack.window << our_window_shift()
    offset = advertised - 1 if inside else advertised
    connection.on_packet(from_server(0.06, "R", IRS + 1 + offset, 0), 0.06)
    assert connection.done == inside  # RFC 9293 3.10.7.4: RCV.NXT =< SEG.SEQ < RCV.NXT + RCV.WND


@given(isn=near_wrap, irs=near_wrap, scaled=st.booleans(),
       offset=st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-3, 3), st.integers(64100, 64300)))
def test_reset_acceptance_is_window_arithmetic_across_the_wrap(isn, irs, scaled, offset):
    options = SERVER_SYN_OPTIONS if scaled else (("MSS", 1460),)
    connection, (ack, _) = establish(isn=isn, irs=irs, options=options)
    window = ack.window << (our_window_shift() if scaled else 0)
    connection.on_packet(from_server(0.06, "R", irs + 1 + offset, 0), 0.06)
    assert connection.done == (0 <= offset < window)


def test_rst_ack_to_the_syn_with_the_right_ack_ends_it():
    connection = new_connection()
    connection.start(0.0)
    assert connection.on_packet(from_server(0.05, "RA", 0, ISN + 1, win=0), 0.05) == []
    assert connection.done and connection.progress.reset_at == 0.05
    assert connection.on_timer(1.0) == [] and connection.on_timer(100.0) == []
    assert connection.progress.syn_sent == 1


@pytest.mark.parametrize("flags, ack", [("RA", ISN), ("RA", ISN + 2), ("RA", 0), ("R", ISN + 1)])
def test_reset_to_the_syn_without_the_right_ack_is_ignored(flags, ack):
    # RFC 9293 3.10.7.3: in SYN-SENT a RST counts only with an ACK of our SYN.
    connection = new_connection()
    connection.start(0.0)
    assert connection.on_packet(from_server(0.05, flags, 0, ack), 0.05) == []
    assert not connection.done
    [(_, [syn])] = fire_timers(connection, until=1.5)
    assert syn.flags == "S"


# --- sequence wrap-around ------------------------------------------------------------------------


@hsettings(max_examples=300)
@given(isn=near_wrap, irs=near_wrap, rtt=st.floats(0.0005, 0.5))
def test_whole_exchange_across_the_sequence_wrap(isn, irs, rtt):
    connection = new_connection(isn=isn, reader=head_reader())
    [syn] = connection.start(0.0)
    assert syn.seq == isn
    ack, request = connection.on_packet(from_server(rtt, "SA", irs, seq(isn + 1), options=SERVER_SYN_OPTIONS),
                                        rtt)
    assert (ack.seq, ack.ack) == (seq(isn + 1), seq(irs + 1))
    assert (request.seq, request.ack) == (seq(isn + 1), seq(irs + 1))
    end_of_request = seq(isn + 1 + len(REQUEST))
    t = 2 * rtt
    assert connection.on_packet(from_server(t, "A", seq(irs + 1), end_of_request), t) == []
    assert connection.progress.request_acked
    assert all(segments == [] for _, segments in fire_timers(connection, until=t + 5))  # nothing to resend
    out = connection.on_packet(from_server(t, "PA", seq(irs + 1), end_of_request, payload=HEAD_RESPONSE), t)
    response_end = seq(irs + 1 + len(HEAD_RESPONSE))
    assert [(set(s.flags), s.seq, s.ack) for s in out if "F" in s.flags] == [({"F", "A"}, end_of_request,
                                                                            response_end)]
    out = connection.on_packet(from_server(t + rtt, "FA", response_end, seq(end_of_request + 1)), t + rtt)
    assert [(s.flags, s.seq, s.ack) for s in out] == [("A", seq(end_of_request + 1), seq(response_end + 1))]
    assert connection.progress.closed_politely and connection.done
