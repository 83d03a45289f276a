"""On-path injector whose forged resets carry the TTL the trigger packet arrived with.

Some injectors seen in the wild build their reset from the offending packet's IP header, TTL
included, so the injected packet's TTL tracks the probe's own. A TTL-limited probe then
draws a reset whose TTL follows the probe's, not the path's. Otherwise this is the tap's burst
(one RST, RST/ACKs at +0/+1460/+4380), toward the client only; the request passes.
"""

from . import _common, _packets


def main() -> None:
    args = _common.parser("ttlprobe", __doc__, queue=16, where="prerouting").parse_args()
    sender = _common.RawSender()

    def on_trigger(packet) -> None:
        req = _packets.parse(packet.get_payload())
        if req is not None and _common.is_trigger(req.payload, args.trigger):
            for forged in _packets.burst_toward_client(req, ttl=req.ttl):
                sender.send(forged)
        packet.accept()

    table, chain = _common.hook(args.where)
    spec = ["-p", "tcp", "--dport", str(args.port), *_common.string_match(args.trigger),
            *_common.nfqueue(args.queue)]
    _common.main_queue("ttlprobe", args.queue, on_trigger, [(table, chain, spec)])


if __name__ == "__main__":
    main()
