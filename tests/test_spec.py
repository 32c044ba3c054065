"""Run specs: defaults, validation messages, identity."""

import json
from dataclasses import fields
from pathlib import Path

import pytest

from spfl.spec import SETTING, SETTINGS, RunSpec, SpecError, canonical_hash, json_schema, load_spec, make_spec

ROOT = Path(__file__).resolve().parents[1]


def test_dataclass_and_settings_table_agree():
    assert [f.name for f in fields(RunSpec)] == [s.name for s in SETTINGS]
    for f in fields(RunSpec):
        assert f.default == SETTING[f.name].default, f.name


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
    assert schema["properties"]["total_bandwidth_mhz"]["exclusiveMinimum"] == 0.0


def test_config_readme_documents_every_setting():
    text = (ROOT / "config" / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in text]
    assert not missing, f"config/README.md does not document {missing}"
