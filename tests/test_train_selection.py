"""Honest model selection: a paired bootstrap over validation units decides promotions."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cropflow.classes import IGNORE_INDEX
from cropflow.train.metrics import evaluate_labels
from cropflow.train.selection import (
    BLOCK_PX,
    metric_of,
    paired_bootstrap,
    unit_confusions,
    unit_ids,
)

K = 4


def _fields(n_fields: int, per_field: int, seed: int) -> tuple[npt.NDArray[np.int64], ...]:
    """Validation pixels in fields (one class per field) and a champion right on 80 % of the
    fields (a field is mapped right or wrong as a whole, as real maps err)."""
    rng = np.random.default_rng(seed)
    field_class = rng.integers(0, K, n_fields)
    y = np.repeat(field_class, per_field)
    units = np.repeat(np.arange(n_fields), per_field)
    right = rng.random(n_fields) < 0.8
    wrong_class = (field_class + rng.integers(1, K, n_fields)) % K
    champion = np.repeat(np.where(right, field_class, wrong_class), per_field)
    return y.astype(np.int64), units.astype(np.int64), champion.astype(np.int64)


def test_a_challenger_better_only_by_noise_is_not_promoted() -> None:
    """New = champion with one more field right out of 40 (of 2,000 pixels): +2.5 points of
    accuracy on the split, yet within its noise (a resample without that field shows no gain):
    not promoted. Counted by pixel, the same gain would look certain (2,000 'independent'
    samples)."""
    y, units, champion = _fields(40, 50, seed=1)
    new = champion.copy()
    wrong_fields = np.unique(units[champion != y])[:1]
    fix = np.isin(units, wrong_fields)
    new[fix] = y[fix]
    by_field = paired_bootstrap(y, new, champion, units, K, metric="overall_accuracy", unit="field")
    assert by_field.difference == pytest.approx(0.025) and not by_field.promote
    assert 0.4 < by_field.p_better < 0.8 and by_field.ci_low <= 0 < by_field.ci_high
    by_pixel = paired_bootstrap(
        y, new, champion, np.arange(y.size), K, metric="overall_accuracy", unit="sample"
    )
    assert by_pixel.p_better == 1.0, "pixels as units hide the noise"
    assert "not better than champion v3" in by_field.reason("3")


def test_a_clearly_better_challenger_is_promoted() -> None:
    y, units, champion = _fields(40, 50, seed=2)
    new = champion.copy()
    wrong_fields = np.unique(units[champion != y])
    fix = np.isin(units, wrong_fields[: max(1, int(0.8 * wrong_fields.size))])
    new[fix] = y[fix]
    result = paired_bootstrap(y, new, champion, units, K, unit="field")
    assert result.promote and result.p_better >= 0.99 and result.ci_low > 0
    assert result.reason("1").startswith("beats champion v1")


def test_a_better_champion_stays() -> None:
    y, units, champion = _fields(30, 20, seed=3)
    worse = np.where(units % 3 == 0, (y + 1) % K, champion)
    result = paired_bootstrap(y, worse, champion, units, K, unit="field")
    assert result.difference < 0 and not result.promote and result.p_better < 0.1


@pytest.mark.parametrize("metric", ["macro_f1", "overall_accuracy", "kappa"])
def test_metrics_from_error_matrices_equal_the_scores(metric: str) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, 500)
    pred = np.where(rng.random(500) < 0.7, y, rng.integers(0, K, 500))
    y[y == K - 1] = 0  # a class the prediction has but the reference lacks: not averaged
    y[:20] = IGNORE_INDEX  # unlabelled samples are left out of both
    conf = unit_confusions(y, pred, np.zeros(500, np.int64), K).sum(0)
    assert conf[:, K - 1].sum() > 0 and conf[K - 1].sum() == 0
    ev = evaluate_labels(y, pred, [f"c{i}" for i in range(K)], "val")
    assert float(metric_of(conf, metric)) == pytest.approx(getattr(ev, metric))


def test_patch_samples_count_every_labelled_pixel_in_their_unit() -> None:
    y = np.array([[[0, 1], [IGNORE_INDEX, 1]], [[2, 2], [2, 2]]])
    pred = np.array([[[0, 0], [3, 1]], [[2, 2], [1, 2]]])
    conf = unit_confusions(y, pred, np.array([0, 1]), K)
    assert conf.shape == (2, K, K) and conf[0].sum() == 3 and conf[1].sum() == 4
    assert conf[0, 1, 0] == 1 and conf[1, 2, 1] == 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-1, 5), st.integers(-1, 200), st.integers(-1, 200)),
        min_size=1,
        max_size=60,
    )
)
def test_units_group_fields_then_blocks_then_samples(
    rows: list[tuple[int, int, int]],
) -> None:
    fields = np.array([r[0] for r in rows])
    r = np.array([r[1] for r in rows])
    c = np.array([r[2] for r in rows])
    ids, kind = unit_ids(len(rows), fields, r, c)
    assert ids.shape == (len(rows),)
    for i in range(len(rows)):
        for j in range(len(rows)):
            if fields[i] > 0 or fields[j] > 0:
                same = fields[i] > 0 and fields[i] == fields[j]
            elif min(r[i], c[i], r[j], c[j]) >= 0:
                same = (r[i] // BLOCK_PX, c[i] // BLOCK_PX) == (r[j] // BLOCK_PX, c[j] // BLOCK_PX)
            else:
                same = i == j
            assert (ids[i] == ids[j]) == same, (rows[i], rows[j])
    assert kind in ("field", "block", "sample", "mixed")
