"""The network-namespace lab for probe: topology (`lab`), path delay (`delayline`), a
resetting server (`abort_server`) and middleboxes (`boxes`). Needs root."""

from netns.lab import Lab, LabError, CommandFailed, cleanup_stale, exit_on_signals

__all__ = ["Lab", "LabError", "CommandFailed", "cleanup_stale", "exit_on_signals"]
