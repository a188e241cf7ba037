"""systemd's readiness protocol (``sd_notify``), without a dependency.

A unit with ``Type=notify`` waits for ``READY=1`` on the datagram socket named by
``$NOTIFY_SOCKET`` before it counts the service as started (so ``systemctl start`` returns
once the daemon holds its lock and has recovered its runs, not when the process exists).
The protocol is one ``KEY=VALUE`` line per field in a single datagram; a name starting
with ``@`` is a socket in Linux's abstract namespace (a leading NUL byte). Outside systemd
the variable is unset and every call is a no-op, so the daemon needs no special mode.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("flowbatch.notify")

ENV = "NOTIFY_SOCKET"


def _address(name: str) -> str | bytes:
    """The socket address for ``$NOTIFY_SOCKET``: a path, or ``@name`` (abstract)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def notify(*fields: str, socket_name: str | None = None) -> bool:
    """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) to the service manager.

    Returns True when a datagram was sent, False when there is no ``$NOTIFY_SOCKET``
    (not started by systemd) or sending failed: readiness is best effort and must never
    stop the daemon itself, so errors are logged, not raised.
    """
    name = socket_name if socket_name is not None else os.environ.get(ENV)
    if not name or not fields:
        return False
    if not name.startswith(("/", "@")):
        # systemd also allows vsock:...; flowbatch does not run in VMs that need it
        log.warning("ignoring unsupported %s=%r", ENV, name)
        return False
    message = "\n".join(f.replace("\n", " ") for f in fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, _address(name))
    except OSError as exc:
        log.warning("could not notify the service manager at %s: %s", name, exc)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """The daemon is up: lock held, runs recovered (``READY=1`` plus a status line)."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []), f"MAINPID={os.getpid()}")


def stopping(status: str | None = None) -> bool:
    """The daemon is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1", *([f"STATUS={status}"] if status else []))


def status(text: str) -> bool:
    """A free-form status line shown by ``systemctl status``."""
    return notify(f"STATUS={text}")
