"""The allocation package as it was at an earlier git revision, importable beside the current one.

    from solver_at_revision import load_solver
    old = load_solver("68a2967")        # a module with that revision's AllocationProblem, allocate, ...

Reads ``src/spfl/simulator/allocation/*.py`` of the revision with ``git show`` (no copy kept in the repository),
renames the package in its imports and imports it from a temporary folder.  The rest of ``spfl`` (the
channel) is today's; the comparison scripts give the old solver its own problem class so that later
edits of problem.py cannot leak in.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "src/spfl/allocation"
DEFAULT_REVISION = "68a2967"  # main before the vectorized solver of issue #11


def load_solver(revision: str = DEFAULT_REVISION) -> ModuleType:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout

    name = f"allocation_at_{revision.replace('-', '_')}"
    if name in sys.modules:
        return sys.modules[name]
    package = Path(tempfile.mkdtemp(prefix="spfl-solver-")) / name
    package.mkdir()
    for path in git("ls-tree", "--name-only", f"{revision}:{FOLDER}").split():
        if path.endswith(".py"):
            text = git("show", f"{revision}:{FOLDER}/{path}").replace("spfl.simulator.allocation", name)
            (package / path).write_text(text)
    sys.path.insert(0, str(package.parent))
    return importlib.import_module(name)
