"""Prediction overhead and memory: cropflow's tiled prediction against the model's own forward.

On synthetic cubes in the cube format (ten bands, 12 dates), with untrained TempCNNs:

1. **Overhead ratio** = wall time of ``cropflow.predict.predict`` over a whole cube (open
   it, check the contract, create the store, read every tile from Zarr, normalise, batch,
   run the model, quantise, write the Zarr store and the tile markers) / wall time of the
   bare forward pass over the same pixels, already normalised and in memory, same batch
   size, same torch threads. Two models: TempCNN with its family defaults (what a user
   trains), and a small TempCNN whose forward is so cheap that cropflow's own work weighs
   most (the worst case). Measured on the 1x cube (best of ``--repeats`` interleaved pairs,
   both models) and on the big cube (``--scale``^2 times the area, small model, best of
   ``--repeats`` - 1 pairs).
   CPU-time ratios too. Goal: <= 1.2. ``--dask`` adds the Dask executor on the big cube
   (LocalCluster from the settings, started before timing; 2 workers x 1 thread).
2. **Peak memory** (VmHWM) of a prediction (small model) at 1x, at a quarter of the big area
   and at the big area, each in a fresh process. Goal: flat (tiles bound the memory, not the
   region): big / quarter near 1 (at 1x there may be a single tile, nothing read ahead).

Run: ``python -m benchmarks.bench_predict [--dask] [--json out.json]`` (defaults: 256 x 256
px at 1x, 1024 x 1024 px big, tiles of PredictParams' default side, one torch thread: about
2-3 minutes on 2 shared cores). The cubes are built as the cube flow builds such a cube
(write blocks of 1024 px; how they are stored in Zarr chunks is the cube store's choice), so
that reads cost what they cost on a real cube.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from affine import Affine

from benchmarks.common import in_fresh_process, print_figures
from cropflow.bands import S2_TEN_BANDS
from cropflow.classes import ClassDef, ClassMap
from cropflow.predict import ModelBundle, PredictParams, predict
from cropflow.predict.engine import Runner
from cropflow.predict.model import days_since_epoch
from cropflow.predict.params import AUTO_BATCH
from cropflow.predict.testing import tiny_bundle, write_cube
from cropflow.predict.tiling import tile_side

#: The models: TempCNN with its family defaults (what a user trains), and a small one whose
#: forward pass is so cheap that cropflow's own work weighs most (the worst case).
MODELS: dict[str, dict[str, Any]] = {
    "tempcnn": {"name": "tempcnn"},
    "tempcnn-small": {
        "name": "tempcnn",
        "conv_widths": [16, 16, 16],
        "kernel_size": 5,
        "hidden_size": 64,
    },
}
CLASSES = ClassMap(
    classes=[ClassDef(id=i + 1, name=f"class_{i + 1}") for i in range(8)]
)  # fmt: skip
DATES = [f"2021-{m:02d}-01" for m in range(1, 13)]
#: Prediction tiles: the side of PredictParams' default ("auto") for pixel models.
TILE = tile_side(PredictParams.model_fields["tile_size"].default, 0)
#: The cube's write block: what the cube flow chooses for such a cube (choose_chunk, 1 GiB).
CUBE_BLOCK = 1024


def make_cube(path: Path, side: int, n_time: int, seed: int = 0) -> Path:
    """A cube of ``side x side`` pixels, ten bands, smooth random reflectance-like values."""
    rng = np.random.default_rng(seed)
    coarse = max(1, side // 16)
    bands = {}
    for band in S2_TEN_BANDS:
        low = rng.normal(0.2, 0.05, (n_time, coarse, coarse)).astype(np.float32)
        up = np.repeat(np.repeat(low, 16, axis=1), 16, axis=2)[:, :side, :side]
        bands[band] = up + rng.normal(0, 0.01, up.shape).astype(np.float32)
    return write_cube(path, bands, DATES[:n_time], Affine(10, 0, 400000, 0, -10, 5000000),
                      "EPSG:32632", chunk=CUBE_BLOCK)  # fmt: skip


def bundle(n_time: int, model: str = "tempcnn-small") -> ModelBundle:
    stats = dict.fromkeys(S2_TEN_BANDS, (0.2, 0.05))
    return tiny_bundle(MODELS[model], list(S2_TEN_BANDS), n_time, CLASSES, "pixel", stats=stats)


def forward_only(cube: Path, b: ModelBundle, batch: int) -> tuple[float, float]:
    """Wall and CPU seconds of the bare forward pass over every pixel (inputs prepared
    beforehand)."""
    import xarray as xr

    ds = xr.open_zarr(cube, consolidated=False)
    raw = np.stack([ds[n].values for n in b.contract.bands], axis=-1)  # [T, H, W, C]
    t = raw.shape[0]
    series = np.ascontiguousarray(raw.reshape(t, -1, raw.shape[-1]).transpose(1, 0, 2))
    runner = Runner(b.model, b.contract, torch.device("cpu"), batch)
    x = runner.normalise(series)
    days = np.broadcast_to(days_since_epoch(ds["time"].values), (x.shape[0], t))
    pad = np.zeros((x.shape[0], t), bool)
    start, cpu = time.perf_counter(), time.process_time()
    runner.probs(x, days, pad)
    return time.perf_counter() - start, time.process_time() - cpu


def timed_predict(
    cube: Path, b: ModelBundle, batch: int, executor: str, client: Any
) -> tuple[float, float]:
    """Wall and CPU seconds (of this process) of a whole prediction."""
    params = PredictParams(
        cube=str(cube), key=f"bench-{executor}", tile_size=TILE, batch_size=batch,
        executor=executor, resume=False, products=False,
    )  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    predict(params, b, client=client)
    return time.perf_counter() - start, time.process_time() - cpu


_CHILD = """
import json, sys, torch
from pathlib import Path
from benchmarks.bench_predict import bundle, timed_predict
from benchmarks.common import peak_rss_mb
cube, n_time, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]))
seconds, _ = timed_predict(cube, bundle(n_time), batch, "local", None)
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb()}))
"""


def peak_memory(
    cube: Path, n_time: int, batch: int, threads: int, workdir: Path
) -> dict[str, float]:
    """Peak RSS (MiB) and seconds of a local prediction in a fresh process."""
    return in_fresh_process(_CHILD, [str(cube), str(n_time), str(batch), str(threads)], workdir)


def _ratios(cube: Path, b: ModelBundle, batch: int, repeats: int, label: str) -> dict[str, Any]:
    """Forward and whole prediction, interleaved ``repeats`` times; best of each kept (other
    processes on a shared machine slow both down at random)."""
    fwds, locs = [], []
    for _ in range(repeats):
        fwds.append(forward_only(cube, b, batch))
        locs.append(timed_predict(cube, b, batch, "local", None))
    fwd, local = min(f[0] for f in fwds), min(p[0] for p in locs)
    fwd_cpu, local_cpu = min(f[1] for f in fwds), min(p[1] for p in locs)
    return {
        f"forward_s_{label}": round(fwd, 3),
        f"predict_local_s_{label}": round(local, 3),
        f"ratio_wall_{label}": round(local / fwd, 3),
        f"forward_cpu_s_{label}": round(fwd_cpu, 3),
        f"predict_local_cpu_s_{label}": round(local_cpu, 3),
        f"ratio_cpu_{label}": round(local_cpu / fwd_cpu, 3),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256, help="side of the 1x area (pixels)")
    ap.add_argument("--times", type=int, default=12, help="time steps")
    ap.add_argument("--batch", type=int, default=AUTO_BATCH["pixel"], help="pixels per pass")
    ap.add_argument("--scale", type=int, default=4, help="side multiplier of the big area")
    ap.add_argument("--repeats", type=int, default=3, help="timings of the 1x figures")
    ap.add_argument("--dask", action="store_true", help="also time the Dask executor (big)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: two threads on a shared 2-core machine vary 5-20x run to run)",
    )
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    figures: dict[str, Any] = {
        "pixels_1x": args.size**2,
        "area_factor": args.scale**2,
        "times": args.times,
        "bands": len(S2_TEN_BANDS),
        "batch": args.batch,
        "tile": TILE,
        "cube_block": CUBE_BLOCK,
        "models": MODELS,
        "torch_threads": args.threads,
    }
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        root = Path(tmp)
        os.environ["CROPFLOW_WORKDIR"] = str(root / "work")
        small = make_cube(root / "small.zarr", args.size, args.times)
        big = make_cube(root / "big.zarr", args.size * args.scale, args.times, seed=1)
        b = bundle(args.times)
        full = bundle(args.times, "tempcnn")
        figures |= _ratios(small, full, args.batch, args.repeats, "1x_tempcnn")
        figures |= _ratios(small, b, args.batch, args.repeats, "1x_small")
        figures |= _ratios(big, b, args.batch, max(1, args.repeats - 1), "big_small")
        if args.dask:
            from cropflow.cube.cluster import dask_client

            with dask_client() as client:
                timed_predict(small, b, args.batch, "dask", client)  # start the workers
                wall, _ = timed_predict(big, b, args.batch, "dask", client)
            figures["predict_dask_s_big"] = round(wall, 3)
            figures["ratio_dask_big"] = round(wall / figures["forward_s_big_small"], 3)
        mem_small = peak_memory(small, args.times, args.batch, args.threads, root / "mem-s")
        mid = make_cube(root / "mid.zarr", args.size * args.scale // 2, args.times, seed=2)
        mem_mid = peak_memory(mid, args.times, args.batch, args.threads, root / "mem-m")
        mem_big = peak_memory(big, args.times, args.batch, args.threads, root / "mem-b")
        figures |= {
            "peak_rss_mb_1x": round(mem_small["peak_rss_mb"], 1),
            "peak_rss_mb_mid": round(mem_mid["peak_rss_mb"], 1),
            "peak_rss_mb_big": round(mem_big["peak_rss_mb"], 1),
            "peak_rss_big_over_mid": round(mem_big["peak_rss_mb"] / mem_mid["peak_rss_mb"], 3),
            "predict_s_1x_fresh_process": round(mem_small["seconds"], 2),
            "predict_s_big_fresh_process": round(mem_big["seconds"], 2),
        }
    return print_figures(figures, args.json)


if __name__ == "__main__":
    main()
