"""Template versions as users see them: which versions a workflow has, and its runs per
version and state.

Installing new content under an existing id adds a version (see
:mod:`flowbatch.store.templates`); every run records the version it ran. This module only
reads: ``workflow.json`` for the versions, one grouped index query for the counts.
"""

from __future__ import annotations

from typing import Any

import peewee as pw

from .site import Site
from .store.index import RunRow


def run_counts(workflow: str | None = None) -> dict[str, dict[str, dict[str, int]]]:
    """Runs by workflow, version and state, from one grouped query on the index."""
    query = RunRow.select(
        RunRow.workflow, RunRow.version, RunRow.state, pw.fn.COUNT(RunRow.id)
    ).group_by(RunRow.workflow, RunRow.version, RunRow.state)
    if workflow is not None:
        query = query.where(RunRow.workflow == workflow)
    out: dict[str, dict[str, dict[str, int]]] = {}
    rows: Any = query.tuples()  # (workflow, version, state, count)
    for wf, version, state, count in rows:
        out.setdefault(wf, {}).setdefault(version, {})[state] = count
    return out


def workflow_info(site: Site, workflow: str) -> dict[str, Any]:
    """One workflow with every installed version (oldest first), each with its
    ``installed_at``, whether it is current, and its runs per state.

    A version whose runs are in the index but which is not installed any more (its folder
    was removed by hand) is listed too, with ``installed_at: null``: its runs must not
    disappear from the picture.
    """
    meta = site.templates.meta(workflow)  # NotFoundError for an unknown workflow
    site.store  # noqa: B018 - opens the index
    counts = run_counts(workflow).get(workflow, {})
    versions = []
    for entry in meta.get("versions", []):
        version = entry["version"]
        versions.append(_version_row(version, entry.get("installed_at"), meta, counts))
    listed = {v["version"] for v in versions}
    for version in sorted(set(counts) - listed):
        versions.append(_version_row(version, None, meta, counts))
    return {
        "id": workflow,
        "name": meta.get("name"),
        "description": meta.get("description"),
        "instructions": meta.get("instructions"),
        "current": meta.get("current"),
        "versions": versions,
        "runs": sum(v["runs"] for v in versions),
    }


def _version_row(
    version: str,
    installed_at: str | None,
    meta: dict[str, Any],
    counts: dict[str, dict[str, int]],
) -> dict[str, Any]:
    states = dict(sorted(counts.get(version, {}).items()))
    return {
        "version": version,
        "installed_at": installed_at,
        "current": version == meta.get("current"),
        "runs": sum(states.values()),
        "states": states,
    }
