"""The collector pause of bulk report work: nested, shared by threads, state restored."""

from __future__ import annotations

import gc
import threading

from flowbatch.gcpause import paused_gc


def test_the_pause_nests_and_restores_the_collector() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still runs
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_threads_share_the_pause_and_the_last_one_out_resumes() -> None:
    inside, release = threading.Event(), threading.Event()

    def report() -> None:
        with paused_gc():
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=report)
    worker.start()
    assert inside.wait(10)
    with paused_gc():
        pass
    assert not gc.isenabled()  # the report thread is still in its block
    release.set()
    worker.join(10)
    assert gc.isenabled()


def test_the_collector_resumes_after_an_error() -> None:
    try:
        with paused_gc():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()
