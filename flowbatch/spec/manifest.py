"""Find a template's files: the manifest of a template folder (seed-inventory §1.6).

A template is either a bare template file, or a folder with an optional manifest
(``flowbatch.yaml``, else flowServ's ``flowserv.json|yaml|yml``) that names the spec
file, the files to install, a description and an instructions file. Without a manifest
(or without ``specfile`` in it), the folder's ``benchmark|workflow|template`` ×
``.yaml|.yml|.json`` is the spec: flowServ declared that fallback but never used it (GAP).

Nothing here copies anything; :func:`find_source` only says what to copy, after making
sure that every path stays inside the folder (no absolute path, no ``..``, no symlink
leading out).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TemplateError
from ..yamlio import load_file
from .params import check_keys, relative_path

__all__ = ["MANIFEST_NAMES", "SPEC_NAMES", "TemplateSource", "find_source"]

#: manifest file names, in lookup order (flowbatch's own first, then flowServ's)
MANIFEST_NAMES = ("flowbatch.yaml", "flowserv.json", "flowserv.yaml", "flowserv.yml")
#: fallback spec file names, in lookup order
SPEC_NAMES = tuple(
    f"{stem}{suffix}"
    for stem in ("benchmark", "workflow", "template")
    for suffix in (".yaml", ".yml", ".json")
)
MANIFEST_KEYS = ("name", "description", "instructions", "files", "specfile")
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr"})
MAX_NAME = 512
MAX_INCLUDE_DEPTH = 8
_INCLUDE = re.compile(r"\{\{\s*([^{}\s][^{}]*?)\s*\}\}")


@dataclass
class TemplateSource:
    """What to install: the spec file, metadata, and the files to copy.

    ``files`` pairs an absolute source path with its relative target inside the
    installed template; a folder source stands for its whole tree, and a folder with
    target ``''`` is copied into the template's root.
    """

    spec_path: Path
    name: str
    description: str | None
    instructions: str | None  # the text, with {{path}} includes expanded
    files: list[tuple[Path, str]] = field(default_factory=list)
    base_dir: Path = field(default_factory=Path)
    #: whether ``name`` was given (``--name``, or the manifest's), not the folder's or the
    #: file's own: a reinstall keeps the display name an earlier install was given
    named: bool = False


def find_source(
    path: Path | str, *, specfile: str | None = None, name: str | None = None
) -> TemplateSource:
    """Describe the template at ``path`` (a folder, or a bare template file).

    ``specfile`` and ``name`` override the manifest. A ``specfile`` argument is tried as
    given (absolute, or relative to the working directory) and then relative to the
    folder, as flowServ does; paths written in a manifest are always relative to the
    folder and must stay inside it. Raises :class:`TemplateError`.
    """
    path = Path(path)
    if path.is_file():
        return _bare_file(path, specfile=specfile, name=name)
    if not path.is_dir():
        raise TemplateError(
            "no such template folder or file",
            file=str(path),
            hint="give a template folder or a template file",
        )
    base = path.resolve()
    manifest_path, doc = _read_manifest(base)
    label = str(manifest_path) if manifest_path else str(base)
    spec_path = _spec_path(base, doc, specfile=specfile, label=label)
    instructions = None
    if doc.get("instructions") is not None:
        target = _inside(base, doc["instructions"], field="instructions", label=label)
        instructions = _read_instructions(base, target, depth=0, label=label)
    excluded = {manifest_path} if manifest_path else set()
    files = (
        _manifest_files(base, doc["files"], label=label)
        if "files" in doc
        else _whole_folder(base, excluded)
    )
    for source, _ in files:
        _check_symlinks(base, source, label=label)
    return TemplateSource(
        spec_path=spec_path,
        name=_name(name if name is not None else doc.get("name", base.name), label=label),
        description=doc.get("description"),
        instructions=instructions,
        files=files,
        base_dir=base,
        named=name is not None or doc.get("name") is not None,
    )


def _bare_file(path: Path, *, specfile: str | None, name: str | None) -> TemplateSource:
    if specfile is not None:
        raise TemplateError(
            "a specfile can only be chosen inside a template folder",
            file=str(path),
            hint="give the folder, or the spec file itself",
        )
    spec = path.resolve()
    return TemplateSource(
        spec_path=spec,
        name=_name(name if name is not None else path.stem, label=str(path)),
        description=None,
        instructions=None,
        files=[],
        base_dir=spec.parent,
        named=name is not None,
    )


def _read_manifest(base: Path) -> tuple[Path | None, dict[str, Any]]:
    """The first manifest found, checked strictly; ``(None, {})`` when there is none."""
    for fname in MANIFEST_NAMES:
        candidate = base / fname
        if candidate.is_file():
            label = str(candidate)
            doc = load_file(candidate, as_written=True)
            if doc is None:
                doc = {}  # an empty manifest means 'all defaults'
            check_keys(doc, field="", file=label, allowed=MANIFEST_KEYS)
            for key in ("name", "description", "instructions", "specfile"):
                if doc.get(key) is not None and not isinstance(doc[key], str):
                    raise TemplateError("must be a string", file=label, field=key)
            return candidate, doc
    return None, {}


def _spec_path(base: Path, doc: dict[str, Any], *, specfile: str | None, label: str) -> Path:
    if specfile is not None:
        given = Path(specfile)
        if given.is_file():  # as given: absolute, or relative to the working directory
            return given.resolve()
        # else inside the folder; an error names the option, not the manifest
        spec = _inside(base, specfile, field="--specfile", label=str(base))
    elif doc.get("specfile") is not None:
        spec = _inside(base, doc["specfile"], field="specfile", label=label)
    else:
        found = next((base / n for n in SPEC_NAMES if (base / n).is_file()), None)
        if found is None:
            raise TemplateError(
                "no workflow template found",
                file=str(base),
                expected=f"a manifest with 'specfile', or one of: {', '.join(SPEC_NAMES)}",
                hint=f"manifests looked for: {', '.join(MANIFEST_NAMES)}",
            )
        spec = _inside(base, found.name, field="specfile", label=label)
    if not spec.is_file():
        raise TemplateError(
            f"the template file {spec} does not exist", file=label, field="specfile"
        )
    return spec


def _inside(base: Path, value: Any, *, field: str, label: str, allow_empty: bool = False) -> Path:
    """Resolve a manifest path under ``base``; refuse ``..``, absolute paths and symlinks
    that lead out of the folder."""
    rel = relative_path(value, field=field, file=label, allow_empty=allow_empty)
    resolved = (base / rel).resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise TemplateError(
            f"path {value!r} leads out of the template folder (through a symlink)",
            file=label,
            field=field,
        )
    return resolved


def _manifest_files(base: Path, items: Any, *, label: str) -> list[tuple[Path, str]]:
    if not isinstance(items, list):
        raise TemplateError("must be a list of {source, target}", file=label, field="files")
    files: list[tuple[Path, str]] = []
    for i, item in enumerate(items):
        path = f"files[{i}]"
        check_keys(item, field=path, file=label, allowed=("source", "target"), required=("source",))
        source = _inside(
            base, item["source"], field=f"{path}.source", label=label, allow_empty=True
        )
        if not source.exists():
            raise TemplateError(
                f"file {item['source']!r} does not exist", file=label, field=f"{path}.source"
            )
        # flowServ's code defaults the target to the source (its docs say '': DRIFT).
        target = relative_path(
            item.get("target", item["source"]),
            field=f"{path}.target",
            file=label,
            allow_empty=True,
        )
        if not target and not source.is_dir():
            raise TemplateError(
                "a file needs a target path (only a folder can go to the root, '')",
                file=label,
                field=f"{path}.target",
            )
        files.append((source, target))
    return files


def _whole_folder(base: Path, excluded: set[Path]) -> list[tuple[Path, str]]:
    """No ``files`` in the manifest: every entry of the folder but the manifest and VCS
    folders."""
    entries: list[tuple[Path, str]] = []
    for entry in sorted(base.iterdir()):
        if entry.name in VCS_DIRS or entry in excluded:
            continue
        entries.append((entry, entry.name))
    return entries


def _check_symlinks(base: Path, source: Path, *, label: str) -> None:
    """A symlink anywhere under a source must not lead out of the template folder: the
    installer would copy what it points at."""
    candidates = [source]
    if source.is_dir() and not source.is_symlink():
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames[:] = [d for d in dirnames if d not in VCS_DIRS]
            candidates.extend(Path(dirpath) / n for n in [*dirnames, *filenames])
    for candidate in candidates:
        if candidate.is_symlink():
            target = candidate.resolve()
            if target != base and not target.is_relative_to(base):
                raise TemplateError(
                    f"symlink {candidate.relative_to(base)} leads out of the template folder",
                    file=label,
                    hint="copy the file into the folder instead of linking to it",
                )


def _read_instructions(base: Path, path: Path, *, depth: int, label: str) -> str:
    """The instructions text with ``{{relative/path}}`` includes expanded (paths relative
    to the template folder), to a bounded depth so that a cycle cannot loop. A ``{{...}}``
    that names no file is left as it is; one that leads out of the folder is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read instructions file {path}: {exc}", file=label)

    def include(m: re.Match[str]) -> str:
        if depth >= MAX_INCLUDE_DEPTH:
            raise TemplateError(
                f"instructions includes nest deeper than {MAX_INCLUDE_DEPTH} levels",
                file=str(path),
                hint="check for a file that includes itself",
            )
        target = _inside(base, m.group(1), field="instructions", label=str(path))
        if not target.is_file():
            return m.group(0)  # not a file: literal text, e.g. a Jinja example in the docs
        return _read_instructions(base, target, depth=depth + 1, label=label).strip()

    return _INCLUDE.sub(include, text).strip()


def _name(value: Any, *, label: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise TemplateError(
            f"invalid template name {value!r}",
            file=label,
            field="name",
            expected=f"a non-empty name of at most {MAX_NAME} characters",
        )
    return value
