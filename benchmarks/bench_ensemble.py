"""Ensembles of seeds against single models (issue 13), side by side in one run: each family
trained with k seeds on the real temporalCNN fixture; the test split scored by every single
model (mean and range) and by their ensemble (:class:`models.ensemble.ModelEnsemble`, the
average of the calibrated probabilities, what ``PredictOptions.ensemble`` maps with).

Run: ``python -m benchmarks.bench_ensemble [--seeds 3] [--families tempcnn,ltae]
[--sets temporalcnn,temporalcnn-ndvi]``; prints a markdown section for ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from benchmarks.common import (
    family_arguments,
    isolated_workdir,
    machine_line,
    publish,
    spread,
    train_family,
)

if TYPE_CHECKING:
    from cropflow.train.data import SplitArrays
    from models.base import CropflowModel

METRICS = ("overall_accuracy", "macro_f1", "kappa")


def _scores(model: CropflowModel, split: SplitArrays) -> dict[str, float]:
    """OA, macro F1, kappa and ECE of ``model`` on a split (pixel series)."""
    from cropflow.train.calibration import expected_calibration_error
    from cropflow.train.data import Normaliser, batch_indices, take
    from cropflow.train.engine import date_kind_of, evaluate_split, to_batch

    ev = evaluate_split(model, split, "test", batch_size=256, device=torch.device("cpu"))
    norm = Normaliser(model.contract.bands, model.contract.normalisation)
    kind = date_kind_of(model)
    probs, ys = [], []
    with torch.no_grad():
        for idx in batch_indices(len(split), 256, None):
            t = take(split, idx, norm)
            logits = model(to_batch(t, kind)).logits.float()
            probs.append(torch.softmax(logits / model.temperature, dim=1).numpy())
            ys.append(t.y.numpy())
    p, y = np.concatenate(probs), np.concatenate(ys)
    keep = y >= 0
    out = {k: float(getattr(ev, k)) for k in METRICS}
    out["ece"] = expected_calibration_error(p[keep], y[keep])
    return out


def main() -> None:
    args = family_arguments(__doc__.splitlines()[0], seeds=3, families="tempcnn,ltae")
    work = isolated_workdir("bench-ensemble-")

    from benchmarks.bench_quality import import_set
    from cropflow.train import load_model
    from cropflow.train.data import load_training_data
    from models.ensemble import ModelEnsemble

    load = os.getloadavg()[0]
    started = time.perf_counter()
    lines = [
        "| data set | family | model | test OA | test macro F1 | test kappa | test ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.sets.split(","):
        uri = import_set(name, work)
        test = load_training_data(uri).split("test")
        for family in args.families.split(","):
            members, single = [], []
            for seed in range(args.seeds):
                result = train_family(uri, family, seed)
                model = load_model(str(result.model_uri)).model
                members.append(model)
                single.append(_scores(model, test))
                print(f"  {name} {family} seed {seed}: {single[-1]}", flush=True)
            ens = _scores(cast("CropflowModel", ModelEnsemble(members).eval()), test)
            print(f"  {name} {family} ensemble: {ens}", flush=True)
            cells = []
            for key in (*METRICS, "ece"):
                v = [s[key] for s in single]
                cells.append(spread(v))
            lines.append(
                f"| {name} | {family} | single (mean, min-max) | " + " | ".join(cells) + " |"
            )
            ens_cells = " | ".join(f"**{ens[k]:.3f}**" for k in (*METRICS, "ece"))
            lines.append(f"| {name} | {family} | ensemble of {args.seeds} | {ens_cells} |")
    info = (
        f"{machine_line(load, started)}; seeds 0..{args.seeds - 1}, defaults otherwise "
        "(calibrated members)."
    )
    publish(info, "\n".join(lines), args.out)


if __name__ == "__main__":
    main()
