"""Template parsing: both flowServ layouts, native templates, strict checks (§1, §3.1, §4.1)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from flowbatch.errors import InputError, TemplateError
from flowbatch.spec import load_template, parse_template, placeholders
from flowbatch.spec.model import SortKey

DATA = Path(__file__).parent / "data" / "templates"
F = "t.yaml"


def base(**top: Any) -> dict[str, Any]:
    """A minimal valid flowServ template, with top-level keys replaced by ``top``."""
    doc: dict[str, Any] = {
        "workflow": {
            "parameters": {"n": "$[[n]]"},
            "steps": [{"name": "run", "action": {"commands": ["echo ${n}"]}}],
        },
        "parameters": [{"name": "n", "dtype": "int", "defaultValue": 1}],
    }
    doc.update(top)
    return doc


def steps(*commands: str, **action: Any) -> dict[str, Any]:
    return {"steps": [{"action": {"commands": list(commands), **action}}]}


def error(doc: Any, **kwargs: Any) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        parse_template(doc, file=F, **kwargs)
    assert info.value.file == F
    return info.value


# -- the seeds' Hello World in both layouts ----------------------------------------------


def test_hello_world_both_layouts_parse_to_the_same_template() -> None:
    modern = load_template(DATA / "helloworld" / "benchmark.yaml")
    legacy = load_template(DATA / "helloworld_legacy.yaml")
    assert modern.dialect == legacy.dialect == "flowserv"
    assert modern.workflow == legacy.workflow
    assert modern.parameters == legacy.parameters
    assert modern.results == legacy.results
    wf = modern.workflow
    assert [s.name for s in wf.steps] == ["step1"]
    assert wf.steps[0].environment == "python:3.7"
    assert wf.steps[0].commands[0] == (
        'python code/helloworld.py --infile "${inputfile}" --outfile "${outputfile}" '
        "--sleeptime ${sleeptime} --greeting ${greeting}"
    )
    assert wf.context == {
        "inputfile": "$[[names]]",
        "outputfile": "results/greetings.txt",
        "sleeptime": "$[[sleeptime]]",
        "greeting": "$[[greeting]]",
    }
    assert wf.input_files == ["code/analyze.py", "code/helloworld.py", "$[[names]]"]
    assert wf.output_files == ["results/greetings.txt", "results/analytics.json"]
    assert legacy.parameter("names") is not None
    assert legacy.parameter("names").target == "data/names.txt"  # type: ignore[union-attr]
    assert modern.source.endswith("benchmark.yaml")


def test_hello_world_results_schema() -> None:
    results = load_template(DATA / "helloworld_legacy.yaml").results
    assert results is not None
    assert results.file == "results/analytics.json"
    assert [(c.name, c.dtype, c.required) for c in results.columns] == [
        ("avg_count", "float", True),  # the docs' `type: decimal`
        ("max_len", "float", True),
        ("max_line", "string", False),
    ]
    assert results.order_by == [SortKey("avg_count", True), SortKey("max_len", False)]


def test_load_template_reports_yaml_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("workflow: {}\nworkflow: {}\n")
    with pytest.raises(InputError, match="duplicate key"):
        load_template(path)


def test_json_template(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('{"workflow": {"steps": [{"action": {"commands": "echo hi"}}]}}')
    template = load_template(path)
    assert template.workflow.steps[0].commands == ["echo hi"]
    assert template.source == str(path)


# -- top level ---------------------------------------------------------------------------


def test_unknown_top_level_key_lists_allowed() -> None:
    err = error(base(colour="red"))
    assert err.field == "colour"
    assert (
        err.expected is not None
        and "parameterGroups" in err.expected
        and "postproc" in err.expected
    )


def test_workflow_is_required() -> None:
    assert "'workflow'" in error({"parameters": []}).reason
    error("workflow")
    error(None)


def test_extensions() -> None:
    t = parse_template(base(executor="slurm", timeLimit="10m", retries=2), file=F)
    assert (t.executor, t.time_limit, t.retries) == ("slurm", 600.0, 2)
    t = parse_template(base(), file=F)
    assert (t.executor, t.time_limit, t.retries) == (None, None, 0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90s", 90.0), ("10m", 600.0), ("2h", 7200.0), ("1d", 86400.0),
     ("1:30:00", 5400.0), ("30:00", 1800.0), ("1-00:00:01", 86401.0), ("45", 45.0)],
)  # fmt: skip
def test_time_limit_forms(text: Any, seconds: float) -> None:
    assert parse_template(base(timeLimit=text), file=F).time_limit == seconds


@pytest.mark.parametrize(
    "value",
    [
        0,
        -1,
        True,
        "soon",
        "1:75:00",
        "10x",
        "",
        [],
        float("inf"),
        10**400,
        pytest.param(10**5000, id="int-of-5000-digits"),
        pytest.param("1" * 5000 + "-1:00:00", id="days-of-5000-digits"),
    ],
)
def test_time_limit_rejects(value: Any) -> None:
    assert error(base(timeLimit=value)).field == "timeLimit"


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_retries_rejects(value: Any) -> None:
    assert error(base(retries=value)).field == "retries"


def test_executor_rejects_non_strings() -> None:
    assert error(base(executor=3)).field == "executor"


# -- parameter groups --------------------------------------------------------------------


def test_parameter_groups() -> None:
    doc = base(parameterGroups=[{"name": "main", "title": "Main", "index": 0}])
    doc["parameters"][0]["module"] = "main"
    t = parse_template(doc, file=F)
    assert t.parameter_groups[0].title == "Main"
    assert t.parameters[0].group == "main"


@pytest.mark.parametrize(
    ("groups", "field"),
    [
        ([{"name": "g", "title": "G"}], "parameterGroups[0]"),
        ([{"name": "g", "title": "G", "index": 0, "extra": 1}], "parameterGroups[0].extra"),
        ([{"name": "g", "title": "G", "index": "0"}], "parameterGroups[0].index"),
        (
            [{"name": "g", "title": "G", "index": 0}, {"name": "g", "title": "H", "index": 1}],
            "parameterGroups[1].name",
        ),
    ],
)
def test_parameter_groups_strict(groups: list[Any], field: str) -> None:
    assert error(base(parameterGroups=groups)).field == field


def test_parameter_group_must_be_declared() -> None:
    doc = base(parameterGroups=[{"name": "main", "title": "Main", "index": 0}])
    doc["parameters"][0]["group"] = "other"
    err = error(doc)
    assert err.field == "parameters[0].group" and err.expected == "one of: main"
    doc = base()
    doc["parameters"][0]["group"] = "other"
    assert error(doc).field == "parameters[0].group"


# -- workflow, format A ------------------------------------------------------------------


def test_step_names_default_and_must_be_unique() -> None:
    wf: dict[str, Any] = {
        "steps": [{"action": {"commands": ["a"]}}, {"action": {"commands": ["b"]}}]
    }
    t = parse_template({"workflow": wf}, file=F)
    assert [s.name for s in t.workflow.steps] == ["step1", "step2"]
    wf["steps"][0]["name"] = "step2"
    assert error({"workflow": wf}).field == "workflow.steps[1].name"


@pytest.mark.parametrize("name", ["a b", "../x", "-x", "", "x" * 65, 3])
def test_step_names_are_file_safe(name: Any) -> None:
    wf = {"steps": [{"name": name, "action": {"commands": ["a"]}}]}
    assert error({"workflow": wf}).field == "workflow.steps[0].name"


def test_step_files_and_environment() -> None:
    wf = {
        "steps": [
            {
                "name": "s",
                "files": {"inputs": ["code/x.py"], "outputs": ["out/y.txt"]},
                "action": {"environment": "python:3.9", "commands": "python code/x.py"},
            }
        ]
    }
    step = parse_template({"workflow": wf}, file=F).workflow.steps[0]
    assert (step.inputs, step.outputs, step.environment, step.commands) == (
        ["code/x.py"],
        ["out/y.txt"],
        "python:3.9",
        ["python code/x.py"],
    )


@pytest.mark.parametrize("steps_value", [[], None])
def test_zero_steps_rejected(steps_value: Any) -> None:
    err = error({"workflow": {"steps": steps_value}})
    assert "no steps" in err.reason and err.field == "workflow"
    err = error({"workflow": {}})
    assert "no steps" in err.reason


@pytest.mark.parametrize(
    ("workflow", "field"),
    [
        ({"steps": [{"action": {"commands": []}}]}, "workflow.steps[0].action.commands"),
        ({"steps": [{"action": {"commands": ["ok", 3]}}]}, "workflow.steps[0].action.commands[1]"),
        (
            {"steps": [{"action": {"commands": ["ok", " "]}}]},
            "workflow.steps[0].action.commands[1]",
        ),
        (
            {"steps": [{"action": {"commands": ["a"], "image": "x"}}]},
            "workflow.steps[0].action.image",
        ),
        ({"steps": [{"action": {"environment": "x"}}]}, "workflow.steps[0].action"),
        ({"steps": [{"name": "a"}]}, "workflow.steps[0]"),
        ({"steps": [{"action": {"commands": ["a"]}, "env": {}}]}, "workflow.steps[0].env"),
        (
            {"steps": [{"action": {"commands": ["a"], "environment": 3}}]},
            "workflow.steps[0].action.environment",
        ),
        ({"steps": {"a": 1}}, "workflow.steps"),
        ({"steps": [{"action": {"commands": ["a"]}}], "colour": 1}, "workflow.colour"),
        (
            {"steps": [{"action": {"commands": ["a"]}}], "files": {"output": []}},
            "workflow.files.output",
        ),
        (
            {"steps": [{"action": {"commands": ["a"]}}], "files": {"outputs": ["/etc/x"]}},
            "workflow.files.outputs[0]",
        ),
        ({"steps": [{"action": {"commands": ["a"]}}], "parameters": ["a"]}, "workflow.parameters"),
        (
            {"steps": [{"action": {"commands": ["a"]}}], "parameters": {"a-b": 1}},
            "workflow.parameters.a-b",
        ),
        (
            {"steps": [{"action": {"commands": ["a"]}}], "parameters": {"a": {"b": 1}}},
            "workflow.parameters.a",
        ),
    ],
)
def test_workflow_strict(workflow: dict[str, Any], field: str) -> None:
    assert error({"workflow": workflow}).field == field


def test_actor_step_not_supported() -> None:
    doc = base()
    doc["workflow"]["steps"] = [{"action": "$[[n]]"}]
    err = error(doc)
    assert "not supported" in err.reason and err.field == "workflow.steps[0].action"


@pytest.mark.parametrize("action", [{"func": "pkg.fn", "arg": "x"}, {"notebook": "nb.ipynb"}])
def test_code_and_notebook_steps_not_supported(action: dict[str, Any]) -> None:
    err = error({"workflow": {"steps": [{"action": action}]}})
    assert "not supported: flowbatch runs shell command steps" in err.reason
    assert err.field == "workflow.steps[0].action"


# -- workflow, legacy format B -----------------------------------------------------------


def legacy(**extra: Any) -> dict[str, Any]:
    wf: dict[str, Any] = {
        "version": "0.3.0",
        "inputs": {"files": ["code/x.py"], "parameters": {"n": "${[[n]]}"}},
        "workflow": {
            "type": "serial",
            "specification": {"steps": [{"environment": "python:3.7", "commands": ["echo ${n}"]}]},
        },
    }
    wf.update(extra)
    return {"workflow": wf, "parameters": [{"name": "n", "dtype": "int"}]}


def test_legacy_layout_translated() -> None:
    t = parse_template(legacy(outputs={"files": ["out.txt"]}), file=F)
    assert t.workflow.context == {"n": "$[[n]]"}
    assert t.workflow.input_files == ["code/x.py"]
    assert t.workflow.output_files == ["out.txt"]
    assert t.workflow.steps[0].name == "step1" and t.workflow.steps[0].environment == "python:3.7"


def test_legacy_outputs_may_sit_inside_the_inner_workflow() -> None:
    doc = legacy()
    doc["workflow"]["workflow"]["outputs"] = {"files": ["a.txt"]}
    assert parse_template(doc, file=F).workflow.output_files == ["a.txt"]
    doc["workflow"]["outputs"] = {"files": ["b.txt"]}
    assert error(doc).field == "workflow.workflow.outputs"


def test_legacy_context_given_twice() -> None:
    assert error(legacy(parameters={"m": 1})).field == "workflow.parameters"


def test_legacy_type_must_be_serial() -> None:
    doc = legacy()
    doc["workflow"]["workflow"]["type"] = "cwl"
    err = error(doc)
    assert err.field == "workflow.workflow.type" and err.expected == "serial"


def test_legacy_zero_steps_rejected() -> None:
    doc = legacy()
    doc["workflow"]["workflow"]["specification"]["steps"] = []
    assert "no steps" in error(doc).reason


def test_legacy_strict_keys() -> None:
    doc = legacy()
    doc["workflow"]["workflow"]["specification"]["steps"][0]["image"] = "x"
    assert error(doc).field == "workflow.workflow.specification.steps[0].image"


def test_legacy_reference_checked_with_its_path() -> None:
    doc = legacy()
    doc["workflow"]["workflow"]["specification"]["steps"][0]["commands"] = ["echo ${[[m]]}"]
    err = error(doc)
    assert err.field == "workflow.workflow.specification.steps[0].commands[0]"
    assert "$[[m]]" in err.reason


def test_legacy_spelling_refused_in_the_modern_layout() -> None:
    doc = base()
    doc["workflow"]["parameters"]["n"] = "${[[n]]}"
    err = error(doc)
    assert err.field == "workflow.parameters.n" and "$[[name]]" in (err.hint or "")


# -- references and variables ------------------------------------------------------------


def test_undeclared_reference_names_path_and_declared_names() -> None:
    doc = base()
    doc["workflow"]["steps"][0]["action"]["commands"] = ["echo ${n}", "run $[[size ? --big : ]]"]
    err = error(doc)
    assert err.field == "workflow.steps[0].action.commands[1]"
    assert "$[[size]]" in err.reason
    assert err.expected is not None and "n" in err.expected


def test_reference_checked_everywhere_in_the_workflow() -> None:
    for where in ("files", "environment"):
        doc = base()
        if where == "files":
            doc["workflow"]["files"] = {"inputs": ["$[[data]]"]}
            field = "workflow.files.inputs[0]"
        else:
            doc["workflow"]["steps"][0]["action"]["environment"] = "$[[image]]"
            field = "workflow.steps[0].action.environment"
        assert error(doc).field == field


def test_conditional_reference_to_a_declared_parameter() -> None:
    doc = base()
    doc["parameters"].append({"name": "flag", "dtype": "bool", "defaultValue": False})
    doc["workflow"]["steps"][0]["action"]["commands"] = ["echo $[[flag ? --yes : --no]] ${n}"]
    parse_template(doc, file=F)


def test_unterminated_reference() -> None:
    doc = base()
    doc["workflow"]["steps"][0]["action"]["commands"] = ["echo $[[n"]
    assert "unterminated" in error(doc).reason


def test_a_reference_across_lines_is_refused() -> None:
    """The renderer substitutes a reference on one line: one spanning lines was checked
    here but reached bash as raw `$[[...` text (bash arithmetic)."""
    doc = base()
    doc["parameters"].append({"name": "v", "dtype": "bool", "defaultValue": False})
    doc["workflow"]["steps"][0]["action"]["commands"] = ["echo $[[v ?\n--verbose : --quiet]]"]
    err = error(doc)
    assert "unterminated" in err.reason and "one line" in (err.expected or "")


def test_nested_lists_rejected() -> None:
    doc = base()
    doc["workflow"]["files"] = {"inputs": [["a"]]}
    err = error(doc)
    assert "nested lists" in err.reason and err.field == "workflow.files.inputs[0]"


def test_unknown_variable_suggests_double_dollar() -> None:
    doc = base()
    doc["workflow"]["steps"][0]["action"]["commands"] = ["echo ${n}", "echo ${HOME}"]
    err = error(doc)
    assert err.reason == "unknown variable ${HOME}"
    assert err.field == "workflow.steps[0].action.commands[1]"
    assert err.hint == "write $${HOME} if you meant the shell's own variable"
    doc["workflow"]["steps"][0]["action"]["commands"] = ["echo $HOME"]
    err = error(doc)
    assert err.reason == "unknown variable $HOME" and err.hint is not None and "$$HOME" in err.hint


@pytest.mark.parametrize(
    "command",
    [
        "echo $${HOME} $$HOME",  # escaped: the shell's own variable
        "echo $(date) $1 $? $# $@ ${#a[@]} ${x:-1}",  # not placeholders: shell text
        "${python} code/x.py ${n} $n",  # builtin, context, parameter
        "echo ${java} ${scratch}",  # site variables
        "echo cost: 5$",
    ],
)
def test_known_variables_and_shell_text(command: str) -> None:
    doc = base()
    doc["workflow"]["steps"][0]["action"]["commands"] = [command]
    parse_template(doc, file=F, known_variables=["java", "scratch"])


def test_parameter_names_are_known_variables() -> None:
    doc = base()
    doc["workflow"]["parameters"] = {}
    doc["workflow"]["steps"][0]["action"]["commands"] = ["echo ${n}"]
    parse_template(doc, file=F)


def test_placeholders_helper() -> None:
    found = placeholders("a ${x} $$y $z $(b) $$${w}")
    assert [(p.name, p.braced) for p in found] == [("x", True), ("z", False), ("w", True)]
    assert "a ${x}"[found[0].start : found[0].end] == "${x}"


# -- native templates --------------------------------------------------------------------


def test_native_template_skips_flowserv_checks() -> None:
    doc = {
        "flowbatch": 1,
        "workflow": {
            "steps": [{"action": {"commands": ["echo {{ n }} ${HOME} $[[whatever]] {# c #}"]}}]
        },
        "parameters": [{"name": "n", "dtype": "int"}],
    }
    t = parse_template(doc, file=F)
    assert t.dialect == "native"
    assert t.workflow.steps[0].commands[0].startswith("echo {{ n }}")


def test_native_template_still_strict_and_needs_steps() -> None:
    assert "no steps" in error({"flowbatch": 1, "workflow": {"steps": []}}).reason
    err = error({"flowbatch": 1, "workflow": {"steps": [{"action": {"commands": ["a"]}}]}, "x": 1})
    assert err.field == "x"


@pytest.mark.parametrize("version", [2, "1", True, None])
def test_native_marker_version(version: Any) -> None:
    doc = {"flowbatch": version, "workflow": steps("a")}
    assert error(doc).field == "flowbatch"


# -- outputs -----------------------------------------------------------------------------


def test_outputs() -> None:
    t = parse_template(
        base(
            outputs=[
                {"source": "results/a.json", "title": "A", "format": {"type": "json"}},
                {"source": "results/b.png", "key": "plot", "caption": "B", "widget": {"x": 1}},
            ]
        ),
        file=F,
    )
    assert t.outputs is not None
    assert [(o.source, o.key) for o in t.outputs] == [
        ("results/a.json", "results/a.json"),
        ("results/b.png", "plot"),
    ]
    assert t.outputs[0].format == {"type": "json"} and t.outputs[1].widget == {"x": 1}
    assert parse_template(base(), file=F).outputs is None


@pytest.mark.parametrize(
    ("outputs", "field"),
    [
        ([{"key": "a"}], "outputs[0]"),
        ([{"source": "a", "size": 1}], "outputs[0].size"),
        ([{"source": "a", "format": "json"}], "outputs[0].format"),
        ([{"source": "../a"}], "outputs[0].source"),
        ([{"source": "a"}, {"source": "b", "key": "a"}], "outputs[1]"),
        ({"source": "a"}, "outputs"),
    ],
)
def test_outputs_strict(outputs: Any, field: str) -> None:
    assert error(base(outputs=outputs)).field == field


# -- results -----------------------------------------------------------------------------


def results(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "file": "results/r.json",
        "schema": [
            {"name": "acc", "label": "Accuracy", "dtype": "float"},
            {"name": "n", "label": "Count", "type": "int", "path": "stats/n"},
            {"name": "note", "label": "Note", "type": "string", "required": False},
        ],
    }
    doc.update(extra)
    return doc


def test_results_default_order_is_first_column_descending() -> None:
    schema = parse_template(base(results=results()), file=F).results
    assert schema is not None
    assert schema.order_by == [SortKey("acc", True)]
    assert schema.column("n").path == "stats/n"
    assert schema.column("note").required is False


def test_results_sort_desc_defaults_to_true() -> None:
    schema = parse_template(
        base(results=results(orderBy=[{"name": "n"}, {"name": "acc", "sortDesc": False}])), file=F
    ).results
    assert schema is not None
    assert schema.order_by == [SortKey("n", True), SortKey("acc", False)]


def with_column(i: int, **changes: Any) -> dict[str, Any]:
    doc = results()
    doc["schema"][i] = {**doc["schema"][i], **changes}
    return doc


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (with_column(1, label="Accuracy"), "results.schema[1].label"),
        (with_column(1, name="acc"), "results.schema[1].name"),
        (with_column(0, dtype="bool"), "results.schema[0].dtype"),
        (with_column(0, type="float"), "results.schema[0]"),
        (with_column(0, unit="%"), "results.schema[0].unit"),
        (with_column(0, required="no"), "results.schema[0].required"),
        (with_column(0, path="a//b"), "results.schema[0].path"),
        (results(orderBy=[{"name": "missing"}]), "results.orderBy[0].name"),
        (results(orderBy=[{"name": "acc"}, {"name": "acc"}]), "results.orderBy[1].name"),
        (results(orderBy=[{"name": "acc", "desc": True}]), "results.orderBy[0].desc"),
        (results(orderBy=[{"name": "acc", "sortDesc": "yes"}]), "results.orderBy[0].sortDesc"),
        (results(schema=[]), "results.schema"),
        (results(file="/tmp/r.json"), "results.file"),
        (results(extra=1), "results.extra"),
        ({"schema": []}, "results"),
    ],
)
def test_results_strict(doc: dict[str, Any], field: str) -> None:
    assert error(base(results=doc)).field == field


def test_results_column_without_label() -> None:
    doc = results()
    del doc["schema"][0]["label"]
    assert "'label'" in error(base(results=doc)).reason


# -- post-processing ---------------------------------------------------------------------


def postproc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "workflow": {
            "steps": [
                {
                    "name": "plot",
                    "action": {
                        "environment": "python:3.9",
                        "commands": ["${python} plot.py $[[runs]] results", "ls ${runs}"],
                    },
                }
            ]
        },
        "inputs": {"files": ["results/r.json"], "runs": ".runs"},
        "outputs": [{"source": "results/plot.png", "title": "ROC"}],
    }
    doc.update(extra)
    return doc


def test_postproc_allows_runs_reference() -> None:
    pp = parse_template(base(postproc=postproc()), file=F).postproc
    assert pp is not None
    assert pp.runs_target == ".runs" and pp.input_files == ["results/r.json"]
    assert pp.outputs is not None and pp.outputs[0].title == "ROC"
    assert pp.workflow.steps[0].name == "plot"


def test_postproc_runs_defaults() -> None:
    pp = parse_template(base(postproc=postproc(inputs={"files": []})), file=F).postproc
    assert pp is not None and pp.runs_target == "runs"
    doc = postproc()
    del doc["inputs"]
    pp = parse_template(base(postproc=doc), file=F).postproc
    assert pp is not None and pp.runs_target == "runs" and pp.input_files == []


def test_postproc_sees_no_user_parameters() -> None:
    doc = postproc()
    doc["workflow"]["steps"][0]["action"]["commands"] = ["echo $[[n]]"]
    err = error(base(postproc=doc))
    assert err.field == "postproc.workflow.steps[0].action.commands[0]"
    assert err.expected is not None and "runs" in err.expected
    doc["workflow"]["steps"][0]["action"]["commands"] = ["echo ${n}"]
    assert error(base(postproc=doc)).reason == "unknown variable ${n}"


def test_postproc_legacy_layout_of_the_docs() -> None:
    doc = {
        "workflow": {
            "version": "0.3.0",
            "inputs": {"files": ["postproc_code/", "data/evaluate/labels.pkl"]},
            "workflow": {
                "type": "serial",
                "specification": {
                    "steps": [
                        {
                            "environment": "heikomueller/toptaggerdemo:1.0",
                            "commands": [
                                "python postproc_code/plot-roc-auc.py $[[runs]] "
                                "data/evaluate/labels.pkl results"
                            ],
                        }
                    ]
                },
                "outputs": {"files": ["results/ROC-AUC.png"]},
            },
        },
        "inputs": {"files": ["results/yProbBest.pkl"], "runs": ".runs"},
    }
    pp = parse_template(base(postproc=doc), file=F).postproc
    assert pp is not None and pp.workflow.output_files == ["results/ROC-AUC.png"]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (postproc(extra=1), "postproc.extra"),
        (postproc(inputs={"runs": "r"}), "postproc.inputs"),
        (postproc(inputs={"files": [], "run": "r"}), "postproc.inputs.run"),
        (postproc(inputs={"files": [], "runs": "../r"}), "postproc.inputs.runs"),
        (postproc(workflow={"steps": []}), "postproc.workflow"),
        ({"inputs": {"files": []}}, "postproc"),
    ],
)
def test_postproc_strict(doc: dict[str, Any], field: str) -> None:
    assert error(base(postproc=doc)).field == field


def test_parse_does_not_modify_the_document() -> None:
    doc = legacy()
    before = copy.deepcopy(doc)
    parse_template(doc, file=F)
    assert doc == before
