"""Run settings: the table's defaults, each mistake refused in one clear line, the JSON schema that accepts
exactly what a run spec accepts, and a run's identity."""

import math
from dataclasses import MISSING, fields, replace
from pathlib import Path

import jsonschema
import pytest

from core_helpers import refused
from spfl.configuration import settings
from spfl.configuration.settings import (
    SETTING,
    SETTINGS,
    RunSpec,
    Setting,
    SpecError,
    canonical_hash,
    did_you_mean,
    json_schema,
    make_spec,
)

ROOT = Path(__file__).resolve().parents[1]


def test_dataclass_and_settings_table_agree():
    """One field per setting, in the table's order, typed as the setting, and no default of its own."""
    assert [f.name for f in fields(RunSpec)] == [s.name for s in SETTINGS]
    for f in fields(RunSpec):
        setting = SETTING[f.name]
        types = {setting.kind.__name__} | ({"str"} if setting.named else set())
        types |= {"None"} if setting.nullable else set()
        assert set(f.type.split(" | ")) == types, f.name
        assert f.default is MISSING and f.default_factory is MISSING, f.name


def test_every_default_is_the_settings_tables():
    assert make_spec().to_dict() == {s.name: s.default for s in SETTINGS}


def test_a_default_changed_in_the_table_changes_the_spec(monkeypatch):
    monkeypatch.setitem(SETTING, "rounds", replace(SETTING["rounds"], default=7))
    monkeypatch.setitem(SETTING, "normalize", replace(SETTING["normalize"], default="all"))
    spec = make_spec()
    assert (spec.rounds, spec.normalize) == (7, "all")
    assert make_spec(rounds=3).rounds == 3


@pytest.mark.parametrize("key, value, fragment", [
    ("method", "fedavg", "'method' = 'fedavg'"),
    ("total_bandwidth_mhz", -1.0, "'total_bandwidth_mhz' = -1.0"),
    ("total_bandwidth_mhz", 0, "'total_bandwidth_mhz' = 0"),
    ("num_devices", 0, "'num_devices' = 0"),
    ("dirichlet_beta", 0.0, "'dirichlet_beta' = 0.0"),
    ("rounds", 0, "'rounds' = 0"),
    ("rounds", 2.5, "'rounds' = 2.5"),
    ("rounds", True, "'rounds' = True"),
    ("seed", "1", "'seed' = '1'"),
    ("learning_rate", float("nan"), "'learning_rate' = nan"),
    ("download", "yes", "'download' = 'yes'"),
])
def test_invalid_values_name_key_value_and_what_is_allowed(key, value, fragment):
    with pytest.raises(SpecError) as err:
        make_spec({key: value})
    message = str(err.value)
    assert fragment in message and "allowed" in message and "\n" not in message


def test_unknown_key_is_named():
    with pytest.raises(SpecError, match="unknown run setting 'bandwith_mhz'"):
        make_spec({"bandwith_mhz": 5})


def test_cross_field_rule():
    with pytest.raises(SpecError, match="cell_outer_radius_m"):
        make_spec(cell_inner_radius_m=100.0, cell_outer_radius_m=50.0)


def test_integers_accepted_for_floats_and_hash_is_canonical():
    a = make_spec(total_bandwidth_mhz=5, max_power_dbm=23)
    b = make_spec(total_bandwidth_mhz=5.0)
    assert a.run_hash == b.run_hash
    assert make_spec(seed=1).run_hash != a.run_hash
    # paths and execution settings are not part of a run's identity
    assert make_spec(data_dir="/elsewhere", device="auto", checkpoint_every=5).run_hash == a.run_hash
    assert canonical_hash({"b": 1, "a": 2}) == canonical_hash({"a": 2, "b": 1})


def test_schema_lists_every_setting_with_enums():
    schema = json_schema()
    assert set(schema["properties"]) == set(SETTING)
    assert schema["additionalProperties"] is False
    assert "spfl" in schema["properties"]["method"]["enum"]
    assert schema["properties"]["total_bandwidth_mhz"]["minimum"] == 0.001


def test_config_readme_documents_every_setting():
    text = (ROOT / "config" / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in text]
    assert not missing, f"config/README.md does not document {missing}"


@pytest.mark.parametrize("value, fragment", [
    (1.0, "<= 0.999"), (0.0, ">= 0.001"), (1.5, "<= 0.999"), ("adaptive", "proportional, optimized"),
    (True, "'slot_share'"),
])
def test_slot_share_bounds_are_checked_at_validation(value, fragment):
    """tau = 1 would leave the modulus no time and tau = 0 the sign none: refused before any work."""
    with pytest.raises(SpecError) as err:
        make_spec(slot_share=value)
    assert fragment in str(err.value) and "'slot_share'" in str(err.value)


@pytest.mark.parametrize("value", ["proportional", "optimized", 0.25, 0.999, 1e-3])
def test_slot_share_accepts_words_and_open_unit_interval(value):
    assert make_spec(slot_share=value).slot_share == value


def test_slot_share_schema_allows_exactly_the_same_values():
    import jsonschema

    schema = json_schema()
    for value, ok in (("optimized", True), (0.3, True), (1.0, False), (0.0, False), ("x", False)):
        valid = jsonschema.Draft202012Validator(schema).is_valid({"slot_share": value})
        assert valid == ok, value


@pytest.mark.parametrize("eta, smoothness", [(0.2, 10.0), (0.5, 4.0), (1.0, 2.5)])
def test_learning_rate_times_smoothness_at_least_two_is_refused(eta, smoothness):
    """eta L >= 2 makes U_m = (eta - L eta^2 / 2) ||g||^2 <= 0: every allocation objective would be zero."""
    with pytest.raises(SpecError) as err:
        make_spec(learning_rate=eta, smoothness=smoothness)
    message = str(err.value)
    assert "'learning_rate'" in message and "'smoothness'" in message and "< 2" in message
    make_spec(learning_rate=eta, smoothness=0.99 * 2 / eta)  # just below the bound is fine


def test_model_defaults_are_the_consistent_pair():
    spec = make_spec()
    assert (spec.fading, spec.normalize, spec.slot_share) == ("block", "received", "proportional")


def test_the_allocation_problem_defaults_to_the_run_settings_defaults():
    """A problem built without a switch gets the value a run gets without the setting (normalize included)."""
    from spfl.simulator.allocation import AllocationProblem

    shared = [f for f in fields(AllocationProblem) if f.name in SETTING and f.default is not MISSING]
    assert {f.name for f in shared} >= {"normalize", "fading", "per_model", "power_constraint", "waterfall_m"}
    for f in shared:
        assert f.default == SETTING[f.name].default, f.name


# --- each mistake in one clear line: the key, the value and what is allowed ----------------------------

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


def test_near_miss_keys_get_a_suggestion_and_far_ones_none():
    names = [s.name for s in SETTINGS]
    assert did_you_mean("totl_bandwidth_mhz", names) == " (did you mean 'total_bandwidth_mhz'?)"
    assert did_you_mean("sead", names) == " (did you mean 'seed'?)"
    assert did_you_mean("bandwidth", names) == ""
    with pytest.raises(SpecError, match=r"unknown run setting 'sed' \(did you mean 'seed'\?\)"):
        make_spec(sed=1)


def test_unknown_keys_of_mixed_types_are_reported_not_crashed_on():
    with pytest.raises(SpecError, match="unknown run setting '1'"):
        make_spec({1: 0, "zz": 0})


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


# --- the JSON schema (`spfl schema`, the workflow's check) accepts exactly what a run spec accepts -----

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
    validator = jsonschema.Draft202012Validator(json_schema()["properties"][setting.name])
    for value in probes(setting):
        if setting.kind is int and isinstance(value, float) and value == int(value) and not math.isinf(value):
            continue  # JSON Schema counts 3.0 as an integer, as the setting does: both accept
        assert validator.is_valid(value) == accepted_by_spec(setting, value), (setting.name, value)


def test_schema_document_describes_every_setting_with_its_default_and_origin():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["title"] == "spfl run settings"
    assert list(schema["properties"]) == [s.name for s in SETTINGS]
    for s in SETTINGS:
        prop = schema["properties"][s.name]
        assert prop["default"] == s.default
        assert prop["description"] == f"[{s.origin}] {s.help}"
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid({s.name: s.default for s in SETTINGS if s.default is not None})
    assert not validator.is_valid({"bandwidth": 5})
    assert validator.is_valid({"data_file": None}) and not validator.is_valid({"seed": None})


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


# --- a run's identity ----------------------------------------------------------------------------------

def test_run_identity_is_compact_sorted_json_and_its_sha256_prefix():
    import hashlib

    from spfl.configuration.settings import canonical_hash, canonical_json

    mapping = {"b": 1, "a": [1, 2.5], "c": "x"}
    text = '{"a":[1,2.5],"b":1,"c":"x"}'
    assert canonical_json(mapping) == text
    assert canonical_hash(mapping) == hashlib.sha256(text.encode()).hexdigest()[:12]
    with pytest.raises(ValueError):
        canonical_json({"x": math.nan})  # NaN has no JSON form: no identity may hold one
