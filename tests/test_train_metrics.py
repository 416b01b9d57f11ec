"""Evaluation metrics against scikit-learn, and the evaluation artifacts (classes by name)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    f1_score,
    jaccard_score,
    precision_recall_fscore_support,
)
from sklearn.metrics import confusion_matrix as sk_confusion

from cropflow.classes import IGNORE_INDEX
from cropflow.train.metrics import confusion_matrix, evaluate_labels, write_evaluation

NAMES = ["wheat", "barley", "maize", "forest", "water"]


def _check_against_sklearn(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> None:
    ev = evaluate_labels(y_true, y_pred, NAMES[:k], "test")
    labels = list(range(k))
    assert ev.overall_accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    kappa = cohen_kappa_score(y_true, y_pred)
    # kappa is undefined when chance agreement is 1 (one class everywhere): 0 by convention
    assert ev.kappa == pytest.approx(0.0 if np.isnan(kappa) else kappa)
    reference = np.unique(y_true)  # averages run over the classes of the reference
    assert ev.macro_f1 == pytest.approx(
        f1_score(y_true, y_pred, labels=reference, average="macro", zero_division=0)
    )
    assert ev.weighted_f1 == pytest.approx(
        f1_score(y_true, y_pred, average="weighted", zero_division=0)
    )
    assert ev.mean_iou == pytest.approx(
        jaccard_score(y_true, y_pred, labels=reference, average="macro", zero_division=0)
    )
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    iou = jaccard_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    for i, c in enumerate(ev.per_class):
        assert c.name == NAMES[i]
        assert (c.precision, c.recall, c.f1, c.iou) == pytest.approx((p[i], r[i], f[i], iou[i]))
        assert c.support == s[i]
    np.testing.assert_array_equal(ev.confusion, sk_confusion(y_true, y_pred, labels=labels))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn_on_random_labels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, 400)
    # a better-than-chance prediction: right 60% of the time
    y_pred = np.where(rng.random(400) < 0.6, y_true, rng.integers(0, 5, 400))
    _check_against_sklearn(y_true, y_pred, 5)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=2, max_value=5).flatmap(
        lambda k: st.tuples(
            st.just(k),
            st.lists(
                st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), min_size=1, max_size=60
            ),
        )
    )
)
def test_metrics_match_sklearn_property(case: tuple[int, list[tuple[int, int]]]) -> None:
    """Any labels, including classes missing from the truth or the prediction."""
    k, pairs = case
    y_true = np.array([a for a, _ in pairs])
    y_pred = np.array([b for _, b in pairs])
    _check_against_sklearn(y_true, y_pred, k)


def test_a_class_only_predicted_is_not_averaged_but_costs_the_true_class() -> None:
    """A split without water: one pixel called water lowers wheat's recall, not the mean by
    a whole class (scikit-learn's default would average water's F1 of 0: 1/3 lower here)."""
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    right = y_true.copy()
    stray = right.copy()
    stray[0] = 2  # water, absent from the reference
    names = ["wheat", "barley", "water"]
    perfect = evaluate_labels(y_true, right, names, "val")
    ev = evaluate_labels(y_true, stray, names, "val")
    assert perfect.macro_f1 == pytest.approx(1.0)
    wheat_f1 = 2 * 3 / (2 * 3 + 0 + 1)  # 3 TP, 1 FN
    assert ev.macro_f1 == pytest.approx((wheat_f1 + 1.0) / 2)
    assert ev.mean_iou == pytest.approx((3 / 4 + 1.0) / 2)
    assert f1_score(y_true, stray, average="macro", zero_division=0) == pytest.approx(
        (wheat_f1 + 1.0) / 3
    )
    water = ev.per_class[2]
    assert (water.support, water.precision, water.f1) == (0, 0.0, 0.0)


def test_ignore_index_is_left_out() -> None:
    y_true = np.array([[0, 1, IGNORE_INDEX], [2, IGNORE_INDEX, 1]])
    y_pred = np.array([[0, 2, 1], [2, 0, 1]])
    cm = confusion_matrix(y_true, y_pred, 3)
    assert cm.sum() == 4
    ev = evaluate_labels(y_true, y_pred, NAMES[:3], "val")
    assert ev.n_samples == 4
    assert ev.overall_accuracy == pytest.approx(3 / 4)


def test_evaluation_artifacts_name_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, 120)
    y_pred = np.where(rng.random(120) < 0.7, y_true, rng.integers(0, 4, 120))
    ev = evaluate_labels(y_true, y_pred, NAMES[:4], "test")
    paths = write_evaluation(ev, tmp_path)
    assert {p.name for p in paths} == {
        "test_metrics.json",
        "test_per_class.csv",
        "test_confusion_matrix.csv",
        "test_confusion_matrix.png",
    }
    per_class = pd.read_csv(tmp_path / "test_per_class.csv")
    assert list(per_class["class"]) == NAMES[:4]
    cm = pd.read_csv(tmp_path / "test_confusion_matrix.csv", index_col=0)
    assert list(cm.index) == NAMES[:4] and list(cm.columns) == NAMES[:4]
    np.testing.assert_array_equal(cm.to_numpy(), sk_confusion(y_true, y_pred))
    assert (tmp_path / "test_confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "test_metrics.json").read_text())["class_names"] == NAMES[:4]
