"""The two strict YAML loaders: libyaml's parser for shallow text, PyYAML's for the rest."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from flowbatch import yamlio
from flowbatch.errors import InputError

VALID = [
    "workflow: bench\narguments:\n  n: 12\n",
    "workflow: probe\nname: &n tried\ngroup: *n\n",
    "a: &a {x: 1, y: [1, 2.5, true, null, '3']}\nb:\n  <<: *a\n  y: 2\n",
    "when: 2024-01-02\nat: 2024-01-02T03:04:05Z\nbig: 123456789012345678901234567890\n",
    "\ufeffworkflow: probe\narguments: {s: caf\u00e9}\n",
    "- - - x\n  - y\n- ? k\n  : v\n",
    "text: |\n  two\n  lines\nfolded: >\n  one\n  line\n",
    "",
    "# only a comment\n",
]

INVALID = [
    "a: 1\nb: 2\na: 3\n",  # duplicate key
    "a: [1, 2\n",  # unclosed
    "x: !!int y\n",  # a constructor error
    "x: 2024-13-45\n",
    "workflow: probe\nx: &x a\nl: [" + ", ".join(["*x"] * 101) + "]\n",  # aliases
    "a: &a [*a]\n",  # recursive
    "x: !!python/object:os.system ls\n",  # not safe
]


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("text", VALID)
def test_both_loaders_read_the_same_values(text: str) -> None:
    assert yamlio._loader(text) is yamlio._FastLoader
    fast = yamlio.loads(text)
    pure = yaml.load(text, Loader=yamlio._StrictLoader)
    assert fast == pure


@pytest.mark.parametrize("text", INVALID)
def test_both_loaders_refuse_the_same_text(text: str) -> None:
    with pytest.raises(InputError):
        yamlio.loads(text)
    with pytest.raises((InputError, yaml.YAMLError, ValueError, RecursionError)):
        value = yaml.load(text, Loader=yamlio._StrictLoader)
        yamlio._check_shape(value, budget=len(text) + yamlio.EXPANSION_ALLOWANCE)


def test_libyaml_is_used_when_pyyaml_has_it() -> None:
    # CI installs PyYAML's wheel, built with libyaml: the fast path must be the one taken
    assert yaml.__with_libyaml__
    assert issubclass(yamlio._FastLoader, yaml.CSafeLoader)
    assert yamlio._FastLoader.construct_mapping is yamlio._StrictLoader.construct_mapping


@pytest.mark.parametrize(
    "text",
    [
        "[" * 300 + "]" * 300,
        "{a: " * 300 + "1" + "}" * 300,
        "- " * 300 + "x\n",
        "".join(" " * i + f"k{i}:\n" for i in range(300)) + " " * 300 + "v\n",
        "? " * 300 + "x\n",
    ],
)
def test_deep_text_never_reaches_libyaml(text: str) -> None:
    # libyaml's composer recurses in C without a limit: deep text goes to PyYAML's parser
    assert yamlio._depth_bound(text) > 2 * yamlio.MAX_DEPTH
    assert yamlio._loader(text) is yamlio._StrictLoader
    with pytest.raises(InputError, match=r"nesting|deep|invalid YAML"):
        yamlio.loads(text)


@pytest.mark.parametrize("depth", [1, 5, 20, 60])
def test_the_depth_bound_is_an_upper_bound(depth: int) -> None:
    docs = [
        "[" * depth + "]" * depth,
        "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v\n",
        "- " * depth + "x\n",
        "a:\n  - " + "[" * depth + "]" * depth + "\n",
    ]
    for text in docs:
        value = yaml.load(text, Loader=yamlio._StrictLoader)
        assert yamlio._depth_bound(text) >= _depth(value), text


def test_a_file_over_the_limit_is_refused_from_its_descriptor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``load_fd`` (the result file, opened without following links) keeps
    ``load_file``'s checks: the size bound, then NUL bytes, from the file's start."""
    import os

    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * 100 + "\n")
    fd = os.open(big, os.O_RDONLY)
    try:
        with pytest.raises(InputError, match="over the limit of 50 bytes"):
            yamlio.load_fd(fd, str(big), max_bytes=50)
        os.lseek(fd, 20, os.SEEK_SET)  # read from the start whatever the offset
        assert yamlio.load_fd(fd, str(big), max_bytes=1000) == {"a": "x" * 100}
    finally:
        os.close(fd)
    nul = tmp_path / "nul.json"
    nul.write_bytes(b'{"a": 1}\x00')
    with pytest.raises(InputError, match="NUL"):
        yamlio.load_file(nul)
