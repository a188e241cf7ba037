"""Fixtures for the SSH tests: two real OpenSSH servers on loopback (once per session).

Host ``a`` listens on 127.0.0.2, host ``b`` on 127.0.0.3, each a private ``sshd -D`` with
its own host key, logging in the test user ``fbtest`` with a key made for the session.
Both "hosts" are this machine, but the remote user cannot read the daemon's (root's)
pytest folders: whatever reaches the remote side went there by SFTP.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flowbatch import api
from flowbatch.executors.ssh_pool import reset_shared_pools
from flowbatch.site import Site

from .services.sshd import TEST_USER, Sshd, ensure_sshd, ensure_user, free_port, keygen

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ADDRESSES = {"a": "127.0.0.2", "b": "127.0.0.3"}


@dataclass
class SshEnv:
    """The session's servers, client key, known_hosts and remote folders."""

    servers: dict[str, Sshd]
    key_file: Path
    known_hosts: Path
    base: Path  # remote roots live below (fbtest's home)
    uid: int
    gid: int

    def remote_root(self, name: str) -> Path:
        return self.base / name

    def host(self, name: str, **overrides: Any) -> dict[str, Any]:
        """The site config entry of host ``name`` (keys in ``overrides`` win)."""
        server = self.servers[name]
        return {
            "hostname": server.address,
            "port": server.port,
            "user": TEST_USER,
            "key_file": str(self.key_file),
            "known_hosts": str(self.known_hosts),
            "remote_root": str(self.remote_root(name)),
            "max_runs": 4,
            "connect_timeout": 3,
            "unreachable_grace": 60,
            "keepalive": 5,
            "reconnect_backoff_max": 0.5,
            **overrides,
        }

    def config(self, executor: str = "a", **hosts: dict[str, Any]) -> dict[str, Any]:
        """A site config with both hosts; ``hosts`` gives per-host overrides."""
        return {
            "executor": executor,
            # the daemon's interpreter (a root-only venv) means nothing on the remote side
            "variables": {"python": "python3"},
            "ssh": {name: self.host(name, **hosts.get(name, {})) for name in self.servers},
        }

    def ensure_running(self) -> None:
        for server in self.servers.values():
            if server.proc is None or server.proc.poll() is not None:
                server.start()


@pytest.fixture(scope="session")
def ssh_env() -> Iterator[SshEnv]:
    """Two private sshd instances and a test user, started once for the session."""
    if os.geteuid() != 0:
        pytest.skip("the SSH tests create a test user and start sshd: run them as root")
    ensure_sshd()
    user = ensure_user()
    folder = Path(tempfile.mkdtemp(prefix="flowbatch-sshd-"))
    os.chmod(folder, 0o755)  # sshd reads authorized keys as the test user
    keys_dir = folder / "authorized_keys"
    keys_dir.mkdir(mode=0o755)
    client = folder / "client"
    client.mkdir(mode=0o700)
    key = keygen(client / "id_ed25519", "flowbatch-tests")
    (keys_dir / TEST_USER).write_text((client / "id_ed25519.pub").read_text())
    os.chmod(keys_dir / TEST_USER, 0o644)
    base = Path(user.pw_dir) / f"flowbatch-tests-{os.getpid()}"
    servers: dict[str, Sshd] = {}
    try:
        for name, address in ADDRESSES.items():
            state = folder / f"sshd-{name}"
            state.mkdir()
            server = Sshd(name, address, free_port(address), state, keys_dir)
            server.start()
            servers[name] = server
        known = client / "known_hosts"
        known.write_text("".join(s.keyscan() for s in servers.values()))
        yield SshEnv(servers, key, known, base, user.pw_uid, user.pw_gid)
    finally:
        reset_shared_pools()
        for server in servers.values():
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def ssh(ssh_env: SshEnv) -> Iterator[SshEnv]:
    """The session's servers, both up, and no connection left from another test."""
    ssh_env.ensure_running()
    reset_shared_pools()
    yield ssh_env
    reset_shared_pools()
    ssh_env.ensure_running()


def ssh_site(root: Path, env: SshEnv, **config: Any) -> Site:
    """A site with hosts a and b (default executor a) and helloworld installed."""
    from .conftest import make_site

    conf = env.config(**config.pop("hosts", {}))
    conf.update(config)
    site = make_site(root, conf)
    api.install(site, EXAMPLES / "helloworld", workflow_id="helloworld")
    return site
