"""Honest model selection: is a new model better than the champion, or only luckier?

Both models are scored on the same validation split. The difference of the metric is
resampled by a **paired bootstrap over validation units** (Efron and Tibshirani 1993): a unit
is a field where samples carry one, else a spatial block of ``BLOCK_PX`` pixels, else the
sample itself; pixels of one field or block are correlated, so resampling pixels would
understate the noise. Each resample draws units with replacement, sums both models' error
matrices over the drawn units, and computes the metric from the sums. The new model is
promoted when it is better in at least ``confidence`` of the resamples (and on the whole
split); the reason, the interval and the share are recorded with the registry decision.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from cropflow.classes import IGNORE_INDEX

#: Side of the spatial blocks (pixels) that group samples without a field into units.
BLOCK_PX = 32
#: Metrics the comparison can compute from error matrices; others fall back to macro F1.
METRICS = ("macro_f1", "overall_accuracy", "kappa")


class Comparison(BaseModel):
    """A new model against the champion on one validation split."""

    metric: str
    new: float = Field(description="The new model's metric on the whole split.")
    champion: float = Field(description="The champion's metric on the same split.")
    difference: float = Field(description="new - champion.")
    ci_low: float = Field(description="Lower bound of the difference's bootstrap interval.")
    ci_high: float = Field(description="Upper bound of the difference's bootstrap interval.")
    p_better: float = Field(description="Share of resamples in which the new model is better.")
    confidence: float = Field(description="Share required to promote.")
    n_units: int
    unit: str = Field(description="What a unit is: field, block, sample or mixed.")
    n_bootstrap: int
    promote: bool

    def reason(self, champion_version: str) -> str:
        """One line for the registry: the figures and the decision."""
        level = f"{100 * self.confidence:.0f} %"
        figures = (
            f"{self.metric} {self.new:.4f} vs {self.champion:.4f} (champion v{champion_version}), "
            f"difference {self.difference:+.4f}, {level} interval [{self.ci_low:+.4f}, "
            f"{self.ci_high:+.4f}]; better in {100 * self.p_better:.1f} % of "
            f"{self.n_bootstrap} paired resamples of {self.n_units} val {self.unit}s"
        )
        if self.promote:
            return f"beats champion v{champion_version}: {figures}"
        return f"not better than champion v{champion_version} with {level} confidence: {figures}"


def unit_ids(
    n: int,
    fields: npt.NDArray[np.int64] | None = None,
    rows: npt.NDArray[np.int64] | None = None,
    cols: npt.NDArray[np.int64] | None = None,
    index: npt.NDArray[np.int64] | None = None,
) -> tuple[npt.NDArray[np.int64], str]:
    """A unit key per sample and what the units are.

    A sample's unit is its field (``fields`` > 0), else its ``BLOCK_PX`` block (``rows``,
    ``cols`` >= 0), else itself (``index``: the sample's position in the whole training set,
    default 0..n-1). Keys are the same for the same field or block in any split."""
    keys = (1 << 50) + (np.arange(n, dtype=np.int64) if index is None else np.asarray(index))
    kind = np.full(n, 2)
    if rows is not None and cols is not None:
        r, c = np.asarray(rows), np.asarray(cols)
        placed = (r >= 0) & (c >= 0)
        block = (1 << 40) + (r // BLOCK_PX) * (1 << 20) + c // BLOCK_PX
        keys, kind = np.where(placed, block, keys), np.where(placed, 1, kind)
    if fields is not None:
        in_field = np.asarray(fields) > 0
        keys, kind = np.where(in_field, np.asarray(fields), keys), np.where(in_field, 0, kind)
    names = {0: "field", 1: "block", 2: "sample"}
    present = sorted({int(k) for k in np.unique(kind)})
    return keys.astype(np.int64).reshape(-1), names[present[0]] if len(present) == 1 else "mixed"


def unit_confusions(
    y: npt.NDArray[np.int64], pred: npt.NDArray[np.int64], units: npt.NDArray[np.int64], k: int
) -> npt.NDArray[np.float64]:
    """Error matrix per unit ``[U, K, K]`` (rows: truth, columns: prediction); unlabelled
    samples (``IGNORE_INDEX``) are left out. ``y``/``pred`` may be ``[N]`` or ``[N, ...]``
    (patches: every pixel of a sample belongs to its unit)."""
    n = y.shape[0]
    per_sample = int(np.prod(y.shape[1:])) if y.ndim > 1 else 1
    yy, pp = y.reshape(-1), pred.reshape(-1)
    uu = np.repeat(units, per_sample)
    ok = yy != IGNORE_INDEX
    n_units = int(units.max()) + 1 if n else 0
    flat = (uu[ok] * k + yy[ok]) * k + pp[ok]
    counts = np.bincount(flat, minlength=n_units * k * k)
    return counts.reshape(n_units, k, k).astype(np.float64)


def metric_of(conf: npt.NDArray[np.float64], metric: str) -> npt.NDArray[np.float64]:
    """``metric`` of error matrices ``[..., K, K]``; macro F1 averages the classes in each
    matrix's truth (the reference's classes, as
    :func:`cropflow.train.metrics.evaluate_confusion`)."""
    total = conf.sum(axis=(-1, -2))
    diag = np.diagonal(conf, axis1=-2, axis2=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "overall_accuracy":
            return np.asarray(diag.sum(-1) / total, np.float64)
        if metric == "kappa":
            expected = (conf.sum(-1) * conf.sum(-2)).sum(-1) / total**2
            observed = diag.sum(-1) / total
            return np.asarray((observed - expected) / (1 - expected), np.float64)
        denom = conf.sum(-1) + conf.sum(-2)  # 2TP + FP + FN
        f1 = np.where(conf.sum(-1) > 0, 2 * diag / denom, np.nan)
        return np.asarray(np.nanmean(f1, axis=-1), np.float64)


def paired_bootstrap(
    y: npt.NDArray[np.int64],
    pred_new: npt.NDArray[np.int64],
    pred_champion: npt.NDArray[np.int64],
    units: npt.NDArray[np.int64],
    n_classes: int,
    *,
    metric: str = "macro_f1",
    unit: str = "sample",
    n_bootstrap: int = 1000,
    confidence: float = 0.9,
    seed: int = 0,
) -> Comparison:
    """Compare two models' predictions of the same samples (see the module docstring)."""
    metric = metric if metric in METRICS else "macro_f1"
    units = np.unique(units, return_inverse=True)[1].reshape(-1)  # keys -> 0..U-1
    new = unit_confusions(y, pred_new, units, n_classes)
    old = unit_confusions(y, pred_champion, units, n_classes)
    n_units = new.shape[0]
    whole_new = float(metric_of(new.sum(0), metric))
    whole_old = float(metric_of(old.sum(0), metric))
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_bootstrap)
    flat_new, flat_old = new.reshape(n_units, -1), old.reshape(n_units, -1)
    step = max(1, 2_000_000 // max(1, n_units * n_classes * n_classes))
    for start in range(0, n_bootstrap, step):
        b = min(step, n_bootstrap - start)
        weights = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=b)
        shape = (b, n_classes, n_classes)
        resampled_new = (weights @ flat_new).reshape(shape)
        resampled_old = (weights @ flat_old).reshape(shape)
        diffs[start : start + b] = metric_of(resampled_new, metric) - metric_of(
            resampled_old, metric
        )
    diffs = diffs[np.isfinite(diffs)]
    tail = (1 - confidence) / 2
    low, high = (
        (float(v) for v in np.quantile(diffs, [tail, 1 - tail]))
        if diffs.size
        else (
            float("nan"),
            float("nan"),
        )
    )
    p_better = float((diffs > 0).mean()) if diffs.size else 0.0
    return Comparison(
        metric=metric,
        new=whole_new,
        champion=whole_old,
        difference=whole_new - whole_old,
        ci_low=low,
        ci_high=high,
        p_better=p_better,
        confidence=confidence,
        n_units=n_units,
        unit=unit,
        n_bootstrap=n_bootstrap,
        promote=whole_new > whole_old and p_better >= confidence,
    )
