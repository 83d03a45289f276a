"""A lossy, duplicating path: genuine retransmissions and duplicates, nothing forged.

Not a censor: the control case every interference heuristic must survive (packet loss and
duplication on real paths, Paxson, "End-to-End Internet Packet Dynamics", SIGCOMM 1997). For
each flow it drops the first transmission of the client's first data segment (the client's
retransmission passes) and sends the server's first data segment twice (the copy is the very
same packet, TTL as it leaves this router).
"""

from . import _common, _packets


def main() -> None:
    args = _common.parser("lossy", __doc__, queue=17, where="forward",
                          uses_trigger=False).parse_args()
    sender = _common.RawSender()
    dropped = _common.FlowMemory()      # flows whose first client data segment was dropped
    duplicated = _common.FlowMemory()   # flows whose first server data segment was doubled
    not_yet_decremented = 1 if args.where == "prerouting" else 0  # FORWARD sees TTL - 1

    def on_packet(packet) -> None:
        data = packet.get_payload()
        seg = _packets.parse(data)
        if seg is None or not seg.payload:
            packet.accept()
        elif seg.dport == args.port and seg.flow not in dropped:
            dropped.put(seg.flow)
            packet.drop()
        elif seg.sport == args.port and seg.reverse_flow not in duplicated:
            duplicated.put(seg.reverse_flow)
            packet.accept()
            sender.send(_packets.with_fresh_checksums(data, ttl_decrement=not_yet_decremented))
        else:
            packet.accept()

    table, chain = _common.hook(args.where)
    port = str(args.port)
    rules = [(table, chain, ["-p", "tcp", "--dport", port, *_common.nfqueue(args.queue)]),
             (table, chain, ["-p", "tcp", "--sport", port, *_common.nfqueue(args.queue)])]
    _common.main_queue("lossy", args.queue, on_packet, rules)


if __name__ == "__main__":
    main()
