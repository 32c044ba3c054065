"""The allocation package as it was at an earlier git revision, importable beside the current one.

    from solver_at_revision import load_solver
    old = load_solver()                 # the solver before the exact packet maximizer (main f3914d3)
    old = load_solver("68a2967")        # a module with that revision's AllocationProblem, allocate, ...

Reads ``src/spfl/allocation/*.py`` of the revision with ``git show`` (no copy kept in the repository),
renames the package in its imports and imports it from a temporary folder.  The rest of ``spfl`` (the
channel, the vocabulary) is today's, imported from where it lives today: the old files' imports of those
modules are rewritten to ``CHANNEL_MODULE`` and ``VOCABULARY_MODULE`` (the one place to change when the
package moves).  The comparison scripts give the old solver its own problem class so that later edits
of problem.py cannot leak in.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
FOLDER = "src/spfl/allocation"  # where the allocation package lived at the revisions loaded here
DEFAULT_REVISION = "f3914d3"    # main before the exact packet maximizer
# Where the modules the old allocation package imports live today.
CHANNEL_MODULE = "spfl.simulator.channel"
VOCABULARY_MODULE = "spfl.vocabulary"
_REWRITES = {"spfl.channel": CHANNEL_MODULE, "spfl.vocabulary": VOCABULARY_MODULE}


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
            text = git("show", f"{revision}:{FOLDER}/{path}")
            for old, new in _REWRITES.items():
                text = text.replace(f"from {old} import", f"from {new} import").replace(f"import {old}\n",
                                                                                      f"import {new}\n")
            text = text.replace("spfl.allocation", name)
            (package / path).write_text(text)
    sys.path.insert(0, str(package.parent))
    return importlib.import_module(name)
