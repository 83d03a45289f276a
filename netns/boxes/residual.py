"""A censor with residual blocking: after a trigger it blocks the (client, server, port) 3-tuple
for a while, whatever the later connections carry.

Imitates the GFW's "penalty box": after a censored HTTP request, later connections from the
same client to the same server and port are blocked for about 90 s even without a keyword,
other ports and servers unaffected (Rambert et al., "Chinese Wall or Swiss Cheese? Keyword
filtering in the Great Firewall of China", WWW 2021); after an ESNI ClientHello the client's
packets to the same 3-tuple are dropped for 120 or 180 s (GFW Report, iYouPort and U. Maryland,
"Exposing and Circumventing China's Censorship of ESNI", 2020); Clayton, Murdoch and Watson
("Ignoring the Great Firewall of China", PET 2006) saw the blocking period answered with forged
resets. CenTrace (Sundara Raman et al., CoNEXT 2022) waits between its runs because of it.

`--duration S` sets the block (90 s by default, the GFW's; tests use ~20 s). `--mode`:
- `reset`: the trigger segment is dropped and reset both ways (the tap's burst, in the box's own
  TTL); during the block, a client SYN is answered with a RST/ACK in the server's name (it looks
  like a closed port) and any other client segment with a bare RST at its ack; nothing of the
  client's reaches the server;
- `drop`: the trigger segment and, during the block, every client segment to the 3-tuple are
  dropped silently (the ESNI behaviour).

Every client-to-server segment of the port goes through the queue (the block must see SYNs);
the server's packets are left alone. A trigger seen during a block is blocked like anything else
and does not extend it. `--where prerouting` also sees TTL-limited copies before the router's
TTL check (an on-path position), `forward` (the default) only what this router forwards.
"""

import time

from . import _common, _packets


def main() -> None:
    parser = _common.parser("residual", __doc__, queue=25, sni=True, where="forward")
    parser.add_argument("--duration", type=float, default=90.0,
                        help="seconds the 3-tuple stays blocked after a trigger (default 90, the GFW's)")
    parser.add_argument("--mode", choices=("reset", "drop"), default="reset",
                        help="reset: forged resets (a SYN draws a RST/ACK); drop: silent drops")
    args = parser.parse_args()
    if args.duration <= 0:
        parser.error("--duration must be positive")
    sender = _common.RawSender()
    blocked_until = _common.FlowMemory()  # (client, server, port) -> monotonic time the block ends

    def on_client_segment(packet) -> None:
        seg = _packets.parse(packet.get_payload())
        if seg is None:
            packet.accept()
            return
        three_tuple = (seg.src, seg.dst, seg.dport)
        now = time.monotonic()
        if blocked_until.get(three_tuple, 0.0) > now:
            packet.drop()
            if args.mode == "reset":
                if "S" in seg.flags:
                    sender.send(_packets.forged(seg.dst, seg.src, seg.dport, seg.sport, seq=0, ack=seg.seq + 1,
                                                flags="RA"))
                elif "R" not in seg.flags:
                    sender.send(_packets.forged(seg.dst, seg.src, seg.dport, seg.sport, seq=seg.ack, flags="R"))
            return
        if not _common.is_trigger(seg.payload, args.trigger, args.match):
            packet.accept()
            return
        blocked_until.put(three_tuple, now + args.duration)
        packet.drop()
        if args.mode == "reset":
            for forged in [*_packets.burst_toward_client(seg), *_packets.burst_toward_server(seg)]:
                sender.send(forged)

    table, chain = _common.hook(args.where)
    spec = ["-p", "tcp", "--dport", str(args.port), *_common.nfqueue(args.queue)]
    _common.main_queue("residual", args.queue, on_client_segment, [(table, chain, spec)])


if __name__ == "__main__":
    main()
