"""A flowbatch site: its folder, config, templates and store, opened together."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from .config import DEFAULT_CONFIG_TEXT, SiteConfig, load_config
from .store.layout import Layout
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

    @cached_property
    def store(self) -> Store:
        return Store(self.layout, self.config.database)

    @cached_property
    def templates(self) -> TemplateStore:
        return TemplateStore(self.layout, self.config.all_variables())

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()

    @staticmethod
    def init(root: str | os.PathLike[str]) -> Site:
        """Create a site folder with a commented config and the queue/results/templates folders."""
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        Layout(path.resolve()).ensure()
        config = path / "flowbatch.yaml"
        if not config.exists():
            config.write_text(DEFAULT_CONFIG_TEXT, encoding="utf-8")
        return Site(path)
