"""Per-pixel costs of a run on this machine: measured by a short calibration, stored, reused.

``fusecube plan --calibrate`` synthesises two small scenes and runs each through the stages
(ridge by default; ``fusion`` too when asked), measuring every stage's seconds and the bytes the
process read and wrote. Each quantity is fitted as ``intercept + slope * pixel_periods`` from the
two sizes, so fixed costs (imports, compiling, the ledger) do not inflate the per-pixel slope.
The costs are stored in the user's cache (``$FUSECUBE_CALIBRATION``, else
``$XDG_CACHE_HOME/fusecube/calibration.json`` or ``~/.cache/fusecube/calibration.json``) and
read by :mod:`fusecube.runner.plan`; without a calibration the built-in defaults below are used
and the plan says "uncalibrated".
"""

from __future__ import annotations

import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fusecube.errors import ConfigError

log = logging.getLogger(__name__)

#: Stage groups of a plan, in order: the run's timed stages each one sums.
STAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "source": ("synth",),
    "prepare": ("mask", "screen"),
    "fusion_train": ("fusion_train",),
    "validate": ("validate", "uncertainty"),
    "blocks": ("read", "gapfill", "gates", "smooth", "provenance", "phenology", "season_extras",
               "write"),
    "products": ("evaluate", "products", "report"),
}
#: Calibration scene edges (pixels; 62 periods): a warm-up (imports, compiled kernels loaded,
#: not measured), then two sizes that give slope and intercept; products are measured on the
#: smaller one only (their cost is mostly fixed: figures, report) with the default slope. The
#: larger scene is past the validation and training samples' caps, so it sees what a real
#: scene costs per pixel (192 px scenes overstated the screen 3x at Demak size).
CALIBRATION_EDGES = (24, 96, 320)

Line = tuple[float, float]
"""``(intercept, slope per pixel-period)``."""

#: Built-in costs (measured on the 2-core development machine, ridge, 62 periods), used until
#: ``fusecube plan --calibrate`` stores this machine's own.
_DEFAULT_RIDGE: dict[str, Line] = {
    "source": (1.2, 1.5e-6), "prepare": (0.3, 8.0e-7), "fusion_train": (0.0, 0.0),
    "validate": (0.5, 1.3e-6), "blocks": (0.5, 1.1e-6), "products": (12.0, 1.0e-6),
    "other": (3.0, 5.0e-7),
}
_DEFAULT_FUSION: dict[str, Line] = {**_DEFAULT_RIDGE, "fusion_train": (8.0, 1.0e-5),
                                    "blocks": (0.5, 3.0e-6)}


@dataclass
class Costs:
    """Fitted costs of one machine.

    Attributes:
        seconds: Per method (``ridge``, ``fusion``...), per stage group: ``(s, s/pixel-period)``.
        read_bytes: Bytes the run reads (input chunks, several passes): ``(B, B/pixel-period)``.
        write_bytes: Bytes the run writes (result, products; not the input cube).
        source_write_bytes: Bytes an imported input cube takes (written once by the source).
        products_bytes: Bytes the products and report read and write: ``(read, write)``.
        calibrated: False for the built-in defaults.
        machine: Where they were measured (host, CPU count).
        created: When (ISO time).
    """

    seconds: dict[str, dict[str, Line]] = field(default_factory=lambda: {
        "ridge": dict(_DEFAULT_RIDGE), "fusion": dict(_DEFAULT_FUSION)})
    read_bytes: Line = (0.0, 100.0)
    write_bytes: Line = (0.0, 9.5)
    source_write_bytes: Line = (3.0e4, 9.1)
    products_bytes: tuple[float, float] = (1.7e8, 3.0e6)
    calibrated: bool = False
    machine: str = "built-in defaults"
    created: str = ""

    def stage_line(self, method: str, stage: str) -> Line:
        """The cost line of ``stage`` for gap-fill ``method`` (ridge's for an uncalibrated one)."""
        table = self.seconds.get(method) or self.seconds.get("ridge") or _DEFAULT_RIDGE
        return tuple(table.get(stage, (0.0, 0.0)))  # type: ignore[return-value]

    def method_calibrated(self, method: str) -> bool:
        """Whether ``method``'s seconds were measured here (not defaults)."""
        return self.calibrated and method in self.seconds

    def to_json(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def calibration_path() -> Path:
    """Where the calibration is stored (``$FUSECUBE_CALIBRATION`` overrides)."""
    env = os.environ.get("FUSECUBE_CALIBRATION")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "fusecube" / "calibration.json"


def load_costs(path: Path | None = None) -> Costs:
    """The stored calibration, or the built-in defaults (``calibrated=False``) when none."""
    path = path or calibration_path()
    if not path.exists():
        return Costs()
    try:
        data = json.loads(path.read_text())
        defaults = Costs()
        seconds = {**defaults.seconds,
                   **{m: {s: tuple(v) for s, v in t.items()} for m, t in data["seconds"].items()}}
        return Costs(seconds=seconds, read_bytes=tuple(data["read_bytes"]),
                     write_bytes=tuple(data["write_bytes"]),
                     source_write_bytes=tuple(data["source_write_bytes"]),
                     products_bytes=tuple(data.get("products_bytes", defaults.products_bytes)),
                     calibrated=bool(data.get("calibrated", True)),
                     machine=data.get("machine", ""), created=data.get("created", ""))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"The calibration {path} is unreadable ({exc}); run `fusecube plan "
                          "--calibrate` again or delete the file.") from exc


def train_pixels() -> int:
    """Most pixels the fusion training samples (training and validation caps together)."""
    from fusecube.fusion.neural.train import TrainConfig

    config = TrainConfig()
    return config.max_train_pixels + config.max_val_pixels


def stage_size(stage: str, height: int, width: int, periods: int) -> int:
    """The pixel-periods a stage group's cost grows with, on a ``height`` x ``width`` grid.

    Validation reads its windows only and fusion training a capped pixel sample, so their
    costs stop growing with the scene (training grows with the networks it trains: an
    ensemble on small scenes, :func:`~fusecube.fusion.neural.train.ensemble_members`); every
    other stage reads it all. The calibration fits its lines and :mod:`fusecube.runner.plan`
    applies them on this same size.
    """
    if stage == "validate":
        from fusecube.evaluate.selection import validation_pixels  # pulls numba: not at import

        return validation_pixels(height, width) * periods
    if stage == "fusion_train":
        from fusecube.fusion.neural.train import TrainConfig, ensemble_members

        sampled = min(height * width, train_pixels())
        return sampled * periods * ensemble_members(TrainConfig(), sampled)
    return height * width * periods


def tree_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path`` (a file's own size for a file; 0 when missing)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _fit(points: list[tuple[float, float]]) -> Line:
    """``(intercept, slope)`` through two ``(pixel_periods, value)`` points; both >= 0."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    slope = max(0.0, (y1 - y0) / (x1 - x0)) if x1 != x0 else 0.0
    if slope == 0.0 and x1:
        slope = max(y1, 0.0) / x1 / 2  # noise made the bigger scene cheaper: half per pixel
    return max(0.0, y1 - slope * x1), slope


def _bytes_line(points: list[tuple[int, dict[str, float]]], key: str) -> tuple[Line, float]:
    """Bytes read or written: ``(the stages' line, the products' bytes)``.

    The stages' line goes through the larger run, which writes no products; the products'
    bytes are the smaller run's excess over it.
    """
    (x_small, small), (x_large, large) = points
    slope = large[key] / x_large
    return (0.0, slope), max(0.0, small[key] - slope * x_small)


def _measure(method: str, edge: int, folder: Path, seed: int, *,
             report: bool = True) -> dict[str, float]:
    """One small scene through the stages: seconds per stage group and bytes, measured."""
    from fusecube.config import CubeSource, RunConfig
    from fusecube.runner.budget import io_bytes
    from fusecube.runner.execution import run
    from fusecube.sources.synthetic.scene import SceneConfig
    from fusecube.sources.synthetic.writer import synthesize

    scene = folder / f"scene-{method}-{edge}"
    io0, t0 = io_bytes(), time.perf_counter()
    paths = synthesize(SceneConfig(width=edge, height=edge, seed=seed), scene)
    synth_s, synth_io = time.perf_counter() - t0, io_bytes() - io0
    config = RunConfig(source=CubeSource(path=paths["cube"]), out=folder / f"out-{method}-{edge}",
                       gapfill=method, block_size=max(16, edge // 2), memory_limit="4GB",
                       ledger=str(folder / "ledger.sqlite"), result_gates=False, report=report)
    io0 = io_bytes()
    try:
        result = run(config)
    except Exception as exc:  # products failing must not lose the stage costs
        log.warning("calibration run with products failed (%s); products stay uncalibrated", exc)
        config = config.model_copy(update={"out": config.out.with_name(config.out.name + "-np"),
                                           "report": False})
        io0 = io_bytes()
        result = run(config)
    seconds = dict(result.seconds)
    moved = io_bytes() - io0
    written = tree_bytes(config.out)
    measured = {group: sum(seconds.get(s, 0.0) for s in names)
                for group, names in STAGE_GROUPS.items() if group != "source"}
    measured["source"] = synth_s
    measured["other"] = max(0.0, seconds.get("total", 0.0) - sum(
        v for k, v in measured.items() if k != "source"))
    measured["read_bytes"] = max(0.0, moved - written)
    measured["write_bytes"] = float(written)
    measured["source_write_bytes"] = float(tree_bytes(paths["cube"]))
    measured["synth_io"] = float(synth_io)
    return measured


def calibrate(methods: tuple[str, ...] = ("ridge",), *, edges: tuple[int, ...] = CALIBRATION_EDGES,
              periods: int = 62, seed: int = 7, save: bool = True,
              progress=None) -> Costs:
    """Measure this machine's costs on small synthetic scenes and store them.

    Args:
        methods: Gap-fill methods to measure (``ridge``; ``fusion`` needs torch and ~30 s more).
        edges: Scene edges in pixels: a warm-up, a small scene (with products) and a larger
            one (without).
        periods: Periods of the scenes (the Demak cube has 62).
        seed: Scene seed.
        save: Write the result to :func:`calibration_path`.
        progress: Optional ``(stage, done, total)`` callback.

    Returns:
        The fitted costs.
    """
    if periods != 62:
        raise ConfigError("Calibration uses 62-period scenes; costs are per pixel-period.")
    if len(edges) != 3:
        raise ConfigError("Calibration needs three scene edges: warm-up, small, large.")
    machine = f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()})"
    stored = load_costs() if save else Costs()
    # the other methods' costs measured here before are kept (calibrating fusion alone must
    # not put ridge back on the defaults); another machine's are not
    costs = stored if stored.calibrated and stored.machine == machine else Costs()
    costs.seconds = {m: dict(t) for m, t in costs.seconds.items()}
    total = len(methods) * len(edges)
    done = 0
    with tempfile.TemporaryDirectory(prefix="fusecube-calibrate-") as tmp:
        for method in methods:
            points: list[tuple[int, dict[str, float]]] = []
            for i, edge in enumerate(edges):
                measured = _measure(method, edge, Path(tmp), seed, report=i == 1)
                if i:  # the first run only warms up (imports, kernels)
                    points.append((edge * edge * periods, measured))
                done += 1
                if progress is not None:
                    progress("calibrate", done, total)
            keys = [k for k in (*STAGE_GROUPS, "other") if k != "products"
                    and (k != "fusion_train" or method == "fusion")]
            table = {k: _fit([(stage_size(k, e, e, periods), m[k])
                              for e, (_, m) in zip(edges[1:], points, strict=True)])
                     for k in keys}
            slope = Costs().stage_line(method, "products")[1]
            (x, small), _ = points
            table["products"] = (max(0.0, small["products"] - slope * x), slope)
            costs.seconds[method] = table
            if method == methods[0]:
                costs.source_write_bytes = _fit([(x, m["source_write_bytes"]) for x, m in points])
                costs.read_bytes, products_read = _bytes_line(points, "read_bytes")
                costs.write_bytes, products_write = _bytes_line(points, "write_bytes")
                costs.products_bytes = (products_read, products_write)
    costs.calibrated = True
    costs.machine = machine
    costs.created = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if save:
        from fusecube.storage.atomic import write_text_atomic

        path = calibration_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(costs.to_json(), indent=1))
    return costs
