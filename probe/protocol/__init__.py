"""The protocols, with no I/O: what the probe says and how it reads the answers.

`tcp` plays the client's TCP, `http` and `tls` what rides on it (sans-IO, in the manner of
h11), `exchange` one crafted connection's whole life from SYN to the last closing reset, and
`craft` the bytes of every packet the probe sends.

May import: the shared vocabulary (`probe.record`, `probe.seq`, `probe.errors`), the engine's
model (`probe.engine.model`), and itself. Never the network, files, jobs, render or commands.
"""
