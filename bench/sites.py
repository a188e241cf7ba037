"""flowbatch sites for the benchmarks: init, the trivial template, dropping requests."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from flowbatch import api
from flowbatch.site import Site

from .common import TEMPLATE

WORKFLOW = "bench"


def make_site(root: Path, config: dict[str, Any] | None = None) -> Site:
    """A new site with the trivial template installed as ``bench``."""
    Site.init(root)
    conf: dict[str, Any] = {
        "executor": "local",
        "local": {"concurrency": 2},
        # requests are dropped before the clock starts: claim them at once
        "polling": {"interval": 2.0, "settle": 0.0},
    }
    conf.update(config or {})
    (root / "flowbatch.yaml").write_text(yaml.safe_dump(conf), encoding="utf-8")
    template = root.parent / f"{root.name}-template"
    template.mkdir(exist_ok=True)
    (template / "benchmark.yaml").write_text(TEMPLATE, encoding="utf-8")
    site = Site(root)
    api.install(site, template, workflow_id=WORKFLOW)
    return site


def drop(queue: Path, name: str, n: int) -> Path:
    """One request, written under a temporary name then renamed (as the README says)."""
    tmp = queue / f".{name}.tmp"
    tmp.write_text(f"workflow: {WORKFLOW}\narguments:\n  n: {n}\n", encoding="utf-8")
    dest = queue / name
    os.rename(tmp, dest)
    return dest


def drop_many(queue: Path, count: int) -> None:
    for i in range(count):
        drop(queue, f"r{i:05d}.yaml", i)


def states(root: Path) -> dict[str, int]:
    """Run states counted from the tree (run.json), the truth."""
    out: dict[str, int] = {}
    for path in (root / "results" / WORKFLOW / "runs").glob("[!.]*/run.json"):
        state = json.loads(path.read_text(encoding="utf-8"))["state"]
        out[state] = out.get(state, 0) + 1
    return out


def span(root: Path) -> tuple[float, float]:
    """Epoch seconds of the earliest ``started_at`` and the latest ``finished_at`` of the
    runs in the tree (when the first run was RUNNING and the last one ended)."""
    starts, ends = [], []
    for path in (root / "results" / WORKFLOW / "runs").glob("[!.]*/run.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        starts.append(datetime.fromisoformat(record["started_at"]).timestamp())
        ends.append(datetime.fromisoformat(record["finished_at"]).timestamp())
    return min(starts), max(ends)
