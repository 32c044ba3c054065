"""Pipeline configs: reading and validation (spfl.configuration.pipeline) and expansion into cells
(spfl.configuration.plan); no simulator, no Snakemake."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from spfl.configuration import FIGURES
from spfl.configuration.methods import METHODS
from spfl.configuration.pipeline import (
    ConfigError,
    config_schema,
    generated_schemas,
    load_config_file,
    read_config,
    retyped_overrides,
    write_schemas,
)
from spfl.configuration.plan import cell_hash, load_plan
from spfl.configuration.settings import make_spec

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("config.yaml", "quick.yaml", "test.yaml")


def small_config() -> dict:
    return {
        "name": "small",
        "base": {"dataset": "digits", "rounds": 5, "total_bandwidth_mhz": 5.0},
        "seeds": [0, 1],
        "experiments": {
            "bandwidth": {"grid": {"total_bandwidth_mhz": [1, 5], "method": ["digital", "spfl", "spfl_uniform"]}},
            "power": {"grid": {"max_power_dbm": [17, 23.0], "method": ["ideal", "spfl"]}},
        },
        "figures": {
            "accuracy_vs_bandwidth": {"experiment": "bandwidth"},
            "accuracy_vs_power": {"experiment": "power"},
            "packet_errors": {"experiment": "bandwidth"},
            "allocation": {"experiment": "bandwidth", "select": {"total_bandwidth_mhz": [5.0]}},
        },
        "headline": {"experiments": ["bandwidth"], "baselines": ["digital"]},
    }


def error_of(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        load_plan(config)
    return str(info.value)


# --- schemas ---------------------------------------------------------------------------------------

def test_config_schema_lists_every_figure_of_the_registry():
    assert sorted(config_schema()["properties"]["figures"]["properties"]) == sorted(FIGURES)


def test_schemas_command_writes_the_three_schemas(tmp_path):
    """The schemas are package data and generated in memory; the command writes them for an editor."""
    import json

    from spfl.cli import main

    assert main(["config", "schemas", str(tmp_path / "schemas")]) == 0
    written = {p.name: json.loads(p.read_text()) for p in (tmp_path / "schemas").iterdir()}
    assert sorted(written) == ["config.schema.json", "grid.schema.json", "run.schema.json"]
    assert written == {name: json.loads(text) for name, text in generated_schemas().items()}
    assert sorted(written["config.schema.json"]["properties"]["figures"]["properties"]) == sorted(FIGURES)
    assert write_schemas(tmp_path / "again") and (tmp_path / "again" / "run.schema.json").is_file()


def test_validation_works_outside_a_checkout(tmp_path):
    """No file of the repository is read: the plan comes out the same from another working directory."""
    import os
    import subprocess
    import sys

    code = ("import json, sys; from spfl.configuration.plan import load_plan; "
            "print(len(load_plan(json.loads(sys.stdin.read())).cells))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", code], input=__import__("json").dumps(small_config()),
                            capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    assert result.stdout.strip() == str(len(load_plan(small_config()).cells))


def test_every_figure_has_a_report_caption():
    for name in [*FIGURES, "headline"]:
        assert (ROOT / "workflow" / "report" / f"{name}.rst").is_file(), name


# --- the shipped configs ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_are_valid_and_build_every_figure(name):
    plan = load_plan(load_config_file(ROOT / "config" / name))
    assert sorted(plan.figures) == sorted(FIGURES)
    assert plan.headline is not None
    for figure in plan.figures:
        assert plan.figure_runs(figure), figure


def test_paper_config_is_cifar_with_three_seeds_and_twenty_devices():
    plan = load_plan(load_config_file(ROOT / "config" / "config.yaml"))
    assert plan.datasets() == ["cifar10"]
    assert all(len(e.seeds) >= 3 for e in plan.experiments.values())
    assert plan.config["base"]["num_devices"] == 20
    bandwidths = plan.experiments["bandwidth"].grid["total_bandwidth_mhz"]
    assert min(bandwidths) == 1.0 and max(bandwidths) == 20.0  # the paper's 1-20 MHz
    assert plan.config["headline"]["paper_gain_points"] == 9.96


def test_quick_config_is_offline_digits():
    plan = load_plan(load_config_file(ROOT / "config" / "quick.yaml"))
    assert plan.datasets() == ["digits"]
    assert all(cell.device == "cpu" for cell in plan.cells.values())


# --- expansion -------------------------------------------------------------------------------------

def test_shared_grid_point_is_one_cell_with_the_union_of_methods():
    plan = load_plan(small_config())
    # bandwidth 5 MHz == the power sweep's 23 dBm default: one cell per seed, methods merged
    assert len(plan.cells) == 2 * 2 + 1 * 2
    shared = [c for c in plan.cells.values() if len(c.experiments) == 2]
    assert len(shared) == 2
    for cell in shared:
        assert cell.methods == ["ideal", "digital", "spfl", "spfl_uniform"]  # METHODS order
        assert cell.methods == sorted(cell.methods, key=METHODS.index)


def test_cell_params_hold_every_setting_but_method_and_no_path():
    plan = load_plan(small_config())
    for cell in plan.cells.values():
        assert "method" not in cell.params and "data_file" not in cell.params
        assert cell.hash == cell_hash(cell.params)
        assert make_spec(cell.params).rounds == 5


def test_cell_hash_ignores_method_paths_and_float_spelling():
    base = {"dataset": "digits", "total_bandwidth_mhz": 5, "seed": 1}
    assert cell_hash(base) == cell_hash({**base, "total_bandwidth_mhz": 5.0})
    assert cell_hash(base) == cell_hash({**base, "method": "digital"})
    assert cell_hash(base) == cell_hash({**base, "data_file": "x.pt", "device": "cuda"})
    assert cell_hash(base) != cell_hash({**base, "seed": 2})
    assert len(cell_hash(base)) == 12


def test_runs_cover_grid_times_seeds_times_methods():
    plan = load_plan(small_config())
    runs = plan.experiments["bandwidth"].runs
    assert len(runs) == 2 * 2 * 3
    assert {r.point for r in runs} == {(("total_bandwidth_mhz", 1.0),), (("total_bandwidth_mhz", 5.0),)}
    record = runs[0].record()
    assert set(record) == {"experiment", "cell", "seed", "method", "total_bandwidth_mhz"}  # no folder: the
    # workflow knows where cells live


def test_grid_may_sweep_seed_and_any_setting():
    config = small_config()
    config["experiments"]["beta"] = {"grid": {"dirichlet_beta": [0.1, 1.0], "seed": [7], "num_devices": [5, 10]}}
    plan = load_plan(config)
    exp = plan.experiments["beta"]
    assert exp.seeds == (7,) and exp.methods == ("spfl",)  # base default method
    assert exp.swept == ("dirichlet_beta", "num_devices")
    assert len(exp.runs) == 4


def test_figure_runs_follow_select_and_default_methods():
    plan = load_plan(small_config())
    alloc = plan.figure_runs("allocation")
    assert {r.method for r in alloc} == {"spfl"}
    assert {dict(r.point)["total_bandwidth_mhz"] for r in alloc} == {5.0}
    packets = plan.figure_runs("packet_errors")
    assert {r.method for r in packets} == {"spfl", "spfl_uniform"}
    with pytest.raises(ConfigError, match="figure 'noniid' is not configured"):
        plan.figure_runs("noniid")


def test_defaults_are_filled_for_style_resources_and_headline():
    plan = load_plan(small_config())
    assert plan.config["style"]["theme"] == "whitegrid"
    assert plan.config["resources"]["simulate"]["threads"] == 1
    assert plan.headline["method"] == "spfl" and plan.headline["paper_gain_points"] == 9.96
    assert plan.headline["budgets"] == {"bandwidth": "total_bandwidth_mhz"}
    partial = small_config()
    partial["resources"] = {"simulate": {"threads": 3}}
    assert load_plan(partial).config["resources"]["simulate"] == {"threads": 3, "mem_mb": 2000,
                                                                  "runtime": 30, "gpu": 0}


def test_load_plan_does_not_modify_the_config():
    config = small_config()
    before = copy.deepcopy(config)
    load_plan(config)
    assert config == before


# --- validation: every error names the key ----------------------------------------------------------

def mutate(path: str, value, delete: bool = False) -> dict:
    config = small_config()
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    if delete:
        del node[last]
    else:
        node[last] = value
    return config


@pytest.mark.parametrize("path,value,expected", [
    ("bogus", 1, "config key 'bogus' is unknown: allowed keys are base, confirmation, experiments"),
    ("name", "my run", "config key 'name' = \"my run\" is invalid: allowed a string matching"),
    ("name", "data", "config key 'name' = \"data\" is invalid: allowed anything but \"data\""),
    ("paths.results", "", "config key 'paths.results' = \"\" is invalid: allowed a string of at least 1"),
    ("paths.tables", "t", "config key 'paths.tables' is unknown: allowed keys are figures, logs, results"),
    ("base.colour", 1, "config key 'base.colour' is unknown"),
    ("base.rounds", "100", "config key 'base.rounds' = \"100\" is invalid: allowed type integer"),
    ("base.rounds", 0, "config key 'base.rounds' = 0 is invalid: allowed >= 1"),
    ("base.dataset", "mnist", "config key 'base.dataset' = \"mnist\" is invalid: allowed one of"),
    ("seeds", [], "config key 'seeds' = [] is invalid: allowed a list of at least 1"),
    ("seeds", [-1], "config key 'seeds[0]' = -1 is invalid: allowed >= 0"),
    ("experiments.bandwidth.grid.total_bandwidth_mhz", [1, -5],
     "config key 'experiments.bandwidth.grid.total_bandwidth_mhz[1]' = -5 is invalid: allowed >= 0.001"),
    ("experiments.bandwidth.grid.bandwidth", [1], "config key 'experiments.bandwidth.grid.bandwidth' is unknown"),
    ("experiments.bandwidth.grid.total_bandwidth_mhz", 5,
     "config key 'experiments.bandwidth.grid.total_bandwidth_mhz' = 5 is invalid: allowed type array"),
    ("experiments.bandwidth.grid.method", ["spfl", "fedavg"],
     "config key 'experiments.bandwidth.grid.method[1]' = \"fedavg\" is invalid: allowed one of"),
    ("experiments.bandwidth.grid.total_bandwidth_mhz", [5, 5.0],
     "'experiments.bandwidth.grid.total_bandwidth_mhz' = [5, 5.0] is invalid: allowed a list without repeated"),
    ("experiments.bandwidth.sett", {}, "config key 'experiments.bandwidth.sett' is unknown"),
    ("figures.accuracy_vs_bandwith", {"experiment": "bandwidth"},
     "config key 'figures.accuracy_vs_bandwith' is unknown: allowed keys are ablation"),
    ("figures.noniid", {"experiment": "bandwidth"},
     "config key 'figures.noniid.experiment' = 'bandwidth' is invalid: figure 'noniid' needs an experiment "
     "whose grid sweeps 'dirichlet_beta'"),
    ("figures.ablation", {"experiment": "nope"}, "config key 'figures.ablation.experiment' = 'nope' is invalid"),
    ("figures.ablation", {}, "config key 'figures.ablation.experiment' is missing"),
    ("figures.allocation.select", {"total_bandwidth_mhz": [2]},
     "config key 'figures.allocation.select.total_bandwidth_mhz' = 2.0 is invalid: allowed values"),
    ("figures.allocation.select", {"max_power_dbm": [23]},
     "config key 'figures.allocation.select.max_power_dbm' is invalid: experiments.bandwidth sweeps"),
    ("figures.allocation.methods", ["scheduling"],
     "config key 'figures.allocation.methods' = 'scheduling' is invalid"),
    ("headline.experiments", ["nope"], "config key 'headline.experiments[0]' = 'nope' is invalid"),
    ("headline.method", "ideal", "config key 'headline.method' = 'ideal' is invalid"),
    ("style.theme", "neon", "config key 'style.theme' = \"neon\" is invalid: allowed one of"),
    ("style.dpi", 10, "config key 'style.dpi' = 10 is invalid: allowed >= 50"),
    ("resources.simulate", {"threads": 0}, "config key 'resources.simulate.threads' = 0 is invalid"),
    ("resources.simulate", {"cpus": 2}, "config key 'resources.simulate.cpus' is unknown"),
])
def test_invalid_config_names_the_key(path, value, expected):
    assert expected in error_of(mutate(path, value))


def test_missing_required_sections_are_named():
    assert "config key 'experiments' is missing" in error_of(mutate("experiments", None, delete=True))
    assert "config key 'name' is missing" in error_of(mutate("name", None, delete=True))


# --- reading config files ---------------------------------------------------------------------------

def test_config_files_are_read_as_yaml_1_2_like_run_specs(tmp_path):
    """`deadline_ms: 2.733e2` is a number for `spfl run`, so it is one for the pipeline too."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(small_config()).replace("rounds: 5", "rounds: 5\n  deadline_ms: 2.733e2"))
    config = load_config_file(path)
    assert config["base"]["deadline_ms"] == 273.3
    assert load_plan(config).cells  # and it is valid
    assert yaml.safe_load(path.read_text())["base"]["deadline_ms"] == "2.733e2"  # what YAML 1.1 would read


@pytest.mark.parametrize("content,expected", [
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "is not a text file (byte 0 is not UTF-8)"),
    (b"experiments: [1,\nname: x\n", "is not valid YAML/JSON"),
    (b"", "is empty"),
    (b"- a\n- b\n", "must hold a mapping of config keys, not list"),
])
def test_unreadable_config_files_are_named(tmp_path, content, expected):
    path = tmp_path / "broken.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert f"config file '{path}'" in str(info.value) and expected in str(info.value)
    assert "\n" not in str(info.value)


def test_a_yaml_syntax_error_gives_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nseeds: [0, 1\nexperiments: {}\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+"):
        load_config_file(path)


def test_a_repeated_experiment_name_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: x\nexperiments:\n  bw: {grid: {total_bandwidth_mhz: [1]}}\n"
                    "  bw: {grid: {total_bandwidth_mhz: [2]}}\nfigures: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert f"config file '{path}'" in str(info.value) and "bw" in str(info.value)


def test_config_files_merge_in_order_and_overrides_get_their_types(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(yaml.safe_dump(small_config()))
    second.write_text("name: other\nbase: {rounds: 7}\n")
    # what Snakemake hands over for --config seeds=[3,4] base='{deadline_ms: 2.733e2}'
    config = read_config([first, second], {"seeds": ["3", "4"], "base": {"deadline_ms": "2.733e2"}})
    assert config["name"] == "other" and config["base"]["rounds"] == 7
    assert config["base"]["dataset"] == "digits"  # mappings merge key by key
    assert config["seeds"] == [3, 4] and config["base"]["deadline_ms"] == 273.3
    assert retyped_overrides({"name": "run1", "flag": "true", "x": "null"}) == {"name": "run1", "flag": True,
                                                                               "x": None}


def test_every_violation_is_listed_at_once():
    config = mutate("bogus", 1)
    config["base"]["rounds"] = -1
    message = error_of(config)
    assert "'bogus'" in message and "'base.rounds'" in message


@pytest.mark.parametrize("path,value,expected", [
    ("base.seed", 3, "config key 'base.seed' is not allowed: use 'seeds' or a grid over seed"),
    ("base.data_file", "x.pt", "config key 'base.data_file' is not allowed"),
    ("experiments.bandwidth.set", {"total_bandwidth_mhz": 2},
     "config key 'experiments.bandwidth.set.total_bandwidth_mhz' is also swept"),
    ("experiments.power.set", {"data_dir": "elsewhere"},
     "config key 'experiments.power.set.data_dir' is not allowed"),
    ("experiments.power.set", {"cell_inner_radius_m": 900.0},
     "config key 'experiments.power' at grid point max_power_dbm=17.0: run setting 'cell_outer_radius_m'"),
])
def test_semantic_errors_name_the_key(path, value, expected):
    assert expected in error_of(mutate(path, value))


def test_a_shared_cell_must_agree_on_settings_outside_the_hash():
    config = small_config()
    config["experiments"]["power"]["set"] = {"device": "cuda"}
    assert "a different 'device'" in error_of(config)


def test_headline_experiment_must_sweep_one_budget():
    config = small_config()
    config["experiments"]["bandwidth"]["grid"]["num_devices"] = [10, 20]
    assert "must sweep exactly one budget setting" in error_of(config)


def test_check_command_summarizes_a_config(capsys, tmp_path):
    from spfl.cli import main

    assert main(["config", "check", str(ROOT / "config" / "test.yaml")]) == 0
    assert "cells" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate("bogus", 1)))
    assert main(["config", "check", str(bad)]) == 2
    assert "config key 'bogus' is unknown" in capsys.readouterr().err
    assert main(["config", "check", str(ROOT / "config" / "config.yaml"), str(ROOT / "config" / "quick.yaml")]) == 0
    assert "config 'quick'" in capsys.readouterr().out  # several files merge in order, as in Snakemake


# --- documentation ---------------------------------------------------------------------------------

def test_config_readme_run_settings_table_is_current():
    """Regenerate with `spfl generate`."""
    from spfl.configuration.generated import SETTINGS_END, SETTINGS_START, settings_table

    text = (ROOT / "config" / "README.md").read_text()
    block = text.split(SETTINGS_START, 1)[1].split(SETTINGS_END, 1)[0]
    assert block == "\n" + settings_table()


def test_config_readme_documents_every_config_key():
    schema = config_schema()
    text = (ROOT / "config" / "README.md").read_text()
    keys = set(schema["properties"]) | set(schema["$defs"]["figure"]["properties"])
    keys |= set(schema["$defs"]["resources"]["properties"])
    for section in ("headline", "style", "paths"):
        keys |= set(schema["properties"][section]["properties"])
    keys |= set(schema["properties"]["experiments"]["additionalProperties"]["properties"])
    missing = sorted(k for k in keys if f"`{k}`" not in text)
    assert not missing, f"config/README.md does not document {missing}"
