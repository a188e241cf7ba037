"""sd_notify: READY=1 over a real datagram socket, from a real daemon process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowbatch import notify
from flowbatch.site import Site


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    yield sock, str(path)
    sock.close()


def _fields(data: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in data.decode().splitlines())


def test_sends_to_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert notify.notify("READY=1", "STATUS=up\nand running", socket_name=path)
    assert _fields(sock.recv(4096)) == {"READY": "1", "STATUS": "up and running"}


def test_abstract_namespace_socket() -> None:
    name = f"flowbatch-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())  # what systemd's "@name" means
        sock.settimeout(5)
        assert notify.notify("STOPPING=1", socket_name="@" + name)
        assert sock.recv(4096) == b"STOPPING=1"


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready("x") is False
    # a socket that is gone: logged, never raised (readiness must not stop the daemon)
    assert notify.notify("READY=1", socket_name=str(tmp_path / "missing.sock")) is False
    assert notify.notify("READY=1", socket_name="vsock:2:1234") is False


def test_daemon_process_reports_ready_and_stopping(
    site: Site, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    env = {**os.environ, "NOTIFY_SOCKET": path}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowbatch", "--site", str(site.root), "daemon"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ready = _fields(sock.recv(4096))
        assert ready["READY"] == "1"
        assert ready["MAINPID"] == str(proc.pid)
        assert str(site.root) in ready["STATUS"]
        # ready means the site lock is held: systemd's "started" is true by then
        assert site.layout.lock.read_text().strip()
        proc.send_signal(signal.SIGTERM)
        assert _fields(sock.recv(4096)) == {"STOPPING": "1"}
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
