"""A fleet of targets in one lab, for `probe batch`: the boxes, the target list, the verdict
each target must get, and a tcpdump capture to hold the batch's own records against.

Kinds of target (all on the lab's one server, 203.0.113.80, unless said):

    clean      http://www.example.com/        :80    nginx                     clean
    closed     http://www.example.com:81/     :81    nothing listens           server-reset
    abort      http://www.example.com:8080/   :8080  the aborting application  server-reset
    blockpage  http://blocked.example/        :80    block page box at r2      middlebox-response, to-client, hop 2
    firewall   http://www.example.com:8081/   :8081  REJECT box at r2          middlebox-reset, to-client, hop 2
    vip        http://www.example.com/        203.0.113.100:80, NAT box at r4  clean

The boxes touch only their own traffic (the block page only requests naming blocked.example,
the firewall only SYNs to port 8081, the NAT only the VIP), so they can share a lab with
other tests, and `start_boxes` returns them for `Lab.stop`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from netns.lab import Lab

VIP = "203.0.113.100"
FIREWALL_PORT = 8081
TCPDUMP_READY_TIMEOUT = 10.0


@dataclass(frozen=True)
class Kind:
    name: str
    url: str
    resolve: str  # HOST:PORT:ADDR
    expect: tuple  # (verdict, direction, hop)


KINDS = (
    Kind("clean", "http://www.example.com/", "www.example.com:80:203.0.113.80", ("clean", None, None)),
    Kind("closed", "http://www.example.com:81/", "www.example.com:81:203.0.113.80", ("server-reset", None, None)),
    Kind("abort", "http://www.example.com:8080/", "www.example.com:8080:203.0.113.80", ("server-reset", None, None)),
    Kind("blockpage", "http://blocked.example/", "blocked.example:80:203.0.113.80",
         ("middlebox-response", "to-client", 2)),
    Kind("firewall", f"http://www.example.com:{FIREWALL_PORT}/", f"www.example.com:{FIREWALL_PORT}:203.0.113.80",
         ("middlebox-reset", "to-client", 2)),
    Kind("vip", "http://www.example.com/", f"www.example.com:80:{VIP}", ("clean", None, None)),
)
KIND_BY_KEY = {(kind.url, kind.resolve.rsplit(":", 1)[1]): kind for kind in KINDS}


def start_boxes(lab: Lab) -> list[subprocess.Popen]:
    """The block page and the firewall at r2, the NAT on the last router."""
    def box(hop: int, name: str, *args: str) -> subprocess.Popen:
        return lab.spawn(lab.router_ns(hop), [sys.executable, "-m", f"netns.boxes.{name}", *args],
                         name=f"fleet-{name}")

    boxes = [box(2, "blockpage")]
    try:
        boxes.append(box(2, "firewall", "--port", str(FIREWALL_PORT)))
        boxes.append(box(lab.routers, "lb", "--vip", VIP))
    except BaseException:
        for proc in boxes:
            lab.stop(proc)
        raise
    return boxes


def target_lines(count: int, kinds=KINDS) -> list[str]:
    """`count` target lines, the kinds in turn, with a comment now and then."""
    lines = ["# a fleet of lab targets", ""]
    for i in range(count):
        kind = kinds[i % len(kinds)]
        lines.append(f"{kind.url} {kind.resolve}" + (f"  # {kind.name}" if i % 10 == 0 else ""))
    return lines


def kind_of(document: dict) -> Kind:
    target = document["target"]
    return KIND_BY_KEY[(target["url"], target["address"])]


def outcome(document: dict) -> tuple:
    return document["verdict"], document["direction"], document["hop"]


class Tcpdump:
    """tcpdump on the client's interface, listening before `__enter__` returns."""

    def __init__(self, lab: Lab, path: Path):
        self.lab, self.path = lab, path

    def __enter__(self) -> "Tcpdump":
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.lab.client_ns, "tcpdump", "-i", "c0", "-n", "-U",
                                      "--immediate-mode", "-B", "65536", "-s", "0", "-w", str(self.path),
                                      "tcp or icmp"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        deadline = time.monotonic() + TCPDUMP_READY_TIMEOUT
        line = b""
        while b"listening on" not in line:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"tcpdump did not start: {line!r}")
            line = self.proc.stderr.readline()  # tcpdump says "listening on" once its socket is bound
        return self

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace")

    def __exit__(self, *exc) -> None:
        self.stats = self.close()

    def records(self):
        import dpkt

        from probe.record import parse_ip

        with open(self.path, "rb") as handle:
            for t, frame in dpkt.pcap.Reader(handle):
                if len(frame) > 14 and frame[12:14] == b"\x08\x00":
                    record = parse_ip(frame[14:], t)
                    if record is not None:
                        yield record


def packet_key(src, dst, proto, sport, dport, flags, seq, ack, ip_id, length, icmp_type=None) -> tuple:
    return (src, dst, proto, sport, dport, flags, seq, ack, ip_id, length, icmp_type)


def _doc_key(p: dict) -> tuple:
    if p["proto"] == "tcp":
        return packet_key(p["src"], p["dst"], "tcp", p["sport"], p["dport"], p["flags"], p["seq"], p["ack"],
                          p["ip_id"], p["len"])
    return packet_key(p["src"], p["dst"], p["proto"], None, None, "", None, None, p["ip_id"], None, p.get("icmp_type"))


def _record_key(r) -> tuple:
    if r.proto == "tcp":
        return packet_key(r.src, r.dst, "tcp", r.sport, r.dport, r.flags, r.seq, r.ack, r.ip_id, r.length)
    return packet_key(r.src, r.dst, "icmp", None, None, "", None, None, r.ip_id, None, r.icmp_type)


def document_packets(documents) -> list[tuple]:
    return [_doc_key(p) for document in documents for p in document["packets"]]


def _flow_of(record, flows: set) -> tuple | None:
    if record.proto == "tcp":
        for key in ((record.src, record.sport, record.dst, record.dport), (record.dst, record.dport, record.src,
                                                                             record.sport)):
            if key in flows:
                return key
    elif record.proto == "icmp" and record.quoted is not None:
        key = (record.quoted.src, record.quoted.sport, record.quoted.dst, record.quoted.dport)
        if key in flows:
            return key
    return None


def _flow_key(document: dict) -> tuple:
    return (document["client"]["address"], document["client"]["port"], document["target"]["address"],
            document["target"]["port"])


def capture_packets(records, documents) -> list[tuple]:
    """The tcpdump packets of the documents' flows (the TTL sweeps' own packets left out)."""
    flows = {_flow_key(d) for d in documents if d.get("client")}
    return [_record_key(r) for r in records if _flow_of(r, flows) is not None]


def compare(documents, records) -> tuple[list, list, list]:
    """Each flow's packets in tcpdump's capture against its document, over the time the flow
    was being recorded (up to the packet the document ends with). Returns (packets tcpdump saw
    in that time that the document lacks, packets of the documents tcpdump never saw, packets
    tcpdump saw after the document's last one: what arrives once an exchange is over, which
    `probe check` does not record either)."""
    import collections

    by_flow = {_flow_key(d): d for d in documents if d.get("client")}
    seen: dict[tuple, list] = collections.defaultdict(list)
    for record in records:
        flow = _flow_of(record, by_flow.keys())
        if flow is not None:
            seen[flow].append(record)
    missed, invented, late = [], [], []
    for flow, document in by_flow.items():
        ours = collections.Counter(_doc_key(p) for p in document["packets"])
        wire = seen.get(flow, [])
        last = _doc_key(document["packets"][-1]) if document["packets"] else None
        ends = max((i for i, r in enumerate(wire) if _record_key(r) == last), default=len(wire) - 1)
        theirs = collections.Counter(_record_key(r) for r in wire[:ends + 1])
        missed += list((theirs - ours).elements())
        invented += list((ours - theirs).elements())
        late += [_record_key(r) for r in wire[ends + 1:]]
    return sorted(missed, key=str), sorted(invented, key=str), sorted(late, key=str)


def read_documents(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
