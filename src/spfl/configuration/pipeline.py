"""The pipeline config: reading it, its schema, validation and defaults.

Pure Python (no torch, no Snakemake), and no knowledge of where the workflow keeps its files: the
schema of the config is package data (``spfl/schemas/config.schema.yaml``, its figure list generated
from the figure registry) completed in memory with the run-setting schemas generated from
:mod:`spfl.configuration.settings`, so it works from an installed package as well as from a checkout.
Expanding a valid config into
cells and runs is :mod:`spfl.configuration.plan`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from spfl.configuration.reading import load_yaml
from spfl.configuration.settings import SETTING, SETTINGS, SpecError, json_schema

# Settings the pipeline owns: where the data lives is set per dataset by the prepare rule, and the seed
# comes from `seeds` or a grid, so a value in `base`/`set` would be silently overridden.
PIPELINE_OWNED = ("data_file", "seed")
# Settings the prepare rule reads from `base` only (one prepared file per dataset).
BASE_ONLY = ("data_dir", "download")


class ConfigError(ValueError):
    """The pipeline config is invalid; the message names every offending key, its value and what is allowed."""


# ---------------------------------------------------------------------------------------------------
# Reading config files
# ---------------------------------------------------------------------------------------------------

def load_config_file(path: str | Path) -> dict[str, Any]:
    """One config file as a mapping, read as YAML 1.2 (the reader of `spfl run`); errors name the file."""
    path = Path(path)
    try:
        values = load_yaml(path, source=f"config file '{path}'")
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    if values is None:
        raise ConfigError(f"config file '{path}' is empty: allowed a mapping of config keys (config/README.md)")
    if not isinstance(values, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of config keys, not {type(values).__name__}")
    return values


def retyped_overrides(value: Any) -> Any:
    """Values of Snakemake's `--config KEY=VALUE` as YAML 1.2 reads them.

    Snakemake reads a VALUE that is neither an int nor a float with YAML's BaseLoader, which leaves every
    nested scalar a string (`seeds=[0]` -> ['0']); reading each string again gives the numbers, booleans
    and nulls a config file would have.
    """
    if isinstance(value, Mapping):
        return {k: retyped_overrides(v) for k, v in value.items()}
    if isinstance(value, list):
        return [retyped_overrides(v) for v in value]
    if isinstance(value, str):
        try:
            parsed = load_yaml(value)
        except SpecError:
            return value
        return parsed if isinstance(parsed, (int, float, bool)) or parsed is None else value
    return value


def merged(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Snakemake's rule for several config files and --config: mappings merge key by key, the rest is replaced."""
    result = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def read_config(files: Iterable[str | Path], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config of a Snakemake run: its config files merged in order, then the --config overrides."""
    config: dict[str, Any] = {}
    for path in files:
        config = merged(config, load_config_file(path))
    return merged(config, retyped_overrides(dict(overrides or {})))


# ---------------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------------

def grid_schema() -> dict[str, Any]:
    """Schema of an experiment grid: keys are run settings, each value a non-empty list of valid values.

    Every item refers to the run setting's own schema in run.schema.json, so a grid accepts exactly the
    values a run accepts.
    """
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "spfl experiment grid",
        "description": "Generated from src/spfl/configuration/settings.py by spfl.configuration.pipeline.",
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {
            s.name: {
                "type": "array", "minItems": 1, "uniqueItems": True,
                "items": {"$ref": f"run.schema.json#/properties/{s.name}"},
            }
            for s in SETTINGS
        },
    }


def config_schema() -> dict[str, Any]:
    """Schema of the pipeline config: package data, whose figure list `spfl generate`
    writes
    from the registry (a test keeps it current)."""
    return yaml.safe_load(resources.files("spfl").joinpath("schemas", "config.schema.yaml").read_text())


def generated_schemas() -> dict[str, str]:
    """File name -> text of the three schemas (`spfl config schemas DIR` writes them)."""
    return {
        "config.schema.json": json.dumps(config_schema(), indent=2) + "\n",
        "run.schema.json": json.dumps(json_schema(), indent=2) + "\n",
        "grid.schema.json": json.dumps(grid_schema(), indent=2) + "\n",
    }


def write_schemas(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generated_schemas().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


def _key(path: Iterable[Any]) -> str:
    """Dotted config key with list indices in brackets: experiments.bw.grid.total_bandwidth_mhz[2]."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _schema_message(error) -> str:
    """One line per schema error: the key, the value and what is allowed."""
    where = list(error.absolute_path)
    schema = error.schema
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return (f"config key '{_key(where + [extra[0]])}' is unknown: allowed keys are "
                f"{', '.join(allowed)}")
    if kind == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        return f"config key '{_key(where + [missing[0]])}' is missing (required)"
    value = json.dumps(error.instance) if not isinstance(error.instance, (dict, list)) else repr(error.instance)
    if len(value) > 80:
        value = value[:77] + "..."
    allowed = {
        "enum": lambda v: "one of " + ", ".join(json.dumps(x) for x in v),
        "type": lambda v: "type " + (" or ".join(v) if isinstance(v, list) else v),
        "minimum": lambda v: f">= {v}",
        "exclusiveMinimum": lambda v: f"> {v}",
        "maximum": lambda v: f"<= {v}",
        "exclusiveMaximum": lambda v: f"< {v}",
        "minItems": lambda v: f"a list of at least {v} item(s)",
        "minProperties": lambda v: f"a mapping with at least {v} key(s)",
        "uniqueItems": lambda v: "a list without repeated values",
        "pattern": lambda v: f"a string matching {v}",
        "minLength": lambda v: f"a string of at least {v} character(s)",
        "not": lambda v: "anything but " + ", ".join(json.dumps(x) for x in v.get("enum", [])),
    }.get(kind)
    what = allowed(error.validator_value) if allowed else error.message
    return f"config key '{_key(where)}' = {value} is invalid: allowed {what}"


def check_schema(config: Mapping[str, Any]) -> None:
    """Validate against the config schema; raise ConfigError listing every violation (sorted by key)."""
    import jsonschema
    from referencing import Registry, Resource

    generated = {"run.schema.json": json_schema(), "grid.schema.json": grid_schema()}
    base = "https://spfl.invalid/schemas/"  # a base for the relative $refs; nothing is fetched
    registry = Registry().with_resources(
        (base + name, Resource.from_contents(schema)) for name, schema in generated.items())
    schema = config_schema()
    schema["$id"] = base + "config.schema.yaml"
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        lines = list(dict.fromkeys(_schema_message(e) for e in errors))
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))


def _fill_defaults(instance: dict[str, Any], schema: Mapping[str, Any], root: Mapping[str, Any]) -> None:
    """Set schema defaults of missing keys.

    Follows only local references (#/$defs/...): run settings are left alone, make_spec defaults them.
    """
    for name, sub in schema.get("properties", {}).items():
        if name not in instance and "default" in sub:
            instance[name] = json.loads(json.dumps(sub["default"]))
        ref = sub.get("$ref", "")
        if ref.startswith("#/$defs/"):
            sub = root["$defs"][ref.removeprefix("#/$defs/")]
        if isinstance(instance.get(name), dict) and "properties" in sub:
            _fill_defaults(instance[name], sub, root)


def validated(config: Mapping[str, Any]) -> dict[str, Any]:
    """A private, JSON-clean copy of a schema-valid config with every default filled in."""
    check_schema(config)
    config = json.loads(json.dumps(config))
    schema = config_schema()
    _fill_defaults(config, schema, schema)
    return config


def check_value(key: str, name: str, value: Any) -> Any:
    """One run setting's value checked and coerced as `spfl run` would; errors name the config key."""
    try:
        return SETTING[name].check(value)
    except SpecError as exc:
        raise ConfigError(f"config key '{key}' = {value!r} is invalid: allowed {SETTING[name].allowed()}") \
            from exc
