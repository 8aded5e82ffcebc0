"""The 3-D U-Net cube model: network, physics-style losses, Lightning training, CLI, DDP, resume."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
lightning = pytest.importorskip("lightning")
pytest.importorskip("jsonargparse")

from fusecube.cube import NDVI, NDVI_FUSED, read_cube  # noqa: E402
from fusecube.errors import CubeModelError  # noqa: E402
from fusecube.ml.models import (  # noqa: E402
    UncertaintyWeighting,
    UNet3D,
    range_loss,
    s1_change_loss,
    smoothness_loss,
)
from fusecube.ml.models.losses import masked_mse  # noqa: E402
from fusecube.ml.training.cli import cli_main  # noqa: E402
from fusecube.ml.training.data import CubeFusionDataModule, covering_windows, find_cubes  # noqa: E402
from fusecube.ml.training.task import CubeFusionTask, checkpoint_record, interpolate_time, observed  # noqa: E402
from fusecube.ml.training.writer import FusedCubeWriter  # noqa: E402
from fusecube.storage.manifest import dataset_manifest  # noqa: E402

torch.set_num_threads(1)

#: Tiny data/model options shared by the CLI tests.
TINY = ["--data.size", "16", "--data.time_window", "12", "--data.block_size", "16", "--data.stride", "8",
        "--data.stats_cache", "null", "--data.batch_size", "4", "--model.depth", "2", "--model.width", "4",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1",
        "--trainer.check_val_every_n_epoch", "null", "--trainer.val_check_interval", "2",
        "--trainer.limit_val_batches", "2"]


@pytest.fixture(scope="module")
def zarr_root(tmp_path_factory) -> Path:
    """One 32 x 32 px, 24-period synthetic cube at ROOT/a/cube.zarr."""
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    root = tmp_path_factory.mktemp("cubes")
    synthesize(SceneConfig(width=32, height=32, seed=1, n_periods=24), root / "a")
    return root


def tiny_datamodule(root: Path, **kw) -> CubeFusionDataModule:
    options = dict(size=16, time_window=12, block_size=16, stride=8, batch_size=4, stats_cache=None)
    return CubeFusionDataModule(str(root), **{**options, **kw})


def quiet_trainer(**kw) -> lightning.Trainer:
    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0)
    return lightning.Trainer(**{**options, **kw})


# ---------------------------------------------------------------------------- network


@pytest.mark.parametrize(("depth", "time_pool"), [(1, False), (3, False), (2, True)])
def test_unet_keeps_any_shape(depth, time_pool):
    torch.manual_seed(0)
    net = UNet3D(6, 1, depth=depth, width=4, time_pool=time_pool)
    x = torch.randn(2, 6, 7, 13, 11)
    y = net(x)
    assert y.shape == (2, 1, 7, 13, 11)
    y.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_unet_depth_and_width_change_the_network():
    count = [sum(p.numel() for p in UNet3D(6, depth=d, width=w).parameters()) for d, w in ((2, 4), (3, 4), (2, 8))]
    assert count[1] > count[0] and count[2] > count[0]
    assert len(UNet3D(6, depth=4).decoders) == 3  # one skip connection per level below the top
    with pytest.raises(ValueError):
        UNet3D(6, depth=0)


def test_unet_skip_connections_carry_fine_detail():
    """A one-pixel impulse in the input reaches the output at its own position through the top skip."""
    torch.manual_seed(0)
    net = UNet3D(1, 1, depth=3, width=4).eval()
    x = torch.zeros(1, 1, 4, 16, 16, requires_grad=True)
    net(x)[0, 0, 2, 5, 9].backward()
    grad = x.grad[0, 0].abs()
    assert grad[2, 5, 9] > 0 and grad[:, 5, 9].sum() > 0


# ---------------------------------------------------------------------------- losses


def test_loss_terms_exact_values():
    pred = torch.tensor([1.5, -1.2, 0.3]).reshape(1, 1, 3, 1, 1)
    assert math.isclose(float(range_loss(pred)), (0.25 + 0.04) / 3, rel_tol=1e-6)
    ramp = torch.arange(6.0).reshape(1, 1, 6, 1, 1)
    assert float(smoothness_loss(0.1 * ramp)) == pytest.approx(0.0, abs=1e-12)
    assert float(smoothness_loss(ramp**2)) == pytest.approx(4.0)  # second difference of t² is 2
    obs = torch.ones(1, 1, 3, 1, 1)
    mask = torch.tensor([True, False, True]).reshape(1, 1, 3, 1, 1)
    assert float(masked_mse(torch.zeros_like(obs), obs, mask)) == pytest.approx(1.0)
    assert float(masked_mse(obs, obs, torch.zeros_like(mask))) == 0.0


def test_s1_change_penalises_ndvi_change_where_radar_is_steady():
    ndvi = torch.tensor([0.2, 0.7]).reshape(1, 1, 2, 1, 1)
    steady = torch.zeros(1, 2, 2, 1, 1)
    changing = torch.tensor([[0.0, 2.0], [0.0, 2.0]]).reshape(1, 2, 2, 1, 1)
    assert float(s1_change_loss(ndvi, steady)) == pytest.approx(0.25)
    assert float(s1_change_loss(ndvi, changing, scale=0.5)) == pytest.approx(0.25 * math.exp(-4))
    invalid = torch.zeros(1, 2, 2, 1, 1, dtype=torch.bool)
    assert float(s1_change_loss(ndvi, steady, invalid)) == 0.0


def test_uncertainty_weights_learn_the_inverse_loss_scale():
    """The optimum of exp(-s) L + s is s = log L: the weight becomes 1 / L."""
    weighting = UncertaintyWeighting(("a", "b"))
    opt = torch.optim.Adam(weighting.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        weighting({"a": torch.tensor(4.0), "b": torch.tensor(0.25)}).backward()
        opt.step()
    w = weighting.weights()
    assert w["a"] == pytest.approx(0.25, rel=0.05) and w["b"] == pytest.approx(4.0, rel=0.05)
    fixed = UncertaintyWeighting(("a",), init={"a": math.log(2)}, learnable=False)
    assert float(fixed({"a": torch.tensor(3.0)})) == pytest.approx(1.5)
    zero = UncertaintyWeighting(("r",), bounds=(-3.0, 6.0))  # a term at 0 cannot blow its weight up
    opt = torch.optim.SGD(zero.parameters(), lr=1.0)
    for _ in range(20):
        opt.zero_grad()
        zero({"r": torch.tensor(0.0)}).backward()
        opt.step()
    assert zero.weights()["r"] == pytest.approx(math.exp(3.0))


# ---------------------------------------------------------------------------- data wiring


def test_find_cubes_and_covering_windows(zarr_root, tmp_path):
    assert find_cubes(zarr_root) == [zarr_root / "a" / "cube.zarr"]
    assert find_cubes(zarr_root / "a" / "cube.zarr") == [zarr_root / "a" / "cube.zarr"]
    with pytest.raises(CubeModelError, match="fusecube convert"):
        find_cubes(tmp_path)
    w = covering_windows([(24, 32, 30)], size=16, time_window=12, stride=10, time_stride=8)
    covered = np.zeros((24, 32, 30), int)
    for t, r, c in zip(w.time, w.row, w.col, strict=True):
        covered[t:t + 12, r:r + 16, c:c + 16] += 1
    assert covered.min() >= 1 and w.row.max() == 16 and w.col.max() == 14 and w.time.max() == 12
    with pytest.raises(CubeModelError, match="smaller"):
        covering_windows([(8, 32, 32)], size=16, time_window=12, stride=8, time_stride=8)


def test_interpolate_time_exact():
    values = torch.tensor([0.0, 0.2, 0.0, 0.0, 0.8, 0.0]).reshape(1, 1, 6, 1, 1)
    valid = torch.tensor([False, True, False, False, True, False]).reshape(1, 1, 6, 1, 1)
    out = interpolate_time(values, valid).flatten()
    torch.testing.assert_close(out, torch.tensor([0.2, 0.2, 0.4, 0.6, 0.8, 0.8]))
    none = interpolate_time(values, torch.zeros_like(valid))
    assert float(none.abs().sum()) == 0.0


def test_untrained_task_starts_as_linear_gap_filling():
    task = CubeFusionTask(depth=2, width=4)
    ndvi = torch.rand(1, 1, 8, 8, 8)
    shown = torch.rand(1, 1, 8, 8, 8) > 0.5
    image, mask = torch.randn(1, 2, 8, 8, 8), torch.ones(1, 2, 8, 8, 8, dtype=torch.bool)
    pred = task(task.inputs(image, mask, ndvi, shown))
    torch.testing.assert_close(pred, interpolate_time(ndvi * shown, shown))


def test_all_zero_dates_are_not_observations():
    target = torch.full((1, 1, 3, 2, 2), 0.4)
    target[:, :, 1] = 0.0
    target[0, 0, 2, 0, 0] = 0.0  # one real zero among real values stays
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[0, 0, 0, 1, 1] = False
    usable = observed({"target": target, "target_mask": mask})
    assert not usable[:, :, 1].any()
    assert usable[0, 0, 2, 0, 0] and usable[0, 0, 0].sum() == 3


def test_heldout_dates_are_never_shown_nor_targets_in_training(zarr_root):
    dm = tiny_datamodule(zarr_root, augment=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    task = CubeFusionTask(depth=1, width=2, holdout_dates=[3, 4, 20], hide_rate=(0.0, 0.0), hide_spans=0)
    seen = {}

    def spy(pred, batch, hidden, shown):
        seen.update(hidden=hidden, shown=shown)
        return {"observation": pred.float().mean() * 0}

    task.losses = spy
    task.training_step(batch, 0)
    dates = batch["time"][:, None] + torch.arange(12)[None]
    held = torch.isin(dates, torch.tensor([3, 4, 20]))[:, None, :, None, None].expand_as(seen["shown"])
    assert held.any() and batch["target_mask"][held].any()  # the window does hold observations then
    assert not seen["shown"][held].any() and not seen["hidden"][held].any()
    assert seen["shown"][~held].sum() == observed(batch)[~held].sum()  # hide_rate 0: rest shown


# ---------------------------------------------------------------------------- training


def test_tiny_unet_trains_and_its_loss_drops(zarr_root):
    lightning.seed_everything(0, verbose=False)
    dm = tiny_datamodule(zarr_root)
    task = CubeFusionTask(depth=2, width=4, lr=5e-3, holdout_dates=[6, 18])
    before = quiet_trainer().validate(task, dm, verbose=False)[0]
    trainer = quiet_trainer(max_steps=40, limit_val_batches=0)
    trainer.fit(task, dm)
    after = quiet_trainer().validate(task, dm, verbose=False)[0]
    # before training the task is exactly linear gap-filling: the drop is what the U-Net learned
    assert after["val_rmse"] < 0.85 * before["val_rmse"]
    assert after["val_rmse_heldout_dates"] < before["val_rmse_heldout_dates"]
    assert trainer.global_step == 40


def test_bf16_mixed_precision_on_cpu(zarr_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = tiny_datamodule(zarr_root)
    task = CubeFusionTask(depth=2, width=4)
    trainer = quiet_trainer(max_steps=2, precision="bf16-mixed", limit_val_batches=1)
    trainer.fit(task, dm)
    assert trainer.precision == "bf16-mixed"
    assert math.isfinite(float(trainer.callback_metrics["train_loss"]))
    assert task.net.head.weight.dtype == torch.float32  # weights stay float32 under autocast
    assert not list(tmp_path.iterdir())  # without a logger nothing is written to the working folder


def test_predict_writes_a_fused_cube_with_training_statistics(zarr_root, tmp_path):
    dm = tiny_datamodule(zarr_root)
    task = CubeFusionTask(depth=2, width=4)
    quiet_trainer(max_steps=2, limit_val_batches=0).fit(task, dm)
    fresh = tiny_datamodule(zarr_root, predict_overlap=6)
    fresh.load_state_dict(dm.state_dict())
    assert fresh.params == dm.params
    writer = FusedCubeWriter(str(tmp_path / "fused"))
    quiet_trainer(callbacks=[writer]).predict(task, fresh, return_predictions=False)
    assert writer.written == [tmp_path / "fused" / "a" / "cube.zarr"]
    out = read_cube(writer.written[0]).load()
    ndvi = out[NDVI].values
    broken = np.nanmax(np.abs(ndvi), axis=(1, 2)) == 0  # the scene's all-zero composite
    kept = np.isfinite(ndvi) & ~broken[:, None, None]
    assert not kept.all() and broken.sum() == 1
    fused = out[NDVI_FUSED].values
    np.testing.assert_array_equal(fused[kept], ndvi[kept])
    assert (fused[broken] != 0).all()  # the broken date is filled by the model, not kept
    assert np.isfinite(fused).all() and fused.min() >= -1 and fused.max() <= 1


def test_errors_name_the_fix(zarr_root):
    with pytest.raises(CubeModelError, match="loss_log_vars"):
        CubeFusionTask(loss_log_vars={"colour": 1.0})
    with pytest.raises(CubeModelError, match="zarr_root"):
        CubeFusionDataModule(str(zarr_root / "nope"))


# ---------------------------------------------------------------------------- CLI


def _steps(metrics_csv: Path) -> list[int]:
    with metrics_csv.open() as fh:
        return sorted({int(row["step"]) for row in csv.DictReader(fh) if row.get("train_loss")})


def test_cli_fit_resume_and_predict(zarr_root, tmp_path):
    runs = tmp_path / "runs"
    common = ["--data.zarr_root", str(zarr_root), *TINY, "--trainer.logger.init_args.save_dir", str(runs)]
    cli = cli_main(["fit", *common, "--trainer.max_steps", "4", "--model.holdout_dates", "[5,17]"])
    first = runs / "cube_model" / "version_0"
    last = first / "checkpoints" / "last.ckpt"
    assert cli.trainer.global_step == 4 and last.exists()
    assert (first / "config.yaml").exists() and (first / "run-record.json").exists()
    record = checkpoint_record(last)
    assert record["data"]["digest"] == dataset_manifest([zarr_root / "a" / "cube.zarr"])["digest"]
    assert record["hparams"]["holdout_dates"] == [5, 17] and record["preprocessing"]["norm"] == "zscore"
    assert _steps(first / "metrics.csv") == [0, 1, 2, 3]

    cli = cli_main(["fit", *common, "--trainer.max_steps", "8", "--ckpt_path", str(last)])
    second = runs / "cube_model" / "version_1"
    assert cli.trainer.global_step == 8
    assert _steps(second / "metrics.csv") == [4, 5, 6, 7]  # continued, not restarted
    assert torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8

    fused = tmp_path / "fused"
    cli_main(["predict", "--data.zarr_root", str(zarr_root), *TINY, "--trainer.logger.init_args.save_dir",
              str(runs), "--ckpt_path", str(second / "checkpoints" / "last.ckpt"),
              "--writer.output_dir", str(fused)])
    out = read_cube(fused / "a" / "cube.zarr")
    assert out[NDVI_FUSED].attrs["training_data_digest"] == record["data"]["digest"]
    assert np.isfinite(out[NDVI_FUSED].values).all()


def test_fusecube_cube_model_routes_to_lightning_cli(capsys):
    from fusecube.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["cube-model", "fit", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "--data.zarr_root" in text and "--model.depth" in text and "--trainer.precision" in text
    assert "usage: fusecube cube-model [options] fit" in text  # its own name, not argparse's


@pytest.mark.slow
def test_ddp_two_cpu_processes(zarr_root, tmp_path):
    """`fusecube cube-model fit --trainer.strategy ddp --trainer.devices 2` on CPU (gloo)."""
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "fusecube", "cube-model", "fit", "--data.zarr_root", str(zarr_root), *TINY,
           "--trainer.logger.init_args.save_dir", str(runs), "--trainer.strategy", "ddp",
           "--trainer.devices", "2", "--trainer.max_steps", "4"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = torch.load(runs / "cube_model" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert "world_size=2" in done.stderr or "distributed_backend=gloo" in done.stderr
