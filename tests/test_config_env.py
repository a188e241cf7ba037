"""Site config: FLOWBATCH_* overrides, errors that name the key, `config show`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from flowbatch.cli import main
from flowbatch.config import load_config
from flowbatch.configsrc import env_value, load, redact_url
from flowbatch.errors import ConfigError


def _site(tmp_path: Path, config: dict | None = None) -> Path:
    (tmp_path / "flowbatch.yaml").write_text(yaml.safe_dump(config or {}))
    return tmp_path


def test_environment_overrides_file_and_defaults(tmp_path: Path) -> None:
    root = _site(tmp_path, {"local": {"concurrency": 2}, "polling": {"interval": 5}})
    env = {
        "FLOWBATCH_LOCAL__CONCURRENCY": "8",
        "FLOWBATCH_POLLING__SETTLE": "0",
        "FLOWBATCH_EXECUTOR": "local",
        "FLOWBATCH_TIME_LIMIT": "10m",
        "FLOWBATCH_VARIABLES": "{java: /usr/bin/java}",
        "FLOWBATCH_SITE": "/elsewhere",  # the CLI's site folder, not a config key
        "FLOWBATCH_DATABSE": "sqlite:///typo.db",  # misspelt: ignored, but listed
    }
    loaded = load(root, env)
    config = loaded.config
    assert config.local.concurrency == 8
    assert config.polling.interval == 5.0  # the file's value where no variable is set
    assert config.polling.settle == 0.0
    assert config.time_limit == 600.0
    assert config.variables == {"java": "/usr/bin/java"}
    assert loaded.ignored == ["FLOWBATCH_DATABSE"]  # FLOWBATCH_SITE is known not to be config
    sources = {r["key"]: r["source"] for r in loaded.describe()}
    assert sources["local.concurrency"] == "environment (FLOWBATCH_LOCAL__CONCURRENCY)"
    assert sources["polling.interval"] == "flowbatch.yaml"
    assert sources["max_request_bytes"] == "default"
    assert sources["variables.java"] == "environment (FLOWBATCH_VARIABLES)"


def test_load_config_reads_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWBATCH_LOCAL__CONCURRENCY", "3")
    assert load_config(_site(tmp_path)).local.concurrency == 3


def test_env_value_forms() -> None:
    assert env_value("8") == "8"  # pydantic casts it, as a value from the file
    assert env_value("null") is None
    assert env_value("[alice, bob]") == ["alice", "bob"]
    assert env_value("postgresql://u@h/db") == "postgresql://u@h/db"


@pytest.mark.parametrize(
    ("env", "field", "words"),
    [
        ({"FLOWBATCH_LOCAL__CONCURRENCY": "many"}, "local.concurrency", "valid integer"),
        ({"FLOWBATCH_LOCAL__CONCURENCY": "2"}, "local.concurency", "concurrency"),
        ({"FLOWBATCH_POLLING__INTERVAL": "-1"}, "polling.interval", "greater than 0"),
        ({"FLOWBATCH_TIME_LIMIT": "soon"}, "time_limit", "not a duration"),
    ],
)
def test_a_bad_variable_is_named(tmp_path: Path, env: dict, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(_site(tmp_path), env)
    var = next(iter(env))
    assert err.value.field == field
    assert err.value.file == f"environment variable {var}"
    assert words in err.value.summary()
    assert var in (err.value.hint or "")


def test_file_errors_name_key_and_expected_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(_site(tmp_path, {"polling": {"intervall": 1}}), {})
    assert err.value.field == "polling.intervall"
    assert err.value.expected == "one of: interval, settle"
    assert err.value.file == str(tmp_path / "flowbatch.yaml")
    with pytest.raises(ConfigError) as err:
        load(_site(tmp_path, {"local": {"concurrency": 0}}), {})
    assert err.value.field == "local.concurrency"
    assert "greater than or equal to 1" in err.value.reason and "got 0" in err.value.reason


def _show(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(
        main, ["--site", str(root), "config", "show", *args], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_config_show_text_and_json(tmp_path: Path) -> None:
    root = _site(tmp_path, {"executor": "local", "database": "postgresql://fb:secret@db/fb"})
    env = {"FLOWBATCH_LOCAL__CONCURRENCY": "6"}
    text = _show(root, env=env)
    assert "secret" not in text
    lines = {line.split()[0]: line.split() for line in text.splitlines()[2:] if line.strip()}
    assert lines["local.concurrency"][1:] == ["6", "environment", "(FLOWBATCH_LOCAL__CONCURRENCY)"]
    assert lines["executor"][1:] == ["local", "flowbatch.yaml"]
    assert lines["polling.interval"][1:] == ["2.0", "default"]
    data = json.loads(_show(root, "--json", env=env))
    rows = {r["key"]: r for r in data["values"]}
    assert rows["database"]["value"] == "postgresql://fb:***@db/fb"
    assert rows["local.concurrency"] == {
        "key": "local.concurrency",
        "value": 6,
        "source": "environment (FLOWBATCH_LOCAL__CONCURRENCY)",
    }


def test_config_show_reports_an_invalid_config(tmp_path: Path) -> None:
    root = _site(tmp_path, {"local": {"concurrency": "lots"}})
    result = CliRunner().invoke(main, ["--site", str(root), "config", "show"])
    assert result.exit_code == 1
    assert "local.concurrency" in result.output and "valid integer" in result.output


def test_redact_url() -> None:
    assert redact_url("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert redact_url("sqlite:////srv/x.db") == "sqlite:////srv/x.db"


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("mysql://u:secretpw@h/x", "not an index database URL flowbatch supports"),
        ("mysql:///x", "not an index database URL flowbatch supports"),
        ("nonsense", "not an index database URL flowbatch supports"),
        ("postgresql://u:secretpw@h", "needs its database's name"),
    ],
)
def test_a_database_url_flowbatch_cannot_use_is_said_when_read(
    tmp_path: Path, url: str, said: str
) -> None:
    """It was said at the first query, as the database library's own error ("MySQL driver
    not installed", a bare ValueError); the password never shows (found by review)."""
    with pytest.raises(ConfigError) as caught:
        load(_site(tmp_path, {"database": url}), {})
    text = caught.value.summary()
    assert said in text and "database" in text and "secretpw" not in text
    for good in ("sqlite:////srv/x.db", "postgresql://u@h:5432/db", "postgres+pool://u@h/db"):
        assert load(_site(tmp_path, {"database": good}), {}).config.database == good


def test_an_unknown_key_of_a_named_section_lists_the_sections_keys(tmp_path: Path) -> None:
    """`ssh.<host>` and `slurm.<profile>` are maps of sections: their keys were not found
    ("expected one of: " and nothing)."""
    for config, key, known in (
        ({"ssh": {"n1": {"hostname": "x", "bogus": 1}}}, "ssh.n1.bogus", "hostname, port"),
        ({"slurm": {"default": {"bogus": 1}}}, "slurm.default.bogus", "partition, account"),
        ({"local": {"bogus": 1}}, "local.bogus", "concurrency"),
    ):
        with pytest.raises(ConfigError) as caught:
            load(_site(tmp_path, config), {})
        assert caught.value.field == key and known in (caught.value.expected or ""), config
