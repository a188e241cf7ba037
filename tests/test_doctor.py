"""`flowbatch doctor`: a fresh site passes; broken ones fail with the reason."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowbatch.cli import main
from flowbatch.daemon import Daemon
from flowbatch.doctor import FAIL, OK, WARN, diagnose
from flowbatch.site import Site
from flowbatch.store.index import SCHEMA_VERSION


def _doctor(root: Path) -> tuple[int, list[dict[str, str]]]:
    result = CliRunner().invoke(main, ["--site", str(root), "doctor", "--json"])
    return result.exit_code, json.loads(result.output)


def _status(checks: list[dict[str, str]], name: str) -> list[str]:
    return [c["status"] for c in checks if c["check"] == name]


def test_fresh_site_passes(tmp_path: Path) -> None:
    root = tmp_path / "site"
    assert CliRunner().invoke(main, ["init", str(root)]).exit_code == 0
    code, checks = _doctor(root)
    assert code == 0, checks
    names = [c["check"] for c in checks]
    for name in ("config", "queue/", "results/", "templates/", "index", "executor local", "daemon"):
        assert name in names
    assert all(c["status"] != FAIL for c in checks)
    text = CliRunner().invoke(main, ["--site", str(root), "doctor"]).output
    assert text.splitlines()[0].split() == ["CHECK", "STATUS", "DETAIL"]


def test_used_site_with_running_daemon(hello_site: Site) -> None:
    hello_site.store  # noqa: B018 - creates the index
    daemon = Daemon(hello_site)
    daemon.start()
    try:
        checks = {c.name: c for c in diagnose(hello_site.root)}
    finally:
        daemon.stop()
    assert checks["index"].status == OK
    assert f"schema version {SCHEMA_VERSION}" in checks["index"].detail
    assert checks["templates"].detail.startswith("1 installed")
    assert checks["daemon"].detail.startswith("running") and "pid" in checks["daemon"].detail


def test_invalid_config_fails(site: Site) -> None:
    site.layout.config.write_text("local:\n  concurrency: zero\n")
    code, checks = _doctor(site.root)
    assert code == 1
    config = next(c for c in checks if c["check"] == "config")
    assert config["status"] == FAIL and "local.concurrency" in config["detail"]
    assert _status(checks, "index") == ["skip"]
    # said once: the queue's check skips, it does not fail with the same error again
    said = [c for c in checks if "local.concurrency" in c["detail"]]
    assert [c["check"] for c in said] == ["config"], said


def test_queue_that_is_not_a_writable_folder_fails(site: Site) -> None:
    # a file where the folder should be: fails even for root, whom permissions don't stop
    shutil.rmtree(site.layout.queue)
    site.layout.queue.write_text("")
    code, checks = _doctor(site.root)
    assert code == 1
    assert _status(checks, "queue/") == [FAIL]
    assert _status(checks, "results/") == [OK]


def test_index_from_a_newer_flowbatch_fails(site: Site) -> None:
    site.store  # noqa: B018 - creates the index
    site.close()
    db = sqlite3.connect(site.layout.index_db)
    db.execute("UPDATE meta_row SET value = ?", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    code, checks = _doctor(site.root)
    assert code == 1
    index = next(c for c in checks if c["check"] == "index")
    assert index["status"] == FAIL and "newer than this flowbatch" in index["detail"]


def test_older_index_is_a_warning(site: Site) -> None:
    site.store  # noqa: B018
    site.close()
    db = sqlite3.connect(site.layout.index_db)
    db.execute("UPDATE meta_row SET value = ?", (str(SCHEMA_VERSION - 1),))
    db.commit()
    db.close()
    code, checks = _doctor(site.root)
    assert code == 0
    assert _status(checks, "index") == ["warn"]


def test_executor_self_checks_are_reported(monkeypatch, site: Site) -> None:  # type: ignore[no-untyped-def]
    class Remote:
        name = "gpu1"

        def check(self) -> str:
            raise RuntimeError("host key of gpu1.example.org is not in ~/.ssh/known_hosts")

        def close(self) -> None:
            pass

    import flowbatch.executors as executors

    real = executors.build_executors
    monkeypatch.setattr(
        executors,
        "build_executors",
        lambda config, wake, *a: {**real(config, wake), "gpu1": Remote()},
    )
    checks = {c.name: c for c in diagnose(site.root)}
    assert checks["executor gpu1"].status == FAIL
    assert "known_hosts" in checks["executor gpu1"].detail


@pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon starts runs as their users")
def test_the_local_check_says_how_runs_of_other_users_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowbatch.executors import local

    root = tmp_path / "site"
    assert CliRunner().invoke(main, ["init", str(root)]).exit_code == 0
    with open(root / "flowbatch.yaml", "a") as config:  # a ${python} every user can run
        config.write("variables: {python: /usr/bin/python3}\n")
    code, checks = _doctor(root)
    found = next(c for c in checks if c["check"] == "executor local")
    assert found["status"] == OK and f"through {local.setpriv()}" in found["detail"]
    monkeypatch.setattr(local, "_SETPRIV", [None])  # missing, or refused in a container
    code, checks = _doctor(root)
    found = next(c for c in checks if c["check"] == "executor local")
    assert found["status"] == WARN and "forking the daemon" in found["detail"]
    assert code == 0  # a warning: the site works, more slowly


@pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon starts runs as their users")
def test_a_python_other_users_cannot_run_is_a_warning(tmp_path: Path, public_tmp: Path) -> None:
    """A root daemon installed in a virtual environment under /root (0700) gave other
    users' runs a ${python} they cannot run: every step using it failed, and doctor said
    nothing."""
    root = tmp_path / "site"
    assert CliRunner().invoke(main, ["init", str(root)]).exit_code == 0
    private = public_tmp / "private"
    (private / "bin").mkdir(parents=True)
    python = private / "bin" / "python3"
    python.symlink_to("/usr/bin/python3")
    private.chmod(0o700)
    with open(root / "flowbatch.yaml", "a") as config:
        config.write(f"variables: {{python: {python}}}\n")
    code, checks = _doctor(root)
    found = next(c for c in checks if c["check"] == "executor local")
    assert found["status"] == WARN, found
    assert f"{private} is closed to other users (mode 700)" in found["detail"]
    assert "variables: {python: /usr/bin/python3}" in found["detail"]
    assert code == 0  # the site works for the daemon's own user


def test_a_queue_participants_could_rearrange_fails(site: Site, tmp_path: Path) -> None:
    """A queue/ others may write needs the sticky bit (else any participant can replace
    the daemon's .claimed and rejected, and the daemon refuses to take requests in):
    doctor fails with the chmod to run; so for a rejected/ that is a link."""
    queue = site.layout.queue
    assert _status(_doctor(site.root)[1], "queue/ safety") == [OK]
    os.chmod(queue, 0o2775)
    code, checks = _doctor(site.root)
    (check,) = [c for c in checks if c["check"] == "queue/ safety"]
    assert code == 1 and check["status"] == FAIL
    assert f"chmod +t {queue}" in check["detail"] and "group" in check["detail"]
    os.chmod(queue, 0o3775)
    code, checks = _doctor(site.root)
    assert code == 0 and _status(checks, "queue/ safety") == [OK]
    os.rename(site.layout.rejected, queue / "old")
    os.symlink(tmp_path, site.layout.rejected)
    code, checks = _doctor(site.root)
    (check,) = [c for c in checks if c["check"] == "queue/ safety"]
    assert code == 1 and check["status"] == FAIL and "symbolic link" in check["detail"]


@pytest.mark.skipif(os.geteuid() != 0, reason="changes owners")
def test_doctor_judges_the_queue_as_the_daemon_does(site: Site) -> None:
    """doctor runs the daemon's own queue check, for the daemon's user (the owner of
    results/), whoever runs it: a .claimed of another user fails both, with the same
    words (a second copy of the rules had let it pass)."""
    from flowbatch.errors import FlowbatchError
    from flowbatch.queue import check_queue

    claimed = site.layout.claimed
    claimed.mkdir(exist_ok=True)
    os.chown(claimed, 65534, 65534)
    with pytest.raises(FlowbatchError) as daemon:
        check_queue(site, make=False)
    code, checks = _doctor(site.root)
    (check,) = [c for c in checks if c["check"] == "queue/ safety"]
    assert code == 1 and check["status"] == FAIL
    assert daemon.value.reason in check["detail"] and "belongs to" in check["detail"]


def test_an_index_deleted_beside_a_tree_with_runs_fails(hello_site: Site) -> None:
    """The commands refuse such a site ("the index holds no runs but the results tree
    does"); doctor passed it, missing or emptied (found by review)."""
    from .conftest import drop, run_until_idle

    drop(hello_site, "a.yaml", {"workflow": "helloworld", "arguments": {"sleeptime": 0}})
    run_until_idle(hello_site).stop()
    hello_site.close()
    for path in hello_site.root.glob("index.db*"):
        path.unlink()
    code, checks = _doctor(hello_site.root)
    index = next(c for c in checks if c["check"] == "index")
    assert (code, index["status"]) == (1, FAIL), index
    assert "missing, but the results tree has runs" in index["detail"]
    assert "flowbatch reindex" in index["detail"]
    sqlite3.connect(hello_site.layout.index_db).close()  # an empty file, as a command leaves
    code, checks = _doctor(hello_site.root)
    index = next(c for c in checks if c["check"] == "index")
    assert (code, index["status"]) == (1, FAIL) and "empty, but" in index["detail"]


def test_an_index_that_cannot_be_opened_is_not_sent_to_reindex(tmp_path: Path) -> None:
    root = tmp_path / "site"
    assert CliRunner().invoke(main, ["init", str(root)]).exit_code == 0
    (root / "flowbatch.yaml").write_text("database: sqlite:////nonexistent/dir/x.db\n")
    code, checks = _doctor(root)
    index = next(c for c in checks if c["check"] == "index")
    assert (code, index["status"]) == (1, FAIL), index
    assert "cannot be opened" in index["detail"] and "reindex" not in index["detail"]


def test_a_server_index_without_its_driver_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said only "ImproperlyConfigured: psycopg2 postgres driver not found." (found by
    review); `runs list` gave the hint already."""
    import peewee

    Site.init(tmp_path / "site")
    (tmp_path / "site" / "flowbatch.yaml").write_text(
        "database: postgresql://flowbatch@127.0.0.1:1/flowbatch\n", encoding="utf-8"
    )
    monkeypatch.setattr(peewee, "psycopg2", None)
    code, checks = _doctor(tmp_path / "site")
    index = next(c for c in checks if c["check"] == "index")
    assert code == 1 and index["status"] == FAIL
    assert "pip install 'flowbatch[postgres]'" in index["detail"], index


def test_the_checks_own_log_lines_stay_out_of_its_output(tmp_path: Path) -> None:
    """An SSH host's "(retrying in 0.5 s)" came before the table on stderr (found by
    review): the table alone says how each check ended."""
    import subprocess
    import sys

    Site.init(tmp_path / "site")
    (tmp_path / "site" / "flowbatch.yaml").write_text(
        "ssh:\n  gpu1:\n    hostname: 127.0.0.1\n    port: 1\n    user: nobody\n"
        "    remote_root: /tmp/x\n    known_hosts: /nonexistent/known_hosts\n",
        encoding="utf-8",
    )
    out = subprocess.run(
        [sys.executable, "-m", "flowbatch", "--site", str(tmp_path / "site"), "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "executor gpu1" in out.stdout and "fail" in out.stdout
    assert out.stderr == "", out.stderr


def test_a_damaged_index_is_said_to_be_so_by_every_command_and_by_doctor(
    hello_site: Site,
) -> None:
    """Found by review: pages of index.db overwritten past its header; ``runs list`` and
    ``daemon --once`` printed peewee's traceback ("database disk image is malformed"),
    and ``doctor`` said "ok ... 6251 run(s)". Each says now that the index is damaged
    and that ``reindex`` rebuilds it."""
    from bench.scale import add_index_rows

    from .conftest import drop, run_until_idle

    drop(hello_site, "r.yaml", {"workflow": "helloworld", "arguments": {"greeting": "hi"}})
    run_until_idle(hello_site).stop()
    sample_path = next(hello_site.layout.results.glob("helloworld/runs/*/run.json"))
    sample = json.loads(sample_path.read_text())
    add_index_rows(hello_site, sample, 1, 3000)  # pages enough to damage past the header
    hello_site.close()
    index = hello_site.layout.index_db
    assert index.stat().st_size > 60 * 4096
    with open(index, "r+b") as fh:
        fh.seek(20 * 4096)
        fh.write(os.urandom(30 * 4096))
    runs = CliRunner().invoke(main, ["--site", str(hello_site.root), "runs", "list"])
    assert runs.exit_code == 1, runs.output
    assert "Traceback" not in runs.output
    assert "damaged" in runs.output and "flowbatch reindex" in runs.output, runs.output
    code, checks = _doctor(hello_site.root)
    index_check = next(c for c in checks if c["check"] == "index")
    assert code != 0 and index_check["status"] == FAIL, index_check
    assert "damaged" in index_check["detail"] and "reindex" in index_check["detail"]


def test_a_reindex_cut_short_leaves_a_file_doctor_names(hello_site: Site) -> None:
    hello_site.store  # noqa: B018 - creates the index
    leftover = hello_site.layout.index_db.with_name("index.db.new")
    leftover.write_bytes(b"SQLite format 3\0")
    checks = {c.name: c for c in diagnose(hello_site.root)}
    assert checks["index leftover"].status == WARN
    assert "reindex that did not finish" in checks["index leftover"].detail
    assert checks["index"].status == OK


def test_only_the_index_databases_own_errors_are_said_in_one_line() -> None:
    """An integrity or programming error is a bug of flowbatch's: its traceback is kept
    (found by the re-review); a damaged or locked database is said in one line."""
    import peewee

    from flowbatch.cli import _index_error

    assert _index_error(peewee.DatabaseError("database disk image is malformed"))
    assert _index_error(peewee.OperationalError("database is locked"))
    assert _index_error(sqlite3.DatabaseError("file is not a database"))
    assert not _index_error(peewee.IntegrityError("UNIQUE constraint failed"))
    assert not _index_error(peewee.ProgrammingError("no such column"))
    assert not _index_error(ValueError("x"))
