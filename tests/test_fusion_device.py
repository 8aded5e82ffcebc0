"""GPU-ready fusion on the CPU: device batches, the model-size rule, its record, prefetch, bench_gpu."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fusecube.cube import NDVI, NDVI_QUALITY, VH, VV, read_cube  # noqa: E402
from fusecube.errors import ConfigError  # noqa: E402
from fusecube.fusion.neural import batches as batches_module  # noqa: E402
from fusecube.fusion.neural import sizing  # noqa: E402
from fusecube.fusion.neural.batches import (  # noqa: E402
    DeviceBatches,
    HideOptions,
    hide_mask_torch,
    optical_features_torch,
    resolve_batching,
)
from fusecube.fusion.neural.cube_training import size_lines  # noqa: E402
from fusecube.fusion.neural.features import optical_features  # noqa: E402
from fusecube.fusion.neural.model import NeuralFusion  # noqa: E402
from fusecube.fusion.neural.prefetch import ahead  # noqa: E402
from fusecube.fusion.neural.sizing import best, size_candidates, validation_score  # noqa: E402
from fusecube.fusion.neural.train import TrainConfig  # noqa: E402
from fusecube.splits import SpatialSplit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_gpu.py"
#: A few dozen steps of a narrow network on the 48 x 48 scene (as tests/test_fusion.py).
TINY = TrainConfig(width=8, epochs=1, min_steps=60, batch_size=256, max_train_pixels=2000,
                   max_val_pixels=1000, split=SpatialSplit(block=16, val_fraction=0.3, buffer=2),
                   threads=1, device="cpu")


@pytest.fixture(scope="module")
def cube(small_scene):
    return read_cube(small_scene["cube"]).load()


def _series(rng, n=300, n_t=40):
    days = np.cumsum(rng.integers(5, 20, n_t)).astype(np.float64) + 19_000.0
    ndvi = rng.uniform(-0.2, 0.9, (n, n_t)).astype(np.float32)
    ndvi[rng.random((n, n_t)) < 0.5] = np.nan
    ndvi[0] = np.nan  # a pixel never observed
    ndvi[1, :] = np.nan
    ndvi[1, 7] = 0.4  # one observation only
    quality = rng.uniform(0, 1, (n, n_t)).astype(np.float32)
    quality[rng.random((n, n_t)) < 0.1] = np.nan
    return ndvi, quality, days


# ----------------------------------------------------------------------------- device batches
def test_torch_optical_features_equal_the_numpy_ones():
    ndvi, quality, days = _series(np.random.default_rng(0))
    expected = optical_features(ndvi, quality, days)
    got = optical_features_torch(torch.from_numpy(ndvi), torch.from_numpy(quality),
                                 torch.from_numpy(days - days[0])).numpy()
    assert got.shape == expected.shape == (300, 5, 40)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_torch_hide_mask_hides_observations_in_spans():
    valid = torch.rand(2000, 50, generator=torch.Generator().manual_seed(0)) < 0.7
    none = hide_mask_torch(valid, torch.Generator().manual_seed(1), HideOptions((0.0, 0.0), 1, 6))
    assert not (none & ~valid).any()
    runs = none.int().diff(dim=1)  # with rate 0 only the one span per pixel is hidden
    assert int((runs == 1).sum(dim=1).max()) <= 1 + int((~valid).sum(dim=1).max())
    some = hide_mask_torch(valid, torch.Generator().manual_seed(1), HideOptions((0.2, 0.4), 2, 6))
    share = some.sum() / valid.sum()
    assert not (some & ~valid).any() and 0.2 < float(share) < 0.7


def test_batching_resolves_by_device():
    assert resolve_batching("auto", "cuda") == "device" and resolve_batching("auto", "cuda:1") == "device"
    assert resolve_batching("auto", "cpu") == "host" and resolve_batching("device", "cpu") == "device"
    with pytest.raises(ConfigError, match="batching"):
        resolve_batching("gpu", "cpu")


def test_device_batches_never_touch_the_host(monkeypatch):
    """The device path (run here on the CPU device) uses torch only: numpy helpers would raise."""
    def host(*args, **kwargs):
        raise AssertionError("host work in the device path")

    monkeypatch.setattr(batches_module, "optical_features", host)
    monkeypatch.setattr(batches_module, "hide_mask", host)
    monkeypatch.setattr(batches_module, "assemble", host)
    rng = np.random.default_rng(1)
    ndvi, quality, days = _series(rng, n=100, n_t=30)
    source = DeviceBatches(radar_z=rng.normal(size=(100, 9, 30)).astype(np.float32),
                           calendar=np.zeros((2, 30), np.float32), ndvi_in=ndvi, quality=quality,
                           target_ok=np.isfinite(ndvi), date_weight=np.ones(30, np.float32),
                           times_days=days, train_idx=np.arange(10, 100),
                           hide=HideOptions((0.1, 0.5), 2, 6), seed=0, device="cpu")
    steps = list(source.iterate(7, 32))
    assert len(steps) == 7
    assert steps[0].x.shape == (32, 16, 30) and steps[0].target.shape == steps[0].weight.shape == (32, 30)
    assert all(bool(torch.isfinite(s.x).all()) for s in steps)
    # the loss weighs hidden observations only: never a value the network was shown
    assert all(float(s.weight[s.x[:, 12] == 1].sum()) == 0 for s in steps)  # ndvi_valid channel
    assert all(float(s.weight.sum()) > 0 for s in steps)


def test_training_on_the_device_path_beats_linear(cube):
    model = NeuralFusion(replace(TINY, batching="device")).fit(cube)
    assert model.meta_["batching"] == "device"
    spans = model.metrics_["heldout_spans"]  # long gaps in held-out blocks, as test_fusion.py
    assert spans["fusion"]["paddy"]["rmse"] < spans["linear"]["paddy"]["rmse"]
    assert spans["fusion"]["all"]["rmse"] < spans["linear"]["all"]["rmse"]


# ----------------------------------------------------------------------------- model size rule
def test_size_rule_large_on_cuda_small_on_cpu():
    config = TrainConfig()
    on_cpu = size_candidates(config, "cpu")
    assert [c.width for c in on_cpu] == [16] and on_cpu[0].max_train_pixels == 30_000
    large, small = size_candidates(config, "cuda")
    assert (large.width, large.max_train_pixels, large.batch_size) == (64, 200_000, 2048)
    assert small.width == 16 and small.max_train_pixels == 30_000
    assert len(size_candidates(replace(config, size="compare"), "cpu")) == 2
    assert len(size_candidates(replace(config, size="fixed"), "cuda")) == 1
    with pytest.raises(ConfigError, match="size"):
        size_candidates(replace(config, size="huge"), "cpu")


def test_best_and_validation_score():
    assert best([0.05, 0.04]) == 1 and best([0.04, 0.05]) == 0 and best([0.04, 0.04]) == 1
    metrics = {"heldout_spans": {"fusion": {"all": {"rmse": 0.1}}},
               "heldout_dates": {"fusion": {"all": {"rmse": 0.3}}}}
    assert validation_score(metrics) == pytest.approx(0.2)
    assert validation_score({}) == float("inf")


def test_model_file_records_the_size_choice(tmp_path, cube, monkeypatch):
    monkeypatch.setattr(sizing, "LARGE", {"width": 12, "max_train_pixels": 2000, "batch_size": 256})
    model = NeuralFusion(replace(TINY, size="compare")).fit(cube)
    record = model.meta_["model_size"]
    scores = [c["validation_rmse"] for c in record["candidates"]]
    assert [c["width"] for c in record["candidates"]] == [12, 8] and record["device"] == "cpu"
    assert scores[record["chosen"]] == min(scores)  # kept only when it validates better
    assert model.arch_["width"] == record["chosen_width"]
    assert model.metrics_ and validation_score(model.metrics_) == pytest.approx(min(scores), abs=1e-6)
    assert f"width {record['chosen_width']} kept" in size_lines(record)[0]  # `fuse train` prints it
    loaded = NeuralFusion.load(model.save(tmp_path / "m.pt"))
    assert loaded.meta_["model_size"] == record and loaded.arch_["width"] == record["chosen_width"]
    # a file from before the rule (no model_size) still loads
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    del state["meta"]["model_size"]
    torch.save(state, tmp_path / "old.pt")
    assert "model_size" not in NeuralFusion.load(tmp_path / "old.pt").meta_


def test_cpu_default_trains_one_model_on_the_host(cube):
    model = NeuralFusion(TINY).fit(cube)
    record = model.meta_["model_size"]
    assert len(record["candidates"]) == 1 and record["chosen_width"] == 8
    assert model.meta_["batching"] == "host"


# ----------------------------------------------------------------------------- prefetch
def test_prefetch_keeps_order_and_raises_where_the_producer_failed():
    assert list(ahead(iter(range(50)), depth=2)) == list(range(50))
    assert list(ahead(range(5), depth=0)) == list(range(5))

    def broken():
        yield 1
        raise ValueError("read failed")

    got = []
    with pytest.raises(ValueError, match="read failed"):
        for item in ahead(broken()):
            got.append(item)
    assert got == [1]


# ----------------------------------------------------------------------------- bench_gpu
def test_bench_gpu_runs_without_the_packages_a_bare_gpu_machine_lacks():
    blocked = ("zarr", "odc", "odc.geo", "pydantic", "dask", "rasterio", "sqlalchemy")
    code = ("import runpy, sys\n"
            f"for name in {blocked!r}: sys.modules[name] = None\n"
            f"sys.argv = ['bench_gpu.py', '--check-imports']\n"
            f"runpy.run_path({str(BENCH)!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "imports ok (bare src (missing" in done.stdout and "odc.geo.geobox" in done.stdout
    for name in ("zarr", "pydantic", "dask"):
        assert f"'{name}'" not in done.stderr


def test_bench_gpu_scene_is_the_synthetic_scene(small_scene, cube):
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    scene, truth = bench.synthesize(48, 48, cube.sizes["time"], 3, workers=1)
    for name in (VV, VH, NDVI, NDVI_QUALITY):
        np.testing.assert_array_equal(scene[name].values, cube[name].values)
    np.testing.assert_array_equal(truth, read_cube(small_scene["truth"])["ndvi_true"].values)
