"""The field report's box: swallows the request and resets the server in the client's name.

Imitates the in-path device of /work/shared/field-report.md (see also the "in-path" censors
of CenTrace, CoNEXT 2022, which drop the offending packet instead of racing it). The first
trigger segment of a flow is dropped and one bare RST is forged toward the server with the
client's address, sequence = the request's sequence (exactly what the server expects next),
no data, the box's own TTL and IP-ID. The connection is remembered and every later segment of it
passes: the client's retransmission reaches a server that no longer knows the connection, and the
server answers it with a genuine bare RST. Nothing is ever sent toward the client. A new
connection on the same four-tuple (its SYN) is a new flow (`_common.new_connection_rule`).

With `--port 443 --match sni` the swallowed segment is a ClientHello naming the trigger: the
field report's device, met on HTTPS (issue #14); the in-path, stateful TSPU boxes of Russia
also act on the ClientHello's SNI before it reaches the server (Xue et al., "TSPU: Russia's
Decentralized Censorship System", IMC 2022).
"""

from . import _common, _packets


def main() -> None:
    args = _common.parser("swallow", __doc__, queue=13, sni=True, where="forward").parse_args()
    sender = _common.RawSender()
    swallowed = _common.FlowMemory()

    def on_trigger(packet) -> None:
        req = _packets.parse(packet.get_payload())
        if _common.is_new_connection(req):
            swallowed.forget(req.flow)
            packet.accept()
            return
        if (req is None or req.flow in swallowed
                or not _common.is_trigger(req.payload, args.trigger, args.match)):
            packet.accept()
            return
        swallowed.put(req.flow)
        packet.drop()
        sender.send(_packets.forged(req.src, req.dst, req.sport, req.dport, seq=req.seq, flags="R"))

    table, chain = _common.hook(args.where)
    spec = ["-p", "tcp", "--dport", str(args.port), *_common.string_match(args.trigger),
            *_common.nfqueue(args.queue)]
    _common.main_queue("swallow", args.queue, on_trigger,
                       [(table, chain, spec), _common.new_connection_rule(args.where, args.port, args.queue)])


if __name__ == "__main__":
    main()
