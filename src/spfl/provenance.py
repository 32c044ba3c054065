"""What produced a result: the simulation code's version and the package versions."""

from __future__ import annotations

import functools
import hashlib
import platform
from importlib import metadata
from pathlib import Path

import spfl

# Modules whose code changes a run's numbers.  Analysis, plots and the CLI are left out on
# purpose, so that restyling a figure never reruns a simulation.
SIMULATION_MODULES = (
    "aggregation.py", "allocation", "callbacks.py", "channel.py", "data.py", "kernels.py", "methods.py",
    "models.py", "partition.py", "records.py", "simulation.py", "spec.py", "transmission.py", "training.py",
    "vocabulary.py",
)


@functools.cache
def code_version(length: int = 12) -> str:
    """Hash of the source of every module that affects simulation results (read once per process)."""
    root = Path(spfl.__file__).parent
    digest = hashlib.sha256()
    for name in SIMULATION_MODULES:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if file.exists():
                digest.update(str(file.relative_to(root)).encode())
                digest.update(file.read_bytes())
    return digest.hexdigest()[:length]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "spfl": spfl.__version__}
    for name in ("torch", "numpy", "scipy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            versions[name] = "missing"
    return versions
