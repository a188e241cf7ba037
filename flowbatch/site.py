"""A flowbatch site: its folder, config, templates and store, opened together."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from .accounts import user_name
from .config import DEFAULT_CONFIG_TEXT, SiteConfig, load_config
from .errors import ConfigError
from .store.index import is_sqlite_url
from .store.layout import Layout, this_host
from .store.store import Store
from .store.templates import TemplateStore


class Site:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.layout = Layout(self.root)
        self.config: SiteConfig = load_config(self.root)

    @property
    def name(self) -> str:
        return self.config.site_name or self.root.name

    @property
    def shared(self) -> bool:
        """Several daemon hosts may serve this site: only with a server database (the
        embedded SQLite index is for one host)."""
        url = self.config.database
        return bool(url) and not is_sqlite_url(str(url))

    @property
    def lock_path(self) -> Path:
        """One daemon per site, or per site and host when several hosts share it."""
        if self.shared:
            return self.host_lock_path(self.host)
        return self.layout.lock

    def host_lock_path(self, host: str) -> Path:
        """The daemon lock of ``host`` on a site several hosts serve."""
        return self.root / f"daemon.{host}.lock"

    @property
    def handover_path(self) -> Path:
        """Where a daemon that lost the site's lock to another leaves word of it as it
        stops: the runs it launched after the other's start are the other's to take
        over (the other reads the tree again when it finds the file)."""
        return self.lock_path.with_suffix(".handover")

    @property
    def claimed_dir(self) -> Path:
        """Where this host's daemon keeps the requests it claimed and is working on."""
        return self.layout.claimed / self.host if self.shared else self.layout.claimed

    @property
    def boot_note(self) -> Path:
        """The boot id of the host when its daemon last claimed requests here (see
        :meth:`flowbatch.queue.Intake.rebooted`): beside the lock, not in the queue."""
        if self.shared:
            return self.root / f"claims-boot.{self.host}"
        return self.root / "claims-boot"

    @property
    def reports_pending_dir(self) -> Path:
        """One empty file per workflow whose report files this host's daemon still owes
        (see :class:`flowbatch.daemon.PendingReports`)."""
        folder = self.root / "reports-pending"
        return folder / self.host if self.shared else folder

    @cached_property
    def host(self) -> str:
        """This daemon host's name (``FLOWBATCH_HOSTNAME`` overrides it, for tests)."""
        return this_host()

    @cached_property
    def store(self) -> Store:
        return Store(self.layout, self.config.database)

    @cached_property
    def templates(self) -> TemplateStore:
        return TemplateStore(self.layout, self.config.known_variables())

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()

    @staticmethod
    def init(root: str | os.PathLike[str]) -> Site:
        """Create a site folder with a commented config and the queue/results/templates folders."""
        path = Path(root)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except PermissionError:
            parent = next((p for p in path.absolute().parents if p.exists()), path.parent)
            raise ConfigError(
                f"cannot create the site folder {path}: {parent} is not writable by "
                f"{user_name(os.geteuid())}",
                hint=f"create it first as root: install -d -o {user_name(os.geteuid())} {path}",
            ) from None
        Layout(path.resolve()).ensure()
        config = path / "flowbatch.yaml"
        if not config.exists():
            config.write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
        return Site(path)
