"""Review (s23): a date written unquoted for a string parameter was refused as "not a
string: datetime.date(...)" with no hint; it now says to quote it."""

from __future__ import annotations

import pytest

from flowbatch import yamlio
from flowbatch.errors import ArgumentError
from flowbatch.spec.model import Parameter
from flowbatch.spec.params import resolve_arguments


@pytest.mark.parametrize("text", ["2024-05-01", "2024-05-01 10:00:00"])
def test_a_date_for_a_string_parameter_says_to_quote_it(text: str) -> None:
    doc = yamlio.loads(f"day: {text}\n")
    with pytest.raises(ArgumentError) as info:
        resolve_arguments([Parameter("day", "string", 0, True)], doc, file="r.yaml")
    assert info.value.hint == "quote the value in YAML"
    assert info.value.field == "arguments.day"
