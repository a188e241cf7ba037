"""3. SSH: flowbatch's pooled paramiko connection against OpenSSH, to one private sshd on
loopback (started with the test helpers in ``tests/services/sshd.py``, stopped by PID).

Round trip: ``true`` run on the open pooled connection (``SSHConnection.run``) against
``ssh host true`` with a ControlMaster already up (a client process per command, as a
script would do it). Transfer: 100 MB up and down the way flowbatch stages a run folder
(``ssh_staging.send_file``/``fetch_file`` on the pool's connection: a file this large is
streamed through ``cat`` on an exec channel) against OpenSSH ``sftp -b`` and ``scp``,
each a whole process. For reference, plain paramiko SFTP (``SFTPClient.put``/``get`` on
a connection with paramiko's defaults: what flowbatch did before) in the same rounds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import Timing, percentile


def bench(
    work: Path, *, commands: int, megabytes: int, repeats: int, log: Any = print
) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise RuntimeError("needs root (creates a test user and starts sshd)")
    from flowbatch.executors.ssh_pool import SSHPool
    from flowbatch.executors.ssh_staging import fetch_file, send_file
    from flowbatch.ssh_hosts import SSHHost
    from tests.services.sshd import TEST_USER, Sshd, ensure_sshd, ensure_user, free_port, keygen

    ensure_sshd()
    user = ensure_user()
    folder = Path(tempfile.mkdtemp(prefix="flowbatch-bench-sshd-"))
    os.chmod(folder, 0o755)
    keys = folder / "authorized_keys"
    keys.mkdir(mode=0o755)
    client = folder / "client"
    client.mkdir(mode=0o700)
    key = keygen(client / "id_ed25519", "flowbatch-bench")
    (keys / TEST_USER).write_text((client / "id_ed25519.pub").read_text())
    os.chmod(keys / TEST_USER, 0o644)
    address = "127.0.0.4"
    state = folder / "sshd"
    state.mkdir()
    server = Sshd("bench", address, free_port(address), state, keys)
    remote = Path(user.pw_dir) / f"flowbatch-bench-{os.getpid()}"
    control = folder / "cm.sock"
    pool = None
    plain = None
    ssh_opts = [
        "-i",
        str(key),
        "-p",
        str(server.port),
        "-o",
        f"UserKnownHostsFile={client / 'known_hosts'}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
    ]
    target = f"{TEST_USER}@{address}"
    try:
        server.start()
        (client / "known_hosts").write_text(server.keyscan())
        host = SSHHost(
            hostname=address,
            port=server.port,
            user=TEST_USER,
            key_file=str(key),
            known_hosts=str(client / "known_hosts"),
            remote_root=str(remote),
        )
        pool = SSHPool({"bench": host})
        conn = pool.connection("bench")
        conn.run(f"mkdir -p {remote}")
        subprocess.run(["chown", f"{TEST_USER}:", str(folder)], check=False)
        # -- round trips ------------------------------------------------------------------
        cm = [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={control}",
            "-o",
            "ControlPersist=120",
        ]
        subprocess.run(["ssh", *ssh_opts, *cm, target, "true"], check=True, timeout=30)
        pooled, openssh = [], []
        for _ in range(commands):  # interleaved, one of each in turn
            t = time.perf_counter()
            res = conn.run("true")
            pooled.append(time.perf_counter() - t)
            assert res.returncode == 0
            t = time.perf_counter()
            subprocess.run(["ssh", *ssh_opts, *cm, target, "true"], check=True, timeout=30)
            openssh.append(time.perf_counter() - t)
        # -- transfers --------------------------------------------------------------------
        data = folder / "payload.bin"
        with open(data, "wb") as fh:
            chunk = os.urandom(1 << 20)
            for _ in range(megabytes):
                fh.write(chunk)
        size = data.stat().st_size
        sftp = conn.sftp()
        plain = _plain_client(host)
        plain_sftp = plain.open_sftp()
        down = folder / "down"
        down.mkdir()
        t_put, t_get, t_sftp_put, t_sftp_get, t_scp_put, t_scp_get = (Timing() for _ in range(6))
        t_ref_put, t_ref_get = Timing(), Timing()
        for _ in range(repeats):
            t = time.perf_counter()
            send_file(sftp, data, f"{remote}/p.bin", size)
            t_put.add(time.perf_counter() - t)
            t = time.perf_counter()
            fetch_file(sftp, f"{remote}/p.bin", down / "p.bin", size)
            t_get.add(time.perf_counter() - t)
            t = time.perf_counter()
            plain_sftp.put(str(data), f"{remote}/r.bin")
            t_ref_put.add(time.perf_counter() - t)
            t = time.perf_counter()
            plain_sftp.get(f"{remote}/r.bin", str(down / "r.bin"))
            t_ref_get.add(time.perf_counter() - t)
            batch = folder / "batch"
            batch.write_text(f"put {data} {remote}/s.bin\n")
            t_sftp_put.add(_run(["sftp", *_sftp_opts(ssh_opts), "-b", str(batch), target]))
            batch.write_text(f"get {remote}/s.bin {down}/s.bin\n")
            t_sftp_get.add(_run(["sftp", *_sftp_opts(ssh_opts), "-b", str(batch), target]))
            t_scp_put.add(
                _run(["scp", "-q", *_sftp_opts(ssh_opts), str(data), f"{target}:{remote}/c.bin"])
            )
            t_scp_get.add(
                _run(
                    [
                        "scp",
                        "-q",
                        *_sftp_opts(ssh_opts),
                        f"{target}:{remote}/c.bin",
                        str(down / "c.bin"),
                    ]
                )
            )
            for name in ("p.bin", "r.bin", "s.bin", "c.bin"):
                if (down / name).stat().st_size != size:
                    raise RuntimeError(f"{name}: wrong size after download")
                (down / name).unlink()
        mb = size / 1e6
        rates = {
            k: mb / v.median
            for k, v in {
                "paramiko put": t_put,
                "paramiko get": t_get,
                "paramiko sftp put (defaults, before)": t_ref_put,
                "paramiko sftp get (defaults, before)": t_ref_get,
                "sftp put": t_sftp_put,
                "sftp get": t_sftp_get,
                "scp put": t_scp_put,
                "scp get": t_scp_get,
            }.items()
        }
        return {
            "commands": commands,
            "pooled_p50": percentile(pooled, 0.5),
            "pooled_p95": percentile(pooled, 0.95),
            "openssh_p50": percentile(openssh, 0.5),
            "openssh_p95": percentile(openssh, 0.95),
            "megabytes": mb,
            "repeats": repeats,
            "rates": rates,
        }
    finally:
        if plain is not None:
            plain.close()
        if pool is not None:
            try:
                pool.connection("bench").run(f"rm -rf {remote}")
            except Exception:
                pass
            pool.close()
        subprocess.run(
            ["ssh", "-o", f"ControlPath={control}", "-O", "exit", target],
            capture_output=True,
            timeout=10,
            check=False,
        )
        server.stop()
        shutil.rmtree(remote, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


def _plain_client(host: Any) -> Any:
    """A paramiko connection as flowbatch made it before (TCP_NODELAY, host key checked,
    paramiko's cipher order and window): the reference for plain SFTP."""
    import socket

    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(host.known_hosts_path()))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = socket.create_connection((host.hostname, host.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.connect(
        host.hostname,
        port=host.port,
        username=host.remote_user(),
        key_filename=str(host.key_path()),
        sock=sock,
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    return client


def _sftp_opts(ssh_opts: list[str]) -> list[str]:
    out = list(ssh_opts)
    i = out.index("-p")
    out[i] = "-P"  # sftp and scp spell the port -P
    return out


def _run(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - t


def markdown(res: dict[str, Any]) -> str:
    r = res["rates"]
    put_ratio = r["paramiko put"] / max(r["sftp put"], r["scp put"])
    get_ratio = r["paramiko get"] / max(r["sftp get"], r["scp get"])
    ok = "met" if min(put_ratio, get_ratio) >= 0.8 else "NOT met"
    return "\n".join(
        [
            "## 3. SSH",
            "",
            "One private sshd on 127.0.0.4 (the test helpers), key login. Round trip: "
            f"{res['commands']} commands `true`, interleaved: flowbatch's pooled paramiko "
            "connection (TCP_NODELAY) against `ssh host true` through an open ControlMaster. "
            f"Transfers: {res['megabytes']:.0f} MB, median of {res['repeats']}, interleaved; "
            "OpenSSH as whole processes (`sftp -b`, `scp`); paramiko put/get is flowbatch's "
            "staging path on the pooled connection (`send_file`/`fetch_file`: a file of 1 MiB "
            "or more is streamed through `cat` on an exec channel, AES-GCM preferred); "
            '"paramiko sftp (defaults, before)" is plain `SFTPClient.put`/`get` on a '
            "connection with paramiko's defaults, what flowbatch used before.",
            "",
            "| round trip | p50 | p95 |",
            "|---|---:|---:|",
            f"| flowbatch pooled connection | {res['pooled_p50'] * 1000:.1f} ms | "
            f"{res['pooled_p95'] * 1000:.1f} ms |",
            f"| OpenSSH ControlMaster | {res['openssh_p50'] * 1000:.1f} ms | "
            f"{res['openssh_p95'] * 1000:.1f} ms |",
            "",
            f"Pooled / OpenSSH: {res['pooled_p50'] / res['openssh_p50']:.2f}x the time "
            "per command.",
            "",
            "| transfer | MB/s |",
            "|---|---:|",
            *[f"| {k} | {v:.0f} |" for k, v in r.items()],
            "",
            f"- paramiko / best OpenSSH: upload {put_ratio:.0%}, download {get_ratio:.0%}. "
            f"Target (at least 80% of OpenSSH's throughput): {ok}.",
            "",
        ]
    )
