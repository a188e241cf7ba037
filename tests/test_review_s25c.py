"""Found by using flowbatch as docs/admins.md sets it up for a root daemon serving a
service user's site (the site folder, ``results/`` included, the service user's; the
queue's folders root's), with real users and processes: the daemon as root, a
participant's runs as that participant."""

from __future__ import annotations

import grp
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowbatch import api
from flowbatch.cli import main
from flowbatch.daemon import Daemon
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, account, drop, make_site, run_until_idle, write_template
from .test_root_commands import PYTHON, flowbatch

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon switches users")


user = account


def gated_template(gate: Path) -> str:
    """A run that writes its score once ``gate`` exists: it can be caught running."""
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    return (
        "workflow:\n  steps:\n    - name: score\n      action:\n        commands:\n"
        f"          - '{wait}'\n"
        '          - >-\n            printf \'{"score": %s}\' "${score}" > r.json\n'
        "parameters:\n  - {name: score, dtype: float}\n"
        "results:\n  file: r.json\n  schema: [{name: score, label: Score, dtype: float}]\n"
    )


def service_users_site(root: Path, text: str) -> Site:
    """A site as docs/admins.md has it for a root daemon: made and owned by a service
    user (here the suite's ``fbsite``), its queue's folders root's."""
    owner = user("fbsite")
    site = make_site(root / "site")
    api.install(site, write_template(root / "t", text), workflow_id="wf")
    site.close()
    subprocess.run(
        ["chown", "-R", f"{owner.pw_uid}:{owner.pw_gid}", str(root / "site")], check=True
    )
    for folder in ("queue", "queue/.claimed", "queue/rejected"):
        os.chown(root / "site" / folder, 0, 0)
    return Site(root / "site")


def test_a_root_daemon_reads_its_own_run_records_on_a_service_users_site(
    public_tmp: Path,
) -> None:
    """The root daemon writes ``run.json`` as root, in a tree the service user owns: the
    record was refused as "replaced from inside the run" by every reader (`runs show`,
    `runs logs`, `submit --wait`, which said the request "made no run" and exited 0), and
    by the daemon itself after a restart, which left a running run RUNNING for ever."""
    participant = user("fbrunner")
    gate = public_tmp / "gate"
    site = service_users_site(public_tmp, gated_template(gate))
    path = drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 2.5}})
    os.chown(path, participant.pw_uid, participant.pw_gid)
    first = Daemon(site)
    first.start()
    try:
        deadline = time.monotonic() + 60
        while not first.runner.active:
            assert time.monotonic() < deadline, "the run was never launched"
            first.tick()
            first.wakeup.wait(0.05)
        first.stop()  # as a restart: the run goes on
        site.close()
        site = Site(public_tmp / "site")
        (row,) = api.list_runs(site)
        assert api.show_run(site, row["id"])["state"] == "RUNNING"
    finally:
        gate.touch()  # never a run left waiting behind a failed test
    run_until_idle(site)  # the next daemon takes the running run over and ends it
    shown = api.show_run(site, row["id"])
    assert shown["state"] == "SUCCESS", shown
    assert shown["results"] == {"score": 2.5}
    site.close()


def doctor_checks(output: str) -> dict[str, tuple[str, str]]:
    """`doctor --json`'s checks by name: (status, detail)."""
    return {c["check"]: (c["status"], c["detail"]) for c in json.loads(output)}


def test_doctor_passes_the_queue_docs_admins_sets_up_for_a_root_daemon(
    public_tmp: Path,
) -> None:
    """docs/admins.md: a root daemon on a service user's site needs `chown root queue
    queue/.claimed queue/rejected`. doctor judged those folders for the service user
    (the owner of results/) and failed them, telling root to give them back to that
    user, after which the root daemon took no request in."""
    site = service_users_site(public_tmp, SCORE_TEMPLATE)
    root = site.root
    site.close()
    result = CliRunner().invoke(main, ["--site", str(root), "doctor", "--json"])
    status, detail = doctor_checks(result.output)["queue/ safety"]
    assert status == "ok", detail
    assert "for a root daemon" in detail and "fbsite would refuse them" in detail
    # what the daemon refuses, doctor still fails: a .claimed of a participant's
    os.chown(root / "queue" / ".claimed", user("fbrunner").pw_uid, 0)
    result = CliRunner().invoke(main, ["--site", str(root), "doctor", "--json"])
    status, detail = doctor_checks(result.output)["queue/ safety"]
    assert status == "fail" and "belongs to fbrunner" in detail, detail


def test_doctor_run_by_a_user_who_cannot_look_into_the_queue_says_so(
    public_tmp: Path,
) -> None:
    """The queue given to a group of participants (chmod 1770, docs/admins.md) that the
    site's owner is not in: the owner's doctor showed a bare PermissionError as a failed
    "folders" check."""
    if not PYTHON.exists():
        pytest.skip(f"no {PYTHON}")
    owner = user("fbsite")
    site = service_users_site(public_tmp, SCORE_TEMPLATE)
    root = site.root
    site.close()
    group = grp.getgrnam("nogroup" if _has_group("nogroup") else "nobody")
    os.chown(root / "queue", 0, group.gr_gid)
    os.chmod(root / "queue", 0o1770)
    done = flowbatch(root, "doctor", "--json", user=owner.pw_uid)
    checks = doctor_checks(done.stdout)
    assert "PermissionError" not in done.stdout, done.stdout
    assert "folders" not in checks, checks
    status, detail = checks["queue/ safety"]
    assert status == "skip" and "cannot be looked into by you (fbsite)" in detail, detail


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
