"""The bad-input catalogue's harness: how a case is built, run through the CLI and judged.

Every ``tests/test_bad_inputs*.py`` module holds a ``CASES`` list of :class:`Case` and runs
each with :func:`run_case`: the command must exit non-zero with the case's own
:class:`~fusecube.errors.FusecubeError`, print one ``error:`` line naming the input and the fix,
no traceback, and leave an earlier output folder byte-identical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import xarray as xr

from fusecube.cli import main
from fusecube.cube import write_cube
from fusecube.errors import FusecubeError


@dataclass
class Env:
    """What a case builder gets: a scratch folder and the clean scene."""

    tmp: Path
    scene: dict[str, Path]
    cube: xr.Dataset

    def write(self, ds: xr.Dataset, name: str = "bad.zarr") -> str:
        return str(write_cube(ds, self.tmp / name))

    def variant(self, name: str = "bad.zarr", **variables) -> str:
        ds = self.cube.copy()
        for key, value in variables.items():
            ds[key] = value
        return self.write(ds, name)

    def mask_file(self, gdf, name: str) -> str:
        gdf.to_file(self.tmp / name)
        return str(self.tmp / name)


@dataclass
class Case:
    """One bad input: how to build it, the error it must raise and what the message names."""

    name: str
    build: Callable[[Env], list[str]]
    error: type[FusecubeError]
    names: str


def check(cube: str, *extra: str) -> list[str]:
    return ["check", cube, *extra]


def strict(cube: str, *extra: str) -> list[str]:
    return ["check", cube, "--strict", *extra]


def tree_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def previous_output(folder: Path) -> Path:
    """An output folder from an earlier run: must come out of a failure byte-identical."""
    quality = folder / "quality"
    quality.mkdir(parents=True)
    (quality / "quality.json").write_text('{"gates": []}\n')
    (folder / "result.zarr").mkdir()
    (folder / "result.zarr" / "zarr.json").write_text('{"zarr_format": 3}\n')
    (folder / "report.html").write_text("<html>earlier run</html>\n")
    (folder / "run.json").write_text('{"run_id": "earlier"}\n')  # what marks a run folder
    return folder


def argv_with_out(argv: list[str], out: Path) -> list[str]:
    if "--out" in argv:
        return argv
    return [*argv, "--out", str(out / "quality" if argv[0] == "check" else out)]


def run_case(case: Case, base, tmp_path: Path, capsys, monkeypatch) -> None:
    """Build ``case``, run it through the CLI and check every promise of the catalogue."""
    scene, cube = base
    monkeypatch.setenv("FUSECUBE_LEDGER", str(tmp_path / "ledger.sqlite"))
    monkeypatch.chdir(tmp_path)
    env = Env(tmp_path / "inputs", scene, cube)
    env.tmp.mkdir()
    argv = case.build(env)
    out = previous_output(tmp_path / "out")
    before = tree_hashes(out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv_with_out(argv, out))
    assert info.value.code not in (0, None)
    error = info.value.__context__
    assert type(error) is case.error, f"{case.name}: {type(error).__name__}: {error}"
    message = str(error)
    assert case.names in message
    assert "\n" not in message
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and case.names in last  # one line, not wrapped
    assert tree_hashes(out) == before, "an earlier output was changed by a failed command"
    leftovers = [p.name for p in out.rglob(".*tmp*")]
    assert not leftovers


