"""Reading run specs and pipeline configs: one bounded YAML 1.2 (and strict JSON) reader for every file,
``--set`` and ``--config`` value, with one-line errors naming the source, the line and the key.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from spfl.configuration.settings import SETTING, RunSpec, SpecError, cut, did_you_mean, make_spec, shown


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
