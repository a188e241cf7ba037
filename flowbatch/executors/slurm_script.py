"""The Slurm batch script: rendered by a pure function from a Jinja2 template.

The default template ships with the package (``flowbatch/data/sbatch.sh.j2``); a site
overrides it with ``<site>/sbatch.sh.j2`` (``site-config/sbatch.sh.j2`` is a commented
example). The template is the site admin's text; every value in it comes from the
site config or is validated (resources), and values that reach ``#SBATCH`` lines must be
one word: sbatch splits those lines itself, with no shell to quote for.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from importlib import resources as package_data
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, ExecutorError
from ..render.script import LOGS_DIR, shell_quote
from ..text import one_line

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_NAME = "sbatch.sh.j2"
ARRAY_TEMPLATE_NAME = "sbatch-array.sh.j2"  # a sweep's job array (one task per run)
BATCH_NAME = "sbatch.sh"  # the rendered script, kept in the run folder for diagnosis
_ONE_WORD = re.compile(r"[^\s\x00-\x1f\x7f]+\Z")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass
class BatchJob:
    """Everything the batch script template may use."""

    job_name: str
    site: str
    run_id: str
    run_dir: str  # absolute, as the compute node sees it
    output: str
    error: str
    script: str = "run.sh"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None  # Slurm's D-HH:MM:SS
    cpus: int | None = None
    mem: str | None = None
    gpus: int | None = None
    extra: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)


@dataclass
class ArrayTask:
    """One run of a job array: ``$SLURM_ARRAY_TASK_ID`` ``index`` runs in ``run_dir``."""

    index: int
    run_id: str
    run_dir: str


@dataclass
class BatchArray(BatchJob):
    """A job array of a sweep's runs. ``run_dir`` is the array's own folder (its script,
    and one symlink per task to the task's run folder, so that ``output``/``error`` can
    name each run's ``logs/`` with Slurm's ``%a``); ``run_id`` is the sweep's id."""

    array: str = ""  # sbatch --array value, e.g. 0-19%4
    tasks: list[ArrayTask] = field(default_factory=list)


def job_name(site: str, run_id: str) -> str:
    """``fb-<site>-<run_id>``: tags the site and the run, so that a job submitted just
    before a crash is found again by name (``squeue --name``)."""
    return f"fb-{_NAME_CHARS.sub('_', site)[:40]}-{run_id}"


def slurm_time(seconds: float) -> str:
    """Seconds as Slurm's ``D-HH:MM:SS`` (rounded up to whole seconds)."""
    total = math.ceil(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def log_paths(run_dir: str) -> tuple[str, str]:
    """Slurm's own stdout/stderr of the job (``%j`` is the job id), under ``logs/``."""
    base = f"{run_dir.rstrip('/')}/{LOGS_DIR}"
    return f"{base}/slurm-%j.out", f"{base}/slurm-%j.err"


def array_log_paths(array_dir: str) -> tuple[str, str]:
    """An array task's stdout/stderr: ``<array dir>/<task>/logs/slurm-<array id>_<task>``,
    where ``<array dir>/<task>`` is a symlink to the task's run folder."""
    base = f"{array_dir.rstrip('/')}/%a/{LOGS_DIR}"
    return f"{base}/slurm-%A_%a.out", f"{base}/slurm-%A_%a.err"


def _environment() -> SandboxedEnvironment:
    # Jinja2 here, not at import: every site has a Slurm executor, few submit to it
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    env.filters["sq"] = lambda value: shell_quote(str(value))
    return env


def render_batch_script(job: BatchJob, template_text: str, *, source: str = TEMPLATE_NAME) -> str:
    """The batch script's text for ``job`` (pure: same inputs, same text)."""
    from jinja2 import TemplateError

    _check_words(job)
    values = asdict(job)
    # in a comment line: a newline in it made lines of the script (found by review)
    values["site"] = one_line(job.site)
    try:
        return _environment().from_string(template_text).render(**values)
    except TemplateError as exc:
        raise ConfigError(
            f"the batch script template cannot be rendered: {exc}",
            file=source,
            hint="fix the template (see site-config/sbatch.sh.j2 for the variables)",
        ) from None


def _check_words(job: BatchJob) -> None:
    for key in (
        "job_name",
        "run_dir",
        "output",
        "error",
        *(["array"] if isinstance(job, BatchArray) else []),
    ):
        value = getattr(job, key)
        if not _ONE_WORD.match(value):
            raise ExecutorError(
                f"{key} {value!r} cannot go on an #SBATCH line (spaces or control characters)",
                hint="keep the site folder's path free of spaces",
            )


def default_template(name: str = TEMPLATE_NAME) -> str:
    """The batch script template shipped in the package (``name``: :data:`TEMPLATE_NAME`
    or :data:`ARRAY_TEMPLATE_NAME`)."""
    return (package_data.files("flowbatch") / "data" / name).read_text(encoding="utf-8")


def load_template(site_root: Path | None, name: str = TEMPLATE_NAME) -> tuple[str, str]:
    """(text, source name): ``<site>/<name>`` when present, else the default."""
    if site_root is not None:
        override = site_root / name
        if override.is_file():
            return override.read_text(encoding="utf-8"), str(override)
    return default_template(name), f"flowbatch/data/{name}"
