"""Where the effective site config comes from: defaults, ``flowbatch.yaml``, environment.

``FLOWBATCH_<KEY>`` overrides a top-level key of :class:`~flowbatch.config.SiteConfig`
and a double underscore goes one level down (``FLOWBATCH_LOCAL__CONCURRENCY=8`` is
``local: {concurrency: 8}``). The value is text that pydantic casts like a value in the
file (``8``, ``2.5``, ``true``, ``10m``); ``null`` means "unset", and a value starting
with ``[`` or ``{`` is read as a YAML flow collection (``FLOWBATCH_VARIABLES='{java:
/usr/bin/java}'``). The merged document is validated once, so an override is checked
exactly like the file, and an error names the variable it came from.

``FLOWBATCH_*`` variables whose first part names no config key (``FLOWBATCH_SITE`` is the
CLI's site folder, ``FLOWBATCH_HOSTNAME`` a host override) are not config: they are left
alone and listed by ``flowbatch config show`` as ignored, so a misspelt key is visible.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from . import yamlio
from .config import CONFIG_NAME, SiteConfig, resolve_sqlite_url
from .errors import ConfigError

PREFIX = "FLOWBATCH_"
NESTING = "__"
#: FLOWBATCH_* variables with another job, never config (even if a key of that name comes)
NOT_CONFIG = frozenset({"FLOWBATCH_SITE", "FLOWBATCH_HOSTNAME", "FLOWBATCH_CRASH_AT"})

DEFAULT = "default"
FILE = CONFIG_NAME
ENVIRONMENT = "environment"

Path_ = tuple[str, ...]


@dataclass
class Loaded:
    """The validated config and what was given where."""

    config: SiteConfig
    file: Path
    file_data: dict[str, Any]
    env: dict[Path_, str] = field(default_factory=dict)  # key path -> variable name
    ignored: list[str] = field(default_factory=list)  # FLOWBATCH_* names that are not keys
    #: ``database`` as given, before a relative SQLite path was resolved against the site
    database_written: str | None = None

    def source(self, key: Path_) -> str:
        """``environment (FLOWBATCH_X)``, ``flowbatch.yaml`` or ``default`` for ``key``."""
        for path, var in self.env.items():
            if key[: len(path)] == path:
                return f"{ENVIRONMENT} ({var})"
        node: Any = self.file_data
        for part in key:
            if not isinstance(node, dict) or part not in node:
                return DEFAULT
            node = node[part]
        return FILE

    def describe(self) -> list[dict[str, Any]]:
        """Every effective value as ``{key, value, source}``, keys dotted, in model order."""
        rows = []
        for key, value in _flatten(self.config.model_dump(mode="json")):
            rows.append({"key": ".".join(key), "value": value, "source": self.source(key)})
        return rows


def _flatten(value: Any, prefix: Path_ = ()) -> list[tuple[Path_, Any]]:
    """Leaves of nested mappings; an empty mapping is a leaf (shown as ``{}``)."""
    if isinstance(value, dict) and (value or not prefix):
        out: list[tuple[Path_, Any]] = []
        for k, v in value.items():
            out.extend(_flatten(v, (*prefix, str(k))))
        return out
    return [(prefix, value)]


def env_overrides(
    environ: Mapping[str, str], keys: Mapping[str, Any]
) -> tuple[dict[Path_, tuple[str, Any]], list[str]]:
    """``FLOWBATCH_*`` variables as key paths → (variable, value); and the ignored names."""
    found: dict[Path_, tuple[str, Any]] = {}
    ignored: list[str] = []
    for var in sorted(environ):
        if not var.startswith(PREFIX) or var in NOT_CONFIG:
            continue
        path = tuple(var[len(PREFIX) :].lower().split(NESTING))
        if path[0] not in keys or any(not part for part in path):
            ignored.append(var)
            continue
        found[path] = (var, env_value(environ[var]))
    return found, ignored


def env_value(text: str) -> Any:
    """The value of one variable: text, ``null``, or a YAML flow collection."""
    stripped = text.strip()
    if stripped in ("null", "~"):
        return None
    if stripped.startswith(("[", "{")):
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError:
            return text  # left as text: validation says what was expected
    return text


def _merge(data: dict[str, Any], path: Path_, value: Any) -> None:
    node = data
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = value


def read_file(path: Path) -> dict[str, Any]:
    """The config file as a mapping (``{}`` when there is none)."""
    if not path.exists():
        return {}
    data = yamlio.load_file(path, as_written=True) or {}
    if not isinstance(data, dict):
        raise ConfigError(
            "the site config must be a mapping",
            file=str(path),
            expected="keys such as database, executor, local, polling",
        )
    return data


def load(site: Path, environ: Mapping[str, str] | None = None) -> Loaded:
    """Read ``<site>/flowbatch.yaml``, apply ``FLOWBATCH_*`` overrides, validate."""
    path = site / CONFIG_NAME
    file_data = read_file(path)
    overrides, ignored = env_overrides(
        os.environ if environ is None else environ, SiteConfig.model_fields
    )
    data = _deep_copy(file_data)
    for key, (_, value) in overrides.items():
        _merge(data, key, value)
    env = {key: var for key, (var, _) in overrides.items()}
    try:
        config = SiteConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, path, env) from None
    written = config.database
    if written is not None:
        # a relative SQLite path is the site folder's, never the current folder's (a
        # daemon systemd starts in / opened /index.db): every user of the URL gets it
        # resolved here, from the file or from FLOWBATCH_DATABASE alike
        config = config.model_copy(update={"database": resolve_sqlite_url(written, site)})
    return Loaded(
        config=config,
        file=path,
        file_data=file_data,
        env=env,
        ignored=ignored,
        database_written=written,
    )


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _config_error(exc: ValidationError, path: Path, env: dict[Path_, str]) -> ConfigError:
    """The first problem as an error naming the key, what was expected, and where to fix it."""
    err = exc.errors()[0]
    loc = tuple(str(p) for p in err["loc"])
    key = ".".join(loc)
    var = next((v for p, v in env.items() if loc[: len(p)] == p), None)
    reason = str(err["msg"]).removeprefix("Value error, ")
    expected = None
    if err["type"] == "extra_forbidden":
        reason = f"unknown key {loc[-1]!r}"
        allowed = _allowed_keys(loc[:-1])
        expected = "one of: " + ", ".join(allowed) if allowed else None
    elif err["type"] == "missing":
        reason = f"missing key {loc[-1]!r}"
    else:
        given = err.get("input")
        if loc[:1] == ("database",) and isinstance(given, str):
            given = redact_url(given)  # never a password in an error line or a log
        reason = f"{reason}, got {given!r}"
    if var is not None:
        return ConfigError(
            reason,
            file=f"environment variable {var}",
            field=key,
            expected=expected,
            hint=f"fix or unset {var}",
        )
    return ConfigError(
        reason,
        file=str(path),
        field=key,
        expected=expected,
        hint=f"fix {key} in {CONFIG_NAME} (`flowbatch init` writes a commented example)",
    )


def _allowed_keys(loc: Path_) -> list[str]:
    """The keys of the model at ``loc`` (for 'unknown key' errors), through the maps of
    named sections too (``ssh.<host>``, ``slurm.<profile>``)."""
    model: Any = SiteConfig
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        info = getattr(model, "model_fields", {}).get(part)
        annotation = getattr(info, "annotation", None)
        if get_origin(annotation) is dict:  # a map of sections: skip the section's name
            annotation = get_args(annotation)[1]
            if not parts:
                return []
            parts.pop(0)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(getattr(model, "model_fields", {}))


def redact_url(url: str) -> str:
    """A database URL with its password hidden (for display)."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
