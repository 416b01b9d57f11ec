"""Patch-model prediction: what tiling costs over the model's own forward on the same patches.

A patch model (U-Net by default, at its family defaults, untrained) predicts a synthetic cube
laid out as the cube flow writes one (``bench_predict.make_cube``: 1024 px write blocks, each
a shard of the cube store's chunks). Three timings, interleaved ``--repeats`` times, best kept:

1. **forward**: the bare forward over every patch of the region's patch grid, each patch once,
   inputs already normalised and cut out in memory, same batch size and torch threads (the
   physical limit of this model on this machine).
2. **untiled**: ``cropflow.predict.predict`` with one tile over the whole region (one read, each
   patch once, then blending, quantising and writing).
3. **tiled**: the same with the default tile side ("auto": 256 px, up to 512 px for patch
   strides over 16 px; ``--tile`` sets one). A tile computes every patch touching its
   core, so patches across a tile border run once per tile, and its read window spans the
   stored chunks around its core.

Also the peak memory (VmHWM) of the tiled prediction alone, in a fresh process.

Ratios: untiled / forward (cropflow's own per-patch work) and tiled / forward (what a user
pays). The patch counts (unique and computed) are printed: their ratio is the duplicated model
work, the rest of tiled / untiled is reading and blending.

Run: ``python -m benchmarks.bench_predict_patch [--size 384] [--patch 32] [--family unet]``
(about 2 minutes on 2 shared cores with the defaults).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from benchmarks.bench_predict import CLASSES, make_cube
from benchmarks.common import in_fresh_process, print_figures
from cropflow.bands import S2_TEN_BANDS
from cropflow.predict import ModelBundle, PredictParams, predict
from cropflow.predict.engine import Runner
from cropflow.predict.model import days_since_epoch
from cropflow.predict.params import AUTO_BATCH
from cropflow.predict.testing import tiny_bundle
from cropflow.predict.tiling import (
    patch_starts,
    patch_stride,
    starts_touching,
    tile_grid,
    tile_side,
)

OVERLAP = float(PredictParams.model_fields["patch_overlap"].default)


def default_stride(patch: int) -> int:
    """The patch stride of PredictParams' default overlap, as ``predict`` derives it."""
    return patch_stride(patch, round(patch * OVERLAP))


def patch_bundle(family: str, n_time: int, patch: int) -> ModelBundle:
    stats = dict.fromkeys(S2_TEN_BANDS, (0.2, 0.05))
    return tiny_bundle(
        {"name": family}, list(S2_TEN_BANDS), n_time, CLASSES, "patch", patch_size=patch,
        stats=stats,
    )  # fmt: skip


def patch_counts(side: int, patch: int, tile: int) -> tuple[int, int]:
    """Patches on the region's grid, and patches computed by the tiles of side ``tile``."""
    stride = default_stride(patch)
    unique = len(patch_starts(side, patch, stride)) ** 2
    computed = 0
    starts = patch_starts(side, patch, stride)
    for t in tile_grid(side, side, tile):  # as engine.patch_probs chooses a tile's patches
        rows = starts_touching(starts, patch, t.core.row0, t.core.row1)
        cols = starts_touching(starts, patch, t.core.col0, t.core.col1)
        computed += len(rows) * len(cols)
    return unique, computed


def forward_only(cube: Path, b: ModelBundle, batch: int) -> tuple[float, float]:
    """Wall and CPU seconds of the bare forward over each patch of the region grid once."""
    import xarray as xr

    patch = int(b.contract.patch_size or 0)
    stride = default_stride(patch)
    ds = xr.open_zarr(cube, consolidated=False)
    raw = np.stack([ds[n].values for n in b.contract.bands], axis=1)  # [T, C, H, W]
    t, _, h, w = raw.shape
    runner = Runner(b.model, b.contract, torch.device("cpu"), batch)
    x = runner.normalise(raw[None])[0]
    origins = [
        (r, c) for r in patch_starts(h, patch, stride) for c in patch_starts(w, patch, stride)
    ]
    xs = np.stack([x[:, :, r : r + patch, c : c + patch] for r, c in origins])
    days = np.broadcast_to(days_since_epoch(ds["time"].values), (len(origins), t))
    pad = np.zeros((len(origins), t), bool)
    start, cpu = time.perf_counter(), time.process_time()
    runner.probs(xs, days, pad)
    return time.perf_counter() - start, time.process_time() - cpu


def timed_predict(
    cube: Path, b: ModelBundle, batch: int, tile: int | Literal["auto"]
) -> tuple[float, float]:
    """Wall and CPU seconds of a whole local prediction with tiles of side ``tile``."""
    params = PredictParams(
        cube=str(cube), key=f"bench-patch-{tile}", tile_size=tile, batch_size=batch,
        executor="local", resume=False, products=False,
    )  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    predict(params, b, client=None)
    return time.perf_counter() - start, time.process_time() - cpu


_CHILD = """
import json, sys, torch
from pathlib import Path
from benchmarks.bench_predict_patch import patch_bundle, timed_predict
from benchmarks.common import peak_rss_mb
cube, family, n_time, patch, batch, tile = sys.argv[1:7]
torch.set_num_threads(int(sys.argv[7]))
b = patch_bundle(family, int(n_time), int(patch))
seconds, _ = timed_predict(Path(cube), b, int(batch), tile if tile == "auto" else int(tile))
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))
"""


def peak_memory(cube: Path, args: argparse.Namespace, workdir: Path) -> float:
    """Peak RSS (MiB, VmHWM) of the tiled prediction alone, in a fresh process."""
    argv = [str(cube), args.family, str(args.times), str(args.patch), str(args.batch),
            str(args.tile or "auto"), str(args.threads)]  # fmt: skip
    return float(in_fresh_process(_CHILD, argv, workdir)["peak_rss_mb"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=384, help="side of the region (pixels)")
    ap.add_argument("--times", type=int, default=12, help="time steps")
    ap.add_argument("--patch", type=int, default=32, help="patch side (the training default)")
    ap.add_argument("--family", default="unet", help="patch model family (family defaults)")
    ap.add_argument("--tile", type=int, help="tile side of the tiled run (default: auto)")
    ap.add_argument("--batch", type=int, default=AUTO_BATCH["patch"], help="patches per pass")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved timings, best kept")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    stride = default_stride(args.patch)
    tile = tile_side(args.tile or "auto", stride)
    unique, computed = patch_counts(args.size, args.patch, tile)
    figures: dict[str, Any] = {
        "family": args.family,
        "side_px": args.size,
        "patch": args.patch,
        "overlap": OVERLAP,
        "tile": tile if args.tile else f"auto ({tile})",
        "batch": args.batch,
        "torch_threads": args.threads,
        "patches_unique": unique,
        "patches_computed_tiled": computed,
        "duplicated_work": round(computed / unique, 3),
    }
    with tempfile.TemporaryDirectory(prefix="bench-predict-patch-") as tmp:
        root = Path(tmp)
        os.environ["CROPFLOW_WORKDIR"] = str(root / "work")
        cube = make_cube(root / "cube.zarr", args.size, args.times)
        b = patch_bundle(args.family, args.times, args.patch)
        runs: dict[str, list[tuple[float, float]]] = {"forward": [], "untiled": [], "tiled": []}
        for _ in range(args.repeats):
            runs["forward"].append(forward_only(cube, b, args.batch))
            runs["untiled"].append(timed_predict(cube, b, args.batch, args.size))
            runs["tiled"].append(timed_predict(cube, b, args.batch, args.tile or "auto"))
        figures["peak_rss_mb_tiled"] = round(peak_memory(cube, args, root / "mem"), 1)
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    for k, (wall, cpu) in best.items():
        figures[f"{k}_s"] = round(wall, 3)
        figures[f"{k}_cpu_s"] = round(cpu, 3)
    for k in ("untiled", "tiled"):
        figures[f"ratio_{k}_wall"] = round(best[k][0] / best["forward"][0], 3)
        figures[f"ratio_{k}_cpu"] = round(best[k][1] / best["forward"][1], 3)
    figures["tiled_over_untiled_wall"] = round(best["tiled"][0] / best["untiled"][0], 3)
    return print_figures(figures, args.json)


if __name__ == "__main__":
    main()
