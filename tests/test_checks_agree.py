"""`flowbatch validate`, `flowbatch submit` and the daemon's intake check a request alike
(one function, :func:`flowbatch.queue.check_request`): what the first two approve the
daemon takes, and what the daemon rejects they refuse, with the same field and reason.
And an executor name the site does not have is refused where it is written: in
``flowbatch.yaml`` (see test_site_config.py) or in a template, at install and validate."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowbatch import api
from flowbatch.errors import FlowbatchError, TemplateError
from flowbatch.queue import Intake
from flowbatch.site import Site

from .conftest import EXAMPLES, drop, make_site, write_template

ROOT = os.geteuid() == 0
#: the user a root test runner submits as, where a check depends on who submits
OTHER_UID = 65534

GPU_TEMPLATE = "workflow:\n  steps:\n    - action: {commands: ['echo ${gpu}']}\n"
ON_B_TEMPLATE = "executor: b\nworkflow:\n  steps:\n    - action: {commands: ['echo hi']}\n"
HOST_B = {"ssh": {"b": {"hostname": "127.0.0.9", "variables": {"gpu": "yes"}}}}


def _site(root: Path, config: dict[str, Any] | None = None) -> Site:
    site = make_site(root, config)
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    return site


def _site_with_host_b(root: Path) -> Site:
    """A site whose ssh host ``b`` alone defines ``${gpu}``, with a template using it."""
    site = _site(root, HOST_B)
    api.install(site, write_template(root.parent / "gpu", GPU_TEMPLATE), workflow_id="gpu")
    return site


def _site_that_dropped_host_b(root: Path) -> Site:
    """A template installed with ``executor: b``, then ``b`` removed from flowbatch.yaml."""
    site = _site(root, HOST_B)
    api.install(site, write_template(root.parent / "onb", ON_B_TEMPLATE), workflow_id="onb")
    site.close()
    make_site(root)  # the config again, without the ssh host
    return Site(root)


def _site_with_a_default_made_in_code(root: Path) -> Site:
    """flowbatch.yaml's ``executor`` is checked when read: only a config changed in
    code can name an unknown default."""
    site = _site(root)
    site.config.executor = "nosuch"
    return site


def _site_of_someone_else(root: Path) -> Site:
    return _site(root, {"allowed_users": ["someone-else"]})


NAMES = {"n.txt": "Ann\nBo\n"}

#: id -> (make the site, the request, its files, submitted by another user, field, reason)
CASES: dict[str, tuple[Callable[[Path], Site], dict[str, Any], dict[str, str], bool, Any, str]] = {
    "target-reserved": (
        _site,
        {"workflow": "helloworld", "arguments": {"names": {"source": "n.txt", "target": "run.sh"}}},
        NAMES,
        False,
        "arguments.names.target",
        "target 'run.sh' is a name flowbatch reserves in the run folder",
    ),
    "target-a-template-file": (
        _site,
        {
            "workflow": "helloworld",
            "arguments": {"names": {"source": "n.txt", "target": "code/helloworld.py"}},
        },
        NAMES,
        False,
        "arguments.names.target",
        "target 'code/helloworld.py' would replace a file of the workflow template",
    ),
    "target-in-a-folder-of-the-template": (
        _site,
        {
            "workflow": "helloworld",
            "arguments": {"names": {"source": "n.txt", "target": "code/json.py"}},
        },
        NAMES,
        False,
        "arguments.names.target",
        "target 'code/json.py' is inside code/, a folder of the workflow template's files",
    ),
    "source-through-dotdot": (
        _site,
        {"workflow": "helloworld", "arguments": {"names": "sub/../n.txt"}},
        {**NAMES, "sub/k.txt": "k\n"},
        False,
        "arguments.names",
        "a file path must be relative to the request file and stay inside its folder",
    ),
    "source-a-link": (
        _site,
        {"workflow": "helloworld", "arguments": {"names": "link.txt"}},
        {**NAMES, "link.txt": "@link n.txt"},
        False,
        "arguments.names",
        "'link.txt' goes through a symbolic link",
    ),
    "target-reserved-in-a-sweep": (
        _site,
        {
            "workflow": "helloworld",
            "sweep": {"names": ["n.txt", {"source": "n.txt", "target": "status/x"}]},
        },
        NAMES,
        False,
        "sweep.names[1].target",
        "target 'status/x' is a name flowbatch reserves in the run folder",
    ),
    "executor-unknown": (
        _site,
        {"workflow": "helloworld", "executor": "nosuch"},
        {},
        False,
        "executor",
        "unknown executor 'nosuch'",
    ),
    "executor-of-the-template-unknown": (
        _site_that_dropped_host_b,
        {"workflow": "onb"},
        {},
        False,
        None,
        "unknown executor 'b', named by `executor:` in the template of workflow 'onb'",
    ),
    "executor-of-the-site-unknown": (
        _site_with_a_default_made_in_code,
        {"workflow": "helloworld"},
        {},
        False,
        None,
        "unknown executor 'nosuch', the site's default (`executor:` in flowbatch.yaml)",
    ),
    "variable-only-on-another-host": (
        _site_with_host_b,
        {"workflow": "gpu", "executor": "local"},
        {},
        False,
        "workflow.steps[0].action.commands[0]",
        "${gpu} is defined only for runs on b, not on local",
    ),
    "group-not-the-users": (
        _site,
        {"workflow": "helloworld", "group": "no-such-team"},
        {},
        True,
        "group",
        "may not submit for group 'no-such-team'",
    ),
    "user-not-allowed": (
        _site_of_someone_else,
        {"workflow": "helloworld"},
        {},
        False,
        None,
        "may not submit to this site",
    ),
}


def _write_files(folder: Path, files: dict[str, str]) -> None:
    """A request's files; a text ``@link <name>`` makes a symbolic link to ``name``."""
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if text.startswith("@link "):
            path.symlink_to(text.removeprefix("@link "))
        else:
            path.write_text(text)


@contextmanager
def _as_other_user(other: bool) -> Iterator[None]:
    """validate and submit as another user: a root test runner pretends (the checks
    ask ``os.geteuid()`` who submits); anyone else is another user already."""
    if not (other and ROOT):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "geteuid", lambda: OTHER_UID)
        yield


def _comparable(info: dict[str, Any]) -> dict[str, Any]:
    """An error as the three report it, without where each read the request."""
    return {k: v for k, v in info.items() if k not in ("file", "rejected_at", "request")}


@pytest.mark.parametrize("case", list(CASES))
def test_validate_submit_and_intake_refuse_alike(case: str, tmp_path: Path) -> None:
    make, doc, files, other, field, reason = CASES[case]
    if case == "user-not-allowed" and not ROOT:
        pytest.skip("a daemon accepts its own user's requests: needs another daemon user")
    site = make(tmp_path / "site")
    try:
        folder = tmp_path / "request"
        folder.mkdir()
        _write_files(folder, files)
        request = folder / "r.yaml"
        request.write_text(yaml.safe_dump(doc))
        errors = []
        with _as_other_user(other):
            with pytest.raises(FlowbatchError) as validated:
                api.validate(request, site)
            errors.append(validated.value.to_dict())
            with pytest.raises(FlowbatchError) as submitted:
                api.submit(site, request)
            errors.append(submitted.value.to_dict())
        assert list(site.layout.queue.glob("*.yaml")) == []  # nothing was queued
        # the daemon, given the same request (and its file) by that user
        _write_files(site.layout.queue, files)
        path = drop(site, "r.yaml", doc)
        if other and ROOT:
            for name in ("r.yaml", *files):
                os.chown(site.layout.queue / name, OTHER_UID, -1)
        assert path.exists()
        result = Intake(site).run_once()
        assert result.runs == [] and result.rejected == ["r.yaml"]
        errors.append(yaml.safe_load((site.layout.rejected / "r.yaml.error.yaml").read_text()))
        for info in errors:
            assert info.get("field") == field, info
            assert reason in info["reason"], info
        # the same error, word for word, from all three
        assert _comparable(errors[0]) == _comparable(errors[1]) == _comparable(errors[2])
    finally:
        site.close()


def test_what_validate_and_submit_approve_the_intake_takes(tmp_path: Path) -> None:
    """The checks refuse nothing good: the template's own target, a target of one's
    choosing, a sweep, a known executor."""
    site = _site_with_host_b(tmp_path / "site")
    try:
        folder = tmp_path / "request"
        folder.mkdir()
        (folder / "n.txt").write_text("Ann\n")
        docs = {
            "own.yaml": {"workflow": "helloworld", "arguments": {"names": "n.txt"}},
            "chosen.yaml": {
                "workflow": "helloworld",
                "arguments": {"names": {"source": "n.txt", "target": "data/mine.txt"}},
            },
            "sweep.yaml": {
                "workflow": "helloworld",
                "sweep": {"names": ["n.txt", {"source": "n.txt", "target": "in/x.txt"}]},
            },
            "on-b.yaml": {"workflow": "gpu", "executor": "b"},
        }
        for name, doc in docs.items():
            (folder / name).write_text(yaml.safe_dump(doc))
            assert "valid for workflow" in api.validate(folder / name, site)
            api.submit(site, folder / name)
        result = Intake(site).run_once()
        assert result.rejected == [] and len(result.runs) == 5
    finally:
        site.close()


def test_validate_and_submit_ask_for_the_daemons_user(tmp_path: Path) -> None:
    """A daemon that runs as a service user takes only that user's requests (without
    allowed_users): its user is the owner of queue/.claimed, which it keeps as its own."""
    from flowbatch.queue import site_daemon_uid

    if not ROOT:
        pytest.skip("needs a queue/.claimed of another user")
    site = _site(tmp_path / "site")
    try:
        assert site_daemon_uid(site) == 0
        os.chown(site.layout.claimed, OTHER_UID, -1)
        assert site_daemon_uid(site) == OTHER_UID
        request = tmp_path / "r.yaml"
        request.write_text("workflow: helloworld\n")
        for call in (lambda: api.validate(request, site), lambda: api.submit(site, request)):
            with pytest.raises(FlowbatchError, match="accepts only that user's requests"):
                call()
    finally:
        site.close()


def test_validate_refuses_a_request_over_the_sites_size_limit(tmp_path: Path) -> None:
    site = _site(tmp_path / "site", {"max_request_bytes": 1024})
    try:
        request = tmp_path / "r.yaml"
        request.write_text("workflow: helloworld\n" + "# padding\n" * 200)
        with pytest.raises(FlowbatchError, match="over the size limit of 1024 bytes"):
            api.validate(request, site)
    finally:
        site.close()


# -- an executor named by a template ---------------------------------------------------------
@pytest.mark.parametrize("how", ["install", "validate-folder", "validate-file"])
def test_a_template_naming_an_unknown_executor_is_refused(tmp_path: Path, how: str) -> None:
    site = make_site(tmp_path / "site", {"slurm": {"gpu": {}}})
    try:
        folder = write_template(
            tmp_path / "t",
            "executor: nosuch\nworkflow:\n  steps:\n    - action: {commands: [ls]}\n",
        )
        with pytest.raises(TemplateError) as refused:
            if how == "install":
                api.install(site, folder, workflow_id="wf")
            elif how == "validate-folder":
                api.validate(folder, site)
            else:
                api.validate(folder / "workflow.yaml", site)
        error = refused.value
        assert error.field == "executor" and "unknown executor 'nosuch'" in error.reason
        assert error.expected == "one of: local, slurm, slurm:gpu"
        assert error.file and error.file.endswith("workflow.yaml")
        assert site.templates.list_ids() == []  # nothing installed
        # without a site there are no names to check it against, and it says so (found
        # by review: "valid", and install then refused it)
        assert "no site: its executor and variables not checked" in api.validate(folder, None)
    finally:
        site.close()


def test_a_template_naming_an_executor_of_the_site_installs(tmp_path: Path) -> None:
    site = make_site(tmp_path / "site", {"slurm": {"gpu": {}}, **HOST_B})
    try:
        for name in ("local", "slurm", "slurm:gpu", "b"):
            folder = write_template(
                tmp_path / name.replace(":", "-"),
                f"executor: '{name}'\nworkflow:\n  steps:\n    - action: {{commands: [ls]}}\n",
            )
            assert "valid" in api.validate(folder, site)
            api.install(site, folder, workflow_id=name.replace(":", "-"))
    finally:
        site.close()
