"""What produced a result: the simulation code's version and the package versions."""

from __future__ import annotations

import functools
import hashlib
import platform
from importlib import metadata
from pathlib import Path

import spfl

# The code that makes a run's numbers (paths below the package; a folder counts with every module in it).
# The reporting wing, the pipeline's planning and the CLI are left out on purpose, so that restyling a
# figure never reruns a simulation.
SIMULATION_MODULES = (
    "simulator", "configuration/settings.py", "configuration/reading.py", "configuration/methods.py",
    "configuration/datasets.py", "records.py", "vocabulary.py",
)


@functools.cache
def code_version(length: int = 12) -> str:
    """Hash of the source of every module that affects simulation results (read once per process)."""
    root = Path(spfl.__file__).parent
    digest = hashlib.sha256()
    for name in SIMULATION_MODULES:
        path = root / name
        if not path.exists():  # a renamed module must not drop out of the version unnoticed
            raise FileNotFoundError(f"spfl.provenance.SIMULATION_MODULES names '{name}', which is not in {root}")
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(root)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:length]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "spfl": spfl.__version__}
    for name in ("torch", "numpy", "scipy", "numba", "llvmlite"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            versions[name] = "missing"
    return versions
