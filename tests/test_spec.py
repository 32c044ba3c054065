"""Run specs: defaults, validation messages, identity."""

import json
from dataclasses import MISSING, fields, replace
from pathlib import Path

import pytest

from spfl.configuration.reading import load_spec
from spfl.configuration.settings import SETTING, SETTINGS, RunSpec, SpecError, canonical_hash, json_schema, make_spec

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
