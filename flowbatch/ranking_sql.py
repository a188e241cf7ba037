"""The leaderboard's views read from the index: the index narrows, Python ranks.

:mod:`flowbatch.ranking` is the reference: it ranks every successful run in Python. The
leaderboard shows less than every run: the best run of each group, the best
``reports.all_runs_shown`` runs of the all-runs view and how many runs there are. With
100,000 runs, reading and parsing every row into Python was most of the ranking's time,
so :func:`leaderboard_views` lets the index pick the **candidates** and ranks only those
with the reference code:

- the best runs of each group by the sort keys alone (``MAX``/``MIN`` per group, one
  key after the other): every run tied on all keys with its group's best;
- the first ``shown`` runs by the sort keys (``ORDER BY ... LIMIT``), and every run tied
  on all keys with the last of them;
- ``COUNT(*)``, the all-runs total.

:func:`flowbatch.ranking.rank_views` over the candidates then gives exactly the reference's
best-per-group list and its first ``shown`` entries: a run outside the candidates has a
group's best or ``shown`` runs strictly ahead of it on the keys, whatever the tie-breaks
(submission time, run id), which therefore stay in Python, the index never compares times.

That needs the index's order of the sort keys to be exactly Python's. The values come
from the ``result_row`` table (written with the run row, from the same dict, in the same
transaction): numbers as the double Python bound, strings as text; missing values sort
last; strings compare by code point (SQLite's BINARY on UTF-8; ``COLLATE "C"`` on
PostgreSQL). Where a value could rank differently there, the whole workflow goes the
reference way (:func:`rank_inputs` and :func:`flowbatch.ranking.rank_views` over every
run), so the result is always the reference's:

- a number column holding text (Python reads numeric text as a number), or an integer
  of 2**53 or more, or an infinity (the double is not the exact value), or a result row
  with no value at all (an integer beyond a double's range is stored as NULL; results
  and arguments refuse such integers now, but older runs may hold one);
- a string column holding a number, a boolean or null (Python compares ``str()`` of it),
  or U+FFFD (NUL is stored as U+FFFD: the text may not be the value);
- a run with two result rows of one name, or the candidates' result rows disagreeing
  with their run rows' ``results`` (checked on every candidate: an index that drifted);
- an index without ``WITH ... AS MATERIALIZED`` (SQLite before 3.35, PostgreSQL before
  12) or any database error.

The chart needs every run of the first groups it draws: :func:`group_runs` reads those
(:func:`flowbatch.report.chart_runs`). Figures: :mod:`flowbatch.ranking`, ``bench/NOTES.md``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any, cast

import peewee as pw

from .ranking import _EXACT, RankEntry, RankInput, _number, _sort_columns, rank_views
from .runs import State
from .spec.model import ResultSchema
from .store.index import ResultRow, RunRow, WorkflowRow

log = logging.getLogger("flowbatch.ranking")

#: the text a NUL in a result string is stored as (PostgreSQL's text cannot hold NUL)
_NUL_STAND_IN = "\ufffd"
#: ids per ``IN (...)`` (SQLite binds at most 32,766 parameters)
_CHUNK = 5000

_FIELDS = (
    RunRow.id,
    RunRow.group,
    RunRow.name,
    RunRow.created_at,
    RunRow.started_at,
    RunRow.finished_at,
    RunRow.results,
    RunRow.arguments,
    RunRow.version,
)


@dataclass
class LeaderboardViews:
    """What a leaderboard shows of a workflow's successful runs.

    ``best``: the best run of each group, ranked; ``top``: the first ``shown`` entries of
    the ranking of every run (ranks 1..); ``total``: how many runs that ranking has;
    ``everything``: the whole ranking when it was built (the reference path), else
    ``None``; ``sql``: whether the index picked the candidates."""

    best: list[RankEntry]
    top: list[RankEntry]
    total: int
    everything: list[RankEntry] | None
    sql: bool


def current_version(workflow: str) -> str | None:
    """The current version of ``workflow`` as the index knows it (set at install)."""
    row = WorkflowRow.get_or_none(WorkflowRow.id == workflow)
    return row.version if row is not None else None


_SCAN = cast(Any, make_scanner)(json.JSONDecoder())


def _loads_object(text: str) -> Any:
    """``json.loads`` for the index's own small JSON texts, by the C scanner directly
    (a third of the time at 100,000 rows); anything but one whole value is an error."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        value, end = None, -1
    if end != len(text):
        return json.loads(text)  # surrounding space, or the real error message
    return value


def _where(workflow: str, version: str | None, all_versions: bool) -> Any:
    where = (RunRow.workflow == workflow) & (RunRow.state == State.SUCCESS.value)
    if not all_versions:
        version = version or current_version(workflow)
        if version is not None:  # no workflow row: an index from before versions
            where &= RunRow.version == version
    return where & RunRow.results.is_null(False)


def _inputs(where: Any, ids: list[str] | None = None) -> list[RankInput]:
    """The runs of ``where`` (and of ``ids``, when given) as ranking inputs."""
    # the raw cursor and the C scanner: peewee's per-row conversion was most of the cost
    # at 100,000 runs; arguments stay JSON text until a shown entry needs them
    sql, params = RunRow.select(*_FIELDS).where(where).sql()
    db = RunRow._meta.database
    if ids is not None:  # peewee took longer to build a long IN (...) than to run it
        sql += f' AND "t1"."id" IN ({", ".join(db.param for _ in ids)})'
        params = [*params, *ids]
    rows: Iterable[tuple[Any, ...]] = db.execute_sql(sql, params)
    loads = _loads_object
    return [
        RankInput(
            run_id,
            group,
            name,
            created,
            started,
            finished,
            (loads(results) if isinstance(results, str) else results) or {},
            None if isinstance(arguments, str) else (arguments or {}),
            version_,
            arguments_json=arguments if isinstance(arguments, str) else None,
        )
        for run_id, group, name, created, started, finished, results, arguments, version_ in rows
    ]


def rank_inputs(
    workflow: str, version: str | None = None, *, all_versions: bool = False
) -> list[RankInput]:
    """The successful runs of ``workflow`` to rank: those of ``version`` (default: the
    current one), or of every version with ``all_versions``. Runs of an old version are
    never mixed into the current leaderboard by default: a fixed template may score
    differently."""
    return _inputs(_where(workflow, version, all_versions))


def group_runs(
    workflow: str,
    groups: list[str],
    version: str | None = None,
    *,
    all_versions: bool = False,
) -> list[RankInput]:
    """The runs :func:`rank_inputs` would give, of ``groups`` only."""
    where = _where(workflow, version, all_versions)
    out: list[RankInput] = []
    for i in range(0, len(groups), _CHUNK):
        out += _inputs(where & RunRow.group.in_(groups[i : i + _CHUNK]))
    return out


def leaderboard_views(
    workflow: str,
    schema: ResultSchema,
    *,
    shown: int,
    version: str | None = None,
    all_versions: bool = False,
    python: bool = False,
) -> LeaderboardViews:
    """The best run of each group and the first ``shown`` runs of the ranking of every
    run (``shown`` 0: the first view only), as :func:`flowbatch.ranking.rank_views` over
    :func:`rank_inputs` gives them, by way of the index where that is provably the same
    (module docstring). ``python`` forces the reference path."""
    if not python:
        views = _sql_views(workflow, schema, shown, version, all_versions)
        if views is not None:
            return views
    best, everything = rank_views(
        rank_inputs(workflow, version, all_versions=all_versions), schema, include_all=shown > 0
    )
    return LeaderboardViews(best, everything[:shown], len(everything), everything, sql=False)


# --- the index's part -----------------------------------------------------------------------


def _sql_views(
    workflow: str, schema: ResultSchema, shown: int, version: str | None, all_versions: bool
) -> LeaderboardViews | None:
    """The views by the index, or ``None`` where the reference path must decide."""
    db = RunRow._meta.database
    if isinstance(db, pw.DatabaseProxy):
        db = db.obj
    postgres = isinstance(db, pw.PostgresqlDatabase)
    if not postgres and (
        not isinstance(db, pw.SqliteDatabase) or sqlite3.sqlite_version_info < (3, 35)
    ):
        return None
    keys = schema.order_by
    if not keys:
        return None
    columns = _sort_columns(schema, keys)  # ResultError for an unknown key, as rank does
    numeric = [c.dtype in ("int", "float") for c in columns]
    where = _where(workflow, version, all_versions)
    sql, params = _candidates_sql(
        postgres, db.param, where, [c.name for c in columns], numeric, keys, int(shown)
    )
    try:
        # one read transaction (SQLite: one snapshot for both statements); a savepoint
        # inside a caller's transaction, which an error here must not end
        with db.atomic():
            rows = list(db.execute_sql(sql, params))
            stats = next((row for row in rows if row[0] == 0), None)
            if stats is None:
                return None
            _, _, total, bad, joined, *_ = stats
            if bad or total != joined:
                log.debug("ranking of %s in Python: values the index cannot order", workflow)
                return None
            expected = {row[1]: tuple(row[5:]) for row in rows if row[0]}
            ids = sorted(expected)
            inputs: list[RankInput] = []
            for i in range(0, len(ids), _CHUNK):
                inputs += _inputs(where, ids[i : i + _CHUNK])
    except pw.DatabaseError as exc:
        log.info("ranking of %s in Python: the index cannot: %s", workflow, exc)
        return None
    if len(inputs) != len(ids) or not _agree(inputs, expected, columns, numeric):
        log.warning(
            "ranking of %s in Python: the index's result rows disagree with its run rows "
            "(`flowbatch reindex` rebuilds them)",
            workflow,
        )
        return None
    best, ranked = rank_views(inputs, schema, include_all=shown > 0)
    return LeaderboardViews(best, ranked[:shown], int(total), None, sql=True)


def _agree(
    inputs: list[RankInput],
    expected: dict[str, tuple[Any, ...]],
    columns: list[Any],
    numeric: list[bool],
) -> bool:
    """Whether each candidate's sort values, as the reference reads them from its run
    row, are the values the index ordered it by."""
    for run in inputs:
        for column, is_number, stored in zip(columns, numeric, expected[run.run_id], strict=True):
            value = run.results.get(column.name)
            if is_number:
                mine = _number(value)
                if mine != stored or (mine is None) != (stored is None):
                    return False
            elif (None if value is None else str(value)) != stored:
                return False
    return True


def _candidates_sql(
    postgres: bool,
    param: str,
    where: Any,
    names: list[str],
    numeric: list[bool],
    keys: list[Any],
    shown: int,
) -> tuple[str, list[Any]]:
    """One statement: ``(part, id, runs, bad, rows, key values...)`` rows; part 0 the
    counts (the runs, those with values the index cannot order, the rows joined), 1 the
    best of each group on the keys, 2 the first ``shown`` on the keys, 3 the runs tied
    with the last of those."""
    # peewee's own "SELECT "t1"."id" FROM "run_row" AS "t1" WHERE ...": the filter as
    # rank_inputs applies it, with the result rows joined in before its WHERE
    base_sql, base_params = RunRow.select(RunRow.id).where(where).sql()
    head, _, condition = base_sql.partition(" WHERE ")
    table = head[head.index(" FROM ") + len(" FROM ") :]
    results = f'"{ResultRow._meta.table_name}"'
    same = "IS NOT DISTINCT FROM" if postgres else "IS"
    # code point order: SQLite's BINARY compares UTF-8 bytes, PostgreSQL needs "C"
    code_point = ' COLLATE "C"' if postgres else ""
    n = len(names)
    coll = ["" if number else code_point for number in numeric]

    find = "strpos" if postgres else "instr"

    select: list[str] = []
    bad: list[str] = []
    bad_params: list[Any] = []
    joins: list[str] = []
    join_params: list[Any] = []
    for i, (name, number) in enumerate(zip(names, numeric, strict=True)):
        v = f"v{i}"
        select.append(f"{v}.value_num AS k{i}" if number else f"{v}.value_text AS k{i}")
        joins.append(f'LEFT JOIN {results} AS {v} ON {v}.run = "t1".id AND {v}.name = {param}')
        join_params.append(name)
        # no result row where the run row's JSON has the key: an index that drifted
        bad.append(f'{v}.run IS NULL AND {find}("t1".results, {param}) > 0')
        bad_params.append(json.dumps(name) + ":")
        if number:
            bad.append(
                f"{v}.value_text IS NOT NULL OR abs({v}.value_num) >= {float(_EXACT)!r}"
                # a row with neither: a value the index has no number for (an int beyond
                # a double's range, stored as NULL) that Python may rank as a number
                f" OR ({v}.run IS NOT NULL AND {v}.value_num IS NULL)"
            )
        else:
            bad.append(
                f"{v}.value_num IS NOT NULL OR ({v}.run IS NOT NULL AND {v}.value_text IS NULL)"
                # not LIKE: SQLite's reads U+FFFE and U+FFFF as U+FFFD
                f" OR {find}({v}.value_text, {param}) > 0"
            )
            bad_params.append(_NUL_STAND_IN)
    flags = " OR ".join(f"({b})" for b in bad)
    ctes = [
        f'k AS MATERIALIZED (SELECT "t1".id AS id, "t1"."group" AS grp, {", ".join(select)}, '
        f"CASE WHEN {flags} THEN 1 ELSE 0 END AS bad "
        f"FROM {table} {' '.join(joins)} WHERE {condition})"
    ]
    # the best of each group, one key after the other: the runs tied with it on all keys
    source = "k"
    for i, key in enumerate(keys):
        pick = "MAX" if key.sort_desc else "MIN"
        col = f"k{i}{coll[i]}"
        ctes.append(
            f"c{i} AS (SELECT s.* FROM {source} AS s JOIN "
            f"(SELECT grp, {pick}({col}) AS m FROM {source} GROUP BY grp) AS g "
            f"ON s.grp = g.grp AND s.{col} {same} g.m)"
        )
        source = f"c{i}"
    order = ", ".join(
        f"k{i} IS NULL, k{i}{coll[i]} {'DESC' if key.sort_desc else 'ASC'}"
        for i, key in enumerate(keys)
    )
    values = ", ".join(f"k{i}" for i in range(n))
    nulls = ", ".join("NULL" for _ in range(n))
    parts = [
        # the runs counted apart: a run with two result rows of one name is two rows of k
        f"SELECT 0 AS part, NULL AS id, (SELECT COUNT(*) FROM {table} WHERE {condition}), "
        f"SUM(bad), COUNT(*), {nulls} FROM k",
        f"SELECT 1, id, NULL, NULL, NULL, {values} FROM {source}",
    ]
    if shown > 0:
        # the first `shown` on the keys, and the last of them (a sort of `shown` rows)
        ctes.append(
            f"t AS MATERIALIZED (SELECT id, {values} FROM k ORDER BY {order} LIMIT {shown})"
        )
        ctes.append(f"b AS (SELECT {values} FROM t ORDER BY {order} LIMIT 1 OFFSET {shown - 1})")
        tied = " AND ".join(f"k.k{i}{coll[i]} {same} b.k{i}{coll[i]}" for i in range(n))
        parts += [
            f"SELECT 2, id, NULL, NULL, NULL, {values} FROM t",
            f"SELECT 3, k.id, NULL, NULL, NULL, {', '.join(f'k.k{i}' for i in range(n))} "
            f"FROM k JOIN b ON {tied}",
        ]
    sql = "WITH " + ", ".join(ctes) + " " + " UNION ALL ".join(parts)
    return sql, [*bad_params, *join_params, *base_params, *base_params]
