"""Calibration of the probability maps (issue 13): expected calibration error (ECE, 15 bins)
of each pixel family on real data before and after the temperature fitted on val, side by side
in one run; the class (and so every accuracy) is the same in both columns.

Data: the real temporalCNN fixture (imported as :mod:`benchmarks.bench_quality` does) and its
one-band NDVI version. Families at their defaults (``{"name": family}``), ``--seeds`` seeds.

Run: ``python -m benchmarks.bench_calibration [--seeds 2] [--families tempcnn,ltae,crop_mask_lstm]
[--sets temporalcnn,temporalcnn-ndvi]``; prints a markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

KEYS = ("temperature", "val_ece_uncalibrated", "val_ece", "test_ece_uncalibrated", "test_ece")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--families", default="tempcnn,ltae,crop_mask_lstm")
    ap.add_argument("--sets", default="temporalcnn,temporalcnn-ndvi")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-calibration-"))
    os.environ["CROPFLOW_WORKDIR"] = str(work)
    os.environ["CROPFLOW_MLFLOW__TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"

    from benchmarks.bench_quality import import_set
    from cropflow.train import TrainParams, train

    load = os.getloadavg()[0]
    started = time.perf_counter()
    lines = [
        "| data set | family | temperature | val ECE before | val ECE after | test ECE before "
        "| test ECE after | test macro F1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in args.sets.split(","):
        uri = import_set(name, work)
        for family in args.families.split(","):
            runs: list[dict[str, Any]] = []
            for seed in range(args.seeds):
                params = TrainParams.model_validate(
                    {
                        "training_set": uri,
                        "model": {"name": family},
                        "seed": seed,
                        "register_model": False,
                    }
                )
                result = train(params)
                runs.append({**result.calibration, "macro_f1": result.test["macro_f1"]})
                print(f"  {name} {family} seed {seed}: {runs[-1]}", flush=True)
            cells = []
            for key in (*KEYS, "macro_f1"):
                v = [float(r[key]) for r in runs]
                cells.append(f"{np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})")
            lines.append(f"| {name} | {family} | " + " | ".join(cells) + " |")
    info = (
        f"Measured on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads); load average "
        f"{load:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
        f"{time.perf_counter() - started:.0f} s in all; mean (min-max) over {args.seeds} seeds."
    )
    text = info + "\n\n" + "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
