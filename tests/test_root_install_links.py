"""Root's own Python program installing a template through :func:`flowbatch.api.install`
on a site a service user owns (docs/admins.md): the workflow's folder in ``templates/``
is the owner's, and the version is first filled in ``.<version>.tmp`` there. The
version's name is the hash of the template's content, which whoever has the template
can work out. Found by review: the owner put a link at that name, and root's install
made ``files/`` and copied the template's files through it, into a folder of root's
elsewhere. Real users: the site's owner ``fbsvc2`` plants the link in a process of
theirs; root is this process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.errors import TemplateError
from flowbatch.site import Site
from flowbatch.spec.manifest import find_source
from flowbatch.store.templates import _file_list, content_hash

from .conftest import SCORE_TEMPLATE, write_template
from .test_root_commands import PYTHON, as_site_owner
from .test_root_daemon_service_site import service_site

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="root installs on another user's site"),
    pytest.mark.skipif(not PYTHON.exists(), reason=f"no {PYTHON}"),
]

PLANT = r"""
import os, sys
folder, version, target = sys.argv[1:4]
os.makedirs(folder, exist_ok=True)
os.symlink(target, os.path.join(folder, "." + version + ".tmp"))
"""


def test_roots_install_writes_nothing_through_a_link_at_the_versions_tmp(
    public_tmp: Path,
) -> None:
    root = service_site(public_tmp)
    template = write_template(public_tmp / "t", SCORE_TEMPLATE)
    src = find_source(template)
    version = content_hash(src.spec_path, _file_list(src))
    elsewhere = public_tmp / "roots"  # root's, the owner cannot write in it
    elsewhere.mkdir()
    as_site_owner(root, PLANT, str(root / "templates" / "wf"), version, str(elsewhere))
    site = Site(root)
    try:
        installed = api.install(site, template, workflow_id="wf")
    finally:
        site.close()
    assert sorted(os.listdir(elsewhere)) == []
    version_dir = root / "templates" / "wf" / installed.version
    assert not version_dir.is_symlink() and (version_dir / "files").is_dir()
    assert version_dir.stat().st_uid == root.stat().st_uid


def test_roots_install_writes_nothing_through_a_link_at_the_workflows_folder(
    public_tmp: Path,
) -> None:
    """The owner's ``templates/wf`` is a link to a folder of root's elsewhere: the
    version and ``workflow.json`` were written there. Refused, saying so."""
    root = service_site(public_tmp)
    template = write_template(public_tmp / "t", SCORE_TEMPLATE)
    elsewhere = public_tmp / "roots"
    elsewhere.mkdir()
    owner = root.stat()
    done = subprocess.run(
        ["ln", "-s", str(elsewhere), str(root / "templates" / "wf")],
        user=owner.st_uid,
        group=owner.st_gid,
        extra_groups=[],
        check=False,
    )
    assert done.returncode == 0
    site = Site(root)
    try:
        with pytest.raises(TemplateError, match="is a link"):
            api.install(site, template, workflow_id="wf")
    finally:
        site.close()
    assert sorted(os.listdir(elsewhere)) == []
