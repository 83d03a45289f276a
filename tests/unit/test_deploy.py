"""The deployment files in deploy/ work as written: the systemd units pass `systemd-analyze
verify` without a warning, the Kubernetes manifest passes `kubernetes-validate --strict`, and
the `probe` command each of them runs parses with the real command line and takes the history's
URL and the vantage name from the environment they set."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_batch_readme import parse

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def env_file() -> dict:
    lines = (DEPLOY / "systemd" / "probe.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def service_option(name: str) -> str:
    [line] = [line for line in (DEPLOY / "systemd" / "probe-batch.service").read_text().splitlines()
              if line.startswith(f"{name}=")]
    return line.split("=", 1)[1]


def test_systemd_units_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("needs systemd-analyze (Debian's systemd package)")
    service = (DEPLOY / "systemd" / "probe-batch.service").read_text()
    service = service.replace("/usr/local/bin/probe", f"{sys.executable} -m probe")
    service = service.replace("/etc/probe/probe.env", str(DEPLOY / "systemd" / "probe.env"))
    (tmp_path / "probe-batch.service").write_text(service)
    shutil.copy(DEPLOY / "systemd" / "probe-batch.timer", tmp_path)
    done = subprocess.run([analyze, "verify", str(tmp_path / "probe-batch.service"),
                           str(tmp_path / "probe-batch.timer")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_the_service_runs_a_batch_that_takes_the_url_from_its_environment_file():
    argv = shlex.split(service_option("ExecStart"))
    assert argv[0] == "/usr/local/bin/probe"
    parse(argv[1:])
    assert not any(word.startswith("postgres") for word in argv)  # the URL is not on the command line
    assert service_option("EnvironmentFile") == "/etc/probe/probe.env"
    settings = env_file()
    assert settings["PROBE_HISTORY"].startswith("postgresql://") and settings["PROBE_VANTAGE"]
    assert service_option("SuccessExitStatus") == "4"


def test_batch_and_history_read_the_environment_the_deployments_set():
    from typer.main import get_command

    from probe.cli import app

    group = get_command(app)
    for command, names in (("batch", {"PROBE_HISTORY", "PROBE_VANTAGE"}), ("history", {"PROBE_HISTORY"})):
        envvars = {param.envvar for param in group.commands[command].params if param.envvar}
        assert names <= envvars, command


def test_the_cronjob_manifest_validates():
    validate = shutil.which("kubernetes-validate")
    if validate is None:
        pytest.skip("needs kubernetes-validate (pip install kubernetes-validate; .ci/run does)")
    done = subprocess.run([validate, "--strict", "--quiet", str(DEPLOY / "kubernetes" / "probe-cronjob.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_cronjob_has_what_the_probe_needs():
    yaml = pytest.importorskip("yaml")
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "probe-cronjob.yaml").read_text()))
    [cronjob] = [d for d in documents if d["kind"] == "CronJob"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    [container] = pod["containers"]
    assert container["command"] == ["probe"]
    parse(container["args"])
    capabilities = container["securityContext"]["capabilities"]
    assert capabilities == {"drop": ["ALL"], "add": ["NET_RAW", "NET_ADMIN"]}
    assert container["securityContext"]["runAsUser"] == 0  # added capabilities take effect for root only
    [secret] = [d for d in documents if d["kind"] == "Secret"]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert secret["stringData"]["PROBE_HISTORY"].startswith("postgresql://")
    assert {e["name"] for e in container["env"]} == {"PROBE_VANTAGE"}
