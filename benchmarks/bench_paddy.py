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
import os
import platform
import time
from pathlib import Path

import numpy as np

from fusecube.cube import read_cube
from fusecube.masks.paddy import PaddyConfig, detect_paddy
from fusecube.masks.paddy_classifier import PaddyClassifier
from fusecube.masks.paddy_features import FEATURE_NAMES, paddy_features
from fusecube.masks.paddy_labels import binary_scores, labels_from_vector
from fusecube.masks.paddy_rules import DEFAULT_RULES
from fusecube.sources.synthetic.scene import CLASS_NAMES, PADDY, SceneConfig
from fusecube.sources.synthetic.writer import synthesize

RESULTS = Path(__file__).parent / "results" / "paddy.json"


def scores(mask: np.ndarray, land_class: np.ndarray, region: np.ndarray) -> dict:
    """Binary scores vs truth in ``region`` plus the false-positive rate of each other class."""
    out = binary_scores(mask[region], land_class[region] == PADDY)
    out["false_positive_rate"] = {
        CLASS_NAMES[k]: float(mask[region & (land_class == k)].mean())
        for k in range(len(CLASS_NAMES)) if k != PADDY and (region & (land_class == k)).any()}
    return out


def scene_data(data: Path, width: int, height: int, seed: int, enl: float | None = None):
    """Cube (loaded), land classes and folder of a synthetic scene, generated once."""
    tag = f"{width}x{height}-seed{seed}" + (f"-enl{enl:g}" if enl is not None else "")
    folder = data / tag
    if not (folder / "truth.zarr").exists():
        extra = {"enl": enl} if enl is not None else {}
        synthesize(SceneConfig(width=width, height=height, seed=seed, **extra), folder)
    cube = read_cube(folder / "cube.zarr").load()
    land_class = read_cube(folder / "truth.zarr")["land_class"].values
    return cube, land_class, folder


def west_labels(folder: Path, cube):
    """Labels from the scene's block polygons, known in the western half only."""
    geobox = cube.odc.geobox
    left, bottom, right, top = geobox.extent.boundingbox
    mid = left + (cube.sizes["x"] // 2) * geobox.resolution.x
    return labels_from_vector(folder / "blocks.gpkg", geobox, region=(left, bottom, mid, top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="671x893")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("/tmp/fusecube-bench-paddy"))
    parser.add_argument("--threads", type=int, default=1,
                        help="classifier threads (1 on a shared machine)")
    parser.add_argument("--no-stress", dest="stress", action="store_false",
                        help="skip the single-look speckle scene")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    cube, land_class, scene = scene_data(args.data, width, height, args.seed)
    geobox = cube.odc.geobox
    seconds: dict[str, float] = {}

    t0, c0 = time.perf_counter(), time.process_time()
    features = paddy_features(cube)
    seconds["features"] = time.perf_counter() - t0
    cpu_seconds = {"features": time.process_time() - c0}

    t0, c0 = time.perf_counter(), time.process_time()
    rules = detect_paddy(cube, features=features, config=PaddyConfig(method="rules"))
    seconds["rules_detect"] = time.perf_counter() - t0
    cpu_seconds["rules_detect"] = time.process_time() - c0

    t0 = time.perf_counter()
    labels = west_labels(scene, cube)
    seconds["labels"] = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    clf = PaddyClassifier(n_threads=args.threads, seed=args.seed).fit(features, labels)
    seconds["supervised_fit"] = time.perf_counter() - t0
    cpu_seconds["supervised_fit"] = time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    sup = detect_paddy(cube, features=features, classifier=clf,
                       config=PaddyConfig(method="supervised"))
    seconds["supervised_predict"] = time.perf_counter() - t0
    cpu_seconds["supervised_predict"] = time.process_time() - c0
    seconds["rules_total"] = seconds["features"] + seconds["rules_detect"]
    # the same classifier given the calendar features too (timing, season counts)
    clf_all = PaddyClassifier(n_threads=args.threads, seed=args.seed,
                              features=FEATURE_NAMES).fit(features, labels)
    sup_all = detect_paddy(cube, features=features, classifier=clf_all,
                           config=PaddyConfig(method="supervised"))
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
        "rules_ablation_whole_scene": {
            f"without {rule.feature}": scores(detect_paddy(
                cube, features=features,
                config=PaddyConfig(rules=tuple(r for r in DEFAULT_RULES if r is not rule))
            )["paddy_mask"].values > 0, land_class, everywhere)
            for rule in DEFAULT_RULES},
        "supervised_with_calendar_features": {
            "east_half_unseen": scores(sup_all["paddy_mask"].values > 0, land_class, east),
            "held_out_tiles_west": clf_all.validation_},
        "supervised": {"east_half_unseen": scores(sup_mask, land_class, east),
                       "held_out_tiles_west": clf.validation_,
                       "n_train": clf.n_train_,
                       "paddy_km2": sup.attrs["paddy_km2"]},
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_1_5_15min_at_end": list(os.getloadavg()),
                    "classifier_threads": args.threads,
                    "note": "seconds depend on what else runs on the machine: see the load"},
    }
    if args.stress:
        # single-look speckle (ENL 1): the hardest radar the water-cloud scene can give
        s_cube, s_class, s_folder = scene_data(args.data, width // 2, height // 2, args.seed,
                                               enl=1.0)
        s_feat = paddy_features(s_cube)
        s_rules = detect_paddy(s_cube, features=s_feat)["paddy_mask"].values > 0
        s_clf = PaddyClassifier(n_threads=args.threads, seed=args.seed).fit(
            s_feat, west_labels(s_folder, s_cube))
        s_sup = detect_paddy(s_cube, features=s_feat, classifier=s_clf,
                             config=PaddyConfig(method="supervised"))["paddy_mask"].values > 0
        s_east = np.zeros(s_class.shape, bool)
        s_east[:, (width // 2) // 2:] = True
        result["stress_enl1_half_size"] = {
            "rules_whole_scene": scores(s_rules, s_class, np.ones(s_class.shape, bool)),
            "supervised_east_half_unseen": scores(s_sup, s_class, s_east)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=float))

    rows = [("rules, whole scene", result["rules"]["whole_scene"]),
            ("rules, east half", result["rules"]["east_half"]),
            ("supervised, east half (unseen)", result["supervised"]["east_half_unseen"]),
            ("supervised+calendar, east half",
             result["supervised_with_calendar_features"]["east_half_unseen"]),
            *[(f"rules {k}", v) for k, v in result["rules_ablation_whole_scene"].items()],
            *[(f"ENL1 {k}", v) for k, v in result.get("stress_enl1_half_size", {}).items()]]
    print(f"paddy detection, synthetic {width}x{height} seed {args.seed}")
    print(f"{'detector':40s} {'acc':>6s} {'F1':>6s} {'IoU':>6s}  FPR " + " ".join(
        f"{n[:8]:>8s}" for k, n in enumerate(CLASS_NAMES) if k != PADDY))
    for name, s in rows:
        fpr = " ".join(f"{s['false_positive_rate'].get(n, float('nan')):8.4f}"
                       for k, n in enumerate(CLASS_NAMES) if k != PADDY)
        print(f"{name[:40]:40s} {s['accuracy']:6.4f} {s['f1']:6.4f} {s['iou']:6.4f}      {fpr}")
    v = clf.validation_
    print(f"supervised held-out tiles (west): F1 {v['f1']:.4f} IoU {v['iou']:.4f} n={v['n']}")
    print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in seconds.items()))
    print("CPU seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu_seconds.items()))
    print(f"paddy km²: truth {result['scene']['paddy_km2_true']:.2f}, rules "
          f"{result['rules']['paddy_km2']:.2f}, supervised {result['supervised']['paddy_km2']:.2f}")
    print(f"load average (1, 5, 15 min): {os.getloadavg()} on {os.cpu_count()} CPUs")
    print(f"written {RESULTS}")


if __name__ == "__main__":
    main()
