"""Shared fixtures: a real site folder, a real SQLite index, real processes."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.site import Site

pytest_plugins = [
    "tests.fixtures_slurm",
    "tests.fixtures_browser",
    "tests.fixtures_ssh",
    "tests.fixtures_postgres",
]

REPO = Path(__file__).resolve().parent.parent

#: a template of one step that writes the score it is given, ranked by it
SCORE_TEMPLATE = """
workflow:
  steps:
    - name: score
      action:
        commands:
          - >-
            printf '{"score": %s}' "${score}" > r.json
parameters:
  - {name: score, dtype: float}
results:
  file: r.json
  schema: [{name: score, label: Score, dtype: float}]
"""
EXAMPLES = REPO / "examples"


@pytest.fixture(autouse=True, scope="session")
def _own_cache_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The suite's daemons keep their compiled report templates in a folder of the
    suite's own (the daemons it starts inherit it), not in the user's ~/.cache."""
    saved = {name: os.environ.get(name) for name in ("XDG_CACHE_HOME", "CACHE_DIRECTORY")}
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("CACHE_DIRECTORY", None)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def _package_report_templates() -> Iterator[None]:
    """A test's site with its own report templates leaves the process's choice of
    templates (one site per daemon process) to the next test: back to the package's."""
    yield
    report = sys.modules.get("flowbatch.report")
    if report is not None:
        report._FOLDER[0] = None


def make_site(root: Path, config: dict[str, Any] | None = None) -> Site:
    Site.init(root)
    conf = {"polling": {"interval": 0.2, "settle": 0.0}}
    conf.update(config or {})
    (root / "flowbatch.yaml").write_text(yaml.safe_dump(conf), encoding="utf-8")
    return Site(root)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = make_site(tmp_path / "site")
    yield s
    s.close()


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A folder other users can traverse (pytest's own tmp folders are 0700 for root)."""
    path = Path(tempfile.mkdtemp(prefix="flowbatch-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    end_scripts_in(path)
    shutil.rmtree(path, ignore_errors=True)


def end_scripts_in(path: Path) -> None:
    """Kill, by their PIDs, the processes a test left running a script of ``path``'s
    (their command lines name it), before the folder goes: a post-processing of another
    user's waiting for a gate file in it looked for the gate every 50 ms for ever once
    the folder was removed (found left behind after a run of test_shared_site.py)."""
    import psutil

    left = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid != os.getpid() and any(
                arg.startswith(f"{path}/") for arg in proc.info["cmdline"] or ()
            ):
                left.append(proc)
        except psutil.Error:
            continue
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=5)


def python_for_others() -> str:
    """An interpreter another user can run: the suite's own where every folder on its
    way lets others pass, else the system's (a root daemon runs post-processing as
    another user, flowbatch.postproc_user, and ``${python}`` is the daemon's own)."""
    real = Path(os.path.realpath(sys.executable))
    if all(p.stat().st_mode & 0o001 for p in (real, *real.parents)):
        return sys.executable
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


@pytest.fixture
def public_site(public_tmp: Path) -> Iterator[Site]:
    """A site where a root daemon's post-processing can run: in a folder other users pass
    through, ``${python}`` one they can run (it runs as the site's owner, else
    ``nobody``: flowbatch.postproc_user)."""
    s = make_site(public_tmp / "site", {"variables": {"python": python_for_others()}})
    yield s
    s.close()


@pytest.fixture
def hello_site(site: Site) -> Site:
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    return site


@contextmanager
def serving(root: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real daemon process serving the site at ``root`` (`flowbatch daemon`), stopped
    by its own PID: SIGTERM, then SIGKILL after 30 s."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowbatch", "--site", str(root), "daemon"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def lock_held(path: Path, seconds: float = 60.0, **info: Any) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock file ``path`` (as a daemon, or with ``role=`` as
    another command) for ``seconds`` at most, having written ``info`` and its pid into it;
    killed when the block ends."""
    script = (
        "import fcntl, json, os, time\n"
        f"fh = open({str(path)!r}, 'a+')\n"
        "fcntl.flock(fh, fcntl.LOCK_EX)\n"
        "fh.truncate(0)\n"
        f"fh.write(json.dumps({{'host': 'h', 'pid': os.getpid(), **{info!r}}}))\n"
        f"fh.flush(); print('held', flush=True); time.sleep({seconds})\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def drop(site: Site, name: str, doc: Any, files: dict[str, str] | None = None) -> Path:
    """Put a request (and input files beside it) into the queue, the request last."""
    queue = site.layout.queue
    for rel, text in (files or {}).items():
        path = queue / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    tmp = queue / f".{name}.tmp"
    tmp.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    os.rename(tmp, queue / name)
    return queue / name


def run_until_idle(
    site: Site,
    timeout: float = 60.0,
    daemon: Daemon | None = None,
    *,
    each_tick: Callable[[Daemon], None] | None = None,
    wait: float = 0.05,
) -> Daemon:
    """Tick a real daemon in this process until the queue is empty and no run is active.
    ``each_tick`` looks at the daemon after every tick; between ticks the loop waits for
    the daemon's wake-up, at most ``wait`` seconds."""
    d = daemon or Daemon(site)
    if daemon is None:
        d.start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            d.wakeup.clear()
            d.tick()
            if each_tick is not None:
                each_tick(d)
            if d.idle():
                return d
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon not idle after {timeout}s: {list(d.runner.active)}")
            d.wakeup.wait(wait)
    finally:
        if daemon is None:
            d.stop()


def daemon_modules(site_root: Path, *args: str) -> tuple[Any, set[str]]:
    """``flowbatch daemon ARGS`` in a fresh interpreter: its completed process and the
    modules it had loaded at its end (the daemon's command ends the process without
    atexit handlers, so main() is called and returns)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from flowbatch.cli import main\n"
        "try:\n"
        "    main(['--site', sys.argv[1], 'daemon', *sys.argv[2:]])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('MODULES', *sorted(sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(site_root), *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("MODULES "))
    return done, set(line.split()[1:])


def only_run(site: Site) -> dict[str, Any]:
    runs = api.list_runs(site)
    assert len(runs) == 1, runs
    return api.show_run(site, runs[0]["id"])


def write_template(folder: Path, text: str, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "workflow.yaml").write_text(text, encoding="utf-8")
    for rel, content in (files or {}).items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content, encoding="utf-8")
    return folder


def account(name: str, *, home: bool = False) -> pwd.struct_passwd:
    """The account ``name``, made (the tests run as root) if this machine has none;
    ``home``: with a home folder and bash, for tests that log in as it."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        how = (
            ["--create-home", "--shell", "/bin/bash"]
            if home
            else ["--no-create-home", "--shell", "/bin/sh"]
        )
        subprocess.run(["useradd", *how, name], check=True)
        return pwd.getpwnam(name)
