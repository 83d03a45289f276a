"""The two-ended verdict (`probe.engine.two_ended`), pure: what one end received that the other
never sent is forged; what one end sent that never arrived is not."""

from __future__ import annotations

from probe.engine.model import Analysis, Attribution
from probe.engine.two_ended import Missing, judge_two_ends
from probe.record import PacketRecord

CLIENT, SERVER, BEHIND_NAT = "192.0.2.10", "203.0.113.80", "198.51.100.7"


def analysis(verdict="clean", n=6, explanation="The server answered."):
    return Analysis(verdict, None, None, 50.0, tuple(Attribution("server") for _ in range(n)), explanation)


def packet(flags, length=0, toward_client=True):
    src, dst = (SERVER, CLIENT) if toward_client else (CLIENT, SERVER)
    return PacketRecord(1.0, src, dst, "tcp", 60, 0, True, 0, 40 + length, flags, 80 if toward_client else 40000,
                        40000 if toward_client else 80, payload=b"x" * length)


def missing(seen_at, index, p, kind="forged"):
    return Missing(seen_at, index, p, kind, f"#{index + 1} {kind}")


def test_a_reset_the_server_never_sent_is_a_middlebox_reset_toward_the_client():
    judged = judge_two_ends(analysis("server-reset"), analysis(), [missing("client", 4, packet("RA"))], CLIENT, CLIENT)
    assert (judged.verdict, judged.direction) == ("middlebox-reset", "to-client")
    assert judged.client_attributions[4].origin == "middlebox"
    assert [a.origin for a in judged.server_attributions] == ["server"] * 6


def test_forged_resets_at_both_ends_are_both_directions():
    judged = judge_two_ends(analysis(), analysis(), [missing("client", 4, packet("R")),
                                                     missing("server", 3, packet("R", toward_client=False))],
                            CLIENT, CLIENT)
    assert (judged.verdict, judged.direction) == ("middlebox-reset", "both")
    assert judged.server_attributions[3].origin == "middlebox"


def test_forged_data_toward_the_client_is_a_middlebox_response():
    judged = judge_two_ends(analysis(), analysis(), [missing("client", 3, packet("PA", 120))], CLIENT, CLIENT)
    assert (judged.verdict, judged.direction) == ("middlebox-response", "to-client")


def test_a_packet_lost_on_the_way_is_not_a_forgery():
    """The known false positive: a segment one end sent that never arrived (loss, or a swallow)
    is in `missing` too, and must change neither the verdict nor any attribution."""
    base = analysis("dropped")
    judged = judge_two_ends(base, analysis(), [missing("client", 2, packet("PA", 80, toward_client=False),
                                                       "never-arrived")], CLIENT, CLIENT)
    assert (judged.verdict, judged.direction) == ("dropped", None)
    assert judged.client_attributions == base.attributions
    assert judged.explanation.startswith("Every packet each end received was sent by the other end.")


def test_a_syn_ack_answered_in_between_is_a_proxy_only_when_the_server_saw_another_address():
    syn_ack = missing("client", 1, packet("SA"))
    proxied = judge_two_ends(analysis(), analysis(), [syn_ack], CLIENT, BEHIND_NAT)
    assert (proxied.verdict, proxied.direction) == ("middlebox-response", "to-client")
    assert "transparent proxy" in proxied.explanation
    # a SYN proxy or load balancer passes the connection on from the client's own address: the
    # SYN-ACK is still not the server's, but nothing was forged toward anyone
    syn_proxy = judge_two_ends(analysis(), analysis(), [syn_ack], CLIENT, CLIENT)
    assert (syn_proxy.verdict, syn_proxy.direction) == ("clean", None)
    assert "SYN proxy or load balancer" in syn_proxy.explanation
