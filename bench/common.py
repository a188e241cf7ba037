"""Shared helpers: the machine, timing, statistics, the trivial workload."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENVS = BENCH / ".venvs"
PYTHON = sys.executable
#: how the bench starts flowbatch: by default as users install it (:func:`use_installed`
#: points it at bench/.venvs/flowbatch); ``--here``: this interpreter's (the project's
#: environment, often editable and with the test extras)
FLOWBATCH = [PYTHON, "-m", "flowbatch"]


def source_digest() -> str:
    """What a plain install of the work tree holds: the package's files and the project
    file, hashed (a change of either means a new install)."""
    digest = hashlib.sha256()
    package = sorted(
        p
        for p in (ROOT / "flowbatch").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )
    for path in [ROOT / "pyproject.toml", *package]:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def use_installed(log: Any = print) -> str:
    """flowbatch as users get it, in a virtual environment of its own like each peer's:
    ``pip install .`` (not editable, no extras: its modules byte-compiled, no test
    packages for peewee or pydantic to find) into bench/.venvs/flowbatch, again when the
    work tree changed. :data:`FLOWBATCH` then starts that one. Returns its python."""
    venv = VENVS / "flowbatch"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    digest = source_digest()
    if not (python.exists() and marker.exists() and marker.read_text().strip() == digest):
        log(f"  installing flowbatch (pip install .) into {venv} ...")
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        # the dependencies once, then the package itself again at each change of the tree
        subprocess.run([*pip, str(ROOT)], check=True, cwd=venv)
        subprocess.run([*pip, "--force-reinstall", "--no-deps", str(ROOT)], check=True, cwd=venv)
        marker.write_text(digest + "\n")
    FLOWBATCH[:] = [str(python), "-m", "flowbatch"]
    return str(python)


#: the trivial two-command workload every tool runs, per job ``n`` in its own folder
CMD1 = "echo {n} > out.txt"
CMD2 = "printf '{{\"score\":%d}}\\n' {n} > results.json"

TEMPLATE = """\
workflow:
  files:
    outputs:
      - results.json
  parameters:
    n: $[[n]]
  steps:
    - name: main
      action:
        environment: bash
        commands:
          - echo ${n} > out.txt
          - printf '{"score":%d}\\n' ${n} > results.json
parameters:
  - name: n
    label: N
    dtype: int
    defaultValue: 0
results:
  file: results.json
  schema:
    - name: score
      label: Score
      dtype: int
  orderBy:
    - name: score
      sortDesc: true
"""


def shell_job(n: int) -> str:
    return CMD1.format(n=n) + " && " + CMD2.format(n=n)


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
        "load_1m": round(os.getloadavg()[0], 2),
    }


@dataclass
class Timing:
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def best(self) -> float:
        return min(self.values)


def percentile(values: Sequence[float], q: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def timed(
    cmd: Sequence[str] | str,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    shell: bool = False,
) -> float:
    """Wall seconds of one whole process; raises with its output when it fails. The CPU
    seconds of the process and every descendant it waited for: :func:`last_cpu`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        shell=shell,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    _LAST_CPU[0] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{cmd!r} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"
        )
    return elapsed


_LAST_CPU = [0.0]


def last_cpu() -> float:
    """CPU seconds (user + system) of the last :func:`timed` process tree."""
    return _LAST_CPU[0]


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


#: a file created on a quiet disk here costs 20-60 µs (a 100-file probe, open + close)
QUIET_CREATE_US = 100.0


class CreateProbe:
    """Waits, before a timed run, until creating a file costs what it does on a quiet disk.

    On an ext4 file system without a journal (this machine's root), the inode allocator
    skips every inode freed in the last 60 s (more while its inode table block is dirty),
    reading the inode table for each (``recently_deleted()`` in ``fs/ext4/ialloc.c``): for
    a while after many files were removed, each file created costs 10-30x more (24 µs ->
    700 µs measured after removing 20,000 files). A tool that removed its scratch files
    (flowServ removes a folder per run) would slow whichever tool runs next, and a tool
    creating more files per job pays more for the same disturbance. Each probe creates
    ``files`` files in a folder of its own, kept until the harness removes ``work`` at the
    end (removing them would disturb what it measures)."""

    def __init__(self, work: Path, files: int = 100) -> None:
        self.root = work / ".create-probe"
        self.files = files
        self.best: float | None = None
        self.count = 0
        self.waited = 0.0
        self.before: list[float] = []  # µs per create at the start of each timed run

    def probe(self) -> float:
        """Microseconds per file created, now."""
        self.count += 1
        folder = self.root / str(self.count)
        folder.mkdir(parents=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        start = time.perf_counter()
        for i in range(self.files):
            os.close(os.open(folder / str(i), flags, 0o644))
        us = (time.perf_counter() - start) / self.files * 1e6
        self.best = us if self.best is None else min(self.best, us)
        return us

    def settle(self, *, patience: float = 90.0, pause: float = 2.0) -> float:
        """Probe until a file costs at most QUIET_CREATE_US, or at most twice the best
        probe of the earlier settles (a disk slower than that when quiet; never above 3x
        QUIET_CREATE_US), for at most ``patience`` seconds; the last probe (µs) is
        recorded and returned. (A disk recovering from removals gets faster only slowly,
        over a minute or more: probes of one settle are no reference for each other.)"""
        start = time.monotonic()
        quiet = QUIET_CREATE_US
        if self.best is not None:
            quiet = min(max(quiet, 2 * self.best), 3 * QUIET_CREATE_US)
        while True:
            us = self.probe()
            if us <= quiet or time.monotonic() - start >= patience:
                break
            time.sleep(pause)
        self.waited += time.monotonic() - start
        self.before.append(us)
        return us


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
