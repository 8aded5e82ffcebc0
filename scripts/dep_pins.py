"""Print pins for the lowest or newest releases pyproject.toml allows of the core array stack.

Used by ``make test-deps`` (``scripts/test_deps.sh``): ``python scripts/dep_pins.py lowest``
prints e.g. ``numpy==1.26.0 xarray==2025.1.2 zarr==3.0.8 dask[array]==2024.12.0``. The ranges
are read from ``[project] dependencies``; the releases from the package index pip is set up
with (``pip index versions``), so a release the index lacks is never pinned.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

#: The packages whose whole allowed range is tested.
CORE = ("numpy", "xarray", "zarr", "dask")


def allowed_releases(requirement: Requirement) -> list[Version]:
    """Final releases of ``requirement.name`` on the index that its specifier allows, oldest first."""
    listing = subprocess.run([sys.executable, "-m", "pip", "index", "versions", requirement.name],
                             capture_output=True, text=True, check=True).stdout
    line = next(row for row in listing.splitlines() if row.startswith("Available versions:"))
    versions = [Version(v.strip()) for v in line.split(":", 1)[1].split(",")]
    return sorted(v for v in versions if not v.is_prerelease and v in requirement.specifier)


def pins(kind: str, pyproject: Path) -> list[str]:
    """``name[extras]==version`` for each core package: its lowest or newest allowed release."""
    deps = [Requirement(d) for d in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    out = []
    for req in (r for r in deps if r.name in CORE):
        releases = allowed_releases(req)
        if not releases:
            raise SystemExit(f"no release of {req.name} on the index satisfies {req.specifier}")
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        out.append(f"{req.name}{extras}=={releases[0] if kind == 'lowest' else releases[-1]}")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("lowest", "newest"):
        raise SystemExit("usage: python scripts/dep_pins.py lowest|newest")
    print(" ".join(pins(sys.argv[1], Path(__file__).resolve().parents[1] / "pyproject.toml")))
