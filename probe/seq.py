"""TCP sequence-number arithmetic: 32-bit numbers that wrap (RFC 9293 3.4; serial-number
arithmetic as RFC 1982 defines it). Shared by the client's state machine (`probe.protocol.tcp`) and the
engine, which must not depend on the client. Pure; imports nothing of the project."""

MOD32 = 1 << 32


def seq_add(a: int, b: int) -> int:
    return (a + b) % MOD32


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed number."""
    d = (a - b) % MOD32
    return d - MOD32 if d >= MOD32 // 2 else d
