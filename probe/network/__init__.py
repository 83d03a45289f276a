"""The I/O on the wire: the one loop, its seam, and what runs through it.

`wire` (capture, raw sender, kernel clocks), `guard` (the nftables table that keeps the kernel
quiet), `target` (URL, name, address, route), `loop` (the one loop and the `Network` seam that
tests replace), and the loop's users: `single` (check: one exchange), `admission` (batch:
admission and pacing), `tracer` (trace copies and the residual watch), `sweeps` (TTL sweeps).
It measures; the engine judges.

May import: the shared vocabulary, `probe.protocol`, `probe.engine`, and itself. Never files,
jobs, render or commands.
"""
