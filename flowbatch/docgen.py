"""Generate ``docs/cli.md``, the CLI reference, from the click commands themselves.

Run ``python -m flowbatch.docgen`` after changing a command (``--check`` exits 1 when the
file is stale; the test suite runs the same comparison). The text is built from each
command's docstring and its parameters, never from a terminal-width-dependent help
screen, so it is the same on every machine.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import click

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
REGENERATE = "python -m flowbatch.docgen"

HEADER = f"""\
# flowbatch command reference

<!-- Generated from the click commands by `{REGENERATE}`: do not edit by hand. -->

Every command has `--help`. Errors are one line on stderr with a non-zero exit code;
`--debug` shows the traceback. `FLOWBATCH_SITE` sets the site folder (`--site`).
"""


def _walk(
    command: click.Command, path: list[str], parent: click.Context | None
) -> Iterator[tuple[list[str], click.Command, click.Context]]:
    ctx = click.Context(command, info_name=path[-1], parent=parent)
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, [*path, name], ctx)


def _options(command: click.Command, ctx: click.Context) -> list[str]:
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or param is command.get_help_option(ctx):  # said once, above
            continue
        opts, text = (_cell(part) for part in record)
        rows.append(f"| `{opts}` | {text} |")
    if not rows:
        return []
    return ["| option | meaning |", "|---|---|", *rows, ""]


def _cell(text: str) -> str:
    """Table-cell text: a '|' would end the cell, even inside backticks."""
    return " ".join(text.split()).replace("|", "\\|")


def _section(path: list[str], command: click.Command, ctx: click.Context) -> list[str]:
    usage = " ".join([*path, *command.collect_usage_pieces(ctx)])
    level = "#" * min(len(path) + 1, 4)
    lines = [f"{level} `{' '.join(path)}`", "", "```", usage, "```", ""]
    doc = inspect.cleandoc(command.help or "")
    if doc:
        lines += [doc.split("\f")[0].strip(), ""]
    lines += _options(command, ctx)
    if isinstance(command, click.Group):
        subs = [
            name
            for name in sorted(command.list_commands(ctx))
            if not getattr(command.get_command(ctx, name), "hidden", False)
        ]
        lines += ["Commands: " + ", ".join(f"`{s}`" for s in subs), ""]
    return lines


def render(root: click.Command | None = None, name: str = "flowbatch") -> str:
    """The Markdown reference of ``root`` (default: the ``flowbatch`` command)."""
    if root is None:
        from .cli import main as cli_main

        root = cli_main
    lines = [HEADER]
    for path, command, ctx in _walk(root, [name], None):
        lines += _section(path, command, ctx)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowbatch.docgen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=DOC, help=f"default: {DOC}")
    args = parser.parse_args(argv)
    if args.output == DOC and not (DOC.parent.parent / "pyproject.toml").is_file():
        # an installed flowbatch: DOC would be site-packages/docs/cli.md (found by review)
        parser.error("not in flowbatch's source tree: give --output FILE")
    text = render()
    current = args.output.read_text(encoding="utf-8") if args.output.exists() else None
    if args.check:
        if current != text:
            print(f"{args.output} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
