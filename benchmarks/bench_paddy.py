"""Paddy detection on the synthetic Demak scene: accuracy vs truth and seconds.

Rule-based detector: scored on the whole scene (it sees no labels). Supervised: trained from the
scene's irrigation-block polygons (``blocks.gpkg``) in the western half only, scored on the
eastern half it never saw (and on its own held-out tiles). Writes
``benchmarks/results/paddy.json`` and prints a table.

    .venv/bin/python benchmarks/bench_paddy.py [--size 671x893] [--seed 0] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from fusecube.cube import read_cube
from fusecube.paddy import (
    PaddyClassifier,
    PaddyConfig,
    binary_scores,
    detect_paddy,
    labels_from_vector,
)
from fusecube.paddy_features import paddy_features
from fusecube.sources.synthetic import CLASS_NAMES, PADDY, SceneConfig, synthesize

RESULTS = Path(__file__).parent / "results" / "paddy.json"


def scores(mask: np.ndarray, land_class: np.ndarray, region: np.ndarray) -> dict:
    """Binary scores vs truth in ``region`` plus the false-positive rate of each other class."""
    out = binary_scores(mask[region], land_class[region] == PADDY)
    out["false_positive_rate"] = {
        CLASS_NAMES[k]: float(mask[region & (land_class == k)].mean())
        for k in range(len(CLASS_NAMES)) if k != PADDY and (region & (land_class == k)).any()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="671x893")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("/tmp/fusecube-bench-paddy"))
    parser.add_argument("--threads", type=int, default=1,
                        help="classifier threads (1 on a shared machine)")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    scene = args.data / f"{width}x{height}-seed{args.seed}"
    if not (scene / "truth.zarr").exists():
        synthesize(SceneConfig(width=width, height=height, seed=args.seed), scene)
    cube = read_cube(scene / "cube.zarr").load()
    truth = read_cube(scene / "truth.zarr")
    land_class = truth["land_class"].values
    geobox = cube.odc.geobox
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    features = paddy_features(cube)
    seconds["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rules = detect_paddy(cube, features=features, config=PaddyConfig(method="rules"))
    seconds["rules_detect"] = time.perf_counter() - t0

    left, bottom, right, top = geobox.extent.boundingbox
    mid = left + (width // 2) * geobox.resolution.x
    t0 = time.perf_counter()
    labels = labels_from_vector(scene / "blocks.gpkg", geobox, region=(left, bottom, mid, top))
    seconds["labels"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clf = PaddyClassifier(n_threads=args.threads, seed=args.seed).fit(features, labels)
    seconds["supervised_fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sup = detect_paddy(cube, features=features, classifier=clf,
                       config=PaddyConfig(method="supervised"))
    seconds["supervised_predict"] = time.perf_counter() - t0

    everywhere = np.ones(land_class.shape, bool)
    east = np.zeros(land_class.shape, bool)
    east[:, width // 2:] = True
    rule_mask = rules["paddy_mask"].values > 0
    sup_mask = sup["paddy_mask"].values > 0
    raw_rule = np.nan_to_num(rules["paddy_probability"].values) >= 0.5
    pixel_km2 = abs(geobox.resolution.x * geobox.resolution.y) / 1e6
    result = {
        "scene": {"width": width, "height": height, "seed": args.seed,
                  "paddy_km2_true": float((land_class == PADDY).sum() * pixel_km2)},
        "rules": {"whole_scene": scores(rule_mask, land_class, everywhere),
                  "east_half": scores(rule_mask, land_class, east),
                  "whole_scene_before_mmu": scores(raw_rule, land_class, everywhere),
                  "paddy_km2": rules.attrs["paddy_km2"]},
        "supervised": {"east_half_unseen": scores(sup_mask, land_class, east),
                       "held_out_tiles_west": clf.validation_,
                       "n_train": clf.n_train_,
                       "paddy_km2": sup.attrs["paddy_km2"]},
        "seconds": seconds,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "classifier_threads": args.threads},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=float))

    rows = [("rules, whole scene", result["rules"]["whole_scene"]),
            ("rules, east half", result["rules"]["east_half"]),
            ("supervised, east half (unseen)", result["supervised"]["east_half_unseen"])]
    print(f"paddy detection, synthetic {width}x{height} seed {args.seed}")
    print(f"{'detector':32s} {'acc':>6s} {'F1':>6s} {'IoU':>6s}  FPR " + " ".join(
        f"{n[:8]:>8s}" for k, n in enumerate(CLASS_NAMES) if k != PADDY))
    for name, s in rows:
        fpr = " ".join(f"{s['false_positive_rate'].get(n, float('nan')):8.4f}"
                       for k, n in enumerate(CLASS_NAMES) if k != PADDY)
        print(f"{name:32s} {s['accuracy']:6.4f} {s['f1']:6.4f} {s['iou']:6.4f}      {fpr}")
    v = clf.validation_
    print(f"supervised held-out tiles (west): F1 {v['f1']:.4f} IoU {v['iou']:.4f} n={v['n']}")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    print(f"paddy km²: truth {result['scene']['paddy_km2_true']:.2f}, rules "
          f"{result['rules']['paddy_km2']:.2f}, supervised {result['supervised']['paddy_km2']:.2f}")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
