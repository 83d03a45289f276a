"""`probe analyze FILE --write-pcap OUT`: a text capture's packets as a pcap, as text2pcap would write them."""

from __future__ import annotations

from probe.errors import ProbeError, UsageError


def write_text_capture(path: str, out: str) -> None:
    """Write the frames read from the text capture `path` to `out` (classic pcap, nanoseconds, the
    length on the wire kept for packets the snap length cut). One link type per file: when the
    text mixed them (-x and -xx rows), every frame is written from its IP header on (raw IP)."""
    from scapy.utils import RawPcapWriter

    from probe.files import text as textcap
    from probe.files.pcap import LINK_RAW, ip_payload

    if not textcap.is_text_file(path):
        raise UsageError(f"--write-pcap converts a text capture, and {path} is not text (a pcap or pcapng file is "
                         f"already what it would write)")
    frames = textcap.read_cached(path).frames
    linktypes = {frame.linktype for frame in frames}
    linktype = linktypes.pop() if len(linktypes) == 1 else LINK_RAW
    try:
        writer = RawPcapWriter(out, linktype=linktype, nano=True, snaplen=textcap.MAX_FRAME)
        writer.write_header(None)
        for frame in frames:
            data, wire = frame.data, frame.wire_len
            if frame.linktype != linktype:
                packet = ip_payload(frame.linktype, data)
                data, wire = packet, wire - (len(data) - len(packet))
            seconds = int(frame.t // 1)
            writer.write_packet(data, sec=seconds, usec=round((frame.t - seconds) * 1e9), caplen=len(data),
                                wirelen=wire)
        writer.close()
    except OSError as error:
        raise ProbeError(f"cannot write {out}: {error.strerror}") from None
