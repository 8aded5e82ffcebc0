"""Blocks read with a halo from kept chunk borders: the same values, far fewer chunk decodes."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fusecube.config import CubeSource, RunConfig
from fusecube.cube import NDVI_FUSED, X, Y, read_cube
from fusecube.runner import run
from fusecube.runner.halo import HaloReader
from fusecube.runner.tasks import with_halo

EDGE = 16  # 48 x 48 px in 3 x 3 chunks


@pytest.fixture(scope="module")
def chunked(small_scene, tmp_path_factory):
    """The small scene written again in 16 x 16 px chunks (3 x 3 of them)."""
    path = tmp_path_factory.mktemp("chunked") / "cube.zarr"
    cube = read_cube(small_scene["cube"]).load()
    for var in cube.variables.values():
        var.encoding.pop("chunks", None)
        var.encoding.pop("preferred_chunks", None)
    cube.chunk({Y: EDGE, X: EDGE}).to_zarr(path, zarr_format=3, consolidated=False)
    return path


def blocks(size: int = 48):
    return [(slice(y, y + EDGE), slice(x, x + EDGE)) for y in range(0, size, EDGE)
            for x in range(0, size, EDGE)]


def grown(ys: slice, xs: slice, halo: int) -> tuple[slice, slice]:
    return with_halo(ys, halo, 48)[0], with_halo(xs, halo, 48)[0]


@pytest.mark.parametrize("halo", [1, 2, 3])
def test_every_block_reads_as_a_plain_read_does(chunked, halo):
    cube = read_cube(chunked, chunks={})
    reader = HaloReader(cube, halo, budget=2**30)
    for ys, xs in blocks():
        read_y, read_x = grown(ys, xs, halo)
        got = reader.read(ys, xs, read_y, read_x)
        assert got.identical(cube.isel({Y: read_y, X: read_x}).load())
    # row order: 9 own chunks and 8 neighbours decoded ahead of their turn, against the
    # 49 chunk decodes of plain reads (4 per corner block, 6 per edge block, 9 in the middle)
    assert reader.decoded == 17


def test_a_small_budget_or_an_unaligned_window_still_reads_right(chunked):
    cube = read_cube(chunked, chunks={})
    tiny = HaloReader(cube, 2, budget=1)  # keeps one chunk's borders: decodes again
    for ys, xs in blocks():
        read_y, read_x = grown(ys, xs, 2)
        assert tiny.read(ys, xs, read_y, read_x).identical(cube.isel({Y: read_y, X: read_x}).load())
    assert tiny.decoded > 17 and len(tiny.borders) == 1
    tiny.close()
    assert not tiny.borders and tiny.kept == 0
    reader = HaloReader(cube, 2)
    ys, xs = slice(4, 30), slice(0, 20)  # not one chunk: read plainly
    read_y, read_x = grown(ys, xs, 2)
    assert reader.read(ys, xs, read_y, read_x).identical(cube.isel({Y: read_y, X: read_x}).load())
    assert reader.decoded == 0


def test_blocks_read_from_two_threads_get_their_own_values(chunked):
    cube = read_cube(chunked, chunks={})
    reader = HaloReader(cube, 2)
    got, errors = {}, []

    def work(part):
        try:
            for ys, xs in part:
                got[(ys.start, xs.start)] = reader.read(ys, xs, *grown(ys, xs, 2))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    every = blocks()
    threads = [threading.Thread(target=work, args=(every[k::2],)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(got) == len(every)
    for ys, xs in every:
        read_y, read_x = grown(ys, xs, 2)
        assert got[(ys.start, xs.start)].identical(cube.isel({Y: read_y, X: read_x}).load())


def test_a_ridge_run_gives_the_same_result_with_and_without_kept_borders(chunked, tmp_path,
                                                                          monkeypatch):
    def ridge_run(out):
        return run(RunConfig(source=CubeSource(path=chunked), out=out, block_size=EDGE,
                             gapfill="ridge", report=False))

    loads = []
    original = HaloReader._load
    monkeypatch.setattr(HaloReader, "_load",
                        lambda self, cy, cx, **kw: loads.append((cy, cx)) or original(self, cy, cx, **kw))
    kept = read_cube(ridge_run(tmp_path / "kept").result).load()
    assert len(loads) == 17, "the block runner read through the kept borders"
    monkeypatch.setattr(HaloReader, "_chunk", lambda self, ys, xs: None)  # plain reads only
    plain = read_cube(ridge_run(tmp_path / "plain").result).load()
    np.testing.assert_array_equal(kept[NDVI_FUSED].values, plain[NDVI_FUSED].values)
    assert np.isfinite(kept[NDVI_FUSED].values).mean() > 0.9
