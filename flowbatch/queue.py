"""Intake: from a YAML file in ``<site>/queue/`` to a PENDING run, or a rejection.

A request is claimed by an atomic rename into ``queue/.claimed/<run_id>--<name>``, so two
daemons never take the same file and a daemon killed half-way finds it again: a claimed
request whose run folder exists is finished off, otherwise it is processed again with the
same run id. Nothing is lost: a refused request goes to ``queue/rejected/`` beside
``<name>.error.yaml`` that says what, where and why.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import yamlio
from .errors import ArgumentError, FlowbatchError, RequestError
from .executors import executor_names
from .render import build_script, render_workflow
from .render.script import SCRIPT_NAME
from .runs import RunRecord, now_iso
from .site import Site
from .spec.model import FileArg, Template
from .spec.params import resolve_arguments
from .spec.request import CancelRequest, Request, parse_request
from .store import atomic
from .store.layout import REQUEST_COPY

log = logging.getLogger("flowbatch.queue")

REQUEST_SUFFIXES = (".yaml", ".yml")
BUNDLE_SUFFIX = ".files"  # `flowbatch submit` puts a request's files in <name>.files/


def is_request_name(name: str) -> bool:
    """``*.yaml`` / ``*.yml``, not a dot-file and not ``*.tmp`` (still being written)."""
    return (
        not name.startswith(".")
        and not name.endswith(".tmp")
        and name.lower().endswith(REQUEST_SUFFIXES)
    )


def new_run_id() -> str:
    return secrets.token_hex(6)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


@dataclass
class Claimed:
    path: Path  # queue/.claimed/<run_id>--<name>
    run_id: str
    name: str  # the request's file name as dropped
    uid: int


@dataclass
class IntakeResult:
    runs: list[RunRecord] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    cancels: list[tuple[CancelRequest, Claimed]] = field(default_factory=list)


class Intake:
    def __init__(self, site: Site) -> None:
        self.site = site
        self.layout = site.layout
        self._seen: dict[str, tuple[int, int, float]] = {}
        self.ready: set[str] = set()  # names inotify reported as complete (closed, moved in)

    # -- finding and claiming ----------------------------------------------------------------
    def candidates(self, *, settle: float | None = None) -> list[str]:
        """Request names in the queue that are complete enough to claim, oldest first."""
        settle = self.site.config.polling.settle if settle is None else settle
        now = time.time()
        out: list[tuple[float, str]] = []
        try:
            entries = list(os.scandir(self.layout.queue))
        except FileNotFoundError:
            return []
        present = set()
        for entry in entries:
            if not is_request_name(entry.name):
                continue
            present.add(entry.name)
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            key = (st.st_size, st.st_mtime_ns)
            seen = self._seen.get(entry.name)
            if (
                entry.name in self.ready
                or now - st.st_mtime >= settle
                or (seen and seen[:2] == key and now - seen[2] >= settle)
            ):
                out.append((st.st_mtime, entry.name))
            elif not seen or seen[:2] != key:
                self._seen[entry.name] = (*key, now)
        for name in list(self._seen):
            if name not in present:
                del self._seen[name]
        self.ready &= present
        return [name for _, name in sorted(out)]

    def claim(self, name: str) -> Claimed | None:
        """Atomically move the request out of the queue. None: someone else took it."""
        src = self.layout.queue / name
        try:
            st = src.lstat()
        except FileNotFoundError:
            return None
        run_id = new_run_id()
        dest = self.layout.claimed / f"{run_id}--{name}"
        try:
            os.rename(src, dest)
        except FileNotFoundError:
            return None
        self._seen.pop(name, None)
        self.ready.discard(name)
        return Claimed(dest, run_id, name, st.st_uid)

    def leftovers(self) -> list[Claimed]:
        """Requests claimed by a daemon that died before it finished with them."""
        out: list[Claimed] = []
        if not self.layout.claimed.is_dir():
            return out
        for path in sorted(self.layout.claimed.iterdir()):
            run_id, sep, name = path.name.partition("--")
            if not sep:
                continue
            try:
                uid = path.lstat().st_uid
            except FileNotFoundError:
                continue
            out.append(Claimed(path, run_id, name, uid))
        return out

    # -- one tick ------------------------------------------------------------------------------
    def run_once(self, *, limit: int | None = None) -> IntakeResult:
        result = IntakeResult()
        todo = self.leftovers()
        for name in self.candidates():
            if limit is not None and len(todo) >= limit:
                break
            claimed = self.claim(name)
            if claimed:
                todo.append(claimed)
        for claimed in todo:
            self.process(claimed, result)
        return result

    def process(self, claimed: Claimed, result: IntakeResult) -> None:
        try:
            existing = self._existing_run(claimed.run_id)
            if existing is not None:  # created before a crash: just finish the clean-up
                self._finish(claimed)
                return
            req = self._read(claimed)
            if isinstance(req, CancelRequest):
                result.cancels.append((req, claimed))  # the daemon applies it and cleans up
                return
            run = self._create(claimed, req)
        except FlowbatchError as exc:
            self.reject(claimed, exc)
            result.rejected.append(claimed.name)
            return
        self._finish(claimed)
        result.runs.append(run)

    def _existing_run(self, run_id: str) -> Path | None:
        for wf_runs in self.layout.results.glob(f"*/runs/{run_id}/run.json"):
            return wf_runs
        return None

    def _finish(self, claimed: Claimed) -> None:
        bundle = self.layout.queue / (Path(claimed.name).stem + BUNDLE_SUFFIX)
        if bundle.is_dir() and not bundle.is_symlink():
            shutil.rmtree(bundle, ignore_errors=True)
        claimed.path.unlink(missing_ok=True)

    # -- reading and validating ---------------------------------------------------------------
    def _read(self, claimed: Claimed) -> Request | CancelRequest:
        label = claimed.name
        st = claimed.path.lstat()
        if stat.S_ISLNK(st.st_mode):
            raise RequestError(
                "a symbolic link is not a request; it was not followed",
                file=label,
                hint="copy the request file into the queue instead",
            )
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise RequestError(f"the entry is {kind}, not a request file", file=label)
        limit = self.site.config.max_request_bytes
        if st.st_size == 0:
            raise RequestError(
                "the request file is empty",
                file=label,
                expected="a YAML mapping with at least `workflow:`",
            )
        fd = os.open(claimed.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(limit + 1)
        if len(raw) > limit:
            raise RequestError(
                f"the request file is over the size limit of {limit} bytes",
                file=label,
                hint="pass data as file arguments, not inline",
            )
        if b"\x00" in raw:
            raise RequestError("the request file is binary (contains NUL bytes)", file=label)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(
                f"the request file is not UTF-8 text (byte {exc.start})",
                file=label,
                hint="save it as UTF-8",
            )
        doc = yamlio.loads(text, file=label)
        return parse_request(doc, file=label)

    def _create(self, claimed: Claimed, req: Request) -> RunRecord:
        label = claimed.name
        site = self.site
        try:
            template, version = site.templates.load(req.workflow, req.version)
        except FlowbatchError as exc:
            raise exc.at(file=label, prefix="workflow" if not req.version else "version")
        arguments = resolve_arguments(template.parameters, req.arguments, file=label)
        executor = req.executor or template.executor or site.config.executor
        known = executor_names(site.config)
        if executor not in known:
            raise RequestError(
                f"unknown executor {executor!r}",
                file=label,
                field="executor",
                expected="one of: " + ", ".join(known),
                hint="executors are declared in the site's flowbatch.yaml",
            )
        sources = self._check_files(template, arguments, claimed, label)
        rendered = render_workflow(
            template, template.workflow, arguments, site.config.all_variables()
        )
        run_dir = site.layout.run_dir(req.workflow, claimed.run_id)
        tmp_dir = run_dir.with_name(f".{claimed.run_id}.tmp")
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir(parents=True)
        files_dir = site.templates.files_dir(req.workflow, version)
        if files_dir.is_dir():
            shutil.copytree(files_dir, tmp_dir, dirs_exist_ok=True, symlinks=True)
        for name, src in sources.items():
            target = tmp_dir / arguments[name].target
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        shutil.copyfile(claimed.path, tmp_dir / REQUEST_COPY)
        atomic.write_text(
            tmp_dir / SCRIPT_NAME,
            build_script(rendered, run_id=claimed.run_id),
            mode=0o755,
            fsync=False,
        )
        run = RunRecord(
            id=claimed.run_id,
            workflow=req.workflow,
            version=version,
            group=req.group or user_name(claimed.uid),
            name=req.name,
            owner_uid=claimed.uid,
            owner=user_name(claimed.uid),
            request=claimed.name,
            created_at=now_iso(),
            arguments=_jsonable(arguments),
            executor=executor,
            time_limit=template.time_limit or site.config.time_limit,
        )
        run.history.append({"state": run.state.value, "at": run.created_at, "message": None})
        atomic.write_json(tmp_dir / "run.json", run.to_dict(), fsync=False)
        os.replace(tmp_dir, run_dir)  # the run exists from here on, complete
        site.store.write(run, change=dict(run.history[-1]))
        log.info(
            "run %s created from %s (workflow %s, group %s)", run.id, label, run.workflow, run.group
        )
        return run

    def _check_files(
        self, template: Template, arguments: dict[str, Any], claimed: Claimed, label: str
    ) -> dict[str, Path]:
        """Each file argument must name a regular file inside the request's folder that the
        request's owner owns (a request cannot read another user's inputs)."""
        queue = self.layout.queue.resolve()
        out: dict[str, Path] = {}
        for name, value in arguments.items():
            if not isinstance(value, FileArg) or not value.source:
                continue
            field = f"arguments.{name}"
            rel = Path(value.source)
            if rel.is_absolute() or ".." in rel.parts:
                raise ArgumentError(
                    "a file path must be relative to the request file and stay inside its folder",
                    file=label,
                    field=field,
                    expected="a relative path without '..'",
                )
            path = queue / rel
            real = Path(os.path.realpath(path))
            if not real.is_relative_to(queue) or real.is_relative_to(self.layout.claimed.resolve()):
                raise ArgumentError(
                    "the file leads outside the request's folder (symlink)", file=label, field=field
                )
            try:
                st = os.stat(real)
            except FileNotFoundError:
                raise ArgumentError(
                    f"file {value.source!r} does not exist",
                    file=label,
                    field=field,
                    hint="put the file beside the request, or use "
                    "`flowbatch submit` which brings it along",
                ) from None
            if not stat.S_ISREG(st.st_mode):
                raise ArgumentError(
                    f"{value.source!r} is not a regular file", file=label, field=field
                )
            if claimed.uid != 0 and st.st_uid != claimed.uid:
                raise ArgumentError(
                    f"file {value.source!r} belongs to another user",
                    file=label,
                    field=field,
                    hint="a request may only use its owner's files",
                )
            out[name] = real
        return out

    # -- rejection ----------------------------------------------------------------------------
    def reject(self, claimed: Claimed, error: FlowbatchError) -> None:
        rejected = self.layout.rejected
        rejected.mkdir(parents=True, exist_ok=True)
        name = claimed.name
        dest = rejected / name
        n = 1
        while dest.exists() or dest.is_symlink() or (rejected / f"{dest.name}.error.yaml").exists():
            dest = rejected / f"{Path(name).stem}.{n}{Path(name).suffix}"
            n += 1
        info = error.to_dict()
        info.setdefault("file", name)
        info["rejected_at"] = now_iso()
        info["request"] = dest.name
        atomic.write_text(rejected / f"{dest.name}.error.yaml", yamlio.dump(info), fsync=False)
        try:
            os.rename(claimed.path, dest)
        except FileNotFoundError:
            pass
        log.warning("rejected %s: %s", name, error.summary())


def _jsonable(arguments: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in arguments.items():
        if isinstance(value, FileArg):
            out[name] = {"source": value.source, "target": value.target}
        else:
            out[name] = value
    return out
