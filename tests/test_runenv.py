"""What a run's environment holds of the daemon's (flowbatch.runenv): real processes, the
local executor starting ``bash run.sh`` as another user, and the real Slurm test cluster.

The daemon is configured through its environment (a unit's ``Environment=`` lines:
``FLOWBATCH_DATABASE=postgresql://user:pass@...``, ``PGPASSWORD``): another user's run must
get none of it, only the harmless variables (PATH, the language, the time zone) and its
own account's; the daemon's own runs lose flowbatch's settings and the PostgreSQL
client's variables.
"""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.executors import local
from flowbatch.executors.base import Launch
from flowbatch.site import Site

from .conftest import drop, make_site, run_until_idle, write_template
from .fixtures_slurm import slurm_config
from .services.slurm import SlurmCluster
from .test_robust import _user, needs_root

#: the user every Debian system has; the test's runs need no home or shell of theirs
NOBODY = 65534

#: what an admin's unit gives the daemon, secrets included (the URL is never used here:
#: it is set after the test's sites have read their config)
SECRETS = {
    "FLOWBATCH_DATABASE": "postgresql://flowbatch:hunter2@db.example.org/flowbatch",
    "FLOWBATCH_LOCAL__CONCURRENCY": "3",
    "FLOWBATCH_SITE": "/srv/flowbatch",
    "PGPASSWORD": "hunter2",
    "PGHOST": "db.example.org",
    "PGSSLKEY": "/var/lib/flowbatch/.postgresql/postgresql.key",
}
#: harmless variables an admin expects every run to have
HARMLESS = {"LANG": "C.UTF-8", "LC_MESSAGES": "C", "TZ": "Europe/Paris"}
#: the daemon's other variables: its own runs keep them, other users' runs do not
DAEMONS = {
    "RUNENV_TOKEN": "daemon-only",
    "FLOWBATCH_NOT_A_SETTING": "kept",  # no config key, nothing flowbatch reads
    "PGI": "/opt/pgi",  # a compiler's, not the PostgreSQL client's
    "TMPDIR": "/var/tmp",  # the daemon's; another user may not be able to write it
    "BASH_ENV": "/dev/null",
}
#: what bash itself adds to a script's environment
BASHS = {"PWD", "SHLVL", "_", "OLDPWD"}

ENV_TEMPLATE = """
workflow:
  parameters:
    a: $[[a]]
  steps:
    - name: env
      action:
        commands:
          - echo ${a} > a.txt
          - env -0 > env.txt
parameters:
  - {name: a, dtype: int, defaultValue: 1}
"""


def _set(monkeypatch: pytest.MonkeyPatch, *groups: dict[str, str]) -> None:
    for group in groups:
        for name, value in group.items():
            monkeypatch.setenv(name, value)


def _read_env(path: Path) -> dict[str, str]:
    items = path.read_bytes().decode().split("\0")
    return dict(item.split("=", 1) for item in items if item)


def _launch_and_wait(
    ex: local.LocalExecutor, run_dir: Path, uid: int | None, run_id: str = "r1"
) -> dict[str, str]:
    handle = ex.launch(Launch(run_id, run_dir, "run.sh", uid=uid))
    deadline = time.monotonic() + 20
    while ex.poll([(run_id, handle)])[run_id].exit_code is None:
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.01)
    assert ex.poll([(run_id, handle)])[run_id].exit_code == 0
    ex.forget(handle)
    return _read_env(run_dir / "env.txt")


def _env_run_dir(folder: Path, uid: int, gid: int) -> Path:
    folder.mkdir()
    (folder / "run.sh").write_text("env -0 > env.txt\n")
    os.chown(folder, uid, gid)
    return folder


def _as_another_user(env: dict[str, str], user: pwd.struct_passwd, path: str) -> None:
    """``env`` is what another user's run may have: nothing of the daemon but the
    harmless variables, the user's own account, the run's own variables."""
    for name in SECRETS:
        assert name not in env, f"{name} of the daemon reached {user.pw_name}'s run"
    for name, value in DAEMONS.items():  # (Slurm sets a TMPDIR of its own)
        assert env.get(name) != value, f"{name} of the daemon reached {user.pw_name}'s run"
    assert {name: env.get(name) for name in HARMLESS} == HARMLESS
    assert env["PATH"] == path
    assert env["HOME"] == user.pw_dir
    assert env["USER"] == env["LOGNAME"] == user.pw_name
    assert env["SHELL"] == (user.pw_shell or "/bin/sh")


# -- the local executor ---------------------------------------------------------------------
@needs_root
def test_another_users_local_run_gets_only_the_passed_variables(
    public_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bash run.sh`` started as ``nobody`` (through setpriv, as a root daemon does): the
    daemon's secrets, its HOME and USER and its other variables stay behind; PATH, the
    language and the time zone come along; HOME, USER, LOGNAME and SHELL are nobody's."""
    _set(monkeypatch, SECRETS, HARMLESS, DAEMONS, {"HOME": "/root", "USER": "root"})
    assert local.setpriv() is not None, "setpriv (util-linux) is part of the test install"
    nobody = pwd.getpwuid(NOBODY)
    run_dir = _env_run_dir(public_tmp / "run", NOBODY, NOBODY)
    env = _launch_and_wait(local.LocalExecutor(), run_dir, NOBODY)
    _as_another_user(env, nobody, os.environ["PATH"])
    # (this run.sh leaves the executor's FLOWBATCH_SCRIPT_LOG set: run.sh unsets it)
    own = {"HOME", "USER", "LOGNAME", "SHELL", "FLOWBATCH_SCRIPT_LOG"}
    assert set(env) <= {"PATH", *HARMLESS, *own, *BASHS}, env
    # the same without setpriv (subprocess's own change of user, which forks the daemon)
    monkeypatch.setattr(local, "_SETPRIV", [None])
    env = _launch_and_wait(local.LocalExecutor(), run_dir, NOBODY, "r2")
    _as_another_user(env, nobody, os.environ["PATH"])


@needs_root
def test_a_root_daemon_gives_another_users_run_none_of_its_secrets(
    public_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reviewer's case, through a real daemon: a participant's run (``nobody``'s
    request) sees neither FLOWBATCH_DATABASE nor PGPASSWORD, but its own FB_ variables,
    FLOWBATCH_RUN_ID, PATH and the language."""
    nobody = pwd.getpwuid(NOBODY)
    site = make_site(public_tmp / "site")
    write_template(tmp_path / "t", ENV_TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="env")
    request = drop(site, "r.yaml", {"workflow": "env", "arguments": {"a": 7}})
    os.chown(request, NOBODY, NOBODY)
    daemon = Daemon(site)
    daemon.start()
    try:
        _set(monkeypatch, SECRETS, HARMLESS, DAEMONS)  # once the site has read its config
        run_until_idle(site, daemon=daemon)
    finally:
        daemon.stop()
    (run,) = api.list_runs(site)
    run = api.show_run(site, run["id"])
    assert run["state"] == "SUCCESS", run["messages"]
    assert run["owner_uid"] == NOBODY
    env = _read_env(Path(run["run_dir"]) / "env.txt")
    _as_another_user(env, nobody, os.environ["PATH"])
    assert env["FB_a"] == "7" and env["FLOWBATCH_RUN_ID"] == run["id"]
    assert "FLOWBATCH_SCRIPT_LOG" not in env  # the script's own, unset once used
    site.close()


def test_own_runs_lose_flowbatch_settings_and_postgres_variables(
    public_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of the daemon's own user keeps the daemon's environment but for flowbatch's
    settings (a nested `flowbatch` would act on the daemon's site and index) and the
    PostgreSQL client's variables; and it follows the daemon's environment when that
    changes (the environment is computed once, not per launch)."""
    _set(monkeypatch, SECRETS, HARMLESS, DAEMONS)
    run_dir = _env_run_dir(public_tmp / "run", os.geteuid(), os.getegid())
    ex = local.LocalExecutor()
    env = _launch_and_wait(ex, run_dir, None)
    for name in SECRETS:
        assert name not in env, f"{name} reached the daemon's own run"
    assert {name: env.get(name) for name in (*HARMLESS, *DAEMONS)} == {**HARMLESS, **DAEMONS}
    assert env["PATH"] == os.environ["PATH"] and env["HOME"] == os.environ["HOME"]
    # the daemon's environment changes: the next run sees it
    monkeypatch.setenv("LANG", "C")
    monkeypatch.setenv("FLOWBATCH_POLLING__INTERVAL", "5")
    monkeypatch.setenv("PGUSER", "flowbatch")
    monkeypatch.delenv("RUNENV_TOKEN")
    env = _launch_and_wait(ex, run_dir, None, "r2")
    assert env["LANG"] == "C" and "RUNENV_TOKEN" not in env
    assert "FLOWBATCH_POLLING__INTERVAL" not in env and "PGUSER" not in env
    assert env["FLOWBATCH_NOT_A_SETTING"] == "kept"


# -- Slurm -----------------------------------------------------------------------------------
def _slurm_env_runs(
    site: Site,
    monkeypatch: pytest.MonkeyPatch,
    requests: dict[str, dict[str, Any]],
    uid: int,
    gid: int,
) -> list[dict[str, Any]]:
    for name, doc in requests.items():
        os.chown(drop(site, name, doc), uid, gid)
    daemon = Daemon(site)
    daemon.start()
    try:
        _set(monkeypatch, SECRETS, HARMLESS, DAEMONS)  # once the site has read its config
        run_until_idle(site, timeout=90, daemon=daemon)
    finally:
        daemon.stop()
    runs = [api.show_run(site, r["id"]) for r in api.list_runs(site)]
    for run in runs:
        assert run["state"] == "SUCCESS", run["messages"]
        assert run["executor"] == "slurm" and run["owner_uid"] == uid
    return runs


@needs_root
def test_another_users_slurm_job_gets_only_the_passed_variables(
    tmp_path: Path, public_tmp: Path, monkeypatch: pytest.MonkeyPatch, slurm_cluster: SlurmCluster
) -> None:
    """A root daemon submits a user's job as that user, and sbatch hands the job the
    environment of its own process (``--export=ALL``): that is the user's run
    environment, not the daemon's, for a single job and for a sweep's job array."""
    user = _user("fbrunner")
    site = make_site(public_tmp / "site", slurm_config())
    write_template(tmp_path / "t", ENV_TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="env")
    requests = {
        "one.yaml": {"workflow": "env", "arguments": {"a": 5}},
        "sweep.yaml": {"workflow": "env", "sweep": {"a": [1, 2]}},
    }
    runs = _slurm_env_runs(site, monkeypatch, requests, user.pw_uid, user.pw_gid)
    assert len(runs) == 3
    assert sum("array_job" in run["handle"] for run in runs) == 2  # the sweep: an array
    for run in runs:
        env = _read_env(Path(run["run_dir"]) / "env.txt")
        assert env["SLURM_JOB_ID"], "the file was written by the Slurm job"
        _as_another_user(env, user, os.environ["PATH"])
        assert env["FLOWBATCH_RUN_ID"] == run["id"]
    site.close()


def test_the_daemons_own_slurm_jobs_lose_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slurm_cluster: SlurmCluster
) -> None:
    """A job the daemon submits as its own user gets its environment without
    flowbatch's settings and the PostgreSQL client's variables."""
    site = make_site(tmp_path / "site", slurm_config())
    write_template(tmp_path / "t", ENV_TEMPLATE)
    api.install(site, tmp_path / "t", workflow_id="env")
    requests = {"r.yaml": {"workflow": "env"}}
    (run,) = _slurm_env_runs(site, monkeypatch, requests, os.geteuid(), os.getegid())
    env = _read_env(Path(run["run_dir"]) / "env.txt")
    assert env["SLURM_JOB_ID"], "the file was written by the Slurm job"
    for name in SECRETS:
        assert name not in env, f"{name} reached the daemon's own job"
    assert {name: env.get(name) for name in (*HARMLESS, *DAEMONS)} == {**HARMLESS, **DAEMONS}
    site.close()
