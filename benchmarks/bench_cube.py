"""Datacube benchmark: cropflow's build against the rasterio floor and the odc-stac peer baseline.

All in one process, on the same synthetic Sentinel-2-like COGs and the same cores:

* **floor**: every COG window the grid needs (bands and SCL), read and decoded with rasterio
  in a tight loop, single-threaded and with one thread per Dask thread; the faster is the floor;
* **write floor**: the cube's own arrays (every variable, already in memory) written into a
  fresh Zarr store with the same chunks and codecs, one region per task, one thread per Dask
  thread: what writing the output costs at least. The decode floor reads no output; the sum
  of the two floors is the least a build that produces this cube can cost;
* **cropflow**: ``plan_cube`` + ``write_cube`` (monthly masked median composites + NDVI written
  to Zarr) on a LocalCluster sized by ``settings.dask``; throughput = decoded input bytes /
  wall time, as a ratio to the floor. Builds and floors are interleaved and the best of each
  is taken (the machine is shared); the CPU time of all processes is reported beside it;
* **peer baseline**: the straightforward odc-stac pipeline of its docs (``load(dtype=float32,
  nodata=nan)`` -> SCL mask -> ``resample(time="1MS").median()`` -> ``to_zarr``) on the same
  cluster; its composites must equal cropflow's (asserted);
* **loaders** (``--loaders``): decode throughput of ``odc.stac.load`` (dask), ``stackstac.stack``
  and cropflow's block reader (odc-stac's reader, or the direct window read) on the cluster,
  and the readers' CPU cost on one thread: the measurements behind the choice of reader;
* **block phases** (``--profile-blocks N``): CPU seconds of each phase (reads, masks,
  composites, gap filling, indices, the write) of the first N blocks, in this process;
* **memory** (``--memory``): peak RSS of the whole process tree (this process and the Dask
  worker processes) of a fresh build at 1x, 4x and 16x the area, each in a child process.

Run: ``python -m benchmarks.bench_cube [--side 4096 --dates 12] [--loaders] [--memory]``.
The COGs are generated once into ``--data-dir`` (kept for the next run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pystac
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import from_bounds

BANDS = ("blue", "green", "red", "nir")
SCALE, OFFSET = 1e-4, -0.1
EPSG = 32633
X0, Y0 = 500000.0, 5100000.0
RES = 10.0
BLOCK = 512
MASK_CODES = (1, 3, 8, 9, 10, 11)  # the default CubeParams.mask groups


# --- synthetic data ---------------------------------------------------------------------------


def _smooth(rng: np.random.Generator, side: int, cell: int) -> np.ndarray:
    """A blocky random field in [0, 1): low-resolution noise repeated to ``side``."""
    n = math.ceil(side / cell) + 1
    small = rng.random((n, n), dtype=np.float32)
    return np.kron(small, np.ones((cell, cell), dtype=np.float32))[:side, :side]


def _write(path: Path, arr: np.ndarray, res: float) -> None:
    profile = {
        "driver": "GTiff",
        "dtype": arr.dtype.name,
        "count": 1,
        "width": arr.shape[1],
        "height": arr.shape[0],
        "crs": f"EPSG:{EPSG}",
        "transform": from_origin(X0, Y0, res, res),
        "nodata": 0,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "predictor": 2 if arr.dtype == np.uint16 else 1,
    }
    tmp = path.with_suffix(".tmp.tif")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(arr, 1)
    tmp.replace(path)


def _item(root: Path, i: int, when: dt.datetime, side: int) -> pystac.Item:
    x1, y0 = X0 + side * RES, Y0 - side * RES
    from pyproj import Transformer

    w, s, e, n = Transformer.from_crs(EPSG, 4326, always_xy=True).transform_bounds(
        x1 - side * RES, y0, x1, Y0
    )
    item = pystac.Item(
        id=f"S2B_33TXX_{when:%Y%m%d}_0_L2A",
        geometry={"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        bbox=[w, s, e, n],
        datetime=when,
        properties={"s2:processing_baseline": "05.10", "earthsearch:boa_offset_applied": False},
        collection="sentinel-2-l2a",
    )
    for band in (*BANDS, "scl"):
        res = 20.0 if band == "scl" else RES
        n_px = side // 2 if band == "scl" else side
        rb: dict[str, Any] = {
            "nodata": 0,
            "data_type": "uint8" if band == "scl" else "uint16",
            "spatial_resolution": res,
        }
        if band != "scl":
            rb.update(scale=SCALE, offset=OFFSET)
        item.add_asset(
            band,
            pystac.Asset(
                href=(root / f"d{i:03d}" / f"{band}.tif").resolve().as_uri(),
                media_type=pystac.MediaType.COG,
                roles=["data"],
                extra_fields={
                    "raster:bands": [rb],
                    "proj:code": f"EPSG:{EPSG}",
                    "proj:shape": [n_px, n_px],
                    "proj:transform": [res, 0.0, X0, 0.0, -res, Y0],
                },
            ),
        )
    return item


#: Kinds of synthetic reflectance (``--kind``): ``noisy`` adds +-60 DN of per-pixel noise to
#: blocky fields (about 1.9 bytes per pixel after DEFLATE, like real reflectance); ``blocky`` is
#: the fields alone (32 px blocks, about 0.05 bytes per pixel): decoding is then nearly free
#: and everything cropflow does after it shows.
DATA_KINDS = ("noisy", "blocky")


def make_dataset(
    root: Path, side: int, dates: int, seed: int = 0, kind: str = "noisy"
) -> list[pystac.Item]:
    """T dates x (4 bands at 10 m + SCL at 20 m) of ``side`` px; generated once, then reused.

    ``kind``: one of :data:`DATA_KINDS`."""
    if kind not in DATA_KINDS:
        raise ValueError(f"unknown data kind {kind!r}; one of {DATA_KINDS}")
    done = root / "items.json"
    if done.exists():
        return [pystac.Item.from_dict(d) for d in json.loads(done.read_text())]
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fields = {b: 500 + 3500 * _smooth(rng, side, 32) for b in BANDS}
    start = dt.datetime(2024, 3, 3, 10, 20, tzinfo=dt.UTC)
    items = []
    t0 = time.perf_counter()
    for i in range(dates):
        folder = root / f"d{i:03d}"
        folder.mkdir(exist_ok=True)
        cover = rng.choice([0.0, 0.1, 0.3, 0.6])
        cloud = _smooth(rng, side // 2, 16) < cover  # 20 m
        shadow = np.roll(cloud, (6, 9), axis=(0, 1)) & ~cloud
        scl = np.full((side // 2, side // 2), 4, dtype=np.uint8)
        scl[shadow] = 3
        scl[cloud] = 9
        _write(folder / "scl.tif", scl, 20.0)
        cloud10 = np.repeat(np.repeat(cloud, 2, axis=0), 2, axis=1)
        season = 0.8 + 0.4 * math.sin(i / max(dates - 1, 1) * math.pi)
        for band in BANDS:
            refl = fields[band] * season
            if kind == "noisy":
                refl = refl + rng.integers(-60, 60, (side, side), dtype=np.int16)
            refl[cloud10] += 4000  # bright clouds: an unmasked median would show them
            dn = np.clip(refl + 1000, 1, 65535).astype(np.uint16)
            _write(folder / f"{band}.tif", dn, RES)
        items.append(_item(root, i, start + dt.timedelta(days=10 * i), side))
    done.write_text(json.dumps([it.to_dict() for it in items]))
    print(f"generated {dates} dates of {side}x{side} px in {time.perf_counter() - t0:.0f} s")
    return items


# --- measurements -----------------------------------------------------------------------------


def grid_bounds(side: int) -> tuple[float, float, float, float]:
    """Bounds of the top-left ``side`` x ``side`` px of the dataset."""
    return (X0, Y0 - side * RES, X0 + side * RES, Y0)


def cog_hrefs(items: list[pystac.Item]) -> list[str]:
    """Every COG (bands and SCL) the grid needs (the grid lies inside every COG)."""
    return [a.href for it in items for a in it.assets.values()]


def read_window(href: str, bounds: tuple[float, float, float, float]) -> int:
    """Read and decode the window of ``bounds``; returns decoded bytes."""
    with rasterio.open(href) as src:
        arr = src.read(1, window=from_bounds(*bounds, transform=src.transform))
    return int(arr.nbytes)


def measure_floor(
    hrefs: list[str], bounds: tuple[float, float, float, float], threads: int, repeats: int = 3
) -> tuple[int, float, float]:
    """(decoded bytes, best wall seconds, its CPU seconds) of reading every window with
    ``threads`` threads."""
    best, best_cpu = math.inf, math.inf
    total = 0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), tree_cpu()
        if threads == 1:
            total = sum(read_window(h, bounds) for h in hrefs)
        else:
            with ThreadPoolExecutor(threads) as pool:
                total = sum(pool.map(lambda h: read_window(h, bounds), hrefs))
        wall, cpu = time.perf_counter() - t0, tree_cpu() - c0
        if wall < best:
            best, best_cpu = wall, cpu
    return total, best, best_cpu


def load_cube_arrays(cube_uri: Path) -> dict[str, tuple[np.ndarray, Any]]:
    """Every data variable of a cube (dims ``(time, y, x)``), in memory, with its array."""
    import zarr

    group = zarr.open_group(str(cube_uri), mode="r")
    return {name: (np.asarray(arr[...]), arr) for name, arr in group.arrays() if arr.ndim == 3}


def measure_write_floor(
    arrays: dict[str, tuple[np.ndarray, Any]], out: Path, region: int, threads: int
) -> tuple[float, float, int]:
    """(wall s, CPU s, encoded bytes) of writing ``arrays`` into a fresh store at ``out`` with
    their chunks, shards, codecs and fill values; ``region`` x ``region`` px per task (cropflow's
    block), ``threads`` tasks at once."""
    import zarr

    shutil.rmtree(out, ignore_errors=True)
    group = zarr.open_group(str(out), mode="w", zarr_format=3)
    targets = {}
    for name, (_, src) in arrays.items():
        targets[name] = group.create_array(
            name,
            shape=src.shape,
            chunks=src.chunks,
            shards=src.shards,
            dtype=src.dtype,
            filters=src.filters,
            compressors=src.compressors,
            serializer=src.serializer,
            fill_value=src.fill_value,
        )
    _, ny, nx = next(iter(arrays.values()))[0].shape
    regions = [(y, x) for y in range(0, ny, region) for x in range(0, nx, region)]

    def write(yx: tuple[int, int]) -> None:
        y, x = yx
        for name, (data, _) in arrays.items():
            targets[name][:, y : y + region, x : x + region] = data[
                :, y : y + region, x : x + region
            ]

    t0, c0 = time.perf_counter(), tree_cpu()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, regions))
    wall, cpu = time.perf_counter() - t0, tree_cpu() - c0
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return wall, cpu, size


def profile_blocks(
    items: list[pystac.Item], side: int, out: Path, n: int
) -> list[dict[str, float]]:
    """CPU seconds per phase of the first ``n`` blocks, built one after the other in this
    process (no cluster): reads, cloud masks, composites, gap filling, indices, the write.
    The first block pays the process's first touch of its memory."""
    from cropflow.cube import block as blk
    from cropflow.cube import store
    from cropflow.cube.plan import plan_cube
    from cropflow.stac.profiles import get_profile

    plan = plan_cube(items, get_profile("local-demo"), cube_params(side, None))
    spent: dict[str, float] = {}
    phases = (
        (blk._DayReader, "read_day", "read"),
        (blk, "MedianMask", "mask"),
        (blk, "_composite", "composite"),
        (blk, "fill_linear", "fill"),
        (blk, "compute_index", "index"),
    )
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in phases]

    def timed(inner: Any, label: str) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.process_time()
            try:
                return inner(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.process_time() - t0

        return wrapper

    shutil.rmtree(out, ignore_errors=True)
    store.create_store(out, plan)
    rows = []
    try:
        for owner, name, label in phases:
            setattr(owner, name, timed(getattr(owner, name), label))
        for b in plan.blocks()[:n]:
            spent.clear()
            t0 = time.process_time()
            result = blk.compute_block(plan, b)
            t1 = time.process_time()
            store.write_block(out, result)
            rows.append({**spent, "compute": t1 - t0, "write": time.process_time() - t1})
    finally:  # the library's functions back as they were
        for owner, name, original in originals:
            setattr(owner, name, original)
    return rows


def cube_params(side: int, chunk: int | None, reader: str = "auto") -> Any:
    from cropflow.cube.params import CubeParams, GridParams

    return CubeParams(
        reader=reader,
        bands=list(BANDS),
        indices=["ndvi"],
        period="1MS",
        chunk_size=chunk,
        grid=GridParams(crs=f"EPSG:{EPSG}", resolution=RES, bounds=grid_bounds(side)),
    )


def run_cropflow(
    items: list[pystac.Item],
    side: int,
    out: Path,
    client: Any,
    chunk: int | None,
    reader: str = "auto",
) -> tuple[float, Any]:
    """Wall seconds of plan + write (a fresh store), and the CubeRef."""
    from cropflow.cube.build import write_cube
    from cropflow.cube.plan import plan_cube
    from cropflow.stac.profiles import get_profile

    for p in (out, out.with_name(out.name + ".partial")):
        shutil.rmtree(p, ignore_errors=True)
    t0 = time.perf_counter()
    plan = plan_cube(items, get_profile("local-demo"), cube_params(side, chunk, reader))
    ref = write_cube(plan, out, client=client)
    return time.perf_counter() - t0, ref


def run_baseline(items: list[pystac.Item], side: int, out: Path) -> float:
    """The odc-stac docs pipeline (on the current default Dask client); wall seconds."""
    import odc.stac
    from odc.geo.geobox import GeoBox

    shutil.rmtree(out, ignore_errors=True)
    gbox = GeoBox.from_bbox(grid_bounds(side), f"EPSG:{EPSG}", resolution=RES)
    t0 = time.perf_counter()
    ds = odc.stac.load(
        items,
        bands=[*BANDS, "scl"],
        geobox=gbox,
        chunks={"x": 1024, "y": 1024},
        dtype="float32",
        nodata=float("nan"),
        groupby="solar_day",
    )
    refl = ds[list(BANDS)] * SCALE + OFFSET
    clear = ~ds.scl.isin(MASK_CODES)
    comp = refl.where(clear).resample(time="1MS").median()
    comp.to_zarr(out, zarr_format=3, consolidated=False, mode="w")
    return time.perf_counter() - t0


def compare(cube_uri: Path, baseline_uri: Path) -> float:
    """Largest |cropflow - baseline| over observed pixels; asserts NaN agreement elsewhere."""
    import xarray as xr

    from cropflow.cube.store import open_cube

    cube = open_cube(cube_uri)
    base = xr.open_zarr(baseline_uri, consolidated=False)
    assert list(base.time.values) == list(cube.time.values), "time axes differ"
    worst = 0.0
    for band in BANDS:
        ours = cube[band].values
        theirs = base[band].values
        seen = cube.valid_count.values > 0
        assert np.isnan(theirs[~seen]).all(), f"{band}: baseline has values where cropflow saw none"
        diff = float(np.abs(ours[seen] - theirs[seen]).max()) if seen.any() else 0.0
        assert diff <= 1e-6, f"{band}: composites differ by {diff}"
        worst = max(worst, diff)
    return worst


def tree_cpu() -> float:
    """CPU seconds (user + system) used so far by this process and its live descendants."""
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        with suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


@contextmanager
def tree_peak(interval: float = 0.05) -> Iterator[dict[str, int]]:
    """Track the peak summed RSS of this process and all its descendants."""
    me = psutil.Process()
    peak = {"rss": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with suppress(psutil.Error):
                    total += p.memory_info().rss
            peak["rss"] = max(peak["rss"], total)
            stop.wait(interval)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


def memory_child(data_dir: Path, side: int, out: Path, chunk: int | None) -> None:
    """Child process: a fresh build on a fresh LocalCluster; prints one JSON line."""
    from cropflow.cube.cluster import dask_client

    items = [pystac.Item.from_dict(d) for d in json.loads((data_dir / "items.json").read_text())]
    with tree_peak() as peak:
        t0 = time.perf_counter()
        with dask_client() as client:
            seconds, ref = run_cropflow(items, side, out, client, chunk)
        wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "side": side,
                "peak_rss": peak["rss"],
                "build_s": seconds,
                "wall_s": wall,
                "blocks": ref.blocks_total,
                "chunk": ref.chunk,
            }
        )
    )


# --- loaders ----------------------------------------------------------------------------------


def _cropflow_read_region(
    args: tuple[list[dict[str, Any]], int, tuple[int, int, int, int], bool],
) -> int:
    from odc.geo.geobox import GeoBox

    from cropflow.cube.plan import SourceBand
    from cropflow.cube.read import read_band, reader_context

    srcs, side, (y0, y1, x0, x1), direct = args
    gbox = GeoBox.from_bbox(grid_bounds(side), f"EPSG:{EPSG}", resolution=RES)[y0:y1, x0:x1]
    total = 0
    with reader_context(gbox) as ctx:
        for s in srcs:
            src = SourceBand.model_validate(s)
            out = np.empty(gbox.shape.yx, dtype=np.uint16)
            read_band(src, gbox, out, fill=0, resampling="nearest", ctx=ctx, direct=direct)
            total += int(out[0, 0])
    return total


def measure_loaders(
    items: list[pystac.Item], side: int, client: Any, rounds: int = 2
) -> dict[str, float]:
    """Best seconds (of ``rounds``, interleaved) to load the grid's bands with each loader on
    the cluster. Every loader reads the same windows into uint16 arrays on the workers."""
    import odc.stac
    import stackstac
    from odc.geo.geobox import GeoBox

    from cropflow.cube.plan import SourceBand

    gbox = GeoBox.from_bbox(grid_bounds(side), f"EPSG:{EPSG}", resolution=RES)
    srcs = []
    for it in items:
        for b in BANDS:
            with rasterio.open(it.assets[b].href) as r:
                tf = tuple(r.transform)[:6]
            src = SourceBand(
                href=it.assets[b].href, dtype="uint16", nodata=0, crs=f"EPSG:{EPSG}", transform=tf
            )
            srcs.append(src.model_dump())

    def odc_load(time_chunk: int) -> None:
        ds = odc.stac.load(
            items,
            bands=list(BANDS),
            geobox=gbox,
            chunks={"x": 1024, "y": 1024, "time": time_chunk},
            dtype="uint16",
            groupby="solar_day",
        )
        ds.to_array().sum().compute()

    def stackstac_load() -> None:
        arr = stackstac.stack(
            items,
            assets=list(BANDS),
            epsg=EPSG,
            resolution=RES,
            bounds=grid_bounds(side),
            xy_coords="center",
            chunksize=1024,
            dtype="uint16",
            fill_value=np.uint16(0),
            rescale=False,
        )
        arr.sum().compute()

    def region_reader(direct: bool) -> None:
        tasks = [
            (srcs, side, (y, min(y + 1024, side), x, min(x + 1024, side)), direct)
            for y in range(0, side, 1024)
            for x in range(0, side, 1024)
        ]
        client.gather(client.map(_cropflow_read_region, tasks, pure=False))

    loaders: dict[str, Any] = {
        "odc.stac.load (dask, time chunk 1)": lambda: odc_load(1),
        "odc.stac.load (dask, time whole)": lambda: odc_load(len(items)),
        "stackstac.stack (dask)": stackstac_load,
        "cropflow block reader (odc-stac reader)": lambda: region_reader(False),
        "cropflow block reader (direct window read)": lambda: region_reader(True),
    }
    best = dict.fromkeys(loaders, math.inf)
    for _ in range(rounds):
        for name, run in loaders.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def measure_readers_in_process(
    items: list[pystac.Item], side: int, rounds: int = 3
) -> dict[str, float]:
    """Best CPU seconds, in this process on one thread, to read the bands of a ``side`` grid:
    whole windows with rasterio (the floor), and 1024 px blocks with each cropflow reader."""
    from odc.geo.geobox import GeoBox

    from cropflow.cube.plan import SourceBand

    gbox = GeoBox.from_bbox(grid_bounds(side), f"EPSG:{EPSG}", resolution=RES)
    hrefs = [it.assets[b].href for it in items for b in BANDS]
    srcs = []
    for href in hrefs:
        with rasterio.open(href) as r:
            tf = tuple(r.transform)[:6]
        srcs.append(
            SourceBand(href=href, dtype="uint16", nodata=0, crs=f"EPSG:{EPSG}", transform=tf)
        )
    bounds = grid_bounds(side)
    blocks = [(y, x) for y in range(0, side, 1024) for x in range(0, side, 1024)]

    def floor() -> None:
        for href in hrefs:
            read_window(href, bounds)

    def regions_with(direct: bool) -> None:
        from cropflow.cube.read import read_band, reader_context

        for y, x in blocks:
            box = gbox[y : y + 1024, x : x + 1024]
            with reader_context(box, scope=f"bench-{direct}") as ctx:
                for src in srcs:
                    out = np.empty(box.shape.yx, dtype=np.uint16)
                    read_band(src, box, out, fill=0, resampling="nearest", ctx=ctx, direct=direct)

    runs: dict[str, Any] = {
        "rasterio whole windows (floor)": floor,
        "cropflow odc-stac reader": lambda: regions_with(False),
        "cropflow direct window read": lambda: regions_with(True),
    }
    best = dict.fromkeys(runs, math.inf)
    for _ in range(rounds):
        for name, run in runs.items():
            c0 = time.process_time()
            run()
            best[name] = min(best[name], time.process_time() - c0)
    return best


# --- main -------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def _run_child(args: argparse.Namespace, side: int, out: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_cube",
        "--memory-child",
        str(side),
        "--data-dir",
        str(args.data_dir),
        "--out",
        str(out),
    ]
    if args.chunk:
        cmd += ["--chunk", str(args.chunk)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1]
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=4096, help="grid side in 10 m pixels")
    ap.add_argument("--dates", type=int, default=12, help="acquisitions (every 10 days)")
    ap.add_argument("--data-dir", type=Path, default=None, help="where the COGs are cached")
    ap.add_argument("--out", type=Path, default=Path("/tmp/cropflow-bench-cube-out"))
    ap.add_argument("--chunk", type=int, default=None, help="cube chunk (default: auto)")
    ap.add_argument("--loaders", action="store_true", help="also compare the loaders")
    ap.add_argument("--memory", action="store_true", help="also peak memory at 1x/4x/16x")
    ap.add_argument("--no-baseline", action="store_true", help="skip the odc-stac baseline")
    ap.add_argument("--repeats", type=int, default=2, help="timed cropflow builds (best of)")
    ap.add_argument("--reader", choices=["auto", "odc"], default="auto", help="CubeParams.reader")
    ap.add_argument("--kind", choices=DATA_KINDS, default="noisy", help="synthetic reflectance")
    ap.add_argument(
        "--profile-blocks", type=int, default=0, help="also time the phases of N blocks"
    )
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.data_dir is None:
        suffix = "" if args.kind == "noisy" else f"-{args.kind}"
        args.data_dir = Path(f"/tmp/cropflow-bench-cube-data/{args.side}x{args.dates}{suffix}")
    if args.memory_child is not None:
        memory_child(args.data_dir, args.memory_child, args.out, args.chunk)
        return

    from distributed import Client

    from cropflow.cube.cluster import local_cluster_kwargs, make_local_cluster
    from cropflow.settings import get_settings

    items = make_dataset(args.data_dir, args.side, args.dates, kind=args.kind)
    bounds = grid_bounds(args.side)
    hrefs = cog_hrefs(items)
    settings = get_settings().dask
    threads = settings.n_workers * settings.threads_per_worker
    report: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "load_avg_start": os.getloadavg()[0],
        "size": f"{args.side}x{args.side} px, {args.dates} dates, {len(BANDS)} bands + SCL (20 m)",
        "kind": args.kind,
        "reader": args.reader,
    }
    nbytes, t1, c1 = measure_floor(hrefs, bounds, 1)
    _, tn, cn = measure_floor(hrefs, bounds, threads)
    floors, floor_cpu = [min(t1, tn)], [min(c1, cn)]
    builds: list[float] = []
    build_cpu: list[float] = []
    task_s: list[float] = []
    with make_local_cluster(**local_cluster_kwargs(settings)) as cluster, Client(cluster) as client:
        client.run(lambda: __import__("cropflow.cube.block"))
        cube_uri = args.out / "cropflow.zarr"
        # warm-up: 2 x 2 blocks, so that every worker has imported, allocated and written
        run_cropflow(items, min(args.side, 2048), cube_uri, client, args.chunk)
        for _ in range(args.repeats):  # interleaved, best of: the machine is shared
            c0 = tree_cpu()
            secs, ref = run_cropflow(items, args.side, cube_uri, client, args.chunk, args.reader)
            build_cpu.append(tree_cpu() - c0)
            builds.append(secs)
            task_s.append(ref.task_s)
            _, tf, cf = measure_floor(hrefs, bounds, threads, repeats=1)
            floors.append(tf)
            floor_cpu.append(cf)
        floor_s, secs = min(floors), min(builds)
        arrays = load_cube_arrays(cube_uri)
        write_floor = args.out / "write-floor.zarr"
        measure_write_floor(arrays, write_floor, ref.chunk, threads)  # warm-up, as for cropflow
        writes = [
            measure_write_floor(arrays, write_floor, ref.chunk, threads)
            for _ in range(args.repeats)
        ]
        del arrays
        write_s, write_cpu, _ = min(writes)
        both_s, both_cpu = floor_s + write_s, min(floor_cpu) + write_cpu
        report.update(
            input_bytes=nbytes,
            threads=threads,
            floor_1thread_MBps=nbytes / t1 / 1e6,
            floor_MBps=nbytes / floor_s / 1e6,
            floor_s_all=floors,
            cropflow_s=secs,
            cropflow_s_all=builds,
            cropflow_task_s=task_s,
            cropflow_MBps=nbytes / secs / 1e6,
            ratio_to_floor=floor_s / secs,
            floor_cpu_s=min(floor_cpu),
            cropflow_cpu_s=min(build_cpu),
            cpu_ratio_to_floor=min(floor_cpu) / min(build_cpu),
            write_floor_s=write_s,
            write_floor_s_all=[w[0] for w in writes],
            write_floor_cpu_s=write_cpu,
            ratio_to_decode_and_write_floor=both_s / secs,
            cpu_ratio_to_decode_and_write_floor=both_cpu / min(build_cpu),
            chunk=ref.chunk,
            blocks=ref.blocks_total,
            cube_MB=ref.size_bytes / 1e6,
            steps=len(ref.times),
        )
        print(
            f"input {_mb(nbytes)} decoded; floor (best of {len(floors)}, {threads} threads) "
            f"{nbytes / floor_s / 1e6:.0f} MB/s, 1 thread {nbytes / t1 / 1e6:.0f} MB/s"
        )
        print(
            f"cropflow (best of {len(builds)}): {secs:.1f} s, {nbytes / secs / 1e6:.0f} MB/s, "
            f"ratio to floor {floor_s / secs:.2f} ({ref.blocks_total} blocks of {ref.chunk}; "
            f"block tasks {min(task_s):.1f} s summed over workers)"
        )
        print(
            f"CPU time: floor {min(floor_cpu):.1f} s, cropflow {min(build_cpu):.1f} s "
            f"(all processes), ratio {min(floor_cpu) / min(build_cpu):.2f}"
        )
        print(
            f"write floor (the cube's arrays from memory into a fresh store, best of "
            f"{len(writes)}): {write_s:.1f} s, CPU {write_cpu:.1f} s; decode + write floor "
            f"{both_s:.1f} s: ratio {both_s / secs:.2f} wall, {both_cpu / min(build_cpu):.2f} CPU"
        )
        if not args.no_baseline:
            base_uri = args.out / "baseline.zarr"
            bsecs = run_baseline(items, args.side, base_uri)
            worst = compare(cube_uri, base_uri)
            report.update(
                baseline_s=bsecs,
                baseline_MBps=nbytes / bsecs / 1e6,
                speedup_vs_baseline=bsecs / max(builds),  # conservative: slowest build
                max_abs_diff=worst,
            )
            print(
                f"baseline: {bsecs:.1f} s, {nbytes / bsecs / 1e6:.0f} MB/s; cropflow "
                f"{bsecs / max(builds):.1f}x faster (slowest build); composites equal "
                f"(max |diff| {worst:.1e})"
            )
        if args.loaders:
            loaders = measure_loaders(items, min(args.side, 2048), client)
            sub = min(args.side, 2048) ** 2 / args.side**2
            band_bytes = nbytes * sub * len(BANDS) / (len(BANDS) + 0.125)
            report["loaders_MBps"] = {k: band_bytes / v / 1e6 for k, v in loaders.items()}
            for k, v in loaders.items():
                print(f"loader {k}: {band_bytes / v / 1e6:.0f} MB/s")
    if args.loaders:  # with the cluster closed: this process's CPU time is the reads'
        readers = measure_readers_in_process(items, min(args.side, 2048))
        report["readers_cpu_MBps"] = {k: band_bytes / v / 1e6 for k, v in readers.items()}
        for k, v in readers.items():
            print(f"one thread, CPU time: {k}: {band_bytes / v / 1e6:.0f} MB/s")
    if args.profile_blocks:  # after the cluster: one process, its CPU time is the block's
        phases = profile_blocks(items, args.side, args.out / "profile.zarr", args.profile_blocks)
        report["block_phases_cpu_s"] = phases
        for i, row in enumerate(phases):
            print(f"block {i}: " + ", ".join(f"{k} {v:.3f} s" for k, v in row.items()))
    if args.memory:
        mem = []
        for m in (1, 4, 16):
            side = args.side // 4 * int(math.sqrt(m))
            res = _run_child(args, side, args.out / f"mem{m}.zarr")
            res["area"] = f"{m}x"
            mem.append(res)
            print(
                f"memory {m}x ({side} px, {res['blocks']} blocks): peak tree RSS "
                f"{res['peak_rss'] / 2**20:.0f} MiB, build {res['build_s']:.1f} s"
            )
        report["memory"] = mem
        report["memory_16x_over_1x"] = mem[-1]["peak_rss"] / mem[0]["peak_rss"]
        print(f"memory 16x / 1x = {report['memory_16x_over_1x']:.2f}")
    report["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
