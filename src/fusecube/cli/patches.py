"""``fusecube patches export|verify``: ML patch sets from cubes (parses, then calls fusecube.ml)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fusecube.cli.layout import one_of

patches_app = typer.Typer(help="Export and check ML patch sets (.npy shards + metadata.json).",
                          no_args_is_help=True)


@patches_app.command("export")
def export_cmd(
    cubes: Annotated[list[Path], typer.Argument(help="Cube zarr store(s).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Patch set folder to write.")],
    size: Annotated[int, typer.Option(help="Patch height and width in pixels.")] = 256,
    stride: Annotated[Optional[int], typer.Option(help="Step between patches (default: size).")
                      ] = None,
    variables: Annotated[str, typer.Option("--vars", help="Comma-separated variables.")] = "vh",
    db: Annotated[bool, typer.Option("--db/--linear", help="Store SAR values in dB.")] = False,
    max_invalid: Annotated[float, typer.Option(
        help="Skip patches with more than this share of invalid values.")] = 0.05,
    fill: Annotated[str, typer.Option(help="Fill of invalid values.",
                                      **one_of("median", "constant", "nan"))] = "median",
    fill_value: Annotated[float, typer.Option(help="Value for --fill constant.")] = 0.0,
    shard_size: Annotated[int, typer.Option(help="Patches per shard file.")] = 256,
    times: Annotated[Optional[str], typer.Option(
        help="Comma-separated time indices to export (default: all).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing patch set.")] = False,
) -> None:
    """Cut fixed-size patches from CUBE(s) into .npy shards with metadata."""
    from fusecube.cli.console import names, out
    from fusecube.errors import PatchError
    from fusecube.ml.patches.export import PatchExportConfig, export_patches
    from fusecube.runner.progress import progress_reporter

    try:
        time_indices = None if times is None else tuple(int(t) for t in times.split(",") if t.strip())
    except ValueError as exc:
        raise PatchError(f"--times {times!r} must be comma-separated integers, e.g. 0,5,10.") from exc
    config = PatchExportConfig(
        size=size, stride=stride, variables=names(variables),
        db=db, max_invalid_fraction=max_invalid, fill=fill, fill_value=fill_value,  # type: ignore[arg-type]
        shard_size=shard_size, time_indices=time_indices,
    )
    with progress_reporter() as report:
        patch_set = export_patches(cubes, out_dir, config, overwrite=overwrite,
                                   progress=lambda d, t: report("patches", d, t))
    counts = patch_set.meta["counts"]
    out.print(f"{counts['written']} patches in {len(patch_set.meta['shards'])} shards "
              f"({counts['skipped_invalid']} of {counts['candidates']} skipped as invalid): "
              f"{patch_set.root}")


@patches_app.command("verify")
def verify_cmd(
    patch_dir: Annotated[Path, typer.Argument(help="Patch set folder.")],
    no_hash: Annotated[bool, typer.Option("--no-hash", help="Skip the sha256 check.")] = False,
) -> None:
    """Check a patch set against its metadata: files, shapes, dtypes, counts, hashes."""
    from fusecube.cli.console import out
    from fusecube.ml.patches.verify import verify_patch_files

    report = verify_patch_files(patch_dir, check_hash=not no_hash)
    report.raise_if_failed()
    out.print(report.summary())


def register(app: typer.Typer) -> None:
    """Add the ``patches`` command group to the CLI."""
    app.add_typer(patches_app, name="patches")
