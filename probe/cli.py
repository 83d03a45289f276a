"""The command line: the typer app, its commands (one module each in `probe.commands`), and
the one place that turns every way of going wrong into a line on stderr and an exit code.

Heavy modules (scapy, the engine) are imported inside the commands, so `probe --help`
stays fast.
"""

from __future__ import annotations

import signal
import sys
import typer

from probe.commands import analyze as _analyze
from probe.commands import batch as _batch
from probe.commands import check as _check
from probe.commands import history as _history
from probe.commands import trace as _trace
from probe.commands.common import EXIT_FAILED, EXIT_USAGE, exit_code_for, say  # noqa: F401 (exit_code_for: API)
from probe.errors import ProbeError

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]},
                  help="Tell who sent a TCP reset: the server, or a box in between.")


def _print_version(value: bool) -> None:
    if value:
        from probe import __version__

        print(f"probe {__version__}")
        raise typer.Exit(0)


@app.callback()
def _commands(version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_print_version,
                                           help="print the version and exit")) -> None:
    """Tell who sent a TCP reset: the server, or a box in between."""


app.command(name="check")(_check.check)
app.command(name="batch")(_batch.batch)
app.command(name="history")(_history.history)
app.command(name="analyze")(_analyze.analyze)
app.command(name="trace")(_trace.trace)


class _Terminated(SystemExit):
    """SIGINT or SIGTERM, raised as SystemExit so every `finally` (the guard's) runs and no
    library turns it into something else (typer swallows KeyboardInterrupt)."""


def _on_signal(signum, frame):
    raise _Terminated(128 + signum)


def _as_plugin(args: list[str], message: str) -> None:
    """Under `--nagios`, a run that could not even start is the plugin's UNKNOWN (exit 3, status
    line on stdout): Nagios reads exit 2 as CRITICAL, which a typo in a check's definition is not."""
    if "--nagios" in args:
        from probe.render.monitor import UNKNOWN, nagios_unknown

        print(nagios_unknown(message), flush=True)
        say(f"probe: {message}")
        sys.exit(UNKNOWN)


def _as_document(args: list[str], message: str, code: int) -> None:
    """Under `--json`, a run that could not measure still prints one document, with `error`, so
    that a cron job reading stdout always has something to parse (batch's JSON lines do the same)."""
    if "--json" in args:
        import json

        from probe import __version__
        from probe.render.report import SCHEMA

        command = next((a for a in args if a in _COMMANDS), None)
        print(json.dumps({"schema": SCHEMA, "command": command, "version": __version__, "error": message,
                          "exit_code": code}, indent=2), flush=True)


_COMMANDS = ("check", "trace", "analyze", "batch", "history")


def main(argv: list[str] | None = None) -> None:
    """Entry point: one line on stderr and the contract's code for every way things go wrong."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    args = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--debug"]
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = app(args=args, prog_name="probe", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        say("probe: interrupted")
        sys.exit(130)
    except _Terminated as terminated:
        say("probe: interrupted" if terminated.code == 128 + signal.SIGINT else "probe: terminated")
        sys.exit(terminated.code)
    except ProbeError as error:
        if debug:
            raise
        _as_plugin(args, str(error))
        _as_document(args, str(error), error.exit_code)
        say(f"probe: {error}")
        sys.exit(error.exit_code)
    except OSError as error:
        if debug:
            raise
        say(f"probe: {error.strerror or error}")
        sys.exit(EXIT_FAILED)
    except Exception as error:
        if not (hasattr(error, "format_message") and hasattr(error, "exit_code")) or debug:
            raise
        # a usage error from typer's (vendored) click: one line instead of its usage block
        if type(error).__name__ == "NoArgsIsHelpError":
            say(error.ctx.get_help() if getattr(error, "ctx", None) else "usage: probe COMMAND --help")
        else:
            _as_plugin(args, error.format_message())
            _as_document(args, error.format_message(), EXIT_USAGE)
            context = getattr(error, "ctx", None)
            where = context.command_path if context is not None and context.command_path else "probe"
            say(f"probe: {error.format_message()} (see {where} --help)")
        sys.exit(EXIT_USAGE)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
