"""probe: tell who sent a TCP reset, the server or a box in between."""

__version__ = "0.1.0"
