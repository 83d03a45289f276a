"""Colour and emphasis in the text people read: `--color=auto|always|never` and `NO_COLOR`.

As ls, grep and rich decide it: `never` is plain text; `always` colours even into a pipe (for
`less -R`); `auto` colours only a terminal, unless `NO_COLOR` is set to anything but the empty
string (no-color.org) or `TERM` is `dumb`. An explicit `--color=always` wins over `NO_COLOR`, as
the convention allows. Only three things are emphasised: the verdict, the packets forged by a box
in between, and the hop where it sits. The escape codes are rich's (`rich.style.Style`), added
after the layout, so column widths never count them.
"""

from __future__ import annotations

import os

MODES = ("auto", "always", "never")
STYLES = {  # role -> rich style
    "interference": "bold red",  # a verdict that blames a box in between
    "clean": "bold green",
    "failed": "bold yellow",  # the target failed on its own
    "forged": "red",  # a packet (a table row) forged by a box in between
    "hop": "bold",  # the hop of the box, and its row in a hop table
}
INTERFERENCE = {"middlebox-reset", "middlebox-response"}


class Paint:
    """`paint(text, role)`: `text` wrapped in the role's escape codes, or as it is when colour is off."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str, role: str) -> str:
        if not self.enabled or not text:
            return text
        from rich.style import Style
        from rich.color import ColorSystem

        return Style.parse(STYLES[role]).render(text, color_system=ColorSystem.STANDARD)

    def verdict(self, verdict: str) -> str:
        role = "interference" if verdict in INTERFERENCE else "clean" if verdict in ("clean", "expired") else "failed"
        return self(verdict, role)


PLAIN = Paint(False)


def paint_for(mode: str, stream) -> Paint:
    """The `Paint` of `--color=MODE` for text written to `stream`."""
    from probe.errors import UsageError

    if mode not in MODES:
        raise UsageError(f"--color {mode!r}: use auto, always or never")
    if mode != "auto":
        return Paint(mode == "always")
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return PLAIN
    isatty = getattr(stream, "isatty", None)
    return Paint(bool(isatty and isatty()))
