"""The README's `probe batch` section works as written: every `probe` command in it (the
examples, the crontab line, the systemd service) parses with the real command line, the
crontab line has cron's fields, and `systemd-analyze verify` accepts the two units."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text()
    return text[text.index("## Many targets"):text.index("## The lab (")]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section(), re.S)


def parse(argv: list[str]) -> None:
    """Let the real command line parse `probe ARGS` (nothing runs)."""
    from typer.main import get_command

    from probe.cli import app

    group = get_command(app)
    context = group.make_context("probe", list(argv))
    command = group.get_command(context, argv[0])
    assert command is not None, argv
    command.make_context(argv[0], list(argv[1:]), parent=context)


def probe_commands() -> list[list[str]]:
    commands = []
    for block in blocks("sh") + blocks("cron") + blocks("ini"):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("ExecStart="):
                line = line.removeprefix("ExecStart=")
            words = shlex.split(line) if line and not line.startswith("#") else []
            for start, word in enumerate(words):
                if word == "probe" or word.endswith("bin/probe"):
                    rest = words[start + 1:]
                    # leave out shell redirections (`< FILE`, `> FILE`)
                    commands.append([w for i, w in enumerate(rest) if w not in ("<", ">")
                                     and (i == 0 or rest[i - 1] not in ("<", ">"))])
                    break
    return commands


def test_the_section_has_what_the_issue_asks_for():
    kinds = [c[0] for c in probe_commands()]
    assert kinds.count("batch") >= 4 and "history" in kinds
    assert len(blocks("cron")) == 1 and len(blocks("ini")) == 2


@pytest.mark.parametrize("argv", probe_commands(), ids=lambda argv: " ".join(argv)[:60])
def test_every_probe_command_parses(argv):
    parse(argv)


def test_crontab_line_has_cron_fields_and_a_working_path():
    lines = [line for line in blocks("cron")[0].splitlines() if line and not line.startswith("#")]
    path = [line for line in lines if line.startswith("PATH=")]
    assert path and "/usr/local/bin" in path[0] and "/usr/sbin" in path[0]  # probe, and nft for the guard
    [job] = [line for line in lines if not line.startswith("PATH=")]
    minute, hour, day, month, weekday, user, *command = job.split()
    assert (minute, hour, day, month, weekday, user) == ("*/5", "*", "*", "*", "*", "root")
    assert command[:3] == ["flock", "-n", "/run/probe-batch.lock"] and command[3] == "probe"
    assert "--alert-on-change" in command and "--history" in command


def test_systemd_units_verify(tmp_path):
    analyze, probe = shutil.which("systemd-analyze"), shutil.which("probe")
    if analyze is None or probe is None:
        pytest.skip("needs systemd-analyze and an installed probe")
    service, timer = blocks("ini")
    (tmp_path / "probe-batch.service").write_text(service.replace("/usr/local/bin/probe", probe))
    (tmp_path / "probe-batch.timer").write_text(timer)
    done = subprocess.run([analyze, "verify", str(tmp_path / "probe-batch.service"), str(tmp_path / "probe-batch.timer")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "SuccessExitStatus=4" in service and "StateDirectory=probe" in service
