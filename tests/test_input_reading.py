"""How settings are read (issue #22, classes 1, 8 and 9): the YAML 1.2 core schema everywhere, non-finite numbers
refused naming the file and the key, and parsing bounded in nesting, alias expansion and message length.

Every file, `--set` value and pipeline config is read by one reader (spfl.configuration.reading.load_yaml).
The expectations
are YAML 1.2's (https://yaml.org/spec/1.2.2/#1032-tag-resolution), not PyYAML's YAML 1.1: `010` is ten,
`0o10` eight, `4:33` and `yes` are strings; a run spec gets what a JSON reader of the same text would get.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from spfl import cli
from spfl.configuration.pipeline import ConfigError, read_config
from spfl.configuration.plan import load_plan
from spfl.configuration.reading import load_spec, load_yaml, parse_assignment
from spfl.configuration.settings import SETTING, SpecError
from workflow_helpers import ROOT, tiny_config

RUN = {"dataset": "digits", "model": "mlp", "num_devices": 5, "rounds": 2, "eval_every": 1}

# A "billion laughs": 9 levels of 9 aliases, 342 bytes that expand to 9^9 = 387,420,489 strings.
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))



def refused(function, *args) -> str:
    with pytest.raises(SpecError) as caught:
        function(*args)
    message = str(caught.value)
    assert "\n" not in message
    return message


def spfl_run(tmp_path: Path, capsys, *argv: str) -> tuple[int, str]:
    status = cli.main(["run", *argv, "--out", str(tmp_path / "out")])
    return status, capsys.readouterr().err


# -- class 1: the YAML 1.2 core schema -----------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("010", 10),                # YAML 1.1: octal 8
    ("0010", 10),
    ("-010", -10),
    ("0o10", 8),                # YAML 1.2's octal
    ("0x1F", 31),
    ("4:33", "4:33"),           # YAML 1.1: base 60, 273
    ("1:00:00", "1:00:00"),
    ("1_000", "1_000"),         # YAML 1.1: 1000
    ("yes", "yes"),             # YAML 1.1: true
    ("off", "off"),
    ("y", "y"),
    ("2001-01-01", "2001-01-01"),  # YAML 1.1: a date
    ("True", True),
    ("FALSE", False),
    ("1e-05", 1e-05),           # YAML 1.1: a string (no dot)
    ("1E3", 1000.0),
    ("-.5", -0.5),
    ("5.", 5.0),
    ("~", None),
    ("Null", None),
    ("=", "="),
])
def test_scalars_read_as_the_yaml_1_2_core_schema(text, value):
    assert load_yaml(f"x: {text}\n") == {"x": value}
    assert type(load_yaml(f"x: {text}\n")["x"]) is type(value)


def test_a_leading_zero_is_decimal_in_a_run_spec_a_set_and_a_pipeline_config(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("seed: 010\nrounds: 012\n")
    assert (load_spec(spec).seed, load_spec(spec).rounds) == (10, 12)
    assert parse_assignment("seed=010") == ("seed", 10)
    config = tmp_path / "config.yaml"
    config.write_text((ROOT / "config" / "test.yaml").read_text().replace("seeds: [0, 1]", "seeds: [010, 011]"))
    assert load_plan(read_config([config])).experiments["power"].seeds == (10, 11)
    assert read_config([config], {"seeds": ["010"]})["seeds"] == [10]  # --config seeds=[010], as Snakemake hands it


def test_a_sexagesimal_time_is_a_string_and_refused_by_the_setting_naming_the_file(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("deadline_ms: 4:33\n")
    assert refused(load_spec, spec) == (f"{spec}: run setting 'deadline_ms' = '4:33' is invalid: allowed "
                                        f"{SETTING['deadline_ms'].allowed()}")
    assert refused(parse_assignment, "deadline_ms=4:33").startswith("--set 'deadline_ms=4:33': run setting "
                                                                     "'deadline_ms' = '4:33' is invalid")


def test_an_explicit_tag_follows_the_core_schema_too():
    assert load_yaml("x: !!int 010\n") == {"x": 10}
    assert load_yaml("x: !!int 0o17\n") == {"x": 15}
    message = refused(load_yaml, "x: !!int 4:33\n")
    assert message.startswith("YAML text is not valid YAML/JSON: line 1, column 4: '4:33' is not a YAML 1.2 integer")


def test_merge_keys_still_merge():
    assert load_yaml("a: &a {seed: 1, rounds: 2}\nb:\n  <<: *a\n  seed: 010\n") == {
        "a": {"seed": 1, "rounds": 2}, "b": {"seed": 10, "rounds": 2}}


# -- class 8: infinity and NaN ------------------------------------------------------------------------

@pytest.mark.parametrize("spec_name, text, key, shown", [
    ("spec.yaml", "rounds: .inf\n", "rounds", "inf"),
    ("spec.yaml", "seed: -.inf\n", "seed", "-inf"),
    ("spec.yaml", "num_devices: .nan\n", "num_devices", "nan"),
    ("spec.yaml", "rounds: 1e400\n", "rounds", "inf"),
    ("spec.yaml", "deadline_ms: .inf\n", "deadline_ms", "inf"),
    ("spec.yaml", "learning_rate: .nan\n", "learning_rate", "nan"),
    ("spec.json", '{"rounds": Infinity}', "rounds", "inf"),
    ("spec.json", '{"seed": NaN}', "seed", "nan"),
    ("spec.json", '{"batch_size": -Infinity}', "batch_size", "-inf"),
    ("spec.json", '{"total_bandwidth_mhz": Infinity}', "total_bandwidth_mhz", "inf"),
])
def test_non_finite_numbers_in_a_file_are_one_line_naming_file_key_value_and_what_is_allowed(
        tmp_path, capsys, monkeypatch, restore_logging, spec_name, text, key, shown):
    monkeypatch.chdir(tmp_path)
    Path(spec_name).write_text(text)
    status, err = spfl_run(tmp_path, capsys, spec_name)
    assert status == 2
    assert err == (f"spfl run: error: {spec_name}: run setting '{key}' = {shown} is invalid: allowed "
                   f"{SETTING[key].allowed()}\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("assignment, key, shown", [
    ("rounds=.inf", "rounds", "inf"), ("seed=.nan", "seed", "nan"), ("eval_every=-.inf", "eval_every", "-inf"),
    ("rounds=1e999", "rounds", "inf"), ("smoothness=.nan", "smoothness", "nan"),
])
def test_non_finite_numbers_in_a_set_name_the_set_and_the_key(tmp_path, capsys, monkeypatch, restore_logging,
                                                               assignment, key, shown):
    monkeypatch.chdir(tmp_path)
    Path("spec.yaml").write_text(json.dumps(RUN))
    status, err = spfl_run(tmp_path, capsys, "spec.yaml", "--set", assignment)
    assert status == 2
    assert err == (f"spfl run: error: --set '{assignment}': run setting '{key}' = {shown} is invalid: allowed "
                   f"{SETTING[key].allowed()}\n")


@pytest.mark.parametrize("key, text", [("rounds", ".inf"), ("deadline_ms", ".nan"), ("seed", ".nan")])
def test_non_finite_numbers_in_a_pipeline_config_name_the_config_key(tmp_path, key, text):
    config = tmp_path / "config.yaml"
    line = f"  rounds: {text}\n" if key == "rounds" else f"  rounds: 6\n  {key}: {text}\n"
    config.write_text((ROOT / "config" / "test.yaml").read_text().replace("  rounds: 6\n", line))
    with pytest.raises(ConfigError) as caught:
        load_plan(read_config([config]))
    assert f"base.{key}" in str(caught.value) or f"'{key}'" in str(caught.value)
    assert "allowed" in str(caught.value)


# -- class 9: bounded parsing ------------------------------------------------------------------------------

def test_the_alias_bomb_is_a_few_hundred_bytes():
    assert len(ALIAS_BOMB.encode()) == 342


@pytest.mark.parametrize("where", ["file", "set", "config"])
def test_an_alias_bomb_is_refused_at_once_in_one_line(tmp_path, where):
    started = time.monotonic()
    if where == "file":
        path = tmp_path / "spec.yaml"
        path.write_text(ALIAS_BOMB + "seed: *i\n")
        message = refused(load_spec, path)
        assert message.startswith(f"run spec file '{path}' is not valid YAML/JSON: line ")
    elif where == "set":
        message = refused(parse_assignment, "seed=" + "{" + ALIAS_BOMB.replace("\n", ", ").rstrip(", ") + "}")
        assert message.startswith("--set 'seed={")
    else:
        path = tmp_path / "config.yaml"
        path.write_text(ALIAS_BOMB)
        with pytest.raises(ConfigError) as caught:
            read_config([path])
        message = str(caught.value)
        assert message.startswith(f"config file '{path}' is not valid YAML/JSON")
    assert "expands (its aliases resolved) to more than 100000 values: allowed at most 100000" in message
    assert len(message) < 400 and time.monotonic() - started < 10


@pytest.mark.parametrize("suffix, text", [
    (".yaml", "seed: " + "[" * 5000 + "]" * 5000 + "\n"),
    (".yaml", "seed:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)) + "  " * 200 + "v: 1\n"),
    (".json", '{"seed": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    (".json", '{"seed": ' + "[" * 60 + "]" * 60 + "}"),
])
def test_deep_nesting_is_refused_in_one_line(tmp_path, capsys, monkeypatch, restore_logging, suffix, text):
    monkeypatch.chdir(tmp_path)
    Path("spec" + suffix).write_text(text)
    status, err = spfl_run(tmp_path, capsys, "spec" + suffix)
    assert status == 2 and len(err.splitlines()) == 1, err[-2000:]
    assert err.startswith(f"spfl run: error: run spec file 'spec{suffix}' is not valid YAML/JSON")
    assert "nests deeper than 50 levels: allowed at most 50" in err


def test_a_set_value_nested_too_deep_is_refused():
    assert "nests deeper than 50 levels" in refused(parse_assignment, "seed=" + "[" * 3000 + "]" * 3000)


def test_nesting_up_to_the_limit_is_read():
    value = load_yaml("[" * 50 + "]" * 50)
    depth = 0
    while isinstance(value, list):
        depth, value = depth + 1, (value[0] if value else None)
    assert depth == 50


@pytest.mark.parametrize("text", [
    "seed: '" + "x" * 1_000_000 + "'\n",
    "seed: [" + ", ".join(["12345678"] * 100_000) + "]\n",
    "x" * 1_000_000 + ": 1\n",
    "seed: {" + ", ".join(f"k{i}: {i}" for i in range(50_000)) + "}\n",
])
def test_a_huge_value_is_cut_short_in_the_message(tmp_path, capsys, monkeypatch, restore_logging, text):
    monkeypatch.chdir(tmp_path)
    Path("spec.yaml").write_text(text)
    status, err = spfl_run(tmp_path, capsys, "spec.yaml")
    assert status == 2 and len(err.splitlines()) == 1
    assert len(err) < 1500, len(err)
    assert "spec.yaml" in err


def test_a_huge_set_is_cut_short_in_the_message(tmp_path, capsys, monkeypatch, restore_logging):
    monkeypatch.chdir(tmp_path)
    Path("spec.yaml").write_text(json.dumps(RUN))
    for assignment in ("seed=" + "9" * 100_000, "x" * 100_000 + "=1", "seed='" + "y" * 100_000 + "'"):
        status, err = spfl_run(tmp_path, capsys, "spec.yaml", "--set", assignment)
        assert status == 2 and len(err.splitlines()) == 1 and len(err) < 1500, err[:300]


def test_a_file_over_one_mebibyte_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("# " + "x" * (1 << 20) + "\nseed: 1\n")
    assert refused(load_spec, path) == (f"run spec file '{path}' is larger than 1 MiB: allowed a YAML or JSON file of "
                                        "at most 1 MiB")


def test_every_number_accepted_is_finite():
    for setting in SETTING.values():
        if setting.kind in (int, float):
            assert setting.minimum is not None and setting.maximum is not None, setting.name
            assert math.isfinite(setting.minimum) and math.isfinite(setting.maximum), setting.name


def test_the_tiny_config_still_reads_the_same():
    assert read_config([ROOT / "config" / "test.yaml"]) == tiny_config()


@pytest.mark.parametrize("key", ["deadline_ms", "learning_rate", "rounds", "seed"])
def test_an_integer_beyond_the_range_of_floats_is_refused_naming_the_key(tmp_path, key):
    path = tmp_path / "spec.yaml"
    path.write_text(f"{key}: 1{'0' * 400}\n")
    message = refused(load_spec, path)
    assert message.startswith(f"{path}: run setting '{key}' = 1000") and "allowed" in message and len(message) < 300


@pytest.mark.parametrize("text", ["seed: &a [*a]\n", "seed: &a {x: [*a]}\n", "a: &a [1]\nb: &b [*a, [*b]]\n"])
def test_an_alias_inside_its_own_value_is_refused_at_once(text):
    started = time.monotonic()
    message = refused(load_yaml, text)
    assert "holds an alias to a value that contains it (a cycle)" in message and time.monotonic() - started < 5


def test_shared_aliases_within_the_bound_still_load():
    assert load_yaml("a: &a [1, 2]\nb: [*a, *a]\nc: {<<: {x: 1}, y: *a}\n") == {
        "a": [1, 2], "b": [[1, 2], [1, 2]], "c": {"x": 1, "y": [1, 2]}}
