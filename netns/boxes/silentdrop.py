"""A censor that silently drops segments carrying the trigger: no reset, no ICMP, only timeouts.

Imitates the "null routing"/packet-dropping filters reported for HTTP keyword and Host
blocking (e.g. the drop-based blocking that CenTrace, CoNEXT 2022, locates by the hop after
which TTL-limited copies of the request stop drawing ICMP time-exceeded replies). The client
retransmits the request until it gives up.

With `--port 443 --match sni` it drops every ClientHello naming the trigger, as Russia's TSPU
does for SNI-blocked names (Xue et al., "TSPU: Russia's Decentralized Censorship System", IMC
2022: the in-path device drops the packets of a connection whose ClientHello names a blocked
domain) and the GFW for ESNI (GFW Report, iYouPort and U. Maryland, "Exposing and Circumventing
China's Censorship of ESNI", 2020: the client's packets to the server are dropped).

Bytes: rules only, an iptables `string` match and DROP. SNI: the string match preselects and a
queue reads the ClientHello (see _tls), dropping only a whole one that names the trigger.
"""

from . import _common, _packets


def main() -> None:
    args = _common.parser("silentdrop", __doc__, queue=24, sni=True, where="forward").parse_args()
    table, chain = _common.hook(args.where)
    selected = ["-p", "tcp", "--dport", str(args.port), *_common.string_match(args.trigger)]
    if args.match == "bytes":
        _common.main_rules_only("silentdrop", [(table, chain, [*selected, "-j", "DROP"])])
        return

    def on_candidate(packet) -> None:
        req = _packets.parse(packet.get_payload())
        if req is not None and _common.is_trigger(req.payload, args.trigger, args.match):
            packet.drop()
        else:
            packet.accept()

    _common.main_queue("silentdrop", args.queue, on_candidate,
                       [(table, chain, [*selected, *_common.nfqueue(args.queue)])])


if __name__ == "__main__":
    main()
