"""The floor: the least a daemon must do per run for flowbatch's run tree, and nothing else.

Run as its own process (``python bench/floor.py SITE MODE``) on requests dropped into
``SITE/queue`` the way the flowbatch round drops them; it imports nothing of flowbatch and
does no parsing, validation, rendering or reporting beyond a line of the request, one
SQLite row per run and a ``leaderboard.json`` at the end. Two runs at a time, like every
tool of the throughput section. What each mode adds to the one before:

``folder``
    a folder per run, the request renamed into it, the two commands in ``bash -c``, one
    ``run.json`` written at the end: the least any tool keeping a folder per run pays.
``tree``
    what a daemon restarted after a crash needs (issue 2): the request claimed by a rename,
    the run folder built hidden (the request linked in, ``run.sh``, ``run.json``) and renamed
    into place, ``run.sh`` started, ``run.json`` replaced atomically at the end.
``contract``
    ``tree`` with the leanest script that keeps what issue 2 asks of a run: per-step
    stdout/stderr logs and exit-code markers, in the ``logs/`` folder the tree has (the
    markers one appended file).
``product``
    ``contract`` plus the rest of what flowbatch keeps of every run, written as plainly
    as Python allows (no pydantic, Jinja2, pathlib or peewee): the request parsed by
    PyYAML's C loader and checked by hand, the template's file copied from memory,
    ``status/``, a ``run.json`` of flowbatch's fields written at each of its three states
    (PENDING, RUNNING, the end), flowbatch's index tables and indexes (a run row upserted
    at each state, a state-change row each, the result and file rows), a log line per
    state, the run page (flowbatch's stylesheet inlined, every value escaped, the logs'
    last lines) and at the end ``leaderboard.html`` beside the JSON. What flowbatch does
    per run beyond this is the cost of its own code.
``stack``
    ``product`` on the libraries the project chose for flowbatch (pydantic, Jinja2,
    peewee; not click, which a daemon could do without), used only where a daemon built
    on them cannot do without: each
    imported at the start (before the first run, as the request's check and its script
    need them), the request checked by a pydantic model of its fields (flowbatch's
    ``Request`` has these fields), the run script rendered by a compiled Jinja2
    template, the site's config checked by a pydantic model once, the index tables
    declared as peewee models (their rows still written by plain SQL, as flowbatch's
    per-run statements are). No flowbatch code: what a daemon on that stack pays at the
    least, the start of a Python process that loads it included.

The harness times it as a whole process, start-up included (``bench/throughput.py``).
"""

from __future__ import annotations

import html
import json
import os
import sqlite3
import sys
from datetime import UTC, datetime

#: the two commands of the throughput section; the second only if the first succeeded
CMDS = "echo {n} > out.txt && printf '{{\"score\":%d}}\\n' {n} > results.json\n"

#: ``tree``: the two commands, nothing kept
BARE = 'case $0 in */*) cd -- "${{0%/*}}" || exit 90 ;; esac\n' + CMDS

#: ``contract``: per-step logs and exit markers, one file each, appended
CONTRACT = (
    'case $0 in */*) cd -- "${{0%/*}}" || exit 90 ;; esac\n'
    "printf 'started %s\\n' \"$$\" >> logs/status\n"
    "{{ " + CMDS.rstrip() + "; }} >> logs/step-01.out 2>> logs/step-01.err < /dev/null\n"
    "rc=$?\nprintf 'step 1 exit %s\\nexit %s\\n' $rc $rc >> logs/status\nexit $rc\n"
)

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def write(path: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, FLAGS, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def main(site: str, mode: str) -> None:
    if mode in ("product", "stack"):
        (Stack if mode == "stack" else Product)(site).serve()
        return
    queue = os.path.join(site, "queue")
    claimed = os.path.join(queue, ".claimed")
    runs = os.path.join(site, "runs")
    os.makedirs(claimed, exist_ok=True)
    os.makedirs(runs, exist_ok=True)
    db = sqlite3.connect(os.path.join(site, "index.db"))
    db.execute("pragma journal_mode=wal")
    db.execute("create table if not exists run (id text primary key, state text, score int)")
    bash = "/bin/bash"
    script = BARE if mode == "tree" else CONTRACT
    running: dict[int, tuple[str, str]] = {}
    ranked: list[tuple[int, str]] = []

    def start(name: str) -> None:
        rid = name.rsplit(".", 1)[0]
        folder = os.path.join(runs, rid)
        if mode == "folder":
            os.mkdir(folder)
            request = os.path.join(folder, "request.yaml")
            os.rename(os.path.join(queue, name), request)
            with open(request, "rb") as fh:
                n = int(fh.read().rsplit(b"n:", 1)[1])
            cmd = f"cd {folder} && " + CMDS.format(n=n)
            argv = [bash, "-c", cmd]
        else:
            src = os.path.join(claimed, name)
            os.rename(os.path.join(queue, name), src)
            with open(src, "rb") as fh:
                n = int(fh.read().rsplit(b"n:", 1)[1])
            hidden = os.path.join(runs, f".{rid}.tmp")
            os.mkdir(hidden)
            os.link(src, os.path.join(hidden, "request.yaml"))
            write(os.path.join(hidden, "run.sh"), script.format(n=n).encode(), 0o755)
            if mode == "contract":
                os.mkdir(os.path.join(hidden, "logs"))
            record = {"id": rid, "state": "PENDING", "arguments": {"n": n}}
            write(os.path.join(hidden, "run.json"), json.dumps(record, indent=2).encode())
            os.rename(hidden, folder)
            os.unlink(src)
            argv = [bash, os.path.join(folder, "run.sh")]
        db.execute("insert into run values (?, 'RUNNING', null)", (rid,))
        pid = os.posix_spawn(bash, argv, os.environ)
        running[pid] = (rid, folder)

    def finish(pid: int, status: int) -> None:
        rid, folder = running.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"run {rid} failed")
        with open(os.path.join(folder, "results.json"), "rb") as fh:
            results = json.loads(fh.read())
        record = json.dumps({"id": rid, "state": "SUCCESS", "results": results}, indent=2)
        if mode == "folder":
            write(os.path.join(folder, "run.json"), record.encode())
        else:
            _atomic(os.path.join(folder, "run.json"), record.encode())
        db.execute(
            "update run set state = 'SUCCESS', score = ? where id = ?", (results["score"], rid)
        )
        ranked.append((results["score"], rid))

    for name in sorted(n for n in os.listdir(queue) if n.endswith(".yaml")):
        if len(running) >= 2:
            finish(*os.wait())
        start(name)
        if len(ranked) % 64 == 0:
            db.commit()
    while running:
        finish(*os.wait())
    db.commit()
    ranked.sort(reverse=True)
    write(os.path.join(site, "leaderboard.json"), json.dumps(ranked).encode())


# --- ``product``: flowbatch's own per-run records, written plainly ------------------------

SCHEMA = """
create table if not exists run_row (id text primary key, workflow text not null,
  version text not null, "group" text not null, name text, owner text not null,
  owner_uid integer not null, request text not null, state text not null,
  created_at text not null, started_at text, finished_at text, executor text not null,
  arguments text not null, results text, messages text not null, run_dir text not null);
create index if not exists run_row_workflow on run_row (workflow);
create index if not exists run_row_group on run_row ("group");
create index if not exists run_row_owner_uid on run_row (owner_uid);
create index if not exists run_row_state on run_row (state);
create index if not exists run_row_finished_at on run_row (finished_at);
create index if not exists run_row_workflow_state on run_row (workflow, state);
create table if not exists state_change_row (id integer primary key, run text not null,
  state text not null, at text not null, message text);
create index if not exists state_change_row_run on state_change_row (run);
create table if not exists result_row (id integer primary key, run text not null,
  name text not null, value_num real, value_text text);
create index if not exists result_row_run on result_row (run);
create table if not exists run_file_row (id integer primary key, run text not null,
  key text not null, source text not null, size integer, title text, caption text);
create index if not exists run_file_row_run on run_file_row (run);
"""

UPSERT = (
    "insert into run_row values (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) on conflict(id) do update "
    "set state = excluded.state, started_at = excluded.started_at, "
    "finished_at = excluded.finished_at, results = excluded.results, "
    "messages = excluded.messages"
)

#: the run page: the facts, results, arguments, the step with its logs, files, history
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>{css}</style></head><body>
<nav><a href="../../../index.html">All workflows</a> /
<a href="../../leaderboard.html">{workflow}</a></nav>
<h1>{title}</h1><p><span class="badge {state}">{state}</span>
workflow <code>{workflow}</code> run <code>{id}</code></p>
<div class="card"><dl class="facts"><dt>Group</dt><dd>{group}</dd><dt>Name</dt><dd>{name}</dd>
<dt>Owner</dt><dd>{owner}</dd><dt>Version</dt><dd><code>{version}</code></dd><dt>Executor</dt><dd>local</dd>
<dt>Created</dt><dd><time datetime="{created}">{created}</time></dd>
<dt>Started</dt><dd><time datetime="{started}">{started}</time></dd>
<dt>Finished</dt><dd><time datetime="{finished}">{finished}</time></dd>
<dt>Run time</dt><dd>{duration}</dd></dl></div>
<h2>Results</h2><table class="kv"><tbody>{results}</tbody></table>
<h2>Arguments</h2><table class="kv"><tbody>{arguments}</tbody></table>
<h2>Steps</h2><div class="scroll"><table>
<thead><tr><th>#</th><th>Step</th><th>Exit code</th><th>Logs</th></tr></thead>
<tbody><tr><td>1</td><td>main</td><td>{code}</td>
<td><a href="logs/step-01.out">stdout</a> <a href="logs/step-01.err">stderr</a></td>
</tr></tbody></table></div>
<details><summary>Step 1 (main): last lines of its logs</summary>
<h3>stdout</h3><pre>{out}</pre><h3>stderr</h3><pre>{err}</pre></details>
<h2>Output files</h2><table><tbody>{files}</tbody></table>
<h2>History</h2><table><thead><tr><th>State</th><th>At</th><th>Message</th></tr></thead><tbody>{history}</tbody></table>
<footer>Generated {now}</footer></body></html>
"""

ROW = '<tr><th title="{0}">{0}</th><td>{1}</td></tr>'


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _atomic(path: str, data: bytes) -> None:
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    write(tmp, data)
    os.replace(tmp, path)


def _tail(path: str, size: int = 8192) -> str:
    with open(path, "rb") as fh:
        fh.seek(max(0, os.fstat(fh.fileno()).st_size - size))
        return fh.read().decode("utf-8", "replace")


class Product:
    """What flowbatch keeps of each run (module docstring, ``product``), two at a time."""

    def __init__(self, site: str) -> None:
        import yaml  # PyYAML's C loader, as flowbatch reads requests

        self.load = lambda data: yaml.load(data, Loader=yaml.CSafeLoader)
        self.site = site
        self.queue = os.path.join(site, "queue")
        self.claimed = os.path.join(self.queue, ".claimed")
        self.runs = os.path.join(site, "runs")
        os.makedirs(self.claimed, exist_ok=True)
        os.makedirs(self.runs, exist_ok=True)
        self.db = sqlite3.connect(os.path.join(site, "index.db"))
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("pragma synchronous=normal")
        self.db.executescript(SCHEMA)
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "..", "flowbatch", "data", "report", "style.css")) as fh:
            self.css = fh.read()
        self.template_file = b"a template's file, copied into every run folder\n" * 10
        self.running: dict[int, dict[str, object]] = {}
        self.done: list[dict[str, object]] = []

    def _record(self, rec: dict[str, object], folder: str, state: str, **fields: object) -> None:
        at = _now()
        rec.update(fields, state=state)
        history = rec["history"]
        assert isinstance(history, list)
        history.append({"state": state, "at": at, "message": None})
        data = (json.dumps(rec, indent=None) + "\n").encode()
        path = os.path.join(folder, "run.json")
        if state == "PENDING":
            write(path, data)
        else:
            _atomic(path, data)
        res = rec.get("results")
        self.db.execute(
            UPSERT,
            (
                rec["id"],
                "bench",
                "v1",
                "root",
                None,
                "root",
                0,
                rec["request"],
                state,
                rec["created_at"],
                rec.get("started_at"),
                rec.get("finished_at"),
                "local",
                json.dumps(rec["arguments"]),
                json.dumps(res) if res else None,
                "[]",
                folder,
            ),
        )
        self.db.execute(
            "insert into state_change_row (run, state, at) values (?, ?, ?)",
            (rec["id"], state, at),
        )
        sys.stderr.write(f"{at} INFO run {rec['id']} -> {state}\n")

    def check(self, name: str, request: object) -> dict[str, object]:
        """The request's arguments, checked by hand."""
        if not isinstance(request, dict) or not isinstance(request.get("workflow"), str):
            raise SystemExit(f"{name}: not a request")
        args = request.get("arguments")
        if not isinstance(args, dict) or type(args.get("n")) is not int:
            raise SystemExit(f"{name}: arguments.n must be an integer")
        return args

    def script(self, n: object) -> str:
        return CONTRACT.format(n=n)

    def start(self, name: str) -> None:
        rid = name.rsplit(".", 1)[0]
        src = os.path.join(self.claimed, name)
        os.rename(os.path.join(self.queue, name), src)
        with open(src, "rb") as fh:
            args = self.check(name, self.load(fh.read()))
        folder = os.path.join(self.runs, rid)
        hidden = os.path.join(self.runs, f".{rid}.tmp")
        os.mkdir(hidden)
        os.link(src, os.path.join(hidden, "request.yaml"))
        write(os.path.join(hidden, "benchmark.yaml"), self.template_file)
        os.mkdir(os.path.join(hidden, "logs"))
        os.mkdir(os.path.join(hidden, "status"))
        write(os.path.join(hidden, "run.sh"), self.script(args["n"]).encode(), 0o755)
        rec: dict[str, object] = {
            "id": rid,
            "workflow": "bench",
            "version": "v1",
            "group": "root",
            "name": None,
            "owner_uid": 0,
            "owner": "root",
            "request": name,
            "created_at": _now(),
            "started_at": None,
            "finished_at": None,
            "arguments": args,
            "executor": "local",
            "handle": None,
            "time_limit": None,
            "messages": [],
            "results": None,
            "files": [],
            "steps": [],
            "history": [],
            "attempt": 1,
            "retries": 0,
        }
        self._record(rec, hidden, "PENDING")
        os.rename(hidden, folder)
        os.unlink(src)
        pid = os.posix_spawn("/bin/bash", ["/bin/bash", os.path.join(folder, "run.sh")], os.environ)
        handle = {"pid": pid, "pgid": pid, "host": "localhost", "uid": 0}
        self._record(rec, folder, "RUNNING", started_at=_now(), handle=handle)
        self.running[pid] = rec

    def finish(self, pid: int, status: int) -> None:
        rec = self.running.pop(pid)
        folder = os.path.join(self.runs, str(rec["id"]))
        with open(os.path.join(folder, "logs", "status"), "rb") as fh:
            markers = fh.read().split()
        code = int(markers[-1])
        if code != 0 or os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"run {rec['id']} failed")
        with open(os.path.join(folder, "results.json"), "rb") as fh:
            results = json.loads(fh.read())
        size = os.stat(os.path.join(folder, "results.json")).st_size
        step = {"index": 1, "name": "main", "exit_code": code, "stdout": "logs/step-01.out"}
        self._record(
            rec,
            folder,
            "SUCCESS",
            finished_at=_now(),
            results=results,
            steps=[step],
            files=[{"key": "results.json", "source": "results.json", "size": size}],
        )
        self.db.executemany(
            "insert into result_row (run, name, value_num) values (?, ?, ?)",
            [(rec["id"], k, v) for k, v in results.items()],
        )
        self.db.execute(
            "insert into run_file_row (run, key, source, size) values (?, ?, ?, ?)",
            (rec["id"], "results.json", "results.json", size),
        )
        self._page(rec, folder)
        self.done.append(rec)

    def _page(self, rec: dict[str, object], folder: str) -> None:
        e = html.escape
        args = rec["arguments"]
        results = rec["results"]
        history = rec["history"]
        assert isinstance(args, dict) and isinstance(results, dict) and isinstance(history, list)
        page = PAGE.format(
            title=e(f"{rec['id']} (root)"),
            css=self.css,
            workflow=e("bench"),
            id=e(str(rec["id"])),
            state=e(str(rec["state"])),
            group=e("root"),
            name="",
            owner=e("root"),
            version="v1",
            created=e(str(rec["created_at"])),
            started=e(str(rec["started_at"])),
            finished=e(str(rec["finished_at"])),
            duration="",
            results="".join(ROW.format(e(k), e(str(v))) for k, v in results.items()),
            arguments="".join(ROW.format(e(k), e(str(v))) for k, v in args.items()),
            code=0,
            out=e(_tail(os.path.join(folder, "logs", "step-01.out"))),
            err=e(_tail(os.path.join(folder, "logs", "step-01.err"))),
            files='<tr><td><a href="results.json">results.json</a></td></tr>',
            history="".join(
                f"<tr><td>{e(h['state'])}</td><td>{e(h['at'])}</td><td></td></tr>" for h in history
            ),
            now=_now(),
        )
        _atomic(os.path.join(folder, "index.html"), page.encode())

    def serve(self) -> None:
        names = sorted(n for n in os.listdir(self.queue) if n.endswith(".yaml"))
        for i, name in enumerate(names):
            if len(self.running) >= 2:
                self.finish(*os.wait())
            self.start(name)
            if i % 64 == 0:
                self.db.commit()
        while self.running:
            self.finish(*os.wait())
        self.db.commit()
        ranked = sorted(self.done, key=lambda r: -int(r["results"]["score"]))  # type: ignore[index]
        rows = [[r["id"], r["results"]["score"]] for r in ranked]  # type: ignore[index]
        write(os.path.join(self.site, "leaderboard.json"), json.dumps(rows).encode())
        body = "".join(
            f"<tr><td>{i}</td><td>{html.escape(str(r[0]))}</td><td>{r[1]}</td></tr>"
            for i, r in enumerate(rows, 1)
        )
        write(
            os.path.join(self.site, "leaderboard.html"),
            f"<!doctype html><style>{self.css}</style><table>{body}</table>".encode(),
        )


class Stack(Product):
    """``product`` on pydantic, Jinja2 and peewee (module docstring, ``stack``)."""

    def __init__(self, site: str) -> None:
        from typing import Any

        import jinja2
        import peewee
        from pydantic import BaseModel, ConfigDict, Field

        super().__init__(site)

        class Request(BaseModel):  # the fields of flowbatch's request
            model_config = ConfigDict(extra="forbid")
            workflow: str
            group: str | None = None
            name: str | None = None
            arguments: dict[str, Any] | list[Any] | None = None
            executor: str | None = None
            version: str | None = None
            sweep: dict[str, list[Any]] | None = None

        class Local(BaseModel):
            model_config = ConfigDict(extra="forbid")
            concurrency: int = Field(default=2, ge=1)

        class Polling(BaseModel):
            model_config = ConfigDict(extra="forbid")
            interval: float = Field(default=2.0, gt=0)
            settle: float = Field(default=0.5, ge=0)

        class Config(BaseModel):
            model_config = ConfigDict(extra="forbid")
            executor: str = "local"
            database: str | None = None
            local: Local = Field(default_factory=Local)
            polling: Polling = Field(default_factory=Polling)

        Config.model_validate({"executor": "local", "local": {"concurrency": 2}})
        self.model = Request
        # Jinja2 renders the script (``{{ "{{" }}`` keeps CONTRACT's own braces literal)
        source = CONTRACT.replace("{{", "\x00").replace("}}", "\x01")
        source = source.replace("{n}", "{{ n }}").replace("\x00", "{").replace("\x01", "}")
        env = jinja2.Environment(autoescape=False, keep_trailing_newline=True)
        self.template = env.from_string(source)
        index = peewee.SqliteDatabase(None)

        class Row(peewee.Model):
            class Meta:
                database = index

        class RunRow(Row):
            id = peewee.TextField(primary_key=True)
            workflow = peewee.TextField(index=True)
            state = peewee.TextField(index=True)
            results = peewee.TextField(null=True)

        class StateChangeRow(Row):
            run = peewee.TextField(index=True)
            state = peewee.TextField()
            at = peewee.TextField()

        class ResultRow(Row):
            run = peewee.TextField(index=True)
            name = peewee.TextField()
            value_num = peewee.FloatField(null=True)

        self.tables = (RunRow, StateChangeRow, ResultRow)

    def check(self, name: str, request: object) -> dict[str, object]:
        args = self.model.model_validate(request).arguments
        if not isinstance(args, dict) or type(args.get("n")) is not int:
            raise SystemExit(f"{name}: arguments.n must be an integer")
        return args

    def script(self, n: object) -> str:
        return self.template.render(n=n)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
