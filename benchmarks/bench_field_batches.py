"""Field models' epoch cost (issue 13), side by side in one run: one training epoch (forward,
backward, step) of ``field_bigru`` at its defaults over the demo region's field training set,

- **before**: shuffled batches of whole canvases (every canvas as large as the largest field
  of the set, up to 64 px a side), what training did before;
- **after**: what :func:`cropflow.train.engine.fit` does now: batches of similar-sized fields
  (:func:`~cropflow.train.data.sized_batches`), each cut to its own fields
  (:func:`~cropflow.train.data.field_window`; the output is the same, see
  ``tests/test_field_batches.py``).

Run: ``python -m benchmarks.bench_field_batches [WORKDIR] [--threads N] [--epochs 1]``
(WORKDIR as :mod:`benchmarks.bench_demo_quality`: the demo region, cube and field training set
are built there once and reused). Prints a markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from benchmarks.common import isolated_workdir

if TYPE_CHECKING:
    from cropflow.train.augment import Tensors
    from models.base import CropflowModel


def _epoch(
    model: CropflowModel, batches: list[torch.Tensor], make: Callable[[torch.Tensor], Tensors]
) -> float:
    """Seconds of one training epoch over ``batches``."""
    from cropflow.train.engine import to_batch

    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    started = time.perf_counter()
    for idx in batches:
        t = make(idx)
        loss = model.loss(model(to_batch(t, "day_of_year")), t.y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", nargs="?", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = isolated_workdir("bench-field-", args.workdir)

    from benchmarks.bench_demo_quality import prepare
    from cropflow.train.augment import Tensors
    from cropflow.train.data import (
        Normaliser,
        batch_indices,
        field_extents,
        load_training_data,
        sized_batches,
        take,
    )
    from models.base import build_model
    from models.configs import parse_model_config

    load = os.getloadavg()[0]
    prep = prepare(work, 16, 64, 16, ["field"])
    data = load_training_data(prep["sets"]["field"].uri)
    train = data.split("train")
    fm = train.field_mask
    if fm is None:
        raise SystemExit("the field training set has no field masks")
    norm = Normaliser(data.bands, data.normalisation)
    extents = field_extents(fm)

    def whole(idx: torch.Tensor) -> Tensors:
        i = idx.numpy()
        return Tensors(
            x=norm(torch.from_numpy(np.ascontiguousarray(train.x[i]))),
            y=torch.from_numpy(train.y[i]),
            dates=torch.from_numpy(train.dates[i]),
            pad_mask=torch.from_numpy(train.pad_mask[i]),
            field_mask=torch.from_numpy(np.ascontiguousarray(fm[i])),
        )

    def cut(idx: torch.Tensor) -> Tensors:
        return take(train, idx, norm)

    rows = []
    for label, make, batches in (
        ("before: shuffled, whole canvases", whole, "plain"),
        ("after: similar sizes, cut to the fields", cut, "sized"),
    ):
        torch.manual_seed(0)
        model = build_model(parse_model_config({"name": "field_bigru"}), data.contract())
        gen = torch.Generator().manual_seed(0)
        it = (
            batch_indices(len(train), args.batch_size, gen)
            if batches == "plain"
            else sized_batches(extents, args.batch_size, gen)
        )
        idx_list = list(it)
        side = float(np.mean([make(b).x.shape[-1] for b in idx_list]))
        seconds = _epoch(model, idx_list, make)
        rows.append((label, seconds, len(idx_list), side))
        print(f"  {label}: {seconds:.1f} s, {len(idx_list)} batches, canvas side {side:.1f}")
    ratio = rows[0][1] / rows[1][1]
    lines = [
        f"Measured on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"(torch {torch.__version__}, {args.threads} threads); load average {load:.1f} at "
        f"start, {os.getloadavg()[0]:.1f} at end. Demo field training set: {len(train)} train "
        f"fields, {data.n_time} steps x {len(data.bands)} bands, canvas {fm.shape[-1]} px; "
        f"field extents (px) median {np.median(extents):.0f}, 90th percentile "
        f"{np.percentile(extents, 90):.0f}, max {extents.max()}; batch {args.batch_size}.",
        "",
        "| epoch of field_bigru (defaults) | seconds | batches | mean canvas side (px) |",
        "|---|---|---|---|",
        *[f"| {label} | {s:.1f} | {n} | {side:.1f} |" for label, s, n, side in rows],
        f"| **speed-up** | **{ratio:.1f}x** | | |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
