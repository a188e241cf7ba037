"""A request's input files keep their privacy in the run folder: a participant's 0600
input was copied as 0644 into a results tree all participants read (found by review:
competitors could read each other's submissions)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from flowbatch import api

from .conftest import EXAMPLES, drop, make_site, run_until_idle

OTHER = 65534  # nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon serving another user")


def _reads(path: Path, uid: int, gid: int) -> bool:
    """Whether the user ``uid`` of the group ``gid`` (and no other) may read ``path``."""
    done = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "cat", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


# once the run ended, the group's bits of a file its user kept to themselves are the mask
# of the ACL that lets them read it (takeback._set_mode): the group itself has none
@pytest.mark.parametrize(("mode", "copied"), [(0o600, 0o640), (0o640, 0o640), (0o644, 0o644)])
def test_an_input_keeps_who_may_read_it(public_tmp: Path, mode: int, copied: int) -> None:
    # the run's user cannot enter the test's venv (under /root): the system's python
    site = make_site(public_tmp / "site", {"variables": {"python": "/usr/bin/python3"}})
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    names = site.layout.queue / "names.txt"
    names.write_text("Alice\nBob\n")
    os.chown(names, OTHER, OTHER)
    names.chmod(mode)
    request = drop(site, "r.yaml", {"workflow": "helloworld", "arguments": {"names": "names.txt"}})
    os.chown(request, OTHER, OTHER)
    run_until_idle(site).stop()
    (run,) = api.list_runs(site)
    assert run["state"] == "SUCCESS", api.show_run(site, run["id"])["messages"]
    copy = Path(api.show_run(site, run["id"])["run_dir"]) / "data" / "names.txt"
    assert copy.read_text() == "Alice\nBob\n"
    assert copy.stat().st_mode & 0o7777 == copied
    stranger = 64999  # no account's
    assert _reads(copy, OTHER, OTHER)  # the run's user, still
    assert _reads(copy, stranger, copy.stat().st_gid) == bool(mode & 0o040)  # the group
    assert _reads(copy, stranger, stranger) == bool(mode & 0o004)  # others
    site.close()


def test_submit_keeps_an_inputs_read_rights_in_its_bundle_and_run(tmp_path: Path) -> None:
    """`submit` copied the file into its bundle as 0644 whatever its mode, which the run
    then kept (found by review)."""
    site = make_site(tmp_path / "site")
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "names.txt").write_text("Alice\n")
    (folder / "names.txt").chmod(0o600)
    (folder / "r.yaml").write_text("workflow: helloworld\narguments: {names: names.txt}\n")
    name = api.submit(site, folder / "r.yaml")
    (bundled,) = (site.layout.queue / name.replace(".yaml", ".files")).rglob("names.txt")
    assert bundled.stat().st_mode & 0o7777 == 0o600
    run_until_idle(site).stop()
    (run,) = api.list_runs(site)
    copy = Path(api.show_run(site, run["id"])["run_dir"]) / "data" / "names.txt"
    assert copy.stat().st_mode & 0o7777 == 0o600
    site.close()
