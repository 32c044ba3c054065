"""bench/compare_outputs.py: the refactoring check finds every difference except code provenance."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "compare_outputs.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("compare_outputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tree(root: Path, summary: dict, table: str, extra: dict[str, str] | None = None) -> Path:
    (root / "runs" / "abc" / "spfl").mkdir(parents=True)
    (root / "runs" / "abc" / "spfl" / "summary.json").write_text(json.dumps(summary, indent=2))
    (root / "runs" / "abc" / "spfl" / "timing.json").write_text(json.dumps({"wall_time_s": summary["final_accuracy"]}))
    (root / "tables").mkdir()
    (root / "tables" / "runs.csv").write_text(table)
    (root / "logs").mkdir()
    (root / "logs" / "x.log").write_text(str(summary))
    for name, text in (extra or {}).items():
        (root / name).write_text(text)
    return root


def test_only_provenance_timing_and_logs_may_differ(tool, tmp_path):
    a = tree(tmp_path / "a", {"final_accuracy": 0.5, "code_version": "aaa"}, "method,code_version,acc\nspfl,aaa,1.0\n")
    b = tree(tmp_path / "b", {"final_accuracy": 0.5, "code_version": "bbb"}, "method,code_version,acc\nspfl,bbb,1.0\n")
    (b / "logs" / "x.log").write_text("other")
    (b / "runs" / "abc" / "spfl" / "timing.json").write_text("{}")
    assert tool.compare(a, b) == []


@pytest.mark.parametrize("change,expected", [
    (lambda b: (b / "runs/abc/spfl/summary.json").write_text(json.dumps({"final_accuracy": 0.51, "code_version": "a"})),
     "differs: runs/abc/spfl/summary.json"),
    (lambda b: (b / "tables/runs.csv").write_text("method,code_version,acc\nspfl,aaa,1.00\n"),
     "differs: tables/runs.csv"),
    (lambda b: (b / "tables/runs.csv").unlink(), "only in"),
    (lambda b: (b / "tables/new.csv").write_text("x\n"), "only in"),
])
def test_any_other_difference_is_reported(tool, tmp_path, change, expected):
    a = tree(tmp_path / "a", {"final_accuracy": 0.5, "code_version": "a"}, "method,code_version,acc\nspfl,aaa,1.0\n")
    b = tree(tmp_path / "b", {"final_accuracy": 0.5, "code_version": "a"}, "method,code_version,acc\nspfl,aaa,1.0\n")
    change(b)
    problems = tool.compare(a, b)
    assert len(problems) == 1 and problems[0].startswith(expected), problems
