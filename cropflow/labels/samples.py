"""Samples from a cube and label rasters: pixel time series, patches, per-field pixel sets.

The cube is read window by window (about ``READ_BUDGET_BYTES`` at a time) and samples are
written to the training set as they are cut, so memory does not grow with the cube. Only
labelled pixels of a split are sampled; a patch is kept when it has enough labelled pixels and
all its pixels are in one split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from numpy.lib.stride_tricks import sliding_window_view
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, Field
from pyproj import CRS, Transformer

from cropflow.classes import IGNORE_INDEX, ClassMap
from cropflow.errors import LabelError
from cropflow.labels.grid import grid_crs_wkt, pixel_centres
from cropflow.labels.options import (
    NO_SPLIT,
    SPLIT_NAMES,
    SampleOptions,
)
from cropflow.labels.stats import class_weights
from cropflow.labels.store import TrainingSetWriter, base_coords
from cropflow.labels.summary import class_warnings

#: Bytes of cube values read at once (all bands and dates of one window).
READ_BUDGET_BYTES = 64 * 2**20


@dataclass
class GridLabels:
    """Labels on the cube grid: class, field and split rasters and the field table."""

    label: np.ndarray  # (y, x) uint8, IGNORE_INDEX where unlabelled
    field: np.ndarray  # (y, x) int32, 0 = no field
    split: np.ndarray  # (y, x) uint8 split code, NO_SPLIT where none
    fields: pd.DataFrame  # field, source_id, class_id
    boundary_id: int | None = None


class SampleCounts(BaseModel):
    """How many samples went where."""

    unit: str = Field(description="What is counted: pixels (labelled) or fields.")
    n_samples: dict[str, int] = Field(description="Samples (pixels, patches, fields) per split.")
    class_counts: dict[str, dict[str, int]] = Field(description="split -> class -> count.")
    n_patches_dropped_crossing: int = Field(
        0, description="Patches with labels dropped because they straddle two splits."
    )


def read_window(ds: xr.Dataset, bands: list[str], r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    """Cube values (time, band, y, x) of a pixel window, float32 (a time-invariant (y, x)
    layer repeated at every date)."""
    out = np.empty((ds.sizes["time"], len(bands), r1 - r0, c1 - c0), dtype=np.float32)
    for i, band in enumerate(bands):  # one band at a time: no stacked copy
        var = ds[band].isel(y=slice(r0, r1), x=slice(c0, c1))
        dims = ("time", "y", "x") if "time" in var.dims else ("y", "x")
        out[:, i] = var.transpose(*dims).values
    return out


def window_side(n_time: int, n_band: int, chunk: int | None = None) -> int:
    """Side (pixels) of a square window of all dates and bands within READ_BUDGET_BYTES,
    rounded down to a multiple of the cube's spatial ``chunk`` when one fits (windows then
    start on chunk edges and no chunk is decoded twice)."""
    side = int(max(16, min(4096, math.isqrt(max(READ_BUDGET_BYTES // (4 * n_time * n_band), 1)))))
    if chunk and chunk <= side:
        side = (side // chunk) * chunk
    return side


def spatial_chunk(ds: xr.Dataset, bands: list[str]) -> int | None:
    """The cube's chunk size along y and x (the larger), if it is chunked."""
    chunks = ds[bands[0]].chunks
    if not chunks:
        return None
    dims = ds[bands[0]].dims
    sizes = [max(chunks[dims.index(d)]) for d in ("y", "x")]
    return int(max(sizes))


def _lonlat(crs_wkt: str, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tr = Transformer.from_crs(CRS.from_wkt(crs_wkt), CRS.from_epsg(4326), always_xy=True)
    lon, lat = tr.transform(xs, ys)
    return np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)


def count_by_split(
    labels: np.ndarray, split: np.ndarray, class_map: ClassMap
) -> dict[str, dict[str, int]]:
    """split -> class name -> labelled samples (per-pixel labels of patches count pixels)."""
    out: dict[str, dict[str, int]] = {}
    for code, name in enumerate(SPLIT_NAMES):
        sel = labels[split == code] if labels.ndim == 1 else labels[split == code].ravel()
        hist = np.bincount(sel[sel != IGNORE_INDEX].astype(np.int64), minlength=256)
        out[name] = {c.name: int(hist[c.id]) for c in class_map.classes}
    return out


def _groups(keys: np.ndarray) -> list[tuple[int, int]]:
    """Runs of equal consecutive keys as (start, stop)."""
    if keys.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate([[0], cuts])
    stops = np.concatenate([cuts, [keys.size]])
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _field_table(fields: pd.DataFrame) -> dict[str, Any]:
    return {
        "field_source_id": (
            "field_table",
            fields["source_id"].astype(str).to_numpy(dtype=object),
        ),
        "field_table": ("field_table", fields["field"].to_numpy(dtype=np.int32)),
    }


def write_samples(
    ds: xr.Dataset,
    gbox: GeoBox,
    bands: list[str],
    grid: GridLabels,
    options: SampleOptions,
    class_map: ClassMap,
    out_uri: str | Path,
    *,
    attrs: dict[str, Any],
    class_weight_blend: float,
    warnings: list[str] | None = None,
) -> tuple[SampleCounts, list[str]]:
    """Cut the samples of ``options.kind`` from the cube and write the training set.

    ``attrs["summary"]`` gets the counts and the warnings (``warnings`` plus class warnings),
    which are also returned.
    """
    times = np.asarray(ds["time"].values)
    crs_wkt = grid_crs_wkt(gbox)
    meta_coords = base_coords(bands, times)
    side = window_side(len(times), len(bands), spatial_chunk(ds, bands))
    if options.kind == "pixel":
        meta, dims, shape, order_plan, labels_for_counts, split_codes = _pixel_plan(
            grid, gbox, crs_wkt, len(times), len(bands), side
        )
        unit, n_dropped = "pixels", 0
    elif options.kind == "field":
        meta, dims, shape, order_plan, labels_for_counts, split_codes = _field_plan(
            grid, gbox, crs_wkt, len(times), len(bands), side
        )
        unit, n_dropped = "fields", 0
    else:
        meta, dims, shape, order_plan, labels_for_counts, split_codes, n_dropped = _patch_plan(
            grid, gbox, crs_wkt, options, len(times), len(bands), side
        )
        unit = "pixels"
    if shape[0] == 0:
        raise LabelError(
            f"no {options.kind} sample could be cut from the labels on this cube",
            hint="check the labels overlap the cube; for patches use a smaller patch size or "
            "min_labelled_fraction, or a block size that is a multiple of the patch size",
        )
    counts = count_by_split(labels_for_counts, split_codes, class_map)
    weights = class_weights(counts["train"], class_weight_blend)
    n_samples = {name: int((split_codes == code).sum()) for code, name in enumerate(SPLIT_NAMES)}
    result = SampleCounts(
        unit=unit, n_samples=n_samples, class_counts=counts, n_patches_dropped_crossing=n_dropped
    )
    all_warnings = list(warnings or []) + class_warnings(counts, class_map)
    if n_dropped:
        all_warnings.append(f"{n_dropped} labelled patches straddle two splits and were dropped")
    summary = dict(attrs.get("summary", {})) | {
        "counts": result.model_dump(),
        "warnings": all_warnings,
    }
    train_rows = np.asarray(meta.pop("_train_rows")[1], dtype=bool)
    meta_ds = xr.Dataset(meta | _field_table(grid.fields), coords=meta_coords)
    writer = TrainingSetWriter(
        uri=Path(str(out_uri)),
        meta=meta_ds,
        data_dims=dims,
        data_shape=shape,
        train_rows=train_rows,
        bands=bands,
    )
    try:
        for start, (r0, r1, c0, c1), cut in order_plan:
            window = read_window(ds, bands, r0, r1, c0, c1)
            writer.write(start, cut(window))
        writer.finish(
            attrs
            | {
                "summary": summary,
                "kind": options.kind,
                "class_weights": weights,
                "class_weight_blend": class_weight_blend,
                "crs": crs_wkt,
                "patch_size": options.patch_size if options.kind == "patch" else None,
                "patch_stride": (options.patch_stride or options.patch_size)
                if options.kind == "patch"
                else None,
            }
        )
    except BaseException:
        writer.abort()
        raise
    return result, all_warnings


Plan = list[tuple[int, tuple[int, int, int, int], Any]]


def _pixel_plan(
    grid: GridLabels, gbox: GeoBox, crs_wkt: str, n_time: int, n_band: int, side: int
) -> tuple[dict[str, Any], tuple[str, ...], tuple[int, ...], Plan, np.ndarray, np.ndarray]:
    sel = (grid.label != IGNORE_INDEX) & (grid.split != NO_SPLIT)
    rows, cols = np.nonzero(sel)
    ntx = -(-grid.label.shape[1] // side)
    key = (rows // side) * ntx + cols // side
    order = np.argsort(key, kind="stable")
    rows, cols, key = rows[order], cols[order], key[order]
    split = grid.split[rows, cols]
    labels = grid.label[rows, cols]
    xs, ys = pixel_centres(gbox, rows, cols)
    lon, lat = _lonlat(crs_wkt, xs, ys)
    meta: dict[str, Any] = {
        "label": ("sample", labels),
        "field": ("sample", grid.field[rows, cols].astype(np.int32)),
        "split": ("sample", split),
        "row": ("sample", rows.astype(np.int32)),
        "col": ("sample", cols.astype(np.int32)),
        "coord_x": ("sample", xs),
        "coord_y": ("sample", ys),
        "lon": ("sample", lon),
        "lat": ("sample", lat),
        "_train_rows": ("sample", split == 0),
    }
    plan: Plan = []
    for a, b in _groups(key):
        r, c = rows[a:b], cols[a:b]
        r0, c0 = int(r.min()), int(c.min())
        win = (r0, int(r.max()) + 1, c0, int(c.max()) + 1)

        def cut(w: np.ndarray, rr: np.ndarray = r - r0, cc: np.ndarray = c - c0) -> np.ndarray:
            return np.transpose(w[:, :, rr, cc], (2, 0, 1))

        plan.append((a, win, cut))
    shape = (len(rows), n_time, n_band)
    return meta, ("sample", "time", "band"), shape, plan, labels, split


def _field_plan(
    grid: GridLabels, gbox: GeoBox, crs_wkt: str, n_time: int, n_band: int, side: int
) -> tuple[dict[str, Any], tuple[str, ...], tuple[int, ...], Plan, np.ndarray, np.ndarray]:
    sel = (grid.field > 0) & (grid.label != IGNORE_INDEX) & (grid.split != NO_SPLIT)
    if grid.boundary_id is not None:
        sel &= grid.label != grid.boundary_id
    rows, cols = np.nonzero(sel)
    fld = grid.field[rows, cols]
    ntx = -(-grid.label.shape[1] // side)
    # fields ordered by the window of their first (top-left-most) pixel, pixels row-major
    by_field = np.argsort(fld, kind="stable")
    rows, cols, fld = rows[by_field], cols[by_field], fld[by_field]
    uniq, start, count = np.unique(fld, return_index=True, return_counts=True)
    first_key = (rows[start] // side) * ntx + cols[start] // side
    field_order = np.argsort(first_key, kind="stable")
    pieces = [np.arange(start[i], start[i] + count[i]) for i in field_order]
    pix_order = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)
    rows, cols, fld = rows[pix_order], cols[pix_order], fld[pix_order]
    uniq, count, keys = uniq[field_order], count[field_order], first_key[field_order]
    new_start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    labels = grid.label[rows[new_start], cols[new_start]] if uniq.size else np.empty(0, np.uint8)
    split = grid.split[rows[new_start], cols[new_start]] if uniq.size else np.empty(0, np.uint8)
    xs, ys = pixel_centres(gbox, rows, cols)
    n_f = np.maximum(count, 1)
    fx = np.add.reduceat(xs, new_start) / n_f if uniq.size else np.empty(0)
    fy = np.add.reduceat(ys, new_start) / n_f if uniq.size else np.empty(0)
    lon, lat = _lonlat(crs_wkt, fx, fy)
    pixel_split = np.repeat(split, count)
    meta: dict[str, Any] = {
        "field": ("field", uniq.astype(np.int32)),
        "label": ("field", labels),
        "split": ("field", split),
        "start": ("field", new_start),
        "count": ("field", count.astype(np.int64)),
        "coord_x": ("field", fx),
        "coord_y": ("field", fy),
        "lon": ("field", lon),
        "lat": ("field", lat),
        "pixel_row": ("pixel", rows.astype(np.int32)),
        "pixel_col": ("pixel", cols.astype(np.int32)),
        "_train_rows": ("pixel", pixel_split == 0),
    }
    plan: Plan = []
    for a, b in _groups(keys):
        p0, p1 = int(new_start[a]), int(new_start[b - 1] + count[b - 1])
        r, c = rows[p0:p1], cols[p0:p1]
        r0, c0 = int(r.min()), int(c.min())
        win = (r0, int(r.max()) + 1, c0, int(c.max()) + 1)

        def cut(w: np.ndarray, rr: np.ndarray = r - r0, cc: np.ndarray = c - c0) -> np.ndarray:
            return np.transpose(w[:, :, rr, cc], (2, 0, 1))

        plan.append((p0, win, cut))
    shape = (len(rows), n_time, n_band)
    return meta, ("pixel", "time", "band"), shape, plan, labels, split


def _patch_plan(
    grid: GridLabels,
    gbox: GeoBox,
    crs_wkt: str,
    options: SampleOptions,
    n_time: int,
    n_band: int,
    side: int,
) -> tuple[dict[str, Any], tuple[str, ...], tuple[int, ...], Plan, np.ndarray, np.ndarray, int]:
    size = options.patch_size
    stride = options.patch_stride or size
    ny, nx = grid.label.shape
    if size > ny or size > nx:
        raise LabelError(
            f"patch size {size} is larger than the cube ({ny} x {nx} pixels)",
            hint="use a smaller patch_size",
        )
    split_w = sliding_window_view(grid.split, (size, size))[::stride, ::stride]
    labelled = sliding_window_view(grid.label != IGNORE_INDEX, (size, size))[::stride, ::stride]
    s_min, s_max = split_w.min(axis=(2, 3)), split_w.max(axis=(2, 3))
    n_lab = labelled.sum(axis=(2, 3))
    need = max(1, math.ceil(options.min_labelled_fraction * size * size))
    has_labels = n_lab >= need
    keep = has_labels & (s_min == s_max) & (s_min != NO_SPLIT)
    n_dropped = int((has_labels & ~keep).sum())
    pi, pj = np.nonzero(keep)
    r0s, c0s = (pi * stride).astype(np.int64), (pj * stride).astype(np.int64)
    # patches grouped by the read window of their top-left pixel (windows on chunk edges)
    ntx = -(-nx // side)
    key = (r0s // side) * ntx + c0s // side
    order = np.argsort(key, kind="stable")
    r0s, c0s, key, pi, pj = r0s[order], c0s[order], key[order], pi[order], pj[order]
    split = s_min[pi, pj].astype(np.uint8)
    idx_r = r0s[:, None] + np.arange(size)[None, :]
    idx_c = c0s[:, None] + np.arange(size)[None, :]
    labels = grid.label[idx_r[:, :, None], idx_c[:, None, :]]
    fields = grid.field[idx_r[:, :, None], idx_c[:, None, :]].astype(np.int32)
    xs, ys = pixel_centres(gbox, r0s + size / 2 - 0.5, c0s + size / 2 - 0.5)
    lon, lat = _lonlat(crs_wkt, xs, ys)
    meta: dict[str, Any] = {
        "label": (("sample", "py", "px"), labels),
        "field": (("sample", "py", "px"), fields),
        "split": ("sample", split),
        "row": ("sample", r0s.astype(np.int32)),
        "col": ("sample", c0s.astype(np.int32)),
        "coord_x": ("sample", xs),
        "coord_y": ("sample", ys),
        "lon": ("sample", lon),
        "lat": ("sample", lat),
        "_train_rows": ("sample", split == 0),
    }
    plan: Plan = []
    for a, b in _groups(key):
        r0, c0 = int(r0s[a:b].min()), int(c0s[a:b].min())
        win = (r0, int(r0s[a:b].max()) + size, c0, int(c0s[a:b].max()) + size)

        def cut(
            w: np.ndarray, rr: np.ndarray = r0s[a:b] - r0, cc: np.ndarray = c0s[a:b] - c0
        ) -> np.ndarray:
            return np.stack(
                [w[:, :, r : r + size, c : c + size] for r, c in zip(rr, cc, strict=True)]
            )

        plan.append((a, win, cut))
    shape = (len(r0s), n_time, n_band, size, size)
    return meta, ("sample", "time", "band", "py", "px"), shape, plan, labels, split, n_dropped
