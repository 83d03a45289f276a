"""On-path injector (a tap): lets the request through and races the server with forged resets.

Imitates the Great Firewall's HTTP keyword resets: Clayton, Murdoch and Watson, "Ignoring the
Great Firewall of China" (PET 2006) saw it pass the offending packet and send resets both
ways; Weaver, Sommer and Paxson, "Detecting Forged TCP Reset Packets" (NDSS 2009) describe the
burst: a RST, then RST/ACKs at sequence offsets such as +1460 and +4380, non-zero windows, the
injector's own TTL and IP-IDs. CenTrace (Sundara Raman et al., CoNEXT 2022) finds such a box
at the hop where TTL-limited copies of the request first draw the resets; hooking mangle
PREROUTING lets this box see those copies before the router's TTL check drops them.

The burst toward the client leaves before the request is released (so it always wins the race,
even without path delay); the burst toward the server leaves just after the request, so its
first RST lands exactly at the server's next expected sequence number.

With `--port 443 --match sni` the trigger is the server name of a TLS ClientHello: the GFW's
SNI filter resets HTTPS the same way, both ways, right after the ClientHello (Chai et al., "On
the Importance of Encrypted-SNI (ESNI) to Censorship Circumvention", FOCI 2019; Bock et al.,
"Even Censors Have a Backup: Examining China's Double HTTPS Censorship Middleboxes", FOCI 2021),
and so do India's Jio and Airtel SNI filters (Grover and Singh, CIS India, 2019 and 2020: a RST
"almost immediately after" a ClientHello naming a blocked site).
"""

import threading

from . import _common, _packets

REPEAT_AFTER = 0.005  # seconds


def main() -> None:
    args = _common.parser("tap", __doc__, queue=12, sni=True, where="prerouting").parse_args()
    sender = _common.RawSender()

    def on_trigger(packet) -> None:
        req = _packets.parse(packet.get_payload())
        if req is None or not _common.is_trigger(req.payload, args.trigger, args.match):
            packet.accept()
            return
        toward_server = [bytes(forged) for forged in _packets.burst_toward_server(req)]
        for forged in _packets.burst_toward_client(req):
            sender.send(forged)
        packet.accept()
        for forged in toward_server:
            sender.send(forged)
        # Once more a few milliseconds later: released next to the request, the first burst can
        # reach the server's TCP before the request does and only draw a challenge ACK (RFC 5961).
        threading.Timer(REPEAT_AFTER, lambda: [sender.send(forged) for forged in toward_server]).start()

    table, chain = _common.hook(args.where)
    spec = ["-p", "tcp", "--dport", str(args.port), *_common.string_match(args.trigger),
            *_common.nfqueue(args.queue)]
    _common.main_queue("tap", args.queue, on_trigger, [(table, chain, spec)])


if __name__ == "__main__":
    main()
