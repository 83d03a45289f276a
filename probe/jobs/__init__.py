"""What a run makes of its measurements, and keeps: `locating` (check, trace and batch place the
box an exchange points at, and the report's sections for it), `targets` (batch's list, each
finished exchange judged, the tally) and `store` (the history in SQLite or PostgreSQL, and what
changed).

May import: the shared vocabulary, `probe.engine`, `probe.protocol`, `probe.network`,
`probe.render`, and itself. Never the commands.
"""
