"""In-path injector that swallows the request and aborts the connection with the server's face.

Imitates an injector built to defeat the detectors of Weaver, Sommer and Paxson, "Detecting
Forged TCP Reset Packets" (NDSS 2009), which tell a forged reset from a genuine one by a TTL
unlike the server's packets, an IP-ID outside the server's sequence, and a reset that races the
server's own answer: this box copies the server's fingerprint and leaves nothing to race.
It watches the server's packets of each flow as they pass this router; the request (a trigger
segment) is dropped, and a few milliseconds later (`--delay-ms`) one RST/ACK leaves in the
server's name, shaped like a Linux server's application abort (`tcp_send_active_reset`):
- seq = the client's ack (the server's next byte), ack = the end of the request;
- window = what a Linux server advertises once the handshake is over: the SYN-ACK's window
  rounded up to the server's window-scale unit and scaled (a SYN-ACK carries WScale only if the
  SYN did, RFC 7323);
- TTL = the TTL the server's packets leave this router with (seen TTL - 1 in PREROUTING, where
  the router has not decremented it yet; as seen in FORWARD), so both arrive alike;
- DF as in the server's packets; IP-ID = the last server IP-ID seen + 1.
Nothing is sent toward the server, and later trigger segments of the flow are dropped too.
Only timing gives it away: its answer arrives well under one round trip after the request.
"""

import threading

from scapy.layers.inet import TCP

from . import _common, _packets

DELAY_MS = 3.0  # the held-out real case answered 2.8 ms after the request, on a 52 ms path


def linux_window(synack_window: int, wscale: int | None) -> int:
    """The window field of a Linux server's segments after its SYN-ACK: the receive window is
    rounded up to the scale unit (`tcp_select_window`), then shifted."""
    if wscale is None:
        return synack_window
    unit = 1 << min(wscale, 14)
    return min(-(-synack_window // unit), 0xFFFF)


def wscale_of(data: bytes) -> int | None:
    """The window-scale option of a TCP segment, if it carries one."""
    for name, value in _packets.ip_layer(data)[TCP].options:
        if name == "WScale":
            return int(value)
    return None


def parser():
    p = _common.parser("copycat", __doc__, queue=18, where="forward")
    p.add_argument("--delay-ms", type=float, default=DELAY_MS,
                   help="how long after the request the forged abort leaves (default %(default)s)")
    return p


def main() -> None:
    args = parser().parse_args()
    sender = _common.RawSender()
    server_look = _common.FlowMemory()  # flow (client side first) -> (ttl leaving here, df, ip_id, window)
    answered = _common.FlowMemory()
    decrement = 1 if args.where == "prerouting" else 0
    delay = args.delay_ms / 1000

    def on_packet(packet) -> None:
        data = packet.get_payload()
        seg = _packets.parse(data)
        if seg is None:
            packet.accept()
        elif seg.sport == args.port:  # server -> client: remember how the server's packets look
            window = linux_window(seg.window, wscale_of(data)) if "S" in seg.flags else seg.window
            server_look.put(seg.reverse_flow, (max(seg.ttl - decrement, 1), seg.df, seg.ip_id, window))
            packet.accept()
        elif _common.is_trigger(seg.payload, args.trigger):
            packet.drop()
            if seg.flow in answered:
                return  # a retransmission or another segment of an answered request
            answered.put(seg.flow)
            ttl, df, ip_id, window = server_look.get(seg.flow, (_common.BOX_TTL, False, None, seg.window))
            abort = _packets.forged(seg.dst, seg.src, seg.dport, seg.sport, seq=seg.ack, ack=seg.end_seq,
                                    flags="RA", window=window, ttl=ttl, df=df,
                                    ip_id=None if ip_id is None else ip_id + 1)
            threading.Timer(delay, sender.send, (bytes(abort),)).start()
        else:
            packet.accept()

    _common.main_queue("copycat", args.queue, on_packet,
                       _common.server_and_trigger_rules(args.where, args.port, args.trigger, args.queue))


if __name__ == "__main__":
    main()
