"""One error hierarchy for flowbatch.

Every error a user can cause carries what a person needs to act on it: the file, the
place inside it (a dotted/indexed path such as ``parameters[2].dtype``), what was
expected, and what to do. The CLI catches :class:`FlowbatchError` once and prints
:meth:`FlowbatchError.summary`; the queue writes :meth:`FlowbatchError.to_dict` into the
``<name>.error.yaml`` beside a rejected request.
"""

from __future__ import annotations

from typing import Any


class FlowbatchError(Exception):
    """Base of every error flowbatch raises on purpose."""

    kind = "error"
    #: a render error for a ``${name}`` that names nothing: that name (callers may know
    #: where it is defined, e.g. on another executor)
    unknown_variable: str | None = None

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        field: str | None = None,
        expected: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.file = file
        self.field = field
        self.expected = expected
        self.hint = hint

    def at(self, *, file: str | None = None, prefix: str | None = None) -> FlowbatchError:
        """Fill in the file, and prefix the field path, as the error travels up."""
        if file and not self.file:
            self.file = file
        if prefix:
            if not self.field:
                self.field = prefix
            elif self.field.startswith("["):
                self.field = f"{prefix}{self.field}"
            else:
                self.field = f"{prefix}.{self.field}"
        return self

    def summary(self) -> str:
        """One line: ``file: field: reason (expected ...). hint``."""
        parts = []
        if self.file:
            parts.append(str(self.file))
        if self.field:
            parts.append(self.field)
        head = ": ".join([*parts, self.reason])
        if self.expected:
            head += f" (expected {self.expected})"
        if self.hint:
            head += f". {self.hint}"
        return head

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.kind, "reason": self.reason}
        for key in ("file", "field", "expected", "hint"):
            value = getattr(self, key)
            if value is not None:
                out[key] = str(value)
        return out

    def __str__(self) -> str:
        return self.summary()


class InputError(FlowbatchError):
    """A file a user wrote (YAML, JSON) cannot be read: size, syntax, duplicates, aliases."""

    kind = "input"


class TemplateError(FlowbatchError):
    """A workflow template or manifest is invalid."""

    kind = "template"


class ArgumentError(FlowbatchError):
    """A run argument does not fit its parameter declaration."""

    kind = "argument"


class RequestError(FlowbatchError):
    """A run request is invalid (beyond its arguments): unknown workflow, bad field."""

    kind = "request"


#: how a template's render says a parameter it uses has no value (no argument, no default)
MISSING_ARGUMENT = "missing argument for parameter"


class MissingArgument(RequestError):
    """A parameter the template uses has neither a value in the request nor a default:
    the request's to give (it named the template's field, which the participant cannot
    change: found by review)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no value for parameter {name!r}: the request gives none, and the template "
            "uses it with no default",
            field=f"arguments.{name}",
            hint=f"give `{name}:` a value under the request's `arguments:`",
        )
        self.param = name


class ConfigError(FlowbatchError):
    """The site configuration is invalid."""

    kind = "config"


class RenderError(FlowbatchError):
    """A template cannot be expanded into a run script for the given arguments."""

    kind = "render"


class StateError(FlowbatchError):
    """A run state change that the state machine does not allow."""

    kind = "state"


class NotFoundError(FlowbatchError):
    """An unknown run, workflow or file."""

    kind = "not-found"


class ResultError(FlowbatchError):
    """A run's result file is missing or does not fit the result schema."""

    kind = "result"


class ExecutorError(FlowbatchError):
    """An executor could not launch, poll, cancel or collect a run."""

    kind = "executor"


class ExecutorUnavailable(ExecutorError):
    """The executor cannot take a run right now (host unreachable, scheduler down): the
    run stays PENDING and is tried again at a later tick."""


class IndexError_(FlowbatchError):
    """The index database is missing, corrupt or at another schema version."""

    kind = "index"
