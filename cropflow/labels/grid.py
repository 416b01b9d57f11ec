"""The cube side of label joins: open a cube, its grid, its bands, and labels on that grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import odc.geo.xr  # noqa: F401 - registers the .odc accessor
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox
from pyproj import CRS

from cropflow.bands import S2_SPECTRAL
from cropflow.errors import DataError, LabelError

#: Cube variables that are not bands.
NON_BAND_VARIABLES = frozenset({"valid_count", "interpolated", "spatial_ref"})


def open_cube(uri: str | Path) -> xr.Dataset:
    """Open a complete datacube, lazily (DataError for a missing or incomplete one)."""
    from cropflow.cube import open_cube as cube_open  # the cube package's reader

    return cube_open(uri, require_complete=True)


def cube_geobox(ds: xr.Dataset, uri: str = "cube") -> GeoBox:
    """The cube's pixel grid (CRS, affine of pixel corners, shape)."""
    try:
        gbox = ds.odc.geobox
    except Exception as exc:  # odc raises plain errors for missing CRS/coords
        raise DataError(f"{uri} has no readable grid: {exc}", hint="rebuild the cube") from exc
    if not isinstance(gbox, GeoBox) or gbox.crs is None:
        raise DataError(
            f"{uri} has no CRS (spatial_ref coordinate)",
            hint="open it with decode_coords='all', or rebuild the cube",
        )
    return gbox


def grid_crs_wkt(gbox: GeoBox) -> str:
    """WKT of the grid's CRS (cube_geobox guarantees there is one)."""
    if gbox.crs is None:
        raise DataError("the cube grid has no CRS", hint="rebuild the cube")
    return str(gbox.crs.to_wkt())


def band_order(name: str) -> tuple[int, str]:
    """Sort key of band names: Sentinel-2 bands in wavelength order, then others by name."""
    spectral = list(S2_SPECTRAL)
    return (spectral.index(name), "") if name in spectral else (len(spectral), name)


def cube_bands(ds: xr.Dataset, wanted: list[str] | None = None, uri: str = "cube") -> list[str]:
    """Band variables to sample: ``wanted`` (checked), or every (time, y, x) float variable in
    :func:`band_order`; time-invariant (y, x) layers of a static source (a DEM) count as
    bands with the same value at every date."""
    available = [
        str(name)
        for name, var in ds.data_vars.items()
        if name not in NON_BAND_VARIABLES
        and var.dims in (("time", "y", "x"), ("y", "x"))
        and np.issubdtype(var.dtype, np.floating)
    ]
    if wanted is None:
        if not available:
            raise DataError(f"{uri} has no band variables", hint="rebuild the cube with bands")
        return sorted(available, key=band_order)
    missing = [b for b in wanted if b not in available]
    if missing:
        raise DataError(
            f"bands {missing} are not in {uri}; it has {available}",
            hint="choose bands the cube has, or rebuild the cube with them",
        )
    return list(wanted)


def cube_time_kind(ds: xr.Dataset) -> tuple[str, str | None]:
    """``("composite", period)`` when the cube records a compositing period
    (``cropflow:time.period``), else ``("acquisition", None)``."""
    time_attrs = ds.attrs.get("cropflow:time")
    period = time_attrs.get("period") if isinstance(time_attrs, dict) else None
    if isinstance(period, str) and period:
        return "composite", period
    return "acquisition", None


def harvest_year(times: np.ndarray) -> int | None:
    """The year of the last time step (crop seasons are named by their harvest year)."""
    if times.size == 0 or not np.issubdtype(times.dtype, np.datetime64):
        return None
    return int(pd.Timestamp(times.max()).year)


def labels_to_grid(gdf: gpd.GeoDataFrame, gbox: GeoBox, source: str) -> gpd.GeoDataFrame:
    """Reproject labels to the cube's CRS; refuse labels that do not touch the cube at all."""
    out = gdf.to_crs(CRS.from_wkt(grid_crs_wkt(gbox)))
    left, bottom, right, top = gbox.extent.boundingbox[:4]
    inside = out.geometry.intersects(_box(left, bottom, right, top))
    if not bool(inside.any()):
        lb = out.total_bounds
        raise LabelError(
            f"{source}: no label overlaps the cube (labels span {np.round(lb, 3).tolist()} "
            f"in the cube CRS, the cube spans {[left, bottom, right, top]})",
            hint="use labels of the cube's area, or build the cube over the labels' area",
        )
    return out


def _box(left: float, bottom: float, right: float, top: float) -> Any:
    from shapely.geometry import box

    return box(left, bottom, right, top)


def pixel_index(gbox: GeoBox, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the pixel containing each point (cube CRS); -1 outside the grid."""
    inv = ~gbox.affine
    x = np.atleast_1d(np.asarray(xs, dtype=float))
    y = np.atleast_1d(np.asarray(ys, dtype=float))
    cols_f = inv.a * x + inv.b * y + inv.c
    rows_f = inv.d * x + inv.e * y + inv.f
    finite = np.isfinite(rows_f) & np.isfinite(cols_f)
    rows = np.full(rows_f.shape, -1, dtype=np.int64)
    cols = np.full(cols_f.shape, -1, dtype=np.int64)
    rows[finite] = np.floor(rows_f[finite]).astype(np.int64)
    cols[finite] = np.floor(cols_f[finite]).astype(np.int64)
    ny, nx = gbox.shape
    outside = (rows < 0) | (rows >= ny) | (cols < 0) | (cols >= nx)
    rows[outside] = -1
    cols[outside] = -1
    return rows, cols


def pixel_centres(
    gbox: GeoBox, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Cube-CRS coordinates of pixel centres."""
    a = gbox.affine
    col_c = np.asarray(cols, dtype=float) + 0.5
    row_c = np.asarray(rows, dtype=float) + 0.5
    return a.a * col_c + a.b * row_c + a.c, a.d * col_c + a.e * row_c + a.f
