"""``max_input_bytes``: a file argument over it is refused by intake, `validate` and
`submit` alike, before anything is copied (found by review: a 6 GB input was copied by a
root daemon into the results tree, beyond its user's quota, while every other request
waited 28 s)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from flowbatch.cli import main
from flowbatch.site import Site

from .conftest import EXAMPLES, drop, make_site, run_until_idle

LIMIT = 4096


def limited_site(tmp_path: Path) -> Site:
    from flowbatch import api

    site = make_site(tmp_path / "site", {"max_input_bytes": LIMIT})
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    return site


def names_file(path: Path, size: int) -> None:
    """A names file of ``size`` bytes, sparse past its first line (as the review's)."""
    with open(path, "wb") as fh:
        fh.write(b"Alice\n")
        fh.truncate(size)


def request(names: str) -> dict[str, object]:
    return {"workflow": "helloworld", "arguments": {"names": names, "sleeptime": 0}}


def test_intake_refuses_a_file_argument_over_the_limit(tmp_path: Path) -> None:
    site = limited_site(tmp_path)
    names_file(site.layout.queue / "big.txt", LIMIT + 1)
    names_file(site.layout.queue / "fits.txt", LIMIT)
    drop(site, "big.yaml", request("big.txt"))
    drop(site, "fits.yaml", request("fits.txt"))
    run_until_idle(site).stop()
    error = yaml.safe_load((site.layout.rejected / "big.yaml.error.yaml").read_text())
    assert error["field"] == "arguments.names"
    assert f"{LIMIT + 1} bytes, over the limit of {LIMIT}" in error["reason"]
    assert "max_input_bytes" in error["hint"]
    # nothing of it was copied: the one run is the request that fits
    runs = list((site.layout.results / "helloworld" / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "data" / "names.txt").stat().st_size == LIMIT
    site.close()


def test_validate_and_submit_refuse_it_too(tmp_path: Path) -> None:
    site = limited_site(tmp_path)
    folder = tmp_path / "mine"
    folder.mkdir()
    names_file(folder / "big.txt", LIMIT + 1)
    (folder / "req.yaml").write_text(yaml.safe_dump(request("big.txt")))
    for command in ("validate", "submit"):
        result = CliRunner().invoke(
            main, ["--site", str(site.root), command, str(folder / "req.yaml")]
        )
        assert result.exit_code == 1, result.output
        assert (
            "over the limit of 4096 bytes" in result.output and "arguments.names" in result.output
        )
    assert not [p for p in os.listdir(site.layout.queue) if p.endswith((".yaml", ".files"))]
    site.close()


def test_a_file_grown_past_the_limit_after_its_check_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked, then grown before its copy (found by review: a 1.28 GB copy against a
    1 GiB limit, the run a SUCCESS): refused, nothing of it kept."""
    from flowbatch import queue

    site = limited_site(tmp_path)
    names = site.layout.queue / "names.txt"
    names_file(names, 100)
    drop(site, "r.yaml", request("names.txt"))
    real = queue.copy_fd

    def grown_first(fd: int, dest: Path, **kw: object) -> None:
        with open(names, "ab") as fh:
            fh.write(b"x" * LIMIT)
        real(fd, dest, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(queue, "copy_fd", grown_first)
    run_until_idle(site).stop()
    error = yaml.safe_load((site.layout.rejected / "r.yaml.error.yaml").read_text())
    assert "grew past the limit of 4096 bytes" in error["reason"]
    assert error["field"] == "arguments.names"
    assert not list((site.layout.results / "helloworld" / "runs").glob("[!.]*"))
    site.close()


def test_a_file_system_refusing_a_large_copy_is_not_called_a_grown_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EFBIG of the destination's own (a file too large for it) is no source that grew
    (found by review): only the copy's own limit says so."""
    import errno

    from flowbatch import queue

    site = limited_site(tmp_path)
    names_file(site.layout.queue / "names.txt", 100)
    drop(site, "r.yaml", request("names.txt"))

    def too_large(fd: int, dest: Path, **kw: object) -> None:
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(queue, "copy_fd", too_large)
    run_until_idle(site).stop()
    error = yaml.safe_load((site.layout.rejected / "r.yaml.error.yaml").read_text())
    assert "File too large" in error["reason"] and "grew" not in error["reason"]
    site.close()
