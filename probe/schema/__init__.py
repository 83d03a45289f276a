"""The JSON contract (`probe-1.schema.json`), shipped with the package: `schema_path()` finds it."""

from __future__ import annotations

from pathlib import Path


def schema_path() -> Path:
    return Path(__file__).resolve().parent / "probe-1.schema.json"
