"""One module per command. Each imports only typer and the standard library at the top, so
`probe --help` stays fast; the heavy modules are imported when the command runs."""
