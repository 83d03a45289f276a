"""The server's face as a box on its path sees it: the TTL its packets leave this router with,
DF, the last IP-ID and the window, per flow (for boxes that forge in the server's name and copy
what they can). Shared by `quantum` and `mimicpage`; `copycat` keeps its own copy of the idea."""

from __future__ import annotations

from dataclasses import dataclass

from . import _common, _packets
from .copycat import linux_window, wscale_of


@dataclass(frozen=True)
class Face:
    ttl: int  # as the server's packets leave this router
    df: bool
    ip_id: int | None  # the last one seen, None before any
    window: int


class ServerFaces:
    """Remembers, per flow (client side first), how the server's last packet looked."""

    def __init__(self, where: str):
        self.decrement = 1 if where == "prerouting" else 0  # PREROUTING sees the TTL before the router's decrement
        self.memory = _common.FlowMemory()

    def learn(self, seg: _packets.Segment, data: bytes) -> None:
        window = linux_window(seg.window, wscale_of(data)) if "S" in seg.flags else seg.window
        self.memory.put(seg.reverse_flow, Face(max(seg.ttl - self.decrement, 1), seg.df, seg.ip_id, window))

    def of(self, request: _packets.Segment) -> Face:
        """The face for the flow of a client->server segment (the box's own, if none was seen)."""
        return self.memory.get(request.flow, Face(_common.BOX_TTL, False, None, request.window))

    def forged_answer(self, request: _packets.Segment, *, flags: str, payload: bytes = b""):
        """A packet in the server's name answering `request`, with the server's TTL, DF, next IP-ID
        and window, at the server's next sequence number, acknowledging the request."""
        face = self.of(request)
        return _packets.forged(request.dst, request.src, request.dport, request.sport, seq=request.ack,
                               ack=request.end_seq, flags=flags, window=face.window, ttl=face.ttl, df=face.df,
                               ip_id=None if face.ip_id is None else face.ip_id + 1, payload=payload)
