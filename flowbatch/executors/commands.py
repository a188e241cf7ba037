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
    """Runs one bash command line (already quoted) and returns its result.

    ``uid``: run it as that local user (a root daemon submitting a user's job); only the
    local runner can, a remote one runs everything as its host's configured user."""

    where: str  # for messages: "localhost", "ssh:login1"

    def run(
        self,
        command: str,
        *,
        input: str | None = None,
        timeout: float | None = None,
        uid: int | None = None,
    ) -> CommandResult: ...


class LocalRunner:
    where = "localhost"

    def run(
        self,
        command: str,
        *,
        input: str | None = None,
        timeout: float | None = None,
        uid: int | None = None,
    ) -> CommandResult:
        from .local import as_user_command  # the local executor's change of user

        argv, kwargs = as_user_command(["bash", "-c", command], uid)
        try:
            proc = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                **kwargs,
            )
        except subprocess.TimeoutExpired as exc:
            return CommandResult(124, _text(exc.stdout), f"timed out after {timeout} s")
        except OSError as exc:  # E2BIG (an argument over 128 KiB), ENOMEM, EAGAIN: no run
            return CommandResult(126, "", f"cannot run {argv[0]}: {exc.strerror or exc}")
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
