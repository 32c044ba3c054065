"""Bad input, table-driven (issue #5): every invalid configuration or run spec stops before any job runs, with
a message naming the key or file and what is allowed, and leaves results/ and figures/ untouched.

One table, CASES: each case is one mistake -- a mutation of the tiny configuration (config/test.yaml) run
through `snakemake --cores 1 --configfile ...` (not a dry run, so the checks that run just before the jobs
do too), or of a small run spec run through `spfl run` -- with the words its message must contain.  The
Snakemake cases run in a private copy of the workflow whose results/ and figures/ already hold files, and
the whole tree (paths, bytes, mtimes) must be the same afterwards; Snakemake's output must show no job
start.  The `spfl run` cases call the console script's function (spfl.cli.main) in this process, which saves
a torch import (3 s) per case; nothing may appear at their --out.

A case marked `known` is a known gap, kept in the table (strict xfail) so that it is seen and so that the
day it is fixed the test says so.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from spfl import cli
from spfl.configuration.settings import SETTING, make_spec
from workflow_helpers import copy_workflow, snakemake, tiny_config, tree

SNAKEMAKE = "snakemake"
SPFL_RUN = "spfl run"
CONFIG = "bad.yaml"
RUN_FILE = "spec.yaml"
# A valid run spec (a few seconds of digits) that the `spfl run` cases break.
RUN_BASE = {"dataset": "digits", "model": "mlp", "num_devices": 5, "rounds": 2, "eval_every": 1}
GARBAGE = bytes(range(256)) * 4  # not a gzip archive, not a pickle
CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
               "batches.meta")
JOB_START = re.compile(r"^(?:local)?rule \w+:$|^Finished jobid", re.M)
OLD = 978307200  # 2001-01-01: the mtime of every sentinel file and folder


def at(key: str, value: Any) -> Callable[[dict], None]:
    """Set a dotted key (creating nothing on the way: every parent must exist)."""
    *parents, last = key.split(".")

    def change(config: dict) -> None:
        for part in parents:
            config = config[part]
        config[last] = value
    return change


def drop(key: str) -> Callable[[dict], None]:
    *parents, last = key.split(".")

    def change(config: dict) -> None:
        for part in parents:
            config = config[part]
        del config[last]
    return change


def both(*changes: Callable[[dict], None]) -> Callable[[dict], None]:
    def change(config: dict) -> None:
        for one in changes:
            one(config)
    return change


@dataclass(frozen=True)
class Case:
    name: str
    entry: str  # SNAKEMAKE (a config mistake) or SPFL_RUN (a run spec mistake)
    expected: tuple[str, ...]  # what the message must say: the key or file, and what is allowed
    change: Callable[[dict], None] | None = None  # mutation of the tiny config or of RUN_BASE
    text: Callable[[str], str] | None = None  # edit of the written file's text (YAML-level mistakes)
    write: bool = True  # False: the config or spec file is missing
    files: tuple[tuple[str, bytes], ...] = ()  # files created first (dataset archives, prepared data)
    args: tuple[str, ...] = ()  # extra command-line arguments
    known: str | None = None  # a known gap: expected to fail (strict xfail), says why
    spec: str = RUN_FILE  # the run spec's file name (its suffix picks YAML or JSON)


CIFAR = at("base.dataset", "cifar10")


def bad_setting(name: str, key: str, value: Any) -> Case:
    """A run spec with one setting of the wrong type or out of range: the message must name the file, the
    key and the value, and say what is allowed (the setting's own description of it, as in the schema)."""
    return Case(name, SPFL_RUN, (f"{RUN_FILE}: run setting '{key}' = {value!r} is invalid",
                                 f"allowed {SETTING[key].allowed()}"), at(key, value))

CASES = [
    # -- types, unknown keys, ranges, choices ------------------------------------------------------
    Case("type", SNAKEMAKE, ("'base.rounds' = \"ten\"", "allowed type integer"), at("base.rounds", "ten")),
    Case("unknown top-level key", SNAKEMAKE,
         ("'experimnets' is unknown", "allowed keys are base, confirmation, experiments"),
         at("experimnets", {})),
    Case("unknown run setting", SNAKEMAKE, ("'base.learning_rte' is unknown", "allowed keys are", "learning_rate"),
         at("base.learning_rte", 0.1)),
    Case("range", SNAKEMAKE, ("'base.num_devices' = 0", "allowed >= 1"), at("base.num_devices", 0)),
    Case("range of a swept value", SNAKEMAKE, ("'experiments.power.grid.max_power_dbm[1]' = 99", "allowed <= 60"),
         at("experiments.power.grid.max_power_dbm", [17, 99])),
    Case("choice", SNAKEMAKE, ("'base.dataset' = \"mnist\"", 'allowed one of "digits", "cifar10"'),
         at("base.dataset", "mnist")),
    # config files are read as YAML 1.2, like run specs: 9.9e1 is the number 99 (YAML 1.1 would give a string)
    Case("exponent number out of range", SNAKEMAKE, ("'base.max_power_dbm' = 99.0", "allowed <= 60"),
         text=lambda t: t.replace("  rounds: 6\n", "  rounds: 6\n  max_power_dbm: 9.9e1\n", 1)),
    Case("missing required key", SNAKEMAKE, ("'experiments' is missing (required)",), drop("experiments")),
    Case("cross-field rule", SNAKEMAKE, ("'cell_outer_radius_m' = 40.0", "allowed a number > cell_inner_radius_m"),
         at("base.cell_outer_radius_m", 40.0)),
    Case("model for the dataset", SNAKEMAKE, ("'model' = 'cifar_cnn'", "allowed mlp, cnn, auto"),
         at("base.model", "cifar_cnn")),
    # -- sweeps and methods -------------------------------------------------------------------------
    Case("empty sweep", SNAKEMAKE,
         ("'experiments.bandwidth.grid.total_bandwidth_mhz' = []", "allowed a list of at least 1 item"),
         at("experiments.bandwidth.grid.total_bandwidth_mhz", [])),
    Case("empty grid", SNAKEMAKE, ("'experiments.ablation.grid' = {}", "allowed a mapping with at least 1 key"),
         at("experiments.ablation.grid", {})),
    Case("no seeds", SNAKEMAKE, ("'seeds' = []", "allowed a list of at least 1 item"), at("seeds", [])),
    Case("duplicate methods", SNAKEMAKE, ("'experiments.power.grid.method'", "allowed a list without repeated values"),
         at("experiments.power.grid.method", ["digital", "spfl", "spfl"])),
    Case("unknown method", SNAKEMAKE,
         ("'experiments.power.grid.method[1]' = \"spfl_plus\"", "allowed one of", "\"spfl_noreuse\""),
         at("experiments.power.grid.method", ["digital", "spfl_plus"])),
    Case("seed set by hand", SNAKEMAKE, ("'base.seed' is not allowed", "use 'seeds' or a grid over seed"),
         at("base.seed", 3)),
    Case("setting both fixed and swept", SNAKEMAKE,
         ("'experiments.power.set.max_power_dbm' is also swept", "set it in one place only"),
         at("experiments.power.set", {"max_power_dbm": 20})),
    Case("partition leaves a device without data", SNAKEMAKE,
         ("'num_devices' = 150", "allowed num_devices * min_samples_per_device <= 1437"),
         at("experiments.devices.grid.num_devices", [5, 150])),
    # -- figures and the headline -------------------------------------------------------------------
    Case("unknown figure", SNAKEMAKE, ("'figures.accuracy_vs_pwr' is unknown", "allowed keys are ablation"),
         at("figures.accuracy_vs_pwr", {"experiment": "power"})),
    Case("figure of an unknown experiment", SNAKEMAKE,
         ("'figures.accuracy_vs_power.experiment' = 'powr'", "allowed one of bandwidth, power"),
         at("figures.accuracy_vs_power.experiment", "powr")),
    Case("figure's axis not swept", SNAKEMAKE,
         ("'figures.accuracy_vs_power.experiment' = 'devices'", "an experiment whose grid sweeps 'max_power_dbm'"),
         at("figures.accuracy_vs_power.experiment", "devices")),
    Case("selected value not in the grid", SNAKEMAKE,
         ("'figures.allocation.select.total_bandwidth_mhz' = 2.0",
          "allowed values of experiments.bandwidth.grid.total_bandwidth_mhz"),
         at("figures.allocation.select", {"total_bandwidth_mhz": [2]})),
    Case("headline baselines not run", SNAKEMAKE,
         ("'headline.baselines' = ['scheduling']", "none of them is run by experiments.bandwidth"),
         at("headline.baselines", ["scheduling"])),
    # -- files --------------------------------------------------------------------------------------
    Case("config file missing", SNAKEMAKE, (CONFIG,), write=False),
    Case("config file not YAML", SNAKEMAKE, (CONFIG, "not valid JSON or YAML"), text=lambda t: t + "oops: [1\n",
         known="Snakemake's own message ('Config file is not valid JSON or YAML') does not name the file"),
    Case("CIFAR-10 archive missing", SNAKEMAKE,
         ("data/cifar-10-python.tar.gz not found", "place the standard archive", "download: true"), CIFAR),
    Case("CIFAR-10 archive corrupt", SNAKEMAKE,
         ("data/cifar-10-python.tar.gz failed its md5 check", "expected c58f30108f718f92721af3b95e74349a"), CIFAR,
         files=(("data/cifar-10-python.tar.gz", GARBAGE),)),
    # -- run specs (`spfl run`) ---------------------------------------------------------------------
    Case("spec file missing", SPFL_RUN, (f"run spec file '{RUN_FILE}' not found",), write=False),
    Case("spec file not YAML", SPFL_RUN, (f"run spec file '{RUN_FILE}' is not valid YAML/JSON",),
         text=lambda t: t + "rounds: [1\n"),
    Case("spec not a mapping", SPFL_RUN, (f"'{RUN_FILE}' must hold a mapping of settings, not list",),
         text=lambda t: "- 1\n- 2\n"),
    Case("spec unknown key", SPFL_RUN, (f"{RUN_FILE}: unknown run setting 'learning_rte'", "allowed keys are"),
         at("learning_rte", 0.1)),
    Case("spec choice", SPFL_RUN, ("'partition' = 'random'", "allowed one of iid, dirichlet, shards"),
         at("partition", "random")),
    Case("--set out of range", SPFL_RUN, ("'rounds' = 0", "allowed an integer >= 1"), args=("--set", "rounds=0")),
    Case("--set without a value", SPFL_RUN, ("--set 'rounds' is invalid", "allowed KEY=VALUE"),
         args=("--set", "rounds")),
    Case("--methods twice the same", SPFL_RUN, ("--methods 'spfl,spfl' lists a method twice", "each method runs once"),
         args=("--methods", "spfl,spfl")),
    Case("--methods unknown", SPFL_RUN, ("method 'foo' is unknown", "allowed ideal, digital"),
         args=("--methods", "spfl,foo")),
    Case("spec partition leaves a device without data", SPFL_RUN,
         ("'num_devices' = 200", "allowed num_devices * min_samples_per_device <= 1437"), at("num_devices", 200)),
    Case("prepared dataset missing", SPFL_RUN, ("prepared dataset nope.pt not found", "prepare"),
         at("data_file", "nope.pt")),
    Case("prepared dataset corrupt", SPFL_RUN, ("prepared dataset digits.pt is corrupt", "prepare it again"),
         at("data_file", "digits.pt"), files=(("digits.pt", GARBAGE),)),
    Case("CIFAR-10 folder corrupt", SPFL_RUN,
         ("data/cifar-10-batches-py/data_batch_1 failed its md5 check", "re-extract the archive"),
         both(at("dataset", "cifar10"), at("data_dir", "data")),
         files=tuple((f"data/cifar-10-batches-py/{name}", b"") for name in CIFAR_FILES)),
    # -- the spec file itself: empty, repeated keys, syntax (with its line), not text, not a file -------
    Case("spec empty", SPFL_RUN, (f"run spec file '{RUN_FILE}' is empty", "allowed a mapping of run settings"),
         text=lambda t: ""),
    Case("spec only comments", SPFL_RUN, (f"run spec file '{RUN_FILE}' is empty",), text=lambda t: "# to do\n"),
    Case("spec repeated key", SPFL_RUN,
         (f"run spec file '{RUN_FILE}' line 6 repeats key 'rounds' (first at line 4)", "allowed each key once"),
         text=lambda t: t + "rounds: 5\n"),
    Case("spec repeated key in JSON", SPFL_RUN,
         (f"run spec file '{RUN_FILE}' line 3 repeats key 'rounds' (first at line 1)",),
         text=lambda t: '{"rounds": 2,\n "seed": 1,\n "rounds": 3}\n'),
    Case("spec repeated nested key", SPFL_RUN, ("line 2 repeats key 'a' (first at line 1)",),
         text=lambda t: "seed: {a: 1,\n  a: 2}\n"),
    Case("spec syntax error names the line", SPFL_RUN,
         (f"run spec file '{RUN_FILE}' is not valid YAML/JSON: line 7, column 1",), text=lambda t: t + "seed: [1\n"),
    Case("spec tab indentation", SPFL_RUN, ("is not valid YAML/JSON: line 7, column 1", "'\\t'"),
         text=lambda t: t + "seed:\n\t1\n"),
    Case("spec JSON syntax error", SPFL_RUN, ("run spec file 'spec.json' is not valid JSON: line 2, column 10",),
         text=lambda t: '{"rounds": 2,\n "seed": }\n', spec="spec.json"),
    Case("spec JSON repeated key", SPFL_RUN,
         ("run spec file 'spec.json' line 2 repeats key 'seed' (first at line 1)", "allowed each key once"),
         text=lambda t: '{"seed": 2,\n "seed": 3}\n', spec="spec.json"),
    Case("spec JSON trailing comma", SPFL_RUN, ("'spec.json' is not valid JSON: line 1",),
         text=lambda t: '{"seed": 2,}\n', spec="spec.json"),
    Case("spec is a folder", SPFL_RUN, (f"run spec file '{RUN_FILE}' is a folder", "allowed a YAML or JSON file"),
         write=False, files=((f"{RUN_FILE}/settings.yaml", b"rounds: 2\n"),)),
    Case("spec is binary", SPFL_RUN, (f"run spec file '{RUN_FILE}' is not a text file", "not UTF-8"), write=False,
         files=((RUN_FILE, GARBAGE),)),
    Case("spec holds a NUL", SPFL_RUN, (f"run spec file '{RUN_FILE}' is not a text file (character #x0000",),
         write=False, files=((RUN_FILE, b"rounds: 2\x00\n"),)),
    Case("spec a scalar", SPFL_RUN, (f"'{RUN_FILE}' must hold a mapping of settings, not int",), text=lambda t: "5\n"),
    Case("spec a JSON list", SPFL_RUN, (f"'{RUN_FILE}' must hold a mapping of settings, not list",),
         text=lambda t: "[1, 2]\n"),
    Case("spec a Python object tag", SPFL_RUN, ("is not valid YAML/JSON", "could not determine a constructor"),
         text=lambda t: t + "seed: !!python/object/apply:os.system ['true']\n"),
    Case("spec key not a string", SPFL_RUN, (f"{RUN_FILE}: unknown run setting '1'",), text=lambda t: t + "1: 2\n"),
    Case("spec unknown key in JSON", SPFL_RUN, (f"{RUN_FILE}: unknown run setting 'bandwith_mhz'",),
         text=lambda t: '{"rounds": 2, "bandwith_mhz": 1}\n'),
    Case("spec mistyped key suggests the right one", SPFL_RUN,
         ("unknown run setting 'total_bandwith_mhz' (did you mean 'total_bandwidth_mhz'?)",),
         at("total_bandwith_mhz", 2.0)),
    # -- each setting's type and range: the spec file named, the value shown, what is allowed said ------
    *(bad_setting(name, key, value) for name, key, value in (
        ("null for a number", "rounds", None),
        ("boolean for an integer", "num_devices", True),
        ("fraction for an integer", "batch_size", 2.5),
        ("quoted number", "learning_rate", "0.1"),
        ("infinity", "deadline_ms", float("inf")),
        ("negative bandwidth", "total_bandwidth_mhz", -1),
        ("zero learning rate", "learning_rate", 0),
        ("slot share zero", "slot_share", 0),
        ("slot share above one", "slot_share", 1.5),
        ("modulus bits zero", "modulus_bits", 0),
        ("modulus bits 32", "modulus_bits", 32),
        ("momentum one", "server_momentum", 1.0),
        ("power above 60 dBm", "max_power_dbm", 61),
        ("noise density positive", "noise_psd_dbm_hz", 1),
        ("method in capitals", "method", "SPFL"),
        ("packet error model", "per_model", "rayleigh"),
        ("power constraint", "power_constraint", "peak"),
        ("compensation", "compensation", "zero"),
        ("normalization", "normalize", "none"),
        ("signSGD aggregation", "signsgd_aggregation", "vote"),
        ("precision", "precision", "float16"),
        ("torch device", "device", "tpu"),
        ("negative checkpoint interval", "checkpoint_every", -1),
        ("evaluation interval zero", "eval_every", 0),
        ("local steps zero", "local_steps", 0),
        ("Dirichlet beta zero", "dirichlet_beta", 0),
        ("minimum samples zero", "min_samples_per_device", 0),
        ("shards zero", "shards_per_device", 0),
        ("inner radius below 1 m", "cell_inner_radius_m", 0.5),
        ("too many devices", "num_devices", 10001),
        ("fractional seed", "seed", 1.5),
        ("download as a word", "download", "yes"),
        ("data file a number", "data_file", 5),
        ("spec dataset", "dataset", "mnist"),
        ("spec model", "model", "resnet"),
        ("threads zero", "threads", 0),
        ("threads as a word", "threads", "auto"),
    )),
    Case("NaN", SPFL_RUN, (f"{RUN_FILE}: run setting 'smoothness' = nan", SETTING["smoothness"].allowed()),
         text=lambda t: t + "smoothness: .nan\n"),
    Case("a date", SPFL_RUN, ("'seed' = '2001-01-01'", SETTING["seed"].allowed()),  # YAML 1.2: a string
         text=lambda t: t + "seed: 2001-01-01\n"),
    Case("outer radius inside the inner", SPFL_RUN,
         ("'cell_outer_radius_m' = 30.0", "allowed a number > cell_inner_radius_m"), at("cell_outer_radius_m", 30)),
    # -- the command line: --set, --methods, --out, --log, --threads ------------------------------------
    Case("--set unknown key blames the --set", SPFL_RUN, ("--set 'foo=1': unknown run setting 'foo'",),
         args=("--set", "foo=1")),
    Case("--set mistyped key suggests the right one", SPFL_RUN,
         ("--set 'learning_rte=0.1': unknown run setting 'learning_rte' (did you mean 'learning_rate'?)",),
         args=("--set", "learning_rte=0.1")),
    Case("--set value not YAML", SPFL_RUN,
         ("--set 'rounds=[1,': the value is not valid YAML/JSON: line 1, column 4",), args=("--set", "rounds=[1,")),
    Case("--set wrong type", SPFL_RUN, ("--set 'rounds=ten': run setting 'rounds' = 'ten'", "allowed an integer"),
         args=("--set", "rounds=ten")),
    Case("--set empty key", SPFL_RUN, ("--set '=3': unknown run setting ''",), args=("--set", "=3")),
    Case("--set a word for a number", SPFL_RUN,
         ("--set 'deadline_ms=soon': run setting 'deadline_ms' = 'soon'", SETTING["deadline_ms"].allowed()),
         args=("--set", "deadline_ms=soon")),
    Case("--set the same key twice", SPFL_RUN, ("--set 'rounds=4' sets 'rounds' a second time",),
         args=("--set", "rounds=3", "--set", "rounds=4")),
    Case("--set breaks a rule with the file", SPFL_RUN,
         (f"{RUN_FILE} with min_samples_per_device=500: run setting 'num_devices' = 5 is invalid",),
         args=("--set", "min_samples_per_device=500")),
    Case("--set model for the dataset", SPFL_RUN, (f"{RUN_FILE} with model='cifar_cnn'", "for dataset 'digits'"),
         args=("--set", "model=cifar_cnn")),
    Case("--methods only a comma", SPFL_RUN,
         ("--methods ',' has an empty method name", "allowed a comma-separated list of ideal"),
         args=("--methods", ",")),
    Case("--methods trailing comma", SPFL_RUN, ("--methods 'spfl,' has an empty method name",),
         args=("--methods", "spfl,")),
    Case("--methods empty", SPFL_RUN, ("--methods '' has an empty method name",), args=("--methods", "")),
    Case("--methods a mistyped name", SPFL_RUN,
         ("--methods 'sp-fl': method 'sp-fl' is unknown (did you mean 'spfl'?)", "allowed ideal, digital"),
         args=("--methods", "sp-fl")),
    Case("--threads zero", SPFL_RUN, ("argument --threads: '0' is invalid: allowed an integer >= 1",),
         args=("--threads", "0")),
    Case("--threads a word", SPFL_RUN, ("argument --threads: 'many' is invalid",), args=("--threads", "many")),
    Case("--out is a file", SPFL_RUN, ("--out 'out' is a file", "allowed a folder"), files=(("out", b"notes\n"),)),
    Case("--out inside a file", SPFL_RUN, ("--out 'notes/out' is inside 'notes', which is a file",),
         files=(("notes", b"notes\n"),), args=("--out", "notes/out")),
    Case("--out holds another spec's records", SPFL_RUN,
         ("--out 'out' holds records of another run spec ('out/spfl/spec.json' differs in seed)",
          "choose a new --out folder, or delete 'out'"),
         files=(("out/spfl/spec.json", json.dumps(make_spec(RUN_BASE, seed=7).to_dict()).encode()),)),
    Case("--out holds records of older code", SPFL_RUN, ("'out/digital/spec.json' differs in bandwidth_hz",),
         files=(("out/digital/spec.json",
                 json.dumps({**make_spec(RUN_BASE).to_dict(), "bandwidth_hz": 1}).encode()),)),
    Case("--out holds an unreadable record", SPFL_RUN, ("'out/spfl/spec.json' cannot be read",),
         files=(("out/spfl/spec.json", b"{"),)),
    Case("--log is a folder", SPFL_RUN, ("--log 'logs' is a folder", "allowed a file"),
         files=(("logs/old.log", b""),), args=("--log", "logs")),
    # -- issue #22: YAML 1.2 core, non-finite numbers, bounded parsing, bounds, the run folder, --log -------
    Case("base-60 time", SPFL_RUN, (f"{RUN_FILE}: run setting 'deadline_ms' = '4:33' is invalid",
                                    f"allowed {SETTING['deadline_ms'].allowed()}"),
         text=lambda t: t + "deadline_ms: 4:33\n"),
    Case("YAML 1.1 boolean word", SPFL_RUN, (f"{RUN_FILE}: run setting 'download' = 'on' is invalid",
                                             "allowed true or false"), text=lambda t: t + "download: on\n"),
    Case("infinity for an integer", SPFL_RUN, (f"{RUN_FILE}: run setting 'rounds' = inf is invalid",
                                               f"allowed {SETTING['rounds'].allowed()}"),
         text=lambda t: t.replace("rounds: 2", "rounds: .inf")),
    Case("NaN for an integer", SPFL_RUN, (f"{RUN_FILE}: run setting 'seed' = nan is invalid",),
         text=lambda t: t + "seed: .nan\n"),
    Case("JSON Infinity", SPFL_RUN, ("spec.json: run setting 'num_devices' = inf is invalid",),
         text=lambda t: '{"num_devices": Infinity}\n', spec="spec.json"),
    Case("JSON NaN", SPFL_RUN, ("spec.json: run setting 'learning_rate' = nan is invalid",),
         text=lambda t: '{"learning_rate": NaN}\n', spec="spec.json"),
    Case("--set infinity", SPFL_RUN, ("--set 'batch_size=.inf': run setting 'batch_size' = inf is invalid",),
         args=("--set", "batch_size=.inf")),
    Case("alias bomb", SPFL_RUN, (f"run spec file '{RUN_FILE}' is not valid YAML/JSON",
                                  "expands (its aliases resolved) to more than 100000 values"),
         text=lambda t: 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
             f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))),
    Case("deep nesting", SPFL_RUN, (f"run spec file '{RUN_FILE}' is not valid YAML/JSON",
                                    "nests deeper than 50 levels: allowed at most 50"),
         text=lambda t: t + "seed: " + "[" * 3000 + "]" * 3000 + "\n"),
    Case("deep JSON nesting", SPFL_RUN, ("run spec file 'spec.json' is not valid YAML/JSON",
                                         "nests deeper than 50 levels"),
         text=lambda t: '{"seed": ' + "[" * 200_000 + "]" * 200_000 + "}", spec="spec.json"),
    Case("a huge value", SPFL_RUN, (f"{RUN_FILE}: run setting 'seed' = 'xxxxxxxx", "...",
                                    f"allowed {SETTING['seed'].allowed()}"),
         text=lambda t: t + "seed: " + "x" * 500_000 + "\n"),
    *(bad_setting(name, key, value) for name, key, value in (
        ("learning rate 1e308", "learning_rate", 1e308),
        ("outer radius 1e308", "cell_outer_radius_m", 1e308),
        ("inner radius 1e300", "cell_inner_radius_m", 1e300),
        ("a billion rounds", "rounds", 10**9),
        ("bandwidth 1e-300", "total_bandwidth_mhz", 1e-300),
        ("deadline 1e300", "deadline_ms", 1e300),
        ("local steps 1e9", "local_steps", 10**9),
        ("seed 2^64", "seed", 2**64),
    )),
    Case("--out holds a user's file", SPFL_RUN,
         ("--out 'out' holds 'out/devices.csv', which no spfl run of this spec wrote", "--force"),
         files=(("out/devices.csv", b"device,distance_m\n0,1\n"),)),
    Case("--log is the run spec", SPFL_RUN, (f"--log '{RUN_FILE}' is the run spec file",
                                             "allowed a file that is none of the run's inputs or outputs"),
         args=("--log", RUN_FILE)),
    Case("--log is a record of the run", SPFL_RUN, ("--log 'out/ideal/summary.json' is an output of the run",),
         args=("--log", "out/ideal/summary.json")),
    Case("config base-60 time", SNAKEMAKE, ("'base.deadline_ms' = \"4:33\"", "allowed type number"),
         text=lambda t: t.replace("  deadline_ms: 273.3\n", "  deadline_ms: 4:33\n", 1)),
    Case("config infinity", SNAKEMAKE, ("'base.rounds'", "allowed"),
         text=lambda t: t.replace("  rounds: 6\n", "  rounds: .inf\n", 1)),
    Case("config nested too deep", SNAKEMAKE, (CONFIG, "nests deeper than 50 levels: allowed at most 50"),
         text=lambda t: t + "deep: " + "[" * 60 + "]" * 60 + "\n"),
    Case("config nested thousands deep", SNAKEMAKE, (CONFIG, "nests deeper than 50 levels"),
         text=lambda t: t + "deep: " + "[" * 3000 + "]" * 3000 + "\n",
         known="Snakemake reads --configfile itself before the workflow starts, and its YAML reader recurses: "
               "a RecursionError traceback (spfl config check names the file in one line)"),
    Case("config alias bomb", SNAKEMAKE, (CONFIG, "expands (its aliases resolved) to more than 100000 values"),
         text=lambda t: t + "bomb:\n" + "".join(
             f"  {b}: &{b} [{','.join([f'*{a}'] * 9) if a else ','.join(['lol'] * 9)}]\n"
             for a, b in zip(["", *"abcdefgh"], "abcdefghi"))),
]


def test_the_table_is_large_and_its_names_unique():
    assert len(CASES) >= 80 and len({case.name for case in CASES}) == len(CASES)


def with_sentinels(workdir: Path) -> Path:
    """results/ and figures/ as a finished run leaves them (a few files), all dated 2001-01-01."""
    for name, content in (("results/tables/runs.csv", b"cell,method\n"), ("results/runs/0123456789ab/cell.json", b"{}"),
                          ("results/data/digits.pt", b"not loaded"), ("figures/allocation.pdf", b"%PDF-1.4\n")):
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_bytes(content)
    for folder in ("results", "figures"):
        for path in [*(workdir / folder).rglob("*"), workdir / folder]:
            os.utime(path, (OLD, OLD))
    return workdir


def prepare(case: Case, folder: Path, name: str, base: dict) -> None:
    """Write the case's config or spec file (unless it is the missing one) and its extra files."""
    for relative, content in case.files:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(content)
    if not case.write:
        return
    if case.change is not None:
        case.change(base)
    text = yaml.safe_dump(base, sort_keys=False)
    (folder / name).write_text(case.text(text) if case.text else text)



def run_snakemake_case(case: Case, tmp_path: Path) -> str:
    workdir = with_sentinels(copy_workflow(tmp_path / "wf"))
    prepare(case, workdir, CONFIG, tiny_config())
    before = {folder: tree(workdir / folder) for folder in ("results", "figures")}
    result = snakemake(workdir, "--cores", "1", *case.args, "--configfile", CONFIG, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"accepted:\n{output[-3000:]}"
    assert not JOB_START.search(output), f"a job started:\n{output[-3000:]}"
    after = {folder: tree(workdir / folder) for folder in ("results", "figures")}
    assert after == before, "results/ or figures/ changed"
    return output


def run_spfl_case(case: Case, tmp_path: Path, capsys, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    prepare(case, tmp_path, case.spec, copy.deepcopy(RUN_BASE))
    before = tree(tmp_path)
    try:
        status = cli.main(["run", case.spec, "--out", "out", *case.args])
    except SystemExit as exc:  # argparse refuses an argument this way
        status = exc.code
    output = capsys.readouterr().err
    assert status != 0, f"accepted:\n{output[-3000:]}"
    assert tree(tmp_path) == before, "the run wrote, changed or removed a file"
    assert len(output.strip().splitlines()) == 1 or "usage:" in output, f"not one line:\n{output}"
    return output


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name.replace(" ", "-"), marks=[pytest.mark.xfail(
    reason=c.known, strict=True)] if c.known else []) for c in CASES])
def test_bad_input_stops_before_any_job_naming_the_key_and_what_is_allowed(case, tmp_path, capsys, monkeypatch,
                                                                           restore_logging):
    if case.entry == SNAKEMAKE:
        output = run_snakemake_case(case, tmp_path)
    else:
        output = run_spfl_case(case, tmp_path, capsys, monkeypatch)
    missing = [words for words in case.expected if words not in output]
    assert not missing, f"the message lacks {missing}:\n{output[-3000:]}"
