"""A corpus of hostile requests, each run through a real daemon on a real site.

Every case drops something hostile into the queue and then asserts one of two things:

* **rejected with its reason**: ``rejected/<name>`` holds the entry as it was dropped
  (a symlink stays a symlink, a FIFO a FIFO) beside ``<name>.error.yaml``, which names
  the file and says in ``reason`` / ``field`` what is wrong; no run was created;
* **ran safely**: the run ended (SUCCESS, or ERROR with a reason) and the program got the
  user's values literally; nothing was created outside the run folder.

After every case the same daemon (same session, same ``Daemon`` object) must still serve
a good request to SUCCESS. Cases are generators: the part before ``yield`` drops the
hostile input, the part after checks what the daemon did with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch import api
from flowbatch.daemon import Daemon
from flowbatch.runs import RunRecord
from flowbatch.site import Site

from .conftest import EXAMPLES, drop, make_site, run_until_idle, write_template

ROOT = os.geteuid() == 0
MIB = 1 << 20
OTHER_UID = 65534  # nobody

# flowServ dialect: the program records its argv; the user's string reaches it through
# every placeholder form ($[[s]] unquoted, in double quotes, inside a word, ${context}).
PROBE = """
workflow:
  parameters:
    sv: $[[s]]
  steps:
    - name: probe
      action:
        commands:
          - ${python} -c 'import json, sys; json.dump(sys.argv[1:], open("argv.json", "w"))'
              $[[s]] "$[[s]]" "x=$[[s]]" ${sv} "${sv}" $[[n]]
          - echo $[[s]] > echo.txt
          - if [ -f data/in.txt ]; then cp data/in.txt copied.txt; fi
parameters:
  - {name: s, dtype: string, defaultValue: plain}
  - {name: n, dtype: int, range: '[0,100]', defaultValue: 1}
  - {name: f, dtype: float, defaultValue: 0.5}
  - {name: b, dtype: bool, defaultValue: false}
  - {name: data, dtype: file, target: data/in.txt, isRequired: false}
"""

# native dialect (sandboxed Jinja2): the same probe, plus a filter and a loop.
NATIVE = """
flowbatch: 1
workflow:
  steps:
    - name: probe
      action:
        commands:
          - >-
            {{ python }} -c 'import json, sys; json.dump(sys.argv[1:], open("argv.json", "w"))'
            {{ s }} "{{ s }}" "x={{ s }}" {{ s | upper }} "{{ s }}" {{ n }}
          - |
            {% for i in range(n) %}
            echo {{ s }} >> loop.txt
            {% endfor %}
parameters:
  - {name: s, dtype: string, defaultValue: plain}
  - {name: n, dtype: int, range: '[0,100]', defaultValue: 1}
"""


# -- the harness ---------------------------------------------------------------------------


@dataclass
class Env:
    site: Site
    tmp: Path
    pwn: Path  # hostile values try to create this file; it must never exist
    outside: Path  # a folder outside the site that nothing may write into

    @property
    def queue(self) -> Path:
        return self.site.layout.queue

    @property
    def rejected_dir(self) -> Path:
        return self.site.layout.rejected

    def put(self, name: str, content: str | bytes | dict[str, Any], **files: str) -> bytes:
        """Drop a request (text, bytes or a mapping) the way a user would: write, rename."""
        if isinstance(content, bytes):
            for rel, text in files.items():
                (self.queue / rel).write_text(text, encoding="utf-8")
            tmp = self.queue / ".drop.tmp"
            tmp.write_bytes(content)
            os.rename(tmp, self.queue / name)
        else:
            drop(self.site, name, content, files=files)
        return (self.queue / name).read_bytes()

    def runs(self) -> list[RunRecord]:
        return [self.site.store.load(r["id"]) for r in api.list_runs(self.site)]

    def run_of(self, name: str) -> RunRecord:
        found = [r for r in self.runs() if r.request == name]
        assert len(found) == 1, (name, [r.request for r in self.runs()])
        return found[0]

    def run_dir(self, run: RunRecord) -> Path:
        return self.site.store.run_dir(run)


CaseFn = Callable[[Env], Iterator[None]]


@dataclass
class Case:
    fn: CaseFn
    config: dict[str, Any] | None = None
    xfail: str | None = None
    root_only: bool = False


CASES: dict[str, Case] = {}


def case(
    case_id: str,
    *,
    config: dict[str, Any] | None = None,
    xfail: str | None = None,
    root_only: bool = False,
) -> Callable[[CaseFn], CaseFn]:
    def register(fn: CaseFn) -> CaseFn:
        assert case_id not in CASES, case_id
        CASES[case_id] = Case(fn, config, xfail, root_only)
        return fn

    return register


def assert_rejected(
    env: Env,
    name: str,
    *,
    reason: str | None = None,
    field: str | None = None,
    original: bytes | None = None,
) -> dict[str, Any]:
    """``rejected/<name>`` + ``<name>.error.yaml`` naming the file, with the reason."""
    error_file = env.rejected_dir / f"{name}.error.yaml"
    assert error_file.is_file(), sorted(p.name for p in env.rejected_dir.iterdir())
    info = yaml.safe_load(error_file.read_text(encoding="utf-8"))
    assert info["file"] == name and info["request"] == name, info
    assert info["reason"], info
    if reason is not None:
        assert re.search(reason, info["reason"], re.IGNORECASE), info
    if field is not None:
        assert info.get("field") == field, info
    kept = env.rejected_dir / name
    assert os.path.lexists(kept), "the rejected request was lost"
    if original is not None:
        assert kept.read_bytes() == original, "the rejected request was altered"
    assert not (env.queue / name).exists()
    assert [r.request for r in env.runs()] == [], "a rejected request made a run"
    return dict(info)


def assert_argv(env: Env, run: RunRecord, value: str, *, native: bool = False) -> None:
    """The probe program received ``value`` literally through every placeholder form."""
    argv = json.loads((env.run_dir(run) / "argv.json").read_text(encoding="utf-8"))
    if native:
        assert argv[:5] == [value, value, f"x={value}", value.upper(), value], argv
    else:
        assert argv[:5] == [value, value, f"x={value}", value, value], argv


def assert_nothing_escaped(env: Env) -> None:
    assert not env.pwn.exists(), "a user value ran as code"
    stray = [p for p in env.tmp.rglob("*PWNED*")]
    assert stray == [], stray
    assert list(env.outside.iterdir()) == [], "something was written outside the site"


def fifos_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if stat.S_ISFIFO(p.lstat().st_mode)]


class FifoGuard:
    """If the daemon ever blocks opening a FIFO for reading, open its other end after a
    delay so the test fails with a message instead of hanging; record that it happened."""

    def __init__(self, folder: Path, delay: float = 5.0) -> None:
        self.folder = folder
        self.blocked: list[str] = []
        self._timer = threading.Timer(delay, self._unblock)
        self._timer.daemon = True

    def _unblock(self) -> None:
        for path in fifos_under(self.folder):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader waiting, as it should be
                continue
            self.blocked.append(path.name)
            os.close(fd)

    def __enter__(self) -> FifoGuard:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def install_templates(site: Site, tmp: Path) -> None:
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    api.install(site, write_template(tmp / "t-probe", PROBE), workflow_id="probe")
    api.install(site, write_template(tmp / "t-native", NATIVE), workflow_id="native")


def params() -> list[Any]:
    out = []
    for case_id, c in CASES.items():
        marks: list[Any] = []
        if c.xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=c.xfail))
        if c.root_only:
            marks.append(pytest.mark.skipif(not ROOT, reason="needs root (chown, mknod)"))
        out.append(pytest.param(case_id, marks=marks, id=case_id))
    return out


# -- rejected: what the YAML is ----------------------------------------------------------

BILLION_LAUGHS = (
    "workflow: probe\nlol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
)


def _rejection(
    case_id: str,
    content: str | bytes | dict[str, Any],
    *,
    reason: str | None = None,
    field: str | None = None,
    config: dict[str, Any] | None = None,
    files: dict[str, str] | None = None,
) -> None:
    """Register a case: ``content`` dropped as ``<case_id>.yaml`` is rejected so."""

    def fn(env: Env) -> Iterator[None]:
        name = f"{case_id}.yaml"
        original = env.put(name, content, **(files or {}))
        yield
        assert_rejected(env, name, reason=reason, field=field, original=original)

    case(case_id, config=config)(fn)


_rejection("yaml-billion-laughs", BILLION_LAUGHS, reason="alias")
_rejection(
    "yaml-too-many-aliases",
    "workflow: probe\nx: &x a\nl: [" + ", ".join(["*x"] * 101) + "]\n",
    reason="too many YAML aliases",
)
_rejection(
    "yaml-recursive-alias",
    "workflow: probe\narguments: &a {s: *a}\n",
    reason="nesting|alias|recursive",
)
_rejection(
    "yaml-merge-key-bomb",
    "workflow: probe\na: &a {"
    + ", ".join(f"k{i}: {i}" for i in range(50))
    + "}\n"
    + "".join(f"m{i}: {{<<: *a}}\n" for i in range(60)),
    field="a",
    reason="unknown field",
)
_rejection(
    "size-over-1mib",
    "workflow: probe\n# " + "x" * MIB + "\n",
    reason=f"size limit of {MIB} bytes",
)
_rejection(
    "size-over-site-limit",
    "workflow: probe\n# " + "x" * 4096 + "\n",
    reason="size limit of 2048 bytes",
    config={"max_request_bytes": 2048},
)
_rejection(
    "nesting-block-100",
    "workflow: probe\narguments:\n"
    + "".join("  " * (i + 1) + "a:\n" for i in range(100))
    + "  " * 101
    + "b: 1\n",
    reason="nesting deeper than 64",
)
_rejection(
    "nesting-flow-list-200k",
    "workflow: probe\narguments: {s: " + "[" * 200_000 + "]" * 200_000 + "}\n",
    reason="nesting",
)
_rejection(
    "nesting-flow-map-100k",
    "workflow: probe\narguments: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n",
    reason="nesting",
)
_rejection("non-utf8-byte", b"workflow: probe\nname: \xff\xfe\n", reason="not UTF-8")
_rejection(
    "latin1-text",
    "workflow: probe\narguments: {s: caf\xe9}\n".encode("latin-1"),
    reason="not UTF-8",
)
_rejection("binary-nul", b"workflow: probe\n\x00\x01\x02\x03", reason="binary")
_rejection("binary-elf-header", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, reason="binary")
_rejection("utf16-with-bom", "workflow: probe\n".encode("utf-16"), reason="binary|UTF-8")
_rejection("empty-file", b"", reason="empty")
_rejection("whitespace-only", " \n   \n\n", reason="mapping")
_rejection("comment-only", "# workflow: probe\n", reason="mapping")
_rejection("document-is-a-list", "- workflow: probe\n", reason="mapping")
_rejection("document-is-a-scalar", "probe\n", reason="mapping")
_rejection("document-is-null", "~\n", reason="mapping")
_rejection(
    "two-documents", "workflow: probe\n---\nworkflow: helloworld\n", reason="another document"
)
_rejection("yaml-syntax-error", "workflow: [probe\n", reason="invalid YAML")
_rejection(
    "yaml-python-tag",
    "workflow: probe\narguments:\n  s: !!python/object/apply:os.system ['touch PWNED']\n",
    reason="constructor",
)
_rejection("yaml-custom-tag", "workflow: !include /etc/passwd\n", reason="constructor|tag")
_rejection("yaml-unhashable-key", "workflow: probe\n? [a, b]\n: c\n", reason="unhashable")
# PyYAML resolves these as timestamps / ints and then fails with ValueError/KeyError
# (not a YAMLError): they used to escape intake and crash every daemon tick.
_rejection("yaml-impossible-date", "workflow: probe\nname: 2024-13-45\n", reason="month")
_rejection("yaml-int-tag-on-text", "workflow: probe\nname: !!int abc\n", reason="cannot be read")
_rejection("yaml-bool-tag-on-text", "workflow: probe\nname: !!bool abc\n", reason="cannot be read")
_rejection(
    "yaml-int-5000-digits",
    "workflow: probe\narguments: {n: " + "1" * 5000 + "}\n",
    reason="cannot be read",
)
_rejection(
    "duplicate-key-top-level",
    "workflow: probe\nworkflow: helloworld\n",
    reason="duplicate key 'workflow' at line 2",
)
_rejection(
    "duplicate-key-in-arguments",
    "workflow: probe\narguments:\n  s: harmless\n  s: $(touch PWNED)\n",
    reason="duplicate key 's' at line 4",
    field="s",
)

# -- rejected: what the request says --------------------------------------------------------

_rejection("workflow-unknown", {"workflow": "nope"}, reason="unknown workflow", field="workflow")
_rejection(
    "workflow-traversal",
    {"workflow": "../templates/probe"},
    reason="workflow id",
    field="workflow",
)
_rejection("workflow-a-list", {"workflow": ["probe"]}, field="workflow")
_rejection("workflow-missing", {"arguments": {"s": "x"}}, reason="missing field", field="workflow")
_rejection(
    "version-traversal",
    {"workflow": "probe", "version": "../../../../etc"},
    reason="invalid version id",
    field="version",
)
_rejection(
    "executor-unknown",
    {"workflow": "probe", "executor": "$(touch PWNED)"},
    reason="unknown executor",
    field="executor",
)
_rejection(
    "extra-top-level-field",
    {"workflow": "probe", "command": "rm -rf /"},
    reason="unknown field 'command'",
    field="command",
)
_rejection(
    "extra-argument",
    {"workflow": "probe", "arguments": {"s": "x", "PATH": "/tmp"}},
    reason="unknown parameter 'PATH'",
    field="arguments.PATH",
)
_rejection(
    "argument-name-not-text",
    "workflow: probe\narguments: {1: x}\n",
    reason="argument name must be a parameter name",
    field="arguments",
)
_rejection(
    "arguments-a-scalar",
    {"workflow": "probe", "arguments": "s=x"},
    reason="arguments must be a mapping",
    field="arguments",
)
_rejection(
    "run-name-with-newline",
    {"workflow": "probe", "name": "ok\nFAKE LOG LINE"},
    reason="one line",
    field="name",
)
_rejection("group-a-mapping", {"workflow": "probe", "group": {"a": 1}}, field="group")
# found by review: a bidi override made the run page show "(yrollam) )mallory(", another
# group's name in the heading; zero-width characters make two names look the same
_rejection(
    "name-bidi-override",
    {"workflow": "probe", "name": "Official baseline \u202e)yrollam("},
    reason="text-direction",
    field="name",
)
_rejection(
    "group-zero-width",
    {"workflow": "probe", "group": "ali\u200bce"},
    reason="zero-width",
    field="group",
)
_rejection("name-c1-control", {"workflow": "probe", "name": "a\x9bb"}, field="name")

# wrong types and numbers ({workflow: probe}: s string, n int [0,100], f float, b bool)
for _id, _args, _reason in [
    ("type-list-for-int", {"n": [1, 2]}, "not an integer"),
    ("type-dict-for-string", {"s": {"a": 1}}, "not a string"),
    ("type-bool-for-int", {"n": True}, "not an integer"),
    ("type-bool-for-string", {"s": True}, "not a string"),
    ("type-null-for-string", {"s": None}, "not a string"),
    ("type-string-for-bool", {"b": "maybe"}, "not a boolean"),
    ("type-float-for-int", {"n": 3.5}, "not an integer"),
    ("type-text-for-float", {"f": "1,5"}, "not a number"),
    ("range-int-above", {"n": 101}, "out of range"),
    ("range-int-negative", {"n": -1}, "out of range"),
    ("huge-int-10e100", {"n": 10**100}, "out of range"),
    ("huge-int-text-5000-digits", {"n": "1" * 5000}, "too many digits"),
    ("huge-int-10e400-for-float", {"f": 10**400}, "not a finite number"),
    ("float-text-nan", {"f": "nan"}, "not a number"),
    ("float-text-inf", {"f": "inf"}, "not a number"),
    ("float-text-minus-infinity", {"f": "-Infinity"}, "not a number"),
    ("float-text-1e400", {"f": "1e400"}, "not a finite number"),
]:
    _rejection(
        _id,
        {"workflow": "probe", "arguments": _args},
        reason=_reason,
        field="arguments." + next(iter(_args)),
    )

for _id, _text in [
    ("yaml-dot-nan", ".nan"),
    ("yaml-dot-inf", ".inf"),
    ("yaml-minus-dot-inf", "-.inf"),
    ("yaml-float-1e400", "1.0e+400"),
]:
    _rejection(
        _id,
        f"workflow: probe\narguments:\n  f: {_text}\n",
        reason="not a finite number",
        field="arguments.f",
    )
_rejection(
    "range-float-helloworld",
    {"workflow": "helloworld", "arguments": {"sleeptime": 1e9}},
    reason="out of range",
    field="arguments.sleeptime",
)
# a number too large for a float (an OverflowError, not a ValueError, used to escape as an
# internal error without a field)
_rejection(
    "resources-time-400-digits",
    "workflow: probe\nresources: {time: '" + "9" * 400 + ":00'}\n",
    reason="not a time",
    field="resources",
)
_rejection(
    "resources-time-days-400-digits",
    "workflow: probe\nresources: {time: '" + "9" * 400 + "-00'}\n",
    reason="not a time",
    field="resources",
)
_rejection(
    "native-loop-count-out-of-range",
    {"workflow": "native", "arguments": {"n": 10**9}},
    reason="out of range",
    field="arguments.n",
)

# cancels
_rejection("cancel-unknown-run", {"cancel": "0123456789ab"}, reason="unknown run", field="cancel")
_rejection(
    "cancel-traversal", {"cancel": "../../index.db"}, reason="invalid run id", field="cancel"
)
_rejection("cancel-a-number", "cancel: 12\n", field="cancel")
_rejection("cancel-extra-field", {"cancel": "0123456789ab", "force": True}, reason="unknown field")


# -- rejected: file arguments --------------------------------------------------------------


def _file_case(
    case_id: str, value: Any, *, reason: str, field: str = "arguments.names", **files: str
) -> None:
    _rejection(
        case_id,
        {"workflow": "helloworld", "arguments": {"names": value}},
        reason=reason,
        field=field,
        files=files or None,
    )


_file_case("file-traversal-parent", "../flowbatch.yaml", reason=r"inside its folder|'\.\.'")
_file_case("file-traversal-inner", "a/../../x", reason=r"inside its folder|'\.\.'")
_file_case("file-absolute", "/etc/passwd", reason="inside its folder|absolute")
_file_case("file-missing", "nothing-here.txt", reason="does not exist")
_file_case("file-nul-in-path", "n.txt\x00/etc/passwd", reason="NUL")
_file_case(
    "file-target-traversal",
    {"source": "n.txt", "target": "../../../../outside/x"},
    reason=r"'\.\.'",
    field="arguments.names.target",
    **{"n.txt": "Ann\n"},
)
_file_case(
    "file-target-absolute",
    {"source": "n.txt", "target": "/tmp/PWNED"},
    reason="absolute",
    field="arguments.names.target",
    **{"n.txt": "Ann\n"},
)
_rejection(
    "file-flowserv-wire-traversal",
    {
        "workflow": "helloworld",
        "arguments": [
            {"name": "names", "value": {"type": "$file", "value": {"fileId": "../../x"}}}
        ],
    },
    reason=r"inside its folder|'\.\.'",
    field="arguments.names",
)


@case("file-symlink-to-etc-passwd")
def _(env: Env) -> Iterator[None]:
    os.symlink("/etc/passwd", env.queue / "link.txt")
    original = env.put("r.yaml", {"workflow": "helloworld", "arguments": {"names": "link.txt"}})
    yield
    assert_rejected(env, "r.yaml", reason="outside", field="arguments.names", original=original)


@case("file-symlink-relative-escape")
def _(env: Env) -> Iterator[None]:
    (env.outside.parent / "secret.txt").write_text("secret\n")
    rel = os.path.relpath(env.outside.parent / "secret.txt", env.queue)
    os.symlink(rel, env.queue / "rel.txt")
    env.put("r.yaml", {"workflow": "helloworld", "arguments": {"names": "rel.txt"}})
    yield
    assert_rejected(env, "r.yaml", reason="outside", field="arguments.names")


@case("file-symlinked-directory-component")
def _(env: Env) -> Iterator[None]:
    os.symlink("/etc", env.queue / "sub")
    env.put("r.yaml", {"workflow": "helloworld", "arguments": {"names": "sub/passwd"}})
    yield
    assert_rejected(env, "r.yaml", reason="outside", field="arguments.names")


@case("file-symlink-into-claimed")
def _(env: Env) -> Iterator[None]:
    os.symlink(".claimed", env.queue / "c")
    env.put("r.yaml", {"workflow": "helloworld", "arguments": {"names": "c"}})
    yield
    assert_rejected(env, "r.yaml", reason="outside", field="arguments.names")


@case("file-is-a-directory")
def _(env: Env) -> Iterator[None]:
    (env.queue / "adir").mkdir()
    (env.queue / "adir" / "x.txt").write_text("x\n")
    env.put("r.yaml", {"workflow": "helloworld", "arguments": {"names": "adir"}})
    yield
    assert_rejected(env, "r.yaml", reason="not a regular file", field="arguments.names")


@case("file-is-a-fifo")
def _(env: Env) -> Iterator[None]:
    os.mkfifo(env.queue / "pipe.txt")
    env.put("r.yaml", {"workflow": "helloworld", "arguments": {"names": "pipe.txt"}})
    with FifoGuard(env.queue) as guard:
        yield
    assert guard.blocked == [], "the daemon blocked opening a FIFO"
    assert_rejected(env, "r.yaml", reason="not a regular file", field="arguments.names")


@case("file-of-root-in-request-of-another-user", root_only=True)
def _(env: Env) -> Iterator[None]:
    (env.queue / "root.txt").write_text("root only\n")
    os.chmod(env.queue / "root.txt", 0o600)
    env.put("r.yaml", {"workflow": "helloworld", "arguments": {"names": "root.txt"}})
    os.chown(env.queue / "r.yaml", OTHER_UID, OTHER_UID)
    yield
    info = assert_rejected(env, "r.yaml", field="arguments.names")
    assert "file 'root.txt' belongs to root, not to the request's owner" in info["reason"]


@case("file-of-another-user-in-request-of-root", root_only=True)
def _(env: Env) -> Iterator[None]:
    """A root daemon runs root's request as root: an input its owner could change under
    that run (a script the workflow runs) would be theirs to run as root."""
    (env.queue / "theirs.txt").write_text("echo theirs\n")
    os.chown(env.queue / "theirs.txt", OTHER_UID, OTHER_UID)
    os.chmod(env.queue / "theirs.txt", 0o644)
    env.put("r.yaml", {"workflow": "helloworld", "arguments": {"names": "theirs.txt"}})
    os.chown(env.queue / "r.yaml", 0, 0)
    yield
    info = assert_rejected(env, "r.yaml", field="arguments.names")
    assert "belongs to" in info["reason"] and "not to the request's owner root" in info["reason"]
    assert "flowbatch submit" in str(info.get("hint"))


@case("file-target-replaces-template-code")
def _(env: Env) -> Iterator[None]:
    forged = "import json; json.dump({'avg_count': 1e9, 'max_len': 0}, open('results/analytics.json', 'w'))\n"
    env.put(
        "r.yaml",
        {
            "workflow": "helloworld",
            "arguments": {"names": {"source": "f.py", "target": "code/analyze.py"}},
        },
        **{"f.py": forged},
    )
    yield
    assert_rejected(env, "r.yaml", field="arguments.names.target")


# -- rejected: entries that are not regular files --------------------------------------------


@case("entry-directory")
def _(env: Env) -> Iterator[None]:
    (env.queue / "adir.yaml").mkdir()
    (env.queue / "adir.yaml" / "workflow.yaml").write_text("workflow: probe\n")
    yield
    assert_rejected(env, "adir.yaml", reason="directory")
    assert (env.rejected_dir / "adir.yaml" / "workflow.yaml").is_file()


@case("entry-symlink-to-good-request")
def _(env: Env) -> Iterator[None]:
    good = env.tmp / "elsewhere.yaml"
    good.write_text("workflow: probe\n")
    os.symlink(good, env.queue / "link.yaml")
    yield
    assert_rejected(env, "link.yaml", reason="symbolic link")
    assert (env.rejected_dir / "link.yaml").is_symlink()
    assert good.read_text() == "workflow: probe\n"


@case("entry-symlink-to-etc-passwd")
def _(env: Env) -> Iterator[None]:
    before = Path("/etc/passwd").read_bytes()
    os.symlink("/etc/passwd", env.queue / "passwd.yaml")
    yield
    assert_rejected(env, "passwd.yaml", reason="symbolic link")
    assert os.readlink(env.rejected_dir / "passwd.yaml") == "/etc/passwd"
    assert Path("/etc/passwd").read_bytes() == before


@case("entry-dangling-symlink")
def _(env: Env) -> Iterator[None]:
    os.symlink(env.tmp / "nowhere.yaml", env.queue / "dangling.yaml")
    yield
    assert_rejected(env, "dangling.yaml", reason="symbolic link")


@case("entry-fifo")
def _(env: Env) -> Iterator[None]:
    os.mkfifo(env.queue / "fifo.yaml")
    with FifoGuard(env.queue) as guard:
        yield
    assert guard.blocked == [], "the daemon blocked opening a FIFO"
    assert_rejected(env, "fifo.yaml", reason="not a regular file")
    assert stat.S_ISFIFO((env.rejected_dir / "fifo.yaml").lstat().st_mode)


@case("entry-char-device", root_only=True)
def _(env: Env) -> Iterator[None]:
    os.mknod(env.queue / "zero.yaml", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    yield
    assert_rejected(env, "zero.yaml", reason="not a regular file")


# -- rejected or safe: request file names ------------------------------------------------------


def _good_name_case(case_id: str, name: str, **kw: Any) -> None:
    """A valid request under an odd file name runs, and the name is recorded as given."""

    def fn(env: Env) -> Iterator[None]:
        env.put(name, {"workflow": "probe", "arguments": {"s": name}})
        yield
        run = env.run_of(name)
        assert run.state.value == "SUCCESS", run.messages
        assert_argv(env, run, name)

    case(case_id, **kw)(fn)


_good_name_case("name-with-spaces", "my first try.yaml")
_good_name_case("name-unicode", "ünïcødé ✓ 試し.yaml")
_good_name_case("name-leading-dash", "-rf --no-preserve-root.yaml")
_good_name_case("name-command-substitution", "$(touch PWNED).yaml")
_good_name_case("name-backticks-semicolons", "`touch PWNED`; touch PWNED;.yaml")
_good_name_case("name-with-newline", "first\nsecond.yaml")
_good_name_case("name-uppercase-suffix", "LOUD.YML")
_good_name_case("name-glob-and-quotes", "*'\"?[a].yaml")


# The claim renames to .claimed/<12-hex run id>--<name> (14 more bytes), and a rejection
# writes <name>.error.yaml (11 more): a name near NAME_MAX (255) overflows both. Either
# outcome is fine (a run, or a rejection saying the name is too long); a crash is not.
@case("name-near-name-max")
def _(env: Env) -> Iterator[None]:
    name = "n" * 245 + ".yaml"
    env.put(name, {"workflow": "probe"})
    yield
    runs = env.runs()
    errors = list(env.rejected_dir.glob("*.error.yaml"))
    if runs:
        assert [(r.request, r.state.value) for r in runs] == [(name, "SUCCESS")]
    else:
        assert len(errors) == 1 and "long" in errors[0].read_text(encoding="utf-8"), errors


@case("name-not-utf8")
def _(env: Env) -> Iterator[None]:
    raw = os.fsencode(env.queue) + b"/caf\xe9.yaml"
    with open(raw, "wb") as fh:
        fh.write(b"workflow: probe\n")
    yield
    runs = env.runs()
    rejected = list(env.rejected_dir.glob("*.error.yaml"))
    assert len(runs) + len(rejected) == 1, (runs, rejected)


# -- ran safely: boundaries that are allowed -------------------------------------------------


@case("size-exactly-1mib")
def _(env: Env) -> Iterator[None]:
    head = "workflow: probe\n# "
    env.put("big.yaml", head + "x" * (MIB - len(head) - 1) + "\n")
    assert (env.queue / "big.yaml").stat().st_size == MIB
    yield
    assert env.run_of("big.yaml").state.value == "SUCCESS"


@case("utf8-with-bom")
def _(env: Env) -> Iterator[None]:
    env.put("bom.yaml", b"\xef\xbb\xbfworkflow: probe\narguments: {s: caf\xc3\xa9}\n")
    yield
    run = env.run_of("bom.yaml")
    assert run.state.value == "SUCCESS", run.messages
    assert_argv(env, run, "café")


@case("aliases-within-limits")
def _(env: Env) -> Iterator[None]:
    env.put("alias.yaml", "workflow: probe\nname: &n tried\ngroup: *n\n")
    yield
    run = env.run_of("alias.yaml")
    assert run.state.value == "SUCCESS" and run.group == "tried"


@case("huge-int-as-string-value")
def _(env: Env) -> Iterator[None]:
    env.put("big.yaml", {"workflow": "probe", "arguments": {"s": 10**100}})
    yield
    run = env.run_of("big.yaml")
    assert run.state.value == "SUCCESS", run.messages
    assert_argv(env, run, str(10**100))


# one environment string over 128 KiB cannot be passed to exec (E2BIG): every program of
# the run would fail to start, so the value is refused at intake with its field
_rejection(
    "string-value-over-exec-limit",
    {"workflow": "probe", "arguments": {"s": "A" * 300_000}},
    reason="too long for the environment variable",
    field="arguments.s",
)


@case("control-characters-in-value")
def _(env: Env) -> Iterator[None]:
    value = "\x1b[2J\x07\r\x01\x7f"
    env.put("ctl.yaml", {"workflow": "probe", "arguments": {"s": value}})
    yield
    run = env.run_of("ctl.yaml")
    assert run.state.value == "SUCCESS", run.messages
    assert_argv(env, run, value)


# -- ran safely: shell metacharacters and template syntax in values -------------------------

HOSTILE_VALUES: dict[str, str] = {
    "cmd-subst": "$(touch {pwn})",
    "backticks": "`touch {pwn}`",
    "semicolon": "x; touch {pwn}",
    "pipe": "x | touch {pwn}",
    "and-and": "true && touch {pwn}",
    "newline": "x\ntouch {pwn}",
    "quotes": "\"'; touch {pwn}; '\"",
    "glob": "* ?[a-z] /etc/*",
    "dollar-home": "$HOME ${HOME} ~",
    "backslash-escape": "\\$(touch {pwn})\\",
    "jinja-expression": "{{ ''.__class__.__mro__ }}",
    "jinja-statement": "{% for x in range(3) %}{{ x }}{% endfor %}",
    "flowserv-layers": "$[[s]] ${sv} $$ ${python}",
    "redirect": "> {pwn} < /etc/passwd 2>&1",
}


def _shell_case(dialect: str, key: str, template: str) -> None:
    def fn(env: Env) -> Iterator[None]:
        value = template.replace("{pwn}", str(env.pwn))
        workflow = "native" if dialect == "native" else "probe"
        env.put("hostile.yaml", {"workflow": workflow, "arguments": {"s": value, "n": 2}})
        yield
        run = env.run_of("hostile.yaml")
        assert run.state.value == "SUCCESS", run.messages
        assert_argv(env, run, value, native=dialect == "native")
        run_dir = env.run_dir(run)
        if dialect == "native":
            loop = (run_dir / "loop.txt").read_text(encoding="utf-8")
            assert loop == f"{value}\n" * 2
        else:
            assert (run_dir / "echo.txt").read_text(encoding="utf-8") == f"{value}\n"

    case(f"shell-{dialect}-{key}")(fn)


for _dialect in ("flowserv", "native"):
    for _key, _value in HOSTILE_VALUES.items():
        _shell_case(_dialect, _key, _value)


@case("file-content-is-never-code")
def _(env: Env) -> Iterator[None]:
    content = "$(touch PWNED)\n`touch PWNED`\n{{ 7*7 }}\n"
    env.put("r.yaml", {"workflow": "probe", "arguments": {"data": "in.txt"}}, **{"in.txt": content})
    yield
    run = env.run_of("r.yaml")
    assert run.state.value == "SUCCESS", run.messages
    assert (env.run_dir(run) / "copied.txt").read_text(encoding="utf-8") == content


# -- the test ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site with the three templates installed, built once; each case runs on its own
    copy (the site holds no absolute paths), so the cases stay independent."""
    tmp = tmp_path_factory.mktemp("golden")
    site = make_site(tmp / "site")
    install_templates(site, tmp)
    site.close()
    return tmp / "site"


@pytest.mark.parametrize("case_id", params())
def test_hostile_input(case_id: str, tmp_path: Path, golden: Path) -> None:
    c = CASES[case_id]
    shutil.copytree(golden, tmp_path / "site", symlinks=True)
    site = make_site(tmp_path / "site", c.config) if c.config else Site(tmp_path / "site")
    outside = tmp_path / "outside"
    outside.mkdir()
    env = Env(site=site, tmp=tmp_path, pwn=tmp_path / "PWNED", outside=outside)
    cwd = Path.cwd()
    daemon = Daemon(site)
    daemon.start()
    try:
        steps = c.fn(env)
        next(steps)  # the hostile input is in the queue
        run_until_idle(site, timeout=30, daemon=daemon)
        assert daemon.intake.leftovers() == []  # every request handled
        daemon.intake.settler.flush()  # and its claim removed once its runs are on disk
        next(steps, None)  # the case's own assertions
        assert_nothing_escaped(env)
        assert not (cwd / "PWNED").exists()
        assert list(site.layout.claimed.iterdir()) == []
        # the same daemon serves the next good request
        drop(site, "zz-next-good.yaml", {"workflow": "probe", "arguments": {"s": "next"}})
        run_until_idle(site, timeout=30, daemon=daemon)
        nxt = env.run_of("zz-next-good.yaml")
        assert nxt.state.value == "SUCCESS", nxt.messages
        assert_argv(env, nxt, "next")
    finally:
        daemon.stop()
        site.close()


def test_corpus_is_big_enough() -> None:
    assert len(CASES) >= 40
