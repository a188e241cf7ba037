"""site-config/: the systemd units pass `systemd-analyze verify`, the examples validate."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from flowbatch.config import SiteConfig
from flowbatch.configsrc import load
from flowbatch.queue import SETTLE_PATIENCE
from flowbatch.spec.schema import schema_for
from tests.services.apt import ensure_packages

REPO = Path(__file__).resolve().parent.parent
SITE_CONFIG = REPO / "site-config"
EXAMPLE_CONFIGS = sorted(SITE_CONFIG.glob("flowbatch-*.yaml"))
NO_ENV: dict[str, str] = {}  # the examples alone, whatever FLOWBATCH_* the test runner has


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    ensure_packages(["systemd"], commands=["systemd-analyze"])
    path = shutil.which("systemd-analyze")
    assert path
    return path


def _fake_binary(path: Path) -> None:
    """`verify` refuses an ExecStart that is not an executable file: give it one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


def _verify(cmd: list[str], unit: Path, env: dict[str, str]) -> None:
    proc = subprocess.run([*cmd, str(unit)], capture_output=True, text=True, env=env, timeout=60)
    # verify exits 0 on mere warnings (an unknown key, a bad value is "ignoring"): every
    # line that names the unit file counts as a failure here
    complaints = [line for line in proc.stderr.splitlines() if unit.name in line]
    assert proc.returncode == 0 and not complaints, proc.stderr


def test_system_unit_verifies(systemd_analyze: str, tmp_path: Path) -> None:
    text = (SITE_CONFIG / "flowbatch.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", text, re.M)
    assert exec_start and exec_start.group(1) == "/opt/flowbatch/bin/flowbatch"
    fake = tmp_path / "bin" / "flowbatch"
    _fake_binary(fake)
    unit = tmp_path / "flowbatch.service"  # only the binary's path differs from the shipped one
    unit.write_text(text.replace(exec_start.group(1), str(fake)))
    _verify([systemd_analyze, "verify"], unit, dict(os.environ))


def test_system_unit_settings() -> None:
    text = (SITE_CONFIG / "flowbatch.service").read_text()
    for line in (
        "Type=notify",
        "Restart=on-failure",
        "User=flowbatch",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/srv/flowbatch",
        # ProtectSystem=strict without PrivateTmp left /tmp read-only to every run
        # (found by review)
        "ReadWritePaths=/tmp /var/tmp",
        "CacheDirectory=flowbatch",  # compiled report templates, private to the daemon
        "CacheDirectoryMode=0700",
        "KillMode=process",  # a daemon restart must not kill detached runs
    ):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    # runs outlive a restart: a private /tmp would be removed under them (found by review)
    assert not re.search(r"^PrivateTmp=", text, re.M)
    # a stop waits up to SETTLE_PATIENCE for its last sync, then writes owed reports
    stop = re.search(r"^TimeoutStopSec=(\d+)s$", text, re.M)
    assert stop and int(stop.group(1)) > SETTLE_PATIENCE + 30


def test_user_unit_verifies(systemd_analyze: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    _fake_binary(home / ".local/flowbatch/bin/flowbatch")  # the unit's %h/... path
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    unit = tmp_path / "flowbatch.service"
    shutil.copy(SITE_CONFIG / "flowbatch-user.service", unit)
    _verify([systemd_analyze, "--user", "verify"], unit, env)


def test_verify_catches_a_broken_unit(systemd_analyze: str, tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    fake = tmp_path / "flowbatch"
    _fake_binary(fake)
    unit = tmp_path / "broken.service"
    unit.write_text(f"[Service]\nType=notify\nExecStart={fake}\nRestartt=on-failure\n")
    with pytest.raises(AssertionError):
        _verify([systemd_analyze, "verify"], unit, dict(os.environ))


def test_cron_line_runs_one_tick() -> None:
    lines = [
        line
        for line in (SITE_CONFIG / "flowbatch.cron").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) == 1
    fields = lines[0].split()
    assert all(re.fullmatch(r"[\d*/,-]+", f) for f in fields[:5])
    assert fields[5].endswith("/flowbatch") and "daemon --once" in lines[0]


def test_logrotate_example_names_the_cron_log() -> None:
    text = (SITE_CONFIG / "flowbatch.logrotate").read_text()
    cron = (SITE_CONFIG / "flowbatch.cron").read_text()
    log = re.search(r"^(/\S+) \{", text, re.M)
    assert log and f">>{log.group(1)}" in cron


def test_logrotate_example_rotates_a_cron_log(tmp_path: Path) -> None:
    """The shipped rule, run by a real logrotate on a log a tick appends to: the old
    lines in the rotated file, the next tick's in a new one (found by review: its `su`
    user could not open root's log, and the rule's comment argued the wrong way)."""
    import os
    import subprocess

    from .services.apt import ensure_packages

    if os.geteuid() != 0:
        pytest.skip("logrotate's su needs root")
    ensure_packages(["logrotate"], commands=["logrotate"])
    text = (SITE_CONFIG / "flowbatch.logrotate").read_text()
    assert "copytruncate" not in text and "create " in text
    log = tmp_path / "daemon.log"
    log.write_text('{"message": "tick 1"}\n')
    rule = text.replace("/srv/flowbatch/daemon.log", str(log))
    rule = rule.replace("su flowbatch flowbatch", "su root root")
    rule = rule.replace("create 0640 flowbatch flowbatch", "create 0640 root root")
    (tmp_path / "rule").write_text(rule)
    done = subprocess.run(
        ["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "rule")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with open(log, "a") as fh:  # the next tick, as cron's >> opens it
        fh.write('{"message": "tick 2"}\n')
    assert (tmp_path / "daemon.log.1").read_text() == '{"message": "tick 1"}\n'
    assert log.read_text() == '{"message": "tick 2"}\n'


def test_there_are_local_ssh_and_slurm_examples() -> None:
    names = {p.name for p in EXAMPLE_CONFIGS}
    assert {"flowbatch-local.yaml", "flowbatch-ssh.yaml", "flowbatch-slurm.yaml"} <= names


@pytest.mark.parametrize("example", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_example_config_validates(example: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load(example.read_text())
    for section in ("ssh", "slurm"):
        if section in doc and section not in SiteConfig.model_fields:
            pytest.xfail(f"SiteConfig has no `{section}:` section yet")
    shutil.copy(example, tmp_path / "flowbatch.yaml")
    config = load(tmp_path, NO_ENV).config  # the pydantic model: what the daemon reads
    assert config.executor
    jsonschema.validate(doc, schema_for("site"))  # the schema editors use
    assert example.read_text().startswith("# yaml-language-server: $schema=../schemas/site.")


@pytest.mark.skipif(os.geteuid() != 0, reason="the daemon's own user decides")
def test_a_root_daemon_never_logs_in_as_root_by_default(tmp_path: Path) -> None:
    """`user:` left out means the daemon's own user: root, for a root daemon, which would
    then run every participant's code as root on that host. Such a host is refused, with
    the key to set, before any connection is tried."""
    from flowbatch.errors import ConfigError, FlowbatchError
    from flowbatch.executors.ssh_pool import SSHPool
    from flowbatch.ssh_hosts import SSHHost

    known = tmp_path / "known_hosts"
    known.write_text("")
    host = SSHHost.model_validate({"hostname": "127.0.0.9", "known_hosts": str(known)})
    with pytest.raises(ConfigError, match="no `user:`") as err:
        SSHPool({"login1": host}).connection("login1").run("true")
    assert err.value.field == "ssh.login1.user"
    named = SSHHost.model_validate({**host.model_dump(), "user": "fbtest"})
    with pytest.raises(FlowbatchError) as other:  # a named user goes on to connect
        SSHPool({"login1": named}).connection("login1").run("true", timeout=2)
    assert "no `user:`" not in str(other.value)


_EXECUTORS = {"slurm": {"gpu": {}}, "ssh": {"login1": {"hostname": "127.0.0.9"}}}


def test_an_executor_the_site_does_not_have_is_refused_where_it_is_written(
    tmp_path: Path,
) -> None:
    """`executor:` in flowbatch.yaml (or FLOWBATCH_EXECUTOR) must be one of the site's
    executors; a wrong one had every request that names none rejected at intake."""
    from click.testing import CliRunner

    from flowbatch.cli import main
    from flowbatch.errors import ConfigError

    path = tmp_path / "flowbatch.yaml"
    path.write_text(yaml.safe_dump({"executor": "nosuch", **_EXECUTORS}))
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, NO_ENV)
    error = refused.value
    assert error.file == str(path) and error.field == "executor"
    assert "'nosuch'" in error.reason
    assert "one of: local, slurm, slurm:gpu, login1" in error.reason
    assert error.hint and "flowbatch.yaml" in error.hint
    with pytest.raises(ConfigError) as from_env:
        load(tmp_path, {"FLOWBATCH_EXECUTOR": "slurm:cpu"})
    assert from_env.value.file == "environment variable FLOWBATCH_EXECUTOR"
    assert from_env.value.field == "executor" and "'slurm:cpu'" in from_env.value.reason
    for args in (["config", "show"], ["doctor"]):  # both say so
        result = CliRunner().invoke(main, ["--site", str(tmp_path), *args])
        assert result.exit_code != 0 and "executor: not an executor of this site" in (
            result.output
        ), result.output


@pytest.mark.parametrize("name", ["local", "slurm", "slurm:gpu", "login1"])
def test_every_executor_of_the_site_may_be_its_default(name: str, tmp_path: Path) -> None:
    from flowbatch.executors import executor_names

    (tmp_path / "flowbatch.yaml").write_text(yaml.safe_dump({"executor": name, **_EXECUTORS}))
    config = load(tmp_path, NO_ENV).config
    assert config.executor == name
    # the config's own list (it may not import the executors) is the executors' list
    assert config.executor_names() == executor_names(config)
    assert SiteConfig().executor == "local"  # the default is one on every site
