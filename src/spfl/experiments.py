"""The pipeline's config commands, and one import for what the workflow and the tests use.

The config is read and validated by :mod:`spfl.pipeline_config` and expanded into cells and runs by
:mod:`spfl.plan`; the figures are the registry of :mod:`spfl.figures`.  This module re-exports their
main names (``load_plan``, ``ConfigError``, ``FIGURES``, ...) and holds the maintenance commands:

    python -m spfl.experiments check CONFIG...    validate configs (merged in order) and summarize the plan
    python -m spfl.experiments schemas DIR        write the config, run and grid JSON schemas to DIR
    python -m spfl.experiments readme FILE        regenerate the run-settings table of config/README.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spfl.figures import FIGURES
from spfl.pipeline_config import ConfigError, generated_schemas, load_config_file, read_config
from spfl.plan import Cell, Plan, Run, cell_hash, load_plan
from spfl.spec import SETTINGS

__all__ = ["FIGURES", "Cell", "ConfigError", "Plan", "Run", "cell_hash", "generated_schemas", "load_config_file",
           "load_plan", "main", "read_config", "settings_table", "update_readme"]

SETTINGS_START, SETTINGS_END = "<!-- run-settings:start -->", "<!-- run-settings:end -->"


def settings_table() -> str:
    """Markdown table of every run setting (config/README.md embeds it; a test keeps it current)."""
    lines = ["| setting | default | origin | in cell hash | allowed | meaning |", "|---|---|---|---|---|---|"]
    for s in SETTINGS:
        default = "null" if s.default is None else json.dumps(s.default)
        lines.append(f"| `{s.name}` | `{default}` | {s.origin} | {'yes' if s.science else 'no'} | "
                     f"{s.allowed()} | {s.help} |")
    return "\n".join(lines) + "\n"


def update_readme(path: str | Path) -> bool:
    """Replace the run-settings block of a Markdown file; return whether it changed."""
    path = Path(path)
    text = path.read_text()
    head, rest = text.split(SETTINGS_START, 1)
    _, tail = rest.split(SETTINGS_END, 1)
    new = f"{head}{SETTINGS_START}\n{settings_table()}{SETTINGS_END}{tail}"
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["schemas"] and len(argv) == 2:
        from spfl.pipeline_config import write_schemas

        for path in write_schemas(argv[1]):
            print(path)
        return 0
    if argv[:1] == ["readme"] and len(argv) == 2:
        print(f"{argv[1]}: {'updated' if update_readme(argv[1]) else 'up to date'}")
        return 0
    if argv[:1] == ["check"] and len(argv) >= 2:
        files = argv[1:]
        try:
            plan = load_plan(read_config(files))
        except ConfigError as exc:
            print(f"{', '.join(files)}: {exc}", file=sys.stderr)
            return 2
        runs = plan.all_runs()
        print(f"{', '.join(files)}: config '{plan.config['name']}', {len(plan.experiments)} experiments, "
              f"{len(plan.cells)} cells, {len({(r.cell, r.method) for r in runs})} distinct runs, "
              f"figures: {', '.join(plan.figures)}")
        return 0
    print("usage: python -m spfl.experiments check CONFIG... | schemas DIR | readme FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
