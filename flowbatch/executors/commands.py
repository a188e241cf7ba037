"""Run a shell command "here or there": the seam between executors and their transport.

The Slurm executor calls ``sbatch``/``squeue`` through a :class:`CommandRunner`; locally
that is :class:`LocalRunner`, on a login host it is the pooled SSH connection's runner
(:mod:`flowbatch.executors.ssh`). Tests can count the calls through the same seam.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Protocol


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CommandRunner(Protocol):
    """Runs one bash command line (already quoted) and returns its result."""

    where: str  # for messages: "localhost", "ssh:login1"

    def run(
        self, command: str, *, input: str | None = None, timeout: float | None = None
    ) -> CommandResult: ...


class LocalRunner:
    where = "localhost"

    def run(
        self, command: str, *, input: str | None = None, timeout: float | None = None
    ) -> CommandResult:
        try:
            proc = subprocess.run(
                ["bash", "-c", command],
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            return CommandResult(124, _text(exc.stdout), f"timed out after {timeout} s")
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
