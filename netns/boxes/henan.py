"""On-path injector in the style of the "Henan firewall": one RST/ACK with a 10-byte payload.

Imitates the regional censor in Henan province described by Wu, Zohaib et al., "A Wall Behind
A Wall: Emerging Regional Censorship in China" (IEEE S&P 2025): on seeing a request for a
blocked host it injects a single RST/ACK toward the client only, which carries ten bytes of
data (01 02 03 04 05 06 07 08 09 00), IP-ID 1, no DF, and a fixed TTL; the offending request is
not dropped. Here: seq = the client's ack (the server's next byte), ack = the end of the request,
window = the request's, TTL fixed by `--ttl` (default 64: the box's own stack, sent as is). The
reset leaves before the request is released; the server's real answer arrives a round trip
later. Nothing is sent toward the server.
"""

from . import _common, _packets

PAYLOAD = bytes(range(1, 10)) + b"\x00"
IP_ID = 1


def main() -> None:
    p = _common.parser("henan", __doc__, queue=20, where="forward")
    p.add_argument("--ttl", type=int, default=_common.BOX_TTL, help="the fixed TTL (default %(default)s)")
    args = p.parse_args()
    sender = _common.RawSender()

    def on_trigger(packet) -> None:
        req = _packets.parse(packet.get_payload())
        if req is not None and _common.is_trigger(req.payload, args.trigger):
            sender.send(_packets.forged(req.dst, req.src, req.dport, req.sport, seq=req.ack, ack=req.end_seq,
                                        flags="RA", window=req.window, ttl=args.ttl, ip_id=IP_ID, df=False,
                                        payload=PAYLOAD))
        packet.accept()

    table, chain = _common.hook(args.where)
    spec = ["-p", "tcp", "--dport", str(args.port), *_common.string_match(args.trigger),
            *_common.nfqueue(args.queue)]
    _common.main_queue("henan", args.queue, on_trigger, [(table, chain, spec)])


if __name__ == "__main__":
    main()
