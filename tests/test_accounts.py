"""Account facts (user names, a user's groups) are looked up at most every ACCOUNT_TTL
seconds per user, and looked up again after that: a user added to a group is seen."""

from __future__ import annotations

import os
import pwd
from typing import Any

import pytest

from flowbatch import accounts
from flowbatch.executors import local


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(accounts.time, "monotonic", c)
    accounts.user_name.forget()  # type: ignore[attr-defined]
    accounts.identity.forget()  # type: ignore[attr-defined]
    accounts.group.forget()  # type: ignore[attr-defined]
    return c


def test_a_users_groups_are_remembered_then_looked_up_again(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = pwd.getpwuid(os.getuid())
    asked: list[str] = []
    groups = [[me.pw_gid, 4242]]

    def grouplist(name: str, gid: int) -> list[int]:
        asked.append(name)
        return list(groups[0])

    monkeypatch.setattr(accounts.os, "getgrouplist", grouplist)
    monkeypatch.setattr(local.os, "geteuid", lambda: 0)  # run_as answers only for root
    uid = 12345 if os.getuid() == 0 else os.getuid()
    real_getpwuid = pwd.getpwuid
    monkeypatch.setattr(
        accounts.pwd,
        "getpwuid",
        lambda u: real_getpwuid(os.getuid()) if u == uid else real_getpwuid(u),
    )
    first = local.run_as(uid)
    assert first["extra_groups"] == [me.pw_gid, 4242] and first["env"]["USER"] == me.pw_name
    first["env"]["HOME"] = "/changed"  # a caller's change never reaches the next caller
    first["extra_groups"].append(1)
    clock.now += accounts.ACCOUNT_TTL - 1
    again = local.run_as(uid)
    assert asked == [me.pw_name]  # remembered
    assert again["extra_groups"] == [me.pw_gid, 4242] and again["env"]["HOME"] == me.pw_dir
    groups[0] = [me.pw_gid, 4242, 4343]  # the user joins a group
    clock.now += 2
    assert local.run_as(uid)["extra_groups"] == [me.pw_gid, 4242, 4343]
    assert asked == [me.pw_name, me.pw_name]


def test_an_unknown_user_is_run_as_its_bare_ids(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(uid: int) -> Any:
        raise KeyError(uid)

    monkeypatch.setattr(accounts.pwd, "getpwuid", missing)
    monkeypatch.setattr(local.os, "geteuid", lambda: 0)
    assert local.run_as(54321) == {"user": 54321, "group": 54321, "extra_groups": [], "env": {}}
    assert accounts.user_name(54321) == "uid54321"
    assert local.run_as(None) == {} and local.run_as(0) == {}


def test_a_renamed_user_is_seen_after_the_ttl(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["alice"]

    class Entry:
        @property
        def pw_name(self) -> str:
            return names[0]

    monkeypatch.setattr(accounts.pwd, "getpwuid", lambda uid: Entry())
    assert accounts.user_name(777) == "alice"
    names[0] = "alicia"
    assert accounts.user_name(777) == "alice"
    clock.now += accounts.ACCOUNT_TTL
    assert accounts.user_name(777) == "alicia"


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a user and a group")
def test_group_membership_by_primary_group_or_listing(clock: Clock) -> None:
    import subprocess

    for cmd in (
        ["groupadd", "-f", "fbextra"],
        ["useradd", "--create-home", "--shell", "/bin/bash", "fbrunner"],
    ):
        subprocess.run(cmd, check=False, capture_output=True)
    subprocess.run(["usermod", "-aG", "fbextra", "fbrunner"], check=True)
    user = pwd.getpwnam("fbrunner")
    assert accounts.in_group(user.pw_uid, "fbrunner")  # its primary group, not listed
    assert accounts.in_group(user.pw_uid, "fbextra")  # a listed member
    assert not accounts.in_group(user.pw_uid, "root")
    assert not accounts.in_group(user.pw_uid, "no-such-group-here")
    # an unknown user is in no group, even one whose gid equals its bare uid
    import grp

    ghost = 59321
    subprocess.run(["groupadd", "-f", "-g", str(ghost), "fbghost"], check=True)
    assert grp.getgrnam("fbghost").gr_gid == ghost
    with pytest.raises(KeyError):
        pwd.getpwuid(ghost)  # no user has that number
    assert accounts.identity(ghost).gid == ghost  # started as its bare ids...
    assert not accounts.in_group(ghost, "fbghost")  # ...but not a member of that group
    assert accounts.primary_gid(987654) == -1
    assert accounts.identity(user.pw_uid).gid == user.pw_gid
