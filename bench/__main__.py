"""``python -m bench [--quick]``: run the benchmarks, write BENCHMARKS.md.

Sections: throughput (flowbatch against xargs, flowServ, Snakemake, signac-flow),
latency, ssh, slurm, scale. A section that cannot run here (no root for sshd and Slurm, a
peer that does not install) is reported as such; the others still run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import latency, scale, slurm, ssh, throughput
from .common import ROOT, machine, use_installed

SECTIONS = ("throughput", "latency", "ssh", "slurm", "scale")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller sizes, one round (a few minutes instead of ~20)",
    )
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only these")
    p.add_argument("--skip", action="append", choices=SECTIONS, default=[], help="leave these out")
    p.add_argument("--n", type=int, help="throughput: requests (500; quick 200)")
    p.add_argument("--repeats", type=int, help="throughput rounds (3; quick 1)")
    p.add_argument("--no-peers", action="store_true", help="throughput: flowbatch and xargs only")
    p.add_argument("--drops", type=int, help="latency: drops (50; quick 20)")
    p.add_argument("--ssh-mb", type=int, help="ssh: MB to transfer (100; quick 30)")
    p.add_argument("--ssh-commands", type=int, help="ssh: round trips (200; quick 50)")
    p.add_argument(
        "--slurm-sizes", help="slurm: active jobs, comma-separated (10,100,500; quick 10,100)"
    )
    p.add_argument("--sweep", type=int, default=200, help="slurm: sweep points (200)")
    p.add_argument(
        "--tree", type=int, help="scale: runs in the tree to reindex (10000; quick 2000)"
    )
    p.add_argument(
        "--index", type=int, help="scale: runs in the index to rank (100000; quick 20000)"
    )
    p.add_argument("--idle-seconds", type=float, help="scale: idle daemon (60; quick 10)")
    p.add_argument(
        "--settle",
        type=float,
        default=90.0,
        help="throughput: at most this many seconds of waiting for a quiet disk before "
        "each timed run (90; 0: measure the disk, never wait)",
    )
    p.add_argument(
        "--here",
        action="store_true",
        help="run the flowbatch of this Python environment, not a plain install of the "
        "work tree in bench/.venvs/flowbatch (faster to start; editable and with the test "
        "extras it is not what users run)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    p.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    p.add_argument(
        "--from-json",
        type=Path,
        help="measure nothing: write the report again "
        "from the raw figures of an earlier run (--json)",
    )
    args = p.parse_args(argv)
    q = args.quick
    defaults = {
        "n": (500, 200),
        "repeats": (3, 1),
        "drops": (50, 20),
        "ssh_mb": (100, 30),
        "ssh_commands": (200, 50),
        "slurm_sizes": ("10,100,500", "10,100"),
        "tree": (10000, 2000),
        "index": (100000, 20000),
        "idle_seconds": (60, 10),
    }
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if q else full)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.from_json:
        earlier = json.loads(args.from_json.read_text(encoding="utf-8"))
        args.quick = earlier.get("quick", False)
        args.out.write_text(render(earlier, args), encoding="utf-8")
        return 0
    wanted = [s for s in (args.only or SECTIONS) if s not in args.skip]
    if args.here:
        # the bytecode an installed flowbatch has (`pip install .` compiles it; an
        # editable install under PYTHONDONTWRITEBYTECODE compiles every module at every start)
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(ROOT / "flowbatch")],
            check=False,
            capture_output=True,
        )
        installed = "here"
    else:
        use_installed(log=log)
        installed = "installed"
    work = args.work or Path(tempfile.mkdtemp(prefix="flowbatch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": args.quick,
        "flowbatch": installed,
        "sections": {},
    }
    runners = {
        "throughput": lambda: throughput.bench(
            work / "throughput",
            n=args.n,
            repeats=args.repeats,
            peers=not args.no_peers,
            settle=args.settle,
            log=log,
        ),
        "latency": lambda: latency.bench(work / "latency", drops=args.drops, log=log),
        "ssh": lambda: ssh.bench(
            work / "ssh",
            commands=args.ssh_commands,
            megabytes=args.ssh_mb,
            repeats=1 if args.quick else 3,
            log=log,
        ),
        "slurm": lambda: slurm.bench(
            work / "slurm",
            sizes=[int(x) for x in args.slurm_sizes.split(",")],
            sweep_points=args.sweep,
            ticks=5,
            log=log,
        ),
        "scale": lambda: scale.bench(
            work / "scale",
            tree=args.tree,
            index=args.index,
            idle_seconds=args.idle_seconds,
            log=log,
        ),
    }
    started = time.perf_counter()
    try:
        for name in wanted:
            log(f"== {name}")
            t = time.perf_counter()
            try:
                results["sections"][name] = {"ok": True, **runners[name]()}
            except Exception as exc:
                log(traceback.format_exc())
                results["sections"][name] = {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}"[:1500],
                }
            results["sections"][name]["wall_s"] = time.perf_counter() - t
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - started
    args.out.write_text(render(results, args), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    log(f"wrote {args.out} ({results['wall_s']:.0f} s)")
    return 0


MODULES = {"throughput": throughput, "latency": latency, "ssh": ssh, "slurm": slurm, "scale": scale}


#: how the run started flowbatch (its ``flowbatch`` figure)
FLOWBATCH_AS = {
    "installed": "a plain `pip install .` of the work tree (no extras), in a virtual "
    "environment of its own (bench/.venvs/flowbatch)",
    "here": "the Python environment the bench ran in (`--here`)",
}


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    m = results["machine"]
    cmd = "python -m bench" + (" --quick" if args.quick else "")
    out = [
        "# Benchmarks",
        "",
        f"Written by `{cmd}` (`bash bench/run.sh` does the same from a fresh clone); "
        "every comparison below was measured side by side in this one run. Figures from a "
        "shared machine are noisy: compare the ratios, not the absolute times.",
        "",
        "| machine | |",
        "|---|---|",
        f"| date | {m['date']} |",
        f"| CPU | {m['cpu']} |",
        f"| cores (nproc) | {m['nproc']} |",
        f"| memory | {m['memory_gib']} GiB |",
        f"| Python | {m['python']} |",
        f"| OS | {m['os']} |",
        f"| load average (1 min) at the start | {m['load_1m']} |",
        f"| flowbatch | {FLOWBATCH_AS.get(results.get('flowbatch', ''), 'not recorded')} |",
        f"| mode | {'quick' if args.quick else 'full'}; the run took "
        f"{results['wall_s'] / 60:.1f} min |",
        "",
    ]
    for name in SECTIONS:
        sec = results["sections"].get(name)
        if sec is None:
            continue
        if not sec["ok"]:
            title = {
                "throughput": "1. Throughput",
                "latency": "2. Latency",
                "ssh": "3. SSH",
                "slurm": "4. Slurm",
                "scale": "5. Scale",
            }[name]
            out += [f"## {title}", "", f"Not measured in this run: `{sec['error']}`", ""]
            continue
        out.append(MODULES[name].markdown(sec))
    notes = ROOT / "bench" / "NOTES.md"
    if notes.is_file():
        out.append(notes.read_text(encoding="utf-8"))
    return "\n".join(out).rstrip() + "\n"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
