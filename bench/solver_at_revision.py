"""The allocation package as it was at an earlier git revision, importable beside the current one.

    from solver_at_revision import load_solver
    old = load_solver()                 # the solver before the exact packet maximizer (main f3914d3)
    old = load_solver("68a2967")        # a module with that revision's AllocationProblem, allocate, ...
    old = load_solver("f0e9e98")        # the numpy solver before the compiled kernels

Reads the allocation package of the revision (``src/spfl/simulator/allocation/*.py``, or
``src/spfl/allocation/*.py`` before the package moved) with ``git show`` (no copy kept in the repository),
renames the package in its imports and imports it from a temporary folder.  The rest of ``spfl`` (the
channel, the vocabulary) is today's, imported from where it lives today: the old files' imports of those
modules are rewritten to ``CHANNEL_MODULE`` and ``VOCABULARY_MODULE`` (the one place to change when the
package moves).  The comparison scripts give the old solver its own problem class so that later edits
of problem.py cannot leak in.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
# Where the allocation package lives at a revision, newest layout first, with its import name.
FOLDERS = (("src/spfl/simulator/allocation", "spfl.simulator.allocation"), ("src/spfl/allocation", "spfl.allocation"))
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
    listings = ((folder, module, subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only",
                                                 f"{revision}:{folder}"], capture_output=True, text=True))
                for folder, module in FOLDERS)
    found = next(((folder, module, done.stdout) for folder, module, done in listings if done.returncode == 0), None)
    if found is None:
        raise FileNotFoundError(f"no allocation package at revision {revision} (looked in {[f for f, _ in FOLDERS]})")
    folder, module, listing = found
    for path in listing.split():
        if path.endswith(".py"):
            text = git("show", f"{revision}:{folder}/{path}")
            for old, new in _REWRITES.items():
                text = text.replace(f"from {old} import", f"from {new} import").replace(f"import {old}\n",
                                                                                      f"import {new}\n")
            text = text.replace(module, name)
            (package / path).write_text(text)
    sys.path.insert(0, str(package.parent))
    return importlib.import_module(name)


def load_module(revision: str, path: str) -> ModuleType:
    """One source file of the repository at ``revision`` (``path`` from the root), imported as a module of
    its own from a temporary file (its imports are today's modules)."""
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:{path}"], capture_output=True, text=True,
                          check=True).stdout
    name = f"{Path(path).stem}_at_{revision.replace('-', '_')}"
    file = Path(tempfile.mkdtemp(prefix="spfl-module-")) / f"{name}.py"
    file.write_text(text)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
