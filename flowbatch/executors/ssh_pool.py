"""One SSH connection per host, shared by every run, poll and command runner.

Why a pool: a connection costs a key exchange and an authentication (~30 ms on loopback,
far more across a WAN, and login nodes rate-limit new connections); a command on an open
connection costs one channel (~5 ms). So each configured host gets exactly one paramiko
connection, opened lazily, kept alive, and reopened with backoff when it drops.

Security: the host key must be in the host's ``known_hosts`` file (never the system's
implicitly, never added on first sight). An unknown or changed key raises
:class:`HostKeyError` naming the host and the offered key's SHA256 fingerprint; it is raised
before authentication, so no command has run. The file is read here, not by paramiko
(:func:`read_known_hosts`): a key OpenSSH's ``@revoked`` marks is refused for the hosts its
line names, even where another line lists it; ``@cert-authority`` lines are not used
(paramiko cannot verify host certificates: a host trusted only through its CA is an
unknown host); a line that cannot be read is a :class:`~flowbatch.errors.ConfigError`
naming the file and the line, as is a file that cannot be read at all. Passwords are not
supported; a key's passphrase comes from an environment variable named in the config and
is never logged.

Speed: paramiko leaves Nagle's algorithm on, which stalls each small request for ~40 ms
on Linux; the socket is created here with ``TCP_NODELAY`` and handed over as ``sock=``.
The Transport is made by :func:`_transport`, which puts AES-GCM first among paramiko's
ciphers (one pass instead of AES-CTR plus a separate HMAC: 10-25% more SFTP throughput
on loopback); nothing is added to or removed from what paramiko offers.
Large files do not go through SFTP at all (see ``ssh_staging``).

Bounded: a host that stops answering (hung, its sshd stopped, a half-open link: the
kernel still ACKs, so TCP keepalive and paramiko's keepalive, which asks no reply, see
nothing) never holds a caller for long. Every wait for the host is bounded by the
connection's :attr:`SSHConnection.io_timeout` (no answer for ``3 x keepalive``, at
least ``connect_timeout``: OpenSSH's ``ServerAliveCountMax`` of 3), and a command by
its own timeout plus that: paramiko's waits that take no timeout (the reply to an
exec or subsystem request) run under a :class:`Fuse` that closes the connection, and
the SFTP session's channel closes it at its first read or write that times out
(:class:`FusedChannel`; its pending requests would be answered out of turn later). A
connection closed so is broken: the caller gets :class:`HostUnreachable`, the host
counts as away (the executors' ``unreachable_grace``) and the next use reconnects; a
connection attempt that fails by timing out is not repeated before the backoff ends,
even by a caller that skips it for a refused one (a launch).
A command's remote side is ended with its process group when it outlasts its timeout
(coreutils ``timeout``, where the host has it): exit 124, as locally.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import paramiko
from paramiko.hostkeys import HostKeyEntry

from ..errors import ConfigError, ExecutorError, ExecutorUnavailable
from ..ssh_hosts import SSHHost
from .commands import CommandResult

log = logging.getLogger("flowbatch.ssh")

#: first wait after a failed connection attempt; doubles up to the host's backoff maximum
BACKOFF_START = 0.5
#: upper bound of a bookkeeping command (poll, launch, cancel) when the caller gives none
DEFAULT_COMMAND_TIMEOUT = 60.0
#: keepalive intervals without an answer after which a wait for the host gives up and
#: the connection counts as broken (OpenSSH's ServerAliveCountMax)
KEEPALIVE_MISSES = 3
#: seconds between TERM and KILL of a command that outlasted its timeout (remote side)
COMMAND_KILL_AFTER = 5


#: ciphers put first in the Transport's offer, when this paramiko has them (3.5+)
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _transport(sock: Any, /, **kwargs: Any) -> paramiko.Transport:
    """``SSHClient.connect``'s transport factory: paramiko's Transport, offering AES-GCM
    first. Only the order changes: the same (strong) ciphers as paramiko's own list, so
    a server without GCM negotiates what it did before."""
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    offered = tuple(options.ciphers)  # paramiko's preference, minus disabled_algorithms
    first = tuple(c for c in FAST_CIPHERS if c in offered)
    options.ciphers = first + tuple(c for c in offered if c not in first)
    return transport


class HostKeyError(ExecutorError):
    """The host's key is not the one in known_hosts (unknown or changed)."""


class HostUnreachable(ExecutorUnavailable):
    """No working connection to the host right now (refused, timed out, dropped)."""


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key (what ``ssh-keygen -l`` shows)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_name(host: SSHHost) -> str:
    """The name a host's key is filed under in known_hosts (``[h]:port`` off port 22)."""
    return host.hostname if host.port == 22 else f"[{host.hostname}]:{host.port}"


@dataclass
class KnownHosts:
    """A known_hosts file as :func:`read_known_hosts` found it: its plain lines'
    entries, its ``@revoked`` ones (with their line numbers), and how many
    ``@cert-authority`` lines it has (not used)."""

    path: Path
    entries: list[HostKeyEntry] = field(default_factory=list)
    revoked: list[tuple[HostKeyEntry, int]] = field(default_factory=list)
    authorities: int = 0

    def add_to(self, keys: paramiko.HostKeys, name: str) -> None:
        """Into ``keys``, the keys to accept for a connection to ``name`` (as known_hosts
        files it: :func:`known_hosts_name`): every plain line's, but one revoked for it."""
        for entry in self.entries:
            if self.revoked_at(name, entry.key) is None:
                for pattern in entry.hostnames:
                    keys.add(pattern, entry.key.get_name(), entry.key)

    def revoked_at(self, name: str, key: paramiko.PKey) -> int | None:
        """The line that revokes ``key`` for the host ``name``, if one does."""
        for entry, line in self.revoked:
            if entry.key == key and _host_matches(entry.hostnames, name):
                return line
        return None


def read_known_hosts(path: Path, host: str, name: str | None = None) -> KnownHosts:
    """The known_hosts file ``path`` of the ssh host ``host`` (for messages), read as
    OpenSSH writes it: ``<patterns> <key type> <base64 key> [comment]``, perhaps after a
    marker, ``@cert-authority`` (skipped: paramiko cannot verify host certificates) or
    ``@revoked``. A key type paramiko does not know is skipped, as paramiko does (no host
    can offer it one). :class:`ConfigError` when the file cannot be read, or a line
    cannot be made out (paramiko's own reading raised a bare ``InvalidHostKey`` for a
    marker line, at every connection attempt). A line that cannot be made out and names
    other hosts than ``name`` (the host's name in known_hosts) is skipped with a warning,
    as OpenSSH reads past it (found by review: one damaged line of a shared, hand-edited
    ~/.ssh/known_hosts stopped every host)."""
    where = f"ssh.{host}.known_hosts"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"ssh host {host}: known_hosts file {path} does not exist",
            field=where,
            hint="write the host's key there (ssh-keyscan, checked) before using it",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"ssh host {host}: known_hosts file {path} cannot be read: {exc.strerror or exc}",
            field=where,
            expected="a file the daemon's user may read",
            hint="fix the path or its permissions (`flowbatch hosts check " + host + "` tries it)",
        ) from None
    known = KnownHosts(path)
    for number, raw in enumerate(data.splitlines(), 1):
        line = raw.decode("utf-8", "replace").strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        marker = fields.pop(0) if fields[0].startswith("@") else None
        entry, why = _known_hosts_line(marker, fields, number, raw)
        if why is not None:
            if name is None or not fields or _host_matches(fields[0].split(","), name):
                raise _bad_line(host, path, number, why)
            _warn_once(path, number, f"ssh {host}: line {number} of {path} skipped: {why}")
        elif marker == "@cert-authority":
            known.authorities += 1
        elif entry is None:
            log.debug("ssh %s: %s line %d: a key type paramiko does not know", host, path, number)
        elif marker == "@revoked":
            known.revoked.append((entry, number))
        else:
            known.entries.append(entry)
    return known


def _known_hosts_line(
    marker: str | None, fields: list[str], number: int, raw: bytes
) -> tuple[HostKeyEntry | None, str | None]:
    """One known_hosts line's entry (None: a key type paramiko does not know, or a
    @cert-authority line), or why it cannot be made out."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "it is not UTF-8 text"
    if marker not in (None, "@cert-authority", "@revoked"):
        return None, f"unknown marker {(marker or '')[:40]!r}"
    if len(fields) < 3:
        return None, "too few fields"
    if marker == "@cert-authority":
        return None, None
    try:
        return HostKeyEntry.from_line(" ".join(fields[:3]), number), None
    except Exception as exc:  # paramiko's InvalidHostKey is a bare Exception
        return None, f"its key cannot be read ({exc.__class__.__name__})"


_WARNED: set[tuple[str, int]] = set()


def _warn_once(path: Path, number: int, message: str) -> None:
    """A skipped line of a known_hosts file, said once by this process."""
    if (str(path), number) not in _WARNED:
        _WARNED.add((str(path), number))
        log.warning("%s", message)


def _bad_line(host: str, path: Path, number: int, why: str) -> ConfigError:
    return ConfigError(
        f"ssh host {host}: line {number} of known_hosts file {path} cannot be read: {why}",
        field=f"ssh.{host}.known_hosts",
        expected="`<host patterns> <key type> <base64 key>`, perhaps after @revoked or "
        "@cert-authority",
        hint=f"fix or remove line {number} (`ssh-keygen -F <host> -f {path}` shows how "
        "OpenSSH reads the file)",
    )


def _host_matches(patterns: list[str], name: str) -> bool:
    """Whether the host ``name`` is one a known_hosts line's patterns name, as OpenSSH
    matches them: ``*`` and ``?`` wildcards, ``!`` negation (which wins), hashed names
    (``|1|salt|hash``), host names in any case."""
    found = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        if pattern.startswith("|1|"):
            try:
                hit = hmac.compare_digest(paramiko.HostKeys.hash_host(name, pattern), pattern)
            except Exception:  # a hashed name that is not one names no host
                hit = False
        else:
            regex = re.escape(pattern.lower()).replace(r"\*", ".*").replace(r"\?", ".")
            hit = re.fullmatch(regex, name.lower()) is not None
        if hit and negated:
            return False
        found = found or hit
    return found


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """RejectPolicy with a useful message: which host, which key it offered (and, for a
    key its known_hosts file revokes, which line)."""

    def __init__(self, name: str, host: SSHHost, known: KnownHosts) -> None:
        self.name = name
        self.host = host
        self.known = known

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        revoked = _revoked(self.name, self.host, self.known, key)
        if revoked is not None:
            raise revoked
        hint = (
            "if the key is right, add it to that known_hosts file (e.g. ssh-keyscan "
            "output checked against the fingerprint the host's admin publishes)"
        )
        if self.known.authorities:
            hint += (
                "; its @cert-authority lines are not used (host certificates cannot be "
                "verified here): the host's own key must be listed"
            )
        raise HostKeyError(
            f"ssh host {self.name} ({known_hosts_name(self.host)}) offered an unknown "
            f"{key.get_name()} host key {fingerprint(key)}; connection refused, nothing was run",
            file=str(self.known.path),
            hint=hint,
        )


def _revoked(
    name: str, host: SSHHost, known: KnownHosts, key: paramiko.PKey
) -> HostKeyError | None:
    """The error for a host offering a key its known_hosts file revokes (None: it does not)."""
    line = known.revoked_at(known_hosts_name(host), key)
    if line is None:
        return None
    return HostKeyError(
        f"ssh host {name} ({known_hosts_name(host)}) offered the {key.get_name()} host key "
        f"{fingerprint(key)}, which line {line} of its known_hosts file REVOKES (@revoked); "
        "connection refused, nothing was run",
        file=str(known.path),
        hint="the host's admin must give it a new key; do not connect until then",
    )


class Fuse:
    """Closes ``transport`` if the block it guards outlasts ``seconds``: for paramiko's
    waits that take no timeout (the reply to an exec or subsystem request), whose
    waiters the closed transport wakes (with an error). ``blown`` tells afterwards."""

    def __init__(self, transport: paramiko.Transport, seconds: float) -> None:
        self.transport = transport
        self.seconds = seconds
        self.blown = False
        self._timer = threading.Timer(seconds, self._blow)
        self._timer.daemon = True

    def _blow(self) -> None:
        self.blown = True
        log.warning("ssh: no answer for %.1f s, closing the connection", self.seconds)
        self.transport.close()

    def __enter__(self) -> Fuse:
        self._timer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        if self.blown and exc is not None and not isinstance(exc, TimeoutError):
            raise TimeoutError(f"no answer for {self.seconds:g} s") from exc


class FusedChannel:
    """A channel as an SFTP client sees it (``recv``, ``send``, the rest passed through)
    that closes its whole connection at the first read or write that times out.

    A timed-out SFTP request leaves the session out of step (its answer may still come,
    taken for the next request's): the session cannot go on, and paramiko would wait
    once more for each file it closes on the way out."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel

    def recv(self, nbytes: int) -> bytes:
        try:
            return self._channel.recv(nbytes)
        except TimeoutError:
            self._cut()
            raise

    def send(self, data: bytes) -> int:
        try:
            return self._channel.send(data)
        except TimeoutError:
            self._cut()
            raise

    def _cut(self) -> None:
        transport = self._channel.get_transport()
        log.warning("ssh: no answer on the SFTP session for %s s", self._channel.gettimeout())
        if transport is not None:
            transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


def io_timeout(host: SSHHost) -> float:
    """How long any single wait for ``host`` may last: ``KEEPALIVE_MISSES`` keepalive
    intervals, at least its ``connect_timeout``."""
    return max(KEEPALIVE_MISSES * host.keepalive, host.connect_timeout)


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc``, raised by an SSH or SFTP operation, means the connection failed
    (timed out, closed, reset), as opposed to the host's answer about one file."""
    return isinstance(exc, TimeoutError | ConnectionError | EOFError | paramiko.SSHException)


class SSHConnection:
    """The pooled connection to one host: lazy, kept alive, reconnecting with backoff."""

    def __init__(self, name: str, host: SSHHost, pool: SSHPool) -> None:
        self.name = name
        self.host = host
        self.pool = pool
        self.connects = 0  # successful connections made (tests count them)
        self.commands = 0  # commands run (tests count round trips)
        self.down_since: float | None = None  # monotonic time of the first failure in a row
        self.last_error: str | None = None
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self._failures = 0
        self._next_attempt = 0.0
        self._slow_failure = False  # the last attempt failed by timing out
        #: the longest wait for an answer before the connection counts as broken
        self.io_timeout = io_timeout(host)

    # -- state ----------------------------------------------------------------------------------
    def alive(self) -> bool:
        transport = self._client.get_transport() if self._client else None
        return bool(transport and transport.is_active())

    def unreachable_for(self) -> float:
        """Seconds since the host stopped answering (0 while it answers)."""
        return 0.0 if self.down_since is None else time.monotonic() - self.down_since

    # -- connecting -----------------------------------------------------------------------------
    def client(self, *, force: bool = False) -> paramiko.SSHClient:
        """The open client; connects first when needed. ``force`` skips the backoff wait,
        unless the last attempt failed by timing out (a hung host: each attempt would
        hold the caller for ``connect_timeout``)."""
        with self._lock:
            if self._client is not None and self.alive():
                return self._client
            self._drop()
            if time.monotonic() < self._next_attempt and (not force or self._slow_failure):
                raise self._unreachable(f"{self.last_error} (next attempt in a moment)")
            begin = time.monotonic()
            self._slow_failure = False
            try:
                self._client = self._connect()
            except HostKeyError as exc:
                self._failed(exc.reason)
                raise
            except ConfigError as exc:  # e.g. known_hosts or key file missing: down too
                self._failed(exc.reason)
                raise
            except (paramiko.SSHException, OSError, EOFError) as exc:
                reason = _describe(exc)
                if str(exc) == "No existing session":  # paramiko's word for a stalled kex
                    reason = f"no answer to the key exchange within {self.host.connect_timeout:g} s"
                self._slow_failure = time.monotonic() - begin >= self.host.connect_timeout / 2
                self._failed(reason)
                raise self._unreachable(reason) from None
            self.connects += 1
            self._failures = 0
            self._next_attempt = 0.0
            self.down_since = None
            self.last_error = None
            return self._client

    def _unreachable(self, reason: str) -> HostUnreachable:
        return HostUnreachable(
            f"ssh host {self.name} ({self.host.login()}): {reason}",
            hint="check that the host is up and `flowbatch hosts check " + self.name + "`",
        )

    def _failed(self, reason: str) -> None:
        self._failures += 1
        self.last_error = reason
        if self.down_since is None:
            self.down_since = time.monotonic()
        wait = min(BACKOFF_START * 2 ** (self._failures - 1), self.host.reconnect_backoff_max)
        self._next_attempt = time.monotonic() + wait
        log.warning("ssh %s: %s (retrying in %.1f s)", self.name, reason, wait)

    def _connect(self) -> paramiko.SSHClient:
        host = self.host
        if host.user is None and os.geteuid() == 0:
            raise ConfigError(
                f"ssh host {self.name} names no `user:`, and this daemon runs as root: it "
                "would log in as root and run participants' code as root there",
                field=f"ssh.{self.name}.user",
                expected="the remote account runs are to run as",
                hint="set `user:` in the host's section of flowbatch.yaml",
            )
        known = read_known_hosts(host.known_hosts_path(), self.name, known_hosts_name(host))
        client = paramiko.SSHClient()
        # the keys to accept: paramiko's SSHClient checks the offered key against these
        # (its own host keys, which load_host_keys would fill), then asks the policy
        known.add_to(client.get_host_keys(), known_hosts_name(host))
        client.set_missing_host_key_policy(_RefuseUnknown(self.name, host, known))
        sock = self._socket()
        try:
            client.connect(
                hostname=host.hostname,
                port=host.port,
                username=host.remote_user(),
                pkey=self._key(),
                sock=sock,
                allow_agent=host.use_agent(),
                look_for_keys=False,
                timeout=host.connect_timeout,
                banner_timeout=host.connect_timeout,
                auth_timeout=host.connect_timeout,
                channel_timeout=host.connect_timeout,
                transport_factory=_transport,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            revoked = _revoked(self.name, host, known, exc.key)
            if revoked is not None:  # another key of the host's is listed
                raise revoked from None
            raise HostKeyError(
                f"ssh host {self.name} ({known_hosts_name(host)}) offered the "
                f"{exc.key.get_name()} host key {fingerprint(exc.key)}, but known_hosts has "
                f"{fingerprint(exc.expected_key)}: the key CHANGED; connection refused, "
                "nothing was run",
                file=str(known.path),
                hint="if the host was reinstalled, replace its line in known_hosts after "
                "checking the new fingerprint with its admin; otherwise do not connect",
            ) from None
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(max(1, int(host.keepalive)))
        log.info("ssh %s: connected to %s", self.name, host.login())
        return client

    def _socket(self) -> Any:
        """A TCP socket with TCP_NODELAY, or a channel through the jump host."""
        host = self.host
        if host.jump_host:
            jump = self.pool.connection(host.jump_host).client()
            transport = jump.get_transport()
            assert transport is not None
            return transport.open_channel(
                "direct-tcpip",
                (host.hostname, host.port),
                ("127.0.0.1", 0),
                timeout=host.connect_timeout,
            )
        sock = socket.create_connection((host.hostname, host.port), timeout=host.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock

    def _key(self) -> paramiko.PKey | None:
        path = self.host.key_path()
        if path is None:
            return None
        passphrase = None
        if self.host.key_passphrase_env:
            passphrase = os.environ.get(self.host.key_passphrase_env)
        field = f"ssh.{self.name}.key_file"
        try:
            return paramiko.PKey.from_path(path, password=passphrase)
        except paramiko.PasswordRequiredException:
            raise ConfigError(
                f"ssh host {self.name}: the key file is protected by a passphrase",
                field=field,
                hint="name an environment variable holding it in key_passphrase_env, "
                "or use the SSH agent",
            ) from None
        except FileNotFoundError:
            raise ConfigError(
                f"ssh host {self.name}: key file {path} does not exist", field=field
            ) from None
        except (paramiko.SSHException, OSError, ValueError) as exc:
            # the message names the file, never its content
            raise ConfigError(
                f"ssh host {self.name}: cannot read key file {path}: {type(exc).__name__}",
                field=field,
            ) from None

    # -- using it -------------------------------------------------------------------------------
    def run(
        self,
        command: str,
        *,
        input: str | None = None,
        timeout: float | None = None,
        force: bool = False,
    ) -> CommandResult:
        """Run a bash command line on the host; :class:`HostUnreachable` when it cannot.

        A command that outlasts ``timeout`` is ended there with its process group (exit
        124, "timed out"); a host that has not answered :attr:`io_timeout` after that
        (and :data:`COMMAND_KILL_AFTER`), or not within :attr:`io_timeout` to the request
        to start it, breaks the connection."""
        client = self.client(force=force)
        self.commands += 1
        timeout = timeout or DEFAULT_COMMAND_TIMEOUT
        try:
            transport = client.get_transport()
            assert transport is not None
            chan = transport.open_session(timeout=self.host.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._broken(exc) from None
        limit = timeout + COMMAND_KILL_AFTER + self.io_timeout
        begin = time.monotonic()
        try:
            with Fuse(transport, self.io_timeout):  # the reply to the exec request
                chan.exec_command(_remote_command(command, timeout))
            with Fuse(transport, limit):
                chan.settimeout(limit)
                if input is not None:
                    chan.sendall(input.encode("utf-8"))
                chan.shutdown_write()
                stdout = chan.makefile("rb").read()
                stderr = chan.makefile_stderr("rb").read()
                if not chan.status_event.wait(limit):
                    raise TimeoutError(f"no exit status after {limit:g} s")
                code = chan.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise self._broken(exc) from None
        finally:
            chan.close()
        if code in (124, 128 + 9) and time.monotonic() - begin >= timeout:
            said = _text(stderr).strip()
            return CommandResult(
                124,
                _text(stdout),
                f"timed out after {timeout:g} s on ssh:{self.name}" + (f": {said}" if said else ""),
            )
        return CommandResult(code, _text(stdout), _text(stderr))

    def sftp(self, *, force: bool = False) -> paramiko.SFTPClient:
        """The connection's SFTP session (opened once per connection). Each of its
        requests waits at most :attr:`io_timeout` for its answer; one that times out
        closes the connection (:class:`FusedChannel`): the caller sees the timeout (an
        ``OSError``), and :meth:`broken` makes it :class:`HostUnreachable`."""
        with self._lock:
            client = self.client(force=force)
            if self._sftp is None:
                transport = client.get_transport()
                try:
                    assert transport is not None
                    chan = transport.open_session(timeout=self.host.connect_timeout)
                    chan.settimeout(self.io_timeout)
                    with Fuse(transport, self.io_timeout):
                        chan.invoke_subsystem("sftp")
                        # the client uses its channel's recv, send and the rest through
                        self._sftp = paramiko.SFTPClient(cast(paramiko.Channel, FusedChannel(chan)))
                except (paramiko.SSHException, OSError, EOFError) as exc:
                    raise self._broken(exc) from None
            return self._sftp

    def broken(self, exc: BaseException) -> HostUnreachable:
        """Note that the connection failed under ``exc``; the error to raise."""
        return self._broken(exc)

    def _broken(self, exc: BaseException) -> HostUnreachable:
        reason = _describe(exc)
        with self._lock:
            self._drop()
            # the next use reconnects at once: a dropped idle connection is the usual case
            self.last_error = reason
            if self.down_since is None:
                self.down_since = time.monotonic()
        log.warning("ssh %s: connection lost: %s", self.name, reason)
        return self._unreachable(f"connection lost: {reason}")

    def _drop(self) -> None:
        # the transport first: closing the SFTP session of a host that does not answer
        # would wait for it (a closed transport has closed its channels already)
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:
                pass
            self._sftp = None

    def close(self) -> None:
        """Close the connection and forget failures (the next use connects afresh)."""
        with self._lock:
            self._drop()
            self._failures = 0
            self._next_attempt = 0.0
            self._slow_failure = False


class SSHPool:
    """The connections to the hosts of one ``ssh:`` section, one per host."""

    def __init__(self, hosts: dict[str, SSHHost]) -> None:
        self.hosts = dict(hosts)
        self._connections: dict[str, SSHConnection] = {}
        self._lock = threading.Lock()

    def connection(self, name: str) -> SSHConnection:
        with self._lock:
            conn = self._connections.get(name)
            if conn is None:
                host = self.hosts.get(name)
                if host is None:
                    raise ConfigError(
                        f"unknown ssh host {name!r}",
                        field="ssh",
                        hint="declare it in the ssh section of flowbatch.yaml",
                    )
                conn = self._connections[name] = SSHConnection(name, host, self)
            return conn

    def runner(self, name: str) -> SSHRunner:
        return SSHRunner(self.connection(name))

    def close(self) -> None:
        with self._lock:
            conns = list(self._connections.values())
        for conn in conns:
            conn.close()


class SSHRunner:
    """A :class:`~flowbatch.executors.commands.CommandRunner` over a pooled connection.

    ``run`` returns the remote command's result (exit 124 on timeout); a host it cannot
    reach raises :class:`HostUnreachable` (or :class:`HostKeyError`), both
    :class:`~flowbatch.errors.ExecutorError`, so callers can tell "the command failed"
    from "we could not ask".
    """

    def __init__(self, connection: SSHConnection) -> None:
        self.connection = connection
        self.where = f"ssh:{connection.name}"

    def run(
        self,
        command: str,
        *,
        input: str | None = None,
        timeout: float | None = None,
        uid: int | None = None,
    ) -> CommandResult:
        if uid is not None:  # a caller's bug: never run as someone else by accident
            raise ValueError(f"{self.where} runs commands as its configured user only")
        return self.connection.run(command, input=input, timeout=timeout)


_SHARED: dict[str, SSHPool] = {}
_SHARED_LOCK = threading.Lock()


def shared_pool(hosts: dict[str, SSHHost]) -> SSHPool:
    """The process's pool for this ``ssh:`` section, so the SSH and Slurm executors of one
    daemon share each host's single connection."""
    key = json.dumps({n: h.model_dump() for n, h in hosts.items()}, sort_keys=True)
    with _SHARED_LOCK:
        pool = _SHARED.get(key)
        if pool is None:
            pool = _SHARED[key] = SSHPool(hosts)
        return pool


def reset_shared_pools() -> None:
    """Close and forget every shared pool (tests; a daemon that reloads its config)."""
    with _SHARED_LOCK:
        pools = list(_SHARED.values())
        _SHARED.clear()
    for pool in pools:
        pool.close()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _remote_command(command: str, timeout: float) -> str:
    """What the login shell runs for ``command``: bash, under coreutils ``timeout`` where
    the host has it (its own process group, TERMed after ``timeout`` seconds, KILLed
    :data:`COMMAND_KILL_AFTER` later: a command stuck there is not left behind)."""
    bash = "bash -c " + _quote(command)
    limit = f"{max(timeout, 0.1):.1f}"
    return (
        "if command -v timeout >/dev/null 2>&1; then "
        f"exec timeout -k {COMMAND_KILL_AFTER} {limit} {bash}; else exec {bash}; fi"
    )


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, socket.timeout | TimeoutError):
        return f"timed out ({text})"
    return text
