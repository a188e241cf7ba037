"""The daemon's copy of a request in a run folder (``request.yaml``), read again after the
run's user had the folder: for a Slurm retry's resources and for ``runs rerun``. Replaced
by a FIFO, a link or a file of the user's own, it is refused at once (a FIFO held the
reader for ever; a link was followed; the user's own file gave a retry resources no one
checked)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch.errors import InputError
from flowbatch.lifecycle_ops import _old_request_options
from flowbatch.spec.resources import run_resources


def within(seconds: float, fn: Any) -> Any:
    """``fn()``'s outcome, or a failure if it does not return in time (a FIFO's open)."""
    out: list[Any] = []

    def call() -> None:
        try:
            out.append(("ok", fn()))
        except Exception as exc:
            out.append(("raised", exc))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    if not out:
        raise AssertionError("the reader waited (on a FIFO)")
    return out[0]


def run_folder(tmp_path: Path) -> Path:
    """``results/wf/runs/<id>`` with the daemon's copy of a request asking 2 CPUs."""
    folder = tmp_path / "results" / "wf" / "runs" / "r1"
    folder.mkdir(parents=True)
    (folder / "request.yaml").write_text(
        yaml.safe_dump({"workflow": "wf", "resources": {"cpus": 2}, "retries": 1})
    )
    return folder


def test_the_daemons_copy_is_read(tmp_path: Path) -> None:
    folder = run_folder(tmp_path)
    assert run_resources(None, folder / "request.yaml", os.geteuid())["cpus"] == 2
    assert _old_request_options(folder) == {"resources": {"cpus": 2}, "retries": 1}
    (folder / "request.yaml").unlink()  # an older run's folder without one
    assert run_resources(None, folder / "request.yaml", os.geteuid()) == run_resources(
        None, folder / "none.yaml"
    )
    assert _old_request_options(folder) == {}


def test_a_fifo_in_place_of_the_copy_is_refused_at_once(tmp_path: Path) -> None:
    folder = run_folder(tmp_path)
    (folder / "request.yaml").unlink()
    os.mkfifo(folder / "request.yaml")
    for read in (
        lambda: run_resources(None, folder / "request.yaml"),
        lambda: _old_request_options(folder),
    ):
        kind, value = within(5, read)
        assert kind == "raised" and isinstance(value, InputError), value
        assert "not a regular file" in str(value)


def test_a_link_in_place_of_the_copy_is_not_followed(tmp_path: Path) -> None:
    folder = run_folder(tmp_path)
    elsewhere = tmp_path / "mine.yaml"
    elsewhere.write_text(yaml.safe_dump({"workflow": "wf", "resources": {"cpus": 64}}))
    (folder / "request.yaml").unlink()
    (folder / "request.yaml").symlink_to(elsewhere)
    with pytest.raises(InputError, match="symbolic link"):
        run_resources(None, folder / "request.yaml")
    with pytest.raises(InputError, match="symbolic link"):
        _old_request_options(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="a file of another user needs root to make")
def test_a_copy_the_runs_user_replaced_gives_no_resources(tmp_path: Path) -> None:
    """The user's own file where the daemon's copy was (the folder was theirs while the
    run ran): a retry would have asked Slurm for what they wrote, unchecked."""
    folder = run_folder(tmp_path)
    (folder / "request.yaml").write_text(
        yaml.safe_dump({"workflow": "wf", "resources": {"cpus": 64}})
    )
    os.chown(folder / "request.yaml", 65534, 65534)
    with pytest.raises(InputError, match="replaced and is not trusted"):
        run_resources(None, folder / "request.yaml", owner=os.geteuid())
    with pytest.raises(InputError, match="replaced and is not trusted"):
        _old_request_options(folder)


def test_a_fifo_in_place_of_run_json_is_refused_at_once(tmp_path: Path) -> None:
    """run.json replaced by a FIFO from inside the run: reading the record (a daemon's
    start, ``runs show``) waited for a writer for ever."""
    from flowbatch.errors import FlowbatchError
    from flowbatch.store.store import Store

    folder = run_folder(tmp_path)
    os.mkfifo(folder / "run.json")
    kind, value = within(5, lambda: Store.load_dir(folder))
    assert kind == "raised" and isinstance(value, FlowbatchError), value
    assert "not a regular file" in str(value)
