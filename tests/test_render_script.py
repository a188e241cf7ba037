"""The run script contract, run by real bash: markers, logs, failures, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flowbatch.render import (
    SCRIPT_NAME,
    RenderedStep,
    RenderedWorkflow,
    build_script,
    read_markers,
    step_log_paths,
)
from flowbatch.render.script import Markers, StepMarker


def write(
    run_dir: Path, steps: list[tuple[str, list[str]]], env: dict[str, str] | None = None
) -> Path:
    rendered = RenderedWorkflow([RenderedStep(n, c) for n, c in steps], env or {})
    run_dir.mkdir(parents=True, exist_ok=True)
    script = run_dir / SCRIPT_NAME
    script.write_text(build_script(rendered, run_id="run-1"))
    return script


def run(script: Path, **kwargs) -> subprocess.CompletedProcess[bytes]:
    # from another working directory: the script must cd into its own folder
    return subprocess.run(["bash", str(script)], cwd="/", capture_output=True, timeout=30, **kwargs)


def test_success_writes_all_markers_and_logs(tmp_path: Path) -> None:
    before = time.time()
    script = write(
        tmp_path / "run",
        [
            ("prepare data", ["echo out1", "echo err1 >&2"]),
            ("train", ["echo out2 # a comment", "true"]),
        ],
        {"FB_x": 'it\'s "quoted"\nand multi-line'},
    )
    proc = run(script)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "run"
    markers = read_markers(run_dir)
    assert markers.started is not None
    pid, started, host = markers.started
    assert pid > 0 and before - 1 <= started <= time.time() + 1
    assert host == os.uname().nodename or host == ""
    assert sorted(markers.steps) == [1, 2]
    for step in markers.steps.values():
        assert step.exit_code == 0 and step.start is not None and step.end is not None
        assert step.start <= step.end
    assert markers.exit is not None and markers.exit[0] == 0 and markers.exit[2] == 0
    out1, err1 = step_log_paths(1, "prepare data")
    assert (out1, err1) == ("logs/step-01-prepare_data.out", "logs/step-01-prepare_data.err")
    assert (run_dir / out1).read_text() == "out1\n"
    assert (run_dir / err1).read_text() == "err1\n"
    out2, err2 = step_log_paths(2, "train")
    assert (run_dir / out2).read_text() == "out2\n"
    assert (run_dir / err2).read_text() == ""  # created even when empty


def test_env_is_exported_and_inherited(tmp_path: Path) -> None:
    value = 'it\'s "quoted"\nand $(multi) line'
    script = write(
        tmp_path / "run",
        [("s", ['printf "%s|%s|%s|%s" "$FB_x" "$FLOWBATCH_RUN_ID" "$KEEP" "$PATH" > out'])],
        {"FB_x": value},
    )
    env = {**os.environ, "KEEP": "kept", "PATH": f"/opt/site/bin:{os.environ['PATH']}"}
    assert run(script, env=env).returncode == 0
    assert (tmp_path / "run" / "out").read_text() == f"{value}|run-1|kept|{env['PATH']}"


def test_failing_command_stops_the_run(tmp_path: Path) -> None:
    script = write(
        tmp_path / "run",
        [
            ("one", ["true"]),
            ("two", ["echo before", "exit 3", "touch not-run"]),
            ("three", ["touch not-run"]),
        ],
    )
    assert run(script).returncode == 3
    run_dir = tmp_path / "run"
    markers = read_markers(run_dir)
    assert markers.exit is not None and (markers.exit[0], markers.exit[2]) == (3, 2)
    assert markers.steps[1].exit_code == 0
    assert markers.steps[2].exit_code == 3 and markers.steps[2].end is not None
    assert 3 not in markers.steps
    assert not (run_dir / "not-run").exists()
    assert (run_dir / step_log_paths(2, "two")[0]).read_text() == "before\n"


def test_commands_run_in_subshells(tmp_path: Path) -> None:
    # 'cd', 'set -e', variables and 'exit 0' in one command do not leak into the next
    script = write(
        tmp_path / "run", [("s", ["cd /; fb_step=9; set -e; exit 0", "pwd > where", "(exit 0)"])]
    )
    assert run(script).returncode == 0
    assert (tmp_path / "run" / "where").read_text().strip() == str(tmp_path / "run")
    assert read_markers(tmp_path / "run").exit[2] == 0  # type: ignore[index]


def test_builtin_commands_run_without_a_fork(tmp_path: Path) -> None:
    """``echo``/``printf``/``test`` commands run in the script's own process (BASHPID is
    the script's pid), a command that changes the shell still in a subshell."""
    script = write(
        tmp_path / "run",
        [("s", ['echo "$BASHPID" > grouped', "cd /; echo $BASHPID > /dev/null", "pwd > where"])],
    )
    assert run(script).returncode == 0
    markers = read_markers(tmp_path / "run")
    assert markers.started is not None
    assert int((tmp_path / "run" / "grouped").read_text()) == markers.started[0]
    assert (tmp_path / "run" / "where").read_text().strip() == str(tmp_path / "run")


def test_a_function_named_like_a_builtin_keeps_every_subshell(tmp_path: Path) -> None:
    """An inherited function ``echo`` (``export -f``) could change the shell: the script
    sees it at its start and runs each command in its subshell."""
    script = write(tmp_path / "run", [("s", ["echo hi > out", "pwd > where"])])
    env = {
        **os.environ,
        "BASH_FUNC_echo%%": '() { cd /; builtin echo "$@"; }',
        "BASH_FUNC_pwd%%": "() { builtin pwd; }",
    }
    assert run(script, env=env).returncode == 0
    assert (tmp_path / "run" / "out").read_text() == "hi\n"
    assert (tmp_path / "run" / "where").read_text().strip() == str(tmp_path / "run")


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)]
)
def test_killed_run_records_the_signal(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    script = write(
        tmp_path / "run", [("one", ["true"]), ("two", ["sleep 30"]), ("three", ["touch not-run"])]
    )
    proc = subprocess.Popen(["bash", str(script)], start_new_session=True)
    deadline = time.time() + 10
    while 2 not in read_markers(tmp_path / "run").steps and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # let 'sleep' start
    os.killpg(proc.pid, sig)
    assert proc.wait(timeout=10) == code
    markers = read_markers(tmp_path / "run")
    assert markers.exit is not None and (markers.exit[0], markers.exit[2]) == (code, 2)
    assert markers.started is not None and markers.started[0] == proc.pid
    assert not (tmp_path / "run" / "not-run").exists()


def test_the_script_writes_one_marker_file_a_line_per_event(tmp_path: Path) -> None:
    """A run creates one marker file, whatever its steps (on a shared file system each
    file created is a metadata round trip): a line per event, read back in full."""
    script = write(tmp_path / "run", [("one", ["true", "true"]), ("two", ["exit 3"])])
    assert run(script).returncode == 3
    status = tmp_path / "run" / "status"
    assert sorted(p.name for p in status.iterdir()) == ["markers"]
    kinds = [line.split(" ")[0] for line in (status / "markers").read_text().splitlines()]
    assert kinds == ["started", "start", "end", "start", "end", "exit"]
    markers = read_markers(tmp_path / "run")
    assert markers.started is not None and markers.exit is not None
    assert (markers.exit[0], markers.exit[2]) == (3, 2)
    assert [(n, m.exit_code) for n, m in sorted(markers.steps.items())] == [(1, 0), (2, 3)]
    assert all(m.start is not None and m.end is not None for m in markers.steps.values())


def test_read_markers_tolerates_partial_lines(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.mkdir()
    lines = [
        "started 123 1700000000.5 node-1",
        "start 01 1700000000,25",  # a comma-decimal locale
        "end 01 0 17000x",  # damaged: left out
        "start 02 garbage",
        "end 03 1 1700000001.0",
        "start xx 1",
        "something else",
        "exit 2 1700000002.0",  # a field short
    ]
    (status / "markers").write_text("\n".join(lines) + "\nexit 0 1700000003.0 0")  # unfinished
    markers = read_markers(tmp_path)
    assert markers.started == (123, 1700000000.5, "node-1")
    assert markers.exit is None
    assert markers.steps == {
        1: StepMarker(start=1700000000.25),
        3: StepMarker(None, 1, 1700000001.0),
    }
    with (status / "markers").open("a") as fh:  # the line completed, and an empty host
        fh.write("\nstarted 123 1700000000.5 \n")
    markers = read_markers(tmp_path)
    assert markers.exit == (0, 1700000003.0, 0)
    assert markers.started == (123, 1700000000.5, "")


def test_read_markers_of_the_earlier_layout_tolerates_partial_files(tmp_path: Path) -> None:
    """Runs started before the upgrade have a file per marker: still read."""
    status = tmp_path / "status"
    assert read_markers(tmp_path) == Markers()
    status.mkdir()
    (status / "started").write_text("123 1700000000.5")  # no newline: not finished
    (status / "exit").write_text("")
    (status / "step-01.start").write_text("1700000000,25\n")  # a comma-decimal locale
    (status / "step-01.exit").write_text("0 17000")
    (status / "step-02.start").write_text("garbage\n")
    (status / "step-03.exit").write_text("1 1700000001.0\n")
    (status / "step-xx.exit").write_text("1 2\n")
    markers = read_markers(tmp_path)
    assert markers.started is None and markers.exit is None
    assert markers.steps == {
        1: StepMarker(start=1700000000.25),
        3: StepMarker(None, 1, 1700000001.0),
    }
    (status / "started").write_text("123 1700000000.5 \n")  # empty host name
    (status / "exit").write_text("2 1700000002.0 3\n")
    markers = read_markers(tmp_path)
    assert markers.started == (123, 1700000000.5, "")
    assert markers.exit == (2, 1700000002.0, 3)


def test_markers_are_never_read_through_a_link(tmp_path: Path) -> None:
    """The run's user owns status/: a marker, or status/ itself, that is a symlink is
    not read (the daemon, often root, must not parse files the link points at)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "exit").write_text("0 1700000000.0 0\n")
    (elsewhere / "step-01.exit").write_text("0 1700000000.0\n")
    run_dir = tmp_path / "run"
    (run_dir / "status").mkdir(parents=True)
    (run_dir / "status" / "exit").symlink_to(elsewhere / "exit")
    (run_dir / "status" / "step-01.exit").symlink_to(elsewhere / "step-01.exit")
    assert read_markers(run_dir) == Markers()
    # the markers file of this version, a link: not read, and not taken for the old layout
    (elsewhere / "markers").write_text("exit 0 1700000000.0 0\n")
    (run_dir / "status" / "markers").symlink_to(elsewhere / "markers")
    (run_dir / "status" / "exit").unlink()
    (run_dir / "status" / "exit").write_text("0 1700000000.0 0\n")
    assert read_markers(run_dir) == Markers()
    other = tmp_path / "run2"
    other.mkdir()
    (other / "status").symlink_to(elsewhere)
    assert read_markers(other) == Markers()
    assert read_markers(tmp_path / "missing") == Markers()


def test_script_shape(tmp_path: Path) -> None:
    text = build_script(
        RenderedWorkflow([RenderedStep("s", ["echo hi # x"])], {"FB_a": "x'y"}), run_id="r 9"
    )
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "run r 9" in lines[1]
    # its own folder without a fork: no command substitution, no dirname
    assert 'case $0 in */*) cd -- "${0%/*}" || exit 90 ;; esac' in lines
    assert "$(" not in text and "dirname" not in text
    assert "export FB_a='x'\\''y'" in lines
    assert [line for line in lines if line.startswith("export ")] == [
        "export FLOWBATCH_RUN_ID='r 9'",
        "export FB_a='x'\\''y'",
    ]
    assert "set -u" not in text and "set -e" not in text
    # a command of builtins only: a brace group, its subshell kept for the guard's case
    assert lines.count("echo hi # x") == 2
    index = lines.index("echo hi # x")
    assert lines[index - 1] == 'if [ "$fb_group" = 1 ]; then {'
    assert lines[index + 1] == "}; else ("
    assert lines[index + 3].startswith("); fi >>logs/step-01-s.out")
    assert "fb_group=1" in lines
    # a command that starts a program or changes the shell: its subshell only
    text = build_script(RenderedWorkflow([RenderedStep("s", ["cd /", "ls"])], {}), run_id="r")
    lines = text.splitlines()
    assert lines[lines.index("cd /") - 1] == "(" and lines[lines.index("ls") - 1] == "("
    assert "fb_group" not in text
    with pytest.raises(ValueError):
        build_script(RenderedWorkflow([], {"not-a-name": "x"}), run_id="r")


def test_runs_in_its_own_folder_however_started(tmp_path: Path) -> None:
    """By path from elsewhere (the other tests start it from /), or by name from its
    folder; logs/ and status/ are made when missing (a retry's new attempt)."""
    script = write(tmp_path / "my run", [("s", ["pwd > here.txt"])])
    done = subprocess.run(
        ["bash", "run.sh"], cwd=script.parent, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert (script.parent / "here.txt").read_text().strip() == str(script.parent)
    assert read_markers(script.parent).exit is not None


def test_no_steps(tmp_path: Path) -> None:
    script = write(tmp_path / "run", [])
    assert run(script).returncode == 0
    assert read_markers(tmp_path / "run").exit is not None


def test_read_markers_reads_a_bounded_part_of_a_huge_file(tmp_path: Path) -> None:
    """The run's user owns ``status/markers``: the daemon reads at most 1 MiB of it. An
    exit line past that is not seen (the run ends as lost, never stays RUNNING)."""
    from flowbatch.render import script

    status = tmp_path / "status"
    status.mkdir()
    filler = "x" * 1000 + "\n"
    lines = "started 1 1700000000.0 h\n" + filler * (script._MARKERS_FILE_BYTES // len(filler) + 1)
    (status / "markers").write_text(lines + "exit 0 1700000001.0 0\n")
    markers = read_markers(tmp_path)
    assert markers.started == (1, 1700000000.0, "h") and markers.exit is None
    (status / "markers").write_text("started 1 1700000000.0 h\nexit 0 1700000001.0 0\n")
    assert read_markers(tmp_path).exit == (0, 1700000001.0, 0)
