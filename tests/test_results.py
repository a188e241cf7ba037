"""Reading result files against the result schema: every problem is a ResultError."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from flowbatch.errors import ResultError
from flowbatch.results import MAX_YAML_RESULT_BYTES, cast_value, read_results
from flowbatch.spec.model import ResultColumn, ResultSchema, SortKey


def make_schema(*columns: ResultColumn, file: str = "results/out.json") -> ResultSchema:
    return ResultSchema(file=file, columns=list(columns), order_by=[SortKey(columns[0].name)])


def write(run_dir: Path, rel: str, content: Any) -> Path:
    path = run_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


SCHEMA = make_schema(
    ResultColumn("accuracy", "Accuracy", "float"),
    ResultColumn("epochs", "Epochs", "int"),
    ResultColumn("model", "Model", "string"),
)


def test_reads_all_columns(tmp_path: Path) -> None:
    write(tmp_path, "results/out.json", {"accuracy": 0.9, "epochs": 3, "model": "cnn", "x": 1})
    assert read_results(tmp_path, SCHEMA) == {"accuracy": 0.9, "epochs": 3, "model": "cnn"}


def test_nested_path(tmp_path: Path) -> None:
    schema = make_schema(
        ResultColumn("deep", "Deep", "int", path="metrics/deep/value"),
        ResultColumn("top", "Top", "float"),
    )
    write(tmp_path, "results/out.json", {"metrics": {"deep": {"value": 7}}, "top": 1})
    values = read_results(tmp_path, schema)
    assert values == {"deep": 7, "top": 1.0}
    assert isinstance(values["top"], float)


def test_name_with_slash_is_one_key_without_path(tmp_path: Path) -> None:
    schema = make_schema(ResultColumn("a/b", "AB", "int"))
    write(tmp_path, "results/out.json", {"a/b": 5})
    assert read_results(tmp_path, schema) == {"a/b": 5}


def test_path_through_a_non_mapping_is_an_error(tmp_path: Path) -> None:
    schema = make_schema(ResultColumn("deep", "Deep", "int", path="metrics/deep", required=False))
    write(tmp_path, "results/out.json", {"metrics": [1, 2]})
    with pytest.raises(ResultError) as info:
        read_results(tmp_path, schema)
    assert "deep" in str(info.value) and "metrics" in str(info.value)


def test_optional_missing_is_omitted(tmp_path: Path) -> None:
    schema = make_schema(
        ResultColumn("score", "Score", "float"),
        ResultColumn("note", "Note", "string", required=False),
        ResultColumn("n", "N", "int", required=False, path="extra/n"),
        ResultColumn("nulled", "Nulled", "int", required=False),
    )
    write(tmp_path, "results/out.json", {"score": 1.5, "nulled": None})
    assert read_results(tmp_path, schema) == {"score": 1.5}


def test_yaml_result_file(tmp_path: Path) -> None:
    schema = make_schema(
        ResultColumn("score", "Score", "float"),
        ResultColumn("rounds", "Rounds", "int", path="run/rounds"),
        ResultColumn("flag", "Flag", "string"),
        file="out/results.yaml",
    )
    write(tmp_path, "out/results.yaml", "score: 2\nrun:\n  rounds: '12'\nflag: true\n")
    assert read_results(tmp_path, schema) == {"score": 2.0, "rounds": 12, "flag": "true"}


def test_a_large_yaml_result_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """YAML is parsed by pure Python on the daemon's main thread (16 MiB took 53 s and
    3 GB): a YAML result is held to a request's size, a JSON one (parsed in C) is not."""
    schema = make_schema(ResultColumn("score", "Score", "float"), file="r.yaml")
    bulk = "".join(f"  - {i}\n" for i in range(MAX_YAML_RESULT_BYTES // 8))
    write(tmp_path, "r.yaml", "score: 1\nbulk:\n" + bulk)
    assert (tmp_path / "r.yaml").stat().st_size > MAX_YAML_RESULT_BYTES
    with pytest.raises(ResultError, match="over the limit"):
        read_results(tmp_path, schema)
    big_json = make_schema(ResultColumn("score", "Score", "float"), file="r.json")
    write(tmp_path, "r.json", {"score": 1, "bulk": list(range(MAX_YAML_RESULT_BYTES // 4))})
    assert (tmp_path / "r.json").stat().st_size > MAX_YAML_RESULT_BYTES
    assert read_results(tmp_path, big_json) == {"score": 1.0}


def test_yaml_duplicate_keys_refused(tmp_path: Path) -> None:
    schema = make_schema(ResultColumn("score", "Score", "float"), file="r.yml")
    path = write(tmp_path, "r.yml", "score: 1\nscore: 2\n")
    with pytest.raises(ResultError) as info:
        read_results(tmp_path, schema)
    assert "duplicate" in str(info.value) and str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ResultError) as info:
        read_results(tmp_path, SCHEMA)
    err = info.value
    assert "not found" in err.reason
    assert err.file is not None and err.file.endswith("results/out.json")


def test_result_path_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "results" / "out.json").mkdir(parents=True)
    with pytest.raises(ResultError, match="not a regular file"):
        read_results(tmp_path, SCHEMA)


def test_bad_json(tmp_path: Path) -> None:
    path = write(tmp_path, "results/out.json", '{"accuracy": 0.9,')
    with pytest.raises(ResultError) as info:
        read_results(tmp_path, SCHEMA)
    assert "invalid JSON" in str(info.value)
    assert info.value.file == str(path)


def test_bad_yaml(tmp_path: Path) -> None:
    schema = make_schema(ResultColumn("score", "Score", "float"), file="r.yaml")
    write(tmp_path, "r.yaml", "score: [1,\n")
    with pytest.raises(ResultError, match="invalid YAML"):
        read_results(tmp_path, schema)


@pytest.mark.parametrize("content", ["[1, 2]", '"text"', "3", "null"])
def test_not_a_mapping(tmp_path: Path, content: str) -> None:
    write(tmp_path, "results/out.json", content)
    with pytest.raises(ResultError) as info:
        read_results(tmp_path, SCHEMA)
    assert "not a mapping" in info.value.reason
    assert info.value.expected and "mapping" in info.value.expected


@pytest.mark.parametrize("file", ["../other/out.json", "/etc/passwd", "a/../../x.json"])
def test_path_escaping_run_dir_refused(tmp_path: Path, file: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write(tmp_path, "other/out.json", {"score": 1})
    schema = make_schema(ResultColumn("score", "Score", "float"), file=file)
    with pytest.raises(ResultError) as info:
        read_results(run_dir, schema)
    assert info.value.field == "results.file"


def test_symlink_escaping_run_dir_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    outside = write(tmp_path, "secret.json", {"score": 1})
    (run_dir / "out.json").symlink_to(outside)
    schema = make_schema(ResultColumn("score", "Score", "float"), file="out.json")
    with pytest.raises(ResultError, match="outside the run directory"):
        read_results(run_dir, schema)


def test_symlinked_folder_on_the_way_out_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write(tmp_path, "elsewhere/out.json", {"score": 1})
    (run_dir / "sub").symlink_to(tmp_path / "elsewhere")
    schema = make_schema(ResultColumn("score", "Score", "float"), file="sub/out.json")
    with pytest.raises(ResultError, match="outside the run directory"):
        read_results(run_dir, schema)


def test_symlink_staying_inside_the_run_dir_is_read(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    write(run_dir, "data/real.json", {"score": 2.5})
    (run_dir / "out.json").symlink_to("data/real.json")
    schema = make_schema(ResultColumn("score", "Score", "float"), file="out.json")
    assert read_results(run_dir, schema) == {"score": 2.5}


def test_missing_required_value(tmp_path: Path) -> None:
    path = write(tmp_path, "results/out.json", {"accuracy": 0.5, "epochs": 2})
    with pytest.raises(ResultError) as info:
        read_results(tmp_path, SCHEMA)
    err = info.value
    assert err.field == "model"
    assert "missing required value" in err.reason
    assert err.file == str(path)
    assert "string" in (err.expected or "")


def test_null_required_value_is_missing(tmp_path: Path) -> None:
    write(tmp_path, "results/out.json", {"accuracy": None, "epochs": 2, "model": "m"})
    with pytest.raises(ResultError, match=r"accuracy.*missing required value"):
        read_results(tmp_path, SCHEMA)


def test_all_problems_collected(tmp_path: Path) -> None:
    write(tmp_path, "results/out.json", {"accuracy": "NaN", "epochs": 2.5, "model": {"a": 1}})
    with pytest.raises(ResultError) as info:
        read_results(tmp_path, SCHEMA)
    err = info.value
    text = str(err)
    assert err.field == "accuracy, epochs, model"
    assert "3 result columns" in text
    for name in ("accuracy", "epochs", "model"):
        assert name in text
    assert "non-finite" in text and "non-integral" in text and "mapping" in text
    assert "results/out.json" in text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(3, 3), (3.0, 3), ("42", 42), (" 7 ", 7), ("3.0", 3), ("1e3", 1000), (-2, -2)],
)
def test_int_cast_accepts(raw: Any, expected: int) -> None:
    value = cast_value(raw, "int")
    assert value == expected and type(value) is int


@pytest.mark.parametrize(
    "raw", [True, False, 2.5, "2.5", "abc", "", math.nan, math.inf, [1], {"a": 1}, "nan"]
)
def test_int_cast_refuses(raw: Any) -> None:
    with pytest.raises(ValueError):
        cast_value(raw, "int")


def test_int_cast_refuses_integers_beyond_64_bits() -> None:
    huge = [2**63, -(2**63), 10**400, -(10**400), 1e19, -1e300, str(2**63), "1" + "0" * 400]
    for raw in huge:
        with pytest.raises(ValueError, match="out of range"):
            cast_value(raw, "int")


@pytest.mark.parametrize("raw", [2**63 - 1, -(2**63) + 1, str(2**63 - 1), 2.0**62])
def test_int_cast_accepts_up_to_64_bits(raw: Any) -> None:
    assert cast_value(raw, "int") == int(raw)


def test_a_huge_int_in_a_result_file_is_an_error(tmp_path: Path) -> None:
    """A 401-digit integer has no float: the leaderboard, its chart and the index could
    not rank nor show it. The run is an ERROR naming the column, not a SUCCESS."""
    write(
        tmp_path,
        "results/out.json",
        '{"accuracy": 0.5, "epochs": 1' + "0" * 400 + ', "model": "m"}',
    )
    with pytest.raises(ResultError) as info:
        read_results(tmp_path, SCHEMA)
    err = info.value
    assert err.field == "epochs" and "out of range" in err.reason
    assert err.expected is not None and str(2**63 - 1) in err.expected
    assert len(str(err)) < 400  # the value is cut short in the message


@pytest.mark.parametrize(
    ("raw", "expected"), [(1, 1.0), (0.25, 0.25), ("0.5", 0.5), ("1e-3", 0.001), (-4, -4.0)]
)
def test_float_cast_accepts(raw: Any, expected: float) -> None:
    value = cast_value(raw, "float")
    assert value == expected and type(value) is float


@pytest.mark.parametrize(
    "raw",
    [True, math.nan, math.inf, -math.inf, "nan", "NaN", "inf", "-Infinity", "x", [1.0], 10**400],
)
def test_float_cast_refuses(raw: Any) -> None:
    with pytest.raises(ValueError):
        cast_value(raw, "float")


@pytest.mark.parametrize(
    ("raw", "expected"), [("a", "a"), (1, "1"), (0.5, "0.5"), (True, "true"), (False, "false")]
)
def test_string_cast_accepts(raw: Any, expected: str) -> None:
    assert cast_value(raw, "string") == expected


@pytest.mark.parametrize("raw", [[1, 2], {"a": 1}])
def test_string_cast_refuses(raw: Any) -> None:
    with pytest.raises(ValueError):
        cast_value(raw, "string")


def test_nan_in_json_file_refused(tmp_path: Path) -> None:
    # Python's json module accepts the non-standard NaN literal: it must still be refused.
    path = tmp_path / "results" / "out.json"
    path.parent.mkdir()
    path.write_text('{"accuracy": NaN, "epochs": 1, "model": "m"}')
    with pytest.raises(ResultError) as info:
        read_results(tmp_path, SCHEMA)
    assert info.value.field == "accuracy"
    assert "non-finite" in info.value.reason


def test_nan_in_yaml_file_refused(tmp_path: Path) -> None:
    schema = make_schema(ResultColumn("score", "Score", "float"), file="r.yaml")
    write(tmp_path, "r.yaml", "score: .nan\n")
    with pytest.raises(ResultError, match="score"):
        read_results(tmp_path, schema)


def test_bool_for_int_column_refused(tmp_path: Path) -> None:
    write(tmp_path, "results/out.json", {"accuracy": 1, "epochs": True, "model": "m"})
    with pytest.raises(ResultError, match=r"epochs.*boolean"):
        read_results(tmp_path, SCHEMA)


def test_error_to_dict_names_file_and_field(tmp_path: Path) -> None:
    write(tmp_path, "results/out.json", {"accuracy": "high", "epochs": 1, "model": "m"})
    with pytest.raises(ResultError) as info:
        read_results(tmp_path, SCHEMA)
    data = info.value.to_dict()
    assert data["error"] == "result"
    assert data["field"] == "accuracy"
    assert data["file"].endswith("out.json")
    assert "number" in data["expected"]


def test_a_lone_surrogate_in_a_text_result_is_refused(tmp_path: Path) -> None:
    from flowbatch.errors import ResultError
    from flowbatch.results import read_results
    from flowbatch.spec.model import ResultColumn, ResultSchema, SortKey

    (tmp_path / "r.json").write_text('{"s": "\\udc80"}')
    schema = ResultSchema("r.json", [ResultColumn("s", "S", "string")], [SortKey("s")])
    with pytest.raises(ResultError, match="not valid Unicode"):
        read_results(tmp_path, schema)


def test_a_link_swapped_in_after_the_check_is_not_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's user owns its folder and may change it at any moment: a file checked to
    be inside, then replaced by a link to a file outside before the daemon opens it, is
    refused, never read (the open itself follows no link)."""
    run_dir = tmp_path / "run"
    write(run_dir, "data/real.json", {"score": 2.5})
    secret = write(tmp_path, "secret.json", {"score": 99})
    (run_dir / "out.json").symlink_to("data/real.json")
    schema = make_schema(ResultColumn("score", "Score", "float"), file="out.json")
    resolve = Path.resolve

    def resolve_then_swap(self: Path, strict: bool = False) -> Path:
        found = resolve(self, strict)
        if found.name == "real.json":  # the check is done: the user swaps the file
            (run_dir / "data" / "real.json").unlink()
            (run_dir / "data" / "real.json").symlink_to(secret)
        return found

    monkeypatch.setattr(Path, "resolve", resolve_then_swap)
    with pytest.raises(ResultError) as info:
        read_results(run_dir, schema)
    assert "99" not in str(info.value)


def test_a_fifo_for_a_result_file_is_refused_without_waiting(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "out.json")
    schema = make_schema(ResultColumn("score", "Score", "float"), file="out.json")
    with pytest.raises(ResultError, match="not a regular file"):
        read_results(tmp_path, schema)


def test_a_dotdot_that_stays_inside_is_read(tmp_path: Path) -> None:
    write(tmp_path, "out.json", {"score": 1.5})
    (tmp_path / "sub").mkdir()
    schema = make_schema(ResultColumn("score", "Score", "float"), file="sub/../out.json")
    assert read_results(tmp_path, schema) == {"score": 1.5}


def test_a_json_key_given_twice_is_refused_as_in_yaml(tmp_path: Path) -> None:
    """Found by review: ``{"score": 1, "score": 1e9}`` was read as 1e9 (json lets the
    last win), where a reader that keeps the first saw 1; the YAML reader refuses it."""
    write(tmp_path, "results/out.json", '{"accuracy": 0.5, "epochs": 1, "epochs": 9}')
    with pytest.raises(ResultError, match="duplicate key 'epochs'"):
        read_results(tmp_path, SCHEMA)


@pytest.mark.parametrize("text", ["1_000", "\uff11\uff12", "\u0661", "0x1F", "1e", "--1"])
def test_numbers_as_text_are_ascii_numbers(text: str) -> None:
    """Python's own int() and float() took ``1_000`` and full-width or Arabic-Indic
    digits, which no other reader of the file does (found by review)."""
    for dtype in ("int", "float"):
        with pytest.raises(Exception, match="not a number"):
            cast_value(text, dtype)  # type: ignore[arg-type]
    assert cast_value(" 12 ", "int") == 12 and cast_value("-.5e1", "float") == -5.0
