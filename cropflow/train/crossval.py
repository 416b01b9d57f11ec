"""Spatial k-fold cross-validation: the mean and spread of every score, not one split's luck.

The train and val splits of a training set are pooled and cut into ``folds`` folds of whole
validation units (fields, else 32-px spatial blocks: :mod:`cropflow.train.selection`), so
that no field or block is on both sides. Units are dealt largest first to the fold with the
fewest samples (folds of near-equal size), in a seeded random order. Fold ``i`` is tested on
fold ``i``, early-stopped on fold ``i + 1`` and trained on the others: the score of a fold
never saw its test fold, not even for model selection. The training set's own test split is
left alone (it stays the final, untouched check).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from cropflow.errors import TrainingError
from cropflow.train.data import SplitArrays, TrainingData, load_training_data
from cropflow.train.params import CrossValParams, TrainParams
from cropflow.train.selection import unit_ids

#: Scores summarised over the folds.
SCORES = ("overall_accuracy", "macro_f1", "kappa", "mean_iou")


class FoldScore(BaseModel):
    fold: int
    n_train: int
    n_val: int
    n_test: int
    run_id: str
    scores: dict[str, float]


class CrossValResult(BaseModel):
    """Per-fold scores and their mean and standard deviation."""

    training_set: str
    family: str
    folds: list[FoldScore]
    unit: str = Field(description="What was kept whole in a fold: field, block, sample, mixed.")
    mean: dict[str, float]
    std: dict[str, float]

    def to_markdown(self) -> str:
        lines = [
            f"# {len(self.folds)}-fold spatial cross-validation of {self.family}",
            "",
            f"Training set `{self.training_set}`, folds of whole {self.unit}s (train + val "
            "pooled; the test split left alone).",
            "",
            "| fold | train | val | test | " + " | ".join(SCORES) + " |",
            "|---|---:|---:|---:|" + "---:|" * len(SCORES),
        ]
        for f in self.folds:
            cells = " | ".join(f"{f.scores.get(s, math.nan):.3f}" for s in SCORES)
            lines.append(f"| {f.fold} | {f.n_train} | {f.n_val} | {f.n_test} | {cells} |")
        cells = " | ".join(f"**{self.mean[s]:.3f} ± {self.std[s]:.3f}**" for s in SCORES)
        lines.append(f"| mean ± sd | | | | {cells} |")
        return "\n".join(lines) + "\n"


def assign_folds(units: npt.NDArray[np.int64], folds: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """A fold per sample such that every unit is in one fold, folds of near-equal size."""
    ids, sizes = np.unique(units, return_counts=True)
    if ids.size < folds:
        raise TrainingError(
            f"{ids.size} validation units (fields or blocks) cannot make {folds} folds",
            hint=f"use at most {ids.size} folds, or a training set with more fields",
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(ids.size)
    order = order[np.argsort(-sizes[order], kind="stable")]  # largest first, ties random
    load = np.zeros(folds, np.int64)
    fold_of_unit = np.empty(ids.size, np.int64)
    for u in order:
        f = int(np.argmin(load))
        fold_of_unit[u] = f
        load[f] += sizes[u]
    index = np.searchsorted(ids, units)
    return fold_of_unit[index]


def _concat(splits: Sequence[SplitArrays]) -> SplitArrays:
    def cat(name: str) -> npt.NDArray[np.generic] | None:
        parts = [getattr(s, name) for s in splits]
        return None if any(p is None for p in parts) else np.concatenate(parts)

    keys, offset = [], 0
    for s in splits:  # a split without units: its samples, numbered apart from the others
        index = np.arange(offset, offset + len(s), dtype=np.int64)
        keys.append(s.units if s.units is not None else unit_ids(len(s), index=index)[0])
        offset += len(s)
    kinds = {s.unit_kind for s in splits}
    return SplitArrays(
        x=np.concatenate([s.x for s in splits]),
        y=np.concatenate([s.y for s in splits]),
        dates=np.concatenate([s.dates for s in splits]),
        pad_mask=np.concatenate([s.pad_mask for s in splits]),
        field_mask=cat("field_mask"),  # type: ignore[arg-type]
        units=np.concatenate(keys),
        unit_kind=kinds.pop() if len(kinds) == 1 else "mixed",
    )


def _take(split: SplitArrays, mask: npt.NDArray[np.bool_]) -> SplitArrays:
    return SplitArrays(
        x=split.x[mask],
        y=split.y[mask],
        dates=split.dates[mask],
        pad_mask=split.pad_mask[mask],
        field_mask=None if split.field_mask is None else split.field_mask[mask],
        units=None if split.units is None else split.units[mask],
        unit_kind=split.unit_kind,
    )


def fold_data(data: TrainingData, folds: int, seed: int = 0) -> list[TrainingData]:
    """The ``folds`` training sets of a cross-validation (see the module docstring)."""
    pool = _concat([data.split("train"), data.split("val")])
    units = pool.units if pool.units is not None else unit_ids(len(pool))[0]
    fold = assign_folds(units, folds, seed)
    out = []
    for i in range(folds):
        test, val = fold == i, fold == (i + 1) % folds
        splits = {
            "train": _take(pool, ~test & ~val),
            "val": _take(pool, val),
            "test": _take(pool, test),
        }
        out.append(replace(data, uri=f"{data.uri}#cv-{i + 1}-of-{folds}", splits=splits))
    return out


def cross_validate(params: CrossValParams, data: TrainingData | None = None) -> CrossValResult:
    """Train and score one model per fold; each fold is an MLflow run of its own."""
    from cropflow.train.training import train

    data = data if data is not None else load_training_data(params.training_set)
    runs: list[FoldScore] = []
    options = params.model_dump(exclude={"folds", "fold_seed"})
    sets = fold_data(data, params.folds, params.fold_seed)
    for i, fold in enumerate(sets, start=1):
        fold_params = TrainParams.model_validate(
            {
                **options,
                "training_set": fold.uri,
                "register_model": False,
                "run_name": f"{params.run_name or params.model.name} cv {i}/{params.folds}",
            }
        )
        result = train(fold_params, data=fold)
        runs.append(
            FoldScore(
                fold=i,
                n_train=len(fold.splits["train"]),
                n_val=len(fold.splits["val"]),
                n_test=len(fold.splits["test"]),
                run_id=result.run_id,
                scores={k: v for k, v in result.test.items() if k in SCORES},
            )
        )
    table = {s: [r.scores[s] for r in runs if s in r.scores] for s in SCORES}
    return CrossValResult(
        training_set=data.uri,
        family=params.model.name,
        folds=runs,
        unit=sets[0].splits["test"].unit_kind,
        mean={s: float(np.mean(v)) for s, v in table.items()},
        std={s: float(np.std(v, ddof=1)) for s, v in table.items()},
    )
