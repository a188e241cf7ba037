"""A root daemon serving a site another user owns acts only on the abandoned-job notes it
wrote itself. The notes' folders (``slurm-abandoned/<profile>/``, ``ssh-abandoned/<host>/``)
are the site owner's, so that the owner's commands can remove them; found by review: the
owner could put a note there naming any user's Slurm job, which the root daemon then
``scancel``-ed as root, and a link there led root's read anywhere. Real users, real
files: the owner's writes are made by a process of theirs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from flowbatch.executors.notes import SLURM_ABANDONED, Notes

from .conftest import account
from .test_root_commands import as_site_owner

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon and a site owner")

#: run by the site's owner: a note of theirs, a link to a file of root's, in the folder
PLANT = """
import json, os, sys
folder = sys.argv[1]
with open(os.path.join(folder, "forged.json"), "w") as fh:
    json.dump({"job_id": "4242", "reason": "forged", "uid": 0}, fh)
os.symlink(sys.argv[2], os.path.join(folder, "linked.json"))
"""


def test_a_root_daemon_takes_only_its_own_notes(
    public_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    owner = account("fbnotes")
    site = public_tmp / "site"
    site.mkdir()
    os.chown(site, owner.pw_uid, owner.pw_gid)
    folder = site / SLURM_ABANDONED / "cluster"
    notes = Notes(folder, "abandoned Slurm job")
    notes.note("job-1", {"job_id": "1", "reason": "root's own"})  # the folders: the owner's
    assert folder.stat().st_uid == owner.pw_uid
    assert (folder / "job-1.json").stat().st_uid == 0
    secret = public_tmp / "roots.json"  # a file of root's the owner cannot change
    secret.write_text(json.dumps({"job_id": "999", "reason": "root's elsewhere"}))
    as_site_owner(site, PLANT, str(folder), str(secret))
    with caplog.at_level(logging.WARNING, logger="flowbatch.executors"):
        loaded = Notes(folder, "abandoned Slurm job").load()
    assert [n["job_id"] for n in loaded] == ["1"]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "forged.json" in said and f"written by uid {owner.pw_uid}, not by root" in said
    assert "linked.json" in said  # a link is not followed
    # the folder itself led elsewhere by a link: nothing is read through it
    elsewhere = public_tmp / "elsewhere"
    (elsewhere / "cluster").mkdir(parents=True)
    (elsewhere / "cluster" / "job-2.json").write_text(json.dumps({"job_id": "2"}))
    as_site_owner(
        site,
        "import os, sys; os.rename(sys.argv[1], sys.argv[1] + '.old'); "
        "os.symlink(sys.argv[2], sys.argv[1])",
        str(site / SLURM_ABANDONED),
        str(elsewhere),
    )
    assert Notes(folder, "abandoned Slurm job").load() == []
