"""Run specifications: every setting of one simulation, its defaults, checks and identity.

A run spec is a flat mapping of named settings.  ``SETTINGS`` is the single source of truth:
defaults, allowed values and ranges, units and provenance ([paper] or [recon], see docs/model.md).
The CLI, the Snakemake schema (``spfl schema``) and ``config/README.md`` all derive from it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from spfl.configuration.methods import METHODS
from spfl.vocabulary import (
    COMPENSATIONS,
    DATASETS,
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

# Training-set sizes (spfl.simulator.data's splits; a test keeps them in step), so settings can be checked
# against the data without loading it.
TRAIN_SIZES = {"digits": 1437, "cifar10": 50_000}

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


SETTINGS: tuple[Setting, ...] = (
    # data
    _s("dataset", str, "digits", "Dataset: offline scikit-learn digits or CIFAR-10 (torchvision).",
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
    _s("model", str, "auto", "Model: auto picks mlp for digits and cifar_cnn for CIFAR-10.", choices=("auto", *MODELS)),
    _s("num_devices", int, 20, "Number of devices K.", minimum=1, maximum=10000),
    _s("batch_size", int, 64, "Mini-batch size per device and local step.", minimum=1, maximum=50_000),
    _s("local_steps", int, 1, "Local SGD steps E per round (1 = FedSGD; >1 uploads model delta / lr).",
       minimum=1, maximum=1000),
    _s("learning_rate", float, 0.05, "Learning rate eta (server and local); a rate that makes the model diverge is a "
       "result (status diverged), the bound keeps the allocation's arithmetic finite.", minimum=1e-6, maximum=1e30),
    _s("server_momentum", float, 0.0, "Server heavy-ball momentum (0 = plain SGD).", minimum=0.0,
       maximum=0.999),
    _s("rounds", int, 100, "Communication rounds T.", minimum=1, maximum=MAX_ROUNDS),
    _s("eval_every", int, 10, "Evaluate test accuracy every this many rounds (and at the last).", minimum=1,
       maximum=MAX_ROUNDS, origin="run"),
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
    """A validated run spec.  Build it with :func:`make_spec`, never directly."""

    dataset: str = "digits"
    data_dir: str = "data"
    data_file: str | None = None
    download: bool = False
    partition: str = "dirichlet"
    dirichlet_beta: float = 0.5
    min_samples_per_device: int = 10
    shards_per_device: int = 2
    model: str = "auto"
    num_devices: int = 20
    batch_size: int = 64
    local_steps: int = 1
    learning_rate: float = 0.05
    server_momentum: float = 0.0
    rounds: int = 100
    eval_every: int = 10
    seed: int = 0
    method: str = "spfl"
    compensation: str = "received_mean"
    normalize: str = "received"
    smoothness: float = 10.0
    surrogate: str = "descent"
    gram: str = "sketch"
    sketch_size: int = 4096
    signsgd_aggregation: str = "mean"
    modulus_bits: int = 31
    total_bandwidth_mhz: float = 5.0
    max_power_dbm: float = 23.0
    noise_psd_dbm_hz: float = -174.0
    deadline_ms: float = 100.0
    slot_share: float | str = "proportional"
    fading: str = "block"
    cell_inner_radius_m: float = 50.0
    cell_outer_radius_m: float = 500.0
    per_model: str = "outage"
    waterfall_m: float = 1.0
    power_constraint: str = "energy"
    device: str = "cpu"
    precision: str = "float32"
    threads: int = 1
    checkpoint_every: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def science(self) -> dict[str, Any]:
        """The settings that determine the run's numbers (its identity)."""
        return {k: v for k, v in self.to_dict().items() if SETTING[k].science}

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
    spec = RunSpec(**checked)
    if spec.cell_outer_radius_m <= spec.cell_inner_radius_m:
        raise SpecError(
            f"run setting 'cell_outer_radius_m' = {spec.cell_outer_radius_m} is invalid: allowed a number "
            f"> cell_inner_radius_m ({spec.cell_inner_radius_m})")
    train_size = TRAIN_SIZES[spec.dataset]
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
    if spec.dataset == "digits" and spec.model == "cifar_cnn":
        raise SpecError("run setting 'model' = 'cifar_cnn' is invalid for dataset 'digits': allowed mlp, cnn, auto")
    return spec


def did_you_mean(word: Any, choices: Any) -> str:
    """' (did you mean 'x'?)' for a near miss among choices, else ''."""
    if len(str(word)) > 100:  # no setting or method name is that long
        return ""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _DuplicateKey(yaml.constructor.ConstructorError):
    def __init__(self, key: Any, first_line: int, mark: yaml.Mark):
        super().__init__(problem=f"repeats key '{cut(key)}' (first at line {first_line})", problem_mark=mark)
        self.key, self.first_line = key, first_line


# Bounds of what one YAML or JSON text may hold, so that no file, --set or --config value can exhaust the
# stack (nesting) or the memory (aliases that expand exponentially: a 392-byte "billion laughs").
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 50
MAX_VALUES = 100_000


class _TooLarge(yaml.composer.ComposerError):
    """Nesting deeper than MAX_DEPTH, or aliases expanding to more than MAX_VALUES values."""


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema, no repeated keys and bounded nesting and alias expansion.

    PyYAML follows YAML 1.1: `010` is the octal 8, `4:33` the base-60 273, `yes` a boolean, `1e-05` (how
    json.dumps writes it) a string and `2001-01-01` a date.  YAML 1.2's core schema, which every setting is
    read by (files, --set, --config), has decimal integers (`010` is 10), `0o`/`0x` integers, floats with or
    without a dot, `true`/`false`, `null`, and strings for everything else.  A repeated key would silently
    keep the last value (or the last experiment of a config), so it is an error here, for YAML and JSON
    alike.  The `<<` merge key of YAML 1.1 stays (configs use it to share a block)."""

    def compose_document(self) -> yaml.Node:
        self._depth = 0
        node = super().compose_document()
        _check_expansion(node)
        return node

    def compose_node(self, parent, index):
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _TooLarge(problem=f"nests deeper than {MAX_DEPTH} levels: allowed at most {MAX_DEPTH}",
                            problem_mark=self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<' merges are meant to be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = key in first_line
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if seen:
                raise _DuplicateKey(key, first_line[key], key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: yaml.Node | None) -> None:
    """Refuse a document whose values, aliases expanded, number more than MAX_VALUES (counted without
    expanding them: each node's expanded size once, from its children's)."""
    if root is None:
        return
    size: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the path from the root: an alias to one of them is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if not children_done:
            if id(node) in open_nodes:
                continue  # pushed twice before it was done (an alias to it within itself is caught below)
            open_nodes.add(id(node))
            stack.append((node, True))
            for child in children:
                if id(child) in open_nodes:
                    raise _TooLarge(problem="holds an alias to a value that contains it (a cycle): allowed "
                                    "aliases to finished values only", problem_mark=child.start_mark)
                if id(child) not in size:
                    stack.append((child, False))
            continue
        open_nodes.discard(id(node))
        size[id(node)] = 1 + sum(size[id(child)] for child in children)
        if size[id(node)] > MAX_VALUES:
            raise _TooLarge(problem=f"expands (its aliases resolved) to more than {MAX_VALUES} values: allowed "
                            f"at most {MAX_VALUES}", problem_mark=node.start_mark)


# The YAML 1.2 core schema's tags (https://yaml.org/spec/1.2.2/#1032-tag-resolution), first match wins.
_CORE_RESOLVERS = (
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
     r"|\.(?:nan|NaN|NAN))$", list("-+.0123456789")),
    ("tag:yaml.org,2002:merge", r"^<<$", ["<"]),
)
_Yaml12Loader.yaml_implicit_resolvers = {}  # its own table: adding to SafeLoader's would change SafeLoader
for _tag, _pattern, _first in _CORE_RESOLVERS:
    _Yaml12Loader.add_implicit_resolver(_tag, re.compile(_pattern), _first)


def _core_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """A YAML 1.2 core integer: decimal (leading zeros are decimal), 0o octal or 0x hexadecimal."""
    text = loader.construct_scalar(node)
    base = {"0o": 8, "0x": 16}.get(text[:2], 10)
    try:
        return int(text[2:] if base != 10 else text, base)
    except ValueError as exc:  # an explicit !!int that is not one, or more digits than Python converts
        raise yaml.constructor.ConstructorError(
            None, None, f"{shown(text)} is not a YAML 1.2 integer ({str(exc).split(':')[0]})", node.start_mark
        ) from None


def _core_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node)
    special = {".inf": math.inf, "+.inf": math.inf, "-.inf": -math.inf, ".nan": math.nan}.get(text.lower())
    if special is not None:
        return special
    try:
        return float(text)
    except ValueError:  # an explicit !!float that is not one
        raise yaml.constructor.ConstructorError(None, None, f"{shown(text)} is not a YAML 1.2 number",
                                                node.start_mark) from None


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _core_int)
_Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _core_float)


def _depth(value: Any) -> int:
    """Nesting depth of lists and mappings (a scalar is 1), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def load_yaml(text: str | os.PathLike, source: str | None = None) -> Any:
    """YAML (or JSON) with YAML 1.2 floats and no repeated keys.

    ``text`` is the text itself, or a path (``pathlib.Path``) to read: a file that is missing, a
    folder, not UTF-8 text or not valid YAML, and a repeated key, each raise a one-line SpecError
    naming ``source`` (default: the path, or "YAML text") and, where it applies, the key and line:
    ``load_yaml(Path("config/quick.yaml"))`` -> "'config/quick.yaml' line 7 repeats key 'seeds'
    (first at line 3): allowed each key once".
    """
    if isinstance(text, os.PathLike):
        path = Path(text)
        source = source or f"'{path}'"
        try:
            if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
                raise SpecError(f"{source} is larger than {MAX_FILE_BYTES >> 20} MiB: allowed a YAML or JSON file "
                                f"of at most {MAX_FILE_BYTES >> 20} MiB")
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise SpecError(f"{source} not found") from None
        except IsADirectoryError:
            raise SpecError(f"{source} is a folder: allowed a YAML or JSON file") from None
        except UnicodeDecodeError as exc:
            raise SpecError(f"{source} is not a text file (byte {exc.start} is not UTF-8): allowed a YAML or "
                            f"JSON file") from None
        except OSError as exc:
            raise SpecError(f"{source} cannot be read: {exc.strerror or exc}") from None
        if path.suffix.lower() == ".json":
            return _load_json(text, source)
    return _load_yaml_text(text, source or "YAML text")


def _load_json(text: str, source: str) -> Any:
    """Strict JSON (YAML would read ``{"seed": }`` as a null seed); a repeated key is found with its line
    by reading the same text as YAML, which JSON is a subset of."""
    repeated: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        mapping: dict[str, Any] = {}
        for key, value in items:
            if key in mapping:
                repeated.append(key)
            mapping[key] = value
        return mapping

    too_deep = SpecError(f"{source} is not valid YAML/JSON: it nests deeper than {MAX_DEPTH} levels: allowed at "
                         f"most {MAX_DEPTH}")
    try:
        value = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{source} is not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:  # deeper than Python's own decoder goes
        raise too_deep from None
    if _depth(value) > MAX_DEPTH:
        raise too_deep
    if not repeated:
        return value
    try:
        _load_yaml_text(text, source)
    except SpecError as exc:
        if "repeats key" in str(exc):
            raise
    raise SpecError(f"{source} repeats key '{cut(repeated[0])}': allowed each key once")


def _load_yaml_text(text: str, source: str) -> Any:
    if len(text) > MAX_FILE_BYTES:
        raise SpecError(f"{source} is longer than {MAX_FILE_BYTES >> 20} MiB: allowed at most {MAX_FILE_BYTES >> 20} "
                        f"MiB of YAML or JSON")
    try:
        return yaml.load(text, Loader=_Yaml12Loader)
    except _DuplicateKey as exc:
        raise SpecError(f"{source} line {exc.problem_mark.line + 1} {exc.problem}: allowed each key once") from None
    except yaml.reader.ReaderError as exc:
        character = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise SpecError(f"{source} is not a text file (character {character} at position {exc.position}): "
                        f"allowed a YAML or JSON file") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise SpecError(f"{source} is not valid YAML/JSON: {where}{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source} is not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        # an explicit tag whose value its constructor refuses, e.g. `!!int x` or `!!bool maybe`
        raise SpecError(f"{source} is not valid YAML/JSON: a tagged value cannot be read ({type(exc).__name__}: "
                        f"{exc}): allowed plain values or tags that fit them") from None


def load_spec(path: str | Path, **overrides: Any) -> RunSpec:
    """Read a YAML or JSON run spec file; errors name the file (and the overrides, when they are involved)."""
    path = Path(path)
    values = load_yaml(path, source=f"run spec file '{path}'")
    if values is None:
        raise SpecError(f"run spec file '{path}' is empty: allowed a mapping of run settings (write '{{}}' to run "
                        f"every default)")
    if not isinstance(values, dict):
        raise SpecError(f"run spec file '{path}' must hold a mapping of settings, not {type(values).__name__}")
    try:
        return make_spec(values, **overrides)
    except SpecError as exc:
        error = exc
    try:  # blame the file when it is wrong by itself, else the overrides
        make_spec(values)
    except SpecError:
        raise SpecError(f"{path}: {error}") from None
    raise SpecError(f"{path} with {', '.join(f'{k}={shown(v)}' for k, v in overrides.items())}: {error}") from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """'key=value' from the command line (--set); the value is read as YAML (numbers, booleans, null).

    The key and the value are checked here, so that a mistake blames the --set, not the spec file."""
    if "=" not in text:
        raise SpecError(f"--set {shown(text)} is invalid: allowed KEY=VALUE")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in SETTING:
        raise SpecError(f"--set {shown(text)}: unknown run setting '{cut(key)}'{did_you_mean(key, SETTING)}: "
                        f"allowed keys are {', '.join(SETTING)}")
    value = load_yaml(raw, source=f"--set {shown(text)}: the value")
    try:
        SETTING[key].check(value)
    except SpecError as exc:
        raise SpecError(f"--set {shown(text)}: {exc}") from None
    return key, value


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
        "description": "Generated by `spfl schema`; edit src/spfl/configuration/spec.py, not this file.",
        "type": "object",
        "additionalProperties": False,
        "properties": props,
    }
