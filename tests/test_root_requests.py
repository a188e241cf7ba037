"""A root daemon takes requests owned by root only from a queue no one else may write
(``root_requests`` opens it): a user could otherwise move a file of root's into the
queue, such as the request copy a root daemon keeps in the run folder it hands to the
run's user, and have it run as root (found by review: a participant's run moved its own
``request.yaml`` into a sticky, world-writable queue, and the daemon ran it as root)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from flowbatch import api
from flowbatch.cli import main
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, drop, make_site, run_until_idle, write_template

OTHER = 65534  # nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a root daemon serving another user")

#: a participant's run that moves the daemon's copy of its request into the queue, as
#: a request of its own name (`evil.yaml`), once its claim has settled (until then the
#: copy has a second name, which intake refuses for another reason); run as root, it
#: moves nothing
MOVER = """
workflow:
  steps:
    - name: move
      action:
        commands:
          - >-
            for i in $$(seq 100); do
            [ "$$(stat -c %h request.yaml)" = 1 ] && break; sleep 0.1; done
          - >-
            [ "$$(id -u)" = 0 ] || mv request.yaml "${queue}/evil.yaml"
          - >-
            printf '{"score": 1}' > r.json
parameters:
  - {name: queue, dtype: string}
results:
  file: r.json
  schema: [{name: score, label: Score, dtype: float}]
"""


@pytest.fixture
def shared(public_tmp: Path, tmp_path: Path) -> Iterator[Site]:
    """A root site whose queue everyone may write (sticky), as one open to all users."""
    site = make_site(public_tmp / "site")
    api.install(site, write_template(tmp_path / "t", MOVER), workflow_id="wf")
    api.install(site, write_template(tmp_path / "p", SCORE_TEMPLATE), workflow_id="plain")
    site.layout.queue.chmod(0o1777)
    yield site
    site.close()


def own_request(site: Site, name: str, uid: int) -> None:
    """A request of the mover (``uid`` another user) or of the plain template (root)."""
    if uid:
        drop(site, name, {"workflow": "wf", "arguments": {"queue": str(site.layout.queue)}})
    else:
        drop(site, name, {"workflow": "plain", "arguments": {"score": 2.0}})
    os.chown(site.layout.queue / name, uid, uid)


def runs_of(site: Site) -> list[tuple[str, str, str]]:
    return [(r["owner"], r["state"], r["id"]) for r in api.list_runs(site)]


def test_a_users_run_cannot_get_its_request_copy_run_as_root(shared: Site) -> None:
    own_request(shared, "mine.yaml", OTHER)
    run_until_idle(shared).stop()
    # the user's run moved root's copy of its request into the queue, where the same
    # daemon took it in: refused, and kept beside its error
    moved = shared.layout.rejected / "evil.yaml"
    assert moved.exists() and moved.stat().st_uid == 0
    error = yaml.safe_load((shared.layout.rejected / "evil.yaml.error.yaml").read_text())
    assert "owned by root" in error["reason"] and "root_requests" in error["hint"]
    assert [(owner, state) for owner, state, _ in runs_of(shared)] == [("nobody", "SUCCESS")]


def test_root_requests_opens_a_shared_queue_to_root(shared: Site) -> None:
    (shared.root / "flowbatch.yaml").write_text(
        yaml.safe_dump({"polling": {"interval": 0.2, "settle": 0.0}, "root_requests": True})
    )
    site = Site(shared.root)
    try:
        own_request(site, "admin.yaml", 0)
        run_until_idle(site).stop()
        assert [(o, s) for o, s, _ in runs_of(site)] == [("root", "SUCCESS")]
    finally:
        site.close()


def test_a_queue_only_root_writes_takes_roots_requests(shared: Site) -> None:
    shared.layout.queue.chmod(0o1755)
    own_request(shared, "admin.yaml", 0)
    run_until_idle(shared).stop()
    assert [(o, s) for o, s, _ in runs_of(shared)] == [("root", "SUCCESS")]
    # a group that may write it is "others" too
    shared.layout.queue.chmod(0o1775)
    own_request(shared, "admin2.yaml", 0)
    run_until_idle(shared).stop()
    assert (shared.layout.rejected / "admin2.yaml").exists()


def test_submit_and_validate_as_root_say_so_at_once(shared: Site, tmp_path: Path) -> None:
    req = tmp_path / "req.yaml"
    req.write_text(f"workflow: wf\narguments:\n  queue: {shared.layout.queue}\n")
    for command in ("submit", "validate"):
        result = CliRunner().invoke(main, ["--site", str(shared.root), command, str(req)])
        assert result.exit_code == 1, result.output
        assert "owned by root" in result.output and "sudo -u USER" in result.output
    assert not [p for p in shared.layout.queue.iterdir() if p.suffix == ".yaml"]
