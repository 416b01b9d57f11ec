"""Map tiles under load: ``cropflow serve`` beside titiler serving the same class-map COG.

One run, side by side: a synthetic prediction (``--size`` px square, 10 m pixels, 8 classes)
is published by ``build_products``; then ``cropflow serve`` (uvicorn, one process) and a
titiler app (``titiler.core.TilerFactory``, uvicorn, one process) serve its class map, with
the same colour map, on 127.0.0.1. The same random list of tiles (zooms 12-17 over the map) is
requested from each by ``--clients`` concurrent clients (``--requests`` in all, after a
warm-up of 50); latency p50/p95/max and errors are reported, and the ratio of cropflow's p95 to
titiler's (goal: <= 1.5, 0 errors). Loopback only; the servers stop at the end.

Run: ``python -m benchmarks.bench_tiles [--size 2048] [--clients 8] [--requests 2000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import morecantile
import numpy as np

TITILER_APP = """
from fastapi import FastAPI
from titiler.core.factory import TilerFactory
app = FastAPI()
app.include_router(TilerFactory().router)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def publish(work: Path, size: int, seed: int = 3) -> Path:
    """A published map (products/bench-tiles/) of a synthetic prediction; its folder."""
    import rasterio
    from affine import Affine

    os.environ["CROPFLOW_WORKDIR"] = str(work)
    from cropflow.classes import ClassDef, ClassMap
    from cropflow.predict import PredictParams, predict
    from cropflow.predict.testing import smooth_noise, tiny_bundle, write_cube
    from cropflow.products import build_products

    palette = ["#d8b365", "#f6e8c3", "#ffff33", "#e66101", "#5e3c99", "#a6dba0", "#1b7837",
               "#2166ac"]  # fmt: skip
    classes = ClassMap(
        classes=[ClassDef(id=i + 1, name=f"class_{i + 1}", color=c) for i, c in enumerate(palette)]
    )
    rng = np.random.default_rng(seed)
    data = {b: smooth_noise((3, size, size), rng, 6.0) for b in ("nir", "red")}
    transform = Affine(10, 0, 400000, 0, -10, 5800000)
    cube = write_cube(work / "cube.zarr", data, ["2024-05-01", "2024-06-01", "2024-07-01"],
                      transform, "EPSG:32633")  # fmt: skip
    ltae = {"name": "ltae", "n_head": 2, "d_k": 4, "d_model": 8, "mlp_widths": [8],
            "decoder_widths": [8]}  # fmt: skip
    bundle = tiny_bundle(ltae, ["nir", "red"], 3, classes, "pixel", gain=2)
    params = PredictParams(cube=str(cube), key="bench", region="bench-tiles", executor="local")
    products = build_products(predict(params, bundle))
    with rasterio.open(products.paths["class_map"]) as src:
        assert src.width == size
    return Path(products.directory)


@contextmanager
def server(
    argv: list[str], port: int, health: str, env: dict[str, str], log: Path
) -> Iterator[str]:
    """A server process on 127.0.0.1:``port``, ready when ``health`` answers 200. Its output
    goes to ``log`` (a pipe nobody reads would fill and block the server)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{argv[0]} did not start: {tail}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def tiles_over(bbox: list[float], n: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """``n`` random tiles (z, x, y) at zooms 12-17 that intersect ``bbox``."""
    tms = morecantile.tms.get("WebMercatorQuad")
    rng = random.Random(seed)
    west, south, east, north = bbox
    by_zoom = {z: list(tms.tiles(west, south, east, north, zooms=[z])) for z in range(12, 18)}
    picks = []
    for _ in range(n):
        t = rng.choice(by_zoom[rng.randint(12, 17)])
        picks.append((t.z, t.x, t.y))
    return picks


def load(urls: list[str], clients: int) -> tuple[list[float], int, int]:
    """GETs of ``urls`` by ``clients`` threads: latencies (s) of the PNG tiles, the number of
    404s (titiler's answer for a tile outside the data; cropflow sends a clear tile), and
    errors (anything else)."""

    def one(client: httpx.Client, url: str) -> float | int:
        t0 = time.perf_counter()
        try:
            r = client.get(url, timeout=30)
        except httpx.HTTPError:
            return -1
        took = time.perf_counter() - t0
        if r.status_code == 404:
            return 404
        if r.status_code == 200 and r.content[:4] == b"\x89PNG":
            return took
        seen.append(f"{r.status_code} {r.text[:120]!r}")
        return -1

    seen: list[str] = []
    limits = httpx.Limits(max_connections=clients)
    with httpx.Client(limits=limits) as client, ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda u: one(client, u), urls))
    latencies = [r for r in results if isinstance(r, float)]
    if seen:
        print(f"{len(seen)} failed requests, e.g. {sorted(set(seen))[:3]}", file=sys.stderr)
    return latencies, results.count(404), results.count(-1)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="Map side in pixels.")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-tiles-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        folder = publish(work, args.size)
        build_s = time.perf_counter() - t0
        from cropflow.serve.catalog import read_map
        from cropflow.serve.tiles import class_colormap

        published = read_map(folder)
        cog = published.file("class_map")
        # The classes' colours (values not listed are clear in rio-tiler, as in cropflow's).
        colors = class_colormap(published)
        cmap = json.dumps({str(c.value): list(colors[c.value]) for c in published.classes})
        tiles = tiles_over(published.bbox, args.requests + 50)
        env = {**os.environ, "CROPFLOW_WORKDIR": str(work), "PREFECT_API_URL": ""}
        cli = str(Path(sys.executable).parent / "cropflow")
        p1, p2 = free_port(), free_port()
        app_dir = work / "titiler_app"
        app_dir.mkdir()
        (app_dir / "bench_titiler.py").write_text(TITILER_APP)
        titiler_argv = [sys.executable, "-m", "uvicorn", "bench_titiler:app", "--app-dir",
                        str(app_dir), "--host", "127.0.0.1", "--port", str(p2),
                        "--log-level", "warning"]  # fmt: skip
        rows = []
        with (
            server([cli, "serve", "--port", str(p1)], p1, "/healthz", env, work / "a.log") as ours,
            server(titiler_argv, p2, "/healthz", env, work / "titiler.log") as theirs,
        ):
            targets = {
                "cropflow serve": [
                    f"{ours}/maps/bench-tiles/tiles/class_map/{z}/{x}/{y}.png" for z, x, y in tiles
                ],
                "titiler (same COG, same colour map)": [
                    f"{theirs}/tiles/WebMercatorQuad/{z}/{x}/{y}.png?"
                    + str(httpx.QueryParams({"url": str(cog), "colormap": cmap}))
                    for z, x, y in tiles
                ],
            }
            for name, urls in targets.items():
                load(urls[:50], args.clients)  # warm-up
                t1 = time.perf_counter()
                latencies, empty, errors = load(urls[50:], args.clients)
                wall = time.perf_counter() - t1
                rows.append((name, latencies, empty, errors, wall))

    print(f"## Map tiles under load (`python -m benchmarks.bench_tiles --size {args.size}`)\n")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; a "
        f"{args.size} x {args.size} px class map COG (10 m, 8 classes, built in {build_s:.0f} s); "
        f"{args.requests} tile requests (zooms 12-17, PNG, 256 px) by {args.clients} clients "
        "on loopback, after 50 warm-up requests; one uvicorn process each.\n"
    )
    print("| server | p50 ms | p95 ms | max ms | PNG tiles/s | 404 (no data) | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, lat, empty, errors, wall in rows:
        print(
            f"| {name} | {pct(lat, 50):.1f} | {pct(lat, 95):.1f} | {max(lat) * 1000:.1f} | "
            f"{len(lat) / wall:.0f} | {empty} | {errors} |"
        )
    ratio = pct(rows[0][1], 95) / pct(rows[1][1], 95)
    median = statistics.median(rows[0][1]) / statistics.median(rows[1][1])
    print(f"\np95 ratio cropflow / titiler: **{ratio:.2f}** (goal <= 1.5); median {median:.2f}.")


if __name__ == "__main__":
    main()
