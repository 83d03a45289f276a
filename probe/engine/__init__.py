"""The attribution engine: recorded packets in, origins and a verdict out. No I/O here."""

from probe.engine.model import Analysis, Attribution, Flow
from probe.engine.verdict import analyze_flow

__all__ = ["Analysis", "Attribution", "Flow", "analyze_flow"]
