"""A handled request's claim that cannot be removed (an immutable file here: ``chattr
+i``, as root on ext4) stays until it can go, and is tried again less and less often,
with one warning and a reminder now and then instead of a warning every second."""

from __future__ import annotations

import itertools
import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowbatch import api, queue
from flowbatch.queue import Intake
from flowbatch.site import Site

from .conftest import SCORE_TEMPLATE, drop, make_site, write_template
from .test_robust import needs_root

pytestmark = needs_root


def _chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Files made immutable by a test, made mutable again at its end (else its tmp
    folder could not be removed)."""
    if shutil.which("chattr") is None:
        pytest.skip("no chattr")
    made: list[Path] = []
    yield made
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=False, capture_output=True)


def _make_immutable(path: Path, made: list[Path]) -> None:
    try:
        _chattr("+i", path)
    except subprocess.CalledProcessError as exc:  # tmpfs, overlayfs: no immutable flag
        pytest.skip(f"chattr +i refused here: {exc.stderr.decode().strip()}")
    made.append(path)
    with pytest.raises(PermissionError):  # the fault is real (and the file untouched)
        path.open("a").close()


def _claimed(tmp_path: Path) -> tuple[Site, Intake, Path]:
    """A site whose intake took one request in: its run is made, its claim waits for
    the settler (whose thread stays asleep: the test settles)."""
    site = make_site(tmp_path / "site")
    api.install(site, write_template(tmp_path / "tpl", SCORE_TEMPLATE), workflow_id="wf")
    drop(site, "r.yaml", {"workflow": "wf", "arguments": {"score": 1}})
    intake = Intake(site)
    intake.settler.every = 3600
    result = intake.run_once()
    assert len(result.runs) == 1
    (claim,) = site.layout.claimed.iterdir()
    assert intake.settler.holds(claim)
    return site, intake, claim


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _warnings(caplog: pytest.LogCaptureFixture, claim: Path) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and str(claim) in r.getMessage()
    ]


def test_a_claim_that_cannot_be_removed_backs_off_and_goes_once_it_can(
    tmp_path: Path,
    immutable: list[Path],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site, intake, claim = _claimed(tmp_path)
    settler = intake.settler
    clock = settler.clock = Clock()
    syncs: list[Path] = []
    real_sync = queue.sync_file_system

    def counted(path: Path) -> None:
        syncs.append(path)
        real_sync(path)

    monkeypatch.setattr(queue, "sync_file_system", counted)
    _make_immutable(claim, immutable)
    tries: list[float] = []
    with caplog.at_level(logging.DEBUG, logger="flowbatch.queue"):
        # the settler's thread would flush once a second: 30 minutes of it
        for _ in range(1800):
            before = len(caplog.records)
            settler.flush()
            if any(str(claim) in r.getMessage() for r in caplog.records[before:]):
                tries.append(clock.now)
            clock.now += 1.0
        warned = _warnings(caplog, claim)
        assert len(warned) == 1, warned  # not 1800
        first = warned[0]
        assert "Operation not permitted" in first and "chattr -i" in first
        assert "stays until it can be removed" in first
        # tried again at growing intervals, up to CLAIM_RETRY_MAX, each try logged at debug
        gaps = [b - a for a, b in itertools.pairwise(tries)]
        assert gaps[:4] == [2.0, 4.0, 8.0, 16.0], gaps
        assert max(gaps) == queue.CLAIM_RETRY_MAX and gaps == sorted(gaps)
        assert len(tries) < 20
        assert len(syncs) == 1  # its sync was done: a retry needs none
        assert claim.exists() and settler.holds(claim)  # nothing lost meanwhile
        assert intake.leftovers() == []  # nor taken for a crash's leftover
        # an hour after the first warning: a reminder, with the count of tries
        while clock.now < 1000.0 + queue.CLAIM_REMIND_EVERY + queue.CLAIM_RETRY_MAX:
            settler.flush()
            clock.now += 1.0
        warned = _warnings(caplog, claim)
        assert len(warned) == 2, warned
        assert "still cannot be removed" in warned[1] and " tries over " in warned[1]
        # fixed: removed at the next try, and said so
        _chattr("-i", claim)
        clock.now += queue.CLAIM_RETRY_MAX
        settler.flush()
    assert not claim.exists()
    assert settler.pending() == 0
    assert any(
        "is removed at last" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records
    )
    intake.close()
    site.close()


def test_the_settler_thread_keeps_trying_until_the_claim_can_go(
    tmp_path: Path,
    immutable: list[Path],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real thread, on the real clock: it does not end while a claim is stuck, and
    removes it once it can."""
    monkeypatch.setattr(queue, "CLAIM_RETRY_FIRST", 0.05, raising=False)
    monkeypatch.setattr(queue, "CLAIM_RETRY_MAX", 0.2, raising=False)
    site, intake, claim = _claimed(tmp_path)
    _make_immutable(claim, immutable)
    settler = intake.settler
    with caplog.at_level(logging.DEBUG, logger="flowbatch.queue"):
        settler.close()  # its sleeping thread ended; the first failure
        assert len(_warnings(caplog, claim)) == 1
        settler.every = 0.02
        settler.add(claim)  # a thread again, on a short period
        deadline = time.monotonic() + 30
        while sum(str(claim) in r.getMessage() for r in caplog.records) < 6:  # 5 retries
            assert time.monotonic() < deadline, "the thread stopped trying"
            time.sleep(0.02)
        assert len(_warnings(caplog, claim)) == 1  # the retries at debug level
        assert claim.exists()
        _chattr("-i", claim)
        deadline = time.monotonic() + 30
        while claim.exists() or settler.pending():
            assert time.monotonic() < deadline, "the claim was never removed"
            time.sleep(0.02)
    assert any("is removed at last" in r.getMessage() for r in caplog.records)
    intake.close()
    site.close()


def test_a_claim_still_stuck_at_the_stop_is_kept_for_the_next_start(
    tmp_path: Path, immutable: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The stop tries it once more (no waiting for its turn); kept, the next intake
    finds it as a leftover whose run exists and settles it then."""
    site, intake, claim = _claimed(tmp_path)
    _make_immutable(claim, immutable)
    clock = intake.settler.clock = Clock()
    with caplog.at_level(logging.DEBUG, logger="flowbatch.queue"):
        intake.settler.flush()
        before = len(caplog.records)
        intake.close()  # within its wait: tried all the same
        assert any("try 2" in r.getMessage() for r in caplog.records[before:])
    assert clock.now == 1000.0 and claim.exists()
    _chattr("-i", claim)
    again = Intake(site)
    result = again.run_once()
    assert result.runs == [] and result.rejected == []  # its run was made: not made again
    again.close()
    assert not claim.exists()
    assert len(api.list_runs(site)) == 1
    site.close()
