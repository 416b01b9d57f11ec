"""Scale-out on an existing Dask engine: the same cube build and prediction on a Dask
scheduler with 1 and then 2 worker processes (one thread each), side by side in one run.

The scheduler and workers are started as processes (``dask scheduler`` / ``dask worker``, as
``cropflow stack up`` and the Dask Helm chart run them) and cropflow reaches them through
``CROPFLOW_DASK__ADDRESS`` only. The data are bench_cube's synthetic Sentinel-2-like COGs
(``--side`` px, ``--dates`` acquisitions); the prediction runs a small L-TAE over the cube with
``executor="dask"``. Reported: wall time of each (best of ``--repeats``) and the speed-up of 2
workers over 1 (the machine's cores bound it: 2 here).

Run: ``python -m benchmarks.bench_scaleout [--side 2048 --dates 12 --repeats 2]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.bench_cube import make_dataset, run_cropflow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def dask_engine(n_workers: int, log: Path) -> Iterator[str]:
    """A scheduler and ``n_workers`` single-threaded worker processes on 127.0.0.1."""
    from distributed import Client

    dask = str(Path(sys.executable).parent / "dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    with log.open("ab") as out:
        procs = [
            subprocess.Popen(
                [
                    dask,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--dashboard-address",
                    "127.0.0.1:0",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            ),
        ]
        time.sleep(1.0)
        procs.append(
            subprocess.Popen(
                [
                    dask,
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nworkers",
                    str(n_workers),
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    "4GiB",
                    "--dashboard-address",
                    "127.0.0.1:0",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=120)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)


def predict_seconds(cube: Path, out: Path) -> float:
    """Wall seconds of a prediction of the whole cube on the current Dask engine."""
    import xarray as xr

    from cropflow.classes import ClassDef, ClassMap
    from cropflow.predict import PredictParams, predict
    from cropflow.predict.testing import tiny_bundle

    ds = xr.open_zarr(cube)
    bands = [b for b in ("blue", "green", "red", "nir") if b in ds.data_vars]
    classes = ClassMap(classes=[ClassDef(id=i, name=f"c{i}", color="#808080") for i in (1, 2, 3)])
    ltae = {"name": "ltae", "n_head": 4, "d_k": 8, "d_model": 64, "mlp_widths": [32, 64],
            "decoder_widths": [32]}  # fmt: skip
    bundle = tiny_bundle(ltae, bands, int(ds.sizes["time"]), classes, "pixel")
    os.environ["CROPFLOW_WORKDIR"] = str(out)
    t0 = time.perf_counter()
    predict(PredictParams(cube=str(cube), key=f"scale-{time.time_ns()}", region="scale",
                          executor="dask", resume=False), bundle)  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--dates", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from distributed import Client

    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        root = Path(tmp)
        items = make_dataset(root / "data", args.side, args.dates)
        results: dict[int, tuple[float, float]] = {}
        for n in (1, 2):
            with dask_engine(n, root / "dask.log") as address:
                os.environ["CROPFLOW_DASK__ADDRESS"] = address
                with Client(address) as client:
                    builds, preds = [], []
                    for r in range(args.repeats):
                        out = root / f"cube-{n}-{r}"
                        seconds, ref = run_cropflow(items, args.side, out, client, None)
                        builds.append(seconds)
                        preds.append(predict_seconds(Path(ref.uri), root / f"pred-{n}-{r}"))
                results[n] = (min(builds), min(preds))
    one, two = results[1], results[2]
    print(f"## Scale-out on a Dask scheduler (`python -m benchmarks.bench_scaleout "
          f"--side {args.side} --dates {args.dates}`)\n")  # fmt: skip
    print(
        f"{platform.machine()}, {os.cpu_count()} cores; {args.side} x {args.side} px, "
        f"{args.dates} dates of 4 bands + SCL (bench_cube's COGs); workers of 1 thread each, "
        f"reached through CROPFLOW_DASK__ADDRESS; best of {args.repeats}.\n"
    )
    print("| workers | cube build s | prediction s |")
    print("|---|---|---|")
    for n, (b, p) in results.items():
        print(f"| {n} | {b:.1f} | {p:.1f} |")
    print(f"\nSpeed-up of 2 workers over 1: cube build **{one[0] / two[0]:.2f}x**, prediction "
          f"**{one[1] / two[1]:.2f}x** (2 cores: at most 2x).")  # fmt: skip


if __name__ == "__main__":
    main()
