"""On-path injector in the GFW's "type II" style: three identical RST/ACKs toward the client.

Imitates the reset injector that Wang et al., "Your State is Not Mine: A Closer Look at Evading
Stateful Internet Censorship" (IMC 2017, section 2.1) call the GFW's type-2 resets, and that
Wu, Zohaib et al., "A Wall Behind A Wall: Emerging Regional Censorship in China" (IEEE S&P 2025)
list among its fingerprints: on seeing the offending request, the device sends RST/ACKs toward
the client that are copies of one another (same sequence and acknowledgement numbers, same
IP-ID, same TTL, same window), with DF set. Here: three copies, seq = the client's ack (the
server's next byte), ack = the end of the request, one random IP-ID per trigger, DF set, the
TTL the box chooses (`--ttl`, default the box's own stack's 64), the request's window. The
copies leave before the request is released (so they win even without path delay); the request
passes on to the server, whose real answer arrives a round trip later. Nothing is sent toward
the server. Hooked in mangle PREROUTING, as a tap that also sees TTL-limited copies.
"""

from . import _common, _packets

COPIES = 3


def main() -> None:
    p = _common.parser("gfwdup", __doc__, queue=19, where="prerouting")
    p.add_argument("--ttl", type=int, default=_common.BOX_TTL, help="TTL of the forged resets (default %(default)s)")
    args = p.parse_args()
    sender = _common.RawSender()

    def on_trigger(packet) -> None:
        req = _packets.parse(packet.get_payload())
        if req is not None and _common.is_trigger(req.payload, args.trigger):
            reset = bytes(_packets.forged(req.dst, req.src, req.dport, req.sport, seq=req.ack, ack=req.end_seq,
                                          flags="RA", window=req.window, ttl=args.ttl,
                                          ip_id=_packets.random_ip_id(), df=True))
            for _ in range(COPIES):
                sender.send(reset)
        packet.accept()

    table, chain = _common.hook(args.where)
    spec = ["-p", "tcp", "--dport", str(args.port), *_common.string_match(args.trigger),
            *_common.nfqueue(args.queue)]
    _common.main_queue("gfwdup", args.queue, on_trigger, [(table, chain, spec)])


if __name__ == "__main__":
    main()
