"""Presentation, deciding nothing: JSON documents and packet tables (`report`), tables laid
out as tabulate's simple format (`table`), the flows of a capture (`flows`), the HTML report
for a ticket (`html`), colour (`colour`), what to do next (`advice`), and what monitoring
systems read (`monitor`).

May import: the shared vocabulary (`probe.record`, `probe.seq`, `probe.errors`, `probe.outcome`),
`probe.engine.model`, `probe.protocol` (to name what rode on a connection), and itself.
"""
