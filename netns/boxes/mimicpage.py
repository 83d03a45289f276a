"""In-path censor that drops the request and answers with a block page wearing the server's face.

Imitates the HTTP block-page injectors of Yadav et al., "Where The Light Gets In: Analyzing Web
Censorship Mechanisms in India" (IMC 2018), which drop the request and answer in the server's
name, made as careful as the forged-reset detectors of Weaver, Sommer and Paxson (NDSS 2009)
force one to be: the page carries the TTL the server's packets leave this router with, their DF
bit, the last IP-ID seen + 1 and the server's window (see `_face`), at the server's next
sequence number, acknowledging the request. It leaves `--delay-ms` after the request (a
filter's lookup time); retransmissions of the request are dropped too, and the server never
sees it. Nothing arrives late to race: only timing gives it away.
"""

import threading

from . import _common, _face, _packets
from .blockpage import PAGE

DELAY_MS = 3.0


def main() -> None:
    p = _common.parser("mimicpage", __doc__, queue=22, where="forward")
    p.add_argument("--delay-ms", type=float, default=DELAY_MS,
                   help="how long after the request the page leaves (default %(default)s)")
    args = p.parse_args()
    sender = _common.RawSender()
    faces = _face.ServerFaces(args.where)
    answered = _common.FlowMemory()

    def on_packet(packet) -> None:
        data = packet.get_payload()
        seg = _packets.parse(data)
        if seg is None or not (seg.sport == args.port or _common.is_trigger(seg.payload, args.trigger)):
            packet.accept()
        elif seg.sport == args.port:
            faces.learn(seg, data)
            packet.accept()
        else:
            packet.drop()
            if seg.flow in answered:
                return
            answered.put(seg.flow)
            page = bytes(faces.forged_answer(seg, flags="FPA", payload=PAGE))
            threading.Timer(args.delay_ms / 1000, sender.send, (page,)).start()

    _common.main_queue("mimicpage", args.queue, on_packet,
                       _common.server_and_trigger_rules(args.where, args.port, args.trigger, args.queue))


if __name__ == "__main__":
    main()
