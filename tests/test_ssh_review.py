"""Findings of a review of the SSH executor against a real sshd on loopback
(tests/fixtures_ssh.py), each with the test that shows it fixed: a remote file name that
is not UTF-8, one run whose look fails while the host's other runs go on, an output name
too long for the temporary name it was fetched under, a run that swaps its remote folder
for a link, outputs too large or growing for ever, known_hosts lines paramiko could not
read (@revoked, @cert-authority) and a known_hosts file that cannot be read."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flowbatch.cli import main
from flowbatch.config import SiteConfig
from flowbatch.daemon import Daemon
from flowbatch.errors import ConfigError
from flowbatch.executors import ssh as ssh_mod
from flowbatch.executors.ssh_pool import HostKeyError, SSHPool
from flowbatch.executors.ssh_staging import download_tree

from .conftest import drop, run_until_idle
from .fixtures_ssh import SshEnv, ssh_site
from .test_ssh import staging_conn
from .test_ssh_faults import runs, said, scored_site


def tick_until_ended(d: Daemon, site: Any, names: set[str], limit: float = 40.0) -> list[str]:
    """Tick ``d`` (as the daemon's serve loop does: a failed tick is noted, and the next
    one comes) until the runs ``names`` have ended; the ticks' errors."""
    errors: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            d.tick()
        except Exception as exc:  # what the serve loop would log before the next tick
            errors.append(f"{type(exc).__name__}: {exc}")
        states = {n: r["state"] for n, r in runs(site).items()}
        if names <= set(states) and all(states[n] not in ("PENDING", "RUNNING") for n in names):
            break
        time.sleep(0.05)
    return errors


# -- H1: a remote file name that is not UTF-8 ------------------------------------------------

#: the run writes a file whose name (and content) is not UTF-8
NOT_UTF8 = "python3 -c \"open(b'bad\\\\xffname', 'wb').write(b'\\\\x00\\\\xff data')\""


def test_a_remote_file_name_that_is_not_utf8_comes_home_with_its_bytes(
    ssh: SshEnv, tmp_path: Path
) -> None:
    """paramiko's listing decoded names as strict UTF-8: the fetch raised at every tick,
    and with it every poll of the host. The file now comes home under the same bytes,
    the run ends as it did, and a run on the other host ends too."""
    site = scored_site(tmp_path, ssh, NOT_UTF8 + "; sleep $[[mode]]")
    drop(site, "bad.yaml", {"workflow": "w", "name": "bad"})
    drop(
        site,
        "good.yaml",
        {"workflow": "w", "name": "good", "executor": "b", "arguments": {"mode": 1}},
    )
    d = Daemon(site)
    d.start()
    try:
        errors = tick_until_ended(d, site, {"bad", "good"})
    finally:
        d.stop()
    assert not errors, errors[:1]
    bad, good = runs(site)["bad"], runs(site)["good"]
    assert bad["state"] == "SUCCESS", bad["messages"]
    assert bad["results"] == {"score": 5}
    assert good["state"] == "SUCCESS", good["messages"]
    fetched = Path(bad["run_dir"]) / "bad\udcffname"  # os.fsdecode(b"bad\xffname")
    assert fetched.read_bytes() == b"\x00\xff data"
    assert b"bad\xffname" in os.listdir(os.fsencode(bad["run_dir"]))


def test_a_run_whose_look_fails_unexpectedly_ends_and_the_hosts_other_runs_go_on(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Any other bug met by one run's fetch: that run is UNKNOWN while it lasts (its
    traceback logged once), then, past the host's unreachable_grace, an infrastructure
    failure with the reason and its remote folder kept; the host's other run ends as
    usual, and no tick fails."""
    site = scored_site(
        tmp_path, ssh, "test $[[mode]] = 1 && touch boom; true", a={"unreachable_grace": 1}
    )
    drop(site, "broken.yaml", {"workflow": "w", "name": "broken", "arguments": {"mode": 1}})
    drop(site, "fine.yaml", {"workflow": "w", "name": "fine"})
    real = ssh_mod.download_tree

    def failing(sftp: Any, remote: Any, local: Path, notes: Any = None, **kw: Any) -> int:
        count = real(sftp, remote, local, notes, **kw)
        if (local / "boom").exists():
            raise RuntimeError("a bug met by this run's fetch")
        return count

    monkeypatch.setattr(ssh_mod, "download_tree", failing)
    caplog.set_level("INFO", logger="flowbatch.ssh")
    d = Daemon(site)
    d.start()
    try:
        errors = tick_until_ended(d, site, {"broken", "fine"})
        broken = runs(site)["broken"]
        note = said(site, d, "broken")
    finally:
        d.stop()
    assert not errors, errors[:1]
    assert runs(site)["fine"]["state"] == "SUCCESS"
    assert broken["state"] == "ERROR", broken["messages"]
    assert "looking at the run on ssh host a failed" in note, note
    assert "RuntimeError: a bug met by this run's fetch" in note, note
    assert "its remote folder is kept" in note and broken["handle"]["remote_dir"] in note
    assert Path(broken["handle"]["remote_dir"], "boom").exists()  # the folder was kept
    tracebacks = [r for r in caplog.records if r.exc_info and "looking at run" in r.message]
    assert len(tracebacks) == 1, [r.message for r in caplog.records]


# -- M3: a long output name ------------------------------------------------------------------


def test_an_output_with_a_long_name_is_fetched_and_the_rest_too(
    ssh: SshEnv, tmp_path: Path
) -> None:
    """A name of 250 bytes is legal; its temporary name ``.<name>.flowbatch-fetch`` was
    not (ENAMETOOLONG), and stopped the whole fetch before r.json."""
    long = "L" * 250
    site = scored_site(tmp_path, ssh, f"echo long > {long}")
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    run_until_idle(site, timeout=40)
    run = runs(site)["r"]
    assert run["state"] == "SUCCESS", run["messages"]
    assert run["results"] == {"score": 5}
    assert (Path(run["run_dir"]) / long).read_text() == "long\n"
    assert not list(Path(run["run_dir"]).glob(".fb-fetch-*"))


def test_a_name_this_side_cannot_store_is_left_out_with_a_note(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local file system that stores shorter names than the host's (or only UTF-8
    ones): that file is left out, named, and the rest comes home."""
    conn, remote = staging_conn(ssh, tmp_path)
    for name in ("a.txt", "refused.txt", "z.txt"):
        Path(remote, name).write_text(name)  # the remote FS is this machine's
    real = os.rename

    def rename(src: Any, dst: Any, **kw: Any) -> None:
        if dst == "refused.txt":  # what a file system with a shorter NAME_MAX says
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), dst)
        real(src, dst, **kw)

    monkeypatch.setattr(os, "rename", rename)
    down = tmp_path / "down"
    down.mkdir()
    notes: list[str] = []
    try:
        assert download_tree(conn.sftp(), remote, down, notes) == 2
    finally:
        conn.pool.close()
    assert sorted(p.name for p in down.iterdir()) == ["a.txt", "z.txt"]  # no temporary
    assert notes == ["refused.txt (its name cannot be stored here: File name too long)"]


# -- M2: a run that swaps its own remote folder for a link -----------------------------------

#: the run moves its folder aside and puts a link to a folder outside it in its place
SWAP_FOLDER = (
    'd=$$(pwd -P); o=$$d.outside; mkdir -p $$o; echo secret > $$o/leak.txt; cd ..; mv "$$d" '
    '"$$d.moved"; ln -s "$$o" "$$d"; cd "$$d.moved"'
)


def test_a_run_that_swaps_its_remote_folder_for_a_link_gets_nothing_from_outside(
    ssh: SshEnv, tmp_path: Path
) -> None:
    """The fetch listed and read through the link: the run's folder came home with what
    the link pointed at. Now nothing is fetched from it, the run's messages say why, and
    the remote side is kept as it is for the admin."""
    site = scored_site(tmp_path, ssh, SWAP_FOLDER)
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    d = run_until_idle(site, timeout=40)
    run = runs(site)["r"]
    fetched = sorted(p.name for p in Path(run["run_dir"]).rglob("*"))
    assert "leak.txt" not in fetched, fetched
    assert "r.json" not in fetched, fetched
    remote = run["handle"]["remote_dir"]
    message = " ".join(run["messages"])
    assert f"its remote folder {remote} is a symbolic link: nothing was fetched" in message
    assert "it is kept for the site's admin to look at" in message, run["messages"]
    assert Path(remote).is_symlink() and Path(remote + ".moved", "r.json").exists()
    assert run["state"] == "ERROR"  # no exit status, no marker came home: lost
    d.stop()


def test_a_remote_folder_swapped_during_the_fetch_is_found_out(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap comes while the folder is listed (after the first look): nothing is
    fetched. It comes while a file is fetched: the download says so at its end."""
    from flowbatch.executors import ssh_staging

    conn, remote = staging_conn(ssh, tmp_path)
    outside = Path(remote + ".outside")
    outside.mkdir()
    (outside / "leak.txt").write_text("secret")
    Path(remote, "a.txt").write_text("a")

    def swap() -> None:
        os.rename(remote, remote + ".moved")
        os.symlink(outside, remote)

    def back() -> None:
        os.unlink(remote)
        os.rename(remote + ".moved", remote)

    real_listdir = ssh_staging.listdir

    def listing(sftp: Any, path: bytes) -> Any:
        entries = real_listdir(sftp, path)
        swap()
        return entries

    down = tmp_path / "down"
    down.mkdir()
    with monkeypatch.context() as patch:
        patch.setattr(ssh_staging, "listdir", listing)
        with pytest.raises(ssh_staging.RemoteFolderReplaced) as caught:
            download_tree(conn.sftp(), remote, down)
    assert not caught.value.during
    assert str(caught.value) == f"{remote} is a symbolic link once it was listed"
    assert list(down.iterdir()) == []
    back()

    real_fetch = ssh_staging.fetch_into

    def fetching(sftp: Any, path: bytes, out: Any, size: int) -> None:
        real_fetch(sftp, path, out, size)
        swap()

    monkeypatch.setattr(ssh_staging, "fetch_into", fetching)
    with pytest.raises(ssh_staging.RemoteFolderReplaced) as caught:
        download_tree(conn.sftp(), remote, down)
    assert caught.value.during
    assert "is a symbolic link while its files were fetched" in str(caught.value)
    back()
    # a link higher up (the run's workflow folder swapped): its real path is elsewhere
    Path(remote, "sub").mkdir()
    os.symlink(remote, remote + ".via")
    with pytest.raises(ssh_staging.RemoteFolderReplaced, match=r"sub resolves to /.*/sub$"):
        download_tree(conn.sftp(), remote + ".via/sub", down)
    conn.pool.close()


# -- M1: no cap on fetched outputs; a growing file ---------------------------------------------


def test_files_beyond_max_fetch_bytes_stay_on_the_host_with_a_note(
    ssh: SshEnv, tmp_path: Path
) -> None:
    """A sparse 2 GiB file (no disk used there) came home as 2 GiB of real zeros, written
    by the (root) daemon. Past the host's max_fetch_bytes a file stays on the host, the
    run's messages say so, and its remote folder is kept; the smaller files come home."""
    site = scored_site(
        tmp_path,
        ssh,
        "truncate -s 2G big.bin; head -c 1000 /dev/urandom > small.bin",
        a={"max_fetch_bytes": 64 << 20},
    )
    drop(site, "r.yaml", {"workflow": "w", "name": "r"})
    d = Daemon(site)
    d.start()
    remote = None
    try:
        run_until_idle(site, daemon=d, timeout=40)
        run = runs(site)["r"]
        remote = Path(run["handle"]["remote_dir"])
        note = said(site, d, "r")
        local = Path(run["run_dir"])
        assert run["state"] == "SUCCESS", run["messages"]
        assert run["results"] == {"score": 5}
        assert not (local / "big.bin").exists()
        assert (local / "small.bin").read_bytes() == (remote / "small.bin").read_bytes()
        assert "1 file(s) of the run folder on ssh host a (2.0 GiB) were not fetched" in note
        assert "max_fetch_bytes (64.0 MiB)" in note and "big.bin (2.0 GiB)" in note, note
        assert (
            f"its remote folder is kept: fbtest@127.0.0.2:{ssh.servers['a'].port}:{remote}" in note
        )
        time.sleep(0.5)  # the removal would have been detached (setsid rm -rf &)
        assert (remote / "big.bin").exists() and (remote / "r.json").exists()
    finally:
        d.stop()
        if remote is not None:
            (remote / "big.bin").unlink(missing_ok=True)


def test_a_file_growing_during_the_fetch_comes_as_it_was_listed(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process the run left behind keeps extending two files (sparse: fast and free)
    once the folder is listed: `cat` and SFTP's getfo read on for as long as it did (for
    ever, with a process that never stops). Both reads stop at the listed size, by
    stream (2 MiB) and by SFTP (100 kB)."""
    import threading

    from flowbatch.executors import ssh_staging

    conn, remote = staging_conn(ssh, tmp_path)
    streamed, small = os.urandom(2 << 20), os.urandom(100_000)
    paths = [Path(remote, "streamed.bin"), Path(remote, "small.bin")]
    for path, data in zip(paths, (streamed, small), strict=True):
        path.write_bytes(data)  # the remote FS is this machine's
    stop = threading.Event()

    def grow() -> None:
        # by 512 MiB at most: a fetch that reads on (the bug) ends too, with no more
        # than that written here, instead of filling the disk
        for _ in range(32):
            if stop.wait(0.005):
                return
            for path in paths:
                os.truncate(path, path.stat().st_size + (16 << 20))

    grower = threading.Thread(target=grow, daemon=True)
    real = ssh_staging.listdir

    def listing(sftp: Any, path: bytes) -> Any:
        entries = real(sftp, path)
        grower.start()  # from now on
        return entries

    monkeypatch.setattr(ssh_staging, "listdir", listing)
    down = tmp_path / "down"
    down.mkdir()
    begin = time.monotonic()
    try:
        assert download_tree(conn.sftp(), remote, down) == 2
        took = time.monotonic() - begin
    finally:
        stop.set()
        grower.join()
        for path in paths:
            path.unlink()
        conn.pool.close()
    assert took < 10, took
    assert (down / "streamed.bin").read_bytes() == streamed
    assert (down / "small.bin").read_bytes() == small


def test_a_stream_that_fails_is_read_by_sftp_no_further_than_listed(
    ssh: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SFTP fallback of a failed stream stops at the listed size too."""
    from flowbatch.executors import ssh_staging

    conn, remote = staging_conn(ssh, tmp_path)
    data = os.urandom(3 << 20)
    Path(remote, "f.bin").write_bytes(data)

    def failed(*args: Any) -> int:
        raise ssh_staging._StreamFailed("no head there")

    monkeypatch.setattr(ssh_staging, "_stream_down", failed)
    try:
        ssh_staging.fetch_file(conn.sftp(), f"{remote}/f.bin", tmp_path / "f.bin", 2 << 20)
    finally:
        conn.pool.close()
    assert (tmp_path / "f.bin").read_bytes() == data[: 2 << 20]


# -- H2, L1: known_hosts lines paramiko could not read; a file that cannot be read ----------


def host_key(server: Any) -> str:
    """``<type> <base64>`` of the server's host key."""
    return " ".join(Path(f"{server.host_key}.pub").read_text().split()[:2])


def a_pool(ssh: SshEnv, known: Path) -> SSHPool:
    """A pool of the test hosts, host a checked against the known_hosts file ``known``."""
    return SSHPool(SiteConfig.model_validate(ssh.config(a={"known_hosts": str(known)})).ssh)


def a_ca_line(tmp_path: Path) -> str:
    """An @cert-authority line of a CA made for the test (as HPC sites sign host keys)."""
    ca = tmp_path / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    return f"@cert-authority *.cluster.example {(tmp_path / 'ca.pub').read_text().strip()}\n"


@pytest.mark.parametrize("patterns", ["{name}", "*", "*.example,127.0.0.*,[127.0.0.2]:*"])
def test_a_revoked_host_key_is_refused_even_where_another_line_lists_it(
    ssh: SshEnv, tmp_path: Path, patterns: str
) -> None:
    """OpenSSH's @revoked line: paramiko's load_host_keys raised on it, at every attempt
    (InvalidHostKey, a bare Exception). The key is refused for the hosts the line names,
    with the file and the line, before authentication."""
    a = ssh.servers["a"]
    name = f"[{a.address}]:{a.port}"
    known = tmp_path / "known_hosts"
    known.write_text(
        f"# revoked after the breach\n@revoked {patterns.format(name=name)} {host_key(a)}\n"
        + a.keyscan()
    )
    pool = a_pool(ssh, known)
    before = a.accepted_logins()
    try:
        with pytest.raises(HostKeyError) as caught:
            pool.connection("a").run(f"touch {ssh.base}/should-not-exist")
    finally:
        pool.close()
    message = caught.value.summary()
    assert f"{known}: ssh host a ({name}) offered the ssh-ed25519 host key" in message
    assert f"{a.fingerprint()}, which line 2 of its known_hosts file REVOKES" in message
    assert a.accepted_logins() == before
    assert not (ssh.base / "should-not-exist").exists()


def test_a_revoked_line_for_other_hosts_leaves_this_one_alone(ssh: SshEnv, tmp_path: Path) -> None:
    a = ssh.servers["a"]
    known = tmp_path / "known_hosts"
    known.write_text(
        f"@revoked other.example,!{a.address} {host_key(a)}\n"
        f"@revoked !*{a.port} {host_key(a)}\n" + a.keyscan()
    )
    pool = a_pool(ssh, known)
    try:
        assert pool.connection("a").run("true").ok
    finally:
        pool.close()


def test_cert_authority_lines_are_skipped_and_said_to_be(ssh: SshEnv, tmp_path: Path) -> None:
    """@cert-authority beside the host's own line: the host is reached (`hosts check`
    crashed with a traceback, runs failed with "('@cert-authority …', Error('Incorrect
    padding'))"). Trusted only through its CA: an unknown host, and the message says
    that such lines are not used."""
    a = ssh.servers["a"]
    ca = a_ca_line(tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text(ca + a.keyscan())
    site = ssh_site(tmp_path / "site", ssh, hosts={"a": {"known_hosts": str(known)}})
    checked = CliRunner().invoke(main, ["--site", str(site.root), "hosts", "check", "a"])
    assert checked.exit_code == 0, checked.output
    assert "a: ok" in checked.output and a.fingerprint() in checked.output
    known.write_text(ca)
    pool = a_pool(ssh, known)
    try:
        with pytest.raises(HostKeyError) as caught:
            pool.connection("a").run("true")
    finally:
        pool.close()
    message = caught.value.summary()
    assert "offered an unknown ssh-ed25519 host key" in message
    assert "its @cert-authority lines are not used" in message, message


def test_a_daemon_with_a_cert_authority_line_serves_both_hosts(ssh: SshEnv, tmp_path: Path) -> None:
    a = ssh.servers["a"]
    known = tmp_path / "known_hosts"
    known.write_text(a_ca_line(tmp_path) + a.keyscan())
    site = scored_site(tmp_path, ssh, "echo ok", a={"known_hosts": str(known)})
    drop(site, "a.yaml", {"workflow": "w", "name": "on-a"})
    drop(site, "b.yaml", {"workflow": "w", "name": "on-b", "executor": "b"})
    d = Daemon(site)
    d.start()
    try:
        errors = tick_until_ended(d, site, {"on-a", "on-b"})
    finally:
        d.stop()
    assert not errors, errors[:1]
    assert {n: r["state"] for n, r in runs(site).items()} == {"on-a": "SUCCESS", "on-b": "SUCCESS"}


BAD_LINES = [
    ("{a} ssh-ed25519 not-base64", "its key cannot be read (InvalidHostKey)"),
    ("{a} ssh-ed25519", "too few fields"),
    ("@cert-authority {a}", "too few fields"),
    ("@marked {a} ssh-ed25519 AAAA", "unknown marker '@marked'"),
    ("{a},h\xe9llo ssh-ed25519 AAAA", "it is not UTF-8 text"),
]


@pytest.mark.parametrize(("line", "why"), BAD_LINES)
def test_a_known_hosts_line_that_cannot_be_read_is_a_config_error_naming_it(
    ssh: SshEnv, tmp_path: Path, line: str, why: str
) -> None:
    """A line about this host: not a traceback, nor a line silently passed over: the
    file, the line, what to do; `hosts check` says the same."""
    a = ssh.servers["a"]
    known = tmp_path / "known_hosts"
    line = line.format(a=a.keyscan().split()[0])
    known.write_bytes(a.keyscan().encode() + line.encode("latin-1") + b"\n")
    pool = a_pool(ssh, known)
    try:
        with pytest.raises(ConfigError) as caught:
            pool.connection("a").run("true")
    finally:
        pool.close()
    message = caught.value.summary()
    assert f"line 2 of known_hosts file {known} cannot be read: {why}" in message, message
    assert caught.value.field == "ssh.a.known_hosts"
    assert "fix or remove line 2" in message
    site = ssh_site(tmp_path / "site", ssh, hosts={"a": {"known_hosts": str(known)}})
    checked = CliRunner().invoke(main, ["--site", str(site.root), "hosts", "check", "a"])
    assert checked.exit_code == 1 and "Traceback" not in checked.output
    assert f"line 2 of known_hosts file {known} cannot be read" in checked.output


@pytest.mark.parametrize(("line", "why"), BAD_LINES)
def test_a_bad_known_hosts_line_about_other_hosts_is_skipped(
    ssh: SshEnv, tmp_path: Path, caplog: Any, line: str, why: str
) -> None:
    """The default known_hosts is the user's own, hand-edited and shared: a line about
    another host that cannot be made out is passed over with a warning, as OpenSSH does
    (found by review: it stopped every host)."""
    a = ssh.servers["a"]
    known = tmp_path / "known_hosts"
    line = line.format(a="otherhost.example")
    known.write_bytes(line.encode("latin-1") + b"\n" + a.keyscan().encode())
    pool = a_pool(ssh, known)
    caplog.set_level("WARNING", logger="flowbatch.ssh")
    try:
        pool.connection("a").run("true")
    finally:
        pool.close()
    assert any(f"line 1 of {known} skipped: {why}" in r.message for r in caplog.records)


def test_a_known_hosts_that_cannot_be_read_is_a_config_error(ssh: SshEnv, tmp_path: Path) -> None:
    """A folder in its place (root reads any file, so no permission case here): it was
    reported as the host being unreachable ("check that the host is up")."""
    known = tmp_path / "kh"
    known.mkdir()
    pool = a_pool(ssh, known)
    try:
        with pytest.raises(ConfigError) as caught:
            pool.connection("a").run("true")
    finally:
        pool.close()
    assert caught.value.reason == (
        f"ssh host a: known_hosts file {known} cannot be read: Is a directory"
    )
    assert caught.value.field == "ssh.a.known_hosts"
