"""What a root daemon trusts of a post-processing folder it handed to the post-processing's
user (flowbatch.postproc, flowbatch.postproc_user): no post-processing starts as a user
who could write the ``postproc/`` folder. Real root daemons in this process, real users."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml

from flowbatch.postproc import load_record, postproc_root, read_state
from flowbatch.site import Site

from .conftest import account, drop, run_until_idle
from .test_postproc_user import new_site, template

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon switches users")


def test_no_post_processing_as_a_user_who_owns_its_folder(
    public_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An admin gave ``postproc/`` to the post-processing's user: that user could swap
    its folders for links the daemon writes through as root. The daemon starts nothing
    there and its log says which folder and what to do; doctor fails; given back, the
    post-processing runs."""
    from flowbatch.doctor import FAIL, OK, diagnose

    post = account("fbpost")
    site = new_site(public_tmp, template(), {"postproc_user": "fbpost"})
    root = postproc_root(site, "wf")
    root.mkdir(parents=True)
    os.chown(root, post.pw_uid, post.pw_gid)
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    with caplog.at_level(logging.ERROR, logger="flowbatch.postproc"):
        run_until_idle(site)
    assert list(root.iterdir()) == []  # nothing made or written there
    said = [r.getMessage() for r in caplog.records if "not started" in r.getMessage()]
    assert len(said) == 1 and f"{root} belongs to fbpost" in said[0], said
    assert "postproc_user: NAME" in said[0] and "chown" in said[0]
    (check,) = [c for c in diagnose(site.root) if c.name == "post-processing"]
    assert check.status == FAIL and f"{root} belongs to fbpost" in check.detail

    os.chown(root, 0, 0)  # given back: the next change of the best runs post-processes
    drop(site, "b.yaml", {"workflow": "wf", "arguments": {"score": 2}})
    run_until_idle(site)
    record = load_record(site, "wf", read_state(site, "wf")["latest"])
    assert record is not None and record.state == "SUCCESS", record
    (check,) = [c for c in diagnose(site.root) if c.name == "post-processing"]
    assert check.status == OK, check.detail
    site.close()


def test_the_sites_owner_is_no_post_processing_user(public_tmp: Path) -> None:
    """A service user's site: its owner owns the results tree, ``postproc/`` too, so
    post-processing does not run as them by default (it runs as ``nobody``, with
    doctor's warning to name a user of its own), and naming them is refused."""
    from flowbatch.doctor import FAIL, WARN, diagnose

    owner = account("fbsite")
    site = new_site(public_tmp, template())
    site.close()
    os.chown(site.root, owner.pw_uid, owner.pw_gid)
    (check,) = [c for c in diagnose(site.root) if c.name == "post-processing"]
    assert check.status == WARN and "nobody" in check.detail, check.detail
    (site.root / "flowbatch.yaml").write_text(yaml.safe_dump({"postproc_user": "fbsite"}))
    (check,) = [c for c in diagnose(site.root) if c.name == "post-processing"]
    assert check.status == FAIL and f"{site.root} belongs to fbsite" in check.detail
    site = Site(site.root)
    drop(site, "a.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    run_until_idle(site)
    assert "latest" not in read_state(site, "wf")  # none started
    site.close()
