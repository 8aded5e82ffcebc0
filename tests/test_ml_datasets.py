"""Patch datasets (in memory, memory-mapped), augmentation safety, 4-D cube samples."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from fusecube.cube import read_cube  # noqa: E402
from fusecube.ml.datasets import (  # noqa: E402
    CubeDataset,
    CubeRegionChunks,
    LazyPatchDataset,
    SARPatchDataset,
)
from fusecube.ml.patches.patch_set import PatchChunks, PatchSet  # noqa: E402
from fusecube.ml.patches.shards import ShardWriter, write_metadata  # noqa: E402
from fusecube.ml.samplers import grid_windows  # noqa: E402
from fusecube.ml.sar import fit_preprocessing  # noqa: E402
from fusecube.ml.transforms import Compose, FillMissing, FlipRotate, Preprocess  # noqa: E402
from fusecube.storage.manifest import file_sha256  # noqa: E402

N, SHARD = 23, 5


@pytest.fixture(scope="module")
def patch_set(tmp_path_factory) -> PatchSet:
    """23 random 1 x 8 x 8 patches in 5 shards (the last one short)."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(1)
    data = rng.gamma(4.5, 0.01, size=(N, 1, 8, 8)).astype(np.float32)
    writer = ShardWriter(root, SHARD)
    rows = np.arange(N) * 8
    writer.add(data, {"source": [0] * N, "time": ["2024-01-01T00:00:00"] * N,
                      "time_index": [0] * N, "row": rows.tolist(), "col": [0] * N,
                      "bbox": [[0, 0, 1, 1]] * N})
    writer.close()
    write_metadata(root, shards=writer.shards, table=writer.table, variables=["vh"],
                   patch_shape=(1, 8, 8), sources=[], preprocessing={"units": {"vh": "linear"}},
                   counts={})
    np.save(root / "all.npy", data)
    return PatchSet.open(root)


def test_lazy_equals_in_memory_and_cumulative_index(patch_set):
    data = np.load(patch_set.root / "all.npy")
    lazy = LazyPatchDataset(patch_set)
    mem = SARPatchDataset.from_patch_set(patch_set)
    assert len(lazy) == len(mem) == N
    assert [s["count"] for s in patch_set.meta["shards"]] == [5, 5, 5, 5, 3]
    for i in range(N):
        a, b = lazy[i], mem[i]
        assert set(a) == set(b) == {"image", "index"}
        assert a["image"].dtype == torch.float32 and tuple(a["image"].shape) == (1, 8, 8)
        np.testing.assert_array_equal(a["image"].numpy(), data[i])
        np.testing.assert_array_equal(b["image"].numpy(), data[i])
        assert a["index"] == b["index"] == i
    shard, offset = lazy.locate(np.array([0, 4, 5, 22]))
    assert shard.tolist() == [0, 0, 1, 4] and offset.tolist() == [0, 4, 0, 2]


def test_subset_and_seeded_shuffle(patch_set):
    idx = np.array([3, 7, 11, 19, 20, 22])
    a = LazyPatchDataset(patch_set, indices=idx, shuffle_seed=5)
    b = LazyPatchDataset(patch_set, indices=idx, shuffle_seed=5)
    order = [a[i]["index"] for i in range(len(a))]
    assert order == [b[i]["index"] for i in range(len(b))]
    assert sorted(order) == idx.tolist() and order != idx.tolist()
    a.set_epoch(1)
    assert [a[i]["index"] for i in range(len(a))] != order
    c = LazyPatchDataset(patch_set, indices=idx)
    assert [c[i]["index"] for i in range(len(c))] == idx.tolist()


def test_augmentation_never_writes_into_the_mmap(patch_set):
    hashes = [file_sha256(p) for p in patch_set.shard_paths]

    def double_in_place(sample, rng):
        sample["image"] *= 2.0  # would raise on a read-only memory map without the copy
        return sample

    data = np.load(patch_set.root / "all.npy")
    ds = LazyPatchDataset(patch_set, transform=Compose([double_in_place, FlipRotate()]))
    for i in range(N):
        out = ds[i]["image"].numpy()
        assert np.isclose(out.sum(), 2 * data[i].sum(), rtol=1e-5)
    first = ds[0]["image"].numpy()
    np.testing.assert_array_equal(ds[0]["image"].numpy(), first)  # same (seed, epoch, index)
    assert [file_sha256(p) for p in patch_set.shard_paths] == hashes
    m = ds.shard(0)
    assert not m.flags.writeable
    np.testing.assert_array_equal(np.asarray(m), data[:5])


def test_flip_rotate_reaches_all_eight_symmetries_consistently():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    seen = set()
    for seed in range(64):
        out = FlipRotate(keys=("image", "mask"))({"image": img, "mask": img.copy()},
                                                 np.random.default_rng(seed))
        np.testing.assert_array_equal(out["image"], out["mask"])
        seen.add(out["image"].tobytes())
    want = {np.rot90(f, k, axes=(-2, -1)).tobytes()
            for f in (img, img[..., ::-1]) for k in range(4)}
    assert seen == want


def test_lru_bounds_open_maps_and_pickles_without_them(patch_set):
    ds = LazyPatchDataset(patch_set, max_open_shards=2)
    for i in range(N):
        ds[i]
        assert len(ds._maps) <= 2
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone._maps) == 0
    np.testing.assert_array_equal(clone[7]["image"].numpy(), ds[7]["image"].numpy())


def test_dataloader_workers_give_the_same_batches(patch_set):
    from torch.utils.data import DataLoader

    ds = LazyPatchDataset(patch_set, shuffle_seed=0, transform=FlipRotate())
    kw = dict(batch_size=4, shuffle=False)
    serial = [b["image"] for b in DataLoader(ds, num_workers=0, **kw)]
    parallel = [b["image"] for b in DataLoader(ds, num_workers=2, **kw)]
    assert len(serial) == 6 and tuple(serial[0].shape) == (4, 1, 8, 8)
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a, b)


def test_patch_chunks_stream_the_selected_patches(patch_set):
    data = np.load(patch_set.root / "all.npy")
    idx = np.array([21, 2, 9, 10, 4])
    chunks = PatchChunks(patch_set, idx, chunk_size=2)
    got = np.concatenate(list(chunks))
    np.testing.assert_array_equal(got, data[np.sort(idx)])
    assert len(chunks) == 3 and len(list(chunks)) == 3  # re-iterable


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    return synthesize(SceneConfig(width=40, height=32, seed=9, n_periods=6),
                      tmp_path_factory.mktemp("cube_ds"))


def test_cube_dataset_reads_windows_masks_and_targets(scene):
    windows = grid_windows([(6, 32, 40)], size=16, time_window=3, stride=8)
    ds = CubeDataset([scene["cube"]], windows, variables=("vv", "vh", "ndvi"),
                     targets=[scene["truth"]], target_variables=("ndvi_true",))
    cube = read_cube(scene["cube"]).load()
    truth = read_cube(scene["truth"]).load()
    for i in (0, len(ds) // 2, len(ds) - 1):
        s = ds[i]
        assert set(s) == {"image", "mask", "target", "target_mask", "index", "source", "time",
                          "row", "col"}
        t, r, c = s["time"], s["row"], s["col"]
        sel = dict(time=slice(t, t + 3), y=slice(r, r + 16), x=slice(c, c + 16))
        want = np.stack([cube[v].isel(sel).values for v in ("vv", "vh", "ndvi")])
        assert tuple(s["image"].shape) == (3, 3, 16, 16) and s["image"].dtype == torch.float32
        np.testing.assert_array_equal(s["mask"].numpy(), np.isfinite(want))
        np.testing.assert_array_equal(s["image"].numpy()[np.isfinite(want)],
                                      want[np.isfinite(want)])
        np.testing.assert_allclose(s["target"].numpy()[0],
                                   truth["ndvi_true"].isel(sel).values, rtol=1e-6)
    assert not ds[0]["mask"].all()  # the scene has cloud gaps in ndvi


def test_cube_dataset_is_worker_safe(scene):
    from torch.utils.data import DataLoader

    windows = grid_windows([(6, 32, 40)], size=16, time_window=2, stride=8)
    ds = CubeDataset([scene["cube"]], windows, variables=("vv", "vh"))
    ds[0]  # opened in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._stores == [] and clone._pid is None
    serial = [b["image"] for b in DataLoader(ds, batch_size=5, num_workers=0)]
    parallel = [b["image"] for b in DataLoader(ds, batch_size=5, num_workers=2)]
    assert tuple(serial[0].shape) == (5, 2, 2, 16, 16)
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a, b)


def test_region_statistics_count_each_pixel_once(scene):
    windows = grid_windows([(6, 32, 40)], size=16, time_window=6, stride=8)
    train = windows.subset(windows.col < 16)  # cols 0 and 8: pixels 0..23, overlapping
    chunks = CubeRegionChunks([scene["cube"]], train, ("vh",), block=16)
    values = np.concatenate([c.reshape(-1) for c in chunks])
    want = read_cube(scene["cube"])["vh"].values[:, :, :24].reshape(-1)
    np.testing.assert_array_equal(np.sort(values), np.sort(want))
    p = fit_preprocessing(CubeRegionChunks([scene["cube"]], train, ("vh",)), db=True,
                          clip_method="percentile", norm="zscore")
    sample = CubeDataset([scene["cube"]], train, variables=("vh",),
                         transform=Compose([Preprocess(p, channel_axis=-4), FillMissing()]))[0]
    assert abs(float(sample["image"].mean())) < 1.5  # standardised, not raw dB (~ -20)


def test_chunk_cache_gives_identical_windows_within_budget(scene, tmp_path):
    from fusecube.cube import write_cube
    from fusecube.ml.datasets import ChunkCache, read_window

    small = write_cube(read_cube(scene["cube"]).load(), tmp_path / "c.zarr",
                       chunks={"time": 4, "y": 12, "x": 12})  # windows straddle chunks
    windows = grid_windows([(6, 32, 40)], size=16, time_window=3, stride=4, time_stride=1)
    plain = CubeDataset([small], windows, variables=("vv", "ndvi"), cache_mb=0)
    cached = CubeDataset([small], windows, variables=("vv", "ndvi"), cache_mb=1)
    for i in range(len(windows)):
        a, b = plain.read(i), cached.read(i)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["mask"], b["mask"])
    cache = cached._cache
    assert cache.hits > 5 * cache.misses and cache.nbytes <= cache.max_bytes
    assert plain._cache.hits == 0
    # a budget smaller than one chunk caches nothing and still reads right
    tiny = ChunkCache(10)
    vv = read_cube(small, chunks=None)["vv"]
    got = read_window(vv, slice(1, 5), slice(5, 30), slice(0, 40), cache=tiny, key=("vv",))
    np.testing.assert_array_equal(got, vv.values[1:5, 5:30, 0:40])
    assert tiny.nbytes == 0 and tiny.misses > 0


def test_lazy_dataset_refuses_a_shard_that_disagrees_with_metadata(patch_set, tmp_path):
    import shutil

    from fusecube.errors import PatchFileError

    root = tmp_path / "copy"
    shutil.copytree(patch_set.root, root)
    np.save(root / "shard_00002.npy", np.zeros((4, 1, 8, 8), np.float32))  # metadata says 5
    (root / "shard_00003.npy").unlink()
    ds = LazyPatchDataset(root)
    ds[0]
    with pytest.raises(PatchFileError, match="metadata says"):
        ds[10]
    with pytest.raises(PatchFileError, match="missing"):
        ds[15]
