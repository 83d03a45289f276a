"""On-path injector that resets the server in the client's name and lets the request follow.

Imitates the server-side half of the GFW's keyword resets (Clayton, Murdoch and Watson,
"Ignoring the Great Firewall of China", PET 2006: resets to both ends, the offending packet
passed), as the field report's administrator would meet it (/work/shared/field-report.md)
when the device does not swallow the request: on seeing the request, one bare RST in the
client's name (seq = the request's own sequence number, exactly what the server expects next,
the box's TTL and IP-ID, no DF) leaves toward the server just before the request is released.
The server tears the connection down, and the request, arriving right behind, draws the
server's own reset for a connection it no longer has. Nothing is forged toward the client:
every packet the client receives is genuine, and no retransmission is needed to show it.
"""

from . import _common, _packets


def main() -> None:
    args = _common.parser("preempt", __doc__, queue=23, where="forward").parse_args()
    sender = _common.RawSender()
    reset = _common.FlowMemory()

    def on_trigger(packet) -> None:
        req = _packets.parse(packet.get_payload())
        if req is not None and _common.is_trigger(req.payload, args.trigger) and req.flow not in reset:
            reset.put(req.flow)
            sender.send(_packets.forged(req.src, req.dst, req.sport, req.dport, seq=req.seq, flags="R"))
        packet.accept()

    table, chain = _common.hook(args.where)
    spec = ["-p", "tcp", "--dport", str(args.port), *_common.string_match(args.trigger),
            *_common.nfqueue(args.queue)]
    _common.main_queue("preempt", args.queue, on_trigger, [(table, chain, spec)])


if __name__ == "__main__":
    main()
