"""The run settings: every setting of one simulation, its default, checks and identity.

A run spec is a flat mapping of named settings.  ``SETTINGS`` is the single source of truth: defaults,
allowed values and ranges, units and provenance ([paper] or [recon], see docs/model.md).  ``RunSpec`` is
the validated value (built by :func:`make_spec`), its science settings hash to the run's and the cell's
identity, and the CLI, the run schema (``spfl schema``) and ``config/README.md`` derive from the table.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from spfl.configuration.datasets import DATASET, DATASET_ROWS, DATASETS
from spfl.configuration.methods import METHODS
from spfl.vocabulary import (
    COMPENSATIONS,
    DEVICES,
    FADING_MODELS,
    GRAM_ESTIMATES,
    MODELS,
    NORMALIZATIONS,
    PACKET_ERROR_MODELS,
    PARTITIONS,
    POWER_CONSTRAINTS,
    PRECISIONS,
    SIGNSGD_AGGREGATIONS,
    SURROGATES,
)

# Every numeric setting has finite bounds, chosen so that no accepted spec overflows in the simulation
# (tests/test_extreme_settings.py runs a round at the corners).  A run keeps one metrics row per round in
# memory (and in its checkpoints), so the rounds are bounded too.
MAX_ROUNDS = 100_000


class SpecError(ValueError):
    """A run setting is unknown, of the wrong type or out of range (one line, names the key)."""


# How a value read from a file or the command line is shown in a message: its repr, cut short (a 10 MB
# string, a structure of a billion shared lists from an alias bomb), so a message is always one short line.
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 80
_SHOWN.maxlong = 40
_SHOWN.maxlevel = 3
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = _SHOWN.maxfrozenset = 6


def shown(value: Any) -> str:
    """``repr(value)``, bounded in length and depth (never expands a large or deep structure)."""
    return _SHOWN.repr(value)


def cut(text: Any, limit: int = 80) -> str:
    """``str(text)`` with its middle left out when longer than ``limit`` characters."""
    text = str(text) if not isinstance(text, str) else text
    return text if len(text) <= limit else f"{text[:limit // 2 - 2]}...{text[-(limit // 2 - 2):]}"


@dataclass(frozen=True)
class Setting:
    """One run setting: its type, default and what is allowed."""

    name: str
    kind: type
    default: Any
    help: str
    origin: str = "recon"  # "paper", "recon" or "run" (bookkeeping, not science)
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    named: tuple[str, ...] = ()  # words allowed besides the numbers of a numeric setting
    nullable: bool = False
    science: bool = True  # part of the run's identity (hash); False for paths and devices

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        lo = "" if self.minimum is None else (f"> {self.minimum}" if self.exclusive_minimum
                                               else f">= {self.minimum}")
        hi = "" if self.maximum is None else (f"< {self.maximum}" if self.exclusive_maximum
                                               else f"<= {self.maximum}")
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[self.kind]
        bounds = " and ".join(b for b in (lo, hi) if b)
        words = "one of " + ", ".join(self.named) + " or " if self.named else ""
        return words + kind + (f" {bounds}" if bounds else "") + (" or null" if self.nullable else "")

    def check(self, value: Any) -> Any:
        """Return the value coerced to the setting's type, or raise SpecError."""
        if value is None and self.nullable:
            return None
        bad = SpecError(f"run setting '{self.name}' = {shown(value)} is invalid: allowed {self.allowed()}")
        if self.named and isinstance(value, str):
            if value not in self.named:
                raise bad
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise bad
        elif self.kind is int:
            # NaN and infinity first: int() of them raises (ValueError, OverflowError) instead of refusing
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or (isinstance(value, float) and not (math.isfinite(value) and value.is_integer()))):
                raise bad
            value = int(value)
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad
            try:
                value = float(value)  # an integer beyond the floats' range raises OverflowError
            except OverflowError:
                raise bad from None
            if not math.isfinite(value):
                raise bad
        elif not isinstance(value, str):
            raise bad
        if self.choices is not None and value not in self.choices:
            raise bad
        if self.minimum is not None and (value < self.minimum or (self.exclusive_minimum
                                                                  and value == self.minimum)):
            raise bad
        if self.maximum is not None and (value > self.maximum or (self.exclusive_maximum
                                                                  and value == self.maximum)):
            raise bad
        return value


def _s(name, kind, default, help, **kw) -> Setting:
    return Setting(name, kind, default, help, **kw)


def _listed(words, last: str) -> str:
    """'a, b <last> c'."""
    words = list(words)
    return ", ".join(words[:-1]) + f" {last} " + words[-1] if len(words) > 1 else "".join(words)


SETTINGS: tuple[Setting, ...] = (
    # data
    _s("dataset", str, "digits", f"Dataset: {_listed((d.about for d in DATASET_ROWS), 'or')}.",
       choices=DATASETS, origin="paper"),
    _s("data_dir", str, "data", "Folder holding raw dataset archives (CIFAR-10).", origin="run", science=False),
    _s("data_file", str, None, "Prepared dataset file (from `spfl prepare`); null loads from data_dir.",
       origin="run", nullable=True, science=False),
    _s("download", bool, False, "Download CIFAR-10 when missing (needs a network).", origin="run",
       science=False),
    _s("partition", str, "dirichlet", "How samples are split across devices.", choices=PARTITIONS),
    _s("dirichlet_beta", float, 0.5, "Dirichlet concentration over labels (smaller = more non-IID).",
       minimum=0.001, maximum=1000.0),
    _s("min_samples_per_device", int, 10, "Dirichlet minimum-size rule: redraw until every device has this.",
       minimum=1, maximum=50_000),
    _s("shards_per_device", int, 2, "Label shards per device for partition: shards.", minimum=1, maximum=50_000),
    # learning
    _s("model", str, "auto", "Model: auto picks "
       f"{_listed((f'{d.default_model} for {d.label}' for d in DATASET_ROWS), 'and')}.", choices=("auto", *MODELS)),
    _s("num_devices", int, 20, "Number of devices K.", minimum=1, maximum=10000),
    _s("batch_size", int, 64, "Mini-batch size per device and local step.", minimum=1, maximum=50_000),
    _s("local_steps", int, 1, "Local SGD steps E per round (1 = FedSGD; >1 uploads model delta / lr).",
       minimum=1, maximum=1000),
    _s("learning_rate", float, 0.05, "Learning rate eta (server and local); a rate that makes the model diverge is a "
       "result (status diverged), the bound keeps the allocation's arithmetic finite.", minimum=1e-6, maximum=1e30),
    _s("server_momentum", float, 0.0, "Server heavy-ball momentum (0 = plain SGD).", minimum=0.0,
       maximum=0.999),
    _s("rounds", int, 100, "Communication rounds T.", minimum=1, maximum=MAX_ROUNDS),
    _s("eval_every", int, 10, "Evaluate test accuracy every this many rounds (and at rounds 0, 1 and the last).",
       minimum=1, maximum=MAX_ROUNDS, origin="run"),
    _s("seed", int, 0, "Seed of every random draw (partition, init, batches, positions, fading).",
       minimum=0, maximum=2**32 - 1, origin="run"),
    # method
    _s("method", str, "spfl", "Method (a transmission scheme, allocation policy and aggregation rule; "
       "docs/model.md).", choices=METHODS, origin="paper"),
    _s("compensation", str, "received_mean", "Compensatory modulus for sign-only devices.",
       choices=COMPENSATIONS),
    _s("normalize", str, "received", "Aggregate divided by the weight of received devices or of all; "
       "the allocation objective is the expectation under the same rule.", choices=NORMALIZATIONS),
    _s("smoothness", float, 10.0, "Smoothness constant L in the one-step objective (learning_rate * L < 2).",
       minimum=0.0, maximum=1e6),
    _s("surrogate", str, "descent", "One-step objective the allocation maximizes: descent = the expected "
       "descent-lemma bound with the devices' cross terms; jensen = per-device worths (docs/model.md, 6).",
       choices=SURROGATES),
    _s("gram", str, "sketch", "What the allocator knows of the devices' inner products (descent): sketch = "
       "estimated from CountSketches the devices report; exact = the true ones (analysis only).",
       choices=GRAM_ESTIMATES),
    _s("sketch_size", int, 4096, "Entries m of each device's CountSketch of its gradient (gram: sketch).",
       minimum=1, maximum=1 << 20),
    _s("signsgd_aggregation", str, "mean", "signsgd: alpha-weighted mean of scaled signs or majority vote.",
       choices=SIGNSGD_AGGREGATIONS),
    _s("modulus_bits", int, 31, "Bits per modulus entry b: 31 float32 magnitudes, 15 float16, "
       "otherwise a b-bit uniform quantizer.", minimum=1, maximum=31),
    # channel
    _s("total_bandwidth_mhz", float, 5.0, "Total uplink bandwidth B_tot (MHz).", minimum=0.001,
       maximum=10_000.0, origin="paper"),
    _s("max_power_dbm", float, 23.0, "Per-device power budget P_max (dBm).", minimum=-50.0, maximum=60.0),
    _s("noise_psd_dbm_hz", float, -174.0, "Noise power spectral density N0 (dBm/Hz).", minimum=-250.0,
       maximum=0.0),
    _s("deadline_ms", float, 100.0, "Round upload deadline T (ms); calibrate per experiment.", minimum=0.001,
       maximum=1e6),
    _s("slot_share", float, "proportional", "Sign packet's share tau of the deadline (and of the band, "
       "as sub-bands): proportional = D_s / (D_s + D_m), optimized = per device by SP-FL's allocation, "
       "or a fixed number.", minimum=0.001, maximum=0.999, named=("proportional", "optimized")),
    _s("fading", str, "block", "Rayleigh fading: block = one draw per device and round for both packets, "
       "per_packet = an independent draw per packet.", choices=FADING_MODELS),
    _s("cell_inner_radius_m", float, 50.0, "Inner radius of the device annulus (m).", minimum=1.0,
       maximum=50_000.0),
    _s("cell_outer_radius_m", float, 500.0, "Outer radius of the device annulus (m).", minimum=1.0,
       maximum=100_000.0),
    _s("per_model", str, "outage", "Packet error model: Shannon-rate outage or waterfall.",
       choices=PACKET_ERROR_MODELS),
    _s("waterfall_m", float, 1.0, "Waterfall threshold m.", minimum=0.001, maximum=1000.0),
    _s("power_constraint", str, "energy", "Per-device power constraint: energy tau p_s + (1-tau) p_m <= P "
       "or sum p_s + p_m <= P.", choices=POWER_CONSTRAINTS),
    # execution (not part of the run's identity)
    _s("device", str, "cpu", "Torch device: cpu, cuda or auto (CUDA when present).",
       choices=DEVICES, origin="run", science=False),
    _s("precision", str, "float32", "Local computation precision: exact float32 (TF32 off), tf32 (TF32 "
       "matmuls/convolutions, opt-in) or bfloat16 autocast (accelerators).", choices=PRECISIONS,
       origin="run"),
    _s("threads", int, 1, "CPU threads of the numerical work (torch, BLAS). Part of the run's identity, since "
       "CPU results depend on it; the cores a scheduler grants (`spfl run --threads`) never change it.",
       minimum=1, maximum=256, origin="run"),
    _s("checkpoint_every", int, 0, "Save a resumable checkpoint every N rounds (0 = never).", minimum=0,
       maximum=MAX_ROUNDS, origin="run", science=False),
)
SETTING = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class RunSpec:
    """A validated run spec.  Build it with :func:`make_spec`, never directly.

    One field per setting of ``SETTINGS``, in its order and without defaults: :func:`make_spec` takes each
    default from the table, where it is declared once (a test keeps the fields and the table in step).
    """

    dataset: str
    data_dir: str
    data_file: str | None
    download: bool
    partition: str
    dirichlet_beta: float
    min_samples_per_device: int
    shards_per_device: int
    model: str
    num_devices: int
    batch_size: int
    local_steps: int
    learning_rate: float
    server_momentum: float
    rounds: int
    eval_every: int
    seed: int
    method: str
    compensation: str
    normalize: str
    smoothness: float
    surrogate: str
    gram: str
    sketch_size: int
    signsgd_aggregation: str
    modulus_bits: int
    total_bandwidth_mhz: float
    max_power_dbm: float
    noise_psd_dbm_hz: float
    deadline_ms: float
    slot_share: float | str
    fading: str
    cell_inner_radius_m: float
    cell_outer_radius_m: float
    per_model: str
    waterfall_m: float
    power_constraint: str
    device: str
    precision: str
    threads: int
    checkpoint_every: int

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def science(self) -> dict[str, Any]:
        """The settings that determine the run's numbers (its identity)."""
        return {k: v for k, v in self.to_dict().items() if SETTING[k].science}

    @property
    def resolved_model(self) -> str:
        """The model the run trains: ``model``, or for "auto" the dataset's default."""
        return DATASET[self.dataset].default_model if self.model == "auto" else self.model

    def with_method(self, method: str) -> RunSpec:
        return replace(self, method=SETTING["method"].check(method))

    @property
    def run_hash(self) -> str:
        return canonical_hash(self.science())

    @property
    def cell_hash(self) -> str:
        """The hash of the science settings without the method: the identity of a cell of methods sharing
        one seed's environment (the pipeline's cell folder name, ``spfl.configuration.plan.cell_hash``)."""
        science = self.science()
        science.pop("method")
        return canonical_hash(science)


def canonical_json(mapping: Mapping[str, Any]) -> str:
    """Key-sorted compact JSON; floats by repr, so 5 and 5.0 hash alike after validation."""
    return json.dumps(mapping, sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical_hash(mapping: Mapping[str, Any], length: int = 12) -> str:
    return hashlib.sha256(canonical_json(mapping).encode()).hexdigest()[:length]


def make_spec(values: Mapping[str, Any] | None = None, **overrides: Any) -> RunSpec:
    """Validate settings (unknown keys, types, ranges, cross-field rules) into a RunSpec."""
    merged = dict(values or {})
    merged.update(overrides)
    unknown = sorted(set(merged) - set(SETTING), key=str)
    if unknown:
        raise SpecError(f"unknown run setting '{cut(unknown[0])}'{did_you_mean(unknown[0], SETTING)}: allowed keys are "
                        f"{', '.join(SETTING)}")
    checked = {name: SETTING[name].check(value) for name, value in merged.items()}
    spec = RunSpec(**{name: setting.default for name, setting in SETTING.items()} | checked)
    if spec.cell_outer_radius_m <= spec.cell_inner_radius_m:
        raise SpecError(
            f"run setting 'cell_outer_radius_m' = {spec.cell_outer_radius_m} is invalid: allowed a number "
            f"> cell_inner_radius_m ({spec.cell_inner_radius_m})")
    facts = DATASET[spec.dataset]
    train_size = facts.train_size
    if spec.num_devices * spec.min_samples_per_device > train_size:
        raise SpecError(
            f"run setting 'num_devices' = {spec.num_devices} is invalid with min_samples_per_device = "
            f"{spec.min_samples_per_device}: allowed num_devices * min_samples_per_device <= {train_size} "
            f"(the {spec.dataset} training set), or a device would be left without data")
    if spec.learning_rate * spec.smoothness >= 2.0:
        raise SpecError(
            f"run settings 'learning_rate' = {spec.learning_rate} and 'smoothness' = {spec.smoothness} are "
            "invalid together: allowed learning_rate * smoothness < 2 (otherwise a full gradient's one-step "
            "worth U_m = (eta - L eta^2 / 2) ||g||^2 is <= 0 and the allocation objective is zero everywhere)")
    if spec.model != "auto" and spec.model not in facts.models:
        raise SpecError(f"run setting 'model' = '{spec.model}' is invalid for dataset '{spec.dataset}': allowed "
                        f"{', '.join(facts.models)}, auto")
    return spec


def did_you_mean(word: Any, choices: Any) -> str:
    """' (did you mean 'x'?)' for a near miss among choices, else ''."""
    if len(str(word)) > 100:  # no setting or method name is that long
        return ""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def json_schema() -> dict[str, Any]:
    """JSON schema of one run's settings (enums for every named choice)."""
    types = {int: "integer", float: "number", bool: "boolean", str: "string"}
    props: dict[str, Any] = {}
    for s in SETTINGS:
        prop: dict[str, Any] = {"description": f"[{s.origin}] {s.help}"}
        value: dict[str, Any] = {"type": [types[s.kind], "null"] if s.nullable else types[s.kind]}
        if s.choices is not None:
            value["enum"] = list(s.choices) + ([None] if s.nullable else [])
        if s.minimum is not None:
            value["exclusiveMinimum" if s.exclusive_minimum else "minimum"] = s.minimum
        if s.maximum is not None:
            value["exclusiveMaximum" if s.exclusive_maximum else "maximum"] = s.maximum
        if s.named:
            prop["anyOf"] = [{"type": "string", "enum": list(s.named)}, value]
        else:
            prop.update(value)
        prop["default"] = s.default
        props[s.name] = prop
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "spfl run settings",
        "description": "Generated by `spfl schema`; edit src/spfl/configuration/settings.py, not this file.",
        "type": "object",
        "additionalProperties": False,
        "properties": props,
    }
