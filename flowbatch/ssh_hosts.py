"""Site config models of SSH hosts: the ``ssh:`` section of ``flowbatch.yaml``.

```yaml
executor: login1            # the default executor may be a host name
ssh:
  login1:                   # the executor name a template or request picks
    hostname: login1.example.org
    port: 22
    user: bench
    key_file: ~/.ssh/id_ed25519   # omit to use the SSH agent
    known_hosts: ~/.ssh/known_hosts
    remote_root: flowbatch-runs   # relative paths are under the remote home
    max_runs: 4
    jump_host: gateway      # another host of this section, reached first
    keep_remote: false
    max_fetch_bytes: 10737418240  # 10 GiB of a run's files at most come back
    connect_timeout: 10s
    unreachable_grace: 5m
```

It lives outside :mod:`flowbatch.executors` so that :mod:`flowbatch.config` can import it
without an import cycle (the executors package imports the config).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: the most bytes of a run's files fetched back from a host, by default (10 GiB)
MAX_FETCH_BYTES = 10 << 30
#: keys people try that flowbatch refuses on purpose, with the reason
_REFUSED = {
    "password": "passwords are not supported: use key_file or the SSH agent",
    "passphrase": "a passphrase never goes into the config: use key_passphrase_env",
    "key_passphrase": "a passphrase never goes into the config: use key_passphrase_env",
}


def _duration(value: Any) -> float | None:
    from .config import parse_duration  # late: config imports this module

    return parse_duration(value)


class SSHHost(BaseModel):
    """One remote host runs are sent to over SSH/SFTP (an executor of its own)."""

    model_config = ConfigDict(extra="forbid")

    hostname: str = Field(description="DNS name or address to connect to.")
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = Field(
        default=None,
        description="Remote user (default: the local one; required when the daemon is root, "
        "which would otherwise log in as root).",
    )
    key_file: str | None = Field(
        default=None,
        description="Private key file (~ expanded). Without it the SSH agent is used.",
    )
    key_passphrase_env: str | None = Field(
        default=None,
        description="Name of an environment variable of the daemon holding the key's "
        "passphrase (never the passphrase itself).",
    )
    agent: bool | None = Field(
        default=None, description="Use the SSH agent (default: only when key_file is unset)."
    )
    known_hosts: str = Field(
        default="~/.ssh/known_hosts",
        description="known_hosts file the host key must be in (strict checking, always).",
    )
    remote_root: str = Field(
        default="flowbatch-runs",
        description="Remote folder of run folders: <remote_root>/<workflow>/<run_id>/ "
        "(relative: under the remote home).",
    )
    max_runs: int = Field(default=4, ge=1, description="Runs at once on this host.")
    jump_host: str | None = Field(
        default=None, description="Name of another host of the ssh section to go through."
    )
    variables: dict[str, str] = Field(
        default_factory=dict,
        description="Trusted ${name} variables for runs on this host, over the site's "
        "`variables` (`python` is `python3` on a host unless set here or there).",
    )
    keep_remote: bool = Field(
        default=False, description="Keep the remote run folder after its files came back."
    )
    max_fetch_bytes: int = Field(
        default=MAX_FETCH_BYTES,
        ge=1,
        description="The most bytes of a run's files fetched back from this host (10 GiB): "
        "the daemon writes them into the run's folder (a root daemon as root, beyond the "
        "user's quota), and a sparse file comes back whole. Files beyond it are left on "
        "the host, named in the run's messages, and its remote folder is kept.",
    )
    connect_timeout: float = Field(default=10.0, description="Seconds (or '10s').")
    unreachable_grace: float = Field(
        default=300.0,
        description="How long a host may stay unreachable before its runs become ERROR.",
    )
    keepalive: float = Field(default=15.0, description="Seconds between SSH keepalives.")
    reconnect_backoff_max: float = Field(
        default=30.0, description="Longest wait between reconnection attempts."
    )

    @model_validator(mode="before")
    @classmethod
    def _refuse_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, why in _REFUSED.items():
                if key in data:
                    raise ValueError(f"{key}: {why}")
        return data

    @field_validator(
        "connect_timeout", "unreachable_grace", "keepalive", "reconnect_backoff_max", mode="before"
    )
    @classmethod
    def _seconds(cls, value: Any) -> float | None:
        return _duration(value)

    @field_validator("remote_root")
    @classmethod
    def _root(cls, value: str) -> str:
        value = value.rstrip("/") or "/"
        if not value or "\n" in value or "\0" in value:
            raise ValueError("remote_root must be a folder path")
        return value

    def login(self) -> str:
        """``user@hostname:port`` for messages."""
        return f"{self.remote_user()}@{self.hostname}:{self.port}"

    def remote_user(self) -> str:
        if self.user:
            return self.user
        try:
            import pwd

            return pwd.getpwuid(os.getuid()).pw_name
        except (ImportError, KeyError):  # pragma: no cover - every POSIX host has pwd
            return os.environ.get("USER", "root")

    def key_path(self) -> Path | None:
        return Path(self.key_file).expanduser() if self.key_file else None

    def known_hosts_path(self) -> Path:
        return Path(self.known_hosts).expanduser()

    def use_agent(self) -> bool:
        return self.agent if self.agent is not None else self.key_file is None


def check_hosts(hosts: dict[str, SSHHost], reserved: set[str]) -> None:
    """Cross-host rules pydantic cannot see from one host: names and jump chains."""
    for name, host in hosts.items():
        if not _NAME.match(name):
            raise ValueError(f"ssh host name {name!r}: use letters, digits, '_', '.', '-'")
        if name in reserved:
            raise ValueError(f"ssh host name {name!r} is taken by a built-in executor")
        seen = {name}
        jump = host.jump_host
        while jump is not None:
            if jump not in hosts:
                raise ValueError(f"{name}.jump_host: {jump!r} is not a host of the ssh section")
            if jump in seen:
                raise ValueError(f"{name}.jump_host: the jump chain loops through {jump!r}")
            seen.add(jump)
            jump = hosts[jump].jump_host
