"""Exact messages and branches of the run-spec readers, and exact entries of the run settings' JSON schema,
that only mutation testing showed untested (docs/mutation.md): each expectation is written out by hand."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from spfl.configuration import settings
from spfl.configuration.reading import load_spec, load_yaml
from spfl.configuration.settings import Setting, SpecError, json_schema, make_spec


def refused(function, *args, **kwargs) -> str:
    with pytest.raises(SpecError) as error:
        function(*args, **kwargs)
    return str(error.value)


ALL_KEYS = ("dataset, data_dir, data_file, download, partition, dirichlet_beta, min_samples_per_device, "
            "shards_per_device, model, num_devices, batch_size, local_steps, learning_rate, server_momentum, "
            "rounds, eval_every, seed, method, compensation, normalize, smoothness, surrogate, gram, sketch_size, "
            "signsgd_aggregation, "
            "modulus_bits, total_bandwidth_mhz, max_power_dbm, noise_psd_dbm_hz, deadline_ms, slot_share, fading, "
            "cell_inner_radius_m, cell_outer_radius_m, per_model, waterfall_m, power_constraint, device, precision, "
            "threads, checkpoint_every")


def test_unknown_key_message_lists_every_allowed_key_comma_separated():
    assert refused(make_spec, sed=1) == (
        f"unknown run setting 'sed' (did you mean 'seed'?): allowed keys are {ALL_KEYS}")


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


def test_run_spec_file_errors_are_named_as_run_spec_file(tmp_path):
    missing = tmp_path / "missing.yaml"
    assert refused(load_spec, missing) == f"run spec file '{missing}' not found"
    broken = tmp_path / "broken.json"
    broken.write_text('{"seed": }')
    assert refused(load_spec, broken) == (f"run spec file '{broken}' is not valid JSON: line 1, column 10: "
                                          "Expecting value")


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


def test_schema_entries_of_choice_word_nullable_and_bounded_settings():
    properties = json_schema()["properties"]
    assert properties["method"] == {
        "description": "[paper] Method (a transmission scheme, allocation policy and aggregation rule; "
                       "docs/model.md).",
        "type": "string",
        "enum": ["ideal", "digital", "digital_reuse", "scheduling", "signsgd", "spfl", "spfl_uniform", "spfl_power",
                 "spfl_bandwidth", "spfl_noreuse"],
        "default": "spfl"}
    slot_share = properties["slot_share"]
    assert slot_share["anyOf"] == [{"type": "string", "enum": ["proportional", "optimized"]},
                                   {"type": "number", "minimum": 0.001, "maximum": 0.999}]
    assert "type" not in slot_share and slot_share["default"] == "proportional"
    assert {k: v for k, v in properties["data_file"].items() if k != "description"} == {
        "type": ["string", "null"], "default": None}
    assert {k: v for k, v in properties["num_devices"].items() if k != "description"} == {
        "type": "integer", "minimum": 1, "maximum": 10000, "default": 20}


def test_schema_header_tells_where_to_edit():
    header = {k: v for k, v in json_schema().items() if k != "properties"}
    assert header == {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "spfl run settings",
                      "description": "Generated by `spfl schema`; edit src/spfl/configuration/settings.py, not this "
                                     "file.",
                      "type": "object", "additionalProperties": False}


def test_a_nullable_setting_with_choices_allows_null_in_its_enum_and_only_then(monkeypatch):
    """No setting of today's table is both: a future one must still get null in its enum."""
    monkeypatch.setattr(settings, "SETTINGS", (
        Setting("codec", str, None, "A codec.", choices=("a", "b"), nullable=True),
        Setting("mode", str, "a", "A mode.", choices=("a", "b"))))
    properties = json_schema()["properties"]
    assert properties["codec"]["type"] == ["string", "null"] and properties["codec"]["enum"] == ["a", "b", None]
    assert properties["mode"]["type"] == "string" and properties["mode"]["enum"] == ["a", "b"]
    assert jsonschema.Draft202012Validator(properties["codec"]).is_valid(None)


def test_devices_may_share_out_the_whole_training_set_and_not_one_sample_more():
    """digits has 1,437 training samples = 3 x 479."""
    assert make_spec(num_devices=3, min_samples_per_device=479).num_devices == 3
    assert refused(make_spec, num_devices=3, min_samples_per_device=480) == (
        "run setting 'num_devices' = 3 is invalid with min_samples_per_device = 480: allowed num_devices * "
        "min_samples_per_device <= 1437 (the digits training set), or a device would be left without data")


def test_learning_rate_and_smoothness_message_explains_the_objective():
    assert refused(make_spec, learning_rate=0.5, smoothness=4.0) == (
        "run settings 'learning_rate' = 0.5 and 'smoothness' = 4.0 are invalid together: allowed learning_rate * "
        "smoothness < 2 (otherwise a full gradient's one-step worth U_m = (eta - L eta^2 / 2) ||g||^2 is <= 0 and "
        "the allocation objective is zero everywhere)")


def test_the_cifar_network_is_refused_for_digits_only():
    assert refused(make_spec, model="cifar_cnn") == (
        "run setting 'model' = 'cifar_cnn' is invalid for dataset 'digits': allowed mlp, cnn, auto")
    assert make_spec(dataset="cifar10", model="cifar_cnn").model == "cifar_cnn"


@pytest.mark.parametrize("key, value, allowed", [
    ("download", "yes", "true or false"),
    ("data_dir", 3, "a string"),
    ("data_file", 3, "a string or null"),
    ("dataset", "mnist", "one of digits, cifar10"),
    ("num_devices", 0, "an integer >= 1 and <= 10000"),
    ("server_momentum", 1, "a number >= 0.0 and <= 0.999"),
    ("learning_rate", 0, "a number >= 1e-06 and <= 1e+30"),
    ("slot_share", 1.0, "one of proportional, optimized or a number >= 0.001 and <= 0.999"),
])
def test_what_is_allowed_is_spelled_out_for_every_kind_of_setting(key, value, allowed):
    assert refused(make_spec, **{key: value}) == f"run setting '{key}' = {value!r} is invalid: allowed {allowed}"


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
