"""Tile, patch and blending arithmetic (property tests) and quantisation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cropflow.errors import ConfigError
from cropflow.predict.engine import blend_window, quantise
from cropflow.predict.params import AUTO_TILE, AUTO_TILE_MAX, PredictOptions, PredictParams
from cropflow.predict.tiling import (
    Window,
    auto_tile_side,
    patch_starts,
    patch_stride,
    read_window,
    starts_touching,
    tile_grid,
    tile_side,
)

sizes = st.integers(min_value=1, max_value=200)


@settings(max_examples=150, deadline=None)
@given(height=sizes, width=sizes, tile=st.integers(min_value=8, max_value=128))
def test_tiles_cover_every_pixel_exactly_once(height: int, width: int, tile: int) -> None:
    tiles = tile_grid(height, width, tile)
    cover = np.zeros((height, width), np.int32)
    for t in tiles:
        assert 0 < t.core.height <= tile and 0 < t.core.width <= tile
        cover[t.core.rows, t.core.cols] += 1
    assert (cover == 1).all()
    assert len({t.name for t in tiles}) == len(tiles)
    assert len(tiles) == -(-height // tile) * -(-width // tile)


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(min_value=1, max_value=500),
    patch=st.integers(min_value=1, max_value=64),
    overlap_frac=st.floats(min_value=0, max_value=0.95),
)
def test_patch_starts_cover_the_axis_inside_it(
    length: int, patch: int, overlap_frac: float
) -> None:
    stride = patch_stride(patch, min(patch - 1, int(patch * overlap_frac)))
    starts = patch_starts(length, patch, stride)
    assert starts == sorted(set(starts)) and starts[0] == 0
    covered = np.zeros(max(length, patch), bool)
    for s in starts:
        if length >= patch:
            assert s + patch <= length  # every patch lies inside the axis
        covered[s : s + patch] = True
    assert covered[:length].all()
    assert all(b - a <= stride for a, b in itertools.pairwise(starts))


@settings(max_examples=100, deadline=None)
@given(
    height=st.integers(min_value=1, max_value=120),
    width=st.integers(min_value=1, max_value=120),
    tile=st.integers(min_value=8, max_value=64),
    patch=st.integers(min_value=2, max_value=48),
    overlap=st.integers(min_value=0, max_value=47),
)
def test_read_window_holds_every_patch_touching_the_core(
    height: int, width: int, tile: int, patch: int, overlap: int
) -> None:
    stride = patch_stride(patch, min(overlap, patch - 1))
    rows_all = patch_starts(height, patch, stride)
    cols_all = patch_starts(width, patch, stride)
    for t in tile_grid(height, width, tile):
        rw = read_window(t.core, height, width, patch, stride)
        assert 0 <= rw.row0 <= t.core.row0 and t.core.row1 <= rw.row1 <= height
        assert 0 <= rw.col0 <= t.core.col0 and t.core.col1 <= rw.col1 <= width
        for r in starts_touching(rows_all, patch, t.core.row0, t.core.row1):
            assert rw.row0 <= r and min(r + patch, height) <= rw.row1
        for c in starts_touching(cols_all, patch, t.core.col0, t.core.col1):
            assert rw.col0 <= c and min(c + patch, width) <= rw.col1
        # the read window is not larger than needed: a patch starts at its first row/col
        assert rw.row0 in rows_all and rw.col0 in cols_all


@given(patch=st.integers(min_value=1, max_value=128))
def test_hann_window_is_positive_symmetric_and_peaks_in_the_middle(patch: int) -> None:
    w = blend_window(patch, "hann")
    assert w.shape == (patch, patch)
    assert (w > 0).all()
    np.testing.assert_allclose(w, w[::-1, ::-1], rtol=1e-6)
    np.testing.assert_allclose(w, w.T, rtol=1e-6)
    mid = patch // 2
    assert w[mid, mid] == pytest.approx(w.max())
    assert (blend_window(patch, "uniform") == 1).all()


@settings(max_examples=60, deadline=None)
@given(stride=st.integers(min_value=1, max_value=96), tiles=st.integers(min_value=2, max_value=6))
@example(stride=16, tiles=4).via("the default patch, 32 px")
@example(stride=32, tiles=4).via("64 px patches")
@example(stride=64, tiles=3).via("U-TAE's 128 px patches")
def test_auto_tiles_bound_the_patches_run_twice(stride: int, tiles: int) -> None:
    """The automatic tile side, and the model work it costs: a tile computes every patch
    touching its core (as engine.patch_probs does), so patches across tile borders run twice."""
    side = auto_tile_side(stride)
    assert side in (AUTO_TILE, AUTO_TILE_MAX) and tile_side("auto", stride) == side
    assert side == AUTO_TILE or side // 2 < 16 * stride  # the smallest that spans 16 strides
    assert side >= 16 * stride or side == AUTO_TILE_MAX
    patch = 2 * stride  # the default overlap: half a patch
    length = tiles * side
    starts = patch_starts(length, patch, stride)
    per_axis = sum(
        len(starts_touching(starts, patch, t0, t0 + side)) for t0 in range(0, length, side)
    )
    work = (per_axis / len(starts)) ** 2
    assert work <= (1 + 3 * stride / side) ** 2 + 1e-9  # up to 3 strides more per tile
    if stride <= AUTO_TILE_MAX // 16 and side % stride == 0:  # the aligned, common case
        assert work <= (17 / 16) ** 2 + 1e-9, (stride, side, work)
    assert tile_side(300, stride) == 300
    assert auto_tile_side(0) == AUTO_TILE  # pixel and field models


def test_window_relative_to_outer() -> None:
    outer = Window(10, 50, 20, 60)
    inner = Window(12, 30, 25, 60)
    assert inner.relative_to(outer) == Window(2, 20, 5, 40)


def test_bad_overlap_and_sizes_are_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="overlap 8") as err:
        patch_stride(8, 8)
    assert err.value.hint
    with pytest.raises(ConfigError, match="tile_size=0"):
        tile_grid(10, 10, 0)


def test_quantise_rounds_probabilities_and_masks_invalid_pixels() -> None:
    probs = np.array([[[0.2, 0.5]], [[0.8, 0.5]]], np.float32)  # K=2, 1x2 pixels
    valid = np.array([[True, False]])
    cls, p8, conf = quantise(probs, valid, [3, 9])
    assert cls.tolist() == [[9, 255]]
    assert p8[:, 0, 0].tolist() == [round(0.2 * 255), round(0.8 * 255)]
    assert p8[:, 0, 1].tolist() == [0, 0]
    assert conf.tolist() == [[round(0.8 * 255), 0]]


def test_params_key_and_batch_size_parsing() -> None:
    p = PredictParams(cube="/data/cubes/abc 1.zarr/", batch_size="512")
    assert p.prediction_key() == "abc-1"
    assert p.region_name() == "abc-1"
    assert p.batch_size == 512
    with pytest.raises(ConfigError, match="folder name"):
        PredictParams(cube="x.zarr", key="../evil")
    assert p.tile_size == "auto"
    with pytest.raises(ValueError, match="tile_size"):
        PredictParams(cube="x.zarr", tile_size=8)
    options = PredictOptions(model="challenger", tile_size=64)
    of = PredictParams.of(options, "/c/k1.zarr", region="demo", model_alias="champion")
    assert (of.cube, of.region, of.model, of.tile_size) == ("/c/k1.zarr", "demo", "champion", 64)
    assert PredictParams.of(options, "/c/k1.zarr").model == "challenger"
