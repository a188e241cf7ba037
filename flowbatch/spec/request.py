"""The run request a user drops into the queue."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import RequestError
from .resources import parse_resources

#: control characters (C0, DEL, C1), line and paragraph separators, and the invisible
#: ones that change how the text around them shows: zero-width characters and bidi
#: controls (found by review: a name with U+202E made the run page show another group)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _text(value: Any, what: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    if not value.strip() or len(value) > limit or _CONTROL.search(value):
        raise ValueError(
            f"{what} must be 1-{limit} printable characters on one line (no control, "
            "zero-width or text-direction characters)"
        )
    return value


class Request(BaseModel):
    """A run request (``queue/*.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(
        description="Id of an installed workflow template (`flowbatch workflows list` names them)."
    )
    group: str | None = Field(
        default=None,
        description="Group (team) the run counts for; default: the file owner's user name.",
    )
    name: str | None = Field(default=None, description="A label for the run.")
    arguments: dict[str, Any] | list[Any] | None = Field(
        default=None,
        description="Parameter name -> value, or flowServ's list form [{name, value}]. A file "
        "parameter takes a path relative to the request file (inside its folder).",
    )
    executor: str | None = Field(
        default=None, description="Executor to run on (default: the template's or the site's)."
    )
    version: str | None = Field(
        default=None, description="Template version (default: the current one)."
    )
    sweep: dict[str, list[Any]] | None = Field(
        default=None,
        description="Parameter name -> list of values: one run per combination (a cartesian "
        "product with `arguments` as the fixed part); identical combinations run once. "
        "Resubmitting a sweep skips the points that already ran on the same template version "
        "for the same group.",
    )
    retry_failed: bool = Field(
        default=False, description="With a resubmitted sweep: run failed points again."
    )
    retries: int | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Further attempts after an infrastructure failure (a lost host or "
        "process, a node failure, preemption); never after the command's own non-zero exit.",
    )
    resources: dict[str, Any] | None = Field(
        default=None,
        description="Scheduler resources {time, cpus, mem, gpus, partition}; each key set "
        "here wins over the template's.",
    )

    @field_validator("workflow", mode="before")
    @classmethod
    def _workflow(cls, value: Any) -> str:
        if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", value):
            raise ValueError("workflow must be an installed workflow id (letters, digits, _ . -)")
        return value

    @field_validator("resources", mode="before")
    @classmethod
    def _resources(cls, value: Any) -> Any:
        parse_resources(value)  # ResourceError is a ValueError naming the key
        return value

    @field_validator("arguments", mode="before")
    @classmethod
    def _arguments(cls, value: Any) -> Any:
        # Checked here so the error names `arguments`, not pydantic's union branches
        # (`arguments.dict[str,any].1.[key]`: "Input should be a valid string").
        if value is None or isinstance(value, list):
            return value
        if not isinstance(value, dict):
            raise ValueError(
                "arguments must be a mapping of parameter name -> value "
                "(or flowServ's list of {name, value})"
            )
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"an argument name must be a parameter name (text), not {key!r}")
        return value

    @field_validator("group", mode="before")
    @classmethod
    def _group(cls, value: Any) -> str | None:
        return _text(value, "group", 128)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str | None:
        return _text(value, "name", 256)


class CancelRequest(BaseModel):
    """``cancel: RUN_ID`` dropped into the queue (what ``flowbatch runs cancel`` writes)."""

    model_config = ConfigDict(extra="forbid")

    cancel: str
    reason: str | None = None


def parse_request(doc: Any, *, file: str) -> Request | CancelRequest:
    if not isinstance(doc, dict):
        raise RequestError(
            f"a request must be a YAML mapping, not {_kind(doc)}",
            file=file,
            expected="keys workflow, group, name, arguments",
            hint="flowbatch schema request prints the request format (a JSON schema)",
        )
    model: type[Request] | type[CancelRequest] = CancelRequest if "cancel" in doc else Request
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors()
        # a mistyped key first: "unknown field 'workflw'" says more than "missing 'workflow'"
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        field = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        hint = None
        if err["type"] == "extra_forbidden":
            msg = f"unknown field {field!r}"
            expected = "one of: " + ", ".join(model.model_fields)
        elif err["type"] == "missing":
            msg = f"missing field {field!r}"
            expected = None
            top = model.model_fields.get(str(err["loc"][0])) if err["loc"] else None
            # what the field is for, as for a wrong value (found by review: no hint)
            hint = top.description if top is not None else None
        else:
            # pydantic's "Input should be a valid integer": what was given, what is wanted
            # in words a request's author uses, and what the field is for
            expected = _EXPECTED.get(err["type"].split("_", 1)[0])
            if expected is not None:
                msg = f"got {_shown(err.get('input'))}"
            top = model.model_fields.get(str(err["loc"][0])) if err["loc"] else None
            hint = top.description if top is not None else None
        raise RequestError(msg, file=file, field=field, expected=expected, hint=hint) from None


#: pydantic's error types (their first word) in the words of a request's author
_EXPECTED = {
    "int": "a whole number, e.g. 2",
    "float": "a number, e.g. 0.5",
    "bool": "true or false",
    "string": "text (in quotes if it would read as a number or true/false)",
    "list": "a list: [a, b] or one '- item' per line",
    "dict": "a mapping: name: value, one per line",
}


def _kind(doc: Any) -> str:
    """What a request document that is no mapping is, in its author's words."""
    if doc is None:
        return "an empty document (null)"
    if isinstance(doc, list):
        return "a list"
    return _shown(doc)


def _shown(value: Any) -> str:
    """A given value as the error shows it: its YAML kind and at most 60 characters."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    kind = {dict: "a mapping", list: "a list", str: "text", bool: "a boolean"}.get(type(value))
    if kind is None and isinstance(value, int | float):
        kind = "a number"
    return f"{kind} {text}" if kind else text
