"""Cube-model input pipeline: DataLoader workers by default, device-resident windows, the
held-out comparison with linear gap-filling."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
lightning = pytest.importorskip("lightning")
torch.set_num_threads(1)

from fusecube.errors import PatchError  # noqa: E402
from fusecube.ml import datamodules  # noqa: E402
from fusecube.ml.datamodules import default_workers, loader_options, picklable  # noqa: E402
from fusecube.ml.device_windows import DeviceWindows, window_origins  # noqa: E402
from fusecube.ml.training.data import CubeFusionDataModule  # noqa: E402
from fusecube.ml.training.task import CubeFusionTask, heldout_comparison  # noqa: E402

WORKERS_WARNING = "does not have many workers"


@pytest.fixture(scope="module")
def zarr_root(tmp_path_factory) -> Path:
    """One 32 x 32 px, 24-period synthetic cube at ROOT/a/cube.zarr."""
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    root = tmp_path_factory.mktemp("cubes")
    synthesize(SceneConfig(width=32, height=32, seed=1, n_periods=24), root / "a")
    return root


def _datamodule(root: Path, **kw) -> CubeFusionDataModule:
    options = dict(size=16, time_window=12, block_size=16, stride=8, batch_size=4, stats_cache=None)
    return CubeFusionDataModule(str(root), **{**options, **kw})


@pytest.fixture
def four_cores(monkeypatch):
    """Pretend this process may run on 4 cores (fusecube and Lightning both ask the affinity)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)


class _Unpicklable(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.handle = lambda: None  # a lambda does not pickle

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i):
        return torch.zeros(1)


# ----------------------------------------------------------------------------- workers
def test_default_loader_uses_workers_when_the_dataset_pickles(zarr_root, four_cores):
    dm = _datamodule(zarr_root)
    dm.setup("fit")
    assert picklable(dm.train_dataset)
    loader = dm.train_dataloader()
    assert loader.num_workers == 3 == default_workers(dm.train_dataset)  # one per core but one
    assert loader.persistent_workers and loader.prefetch_factor == datamodules.PREFETCH_BATCHES
    assert dm.val_dataloader().num_workers == 3


def test_unpicklable_dataset_loads_in_the_main_process(four_cores):
    assert not picklable(_Unpicklable())
    assert loader_options(_Unpicklable(), None, False) == {"num_workers": 0, "pin_memory": False}
    assert loader_options(_Unpicklable(), 2, True)["persistent_workers"] is True  # asked: given


def test_workers_give_the_same_batches_as_the_main_process(zarr_root):
    dm = _datamodule(zarr_root, num_workers=2, augment=True)
    dm.setup("fit")
    serial = _datamodule(zarr_root, num_workers=0, augment=True)
    serial.setup("fit")
    for a, b in zip(dm.train_dataloader(), serial.train_dataloader(), strict=True):
        np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())


def test_fit_on_the_default_path_has_no_workers_warning(zarr_root, four_cores):
    def fit(**kw) -> list[str]:
        trainer = lightning.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                                    enable_progress_bar=False, enable_model_summary=False,
                                    num_sanity_val_steps=0, max_steps=1, limit_val_batches=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(CubeFusionTask(depth=2, width=4), _datamodule(zarr_root, **kw))
        return [str(w.message) for w in caught]

    assert not [m for m in fit() if WORKERS_WARNING in m]
    assert [m for m in fit(num_workers=0) if WORKERS_WARNING in m]  # the warning exists


# ----------------------------------------------------------------------------- device windows
def test_window_origins_match_a_brute_force_search():
    allowed = np.random.default_rng(0).random((20, 23)) < 0.9
    allowed[5:15, 4:18] = True
    got = {tuple(o) for o in window_origins(allowed.shape, 4, allowed)}
    want = {(r, c) for r in range(17) for c in range(20) if allowed[r:r + 4, c:c + 4].all()}
    assert got == want and want
    assert len(window_origins((10, 12), 4, None)) == 7 * 9


def test_device_windows_cut_the_cube_exactly():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(2, 20, 30, 40)).astype(np.float32)
    image[0, 3, 5, 7] = np.nan
    target = rng.uniform(0, 1, size=(1, 20, 30, 40)).astype(np.float32)
    allowed = np.zeros((30, 40), bool)
    allowed[:, 10:] = True
    windows = DeviceWindows(image, target, size=8, time_window=6, batch_size=5, seed=3,
                            device="cpu", allowed=allowed)
    batch = windows.batch()
    assert batch["image"].shape == (5, 2, 6, 8, 8) and batch["target"].shape == (5, 1, 6, 8, 8)
    for i in range(5):
        t, r, c = (int(batch[k][i]) for k in ("time", "row", "col"))
        assert c >= 10  # inside the allowed pixels
        want = image[:, t:t + 6, r:r + 8, c:c + 8]
        np.testing.assert_array_equal(batch["mask"][i].numpy(), np.isfinite(want))
        np.testing.assert_array_equal(batch["image"][i].numpy(), np.nan_to_num(want))
        np.testing.assert_array_equal(batch["target"][i].numpy(), target[:, t:t + 6, r:r + 8, c:c + 8])
    again = DeviceWindows(image, target, size=8, time_window=6, batch_size=5, seed=3, device="cpu",
                          allowed=allowed).batch()
    assert torch.equal(again["row"], batch["row"]) and torch.equal(again["time"], batch["time"])
    with pytest.raises(PatchError, match="smaller"):
        DeviceWindows(image, target, size=64, time_window=6, batch_size=1)


def test_the_task_trains_on_device_windows():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(2, 16, 24, 24)).astype(np.float32)
    target = rng.uniform(0.1, 0.8, size=(1, 16, 24, 24)).astype(np.float32)
    target[:, ::3] = np.nan
    windows = DeviceWindows(image, target, size=16, time_window=12, batch_size=2, device="cpu")
    task = CubeFusionTask(depth=2, width=4)
    batch = windows.batch()
    shown = batch["target_mask"].clone()
    pred = task(task.inputs(batch["image"], batch["mask"], batch["target"], shown))
    loss = task.weighting(task.losses(pred, batch, ~shown & batch["target_mask"], shown))
    loss.backward()
    assert torch.isfinite(loss) and task.net.head.weight.grad is not None


# ----------------------------------------------------------------------------- held-out vs linear
def test_heldout_comparison_needs_both_tests_better():
    better = heldout_comparison({"val_rmse": 0.05, "val_rmse_linear": 0.07,
                                 "val_rmse_heldout_dates": 0.06, "val_rmse_heldout_dates_linear": 0.08})
    assert better["beats_linear"]
    worse_dates = heldout_comparison({"val_rmse": 0.05, "val_rmse_linear": 0.07,
                                      "val_rmse_heldout_dates": 0.09,
                                      "val_rmse_heldout_dates_linear": 0.08})
    assert not worse_dates["beats_linear"]
    tie = heldout_comparison({"val_rmse": 0.07, "val_rmse_linear": 0.07})
    assert not tie["beats_linear"]


def test_validation_reports_linear_beside_the_unet(zarr_root):
    task = CubeFusionTask(depth=2, width=4, holdout_dates=[6, 18])
    trainer = lightning.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    scores = trainer.validate(task, _datamodule(zarr_root, num_workers=0), verbose=False)[0]
    # untrained, the task is exactly linear gap-filling: the same RMSE, so not offered as better
    assert scores["val_rmse_linear"] == pytest.approx(scores["val_rmse"], rel=1e-5)
    assert scores["val_rmse_heldout_dates_linear"] == pytest.approx(scores["val_rmse_heldout_dates"],
                                                                    rel=1e-5)
    assert task.heldout_scores is not None and not task.heldout_scores["beats_linear"]
    assert task.record()["heldout"] == task.heldout_scores
    assert pickle.loads(pickle.dumps(task.heldout_scores)) == task.heldout_scores
