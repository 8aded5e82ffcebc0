"""Bad inputs, area "stores": damaged zarr stores and fusion models that do not fit the input.

A store fusecube wrote holds every chunk (empty ones included) and says so in its attributes,
so a missing or truncated chunk file is an error naming the variable and the chunk instead of
a silent block of NaN. A fusion model from another feature set, with weights that do not fit
its features, or trained on other periods is refused with the difference spelled out (on
``fuse predict`` and ``run``) instead of a torch traceback. Catalogue cases run through the CLI
(:func:`catalogue.run_case`); the cases beside them test the library directly.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from catalogue import Case, Env, check, run_case

from fusecube.cube import NDVI, TIME, VH, Y, read_cube, validate_cube, write_cube
from fusecube.errors import FusionModelError, InputFileError, IntegrityError
from fusecube.storage.chunks import COMPLETE_ATTR, check_chunks, find_bad_chunks, raise_if_bad_chunk

HAS_TORCH = importlib.util.find_spec("torch") is not None
_MODELS: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def _model_dir(tmp_path_factory):
    """Where the module's trained models live (trained once, on first use)."""
    _MODELS.clear()
    _MODELS["dir"] = tmp_path_factory.mktemp("models")
    yield
    _MODELS.clear()


# ----------------------------------------------------------------------------- builders
def _copy(env: Env, name: str) -> Path:
    store = env.tmp / name
    shutil.copytree(env.scene["cube"], store)
    return store


def _chunk(store: Path, variable: str) -> Path:
    """The first chunk file of ``variable`` (the 48 x 48 scene has one per variable)."""
    return sorted(p for p in (store / variable / "c").rglob("*") if p.is_file())[0]


def _missing(env: Env, variable: str = NDVI, name: str = "lost_chunk.zarr") -> str:
    store = _copy(env, name)
    _chunk(store, variable).unlink()
    return str(store)


def _emptied(env: Env) -> str:
    store = _copy(env, "empty_chunk.zarr")
    _chunk(store, VH).write_bytes(b"")
    return str(store)


def _halved(env: Env, variable: str = VH) -> str:
    store = _copy(env, "half_chunk.zarr")
    chunk = _chunk(store, variable)
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    return str(store)


def _config(env: Env, text: str) -> list[str]:
    path = env.tmp / "cfg.yaml"
    path.write_text(text)
    return ["run", str(path)]


def _run_on(env: Env, store: str, extra: str = "") -> list[str]:
    return _config(env, f"source: {{kind: cube, path: '{store}'}}\nreport: false\n{extra}")


def _trained(env: Env, arch: str = "conv") -> Path:
    """A tiny model trained on the catalogue scene (12-day periods, 62 steps), cached."""
    if arch not in _MODELS:
        from fusecube.fusion.neural.model import NeuralFusion
        from fusecube.fusion.neural.train import TrainConfig
        from fusecube.splits import SpatialSplit

        tiny = TrainConfig(width=4, epochs=1, min_steps=5, batch_size=128, max_train_pixels=400,
                           max_val_pixels=200, split=SpatialSplit(block=16, val_fraction=0.3, buffer=2),
                           threads=1, device="cpu")
        model = NeuralFusion(replace(tiny, arch=arch)).fit(env.cube)
        folder = _MODELS.get("dir") or env.tmp  # the module's folder, or this case's own
        _MODELS[arch] = model.save(folder / f"{arch}.pt")
    return _MODELS[arch]


def _altered(env: Env, change, name: str = "other.pt") -> str:
    """The conv model with its saved state changed by ``change(state)``."""
    import torch

    state = torch.load(_trained(env), map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, env.tmp / name)
    return str(env.tmp / name)


def _without_gap_days(state: dict) -> None:
    """What a release whose optical features lack ``gap_days`` would have saved."""
    state["optical_features"] = [n for n in state["optical_features"] if n != "gap_days"]
    _narrow_input(state)


def _unknown_radar(state: dict) -> None:
    state["radar_features"] = ["vv_db_9x9", *state["radar_features"][1:]]


def _narrow_input(state: dict) -> None:
    """One input channel fewer in every network of the file (an ensemble has several)."""
    weights = state["state_dict"]
    inputs = [k for k in weights if k == "inp.weight" or k.endswith(".inp.weight")]
    assert inputs, sorted(weights)
    for key in inputs:
        weights[key] = weights[key][:, :-1]


def _fuse_predict(env: Env, cube: str, model: str) -> list[str]:
    return ["fuse", "predict", cube, "--model", model, "--out", str(env.tmp / "fused.zarr"),
            "--device", "cpu"]


def _every_second_period(env: Env) -> str:
    return env.write(env.cube.isel({TIME: slice(None, None, 2)}), "24day.zarr")


def _first_periods(env: Env) -> str:
    return env.write(env.cube.isel({TIME: slice(0, 40)}), "40steps.zarr")


STORE_CASES = [
    Case("stores_missing_chunk_check", lambda e: check(_missing(e), "--mask", "none"),
         InputFileError, "variable 'ndvi' chunk (0, 0, 0)"),
    Case("stores_missing_chunk_run", lambda e: _run_on(e, _missing(e)), InputFileError,
         "variable 'ndvi' chunk (0, 0, 0)"),
    Case("stores_missing_vh_chunk_fuse_predict",
         lambda e: _fuse_predict(e, _missing(e, VH), str(e.tmp / "never_read.pt")),
         InputFileError, "variable 'vh' chunk (0, 0, 0)"),
    Case("stores_missing_time_coordinate_chunk", lambda e: check(_missing(e, TIME)),
         InputFileError, "variable 'time' chunk (0,)"),
    Case("stores_empty_chunk_file", lambda e: check(_emptied(e), "--mask", "none"),
         InputFileError, "variable 'vh' chunk (0, 0, 0)"),
    Case("stores_truncated_chunk_run", lambda e: _run_on(e, _halved(e)), InputFileError,
         "variable 'vh' chunk (0, 0, 0)"),
    Case("stores_truncated_chunk_check_names_it",
         lambda e: check(_halved(e, NDVI), "--mask", "none"), InputFileError,
         "variable 'ndvi' chunk (0, 0, 0)"),
]

MODEL_CASES = [
    Case("stores_model_other_optical_features",
         lambda e: _fuse_predict(e, str(e.scene["cube"]), _altered(e, _without_gap_days)),
         FusionModelError, "the model lacks ['gap_days']"),
    Case("stores_model_unknown_radar_feature",
         lambda e: _fuse_predict(e, str(e.scene["cube"]), _altered(e, _unknown_radar)),
         FusionModelError, "radar features ['vv_db_9x9'] are unknown"),
    Case("stores_model_weights_other_channels",
         lambda e: _fuse_predict(e, str(e.scene["cube"]), _altered(e, _narrow_input)),
         FusionModelError, "inp.weight"),
    Case("stores_model_other_periods",
         lambda e: _fuse_predict(e, _every_second_period(e), str(_trained(e))),
         FusionModelError, "this cube has 24-day periods"),
    Case("stores_mlp_model_other_step_count",
         lambda e: _fuse_predict(e, _first_periods(e), str(_trained(e, "mlp"))),
         FusionModelError, "tied to 62 time steps; the cube has 40"),
    Case("stores_run_model_other_feature_set",
         lambda e: _run_on(e, str(e.scene["cube"]), "gapfill: fusion\nfusion_model: "
                           f"'{_altered(e, _without_gap_days)}'\n"),
         FusionModelError, "the model lacks ['gap_days']"),
    Case("stores_run_model_other_periods",
         lambda e: _run_on(e, _every_second_period(e),
                           f"gapfill: fusion\nfusion_model: '{_trained(e)}'\n"),
         FusionModelError, "this cube has 24-day periods"),
]

CASES = STORE_CASES + (MODEL_CASES if HAS_TORCH else [])


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, catalogue_base, tmp_path, capsys, monkeypatch):
    run_case(case, catalogue_base, tmp_path, capsys, monkeypatch)


# ----------------------------------------------------------------------------- stores
def _multi_chunk(tmp_path: Path) -> tuple[xr.Dataset, Path]:
    """A 3 x 3-chunk cube with one all-NaN chunk (which zarr would leave out by default)."""
    rng = np.random.default_rng(0)
    from odc.geo.geobox import GeoBox

    from fusecube.cube import with_geobox

    gbox = GeoBox.from_bbox((0, 0, 480, 480), "EPSG:32749", resolution=10)
    times = np.arange("2024-01-01", "2024-03-01", 12, dtype="datetime64[D]").astype("datetime64[ns]")
    data = rng.uniform(0.01, 0.3, (times.size, 48, 48)).astype(np.float32)
    ndvi = data.copy()
    ndvi[:, :16, :16] = np.nan
    ds = xr.Dataset({"vv": ((TIME, "y", "x"), data), "vh": ((TIME, "y", "x"), data / 4),
                     NDVI: ((TIME, "y", "x"), ndvi)}, coords={TIME: times})
    ds = with_geobox(ds, gbox)
    return ds, write_cube(ds, tmp_path / "cube.zarr", chunks={TIME: -1, "y": 16, "x": 16})


def test_every_chunk_is_written_and_the_store_says_so(tmp_path):
    _, store = _multi_chunk(tmp_path)
    assert (store / NDVI / "c" / "0" / "0" / "0").is_file()  # the all-NaN chunk is on disk
    assert find_bad_chunks(store) == ([], 0)
    ds = read_cube(store)
    assert COMPLETE_ATTR not in ds.attrs  # a promise about the store, not carried to copies
    assert np.isnan(ds[NDVI].values[:, :16, :16]).all()


def test_missing_chunk_is_named_with_its_count(tmp_path):
    _, store = _multi_chunk(tmp_path)
    for key in ("1/2", "2/0"):
        (store / NDVI / "c" / "0" / Path(key)).unlink()
    with pytest.raises(InputFileError) as info:
        read_cube(store)
    message = str(info.value)
    assert "variable 'ndvi' chunk (0, 1, 2)" in message and "chunk (0, 2, 0)" in message
    assert "is missing" in message and "\n" not in message
    # only the chunks of a window: the finished blocks of a partial store, for instance
    check_chunks(store, window={Y: slice(0, 16)})
    with pytest.raises(InputFileError, match=r"\(0, 1, 2\)"):
        check_chunks(store, window={Y: slice(16, 32)})


def test_validate_cube_finds_a_chunk_lost_after_opening(tmp_path):
    _, store = _multi_chunk(tmp_path)
    ds = read_cube(store, chunks={})
    (store / VH / "c" / "0" / "2" / "2").unlink()
    with pytest.raises(InputFileError, match="variable 'vh' chunk \\(0, 2, 2\\)"):
        validate_cube(ds)


def test_stores_of_other_tools_may_leave_empty_chunks_out(tmp_path):
    ds, _ = _multi_chunk(tmp_path)
    ds.to_zarr(tmp_path / "plain.zarr", zarr_format=3, consolidated=False,
               encoding={NDVI: {"chunks": (ds.sizes[TIME], 16, 16)}})
    assert not (tmp_path / "plain.zarr" / NDVI / "c" / "0" / "0" / "0").exists()
    assert np.isnan(read_cube(tmp_path / "plain.zarr")[NDVI].values[:, :16, :16]).all()


def test_a_chunk_cut_in_its_middle_is_named_when_a_block_reads_it(tmp_path):
    _, store = _multi_chunk(tmp_path)
    chunk = store / NDVI / "c" / "0" / "1" / "1"
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    read_cube(store)  # opening is cheap and cannot see it
    error = RuntimeError("decode failed")
    raise_if_bad_chunk(store, error, window={Y: slice(0, 16)})  # other blocks: not this chunk
    with pytest.raises(InputFileError, match=r"variable 'ndvi' chunk \(0, 1, 1\).*cannot be decoded") as info:
        raise_if_bad_chunk(store, error, window={Y: slice(20, 30), "x": slice(16, 20)})
    assert info.value.__cause__ is error


def test_verify_cube_stays_the_deep_check(small_scene, tmp_path, capsys):
    """``verify-cube`` (no --out, so not a catalogue case) names the lost file by checksum."""
    from fusecube.cli import main
    from fusecube.sources.convert import convert

    out = tmp_path / "converted.zarr"
    convert(small_scene["cube"], out)
    _chunk(out, NDVI).unlink()
    with pytest.raises(SystemExit) as info:
        main(["verify-cube", str(out)])
    assert info.value.code not in (0, None)
    assert type(info.value.__context__) is IntegrityError
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "ndvi/c/0/0/0" in last


def test_run_refuses_to_finish_with_a_chunk_lost_from_its_partial_store(tmp_path):
    from odc.geo.geobox import GeoBox

    from fusecube.cube import X, with_geobox
    from fusecube.runner.store import verify_store, write_region, write_template

    gbox = GeoBox.from_bbox((0, 0, 320, 320), "EPSG:32749", resolution=10)
    block = with_geobox(xr.Dataset({"season_count": ((Y, X), np.full((16, 16), np.nan, np.float32))}),
                        gbox[:16, :16])
    store = tmp_path / ".result.zarr.partial-x"
    write_template(block, gbox, 16, store)
    for ys in (slice(0, 16), slice(16, 32)):
        for xs in (slice(0, 16), slice(16, 32)):
            write_region(block, store, ys, xs)
    verify_store(store)  # every block written, all-NaN chunks included
    (store / "season_count" / "c" / "1" / "0").unlink()
    with pytest.raises(InputFileError, match=r"'season_count' chunk \(1, 0\).*without --resume"):
        verify_store(store)


# ----------------------------------------------------------------------------- cube model
def test_cube_model_checkpoint_of_another_network_is_refused_before_loading(tmp_path):
    pytest.importorskip("lightning")
    from fusecube.errors import CubeModelError
    from fusecube.ml.training.task import CubeFusionTask

    trained = CubeFusionTask(depth=2, width=4)
    checkpoint = {"hyper_parameters": dict(trained.hparams), "state_dict": trained.state_dict()}
    CubeFusionTask(depth=2, width=4).on_load_checkpoint(checkpoint)  # same network: loads
    with pytest.raises(CubeModelError, match=r"--model.width 4 \(this model: 8\)") as info:
        CubeFusionTask(depth=2, width=8).on_load_checkpoint(checkpoint)
    assert "size mismatch" not in str(info.value) and "checkpoint (" in str(info.value)
