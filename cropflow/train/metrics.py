"""Classification metrics from a confusion matrix, with classes by name.

Averages (macro F1, mean IoU) run over the **classes present in the reference** (the
truth of the split scored), as scikit-learn's ``f1_score(..., labels=<classes in y_true>)``.
A class that is only predicted has no reference to score (its recall is undefined): its false
positives already count as omissions of the true classes, and its row of the per-class table
shows its precision (0). Scikit-learn's default also averages such a class, as an F1 of 0:
one stray pixel of a class that a spatial split happens to lack then moves macro F1 by 1/K,
which made early stopping keep worse epochs (the demo's U-Net: a val split without water,
test macro F1 0.833 for the kept epoch against 0.935 four epochs later; see
``benchmarks/RESULTS.md``). A ratio whose denominator is zero counts as 0. Pixels labelled
``ignore_index`` are left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from cropflow.classes import IGNORE_INDEX
from cropflow.storage import atomic_file


class ClassScores(BaseModel):
    """Scores of one class."""

    name: str
    precision: float
    recall: float
    f1: float
    iou: float
    support: int = Field(description="Number of true samples (pixels) of this class.")


class Evaluation(BaseModel):
    """Every score of one evaluation, classes by name (also the row/column order of
    ``confusion``: rows are the truth, columns the prediction)."""

    split: str
    n_samples: int
    overall_accuracy: float
    macro_f1: float
    weighted_f1: float
    mean_iou: float
    kappa: float
    per_class: list[ClassScores]
    class_names: list[str]
    confusion: list[list[int]]

    def summary(self, prefix: str = "") -> dict[str, float]:
        """The scalar scores as a flat dict (MLflow metric names)."""
        return {
            f"{prefix}overall_accuracy": self.overall_accuracy,
            f"{prefix}macro_f1": self.macro_f1,
            f"{prefix}weighted_f1": self.weighted_f1,
            f"{prefix}mean_iou": self.mean_iou,
            f"{prefix}kappa": self.kappa,
        }


def confusion_matrix(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    n_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> npt.NDArray[np.int64]:
    """``[K, K]`` counts, rows = truth, columns = prediction, over output indices ``0..K-1``."""
    t = np.asarray(y_true).ravel().astype(np.int64)
    p = np.asarray(y_pred).ravel().astype(np.int64)
    if t.shape != p.shape:
        raise ValueError(f"truth has {t.size} values, prediction {p.size}")
    keep = t != ignore_index
    t, p = t[keep], p[keep]
    if t.size and (t.min() < 0 or t.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"labels outside 0..{n_classes - 1} (other than {ignore_index})")
    flat = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _ratio(num: npt.NDArray[np.float64], den: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def evaluate_confusion(
    cm: npt.NDArray[np.int64], class_names: Sequence[str], split: str
) -> Evaluation:
    """All scores from a confusion matrix whose rows/columns follow ``class_names``."""
    cm = np.asarray(cm, dtype=np.int64)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix {cm.shape} does not match {k} class names")
    c = cm.astype(np.float64)
    n = float(c.sum())
    tp = np.diag(c)
    support = c.sum(axis=1)
    predicted = c.sum(axis=0)
    fp = predicted - tp
    fn = support - tp
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    iou = _ratio(tp, tp + fp + fn)
    present = support > 0  # the reference's classes (module docstring)
    macro_f1 = float(f1[present].mean()) if present.any() else 0.0
    mean_iou = float(iou[present].mean()) if present.any() else 0.0
    weighted_f1 = float((f1 * support).sum() / n) if n else 0.0
    oa = float(tp.sum() / n) if n else 0.0
    pe = float((support * predicted).sum() / (n * n)) if n else 0.0
    kappa = (oa - pe) / (1.0 - pe) if pe < 1.0 else 0.0
    per_class = [
        ClassScores(
            name=name,
            precision=float(precision[i]),
            recall=float(recall[i]),
            f1=float(f1[i]),
            iou=float(iou[i]),
            support=int(support[i]),
        )
        for i, name in enumerate(class_names)
    ]
    return Evaluation(
        split=split,
        n_samples=int(n),
        overall_accuracy=oa,
        macro_f1=macro_f1,
        weighted_f1=weighted_f1,
        mean_iou=mean_iou,
        kappa=float(kappa),
        per_class=per_class,
        class_names=list(class_names),
        confusion=cm.tolist(),
    )


def evaluate_labels(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    class_names: Sequence[str],
    split: str,
    ignore_index: int = IGNORE_INDEX,
) -> Evaluation:
    """All scores for output-index labels (``ignore_index`` left out)."""
    cm = confusion_matrix(y_true, y_pred, len(class_names), ignore_index)
    return evaluate_confusion(cm, class_names, split)


def write_evaluation(ev: Evaluation, directory: Path) -> list[Path]:
    """Write ``metrics.json``, ``per_class.csv``, ``confusion_matrix.csv`` and
    ``confusion_matrix.png`` (named by split) into ``directory``; return the paths."""
    import pandas as pd

    directory.mkdir(parents=True, exist_ok=True)
    stem = ev.split
    paths: list[Path] = []

    metrics_path = directory / f"{stem}_metrics.json"
    metrics_path.write_text(json.dumps(ev.model_dump(), indent=1))
    paths.append(metrics_path)

    per_class = pd.DataFrame([c.model_dump() for c in ev.per_class]).rename(
        columns={"name": "class"}
    )
    per_class_path = directory / f"{stem}_per_class.csv"
    per_class.to_csv(per_class_path, index=False, float_format="%.6f")
    paths.append(per_class_path)

    cm = pd.DataFrame(
        ev.confusion,
        index=pd.Index(ev.class_names, name="true \\ predicted"),
        columns=ev.class_names,
    )
    cm_path = directory / f"{stem}_confusion_matrix.csv"
    cm.to_csv(cm_path)
    paths.append(cm_path)

    png_path = directory / f"{stem}_confusion_matrix.png"
    plot_confusion(ev, png_path)
    paths.append(png_path)
    return paths


def plot_confusion(ev: Evaluation, path: Path) -> None:
    """Row-normalised confusion matrix with counts, classes by name (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(ev.confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(ev.class_names)
    size = max(4.0, 0.55 * k + 2.0)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    try:
        ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(k), ev.class_names, rotation=60, ha="right")
        ax.set_yticks(range(k), ev.class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{ev.split}: OA {ev.overall_accuracy:.3f}, macro F1 {ev.macro_f1:.3f}")
        if k <= 25:
            for i in range(k):
                for j in range(k):
                    if cm[i, j]:
                        colour = "white" if frac[i, j] > 0.5 else "black"
                        ax.text(
                            j,
                            i,
                            f"{int(cm[i, j])}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color=colour,
                        )
        fig.tight_layout()
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
