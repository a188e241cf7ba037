"""Commands for the people who install and run a site: ``config``, ``schema``, ``doctor``.

They live beside :mod:`flowbatch.cli` (which imports this module to register them) to keep
that file small. None of them opens the site the usual way: ``config show`` and
``doctor`` must work on a site whose config is broken, and ``schema`` needs no site.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .cli import Context, _echo_json, _table, echo, main, pass_ctx


@main.group()
def config() -> None:
    """The site configuration (flowbatch.yaml and FLOWBATCH_* variables)."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def config_show(obj: Context, as_json: bool) -> None:
    """Print the effective config and where each value comes from: default,
    flowbatch.yaml, or an environment variable (FLOWBATCH_LOCAL__CONCURRENCY=8 sets
    local.concurrency). Passwords in database URLs are hidden."""
    from .configsrc import load, redact_url

    loaded = load(Path(obj.site_dir))
    rows = loaded.describe()
    for row in rows:
        if row["key"] == "database" and isinstance(row["value"], str):
            row["value"] = redact_url(row["value"])
    if as_json:
        _echo_json({"file": str(loaded.file), "values": rows, "ignored": loaded.ignored})
        return
    echo(f"# {loaded.file}{'' if loaded.file.exists() else ' (absent: defaults)'}")
    _table([{**r, "value": _show(r["value"])} for r in rows], ["key", "value", "source"])
    for var in loaded.ignored:
        echo(f"# ignored: {var} (not a config key)")


def _show(value: Any) -> str:
    return "null" if value is None else value if isinstance(value, str) else json.dumps(value)


@main.command()
@click.argument("kind", type=click.Choice(["template", "request", "site"]))
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write to a file, not stdout."
)
def schema(kind: str, output: str | None) -> None:
    """Print the JSON Schema of a template, a request or the site config (flowbatch.yaml).

    Editors use it to complete and check the YAML: start a file with
    `# yaml-language-server: $schema=<path or URL of the schema>`."""
    from .spec.schema import schema_text

    text = schema_text(kind)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        echo(text, nl=False)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def doctor(obj: Context, as_json: bool) -> None:
    """Check the site: config, folders, index, templates, executors, daemon.

    Exits 1 when a check fails (warnings do not)."""
    import logging

    from .doctor import diagnose, failed

    # the checks' own log lines (an SSH host's "retrying in 0.5 s") came before the
    # table on stderr (found by review): the table says how each check ended
    quiet = logging.NullHandler()
    logger = logging.getLogger("flowbatch")
    logger.addHandler(quiet)
    try:
        checks = diagnose(Path(obj.site_dir))
    finally:
        logger.removeHandler(quiet)
    if as_json:
        _echo_json([c.as_dict() for c in checks])
    else:
        _table([c.as_dict() for c in checks], ["check", "status", "detail"])
    if failed(checks):
        raise click.exceptions.Exit(1)
