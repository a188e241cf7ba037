"""Installed workflow templates: ``<site>/templates/<id>/``.

Each install of a template is a version, named by a hash of its content, kept in its own
folder (``<id>/<version>/spec.<ext>`` and ``files/``); ``workflow.json`` names the current
version. Reinstalling the same content is a no-op; new content adds a version and makes it
current, so runs of the old one still find the template they ran.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NotFoundError, TemplateError
from ..progress import Progress
from ..runs import now_iso
from ..spec.manifest import TemplateSource
from ..spec.model import Template
from ..spec.template import load_template
from . import atomic
from .layout import Layout, checked_id
from .owner import open_folder_in

#: a folder this process just made, opened never through a link
_MADE = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_at(name: str, folder: int) -> None:
    """Remove ``name`` in the open folder ``folder``, whatever it is (a link: the link
    alone), if it is there."""
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        shutil.rmtree(name, dir_fd=folder)
    except PermissionError:  # Linux says EPERM for a folder
        shutil.rmtree(name, dir_fd=folder)


META = "workflow.json"
#: names in a run folder that flowbatch writes itself; template files may not use them
RESERVED = frozenset(
    {"run.json", "run.sh", "request.yaml", "logs", "status", "attempts", "index.html"}
)


@dataclass
class Installed:
    id: str
    name: str
    version: str
    created: bool  # False: this content was installed already
    template: Template
    previous: str | None = None  # the version that was current before (None: a new id)
    #: the name, description or instructions the leaderboard shows changed
    shown_changed: bool = False


def _ancestors(dirpath: str, source: Path) -> list[str]:
    """The real paths of the folders from ``source`` down to ``dirpath``'s parent."""
    out = []
    path = Path(dirpath)
    while path != source and source in path.parents:
        path = path.parent
        out.append(os.path.realpath(path))
    return out


#: the most folders and files an install walks in a template's folders: links that
#: branch (d2/{x,y} -> d1, d1/{x,y} -> d0, ...) made an install copy 2^n trees (found by
#: review); a template is code and a few data files
MAX_TEMPLATE_ENTRIES = 20_000


def _walk(source: Path, target: str, walked: list[int]) -> list[tuple[Path, str]]:
    """The files of ``source`` (a file, or a folder walked through its links), each with
    its target; ``walked``: the folders and files the install has walked so far, all its
    entries counted together (found by review: a bound per entry let 20 links to one
    tree copy 20 times as much)."""
    if source.is_file():
        return [(source, target)]
    out: list[tuple[Path, str]] = []
    # a symlinked folder inside is followed, as one at the top is (os.walk's default
    # dropped it without a word: found by review); a link back up is refused
    for dirpath, dirnames, filenames in os.walk(source, followlinks=True):
        if os.path.realpath(dirpath) in _ancestors(dirpath, source):
            raise TemplateError(
                f"the folder {Path(dirpath).relative_to(source).as_posix()!r} of the template "
                "is a symbolic link to a folder that holds it (a loop)",
                file=str(source),
                hint="link to the folder's contents, or copy them",
            )
        dirnames[:] = sorted(d for d in dirnames if d not in {".git", ".hg", ".svn", "__pycache__"})
        walked[0] += 1 + len(filenames)
        if walked[0] > MAX_TEMPLATE_ENTRIES:
            raise TemplateError(
                f"the template's folder {source.name!r} holds more than "
                f"{MAX_TEMPLATE_ENTRIES} folders and files (its symbolic links followed)",
                file=str(source),
                hint="keep data out of the template (runs can read a shared path), and no "
                "links that lead to the same folders many times",
            )
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            rel = path.relative_to(source).as_posix()
            out.append((path, f"{target}/{rel}" if target else rel))
    return out


def _file_list(src: TemplateSource) -> list[tuple[Path, str]]:
    files: list[tuple[Path, str]] = []
    walked = [0]
    for path, target in src.files:
        files.extend(_walk(path, target.strip("/"), walked))
    for _, target in files:
        top = target.split("/", 1)[0]
        if top in RESERVED:
            raise TemplateError(
                f"template file {target!r} uses a name flowbatch reserves in run folders",
                file=str(src.spec_path),
                expected=f"none of: {', '.join(sorted(RESERVED))}",
                hint="rename it or give it another target in the manifest",
            )
    return sorted(files, key=lambda item: item[1])


def check_shipped(template: Template, files: list[tuple[Path, str]], spec: Path) -> None:
    """Every input file the template lists (``files.inputs``, not a ``$[[parameter]]``)
    and every file parameter's default is among the files it ships (or in a folder of
    them): else it installed, and every run failed ("can't open file ...", found by
    review)."""
    shipped = {target for _, target in files}
    folders = {t.rsplit("/", 1)[0] for t in shipped if "/" in t}
    folders |= {f.rsplit("/", i)[0] for f in list(folders) for i in range(1, f.count("/") + 1)}
    # a file parameter's target is there once the run is made (from its request, else
    # its default): a template lists it among its inputs, as flowServ's do (found by
    # review); its default must be shipped
    brought = {_rel(p.target) for p in template.parameters if p.dtype == "file" and p.target}

    def missing(path: str, *, given: bool = False) -> bool:
        rel = _rel(path)
        if given and rel in brought:
            return False
        return bool(rel) and rel not in shipped and rel not in folders

    where = f"the template's folder ({spec.parent})"
    for i, path in enumerate(template.workflow.input_files):
        if "$" in path or "{{" in path or any(c in path for c in "*?["):
            continue  # a parameter's file (either dialect), or a pattern
        if missing(path, given=True):
            raise TemplateError(
                f"the input file {path!r} it lists is not among its files",
                file=str(spec),
                field=f"{template.workflow.inputs_field}[{i}]",
                hint=f"add it to {where}, or to the manifest's `files`",
            )
    for index, param in enumerate(template.parameters):
        default = param.default
        if (
            param.dtype == "file"
            and param.has_default
            and isinstance(default, str)
            and "$" not in default
            and missing(default)
        ):
            raise TemplateError(
                f"the default file {default!r} of parameter {param.name!r} is not among its files",
                file=str(spec),
                field=f"parameters[{index}].defaultValue",
                hint=f"add it to {where}, or to the manifest's `files`",
            )


def _rel(path: str) -> str:
    return path.strip().removeprefix("./").rstrip("/")


def content_hash(spec_path: Path, files: list[tuple[Path, str]]) -> str:
    """The version id: the spec's and every file's content, target and executable bit (a
    script made executable is a new version, as runs copy the modes; the bit is hashed
    only when set, so a template without executable files keeps its earlier id)."""
    h = hashlib.sha256()
    h.update(b"spec\0" + spec_path.read_bytes())
    for path, target in files:
        h.update(b"\0file\0" + target.encode() + b"\0" + path.read_bytes())
        if path.stat().st_mode & 0o111:
            h.update(b"\0executable")
    return h.hexdigest()[:12]


def default_id(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")[:32]
    return slug or "workflow"


class TemplateStore:
    def __init__(self, layout: Layout, variables: dict[str, str]) -> None:
        self.layout = layout
        self.variables = variables
        self._cache: dict[tuple[str, str], Template] = {}
        #: workflow id -> (mtime_ns, size, inode, meta): read again when the file changed
        #: (an install replaces it), not for every request of a burst
        self._meta: dict[str, tuple[int, int, int, dict[str, Any]]] = {}

    def meta(self, workflow_id: str) -> dict[str, Any]:
        path = self.layout.template_dir(workflow_id) / META
        try:
            st = os.stat(path)
            cached = self._meta.get(workflow_id)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if cached is not None and cached[:3] == stamp:
                return dict(cached[3])
            meta = dict(json.loads(path.read_text(encoding="utf-8")))
            self._meta[workflow_id] = (*stamp, meta)
            return dict(meta)
        except FileNotFoundError:
            raise NotFoundError(
                f"unknown workflow {workflow_id!r}",
                hint="see `flowbatch workflows list`, or install it with `flowbatch install DIR`",
            ) from None

    def list_ids(self) -> list[str]:
        """The installed workflows. A dot-name is never one (``.<id>.uninstalling``: a
        template an interrupted ``uninstall`` left, finished by running it again)."""
        if not self.layout.templates.is_dir():
            return []
        return sorted(
            p.name
            for p in self.layout.templates.iterdir()
            if not p.name.startswith(".") and (p / META).is_file()
        )

    def install(
        self,
        src: TemplateSource,
        *,
        workflow_id: str | None = None,
        name: str | None = None,
        progress: Progress | None = None,
    ) -> Installed:
        """Validate ``src`` fully, then copy it in as a new version (or reuse an equal one).

        ``progress`` counts the files copied (a progress line on a terminal)."""
        from ..render import check_template  # render depends on spec; keep import local

        template = load_template(src.spec_path, known_variables=self.variables)
        check_template(template, self.variables)
        files = _file_list(src)
        check_shipped(template, files, src.spec_path)
        name = name or src.name
        wf_id = checked_id(workflow_id or default_id(name), "workflow")
        version = content_hash(src.spec_path, files)
        wf_dir = self.layout.template_dir(wf_id)
        version_dir = wf_dir / version
        meta_path = wf_dir / META
        meta: dict[str, Any] = (
            json.loads(meta_path.read_text(encoding="utf-8"))
            if meta_path.exists()
            else {"id": wf_id, "versions": []}
        )
        previous = meta.get("current")
        created = not version_dir.is_dir()
        owner = self.layout.owner
        if created:
            tmp = wf_dir / f".{version}.tmp"

            def fill(base: Path) -> None:
                (base / "files").mkdir(parents=True)
                shutil.copyfile(src.spec_path, base / f"spec{_spec_suffix(src.spec_path)}")
                if progress is not None:
                    progress.total = len(files)
                for path, target in files:
                    dest = base / "files" / target
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dest)
                    if progress is not None:
                        progress.advance()

            if owner is None:
                wf_dir.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)
                fill(tmp)
                os.replace(tmp, version_dir)
            else:
                self._fill_for_owner(wf_dir, tmp.name, version, fill)
            meta["versions"].append({"version": version, "installed_at": now_iso()})
        if not src.named and meta.get("name"):
            name = meta["name"]  # a display name given before stays, with no new one
        shown = {"name": name, "description": src.description, "instructions": src.instructions}
        shown_changed = any(meta.get(k) != v for k, v in shown.items())
        meta.update(
            {
                "id": wf_id,
                **shown,
                "current": version,
                "has_results": template.results is not None,
            }
        )
        if owner is None:
            atomic.write_json(meta_path, meta)
        else:  # into the folder, not through a link the owner put in its place
            folder = self._open_for_owner(wf_dir, make=False)
            try:
                atomic.write_json(META, meta, dir_fd=folder)
            finally:
                os.close(folder)
        self._cache[(wf_id, version)] = template
        return Installed(wf_id, name, version, created, template, previous, shown_changed)

    def _fill_for_owner(
        self, wf_dir: Path, tmp: str, version: str, fill: Callable[[Path], None]
    ) -> None:
        """Root (the API in root's process) on a site another user owns: make the
        version ``version`` in the workflow's folder ``wf_dir``, filled by ``fill`` in
        ``tmp`` there. ``wf_dir`` is made the owner's (whose install, retire and
        uninstall failed on root's); the version is given to them once filled, never
        while root writes into it (:meth:`SiteOwner.give_tree`). ``wf_dir`` is the
        owner's, and the version's name is the hash of the template's content, which
        whoever has the template can work out: a link put at ``tmp`` led root's writes
        where the owner chose (found by review). So ``wf_dir`` is opened through no link
        below the site folder, ``tmp`` made there by root (nothing of the owner's is
        taken for it), and filled through its descriptor (``/proc/self/fd``): the
        owner cannot write in a folder of root's, nor swap the one it writes in."""
        owner = self.layout.owner
        assert owner is not None
        folder = self._open_for_owner(wf_dir, make=True)
        try:
            _remove_at(tmp, folder)  # a leftover of a cut-short install, or the owner's
            os.mkdir(tmp, 0o755, dir_fd=folder)  # FileExistsError: put there meanwhile
            top = os.open(tmp, _MADE, dir_fd=folder)
            try:
                if os.fstat(top).st_uid != os.geteuid():
                    raise TemplateError(f"{wf_dir / tmp} was replaced while it was made")
                fill(Path(f"/proc/self/fd/{top}"))
            finally:
                os.close(top)
            owner.give_tree(wf_dir / tmp)
            os.replace(tmp, version, src_dir_fd=folder, dst_dir_fd=folder)
        finally:
            os.close(folder)

    def _open_for_owner(self, wf_dir: Path, *, make: bool) -> int:
        """The workflow's folder ``wf_dir`` opened through no link below the site
        folder (:func:`~flowbatch.store.owner.open_folder_in`), for root on a site
        another user owns."""
        try:
            return open_folder_in(self.layout.root, wf_dir, self.layout.owner, make=make)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            raise TemplateError(
                f"{wf_dir} or a folder on the way to it from the site folder is a link: "
                "root does not write through one on a site another user owns",
                file=str(wf_dir),
                expected="a folder of the site's own",
                hint="replace the link with the folder it leads to (or remove it), or "
                "install as the site's owner (the flowbatch program does)",
            ) from None

    def forget(self, workflow_id: str, version: str) -> None:
        """Drop what is kept in memory of a version that was removed (a retire)."""
        self._cache.pop((workflow_id, version), None)
        self._meta.pop(workflow_id, None)

    def version_dir(self, workflow_id: str, version: str) -> Path:
        return self.layout.template_dir(workflow_id) / checked_id(version, "version")

    def load(self, workflow_id: str, version: str | None = None) -> tuple[Template, str]:
        """The parsed template of a version (default: the current one) and that version."""
        version = version or self.meta(workflow_id)["current"]
        key = (workflow_id, version)
        if key not in self._cache:
            vdir = self.version_dir(workflow_id, version)
            specs = sorted(vdir.glob("spec.*"))
            if not specs:
                raise NotFoundError(
                    f"workflow {workflow_id!r} has no version {version!r}",
                    hint=f"see its versions with `flowbatch workflows show {workflow_id}` "
                    "(an old one may have been retired); leave `version:` out for the "
                    "current one",
                )
            self._cache[key] = load_template(specs[0], known_variables=self.variables)
        return self._cache[key], version

    def files_dir(self, workflow_id: str, version: str) -> Path:
        return self.version_dir(workflow_id, version) / "files"


def _spec_suffix(path: Path) -> str:
    return ".json" if path.suffix.lower() == ".json" else ".yaml"
