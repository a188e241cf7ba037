"""Parameter declarations, cast rules and run-argument resolution (seed-inventory §2)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from flowbatch.errors import ArgumentError, TemplateError
from flowbatch.spec import cast_value, parse_parameters, parse_range, resolve_arguments
from flowbatch.spec.model import FileArg, Parameter, Range
from flowbatch.spec.params import MAX_VALUE_BYTES

F = "t.yaml"


def one(decl: dict[str, Any]) -> Parameter:
    return parse_parameters([decl], file=F)[0]


def template_error(decls: Any) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        parse_parameters(decls, file=F)
    return info.value


def cast_error(param: Parameter, value: Any, field: str = "arguments.x") -> ArgumentError:
    with pytest.raises(ArgumentError) as info:
        cast_value(param, value, field=field)
    return info.value


# -- ranges ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high", "low_closed", "high_closed"),
    [
        ("[0,1]", 0.0, 1.0, True, True),
        ("(0,1)", 0.0, 1.0, False, False),
        ("[0,1)", 0.0, 1.0, True, False),
        ("(0,1]", 0.0, 1.0, False, True),
        ("(,5]", None, 5.0, False, True),
        ("[1,)", 1.0, None, True, False),
        ("[-inf,inf]", None, None, True, True),
        (" [ -2.5 , 1e3 ) ", -2.5, 1000.0, True, False),
        ("[3,3]", 3.0, 3.0, True, True),
    ],
)
def test_parse_range_forms(
    text: str, low: float | None, high: float | None, low_closed: bool, high_closed: bool
) -> None:
    rng = parse_range(text, field="r")
    assert (rng.low, rng.high, rng.low_closed, rng.high_closed) == (
        low,
        high,
        low_closed,
        high_closed,
    )


def test_range_contains_respects_open_and_closed_ends() -> None:
    rng = parse_range("(0,1]", field="r")
    assert not rng.contains(0)
    assert rng.contains(0.5)
    assert rng.contains(1)
    assert not rng.contains(1.0001)
    unbounded = parse_range("(,)", field="r")
    assert unbounded.contains(-1e300) and unbounded.contains(1e300)


@pytest.mark.parametrize("text", ["[2,1]", "0,1", "[0;1]", "[a,1]", "[0,1", "[inf,3]", "[0,-inf]"])
def test_parse_range_rejects(text: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse_range(text, field="parameters[0].range")
    assert info.value.field == "parameters[0].range"


def test_range_left_greater_than_right_message() -> None:
    with pytest.raises(TemplateError, match="left bound is greater"):
        parse_range("[5,1]", field="r")


# -- declarations ------------------------------------------------------------------------


def test_defaults_for_index_and_is_required() -> None:
    params = parse_parameters(
        [
            {"name": "a", "dtype": "string"},
            {"name": "b", "dtype": "int", "defaultValue": 3},
            {"name": "c", "dtype": "int", "index": 7, "isRequired": False},
        ],
        file=F,
    )
    assert [p.index for p in params] == [0, 1, 7]
    assert [p.required for p in params] == [True, False, False]
    assert [p.has_default for p in params] == [False, True, False]


@pytest.mark.parametrize(
    ("dtype", "default"), [("int", 0), ("bool", False), ("string", ""), ("float", 0.0)]
)
def test_falsy_defaults_are_kept(dtype: str, default: Any) -> None:
    param = one({"name": "x", "dtype": dtype, "defaultValue": default})
    assert param.has_default is True
    assert param.default == default
    assert type(param.default) is type(default)
    assert param.required is False
    assert resolve_arguments([param], {}) == {"x": default}


def test_field_name_variants_of_the_docs() -> None:
    params = parse_parameters(
        [
            {"name": "a", "type": "int", "description": "A", "module": "g"},
            {"name": "b", "datatype": "file", "as": "data/names.txt", "help": "B"},
        ],
        file=F,
    )
    assert params[0].dtype == "int" and params[0].help == "A" and params[0].group == "g"
    assert params[1].dtype == "file" and params[1].target == "data/names.txt"


def test_two_spellings_of_one_key_are_rejected() -> None:
    err = template_error([{"name": "a", "dtype": "int", "type": "int"}])
    assert err.field == "parameters[0].type"
    assert "dtype" in (err.hint or "")


def test_unknown_key_names_path_key_and_known_keys() -> None:
    err = template_error(
        [{"name": "a", "dtype": "int"}, {"name": "b", "dtype": "string", "colour": "red"}]
    )
    assert err.field == "parameters[1].colour"
    assert "'colour'" in err.reason
    assert (
        err.expected is not None and "defaultValue" in err.expected and "isRequired" in err.expected
    )
    assert err.file == F


def test_dtype_specific_keys_are_refused_on_other_dtypes() -> None:
    err = template_error([{"name": "a", "dtype": "string", "range": "[0,1]"}])
    assert err.field == "parameters[0].range"
    err = template_error([{"name": "a", "dtype": "int", "target": "x"}])
    assert err.field == "parameters[0].target"


def test_duplicate_names_rejected() -> None:
    err = template_error([{"name": "a", "dtype": "int"}, {"name": "a", "dtype": "string"}])
    assert err.field == "parameters[1].name"
    assert "duplicate" in err.reason


def test_actor_dtype_not_supported() -> None:
    err = template_error([{"name": "a", "dtype": "actor"}])
    assert "not supported by flowbatch (runs shell steps only)" in err.reason
    assert err.field == "parameters[0].dtype"


def test_unknown_dtype_lists_valid_ones() -> None:
    err = template_error([{"name": "a", "dtype": "decimal"}])
    assert err.field == "parameters[0].dtype"
    assert err.expected is not None
    for dtype in ("bool", "select", "file", "int", "float", "string", "list", "record"):
        assert dtype in err.expected


def test_missing_dtype_and_name() -> None:
    assert template_error([{"name": "a"}]).field == "parameters[0]"
    assert template_error([{"dtype": "int"}]).field == "parameters[0].name"


@pytest.mark.parametrize("name", ["1a", "a-b", "a b", ""])
def test_parameter_names_must_be_identifiers(name: str) -> None:
    assert template_error([{"name": name, "dtype": "int"}]).field == "parameters[0].name"


@pytest.mark.parametrize(
    ("decl", "field"),
    [
        ({"name": "a", "dtype": "int", "defaultValue": "x"}, "parameters[0].defaultValue"),
        ({"name": "a", "dtype": "int", "defaultValue": 11, "range": "[0,10]"}, None),
        ({"name": "a", "dtype": "float", "defaultValue": math.nan}, None),
        ({"name": "a", "dtype": "bool", "defaultValue": "maybe"}, None),
        (
            {
                "name": "a",
                "dtype": "select",
                "defaultValue": "c",
                "values": [{"name": "A", "value": "a"}],
            },
            None,
        ),
        ({"name": "a", "dtype": "file", "defaultValue": "../x"}, None),
        ({"name": "a", "dtype": "file", "defaultValue": "/etc/passwd"}, None),
    ],
)
def test_bad_default_is_an_install_time_error(decl: dict[str, Any], field: str | None) -> None:
    err = template_error([decl])
    assert err.field == (field or "parameters[0].defaultValue")


def test_default_is_stored_cast() -> None:
    assert one({"name": "a", "dtype": "int", "defaultValue": "42"}).default == 42
    assert one({"name": "a", "dtype": "bool", "defaultValue": "yes"}).default is True
    assert (
        one({"name": "a", "dtype": "file", "defaultValue": "data/./x.txt"}).default == "data/x.txt"
    )


def test_bad_types_of_common_fields() -> None:
    assert (
        template_error([{"name": "a", "dtype": "int", "index": "1"}]).field == "parameters[0].index"
    )
    assert (
        template_error([{"name": "a", "dtype": "int", "isRequired": "yes"}]).field
        == "parameters[0].isRequired"
    )
    assert (
        template_error([{"name": "a", "dtype": "int", "label": 3}]).field == "parameters[0].label"
    )
    assert template_error({"name": "a"}).field == "parameters"
    assert template_error(["a"]).field == "parameters[0]"


def test_select_declaration_is_strict() -> None:
    p = one(
        {
            "name": "imageType",
            "type": "select",
            "defaultValue": "brightfield",
            "values": [
                {"name": "Brightfield", "value": "brightfield", "isDefault": True},
                {"name": "Phasecontrast", "value": "phasecontrast", "isDefault": False},
            ],
            "isRequired": True,
        }
    )
    assert [v.value for v in p.values] == ["brightfield", "phasecontrast"]
    assert p.values[0].is_default and p.required and p.default == "brightfield"
    err = template_error(
        [{"name": "s", "dtype": "select", "values": [{"name": "A", "value": 1, "colour": 2}]}]
    )
    assert err.field == "parameters[0].values[0].colour"
    err = template_error([{"name": "s", "dtype": "select", "values": [{"name": "A"}]}])
    assert err.field == "parameters[0].values[0]"
    assert template_error([{"name": "s", "dtype": "select"}]).field == "parameters[0].values"
    assert template_error([{"name": "s", "dtype": "select", "values": []}]).field == (
        "parameters[0].values"
    )
    dup = [{"name": "A", "value": 1}, {"name": "B", "value": 1}]
    assert template_error([{"name": "s", "dtype": "select", "values": dup}]).field == (
        "parameters[0].values[1].value"
    )


def test_list_and_record_declarations() -> None:
    p = one({"name": "xs", "dtype": "list", "para": {"dtype": "int", "range": "[0,)"}})
    assert p.para is not None and p.para.dtype == "int" and p.para.name == "xs"
    assert template_error([{"name": "xs", "dtype": "list"}]).field == "parameters[0]"
    err = template_error([{"name": "xs", "dtype": "list", "para": {"dtype": "int", "bad": 1}}])
    assert err.field == "parameters[0].para.bad"
    rec = one(
        {
            "name": "r",
            "dtype": "record",
            "fields": [{"name": "a", "dtype": "int"}, {"name": "b", "dtype": "string"}],
        }
    )
    assert [f.name for f in rec.fields] == ["a", "b"]
    err = template_error(
        [
            {
                "name": "r",
                "dtype": "record",
                "fields": [{"name": "a", "dtype": "int"}, {"name": "a", "dtype": "int"}],
            }
        ]
    )
    assert err.field == "parameters[0].fields[1].name"
    assert template_error([{"name": "r", "dtype": "record", "fields": []}]).field == (
        "parameters[0].fields"
    )


# -- cast rules --------------------------------------------------------------------------


BOOL = Parameter(name="x", dtype="bool", index=0, required=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        *[(s, True) for s in ("1", "t", "true", "yes", "y", "TRUE", " Yes ")],
        *[(s, False) for s in ("0", "f", "false", "no", "n", "", "False")],
    ],
)
def test_bool_cast(value: Any, expected: bool) -> None:
    assert cast_value(BOOL, value, field="f") is expected


@pytest.mark.parametrize("value", ["maybe", 2, None, 1.5, [], {}, "on"])
def test_bool_cast_rejects(value: Any) -> None:
    err = cast_error(BOOL, value)
    assert err.field == "arguments.x"
    assert err.expected is not None and "true or false" in err.expected


def int_param(rng: str | None = None) -> Parameter:
    decl: dict[str, Any] = {"name": "x", "dtype": "int"}
    if rng:
        decl["range"] = rng
    return one(decl)


@pytest.mark.parametrize(("value", "expected"), [(42, 42), ("42", 42), (" -7 ", -7), (3.0, 3)])
def test_int_cast(value: Any, expected: int) -> None:
    result = cast_value(int_param(), value, field="f")
    assert result == expected and type(result) is int


@pytest.mark.parametrize(
    "value", [3.9, "3.5", True, False, "inf", "-inf", math.inf, "1e3", "x", None, [1]]
)
def test_int_cast_rejects(value: Any) -> None:
    err = cast_error(int_param(), value)
    assert err.expected == "an integer"


def test_int_cast_rejects_integers_beyond_64_bits() -> None:
    """A 400-digit integer has no float (the reports and charts need one): refused at
    the request, naming the field, with or without a declared range."""
    huge = [2**63, -(2**63), 10**400, "1" + "0" * 400, 1e19, str(2**63), -(10**5000)]
    for param in (int_param(), int_param("[0,)"), int_param("(,1e400]")):
        for value in huge:
            err = cast_error(param, value)
            assert err.field == "arguments.x" and "out of range" in err.reason
            assert str(2**63 - 1) in err.reason and len(err.reason) < 200
    for ok in (2**63 - 1, -(2**63) + 1, str(2**63 - 1)):
        assert cast_value(int_param(), ok, field="f") == int(ok)
    # the same for an element of a list and a field of a record, and for a default
    listed = one({"name": "xs", "dtype": "list", "para": {"dtype": "int"}})
    assert cast_error(listed, [1, 10**400]).field == "arguments.x[1]"
    err = template_error([{"name": "a", "dtype": "int", "defaultValue": 2**64}])
    assert err.field == "parameters[0].defaultValue" and "out of range" in err.reason


def test_a_request_with_a_huge_int_argument_is_rejected() -> None:
    with pytest.raises(ArgumentError) as info:
        resolve_arguments([int_param()], {"x": 10**400}, file="r.yaml")
    assert info.value.field == "arguments.x" and info.value.file == "r.yaml"


def test_int_range() -> None:
    p = int_param("[1,10]")
    assert cast_value(p, 1, field="f") == 1
    assert cast_value(p, 10, field="f") == 10
    err = cast_error(p, 11)
    assert err.expected == "an integer in [1,10]"
    assert "out of range" in err.reason
    assert cast_error(int_param("(1,10)"), 1).expected == "an integer in (1,10)"


@pytest.mark.parametrize(
    ("value", "expected"), [(1, 1.0), (0.5, 0.5), ("0.25", 0.25), ("1e-3", 0.001), ("-2", -2.0)]
)
def test_float_cast(value: Any, expected: float) -> None:
    result = cast_value(one({"name": "x", "dtype": "float"}), value, field="f")
    assert result == expected and type(result) is float


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "inf", "-inf", "1e999"])
def test_float_cast_rejects_nan_and_infinity(value: Any) -> None:
    err = cast_error(one({"name": "x", "dtype": "float"}), value)
    assert err.expected is not None and "finite" in err.expected


@pytest.mark.parametrize("value", [True, "abc", None, {}, "1_0"])
def test_float_cast_rejects_non_numbers(value: Any) -> None:
    cast_error(one({"name": "x", "dtype": "float"}), value)


def test_float_range() -> None:
    p = one({"name": "x", "dtype": "float", "range": "[0,1)"})
    assert cast_value(p, 0, field="f") == 0.0
    err = cast_error(p, 1)
    assert err.expected == "a finite number in [0,1)"


def test_string_cast() -> None:
    p = one({"name": "x", "dtype": "string"})
    assert cast_value(p, "hi", field="f") == "hi"
    assert cast_value(p, 3, field="f") == "3"
    assert cast_value(p, 2.5, field="f") == "2.5"
    assert cast_value(p, "$(touch FILE)", field="f") == "$(touch FILE)"  # data, not code
    for bad in ({"a": 1}, [1], None, True, "a\x00b"):
        cast_error(p, bad)


def select_param() -> Parameter:
    return one(
        {
            "name": "x",
            "dtype": "select",
            "values": [
                {"name": "A", "value": "a"},
                {"name": "B", "value": "b"},
                {"name": "One", "value": 1},
            ],
        }
    )


def test_select_cast() -> None:
    p = select_param()
    assert cast_value(p, "a", field="f") == "a"
    assert cast_value(p, 1, field="f") == 1
    err = cast_error(p, "c")
    assert err.expected == "one of: 'a', 'b', 1"
    cast_error(p, True)  # True == 1 in Python, but it is not the value 1
    cast_error(p, "1")


def test_list_cast_paths_name_the_element() -> None:
    p = one({"name": "x", "dtype": "list", "para": {"dtype": "int", "range": "[0,)"}})
    assert cast_value(p, [1, "2", 3.0], field="arguments.x") == [1, 2, 3]
    assert cast_value(p, [], field="arguments.x") == []
    err = cast_error(p, [1, 2, 3, -1])
    assert err.field == "arguments.x[3]"
    assert cast_error(p, "1,2").field == "arguments.x"


def record_param() -> Parameter:
    return one(
        {
            "name": "x",
            "dtype": "record",
            "fields": [
                {"name": "a", "dtype": "int"},
                {"name": "b", "dtype": "string", "defaultValue": ""},
                {"name": "c", "dtype": "bool", "isRequired": False},
            ],
        }
    )


def test_record_cast_both_forms() -> None:
    p = record_param()
    assert cast_value(p, {"a": "1"}, field="f") == {"a": 1, "b": ""}
    assert cast_value(p, [{"name": "a", "value": 2}, {"name": "c", "value": "yes"}], field="f") == {
        "a": 2,
        "b": "",
        "c": True,
    }


def test_record_cast_errors() -> None:
    p = record_param()
    assert cast_error(p, {"a": 1, "z": 2}).field == "arguments.x.z"
    err = cast_error(p, {"b": "x"})
    assert err.field == "arguments.x.a" and "missing field 'a'" in err.reason
    assert cast_error(p, {"a": "x"}).field == "arguments.x.a"
    assert cast_error(p, [{"name": "a"}]).field == "arguments.x[0]"
    assert cast_error(p, [{"name": "a", "value": 1}, {"name": "a", "value": 2}]).field == (
        "arguments.x[1].name"
    )
    cast_error(p, "a=1")


def file_param(**extra: Any) -> Parameter:
    return one({"name": "x", "dtype": "file", **extra})


def test_file_cast_target_precedence() -> None:
    plain = file_param()
    declared = file_param(target="data/names.txt")
    defaulted = file_param(defaultValue="data/default.txt")
    both = file_param(target="data/names.txt", defaultValue="data/default.txt")
    assert cast_value(plain, "in/my names.txt", field="f") == FileArg(
        "in/my names.txt", "my names.txt"
    )
    assert cast_value(declared, "a.txt", field="f") == FileArg("a.txt", "data/names.txt")
    assert cast_value(defaulted, "a.txt", field="f") == FileArg("a.txt", "data/default.txt")
    assert cast_value(both, "a.txt", field="f") == FileArg("a.txt", "data/names.txt")
    user = {"source": "a.txt", "target": "in/x.txt"}
    for p in (plain, declared, defaulted, both):
        assert cast_value(p, user, field="f") == FileArg("a.txt", "in/x.txt")


def test_file_cast_accepts_key_variants_and_flowserv_wire_format() -> None:
    p = file_param()
    assert cast_value(p, {"path": "a.txt", "as": "b.txt"}, field="f") == FileArg("a.txt", "b.txt")
    assert cast_value(p, {"file": "d/a.txt"}, field="f") == FileArg("d/a.txt", "a.txt")
    wire = {"type": "$file", "value": {"fileId": "up/1.txt", "targetPath": "data/n.txt"}}
    assert cast_value(p, wire, field="f") == FileArg("up/1.txt", "data/n.txt")


@pytest.mark.parametrize(
    "value",
    [
        {"source": "a", "target": "/abs/x"},
        {"source": "a", "target": "../x"},
        {"source": "a", "target": "d/../../x"},
        {"source": "a", "target": "~/x"},
        {"source": "a", "target": ""},
        {"source": "a", "colour": 1},
        {"source": "a", "path": "b"},
        {"target": "x"},
        "",
        "..",
        3,
        None,
    ],
)
def test_file_cast_rejects(value: Any) -> None:
    cast_error(file_param(), value)


def test_file_cast_does_not_touch_the_filesystem() -> None:
    assert cast_value(file_param(), "/no/such/file.txt", field="f") == FileArg(
        "/no/such/file.txt", "file.txt"
    )


# -- resolve_arguments -------------------------------------------------------------------


@pytest.fixture
def params() -> list[Parameter]:
    return parse_parameters(
        [
            {"name": "names", "dtype": "file", "target": "data/names.txt", "index": 0},
            {"name": "sleeptime", "dtype": "int", "defaultValue": 0, "index": 2},
            {"name": "greeting", "dtype": "string", "defaultValue": "Hello", "index": 1},
            {"name": "verbose", "dtype": "bool", "isRequired": False, "index": 3},
        ],
        file=F,
    )


def test_resolve_mapping_form_in_index_order(params: list[Parameter]) -> None:
    args = resolve_arguments(params, {"sleeptime": "3", "names": "my.txt"}, file="r.yaml")
    assert list(args) == ["names", "greeting", "sleeptime"]
    assert args == {
        "names": FileArg("my.txt", "data/names.txt"),
        "greeting": "Hello",
        "sleeptime": 3,
    }


def test_resolve_list_form(params: list[Parameter]) -> None:
    args = resolve_arguments(
        params,
        [
            {"name": "names", "value": {"type": "$file", "value": {"fileId": "u/n.txt"}}},
            {"name": "verbose", "value": "yes"},
        ],
    )
    assert args == {
        "names": FileArg("u/n.txt", "data/names.txt"),
        "greeting": "Hello",
        "sleeptime": 0,
        "verbose": True,
    }
    docs_form = resolve_arguments(params, [{"name": "names", "value": "f.txt", "as": "in/f.txt"}])
    assert docs_form["names"] == FileArg("f.txt", "in/f.txt")


def test_resolve_unknown_name_lists_known(params: list[Parameter]) -> None:
    with pytest.raises(ArgumentError) as info:
        resolve_arguments(params, {"names": "a", "sleep": 1}, file="r.yaml")
    err = info.value
    assert err.field == "arguments.sleep" and err.file == "r.yaml"
    assert err.expected == "one of: names, sleeptime, greeting, verbose"
    # and what to do (the error file said no more than that: found by review)
    assert err.hint == (
        "did you mean 'sleeptime'? remove it, or see the parameters with `flowbatch workflows show`"
    )
    with pytest.raises(ArgumentError) as info:
        resolve_arguments(params, [{"name": "names", "value": "a"}, {"name": "x", "value": 1}])
    assert info.value.field == "arguments[1].name"
    assert info.value.hint is not None and info.value.hint.startswith("remove it")


def test_resolve_missing_required(params: list[Parameter]) -> None:
    with pytest.raises(
        ArgumentError, match="missing argument for required parameter 'names'"
    ) as info:
        resolve_arguments(params, {})
    assert info.value.field == "arguments.names"
    with pytest.raises(ArgumentError):
        resolve_arguments(params, None)


def test_resolve_list_form_errors(params: list[Parameter]) -> None:
    with pytest.raises(ArgumentError) as info:
        resolve_arguments(
            params, [{"name": "names", "value": "a"}, {"name": "names", "value": "b"}]
        )
    assert info.value.field == "arguments[1].name" and "duplicate" in info.value.reason
    with pytest.raises(ArgumentError) as info:
        resolve_arguments(params, [{"name": "names"}])
    assert info.value.field == "arguments[0]"
    with pytest.raises(ArgumentError) as info:
        resolve_arguments(
            params, [{"name": "names", "value": "a"}, {"name": "sleeptime", "value": "x"}]
        )
    assert info.value.field == "arguments[1].value"
    with pytest.raises(ArgumentError):
        resolve_arguments(params, "names=a")  # type: ignore[arg-type]


def test_resolve_cast_error_has_path_and_file(params: list[Parameter]) -> None:
    with pytest.raises(ArgumentError) as info:
        resolve_arguments(params, {"names": "a", "sleeptime": 1.5}, file="r.yaml")
    assert info.value.field == "arguments.sleeptime" and info.value.file == "r.yaml"
    assert "r.yaml: arguments.sleeptime" in str(info.value)


def test_resolve_file_default_is_a_template_file() -> None:
    params = parse_parameters(
        [{"name": "names", "dtype": "file", "defaultValue": "data/names.txt", "target": "x.txt"}],
        file=F,
    )
    assert resolve_arguments(params, {}) == {"names": FileArg("", "data/names.txt")}


def test_resolve_defaults_are_not_shared() -> None:
    params = parse_parameters(
        [{"name": "xs", "dtype": "list", "para": {"dtype": "int"}, "defaultValue": [1, 2]}], file=F
    )
    first = resolve_arguments(params, {})
    first["xs"].append(3)
    assert resolve_arguments(params, {}) == {"xs": [1, 2]}


def test_required_parameter_with_default_takes_the_default() -> None:
    params = parse_parameters(
        [{"name": "n", "dtype": "int", "defaultValue": 5, "isRequired": True}], file=F
    )
    assert resolve_arguments(params, {}) == {"n": 5}


def test_range_model_text_is_kept() -> None:
    assert parse_range("[0,1)", field="r") == Range(0.0, 1.0, True, False, "[0,1)")


@pytest.mark.parametrize(
    "decl",
    [
        {"name": "fs", "dtype": "list", "para": {"dtype": "file"}},
        {"name": "r", "dtype": "record", "fields": [{"name": "f", "dtype": "file"}]},
        {  # deeper: a list of records holding a file
            "name": "rs",
            "dtype": "list",
            "para": {
                "dtype": "record",
                "fields": [{"name": "n", "dtype": "int"}, {"name": "f", "dtype": "file"}],
            },
        },
    ],
)
def test_a_file_inside_a_list_or_record_is_refused_at_install(decl: dict[str, object]) -> None:
    """Only top-level file parameters are staged (path and owner checked, copied into the
    run folder); a file element was cast unchecked and reached the command as a path of
    the user's choosing, and its run.json held repr text."""
    with pytest.raises(TemplateError, match="cannot be an element of a list or a field") as err:
        parse_parameters([decl], file=F)
    assert err.value.field is not None and err.value.field.startswith("parameters[0].")


def test_an_argument_too_long_for_an_environment_variable_is_refused() -> None:
    """Each argument is exported to the run's programs; Linux starts none (not even
    `mkdir` for the run's own folders) whose environment holds a value of 128 KiB: such a
    value is refused at intake with the field and the way out, not left to fail every
    step of the run."""
    params = [Parameter("s", "string", 0, True), Parameter("xs", "list", 1, False)]
    params[1].para = Parameter("xs", "string", 0, True)
    fits = "a" * MAX_VALUE_BYTES
    assert resolve_arguments(params, {"s": fits}, file="r.yaml") == {"s": fits}
    with pytest.raises(ArgumentError, match="too long for the environment variable") as err:
        resolve_arguments(params, {"s": fits + "é"}, file="r.yaml")
    assert err.value.field == "arguments.s" and "file parameter" in (err.value.hint or "")
    with pytest.raises(ArgumentError) as err:
        resolve_arguments(params, {"s": "x", "xs": ["b" * 60_000] * 2}, file="r.yaml")
    assert err.value.field == "arguments.xs"


def test_a_value_in_an_error_is_shown_cut_the_same_way_everywhere() -> None:
    """Six copies of "repr, cut for an error" (params, resources, template, results,
    sweep) are one: a huge value is cut with its length said, an int of more digits than
    Python writes out is described by its size."""
    from flowbatch.text import short_repr

    assert short_repr("ab", 10) == "'ab'"
    assert short_repr("x" * 50, 10) == "'xxxxxxxxx... (52 characters)"
    import sys

    limit = sys.get_int_max_str_digits()
    if limit:
        big = 1 << (limit * 4)  # more digits than repr() writes
        assert short_repr(big).startswith("an integer of ") and short_repr(big).endswith(" bits")
