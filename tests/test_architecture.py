"""The package's shape: imports flow one way, the light modules stay light, each vocabulary is
declared once."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import spfl
from spfl import vocabulary
from spfl.configuration.datasets import DATASETS
from spfl.configuration.methods import METHODS
from spfl.configuration.settings import SETTINGS

PACKAGE = Path(spfl.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """spfl modules imported at module level (not under ``if TYPE_CHECKING``, not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spfl"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("spfl"))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in runtime_imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_module_level_imports_have_no_cycle():
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(node, trail):
        state[node] = "open"
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                raise AssertionError("import cycle: " + " -> ".join(trail + [node, child]))
            if child not in state:
                visit(child, trail + [node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert "spfl.simulator.simulation" in graph["spfl.cli"] or any("simulation" in m for m in graph), \
        "the graph is read"


def test_the_workflows_modules_do_not_import_torch():
    """Snakemake imports these on every start; torch alone costs seconds."""
    code = ("import sys, spfl.configuration.plan, spfl.configuration.pipeline, spfl.configuration.settings, "
            "spfl.configuration.reading, spfl.configuration.datasets, spfl.configuration.figures, spfl.provenance; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def string_collections(path: Path):
    """Every tuple, list or set literal made only of string constants, with its line."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) > 1 and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            yield frozenset(e.value for e in node.elts), node.lineno


def vocabularies() -> dict[str, frozenset[str]]:
    found = {name: frozenset(value) for name, value in vars(vocabulary).items()
             if name.isupper() and isinstance(value, tuple)}
    return found | {"METHODS": frozenset(METHODS), "DATASETS": frozenset(DATASETS)}


def test_each_vocabulary_is_spelled_out_only_where_it_is_declared():
    declared_in = {name: "vocabulary.py" for name in vocabularies()} | {"METHODS": "methods.py",
                                                                          "DATASETS": "datasets.py"}
    repeats = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for values, line in string_collections(path):
            for name, vocabulary_values in vocabularies().items():
                if values == vocabulary_values and path.name != declared_in[name]:
                    repeats.append(f"{path.relative_to(PACKAGE)}:{line} repeats {name}")
    assert not repeats, repeats


def test_every_vocabulary_is_the_choices_of_a_setting():
    offered = {frozenset(s.choices) - {"auto"} for s in SETTINGS if s.choices is not None}
    unused = [name for name, values in vocabularies().items() if values - {"auto"} not in offered]
    assert not unused, f"declared but offered by no setting: {unused}"


def test_every_method_has_one_drawing_style_and_the_styles_are_distinct():
    from spfl.reporting.plots.style import METHOD_STYLES

    assert tuple(METHOD_STYLES) == METHODS
    for field in ("label", "marker", "color_slot"):
        values = [getattr(style, field) for style in METHOD_STYLES.values()]
        assert len(set(values)) == len(values), f"two methods share a {field}"
    assert sorted(style.color_slot for style in METHOD_STYLES.values()) == list(range(len(METHODS)))


def all_imports(path: Path) -> set[str]:
    """Every spfl module a file imports, anywhere in it (module level, functions, TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spfl"):
            found.update({node.module, *(f"{node.module}.{alias.name}" for alias in node.names)})
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("spfl"))
    return found


def test_the_configuration_wing_imports_neither_the_simulator_nor_reporting():
    """Planning a pipeline needs no torch, pandas or matplotlib: configuration -> shared modules only."""
    files = sorted((PACKAGE / "configuration").rglob("*.py"))
    assert len(files) >= 5
    for path in files:
        wrong = {m for m in all_imports(path) if m.startswith(("spfl.simulator", "spfl.reporting"))}
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"


def test_reporting_reads_records_not_the_simulator():
    for path in sorted((PACKAGE / "reporting").rglob("*.py")):
        wrong = {m for m in all_imports(path) if m.startswith("spfl.simulator")}
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"


def test_the_package_is_three_wings_and_shared_modules():
    top = sorted(p.name for p in PACKAGE.iterdir() if not p.name.startswith(("_", ".")) and p.name != "schemas")
    assert top == ["cli.py", "configuration", "provenance.py", "records.py", "reporting", "simulator",
                   "vocabulary.py"], top


def test_no_module_is_longer_than_500_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


def test_the_code_version_covers_the_simulator_and_what_it_reads():
    """Every module a run imports is hashed into its code version (so a change reruns the simulations),
    and no reporting or planning module is (so a restyled figure reruns none)."""
    from spfl.provenance import SIMULATION_MODULES

    covered = set()
    for name in SIMULATION_MODULES:
        path = PACKAGE / name
        assert path.exists(), name
        covered |= {module_name(p) for p in (path.rglob("*.py") if path.is_dir() else [path])}
    graph = import_graph()
    reached, todo = set(), ["spfl.simulator.simulation"]
    while todo:  # what the round loop imports at module level, transitively
        node = todo.pop()
        if node not in reached:
            reached.add(node)
            todo.extend(m for m in graph.get(node, ()) if m in graph)
    assert reached - {"spfl", "spfl.provenance"} <= covered, sorted(reached - covered)
    assert not {m for m in covered if m.startswith(("spfl.reporting", "spfl.configuration.plan"))}
