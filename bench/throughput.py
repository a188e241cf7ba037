"""1. Throughput: N trivial two-command jobs, concurrency 2, flowbatch against its peers.

Every tool does the same N jobs (each: ``echo n > out.txt`` then a ``results.json``, in a
folder of its own), timed as a whole process, start-up included; what a tool needs set up
before (requests dropped, a Snakefile, a signac workspace) is done before the clock starts.
The limit is ``xargs -P 2`` running the two commands in bash. Overhead per job = (tool's
time - the limit's time) / N. flowServ and signac-flow run each job's commands with
``shell=True``, that is ``/bin/sh`` (dash on Debian, which starts in about half of bash's
time); their overhead is taken against the same limit in ``sh`` (``SH_LIMIT``), so that no
tool is credited with its shell.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from flowbatch.render.script import read_markers

from .common import (
    CMD1,
    CMD2,
    FLOWBATCH,
    TEMPLATE,
    VENVS,
    CreateProbe,
    Timing,
    fresh,
    last_cpu,
    timed,
)
from .sites import WORKFLOW, drop_many, make_site, span, states

PEERS = {
    "flowserv": ["flowserv-core==0.9.4", "pyyaml-include<2", "SQLAlchemy<2"],
    "snakemake": ["snakemake"],
    "signac": ["signac-flow"],
}


# -- the peers' virtual environments ---------------------------------------------------------
def ensure_venv(name: str, *, log: Any = print) -> tuple[Path | None, str | None]:
    """bench/.venvs/<name> with the peer installed; (python, None) or (None, error)."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists() and python.exists():
        return python, None
    log(f"  installing {name} into {venv} ...")
    try:
        if not python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True
            )
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            + PEERS[name],
            capture_output=True,
            text=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if proc.returncode != 0:
        return None, (proc.stderr or proc.stdout).strip()[-800:]
    marker.write_text("ok\n")
    return python, None


def peer_version(python: Path, module: str) -> str:
    out = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({module!r}))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "?"


# -- one tool each -----------------------------------------------------------------------------
def run_xargs(work: Path, n: int, shell: str = "bash") -> float:
    fresh(work)
    job = f"mkdir -p jobs/$0 && cd jobs/$0 && {CMD1.format(n='$0')} && {CMD2.format(n='$0')}"
    cmd = f"seq 0 {n - 1} | xargs -P 2 -n 1 {shell} -c {_sq(job)}"
    elapsed = timed(cmd, cwd=work, shell=True)
    _check_files(work / "jobs", n)
    return elapsed


#: the limit in ``/bin/sh``, for the peers that run their jobs' commands there
SH_LIMIT = "xargs -P 2, sh"
#: the peers whose jobs run in ``/bin/sh`` (``subprocess.run(cmd, shell=True)``): flowServ's
#: subprocess worker, signac-flow's ``cmd=True`` operations; Snakemake picks bash
SH_TOOLS = ("flowServ", "signac-flow")


def sh_name() -> str:
    """What ``/bin/sh`` is here (``dash`` on Debian)."""
    return os.path.basename(os.path.realpath("/bin/sh"))


#: the row of a root daemon serving another user's requests (its production case)
AS_USER = "flowbatch, another user's requests"
#: that user (``nobody``: every Debian system has it; the runs need no home or shell)
OTHER_UID = 65534


#: the last flowbatch round's start and end (ms): its process started -> its first run
#: RUNNING, its last run ended -> its process gone
_LAST_SPAN = [(0.0, 0.0)]


def run_flowbatch(work: Path, n: int, *, owner: int | None = None) -> float:
    """``owner``: the requests belong to this user (the daemon is root): every run is
    started as that user in a folder given to it, as on a login node."""
    fresh(work)
    if owner is not None:
        work.chmod(0o755)  # in a folder the runs' user reaches (see bench())
    site = make_site(work / "site")
    site.close()
    drop_many(site.layout.queue, n)
    if owner is not None:
        for request in site.layout.queue.glob("*.yaml"):
            os.chown(request, owner, owner)
    env = {**os.environ, "FLOWBATCH_SITE": str(site.root)}
    began = time.time()
    elapsed = timed([*FLOWBATCH, "daemon", "--until-idle"], env=env, timeout=1800)
    gone = time.time()
    counted = states(site.root)
    if counted.get("SUCCESS") != n:
        raise RuntimeError(f"flowbatch: expected {n} SUCCESS, found {counted}")
    first, last = span(site.root)
    _LAST_SPAN[0] = ((first - began) * 1000, (gone - last) * 1000)
    board = site.root / "results" / WORKFLOW / "leaderboard.json"
    if not board.is_file() or not json.loads(board.read_text())["ranking"]:
        raise RuntimeError("flowbatch: no leaderboard written")
    return elapsed


def run_contract(work: Path, n: int) -> float:
    """flowbatch's own ``run.sh`` files, from the flowbatch round just before, started by
    ``xargs -P 2`` the way the local executor starts them (one ``bash run.sh`` each): the
    job side of the run contract (per-step logs, status markers, subshells where needed)
    with no daemon at all. Its distance to the limit is what the contract costs."""
    flowbatch_round = work.parent / work.name.replace("contract", "flowbatch", 1)
    runs = sorted((flowbatch_round / "site" / "results" / WORKFLOW / "runs").iterdir())
    runs = [r for r in runs if (r / "run.sh").is_file()]
    if len(runs) != n:
        raise RuntimeError(f"expected {n} run folders of the flowbatch round, found {len(runs)}")
    for run in runs:  # as intake leaves them: empty logs/ and status/, no outputs yet
        for name in ("status", "logs"):
            shutil.rmtree(run / name, ignore_errors=True)
            (run / name).mkdir()
        for name in ("out.txt", "results.json"):
            (run / name).unlink(missing_ok=True)
    listing = work / "scripts.txt"
    work.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{r / 'run.sh'}\n" for r in runs))
    env = {**os.environ, "FLOWBATCH_SCRIPT_LOG": "logs/script.log"}
    elapsed = timed(f"xargs -P 2 -n 1 bash < {_sq(str(listing))}", shell=True, env=env)
    bad = [r.name for r in runs if not _ended_well(r)]
    if bad:
        raise RuntimeError(f"{len(bad)} scripts failed, e.g. {bad[0]}")
    _check_files(runs[0].parent, n)
    return elapsed


def _ended_well(run_dir: Path) -> bool:
    """The script's exit marker says 0."""
    ended = read_markers(run_dir).exit
    return ended is not None and ended[0] == 0


#: the floor rows (``bench/floor.py``): label -> mode, each adding to the one before
FLOORS = {
    "floor 1: a folder per run": "folder",
    "floor 2: + what a restart needs": "tree",
    "floor 3: + step logs and exit markers": "contract",
    "floor 4: + flowbatch's records, written plainly": "product",
    "floor 5: + the libraries chosen for flowbatch": "stack",
}
FLOOR4, FLOOR5 = list(FLOORS)[3:5]


def run_floor(work: Path, n: int, mode: str) -> float:
    """The least a daemon does per run for flowbatch's tree (see ``bench/floor.py``),
    run by the same Python as flowbatch, on the same requests."""
    fresh(work)
    queue = work / "site" / "queue"
    queue.mkdir(parents=True)
    drop_many(queue, n)
    floor = Path(__file__).with_name("floor.py")
    elapsed = timed([sys.executable, str(floor), str(work / "site"), mode], timeout=1800)
    _check_files(work / "site" / "runs", n)
    return elapsed


def run_flowserv(python: Path, work: Path, n: int) -> float:
    fresh(work)
    template = work / "template"
    template.mkdir()
    (template / "benchmark.yaml").write_text(TEMPLATE)
    (template / "flowserv.yaml").write_text("name: bench\nspecfile: benchmark.yaml\n")
    script = work / "run_flowserv.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            os.environ.setdefault("FLOWSERV_ASYNC", "False")
            from flowserv.client import Flowserv
            client = Flowserv(basedir={str(work / "fs")!r}, open_access=True, clear=True)
            wf = client.open(client.install(source={str(template)!r}))
            bad = 0
            for i in range({n}):
                run = wf.start_run({{"n": i}})
                if not run.is_success():
                    bad += 1
                    if bad == 1:
                        print(run, getattr(run, "messages", lambda: None)(), file=sys.stderr)
            with wf.service() as api:  # the leaderboard, as flowServ's API serves it
                ranking = api.workflows().get_ranking(wf.workflow_id)
            print("ranked", len(ranking.get("ranking", [])))
            sys.exit(1 if bad else 0)
            """
        )
    )
    return timed([str(python), str(script)], cwd=work, timeout=1800)


def run_snakemake(python: Path, work: Path, n: int) -> float:
    fresh(work)
    rules = [
        "rule all:\n    input: " + ", ".join(f'"jobs/{i}/results.json"' for i in range(n)) + "\n"
    ]
    for i in range(n):
        job = f"cd jobs/{i} && {CMD1.format(n=i)} && {CMD2.format(n=i)}"
        job = job.replace("{", "{{").replace("}", "}}")
        rules.append(f'rule j{i}:\n    output: "jobs/{i}/results.json"\n    shell: {_pystr(job)}\n')
    (work / "Snakefile").write_text("\n".join(rules))
    snakemake = python.parent / "snakemake"
    elapsed = timed(
        [str(snakemake), "--cores", "2", "--quiet", "all", "-s", "Snakefile"],
        cwd=work,
        timeout=3600,
    )
    _check_files(work / "jobs", n)
    return elapsed


def run_signac(python: Path, work: Path, n: int) -> float:
    fresh(work)
    setup = (
        "import signac\n"
        f"p = signac.init_project({str(work)!r})\n"
        f"for i in range({n}):\n    p.open_job({{'n': i}}).init()\n"
    )
    subprocess.run([str(python), "-c", setup], check=True, cwd=work, capture_output=True)
    job = f"cd {{job.path}} && {CMD1.format(n='{job.sp.n}')} && {CMD2.format(n='{job.sp.n}')}"
    (work / "project.py").write_text(
        textwrap.dedent(
            f"""
            from flow import FlowProject

            class Project(FlowProject):
                pass

            @Project.post.isfile("results.json")
            @Project.operation(cmd=True)
            def work(job):
                return f{_pystr(job.replace('{"', '{{"').replace("%d}", "%d}}"))}

            if __name__ == "__main__":
                Project().main()
            """
        )
    )
    elapsed = timed([str(python), "project.py", "run", "--parallel", "2"], cwd=work, timeout=3600)
    _check_files(work / "workspace", n)
    return elapsed


def _check_files(folder: Path, n: int) -> None:
    found = len(list(folder.glob("*/results.json")))
    if found != n:
        raise RuntimeError(f"{found} results.json of {n} in {folder}")


def _sq(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _pystr(text: str) -> str:
    return json.dumps(text)


#: the cores the tools share (``xargs -P 2`` and every tool run 2 jobs at once)
CORES = os.cpu_count() or 2

#: the job side of flowbatch's run contract alone (see run_contract)
CONTRACT = "flowbatch run.sh by xargs -P 2"


# -- the section -----------------------------------------------------------------------------
def bench(
    work: Path, *, n: int, repeats: int, peers: bool, settle: float = 90.0, log: Any = print
) -> dict[str, Any]:
    tools: dict[str, Any] = {"xargs -P 2": lambda w: run_xargs(w, n)}
    if peers:  # flowServ and signac-flow run their jobs in /bin/sh (SH_TOOLS)
        tools[SH_LIMIT] = lambda w: run_xargs(w, n, shell="sh")
    tools["flowbatch"] = lambda w: run_flowbatch(w, n)
    public: Path | None = None
    if os.geteuid() == 0:
        # the runs' user must reach its folders: not under a 0700 scratch folder
        public = Path(tempfile.mkdtemp(prefix="flowbatch-bench-user-", dir="/tmp"))
        public.chmod(0o755)
        tools[AS_USER] = lambda w: run_flowbatch(public / w.name, n, owner=OTHER_UID)
    tools[CONTRACT] = lambda w: run_contract(w, n)
    for label, mode in FLOORS.items():
        tools[label] = lambda w, m=mode: run_floor(w, n, m)
    notes: dict[str, str] = {}
    versions: dict[str, str] = {}
    if peers:
        for name, label, module, runner in (
            ("flowserv", "flowServ", "flowserv-core", run_flowserv),
            ("snakemake", "Snakemake", "snakemake", run_snakemake),
            ("signac", "signac-flow", "signac-flow", run_signac),
        ):
            python, error = ensure_venv(name, log=log)
            if python is None:
                notes[label] = f"not installable here: {error}"
                continue
            versions[label] = peer_version(python, module)
            tools[label] = lambda w, r=runner, p=python: r(p, w, n)
    times = {name: Timing() for name in tools}
    cpus = {name: Timing() for name in tools}
    spans: dict[str, list[tuple[float, float]]] = {"flowbatch": [], AS_USER: []}
    folders = {
        CONTRACT: "contract",
        SH_LIMIT: "xargs-sh",
        AS_USER: "flowbatch-as-user",
        **{label: f"floor-{m}" for label, m in FLOORS.items()},
    }
    probe = CreateProbe(work)
    for rep in range(repeats):
        for name, fn in tools.items():
            if name in notes:
                continue
            started = time.perf_counter()
            try:
                folder = folders.get(name) or name.split()[0].lower()
                # a folder per tool and round, all removed at the end, and a quiet disk
                # before each timing: files removed shortly before (a tree, a peer's
                # scratch folders) make every file created cost 10-30x (CreateProbe)
                probe.settle(patience=settle)
                elapsed = fn(work / f"{folder}-{rep + 1}")
            except Exception as exc:  # a peer failing is a finding, not the end of the run
                notes[name] = f"failed: {str(exc)[-600:]}"
                log(f"  {name}: FAILED ({str(exc)[-200:]})")
                continue
            times[name].add(elapsed)
            cpus[name].add(last_cpu())
            if name in spans:
                spans[name].append(_LAST_SPAN[0])
            log(
                f"  round {rep + 1}/{repeats} {name}: {elapsed:.2f} s "
                f"({time.perf_counter() - started:.1f} s with setup; "
                f"a file created before: {probe.before[-1]:.0f} µs)"
            )
    probe.settle(patience=settle)
    phases = daemon_phases(work / "phases", n, log=log)
    launch = launch_costs(work / "launch", min(n, 200), log=log)
    shutil.rmtree(work, ignore_errors=True)
    if public is not None:
        shutil.rmtree(public, ignore_errors=True)
    limits = {"bash": times["xargs -P 2"].median}
    if times.get(SH_LIMIT) and times[SH_LIMIT].values:
        limits["sh"] = times[SH_LIMIT].median
    rows = []
    for name, t in times.items():
        if not t.values:
            continue
        shell = "sh" if name in SH_TOOLS or name == SH_LIMIT else "bash"
        # a peer in sh against the limit in sh; the bash limit if that one failed
        limit = limits.get(shell, limits["bash"])
        rows.append(
            {
                "tool": name,
                "version": versions.get(name, ""),
                "limit_shell": shell if shell in limits else "bash",
                "seconds": t.values,
                "median_s": t.median,
                "runs_per_s": n / t.median,
                "per_job_ms": t.median / n * 1000,
                "overhead_ms": (t.median - limit) / n * 1000,
                "vs_limit": t.median / limit,
                "cpu_ms": cpus[name].median / n * 1000,
                **(
                    {
                        "start_ms": statistics.median(x[0] for x in spans[name]),
                        "end_ms": statistics.median(x[1] for x in spans[name]),
                    }
                    if spans.get(name)
                    else {}
                ),
            }
        )
    settled = {"waited_s": probe.waited, "best_us": probe.best, "before_us": probe.before}
    return {
        "n": n,
        "repeats": repeats,
        "rows": rows,
        "notes": notes,
        "phases": phases,
        "launch": launch,
        "settle": settled,
    }


def daemon_phases(work: Path, n: int, *, log: Any = print) -> dict[str, Any] | None:
    """The daemon's CPU per run by phase (``bench/phases.py``, a process of its own)."""
    return _measure("phases", work, n, log)


def launch_costs(work: Path, n: int, *, log: Any = print) -> dict[str, Any] | None:
    """A launch's cost to the daemon by who the run belongs to (``bench/launch.py``)."""
    return _measure("launch", work, n, log)


def _measure(module: str, work: Path, n: int, log: Any) -> dict[str, Any] | None:
    """``python -m bench.<module> WORK N`` in a process of its own: its last line, JSON."""
    proc = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", str(work), str(n)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        log(f"  {module}: FAILED ({proc.stderr.strip()[-300:]})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _launch_lines(launch: dict[str, Any] | None) -> list[str]:
    if not launch:
        return []
    if launch.get("skipped"):
        return ["", f"Starting a run as its user: not measured ({launch['skipped']})."]
    rows = {r["mode"]: r for r in launch["rows"]}
    lines = [
        "",
        "Starting a run as its user (`bench/launch.py`: the local executor's own launch, "
        f"{launch['n']} launches a round, {launch['rounds']} alternating rounds, medians, "
        f"in a process the size of a daemon, {launch['rss_mib']:.0f} MiB): a root daemon "
        "starts each run as the user who dropped its request, a case the rows above (the "
        "daemon's own requests) do not show.",
        "",
        "| how | daemon's CPU per launch | wall per launch |",
        "|---|---:|---:|",
    ]
    for r in launch["rows"]:
        lines.append(f"| {r['mode']} | {r['cpu_ms']:.2f} ms | {r['wall_ms']:.2f} ms |")
    fork = rows.get("another user, subprocess's own change")
    via = rows.get("another user, setpriv")
    if fork and via:
        lines += [
            "",
            f"subprocess forks the whole daemon to change the user (its vfork cannot): "
            f"{fork['cpu_ms'] / via['cpu_ms']:.1f}x the daemon's CPU of a start through "
            "setpriv, exec'd from the vfork, which flowbatch uses when it finds a working "
            "one (it falls back to subprocess's change otherwise).",
        ]
    return lines


def _settle_lines(settle: dict[str, Any] | None) -> list[str]:
    if not settle or not settle.get("before_us"):
        return []
    before = settle["before_us"]
    return [
        f"- A quiet disk before each timing (`CreateProbe`): creating a file cost "
        f"{statistics.median(before):.0f} µs (median; {min(before):.0f}-{max(before):.0f}) "
        f"at the start of the timed runs, the harness waiting {settle['waited_s']:.0f} s in "
        "all for it to settle. This disk (ext4 without a journal) makes each file created "
        "cost 10-30x more for up to a minute after many files were removed: without the "
        "wait, a tool that removes its scratch files slows the next one (see NOTES)."
    ]


def _phase_lines(phases: dict[str, Any] | None) -> list[str]:
    if not phases:
        return []
    lines = [
        "",
        f"Where the daemon's CPU goes per run (`bench/phases.py`: the same {phases['n']} "
        "requests served in one process, CPU of the main thread summed per phase by "
        "wrappers; a phase includes the indented ones under it; the run.json and index "
        "writes happen inside the phases above them):",
        "",
        "| phase | CPU per run |",
        "|---|---:|",
    ]
    for p in phases["phases"]:
        lines.append(f"| {'&nbsp;&nbsp;' * 2 * p['depth']}{p['label']} | {p['ms']:.2f} ms |")
    lines += [
        f"| main thread in all | {phases['main_thread_ms']:.2f} ms |",
        f"| other threads (report files, reaper, file watcher) | "
        f"{phases['other_threads_ms']:.2f} ms |",
        "",
        f"Wall time per run in that process: {phases['wall_ms']:.2f} ms: the main thread "
        "is busy most of it, so its CPU per run is what bounds flowbatch's throughput "
        "here (the jobs use the other core).",
    ]
    return lines


def _per_round(row: dict[str, Any], limit: dict[str, Any], n: int) -> list[float]:
    """A row's overhead per job against the limit of the same round (ms)."""
    return [
        (t - base) * 1000 / n for t, base in zip(row["seconds"], limit["seconds"], strict=False)
    ]


def _floor_lines(rows: list[dict[str, Any]], fb: dict[str, Any], n: int) -> list[str]:
    """What the floor rows say about the target, from this run's figures."""
    floors = {r["tool"]: r for r in rows if r["tool"] in FLOORS}
    if len(floors) != len(FLOORS):
        return []
    f1, f2, f3, f4, f5 = (floors[label] for label in FLOORS)
    lines = [
        "- The floor (`bench/floor.py`, the same Python, no flowbatch code): the least a "
        "daemon does per run for this tree, each row adding to the one before. A folder per "
        f"run: {f1['overhead_ms']:+.2f} ms per run against the limit (the limit starts a "
        "`mkdir` process per job, which a daemon does by a syscall); the files a restarted "
        "daemon needs (a claim, the hidden folder with `run.sh` and `run.json` renamed into "
        f"place, `run.json` replaced at the end): {f2['overhead_ms'] - f1['overhead_ms']:+.2f} "
        f"ms; per-step logs and exit markers: {f3['overhead_ms'] - f2['overhead_ms']:+.2f} ms; "
        f"{f3['overhead_ms']:+.2f} ms in all ({f3['cpu_ms']:.2f} ms of CPU per run).",
        "- Floor 4 adds the rest of what flowbatch keeps of every run, written as plainly as "
        "Python allows (no pydantic, Jinja2, pathlib or peewee; see `bench/floor.py`): the "
        "request parsed and checked, the template's file, `run.json` at each of the three "
        "states, flowbatch's index tables with their indexes, a log line per state, the run "
        f"page with the logs' last lines, `leaderboard.html`: "
        f"{f4['overhead_ms'] - f3['overhead_ms']:+.2f} ms, {f4['overhead_ms']:+.2f} ms above "
        f"the limit in all ({f4['cpu_ms']:.2f} ms of CPU per run). flowbatch takes "
        f"{fb['overhead_ms'] - f4['overhead_ms']:.2f} ms per run beyond it: the cost of its "
        "own code for the same records (start-up, the checks and models, templates, the "
        "index layer, the fuller script and its markers), not of the records.",
        "- Floor 5 runs floor 4 on the libraries the project chose for flowbatch, used only "
        "where a daemon on them cannot do without: pydantic, Jinja2 and peewee loaded at "
        "its start (not click: a daemon could do without it), the site's config and each "
        "request checked by pydantic models, each run script rendered by a compiled "
        "Jinja2 template, the index tables "
        f"declared as peewee models: {f5['overhead_ms'] - f4['overhead_ms']:+.2f} ms, "
        f"{f5['overhead_ms']:+.2f} ms above the limit in all ({f5['cpu_ms']:.2f} ms of CPU "
        f"per run). flowbatch takes {fb['overhead_ms'] - f5['overhead_ms']:.2f} ms per run "
        "beyond it.",
    ]
    limit = next((r for r in rows if r["tool"] == "xargs -P 2"), None)
    per_round = _per_round(f4, limit, n) if limit else []
    if per_round and min(per_round) <= 2.0 < max(per_round):
        ours = _per_round(fb, limit, n) if limit else []
        lines.append(
            "- Round by round (each against the limit of its own round), floor 4 moved "
            f"across the target: {', '.join(f'{x:+.2f}' for x in per_round)} ms per run "
            f"(flowbatch: {', '.join(f'{x:+.2f}' for x in ours)} ms). The floor is mostly "
            "files created, whose cost moves by 10-30x after files were removed (see "
            "the quiet-disk line and NOTES), so this run does not settle whether "
            "flowbatch's records alone fit the target."
        )
    elif f4["overhead_ms"] > 2.0:
        lines.append(
            "- So the target is out of reach on this machine for what flowbatch keeps of a "
            f"run: written plainly, its records already cost {f4['overhead_ms']:.2f} ms per "
            f"run above the limit, {f4['overhead_ms'] - 2.0:.2f} ms over the 2 ms."
        )
    else:
        lines.append(
            f"- Floor 4 is within the target here ({f4['overhead_ms']:.2f} ms): the records "
            "flowbatch keeps fit in 2 ms per run; what keeps flowbatch above is its own code."
        )
    return lines


def _target_line(fb: dict[str, Any], limit: dict[str, Any] | None, n: int) -> str:
    """The verdict: met only if the medians' distance and the median of the rounds' own
    distances (each round against its own limit: the minute's speed cancels) are both
    within 2 ms; a run whose medians meet it but whose rounds mostly do not says so."""
    head = "- Target (at most 2 ms per run above the limit):"
    rounds = _per_round(fb, limit, n) if limit and len(fb["seconds"]) >= 2 else []
    if not rounds:
        verdict = "met" if fb["overhead_ms"] <= 2.0 else "NOT met"
        return f"{head} {verdict} ({fb['overhead_ms']:.2f} ms)."
    paired = statistics.median(rounds)
    within = sum(1 for x in rounds if x <= 2.0)
    by_medians, by_rounds = fb["overhead_ms"] <= 2.0, paired <= 2.0
    if by_medians and by_rounds:
        verdict = "met"
    elif by_medians or by_rounds:
        verdict = "met by " + ("the medians" if by_medians else "the rounds") + " only"
    else:
        verdict = "NOT met"
    return (
        f"{head} {verdict} ({fb['overhead_ms']:.2f} ms from the medians; the rounds' own "
        f"distances {', '.join(f'{x:+.2f}' for x in rounds)} ms, median {paired:+.2f}: "
        f"{within} of {len(rounds)} rounds within it)."
    )


def _span_lines(fb: dict[str, Any], limit: dict[str, Any] | None, n: int) -> list[str]:
    """How much of flowbatch's time is its start and its end, and the burst between."""
    if "start_ms" not in fb or limit is None:
        return []
    start, end = fb["start_ms"], fb["end_ms"]
    burst = (fb["median_s"] * 1000 - start - end) / n
    return [
        f"- flowbatch's start and end (medians of its rounds): its first run RUNNING "
        f"{start:.0f} ms after its process was started (imports, the site, the claims), "
        f"the process gone {end:.0f} ms after its last run ended (the final leaderboard, "
        f"the stop): {(start + end) / n:.2f} ms of each run's share. Between them "
        f"{burst:.2f} ms a run against the limit's {limit['per_job_ms']:.2f} ms a job "
        f"({burst - limit['per_job_ms']:+.2f} ms)."
    ]


def _shell_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Which tools run their jobs in ``/bin/sh``, and what that shell is worth here."""
    bash = next((r for r in rows if r["tool"] == "xargs -P 2"), None)
    sh = next((r for r in rows if r["tool"] == SH_LIMIT), None)
    in_sh = [r["tool"] for r in rows if r["tool"] in SH_TOOLS]
    if bash is None or sh is None or not in_sh:
        return []
    return [
        f"- The shell: {' and '.join(in_sh)} run each job's commands with `/bin/sh` "
        f"(`shell=True`; {sh_name()} here), flowbatch (`bash run.sh`), Snakemake and the "
        f"limit in bash. The same commands by `{SH_LIMIT.split(',')[0]} sh -c` took "
        f"{sh['per_job_ms']:.2f} ms a job against bash's {bash['per_job_ms']:.2f} ms "
        f"(bash {bash['per_job_ms'] - sh['per_job_ms']:.2f} ms a job more; CPU "
        f"{sh['cpu_ms']:.2f} against {bash['cpu_ms']:.2f} ms): the rows marked (sh) are "
        "measured against that limit, so that no tool's overhead is lowered by its "
        "shell. The times and the ratios of times are the tools' own."
        if "cpu_ms" in sh and "cpu_ms" in bash
        else f"- The shell: {' and '.join(in_sh)} run their jobs in `/bin/sh`; the rows "
        "marked (sh) are measured against the limit in sh."
    ]


def _peers_line(
    peers: list[dict[str, Any]], fb: dict[str, Any], rows: list[dict[str, Any]], n: int
) -> list[str]:
    """The target "ahead of every peer", each overhead against the limit in its shell."""
    if not peers:
        return []
    best = min(peers, key=lambda r: r["overhead_ms"])
    floor4 = next((r for r in rows if r["tool"] == FLOOR4), None)
    floor5 = next((r for r in rows if r["tool"] == FLOOR5), None)
    verdict = "met" if fb["overhead_ms"] < best["overhead_ms"] else "NOT met"
    shell = " (in sh, against the limit in sh)" if best.get("limit_shell") == "sh" else ""
    tail = (
        f"; floor 4, flowbatch's records written plainly, {floor4['overhead_ms']:+.2f} ms"
        if floor4
        else ""
    )
    if floor5:
        tail += f"; floor 5, on flowbatch's libraries, {floor5['overhead_ms']:+.2f} ms"
    return [
        f"- Target (ahead of every peer, each against the limit in its own shell): {verdict} "
        f"(flowbatch {fb['overhead_ms']:+.2f} ms a run; the nearest peer, {best['tool']}"
        f"{shell}, {best['overhead_ms']:+.2f} ms a job{tail}).",
        *_reach_lines(peers, rows, n),
    ]


def _reach_lines(peers: list[dict[str, Any]], rows: list[dict[str, Any]], n: int) -> list[str]:
    """Whether "ahead of every peer" is within reach of a daemon on flowbatch's libraries:
    floor 5 against the nearest peer, round by round, each against the limit of its own
    shell in the same round (the minute's speed cancels)."""
    floor5 = next((r for r in rows if r["tool"] == FLOOR5), None)
    limits = {r["tool"]: r for r in rows if r["tool"] in ("xargs -P 2", SH_LIMIT)}
    if floor5 is None or len(limits) < 2 or len(floor5["seconds"]) < 2:
        return []
    best = min(peers, key=lambda r: r["overhead_ms"])
    peer_limit = limits[SH_LIMIT if best.get("limit_shell") == "sh" else "xargs -P 2"]
    ours = _per_round(floor5, limits["xargs -P 2"], n)
    theirs = _per_round(best, peer_limit, n)
    behind = sum(1 for a, b in zip(ours, theirs, strict=False) if a >= b)
    both = (
        f"floor 5 {', '.join(f'{x:+.2f}' for x in ours)} ms a run against {best['tool']}'s "
        f"{', '.join(f'{x:+.2f}' for x in theirs)} ms a job"
    )
    if behind == len(ours):
        return [
            f"- Within reach? No, on this machine: floor 5, the least a daemon on the "
            f"libraries chosen for flowbatch does for its records, is behind {best['tool']} "
            f"in every round ({both}). So no daemon that keeps flowbatch's records on those "
            f"libraries can be ahead of {best['tool']} here, however lean its own code; "
            "only one written without them (its checks, templates and index by hand) "
            "might."
        ]
    if behind:
        return [
            f"- Within reach? Not settled by this run: floor 5 is behind {best['tool']} in "
            f"{behind} of {len(ours)} rounds ({both})."
        ]
    return [
        f"- Within reach? Yes: floor 5 is ahead of {best['tool']} in every round ({both}); "
        "what keeps flowbatch behind is its own code."
    ]


def _peer_budget_lines(
    peers: list[dict[str, Any]],
    fb: dict[str, Any],
    limit: dict[str, Any] | None,
    contract: dict[str, Any] | None,
    n: int,
) -> list[str]:
    """What "ahead of every peer" leaves the daemon, in CPU a run: the nearest peer's
    distance above its limit makes flowbatch's wall time a run at most the limit plus
    that distance; less the share of flowbatch's start and end (one core working), the
    burst's wall time a run, on both cores at most twice that in CPU, of which the run
    scripts take their own part."""
    needed = ("cpu_ms", "start_ms", "end_ms")
    if not peers or limit is None or contract is None or "cpu_ms" not in contract:
        return []
    if any(k not in fb for k in needed):
        return []
    best = min(peers, key=lambda r: r["overhead_ms"])
    wall = limit["per_job_ms"] + best["overhead_ms"]
    ends = (fb["start_ms"] + fb["end_ms"]) / n
    cpu = CORES * (wall - ends)
    left = cpu - contract["cpu_ms"]
    burst = fb["cpu_ms"] - contract["cpu_ms"] - ends  # its start and end: one core busy
    share = (
        f"{left:.2f} ms a run left for the daemon, which uses about {burst:.2f} "
        f"({burst / left:.1f}x)"
        if left > 0
        else "nothing left for the daemon"
    )
    return [
        f"- What being ahead of {best['tool']} would take: a run done in at most "
        f"{limit['per_job_ms']:.2f} + {best['overhead_ms']:.2f} = {wall:.2f} ms of wall time; "
        f"less its share of flowbatch's start and end ({ends:.2f} ms, one core working), "
        f"{wall - ends:.2f} ms a run for the burst, at most {cpu:.2f} ms of CPU on {CORES} "
        f"cores, of which its run.sh takes {contract['cpu_ms']:.2f} ms: {share} in the "
        "burst. Only less CPU a run closes that, not more parallel work: both cores are "
        "the bound."
    ]


def _round_lines(rows: list[dict[str, Any]], fb: dict[str, Any], n: int) -> list[str]:
    """Each round of flowbatch's rows against the limit of the same round: the spread
    the medians above hide (the machine's speed moves between minutes)."""
    limit = next((r for r in rows if r["tool"] == "xargs -P 2"), None)
    if limit is None or len(fb["seconds"]) < 2:
        return []
    parts = []
    for row in (fb, next((r for r in rows if r["tool"] == AS_USER), None)):
        if row is None:
            continue
        pairs = zip(row["seconds"], limit["seconds"], strict=False)
        ratios = ", ".join(f"{t / base:.2f}x" for t, base in pairs)
        over = ", ".join(f"{x:+.2f}" for x in _per_round(row, limit, n))
        parts.append(f"{row['tool']} {ratios} the limit ({over} ms per run)")
    return [f"- Round by round, against the limit of the same round: {'; '.join(parts)}."]


def markdown(res: dict[str, Any]) -> str:
    n = res["n"]
    lines = [
        "## 1. Throughput",
        "",
        f"{n} trivial two-command jobs (`echo n > out.txt`, then a `results.json`), each in "
        "its own folder, at most 2 at once; each tool timed as a whole process, start-up "
        f"included; median of {res['repeats']} rounds, the tools taking turns in each round. "
        "flowbatch: requests dropped into `queue/` before the clock starts, then "
        "`flowbatch daemon --until-idle` (intake, run folders, run.sh, run.json, index, "
        "leaderboard.json/html/csv), checked: every run SUCCESS, leaderboard written. "
        "Overhead per job = (tool - limit) / N, the limit in the shell the tool runs its "
        "jobs' commands in (see below). CPU per job = user + system CPU of the "
        "tool's whole process tree (every process it waited for) / N.",
        "",
        "| tool | median s | runs/s | per job | overhead per job above the limit | x limit "
        "| CPU per job |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        label = f"{r['tool']} {r['version']}".strip()
        if r.get("limit_shell") == "sh" and r["tool"] != SH_LIMIT:
            label += " (sh)"
        lines.append(
            f"| {label} | {r['median_s']:.2f} | {r['runs_per_s']:.0f} | "
            f"{r['per_job_ms']:.2f} ms | {r['overhead_ms']:.2f} ms | {r['vs_limit']:.2f} | "
            + (f"{r['cpu_ms']:.2f} ms |" if "cpu_ms" in r else "|")
        )
    fb = next((r for r in res["rows"] if r["tool"] == "flowbatch"), None)
    if fb:
        ours = ("flowbatch", "xargs -P 2", SH_LIMIT, CONTRACT, AS_USER, *FLOORS)
        others = [r for r in res["rows"] if r["tool"] not in ours]
        lines.append("")
        for r in others:
            lines.append(
                f"- flowbatch / {r['tool']}: {fb['median_s'] / r['median_s']:.2f}x the time "
                f"({r['median_s'] / fb['median_s']:.2f}x faster)"
                if fb["median_s"] < r["median_s"]
                else f"- flowbatch / {r['tool']}: {fb['median_s'] / r['median_s']:.2f}x the time"
            )
        lines.extend(_shell_lines(res["rows"]))
        lines.extend(_peers_line(others, fb, res["rows"], n))
        as_user = next((r for r in res["rows"] if r["tool"] == AS_USER), None)
        if as_user:
            lines.append(
                f"- {AS_USER} (a root daemon, each run started as the request's owner, "
                f"uid {OTHER_UID}, in a folder given to that user, as on a login node): "
                f"{as_user['overhead_ms']:.2f} ms per run above the limit, "
                f"{as_user['median_s'] / fb['median_s']:.2f}x the time of the daemon's own "
                "requests (see the launch table below for what a start as another user costs)."
            )
        contract = next((r for r in res["rows"] if r["tool"] == CONTRACT), None)
        if contract:
            lines.append(
                f"- flowbatch's own run.sh files without the daemon ({CONTRACT}): "
                f"{contract['overhead_ms']:.2f} ms per job above the limit: what the run "
                "contract (per-step logs, status markers, a subshell for each command "
                "that is not made of harmless builtins only) costs on "
                f"the job side alone; the daemon adds "
                f"{fb['overhead_ms'] - contract['overhead_ms']:.2f} ms per run on top."
            )
        limit_row = next((r for r in res["rows"] if r["tool"] == "xargs -P 2"), None)
        if contract and limit_row and "cpu_ms" in fb and "cpu_ms" in contract:
            budget = 2 * (limit_row["per_job_ms"] + 2.0)
            lines.append(
                f"- CPU budget: at the target a run takes at most {limit_row['per_job_ms']:.2f}"
                f" + 2 ms of wall time, so on {CORES} cores at most {budget:.2f} ms of CPU. "
                f"flowbatch's run.sh alone uses {contract['cpu_ms']:.2f} ms per job, leaving "
                f"{budget - contract['cpu_ms']:.2f} ms for everything the daemon does per run; "
                f"it uses {fb['cpu_ms'] - contract['cpu_ms']:.2f} ms "
                f"(flowbatch's {fb['cpu_ms']:.2f} ms in all)."
            )
        lines.extend(_peer_budget_lines(others, fb, limit_row, contract, n))
        lines.extend(_floor_lines(res["rows"], fb, res["n"]))
        lines.append(_target_line(fb, limit_row, n))
        lines.extend(_span_lines(fb, limit_row, n))
        lines.extend(_round_lines(res["rows"], fb, n))
    for name, note in res["notes"].items():
        lines.append(f"- {name}: {note}")
    lines.extend(_settle_lines(res.get("settle")))
    lines.extend(_phase_lines(res.get("phases")))
    lines.extend(_launch_lines(res.get("launch")))
    lines.append("")
    return "\n".join(lines)
