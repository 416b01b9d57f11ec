"""The compositing kernel against numpy references (hypothesis property tests)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.ndimage import binary_dilation

from cropflow.cube.composite import (
    batcher_network,
    dilate,
    fill_linear,
    masked_median,
    network_sort,
    pruned_network,
)
from cropflow.cube.indices import INDICES, compute_index


@pytest.mark.parametrize("n", range(1, 13))
def test_batcher_network_sorts_every_zero_one_input(n: int) -> None:
    # 0-1 principle: a comparator network sorts everything iff it sorts all 0/1 inputs
    inputs = np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.uint8).T
    rows = [r.copy() for r in inputs]
    out = network_sort(rows)
    assert (np.stack(out) == np.sort(inputs, axis=0)).all()
    assert len(batcher_network(n)) <= n * n


@given(n=st.integers(2, 40), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None)
def test_pruned_network_gets_the_middle_right(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 50, size=(n, 17)).astype(np.uint16)
    m = (n - 1) // 2
    wanted = frozenset((m, m + 1))
    out = network_sort([r.copy() for r in data], wanted)
    ref = np.sort(data, axis=0)
    assert (out[m] == ref[m]).all() and (out[m + 1] == ref[m + 1]).all()
    assert len(pruned_network(n, wanted)) <= len(batcher_network(n))


@given(
    n=st.integers(1, 24),
    seed=st.integers(0, 2**32 - 1),
    p_valid=st.floats(0.0, 1.0),
    dtype=st.sampled_from([np.uint16, np.uint8, np.float32]),
    scale=st.sampled_from([1.0, 1e-4, 2.5]),
    offset=st.sampled_from([0.0, -0.1, 3.0]),
)
@settings(max_examples=80, deadline=None)
def test_masked_median_equals_nanmedian(
    n: int, seed: int, p_valid: float, dtype: type, scale: float, offset: float
) -> None:
    rng = np.random.default_rng(seed)
    hi = 250 if dtype is np.uint8 else 60000
    layers: list[np.ndarray] = [rng.integers(1, hi, size=(9, 11)).astype(dtype) for _ in range(n)]
    valid = rng.random((n, 9, 11)) < p_valid
    values, count = masked_median(layers, valid, scale, offset)
    stack = np.stack(layers).astype(np.float64)
    stack[~valid] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = np.nanmedian(stack, axis=0) * scale + offset
    assert values.dtype == np.float32
    assert (count == valid.sum(axis=0)).all()
    assert (np.isnan(values) == (count == 0)).all()
    np.testing.assert_allclose(values, ref, rtol=2e-7, atol=1e-6 * max(1.0, abs(offset)))


def test_masked_median_ignores_values_under_the_mask() -> None:
    # masked observations may hold anything (even the dtype's extremes): never in the result
    layers = [
        np.array([[0, 65535, 7]], np.uint16),
        np.array([[65535, 0, 9]], np.uint16),
        np.array([[5, 5, 65535]], np.uint16),
    ]
    valid = np.array([[[False, False, True]], [[False, False, True]], [[True, True, False]]])
    values, count = masked_median(layers, valid)
    assert values.tolist() == [[5.0, 5.0, 8.0]] and count.tolist() == [[1, 1, 2]]


@given(
    p=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
    holes=st.floats(0.0, 0.9),
)
@settings(max_examples=50, deadline=None)
def test_fill_linear_recovers_a_line_and_flags_fills(p: int, seed: int, holes: float) -> None:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.integers(1, 40, size=p)).astype(np.float64)
    a = rng.normal(size=(6, 7)).astype(np.float32)
    b = rng.normal(size=(6, 7)).astype(np.float32)
    truth = (a[None] + b[None] * t[:, None, None] / 100).astype(np.float32)
    has = rng.random((p, 6, 7)) > holes
    v = np.where(has, truth, np.nan).astype(np.float32)
    filled = fill_linear([v], has, t)
    steps = np.arange(p)[:, None, None]
    first = np.where(has.any(0), np.argmax(has, axis=0), p)
    last = np.where(has.any(0), p - 1 - np.argmax(has[::-1], axis=0), -1)
    inside = (steps >= first) & (steps <= last)
    assert (filled == (~has & has.any(0)[None])).all()
    np.testing.assert_allclose(v[inside], truth[inside], rtol=1e-4, atol=1e-4)
    # before the first / after the last composite: the nearest one
    before = (steps < first) & has.any(0)
    after = (steps > last) & has.any(0)
    np.testing.assert_array_equal(
        v[before], np.broadcast_to(np.take_along_axis(truth, first[None] % p, 0), v.shape)[before]
    )
    np.testing.assert_array_equal(
        v[after], np.broadcast_to(np.take_along_axis(truth, last[None] % p, 0), v.shape)[after]
    )
    assert np.isnan(v[:, ~has.any(0)]).all()


@given(
    mask=hnp.arrays(bool, st.tuples(st.integers(1, 3), st.integers(1, 20), st.integers(1, 20))),
    px=st.integers(0, 4),
)
def test_dilate_is_a_square_binary_dilation(mask: np.ndarray, px: int) -> None:
    ref = mask
    if px:
        structure = np.zeros((1, 2 * px + 1, 2 * px + 1), dtype=bool)
        structure[0] = True
        ref = binary_dilation(mask, structure=structure)
    assert (dilate(mask, px) == ref).all()


def test_indices_by_name() -> None:
    bands = {
        b: np.array([[v]], np.float32)
        for b, v in {"nir": 0.5, "red": 0.1, "green": 0.2, "blue": 0.05, "swir16": 0.3}.items()
    }
    assert compute_index("ndvi", bands)[0, 0] == pytest.approx(0.4 / 0.6)
    assert compute_index("ndwi", bands)[0, 0] == pytest.approx(-0.3 / 0.7)
    assert compute_index("ndmi", bands)[0, 0] == pytest.approx(0.2 / 0.8)
    evi = 2.5 * 0.4 / (0.5 + 0.6 - 0.375 + 1.0)
    assert compute_index("evi", bands)[0, 0] == pytest.approx(evi, rel=1e-6)
    zero = {"nir": np.zeros((1, 1), np.float32), "red": np.zeros((1, 1), np.float32)}
    assert np.isnan(compute_index("ndvi", zero)).all()
    assert set(INDICES) >= {"ndvi", "ndwi", "ndmi", "nbr", "evi"}
