"""Install Debian packages the tests need, once, serialized across processes."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterable

LOCK = "/tmp/flowbatch-tests-apt.lock"


def missing(commands: Iterable[str]) -> list[str]:
    return [c for c in commands if shutil.which(c) is None and not os.path.exists(c)]


def ensure_packages(packages: list[str], *, commands: list[str]) -> None:
    """apt-get install ``packages`` unless every path/command in ``commands`` exists."""
    if not missing(commands):
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"tests need {packages} installed (run as root to install them)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open(LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if not missing(commands):
            return
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=True)
            subprocess.run(install, env=env, check=True, capture_output=True)
    still = missing(commands)
    if still:
        raise RuntimeError(f"installed {packages} but {still} are still missing")
