"""How run specs, `--set` values and pipeline configs are read (spfl.configuration.reading): the YAML 1.2 core
schema, repeated keys refused, non-finite numbers refused, bounded parsing, one-line messages with line and column."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest
import yaml

from core_helpers import refused
from spfl import cli
from spfl.configuration.pipeline import ConfigError, read_config
from spfl.configuration.plan import load_plan
from spfl.configuration.reading import load_spec, load_yaml, parse_assignment
from spfl.configuration.settings import SETTING, SpecError, make_spec
from workflow_helpers import ROOT, tiny_config

RUN = {"dataset": "digits", "model": "mlp", "num_devices": 5, "rounds": 2, "eval_every": 1}

# A "billion laughs": 9 levels of 9 aliases, 342 bytes that expand to 9^9 = 387,420,489 strings.
ALIAS_BOMB = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


def spfl_run(tmp_path: Path, capsys, *argv: str) -> tuple[int, str]:
    status = cli.main(["run", *argv, "--out", str(tmp_path / "out")])
    return status, capsys.readouterr().err


# -- class 1: the YAML 1.2 core schema -----------------------------------------------------------------
# Every file, `--set` value and pipeline config is read by one reader (load_yaml).  The expectations are YAML
# 1.2's (https://yaml.org/spec/1.2.2/#1032-tag-resolution), not PyYAML's YAML 1.1: `010` is ten, `0o10` eight,
# `4:33` and `yes` are strings; a run spec gets what a JSON reader of the same text would get.

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


@pytest.mark.parametrize("text, expected", [
    # YAML 1.2 core: no underscores in numbers (YAML 1.1 read 1_000 as 1000), so a string
    ("a: 1e-05\nb: 1e+30\nc: 2.5\nd: 1_000\n", {"a": 1e-05, "b": 1e30, "c": 2.5, "d": "1_000"}),
    ('{"a": 1e-05, "b": [1, 2]}', {"a": 1e-05, "b": [1, 2]}),
    ("base: &b {x: 1, y: 2}\nover:\n  <<: *b\n  x: 3\n", {"base": {"x": 1, "y": 2}, "over": {"x": 3, "y": 2}}),
    ("", None),
])
def test_yaml_12_floats_and_merge_keys_still_load(text, expected):
    assert load_yaml(text) == expected


def test_merge_keys_and_distinct_keys_are_read():
    assert load_yaml("base: &b {seed: 1, rounds: 2}\nrun:\n  <<: *b\n  seed: 4\n") == {
        "base": {"seed": 1, "rounds": 2}, "run": {"seed": 4, "rounds": 2}}
    assert load_yaml("lr: 1e-05\nbig: 1E+30\nplain: 3\n") == {"lr": 1e-05, "big": 1e30, "plain": 3}
    assert load_yaml("{1: a, 2: b, x: c}") == {1: "a", 2: "b", "x": "c"}
    with pytest.raises(SpecError, match="not valid YAML/JSON: line 1.*unhashable"):  # the reader's own message
        load_yaml("{[1, 2]: a}")


def test_every_committed_config_loads_as_before():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        assert load_yaml(path) == yaml.safe_load(path.read_text()), path


# -- repeated keys: refused with their lines ------------------------------------------------------------

@pytest.mark.parametrize("text, line, first", [
    ("seed: 1\nrounds: 2\nseed: 3\n", 3, 1),
    ("a:\n  x: 1\n  y: 2\n  x: 5\n", 4, 2),
    ('{"seed": 1,\n "seed": 2}', 2, 1),
])
def test_repeated_keys_are_refused_with_their_lines(text, line, first):
    key = "x" if "x:" in text else "seed"
    with pytest.raises(SpecError) as error:
        load_yaml(text, source="'spec.yaml'")
    assert str(error.value) == (f"'spec.yaml' line {line} repeats key '{key}' (first at line {first}): "
                                "allowed each key once")


def test_repeated_key_in_a_json_file_names_the_file_and_line(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text('{"seed": 1,\n "rounds": 2,\n "seed": 2}')
    with pytest.raises(SpecError) as error:
        load_yaml(path)
    assert str(error.value) == f"'{path}' line 3 repeats key 'seed' (first at line 1): allowed each key once"


def test_a_pipeline_config_with_a_repeated_experiment_is_refused_naming_file_key_and_line(tmp_path):
    config = (ROOT / "config" / "test.yaml").read_text()
    lines = config.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("experiments:")) + 2  # 1-based, next line
    name = lines[first - 1].strip().rstrip(":")
    repeated = "\n".join([*lines[:first - 1], f"  {name}: {{grid: {{seed: [0]}}}}", *lines[first - 1:]]) + "\n"
    path = tmp_path / "repeated.yaml"
    path.write_text(repeated)
    with pytest.raises(SpecError) as error:
        load_yaml(path)
    assert str(error.value) == (f"'{path}' line {first + 1} repeats key '{name}' (first at line {first}): "
                                f"allowed each key once")
    with pytest.raises(SpecError, match=rf"^config file 'x.yaml' line {first + 1} repeats key '{name}'"):
        load_yaml(repeated, source="config file 'x.yaml'")


def test_json_repeat_that_yaml_cannot_locate_is_still_refused(tmp_path):
    """A tab between JSON tokens is valid JSON but not YAML, so the line of the repeat cannot be found by
    reading the text as YAML: the repeat is reported without a line, never accepted with the last value."""
    path = tmp_path / "spec.json"
    path.write_text('{"seed": 1,\t"rounds": 2,\t"seed": 3}')
    assert refused(load_yaml, path) == f"'{path}' repeats key 'seed': allowed each key once"
    path.write_text('{"seed": 1,\n"rounds": 2,\n"seed": 3}')  # without tabs YAML finds the line
    assert refused(load_yaml, path) == f"'{path}' line 3 repeats key 'seed' (first at line 1): allowed each key once"


def test_a_repeated_key_after_an_unhashable_key_is_still_found():
    """The repeat check goes on past an unhashable (list) key rather than stopping at it."""
    text = "? [1, 2]\n: a\nseed: 1\nseed: 2\n"
    assert refused(load_yaml, text) == "YAML text line 4 repeats key 'seed' (first at line 3): allowed each key once"
    assert refused(load_yaml, "? [1, 2]\n: a\n") == ("YAML text is not valid YAML/JSON: line 1, column 3: found "
                                                     "unhashable key")


# -- files and --set: each mistake is one line naming the file or the --set, the value and what is allowed

def test_unreadable_spec_files_are_named(tmp_path):
    missing, folder, binary = tmp_path / "missing.yaml", tmp_path / "folder.yaml", tmp_path / "binary.yaml"
    folder.mkdir()
    binary.write_bytes(b"seed: 1\n\xff\xfe")
    assert refused(load_yaml, missing) == f"'{missing}' not found"
    assert refused(load_yaml, folder) == f"'{folder}' is a folder: allowed a YAML or JSON file"
    assert refused(load_yaml, binary) == (f"'{binary}' is not a text file (byte 8 is not UTF-8): allowed a YAML or "
                                          "JSON file")
    assert refused(load_yaml, missing, "the config") == "the config not found"  # a source replaces the path


def test_unreadable_file_names_the_file_and_the_system_reason(tmp_path, monkeypatch):
    """Not testable with file modes as root: the read itself is made to fail as it would without permission."""
    path = tmp_path / "spec.yaml"
    path.write_text("seed: 1\n")

    def no_permission(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", no_permission)
    assert refused(load_yaml, path) == f"'{path}' cannot be read: Permission denied"

    def no_reason(self):
        raise OSError("device vanished")  # an OSError without errno/strerror: its text is the reason

    monkeypatch.setattr(Path, "read_bytes", no_reason)
    assert refused(load_yaml, path) == f"'{path}' cannot be read: device vanished"


def test_yaml_file_errors_name_the_file(tmp_path):
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")
    for name, message in (("missing.yaml", "not found"), ("folder.yaml", "is a folder"),
                          ("binary.yaml", "is not a text file (byte 0 is not UTF-8)")):
        with pytest.raises(SpecError, match="^" + re.escape(f"'{tmp_path / name}' {message}")):
            load_yaml(tmp_path / name)


def test_malformed_yaml_and_json_name_line_and_column(tmp_path):
    broken_json = tmp_path / "spec.json"
    broken_json.write_text('{"seed": 1,\n "rounds": }')
    message = refused(load_yaml, broken_json)
    assert message.startswith(f"'{broken_json}' is not valid JSON: line 2, column 12: ")
    assert refused(load_yaml, "a: [1, 2\nb: 3\n", "'x.yaml'").startswith("'x.yaml' is not valid YAML/JSON: line ")
    control = refused(load_yaml, "seed: 1\x07\n", "'x.yaml'")
    assert control == "'x.yaml' is not a text file (character #x0007 at position 7): allowed a YAML or JSON file"
    assert load_yaml("seed: 1\n") == {"seed": 1}


@pytest.mark.parametrize("text, message", [
    ("a:\n  b: 1\n  b: 2\n", "'f' line 3 repeats key 'b' (first at line 2): allowed each key once"),
    ("x: [1,\n", "'f' is not valid YAML/JSON: line 2, column 1: expected the node content"),
    ("a: 1\n b: 2\n", "'f' is not valid YAML/JSON: line 2, column 3: mapping values are not allowed here"),
    ("a: \x07\n", "'f' is not a text file (character #x0007 at position 3)"),
])
def test_yaml_text_errors_name_the_source_and_line(text, message):
    with pytest.raises(SpecError) as error:
        load_yaml(text, source="'f'")
    assert str(error.value).startswith(message), str(error.value)


def test_yaml_errors_without_a_position_keep_their_own_words(monkeypatch):
    """PyYAML's parser errors all carry a position today; an error without one (another PyYAML, a C
    loader) still gives one line naming the source, and only the first line of a multi-line error."""
    def raising(error):
        def load(text, Loader):
            raise error
        return load

    monkeypatch.setattr(yaml, "load", raising(yaml.MarkedYAMLError(problem="no document here")))
    assert refused(load_yaml, "x", "'a.yaml'") == "'a.yaml' is not valid YAML/JSON: no document here"
    monkeypatch.setattr(yaml, "load", raising(yaml.MarkedYAMLError(context="while reading a stream")))
    assert refused(load_yaml, "x", "'a.yaml'") == "'a.yaml' is not valid YAML/JSON: while reading a stream"
    monkeypatch.setattr(yaml, "load", raising(yaml.YAMLError("stream broken\nsecond line")))
    assert refused(load_yaml, "x", "'a.yaml'") == "'a.yaml' is not valid YAML/JSON: stream broken"


@pytest.mark.parametrize("text,start,detail", [
    ("a: !!int x", "line 1, column 4: ", "'x' is not a YAML 1.2 integer (invalid literal for int() with base 10)"),
    ("a: !!float y", "line 1, column 4: ", "'y' is not a YAML 1.2 number"),
    ("a: !!bool maybe", "a tagged value cannot be read", "KeyError: 'maybe'"),
])
def test_a_tagged_value_its_constructor_refuses_is_one_line_naming_the_source(text, start, detail):
    with pytest.raises(SpecError) as info:
        load_yaml(text, source="'x.yaml'")
    message = str(info.value)
    assert message.startswith("'x.yaml' is not valid YAML/JSON: " + start) and detail in message
    assert "\n" not in message


def test_load_spec_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("num_devices: -3\n")
    with pytest.raises(SpecError, match=r"bad.yaml: run setting 'num_devices' = -3"):
        load_spec(path)
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(tmp_path / "list.yaml")
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"method": "digital", "rounds": 3}))
    assert load_spec(good, seed=4).seed == 4


def test_run_spec_files_that_are_not_mappings_or_hold_bad_values(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("")
    assert refused(load_spec, path) == (f"run spec file '{path}' is empty: allowed a mapping of run settings "
                                        "(write '{}' to run every default)")
    path.write_text("- 1\n- 2\n")
    assert refused(load_spec, path) == f"run spec file '{path}' must hold a mapping of settings, not list"
    path.write_text("seed: -1\n")
    assert refused(load_spec, path) == (f"{path}: run setting 'seed' = -1 is invalid: allowed an integer >= 0 and "
                                        "<= 4294967295")
    path.write_text("seed: 2\n")
    with pytest.raises(SpecError) as error:
        load_spec(path, rounds=0)
    assert str(error.value) == (f"{path} with rounds=0: run setting 'rounds' = 0 is invalid: allowed an integer >= 1 "
                                "and <= 100000")
    assert load_spec(path, rounds=3) == make_spec(seed=2, rounds=3)


def test_run_spec_file_errors_are_named_as_run_spec_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    assert refused(load_spec, missing) == f"run spec file '{missing}' not found"
    broken = tmp_path / "broken.json"
    broken.write_text('{"seed": }')
    assert refused(load_spec, broken) == (f"run spec file '{broken}' is not valid JSON: line 1, column 10: "
                                          "Expecting value")


def test_set_assignments_are_typed_and_checked():
    assert parse_assignment("seed=3") == ("seed", 3)
    assert parse_assignment(" total_bandwidth_mhz = 2.5") == ("total_bandwidth_mhz", 2.5)
    assert parse_assignment("data_file=null") == ("data_file", None)
    assert parse_assignment("slot_share=optimized") == ("slot_share", "optimized")
    assert refused(parse_assignment, "seed") == "--set 'seed' is invalid: allowed KEY=VALUE"
    assert refused(parse_assignment, "sed=1").startswith(
        "--set 'sed=1': unknown run setting 'sed' (did you mean 'seed'?): allowed keys are dataset, data_dir,")
    assert refused(parse_assignment, "seed=-1") == ("--set 'seed=-1': run setting 'seed' = -1 is invalid: allowed an "
                                                    "integer >= 0 and <= 4294967295")
    assert refused(parse_assignment, "seed=[1").startswith("--set 'seed=[1': the value is not valid YAML/JSON")


def test_reader_details_found_by_mutation_testing(tmp_path):
    import yaml

    assert parse_assignment("data_dir=a=b") == ("data_dir", "a=b")  # the value may hold '='
    broken = "run:\n  seed: [1, 2\n  rounds: 3\n"
    with pytest.raises(yaml.MarkedYAMLError) as original:
        yaml.safe_load(broken)
    mark = original.value.problem_mark or original.value.context_mark
    assert refused(load_yaml, broken).startswith(
        f"YAML text is not valid YAML/JSON: line {mark.line + 1}, column {mark.column + 1}: ")
    merged = "base: &b {x: 1}\nrun:\n  <<: *b\n  y: 1\n  y: 2\n"
    assert refused(load_yaml, merged) == "YAML text line 5 repeats key 'y' (first at line 4): allowed each key once"
    path = tmp_path / "spec.yaml"
    path.write_text("seed: 2\n")
    with pytest.raises(SpecError) as error:
        load_spec(path, seed=1, rounds=0)
    assert str(error.value).startswith(f"{path} with seed=1, rounds=0: run setting 'rounds' = 0 is invalid")
    with pytest.raises(SpecError, match="'cell_outer_radius_m' = 100.0 is invalid: allowed a number > "
                                        r"cell_inner_radius_m \(100.0\)"):
        make_spec(cell_inner_radius_m=100.0, cell_outer_radius_m=100.0)


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
