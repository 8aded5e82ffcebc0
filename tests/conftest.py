"""Shared fixtures: tiny synthetic scenes and the real-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REAL_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real").resolve()


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared real-data folder; skips the test when it is not beside the checkout."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real test data not found at {REAL_DATA} (clone with ../shared beside the repo)")
    return REAL_DATA


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory) -> dict[str, Path]:
    """A 48 x 48 synthetic scene (seed 3) with truth, written once per test session."""
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    out = tmp_path_factory.mktemp("scene48")
    return synthesize(SceneConfig(width=48, height=48, seed=3), out)


@pytest.fixture(scope="session", autouse=True)
def _ledger_in_tmp(tmp_path_factory):
    """Keep the run ledger of every test (and CLI subprocess) out of the home folder."""
    if "FUSECUBE_LEDGER" in os.environ:
        yield
        return
    os.environ["FUSECUBE_LEDGER"] = str(tmp_path_factory.mktemp("ledger") / "ledger.sqlite")
    yield
    os.environ.pop("FUSECUBE_LEDGER", None)


@pytest.fixture(scope="session")
def catalogue_base(small_scene):
    """``(scene paths, cube)`` for the bad-input catalogue (tests/catalogue.py).

    The cube lacks the planted all-zero period: strict stops at the first failing gate, so
    every other defect is built on a cube that passes.
    """
    from fusecube.cube import NDVI, TIME, read_cube

    cube = read_cube(small_scene["cube"]).load()
    zero = int(read_cube(small_scene["truth"]).attrs["zero_period"])
    cube[NDVI] = cube[NDVI].where(cube[TIME] != cube[TIME][zero])
    return small_scene, cube
