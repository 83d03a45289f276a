"""In-path censor that drops the request and answers it with a block page in the server's name.

Imitates HTTP block-page injectors (e.g. India's ISPs, Yadav et al., "Where The Light Gets In",
IMC 2018; Iran's and Turkey's filters in OONI reports): the request never reaches the server;
the client receives a `403 Forbidden` page in one FIN/PSH/ACK segment, seq = the client's ack,
ack = the end of the request, with the box's TTL (64) and IP-ID. Retransmissions of the trigger
are dropped too.

Over TLS (`--port 443 --match sni`), the trigger is the ClientHello's server name, and the box
answers in one of two ways issue #14 names for filtering firewalls on port 443 (OONI's
`sni_blocking` test counts any such failed handshake as blocking; Ververis et al.,
"Understanding Internet Censorship in Europe: The Case of Spain", WebSci 2021, found Fortinet
and Allot boxes behind Spanish ISPs' blocking, the Allot box answering HTTPS for blocked names
itself). `--answer page` sends the same plaintext HTTP 403 page, which a TLS client reads as a
broken record ("wrong version number"). `--answer tls-alert` sends one 7-byte TLS record, a
fatal handshake_failure alert (content type 21, version 3.3, length 2, level 2, description 40;
RFC 8446 6), with FIN, in the server's name instead of a ServerHello; its bytes follow the RFC,
not a published capture of a device (none was found).
"""

from . import _common, _packets

BODY = (b"<html><head><title>403 Forbidden</title></head>\n"
        b"<body><h1>Access denied</h1><p>This site is blocked.</p></body></html>\n")
PAGE = (b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\n"
        b"Content-Length: " + str(len(BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + BODY)
ALERT, TLS_1_2, FATAL, HANDSHAKE_FAILURE = 21, b"\x03\x03", 2, 40
TLS_ALERT = bytes([ALERT]) + TLS_1_2 + b"\x00\x02" + bytes([FATAL, HANDSHAKE_FAILURE])
ANSWERS = {"page": PAGE, "tls-alert": TLS_ALERT}


def main() -> None:
    p = _common.parser("blockpage", __doc__, queue=14, sni=True, where="forward")
    p.add_argument("--answer", choices=tuple(ANSWERS), default="page",
                   help="page: an HTTP 403 block page; tls-alert: a fatal TLS handshake_failure alert")
    args = p.parse_args()
    answer = ANSWERS[args.answer]
    sender = _common.RawSender()
    answered = _common.FlowMemory()

    def on_trigger(packet) -> None:
        req = _packets.parse(packet.get_payload())
        if _common.is_new_connection(req):  # a new connection on a four-tuple answered before
            answered.forget(req.flow)
            packet.accept()
            return
        if req is None or not _common.is_trigger(req.payload, args.trigger, args.match):
            packet.accept()
            return
        packet.drop()
        if req.flow in answered:
            return  # a retransmission: already answered
        answered.put(req.flow)
        sender.send(_packets.forged(req.dst, req.src, req.dport, req.sport, seq=req.ack,
                                    ack=req.end_seq, flags="FPA", window=req.window, payload=answer))

    table, chain = _common.hook(args.where)
    spec = ["-p", "tcp", "--dport", str(args.port), *_common.string_match(args.trigger),
            *_common.nfqueue(args.queue)]
    _common.main_queue("blockpage", args.queue, on_trigger,
                       [(table, chain, spec), _common.new_connection_rule(args.where, args.port, args.queue)])


if __name__ == "__main__":
    main()
