"""One grammar of durations for the site's times, a template's ``timeLimit`` and
``resources.time`` (three parsers had drifted apart: found by review)."""

from __future__ import annotations

from typing import Any

import pytest

from flowbatch.config import parse_duration
from flowbatch.errors import TemplateError
from flowbatch.spec.resources import parse_seconds
from flowbatch.spec.template import _parse_time_limit


def _all(value: Any) -> tuple[float | None, float | None, float | None]:
    """What the site config, a template and a resource make of ``value`` (None: refused)."""
    out: list[float | None] = []
    for parse in (
        parse_duration,
        lambda v: _parse_time_limit(v, file="t.yaml"),
        parse_seconds,
    ):
        try:
            out.append(parse(value))
        except (ValueError, TemplateError):
            out.append(None)
    return out[0], out[1], out[2]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("10min", 600),  # a template refused it
        ("1.5 m", 90),
        ("2H", 7200),
        ("1d", 86400),
        ("1sec", 1),  # a template and a resource refused it
        ("5:00", 300),
        ("1:30:00", 5400),
        ("1-12", 129600),  # Slurm's D-HH
        ("1-12:00:00", 129600),  # the site config refused it
        ("1:99:99", None),  # the site config took it for 9639 s
        ("0s", None),
        ("-5m", None),
        ("soon", None),
        ("1e400s", None),
        ("9" * 5000 + "s", None),
    ],
)
def test_every_duration_means_the_same_everywhere(text: str, seconds: float | None) -> None:
    assert _all(text) == (seconds, seconds, seconds)


@pytest.mark.parametrize("bare", [90, 90.0, "90"])
def test_a_bare_number_is_seconds_except_where_slurm_would_read_minutes(bare: Any) -> None:
    assert _all(bare) == (90, 90, None)
    with pytest.raises(ValueError, match="ambiguous here"):
        parse_seconds(bare)


@pytest.mark.parametrize("value", [True, [], {"s": 1}, float("nan"), float("inf"), 0, -1])
def test_what_is_no_duration(value: Any) -> None:
    site, template, resource = _all(value)
    assert resource is None and (site is None and template is None)


@pytest.mark.parametrize(("text", "seconds"), [("1:30:00", 5400), ("12:30", 750), ("1-12", None)])
def test_a_clock_time_written_unquoted_is_the_time_written(
    text: str, seconds: float | None
) -> None:
    """YAML 1.1 reads an unquoted `1:30:00` as the number 5400: `resources.time` refused
    the form the README shows, as a bare number (found by review). A request, a
    template and the site config keep the text (yamlio.WrittenInt), which is parsed."""
    from flowbatch import yamlio
    from flowbatch.spec.request import parse_request

    doc = yamlio.loads(
        f"workflow: w\nresources: {{time: {text}}}\ntimeLimit: {text}\n", as_written=True
    )
    if seconds is None:  # `1-12` is text to YAML: quoted or not, it is the same
        assert isinstance(doc["resources"]["time"], str)
        return
    assert parse_request({k: doc[k] for k in ("workflow", "resources")}, file="r.yaml").resources
    assert parse_seconds(doc["resources"]["time"]) == seconds
    assert _parse_time_limit(doc["timeLimit"], file="t.yaml") == seconds
    site_yaml = yamlio.loads(
        f"slurm: {{profiles: {{default: {{time: {text}}}}}}}\n", as_written=True
    )
    assert parse_seconds(site_yaml["slurm"]["profiles"]["default"]["time"]) == seconds
