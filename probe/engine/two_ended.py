"""The verdict of one connection captured at both ends: what one end received that the other
never sent is forged, whatever its headers say. Pure reasoning over what the pairing found
(`probe.files.pair` lines up the two captures and lists the `Missing` packets).

Theory of operation. The proof from two ends overrides the signals of one: a packet that arrived
at the client in the server's name, while the server's capture was running and does not hold it,
was sent by something else (the method of Weaver, Sommer and Paxson, NDSS 2009, who confirmed
injected resets by their absence at the other end; and of every two-sided capture a support
engineer lines up by hand). A SYN-ACK the server never sent is the handshake answered in between:
a transparent proxy when the server saw the connection come from another address, a SYN proxy or
load balancer when it came from the client's own. A packet sent that never arrived is loss or a
swallow, not a forgery, and changes no verdict here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from probe.engine.model import Analysis, Attribution
from probe.record import PacketRecord


@dataclass(frozen=True)
class Missing:
    """A packet seen at one end that the other end's capture does not hold."""

    seen_at: str  # "client" or "server": the capture that holds it
    index: int  # its position in that capture's flow (0-based)
    packet: PacketRecord
    kind: str  # "forged" (received, never sent by the other end) or "never-arrived" (sent, never received)
    sentence: str


@dataclass(frozen=True)
class TwoEnded:
    """The pair's verdict, and each end's attributions with the forged packets blamed."""

    client_attributions: tuple[Attribution, ...]
    server_attributions: tuple[Attribution, ...]
    verdict: str
    direction: str | None
    explanation: str


def judge_two_ends(client: Analysis, server: Analysis, missing: Sequence[Missing],
                   client_address: str, client_address_at_server: str) -> TwoEnded:
    """`client` and `server`: each end's own analysis; `missing`: what the pairing found;
    `client_address` and `client_address_at_server`: the client as each end saw it (they differ
    behind a NAT or a proxy)."""
    blamed = {}
    for side, analysis in (("client", client), ("server", server)):
        attributions = list(analysis.attributions)
        other = "server" if side == "client" else "client"
        for m in missing:
            if m.seen_at == side and m.kind == "forged":
                attributions[m.index] = Attribution("middlebox", "high", (
                    f"the other end's capture does not hold it: never sent by the {other}",))
        blamed[side] = tuple(attributions)
    every_forged = [m for m in missing if m.kind == "forged"]
    forged = [m for m in every_forged if "R" in m.packet.flags or m.packet.length]
    handshake = [m for m in every_forged if m.seen_at == "client" and m.packet.has("SA")]
    proxied = bool(handshake) and client_address_at_server != client_address
    to_client = [m for m in forged if m.seen_at == "client"] + (handshake if proxied else [])
    to_server = [m for m in forged if m.seen_at == "server"]
    if forged or proxied:
        verdict = "middlebox-response" if proxied or any(m.packet.length and m.seen_at == "client" for m in forged) \
            else "middlebox-reset"
        direction = "both" if to_client and to_server else "to-client" if to_client else "to-server"
    else:
        verdict, direction = client.verdict, client.direction
    sentences = [m.sentence for m in missing]
    if handshake:
        sentences.insert(0, (f"A device in between answered the client's handshake (the server's capture holds no such "
                             f"SYN-ACK) and reached the server from {client_address_at_server}: a transparent proxy."
                             if proxied else "A device in front of the server answered the client's handshake and passed "
                             "the connection on from the client's own address: a SYN proxy or load balancer, "
                             "not a forgery of the answer."))
    if not every_forged:
        sentences.insert(0, "Every packet each end received was sent by the other end. " + client.explanation)
    return TwoEnded(blamed["client"], blamed["server"], verdict, direction, " ".join(sentences))
