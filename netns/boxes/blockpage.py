"""In-path censor that drops the request and answers it with a block page in the server's name.

Imitates HTTP block-page injectors (e.g. India's ISPs, Yadav et al., "Where The Light Gets In",
IMC 2018; Iran's and Turkey's filters in OONI reports): the request never reaches the server;
the client receives a `403 Forbidden` page in one FIN/PSH/ACK segment, seq = the client's ack,
ack = the end of the request, with the box's TTL (64) and IP-ID. Retransmissions of the trigger
are dropped too.
"""

from . import _common, _packets

BODY = (b"<html><head><title>403 Forbidden</title></head>\n"
        b"<body><h1>Access denied</h1><p>This site is blocked.</p></body></html>\n")
PAGE = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\n"
        b"Content-Length: " + str(len(BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + BODY)


def main() -> None:
    args = _common.parser("blockpage", __doc__, queue=14, where="forward").parse_args()
    sender = _common.RawSender()
    answered = _common.FlowMemory()

    def on_trigger(packet) -> None:
        req = _packets.parse(packet.get_payload())
        if req is None or not _common.is_trigger(req.payload, args.trigger):
            packet.accept()
            return
        packet.drop()
        if req.flow in answered:
            return  # a retransmission: already answered
        answered.put(req.flow)
        sender.send(_packets.forged(req.dst, req.src, req.dport, req.sport, seq=req.ack,
                                    ack=req.end_seq, flags="FPA", window=req.window, payload=PAGE))

    table, chain = _common.hook(args.where)
    spec = ["-p", "tcp", "--dport", str(args.port), *_common.string_match(args.trigger),
            *_common.nfqueue(args.queue)]
    _common.main_queue("blockpage", args.queue, on_trigger, [(table, chain, spec)])


if __name__ == "__main__":
    main()
