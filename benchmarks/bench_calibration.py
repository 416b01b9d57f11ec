"""Calibration of the probability maps (issue 13): expected calibration error (ECE, 15 bins)
of each pixel family on real data before and after the temperature fitted on val, side by side
in one run; the class (and so every accuracy) is the same in both columns.

Data: the real temporalCNN fixture (imported as :mod:`benchmarks.bench_quality` does) and its
one-band NDVI version. Families at their defaults (``{"name": family}``), ``--seeds`` seeds.

Run: ``python -m benchmarks.bench_calibration [--seeds 2] [--families tempcnn,ltae,crop_mask_lstm]
[--sets temporalcnn,temporalcnn-ndvi]``; prints a markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from benchmarks.common import (
    family_arguments,
    isolated_workdir,
    machine_line,
    publish,
    spread,
    train_family,
)

KEYS = ("temperature", "val_ece_uncalibrated", "val_ece", "test_ece_uncalibrated", "test_ece")


def main() -> None:
    args = family_arguments(
        __doc__.splitlines()[0], seeds=2, families="tempcnn,ltae,crop_mask_lstm"
    )
    work = isolated_workdir("bench-calibration-")

    from benchmarks.bench_quality import import_set

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
                result = train_family(uri, family, seed)
                runs.append({**result.calibration, "macro_f1": result.test["macro_f1"]})
                print(f"  {name} {family} seed {seed}: {runs[-1]}", flush=True)
            cells = []
            for key in (*KEYS, "macro_f1"):
                v = [float(r[key]) for r in runs]
                cells.append(spread(v))
            lines.append(f"| {name} | {family} | " + " | ".join(cells) + " |")
    info = f"{machine_line(load, started)}; mean (min-max) over {args.seeds} seeds."
    publish(info, "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
