"""Review (s23): `flowbatch submit` of a sweep request read the raw document before
parsing it: a sweep without `workflow:` gave "unknown workflow 'None'", unlike what
`validate` says. It parses first now, and says what validate says."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from flowbatch import api
from flowbatch.cli import main
from tests.conftest import EXAMPLES, make_site


@pytest.mark.parametrize(
    "text",
    [
        "sweep: {sleeptime: [1]}\n",  # no workflow
        "workflow: [helloworld]\nsweep: {sleeptime: [1]}\n",
        "workflow: helloworld\nsweep: {1: [a]}\n",
    ],
)
def test_submit_says_what_validate_says_for_a_sweep(tmp_path: Path, text: str) -> None:
    root = tmp_path / "site"
    site = make_site(root, {"root_requests": True})
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    site.close()
    req = tmp_path / "r.yaml"
    req.write_text(text, encoding="utf-8")
    runner = CliRunner()
    validated = runner.invoke(main, ["--site", str(root), "validate", str(req)])
    submitted = runner.invoke(main, ["--site", str(root), "submit", str(req)])
    assert validated.exit_code != 0 and submitted.exit_code != 0
    said_v = (validated.output + str(validated.stderr_bytes or b"", "utf-8")).strip()
    said_s = (submitted.output + str(submitted.stderr_bytes or b"", "utf-8")).strip()
    # same field and reason (the file may be shown relative or absolute)
    assert said_v.split(": ", 2)[-1] == said_s.split(": ", 2)[-1], (said_v, said_s)
    assert "to run" not in said_s
