"""Active batch selection against uniform sampling (issue 13): loss and RHO-Loss, side by side.

Every strategy trains the same family on the same splits for the same number of epochs, and
each epoch has the same number of optimiser steps (selection draws ``candidates`` x
batch_size samples per step and trains on batch_size of them), so the rows compare at equal
optimiser steps; no early stopping (patience off), the best epoch by val macro-F1 is scored on
the test split. Selection costs extra forward passes (and for RHO-Loss a holdout model), so
each table also has the wall-clock seconds, their ratio to uniform, and a row *uniform at equal
wall time* (uniform with its epochs scaled by RHO-Loss's wall-time ratio): equal compute.

Data sets:

* ``temporalcnn``: the real Formosat-2 pixel series of ``../shared/fixtures/real/temporalcnn``
  (149 dates x 3 bands, 13 classes; imported as :mod:`benchmarks.bench_quality` does), TempCNN;
* ``temporalcnn-noisy``: the same with 20 % of the training labels moved to another class
  (val and test untouched): the case RHO-Loss is designed for (noisy labels are skipped);
* ``demo-patches``: the demo region's 32 px patch set (64 px split blocks, stride 16; built as
  :mod:`benchmarks.bench_demo_quality` does), U-Net, 1 seed by default (CPU cost).

Run: ``python -m benchmarks.bench_sampling [--sets temporalcnn,temporalcnn-noisy,demo-patches]
[--seeds 3] [--epochs 60] [--patch-epochs 6] [--out PATH]``; prints a markdown section for
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import isolated_workdir, machine_line, publish

STRATEGIES = ("uniform", "loss", "rho_loss")
METRICS = ("macro_f1", "overall_accuracy", "kappa")
NOISE = 0.2


def flip_labels(data: Any, share: float, seed: int) -> Any:
    """``data`` with ``share`` of its training labels moved to another (random) class."""
    rng = np.random.default_rng(seed)
    tr = data.split("train")
    k = len(data.class_map.names)
    moved = rng.random(len(tr)) < share
    y = tr.y.copy()
    y[moved] = (y[moved] + rng.integers(1, k, int(moved.sum()))) % k
    return dataclasses.replace(data, splits={**data.splits, "train": dataclasses.replace(tr, y=y)})


def run_one(
    uri: str,
    data: Any,
    model: dict[str, Any],
    strategy: str,
    epochs: int,
    batch_size: int,
    seed: int,
    work: Path,
) -> dict[str, Any]:
    from cropflow.train import TrainParams, train

    params = TrainParams.model_validate(
        {
            "training_set": uri,
            "model": model,
            "epochs": epochs,
            "batch_size": batch_size,
            "early_stopping": {"patience": None},
            "sampling": {"strategy": strategy},
            "seed": seed,
            "register_model": False,
            "resume": False,
            "checkpoint_dir": str(work / "ckpt" / f"{strategy}-{seed}-{epochs}"),
        }
    )
    t0 = time.perf_counter()
    result = train(params, data=data)
    return {
        "seconds": time.perf_counter() - t0,
        "best_epoch": result.best_epoch,
        **{m: result.test[m] for m in METRICS},
    }


def measure(
    name: str,
    uri: str,
    data: Any,
    model: dict[str, Any],
    epochs: int,
    batch_size: int,
    seeds: list[int],
    work: Path,
    equal_wall: bool,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    run_one(uri, data, model, "uniform", 1, batch_size, 0, work)  # warm-up, not timed
    for strategy in STRATEGIES:
        runs = [run_one(uri, data, model, strategy, epochs, batch_size, s, work) for s in seeds]
        rows.append({"label": strategy, "epochs": epochs, "runs": runs})
        print(f"  {name} {strategy}: {summary(runs)}", flush=True)
    if equal_wall:
        ratio = mean(rows[2]["runs"], "seconds") / mean(rows[0]["runs"], "seconds")
        longer = round(epochs * ratio)
        if longer > epochs:  # selection cost more time than uniform: give uniform that time
            runs = [
                run_one(uri, data, model, "uniform", longer, batch_size, s, work) for s in seeds
            ]
            rows.append({"label": "uniform at equal wall time", "epochs": longer, "runs": runs})
            print(f"  {name} uniform x{ratio:.2f} epochs: {summary(runs)}", flush=True)
    return rows


def mean(runs: list[dict[str, Any]], key: str) -> float:
    return float(np.mean([r[key] for r in runs]))


def summary(runs: list[dict[str, Any]]) -> str:
    f1 = [r["macro_f1"] for r in runs]
    secs = mean(runs, "seconds")
    return f"macro F1 {np.mean(f1):.3f} ({min(f1):.3f}-{max(f1):.3f}), {secs:.0f} s"


def table(rows: list[dict[str, Any]]) -> str:
    base = mean(rows[0]["runs"], "seconds")
    base_f1 = mean(rows[0]["runs"], "macro_f1")
    lines = [
        "| sampling | epochs | macro F1 | vs uniform | OA | kappa | best epochs | s per run "
        "| time / uniform |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        runs = row["runs"]
        cells = []
        for m in METRICS:
            v = [r[m] for r in runs]
            cells.append(f"{np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})")
        f1 = mean(runs, "macro_f1")
        secs = mean(runs, "seconds")
        best = " ".join(str(r["best_epoch"]) for r in runs)
        lines.append(
            f"| {row['label']} | {row['epochs']} | {cells[0]} | {f1 - base_f1:+.3f} | {cells[1]} "
            f"| {cells[2]} | {best} | {secs:.0f} | {secs / base:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="temporalcnn,temporalcnn-noisy,demo-patches")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--patch-seeds", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=60, help="pixel sets")
    ap.add_argument("--patch-epochs", type=int, default=6, help="demo patches")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = isolated_workdir("bench-sampling-")

    from benchmarks.bench_demo_quality import prepare
    from benchmarks.bench_quality import import_set
    from cropflow.train.data import load_training_data

    load = os.getloadavg()[0]
    started = time.perf_counter()
    sections: list[str] = []
    sets = args.sets.split(",")
    seeds = list(range(args.seeds))
    if any(s.startswith("temporalcnn") for s in sets):
        uri = import_set("temporalcnn", work)
        clean = load_training_data(uri)
        sizes = ", ".join(f"{k} {len(clean.split(k))}" for k in ("train", "val", "test"))
        for name in [s for s in sets if s.startswith("temporalcnn")]:
            data = clean if name == "temporalcnn" else flip_labels(clean, NOISE, seed=0)
            rows = measure(name, uri, data, {"name": "tempcnn"}, args.epochs, 64, seeds, work, True)
            what = "" if name == "temporalcnn" else f", {NOISE:.0%} of train labels moved"
            sections.append(
                f"### {name} (TempCNN, batch 64; {sizes}{what}; {len(seeds)} seeds)\n\n"
                + table(rows)
            )
    if "demo-patches" in sets:
        prep = prepare(work, 16, 64, 16, ["patch"])
        ts = prep["sets"]["patch"]
        data = load_training_data(ts.uri)
        sizes = ", ".join(f"{k} {len(data.split(k))}" for k in ("train", "val", "test"))
        rows = measure(
            "demo-patches",
            ts.uri,
            data,
            {"name": "unet"},
            args.patch_epochs,
            8,
            list(range(args.patch_seeds)),
            work,
            False,
        )
        sections.append(
            f"### demo-patches (U-Net, batch 8, 32 px patches; {sizes}; "
            f"{args.patch_seeds} seed(s))\n\n" + table(rows)
        )
    info = (
        f"{machine_line(load, started)}. Defaults of SamplingParams (candidates 4, "
        "holdout_epochs 10); test split, mean (min-max) over seeds."
    )
    publish(info, "\n\n".join(sections), args.out)


if __name__ == "__main__":
    main()
