"""Lightning DataModules: batches, training-only statistics, reproducibility, stats cache."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
torch.set_num_threads(1)

from fusecube.ml import datamodules  # noqa: E402
from fusecube.ml.datamodules import CubeDataModule, SARDataModule  # noqa: E402
from fusecube.ml.patches.patch_set import PatchChunks, PatchSet  # noqa: E402
from fusecube.ml.patches.shards import ShardWriter, write_metadata  # noqa: E402
from fusecube.ml.sar import fit_preprocessing  # noqa: E402

SIZE = 256


@pytest.fixture(scope="module")
def big_patches(tmp_path_factory) -> PatchSet:
    """40 single-channel 256 x 256 linear-sigma0 patches on a 5 x 4 grid x 2 dates."""
    root = tmp_path_factory.mktemp("p256")
    rng = np.random.default_rng(0)
    rows, cols = np.meshgrid(np.arange(5) * SIZE, np.arange(4) * SIZE, indexing="ij")
    rows, cols = np.tile(rows.ravel(), 2), np.tile(cols.ravel(), 2)
    n = rows.size
    # brightness varies with position, so statistics depend on which patches are training
    level = 0.01 * (1 + rows / SIZE)[:, None, None, None]
    data = (level * rng.gamma(4.5, 1 / 4.5, size=(n, 1, SIZE, SIZE))).astype(np.float32)
    writer = ShardWriter(root, 16)
    writer.add(data, {"source": [0] * n, "time_index": [0] * 20 + [1] * 20,
                      "time": ["2024-01-01T00:00:00"] * 20 + ["2024-01-13T00:00:00"] * 20,
                      "row": rows.tolist(), "col": cols.tolist(), "bbox": [[0, 0, 1, 1]] * n})
    writer.close()
    write_metadata(root, shards=writer.shards, table=writer.table, variables=["vh"],
                   patch_shape=(1, SIZE, SIZE),
                   sources=[{"path": "synthetic", "times": ["a", "b"]}],
                   preprocessing={"units": {"vh": "linear"}}, counts={})
    return PatchSet.open(root)


def test_sar_datamodule_batches_and_training_only_statistics(big_patches):
    dm = SARDataModule(big_patches.root, batch_size=8, block_size=2 * SIZE, buffer=1, seed=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (8, 1, SIZE, SIZE)
    assert batch["image"].dtype == torch.float32
    assert float(batch["image"].min()) >= 0.0 and float(batch["image"].max()) <= 1.0
    split = dm.split
    assert set(batch["index"].tolist()) <= set(split.train.tolist())
    assert not np.intersect1d(split.train, split.val).size and split.val.size > 0
    # statistics equal a fit on exactly the training patches
    want = fit_preprocessing(PatchChunks(big_patches, split.train), db=True,
                             clip_method="percentile", norm="minmax")
    params = dm.preprocessing_params
    assert params["db"] is True and params["clip"] == want.clip.to_dict()
    every = fit_preprocessing(PatchChunks(big_patches, np.arange(big_patches.count)), db=True)
    assert params["clip"]["high"] != every.clip.to_dict()["high"]
    val = next(iter(dm.val_dataloader()))
    assert val["index"].tolist() == sorted(val["index"].tolist())  # no shuffle in validation


def test_sar_datamodule_reproducible_and_lazy_equals_in_memory(big_patches):
    def first_batch(**kw):
        dm = SARDataModule(big_patches.root, batch_size=8, block_size=2 * SIZE, seed=3, **kw)
        dm.setup()
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        return next(iter(loader)), dm

    a, dm_a = first_batch()
    b, _ = first_batch()
    c, _ = first_batch(lazy=False)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["image"], c["image"])
    assert a["index"].tolist() == c["index"].tolist()
    loader = dm_a.train_dataloader()
    loader.sampler.set_epoch(2)
    assert next(iter(loader))["index"].tolist() != a["index"].tolist()


def test_sar_datamodule_held_out_dates(big_patches):
    dm = SARDataModule(big_patches.root, block_size=2 * SIZE, val_dates=[1], augment=False)
    dm.setup()
    t = big_patches.column("time_index")
    assert (t[dm.split.train] == 0).all() and (t[dm.split.val] == 1).any()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    return synthesize(SceneConfig(width=48, height=48, seed=11, n_periods=8),
                      tmp_path_factory.mktemp("cube_dm"))


def test_cube_datamodule_batches_and_cached_statistics(scene, tmp_path, monkeypatch):
    cache = tmp_path / "stats.json"
    kw = dict(variables=("vv", "vh"), targets=[scene["truth"]], target_variables=("ndvi_true",),
              size=16, time_window=4, batch_size=3, block_size=16, stats_cache=cache, seed=1)
    dm = CubeDataModule([scene["cube"]], **kw)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (3, 2, 4, 16, 16)
    assert tuple(batch["target"].shape) == (3, 1, 4, 16, 16)
    assert batch["mask"].dtype == torch.bool and not torch.isnan(batch["image"]).any()
    assert abs(float(batch["image"].mean())) < 1.0  # z-scored
    assert cache.exists()
    train_rows = dm.train_dataset.windows.row
    val_rows = dm.val_dataset.windows.row
    assert len(train_rows) and len(val_rows)

    def refuse(*a, **k):
        raise AssertionError("statistics recomputed despite the cache")

    monkeypatch.setattr(datamodules, "fit_preprocessing", refuse)
    again = CubeDataModule([scene["cube"]], **kw)
    again.setup()
    assert again.preprocessing_params == dm.preprocessing_params
    other = CubeDataModule([scene["cube"]], **{**kw, "seed": 2})  # other split: new statistics
    with pytest.raises(AssertionError, match="recomputed"):
        other.setup()


def test_sar_datamodule_on_patches_exported_from_the_scene(scene, tmp_path):
    from fusecube.ml.patches.export import PatchExportConfig, export_patches

    ps = export_patches(scene["cube"], tmp_path / "p",
                        PatchExportConfig(size=16, stride=8, variables=("vh",)))
    dm = SARDataModule(ps.root, batch_size=8, block_size=24, buffer=4, seed=0, num_workers=2,
                       pin_memory=False)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (8, 1, 16, 16) and batch["image"].dtype == torch.float32
    assert dm.preprocessing_params["db"] is True  # the shards hold linear vh
    row, col = ps.column("row"), ps.column("col")
    tr, va = batch["index"].numpy(), dm.split.val
    gap = np.maximum(np.abs(row[tr][:, None] - row[va][None]) - 16,
                     np.abs(col[tr][:, None] - col[va][None]) - 16)
    assert gap.min() >= 4
