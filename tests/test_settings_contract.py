"""The settings' contract seen from outside: the JSON schema (`spfl schema`, the workflow's check) accepts
exactly what a run spec accepts, YAML/JSON readers refuse repeated keys with their lines, and near-miss
keys get a suggestion.  Written against jsonschema and hand-made files, not against spec.py's helpers."""

from __future__ import annotations

import math

import jsonschema
import pytest

from spfl.spec import SETTINGS, SpecError, did_you_mean, json_schema, load_yaml, make_spec

SCHEMA = json_schema()


def probes(setting) -> list:
    """Values around every bound of a setting, its words and its choices, and values of wrong types."""
    values: list = [None, True, "word", [1], {"a": 1}, 0, 1, 2.5, -1]
    values += list(setting.choices or ()) + list(setting.named)
    for bound in (setting.minimum, setting.maximum):
        if bound is not None:
            values += [bound, bound - 1, bound + 1, bound - 1e-3, bound + 1e-3]
    if setting.default is not None:
        values.append(setting.default)
    return values


def accepted_by_spec(setting, value) -> bool:
    try:
        setting.check(value)
    except SpecError:
        return False
    return True


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_schema_accepts_exactly_what_the_setting_accepts(setting):
    validator = jsonschema.Draft202012Validator(SCHEMA["properties"][setting.name])
    for value in probes(setting):
        if setting.kind is int and isinstance(value, float) and value == int(value) and not math.isinf(value):
            continue  # JSON Schema counts 3.0 as an integer, as the setting does: both accept
        assert validator.is_valid(value) == accepted_by_spec(setting, value), (setting.name, value)


def test_schema_document_describes_every_setting_with_its_default_and_origin():
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert SCHEMA["type"] == "object" and SCHEMA["additionalProperties"] is False
    assert SCHEMA["title"] == "spfl run settings"
    assert list(SCHEMA["properties"]) == [s.name for s in SETTINGS]
    for s in SETTINGS:
        prop = SCHEMA["properties"][s.name]
        assert prop["default"] == s.default
        assert prop["description"] == f"[{s.origin}] {s.help}"
    validator = jsonschema.Draft202012Validator(SCHEMA)
    assert validator.is_valid({s.name: s.default for s in SETTINGS if s.default is not None})
    assert not validator.is_valid({"bandwidth": 5})
    assert validator.is_valid({"data_file": None}) and not validator.is_valid({"seed": None})


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


def test_merge_keys_and_distinct_keys_are_read():
    assert load_yaml("base: &b {seed: 1, rounds: 2}\nrun:\n  <<: *b\n  seed: 4\n") == {
        "base": {"seed": 1, "rounds": 2}, "run": {"seed": 4, "rounds": 2}}
    assert load_yaml("lr: 1e-05\nbig: 1E+30\nplain: 3\n") == {"lr": 1e-05, "big": 1e30, "plain": 3}
    assert load_yaml("{1: a, 2: b, x: c}") == {1: "a", 2: "b", "x": "c"}
    with pytest.raises(SpecError, match="not valid YAML/JSON: line 1.*unhashable"):  # the reader's own message
        load_yaml("{[1, 2]: a}")


def test_near_miss_keys_get_a_suggestion_and_far_ones_none():
    names = [s.name for s in SETTINGS]
    assert did_you_mean("totl_bandwidth_mhz", names) == " (did you mean 'total_bandwidth_mhz'?)"
    assert did_you_mean("sead", names) == " (did you mean 'seed'?)"
    assert did_you_mean("bandwidth", names) == ""
    with pytest.raises(SpecError, match=r"unknown run setting 'sed' \(did you mean 'seed'\?\)"):
        make_spec(sed=1)


# --- files and --set: each mistake is one line naming the file or the --set, the value and what is allowed

def refused(call, *args) -> str:
    with pytest.raises(SpecError) as error:
        call(*args)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_unreadable_spec_files_are_named(tmp_path):
    missing, folder, binary = tmp_path / "missing.yaml", tmp_path / "folder.yaml", tmp_path / "binary.yaml"
    folder.mkdir()
    binary.write_bytes(b"seed: 1\n\xff\xfe")
    assert refused(load_yaml, missing) == f"'{missing}' not found"
    assert refused(load_yaml, folder) == f"'{folder}' is a folder: allowed a YAML or JSON file"
    assert refused(load_yaml, binary) == (f"'{binary}' is not a text file (byte 8 is not UTF-8): allowed a YAML or "
                                          "JSON file")
    assert refused(load_yaml, missing, "the config") == "the config not found"  # a source replaces the path


def test_malformed_yaml_and_json_name_line_and_column(tmp_path):
    broken_json = tmp_path / "spec.json"
    broken_json.write_text('{"seed": 1,\n "rounds": }')
    message = refused(load_yaml, broken_json)
    assert message.startswith(f"'{broken_json}' is not valid JSON: line 2, column 12: ")
    assert refused(load_yaml, "a: [1, 2\nb: 3\n", "'x.yaml'").startswith("'x.yaml' is not valid YAML/JSON: line ")
    control = refused(load_yaml, "seed: 1\x07\n", "'x.yaml'")
    assert control == "'x.yaml' is not a text file (character #x0007 at position 7): allowed a YAML or JSON file"
    assert load_yaml("seed: 1\n") == {"seed": 1}


def test_run_spec_files_that_are_not_mappings_or_hold_bad_values(tmp_path):
    from spfl.spec import load_spec

    path = tmp_path / "spec.yaml"
    path.write_text("")
    assert refused(load_spec, path) == (f"run spec file '{path}' is empty: allowed a mapping of run settings "
                                        "(write '{}' to run every default)")
    path.write_text("- 1\n- 2\n")
    assert refused(load_spec, path) == f"run spec file '{path}' must hold a mapping of settings, not list"
    path.write_text("seed: -1\n")
    assert refused(load_spec, path) == f"{path}: run setting 'seed' = -1 is invalid: allowed an integer >= 0"
    path.write_text("seed: 2\n")
    with pytest.raises(SpecError) as error:
        load_spec(path, rounds=0)
    assert str(error.value) == f"{path} with rounds=0: run setting 'rounds' = 0 is invalid: allowed an integer >= 1"
    assert load_spec(path, rounds=3) == make_spec(seed=2, rounds=3)


def test_set_assignments_are_typed_and_checked():
    from spfl.spec import parse_assignment

    assert parse_assignment("seed=3") == ("seed", 3)
    assert parse_assignment(" total_bandwidth_mhz = 2.5") == ("total_bandwidth_mhz", 2.5)
    assert parse_assignment("data_file=null") == ("data_file", None)
    assert parse_assignment("slot_share=optimized") == ("slot_share", "optimized")
    assert refused(parse_assignment, "seed") == "--set 'seed' is invalid: allowed KEY=VALUE"
    assert refused(parse_assignment, "sed=1").startswith(
        "--set 'sed=1': unknown run setting 'sed' (did you mean 'seed'?): allowed keys are dataset, data_dir,")
    assert refused(parse_assignment, "seed=-1") == ("--set 'seed=-1': run setting 'seed' = -1 is invalid: allowed an "
                                                    "integer >= 0")
    assert refused(parse_assignment, "seed=[1").startswith("--set 'seed=[1': the value is not valid YAML/JSON")
