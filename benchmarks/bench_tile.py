"""A Sentinel-2 tile on one machine: search -> cube -> predict -> products through the flows,
at growing fractions of an MGRS tile (10,980 x 10,980 px at 10 m), with the peak memory of the
whole process tree and the time per km^2.

For each side (default: about 1/16 and 1/4 of the tile's area, 2744 and 5488 px; sides are
even) a fresh child process runs the real flows on a temporary local Prefect API: ``search``
(a local catalog served by a real STAC API), ``build-cube`` (Dask LocalCluster from the
settings, monthly masked medians + NDVI to Zarr), ``predict`` (tiled prediction with a logged
TempCNN, then the map products:
class map and confidence COGs with overviews, legend, PNG, area table, STAC). The parent polls
the summed RSS of the child and every descendant (Dask nanny and workers, the STAC API) every
50 ms. The data are bench_cube's synthetic Sentinel-2-like COGs (4 bands + SCL, ``--dates``
dates every 10 days, clouds and shadows), generated once per side into ``--data-dir``; the
model is trained once on synthetic series (its quality is not the point: its cost is a
realistic TempCNN's) and logged in the workdir's MLflow store.

Run: ``python -m benchmarks.bench_tile [--sides 2744,5488] [--dates 12] [--data-dir D]
[--workdir W] [--out PATH]``; prints a markdown section. The full tile (``--sides 10980``)
takes 16 times the 1/16 tile's time (measured linear below) and about 25 GB of disk.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import isolated_workdir, machine_line, publish

TILE_SIDE = 10_980
RES_M = 10.0


def train_model(bands: list[str], n_time: int) -> str:
    """A TempCNN at its family defaults trained briefly on synthetic series with the cube's
    bands and steps; its logged model's URI."""
    from cropflow.train import TrainParams, train
    from cropflow.train.synthetic import synthetic_training_data

    synthetic = synthetic_training_data(
        "pixel",
        sizes=(512, 128, 128),
        n_time=n_time,
        bands=tuple(bands),
        classes=("crop", "grass", "forest", "water"),
    )
    data = replace(synthetic, period="1MS")  # the cube's monthly composites
    result = train(
        TrainParams.model_validate(
            {
                "training_set": "memory://synthetic",
                "model": {"name": "tempcnn"},
                "epochs": 2,
                "register_model": False,
            }
        ),
        data=data,
    )
    if result.model_uri is None:
        raise RuntimeError("the benchmark model was not logged")
    return result.model_uri


def child(data_dir: Path, side: int, model_uri: str) -> None:
    """In a fresh process: the flows on one side (on a temporary local Prefect API, as the
    CLI runs them); prints one JSON line of stage timings."""
    from cropflow.orchestration.api import prefect_api

    with prefect_api():
        _flows(data_dir, side, model_uri)


def _flows(data_dir: Path, side: int, model_uri: str) -> None:
    from benchmarks.bench_cube import cube_params
    from cropflow.predict import PredictParams
    from cropflow.stac.params import SearchParams
    from flows.cube import run_build_cube
    from flows.predict import predict_flow
    from flows.search import search_flow

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    search = search_flow(
        SearchParams(
            catalog=str(data_dir / "items.json"),
            provider="local-demo",
            collections=["sentinel-2-l2a"],
        )
    )
    timings["search_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cube = run_build_cube(search.uri, "local-demo", cube_params(side, None))
    timings["cube_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    prediction, products = predict_flow(
        PredictParams.model_validate(
            {"cube": cube.uri, "model": model_uri, "region": f"tile-{side}"}
        )
    )
    timings["predict_and_products_s"] = time.perf_counter() - t0
    files = products.files() if products is not None else {}
    print(
        json.dumps(
            {
                **timings,
                "cube_mib": cube.size_bytes / 2**20,
                "n_time": len(cube.times),
                "predict_s": prediction.seconds,
                "class_map": files.get("class_map"),
            }
        )
    )


def run_side(data_dir: Path, side: int, model_uri: str) -> dict[str, Any]:
    """The child of one side, with the peak summed RSS of its process tree."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_tile", "--child", str(data_dir), str(side),
         model_uri],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
    )  # fmt: skip
    peak = {"rss": 0}
    stop = threading.Event()

    def poll() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            total = 0
            with suppress(psutil.Error):
                for p in [root, *root.children(recursive=True)]:
                    with suppress(psutil.Error):
                        total += p.memory_info().rss
            peak["rss"] = max(peak["rss"], total)
            stop.wait(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    t0 = time.perf_counter()
    watcher.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"side {side}: the child failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return {"side": side, "wall_s": wall, "peak_mib": peak["rss"] / 2**20, **result}


def readable(path: str | None) -> str:
    """The class map's size and overview levels, read back."""
    if path is None:
        return "no class map"
    import rasterio

    with rasterio.open(path) as src:
        return f"{src.width} x {src.height} px, overviews {src.overviews(1)}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", default="2744,5488")
    ap.add_argument("--dates", type=int, default=12)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/cropflow-bench-tile"))
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    work = isolated_workdir("bench-tile-", args.workdir)
    load, started = os.getloadavg()[0], time.perf_counter()
    from benchmarks.bench_cube import BANDS, make_dataset

    sides = [int(s) for s in args.sides.split(",")]
    generation = {}
    for side in sides:
        t0 = time.perf_counter()
        make_dataset(args.data_dir / f"side-{side}", side, args.dates)
        generation[side] = time.perf_counter() - t0
    n_time = len({(d.year, d.month) for d in _dates(args.dates)})
    model_uri = train_model([*BANDS, "ndvi"], n_time)
    rows = [run_side(args.data_dir / f"side-{side}", side, model_uri) for side in sides]

    base = rows[0]
    lines = [
        "| side (px) | share of a tile | km^2 | search s | cube s | predict + products s | "
        "wall s (all) | s per km^2 | peak RSS, tree (MiB) | peak / smallest | cube MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        area = (r["side"] * RES_M / 1000) ** 2
        lines.append(
            f"| {r['side']} | 1/{(TILE_SIDE / r['side']) ** 2:.0f} | {area:.0f} | "
            f"{r['search_s']:.0f} | {r['cube_s']:.0f} | {r['predict_and_products_s']:.0f} | "
            f"{r['wall_s']:.0f} | {r['wall_s'] / area:.3f} | {r['peak_mib']:.0f} | "
            f"{r['peak_mib'] / base['peak_mib']:.2f} | {r['cube_mib']:.0f} |"
        )
    last = rows[-1]
    made = ", ".join(f"{s} px {t:.0f} s" for s, t in generation.items())

    def work_s(r: dict[str, Any]) -> float:
        return float(r["cube_s"] + r["predict_and_products_s"])

    def km2(r: dict[str, Any]) -> float:
        return float((r["side"] * RES_M / 1000) ** 2)

    # the marginal cost between the two largest sides (start-up costs cancel), else the average
    if len(rows) > 1:
        per_km2 = (work_s(last) - work_s(rows[-2])) / (km2(last) - km2(rows[-2]))
        how = f"the marginal cost between the two largest sides, {per_km2:.3f} s per km^2"
    else:
        per_km2 = work_s(last) / km2(last)
        how = f"the largest side, {per_km2:.3f} s per km^2"
    tile_km2 = (TILE_SIDE * RES_M / 1000) ** 2
    lines += [
        "",
        f"Class map of the largest side read back: {readable(last['class_map'])}. "
        f"Data generated once per side ({made}), "
        f"{args.dates} dates x ({', '.join(BANDS)} + SCL), {n_time} monthly steps x "
        f"{len(BANDS) + 1} variables in the cube.",
        "",
        f"Extrapolated from {how} for cube + predict + products on this machine's 2 "
        f"cores: a whole tile ({tile_km2:.0f} km^2) "
        f"{per_km2 * tile_km2 / 60:.0f} min; Germany's 357,600 km^2 (about 130 tiles with "
        f"overlap) {per_km2 * 357_600 / 3600:.0f} h on one such machine, "
        f"{per_km2 * 357_600 / 3600 / 32:.1f} h on 32 workers of 2 cores (tiles are "
        "independent: one remap per tile region).",
    ]
    info = "### " + " and ".join(f"{s} px" for s in sides) + "\n\n" + machine_line(load, started)
    publish(info + f"; workdir {work}.", "\n".join(lines) + "\n", args.out)


def _dates(n: int) -> list[Any]:
    import datetime as dt

    start = dt.date(2024, 3, 3)
    return [start + dt.timedelta(days=10 * i) for i in range(n)]


if __name__ == "__main__":
    main()
