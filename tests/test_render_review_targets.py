"""Review (s23): a participant's file argument may take a target at the run folder's
root (`json.py`), a folder that holds the template's own files. The README says a
target may not "go into a folder of the template's files other than the one the template
gives that parameter's file (a code/json.py beside the organiser's code/score.py would be
imported in place of Python's json)". At the root the same happens to code run with
`python -m` or `python -c` (the working directory is first on sys.path): the participant's
json.py replaces the organiser's scoring and forges the leaderboard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowbatch import api
from flowbatch.queue import _picked_up_at_root
from tests.conftest import drop, make_site, run_until_idle, write_template

TEMPLATE = """
workflow:
  files:
    inputs:
      - code/score.py
      - $[[data]]
  steps:
    - name: score
      action:
        commands:
          - ${python} -m code.score
parameters:
  - {name: data, dtype: file, target: data/input.txt, defaultValue: data/input.txt}
results:
  file: result.json
  schema: [{name: score, label: Score, dtype: int}]
"""
SCORE = (
    "import json\n"
    "n = len(open('data/input.txt').read())\n"
    "json.dump({'score': n}, open('result.json', 'w'))\n"
)
FAKE_JSON = "def dump(obj, fp, **kw):\n    fp.write('{\"score\": 999999}')\n"


def test_a_target_at_the_root_cannot_replace_a_module_the_template_imports(
    tmp_path: Path,
) -> None:
    site = make_site(tmp_path / "site", {"root_requests": True})
    try:
        folder = write_template(
            tmp_path / "t",
            TEMPLATE,
            {"code/__init__.py": "", "code/score.py": SCORE, "data/input.txt": "alpha\n"},
        )
        api.install(site, folder, workflow_id="tmod")
        drop(
            site,
            "r.yaml",
            {"workflow": "tmod", "arguments": {"data": {"source": "json.py", "target": "json.py"}}},
            files={"json.py": FAKE_JSON},
        )
        run_until_idle(site)
        rejected = (site.layout.rejected / "r.yaml.error.yaml").exists()
        board = (
            json.loads(
                (site.layout.results / "tmod" / "leaderboard.json").read_text(encoding="utf-8")
            )
            if (site.layout.results / "tmod" / "leaderboard.json").exists()
            else {}
        )
        scores = [e["results"].get("score") for e in board.get("ranking", [])]
        assert rejected, f"json.py at the run root was taken; leaderboard scores: {scores}"
    finally:
        site.close()


@pytest.mark.parametrize(
    ("target", "refused"),
    [
        ("json.py", True),
        ("json/__init__.py", True),
        ("numpy.so", True),
        (".Rprofile", True),
        ("node_modules/x/index.js", True),
        ("Makefile", True),
        ("__pycache__/json.cpython-311.pyc", True),
        ("pytest.ini", True),  # a participant's addopts changes a pytest grader's run
        ("pyproject.toml", True),
        ("mydata.csv", False),
        ("dataset.zip", False),  # Python imports from no archive in the working folder
        ("deps.egg", False),
        ("site.pth", False),  # read only in site folders
        ("inputs/json.py", False),
        ("data/input.txt", False),
    ],
)
def test_names_loaded_at_the_root(target: str, refused: bool) -> None:
    assert _picked_up_at_root(Path(target).parts) is refused
