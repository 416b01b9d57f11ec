"""Field polygons on the cube's grid: reading them, their pixel windows and masks."""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import numpy.typing as npt
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from cropflow.errors import ConfigError, DataError
from cropflow.predict.tiling import Window

#: Column of the normalised field table holding each field's id.
FIELD_ID = "field_id"


def load_fields(path: str | Path, id_column: str | None, crs_wkt: str) -> gpd.GeoDataFrame:
    """Field polygons in the cube's CRS, with a unique ``field_id`` column, in id order."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"field polygons {str(path)!r} not found",
            hint="give the path of a GeoPackage, GeoParquet or GeoJSON of field polygons",
        )
    try:
        if p.suffix.lower() in (".parquet", ".geoparquet"):
            gdf = gpd.read_parquet(p)
        else:
            gdf = gpd.read_file(p)
    except Exception as exc:  # pyogrio/pyarrow raise many types for unreadable files
        raise DataError(
            f"cannot read field polygons {str(path)!r}: {exc}",
            hint="give a valid GeoPackage, GeoParquet or GeoJSON file",
        ) from exc
    if gdf.crs is None:
        raise DataError(
            f"field polygons {str(path)!r} have no CRS",
            hint="write the file with its CRS (e.g. gdf.set_crs(...).to_file(...))",
        )
    if id_column is not None:
        if id_column not in gdf.columns:
            raise ConfigError(
                f"field id column {id_column!r} is not in {str(path)!r} "
                f"(columns: {[c for c in gdf.columns if c != 'geometry']})",
                hint="name an existing column, or leave field_id_column unset to use row numbers",
            )
        ids = gdf[id_column]
    else:
        ids = gdf.index.to_series()
    if ids.duplicated().any():
        dup = sorted({str(v) for v in ids[ids.duplicated()]})[:5]
        raise DataError(
            f"field ids are not unique in {str(path)!r}: {dup}",
            hint="give a column with one id per field",
        )
    out = gpd.GeoDataFrame(
        {FIELD_ID: ids.astype(str).to_numpy()}, geometry=gdf.geometry.to_numpy(), crs=gdf.crs
    ).to_crs(crs_wkt)
    out = out[out.geometry.notna() & ~out.geometry.is_empty]
    return out.sort_values(FIELD_ID, kind="stable").reset_index(drop=True)


def pixel_window(geom: BaseGeometry, transform: Affine, height: int, width: int) -> Window | None:
    """The pixels of the grid that the geometry's bounds cover (None when outside the grid)."""
    minx, miny, maxx, maxy = geom.bounds
    inv = ~transform
    cols, rows = zip(
        *(inv @ (x, y) for x, y in ((minx, miny), (minx, maxy), (maxx, miny), (maxx, maxy))),
        strict=True,
    )
    row0 = max(0, math.floor(min(rows)))
    row1 = min(height, math.ceil(max(rows)))
    col0 = max(0, math.floor(min(cols)))
    col1 = min(width, math.ceil(max(cols)))
    if row0 >= row1 or col0 >= col1:
        return None
    return Window(row0, row1, col0, col1)


def window_transform(transform: Affine, window: Window) -> Affine:
    """The affine transform of a window of the grid."""
    return transform @ Affine.translation(window.col0, window.row0)


def field_mask(geom: BaseGeometry, transform: Affine, window: Window) -> npt.NDArray[np.bool_]:
    """Pixels of ``window`` whose centre is inside the field (all touched if none is)."""
    shape = (window.height, window.width)
    t = window_transform(transform, window)
    mask = rasterize([(geom, 1)], out_shape=shape, transform=t, fill=0, dtype="uint8")
    if not mask.any():
        mask = rasterize(
            [(geom, 1)], out_shape=shape, transform=t, fill=0, dtype="uint8", all_touched=True
        )
    result: npt.NDArray[np.bool_] = mask.astype(bool)
    return result


def field_index_raster(
    fields: gpd.GeoDataFrame, transform: Affine, window: Window
) -> npt.NDArray[np.int32]:
    """Row number (in ``fields``) of the field covering each pixel of ``window``; -1 = none."""
    shape = (window.height, window.width)
    t = window_transform(transform, window)
    x0, y0 = t @ (0, 0)
    x1, y1 = t @ (window.width, window.height)
    hits = fields.sindex.query(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    if len(hits) == 0:
        return np.full(shape, -1, np.int32)
    shapes = ((fields.geometry.iloc[i], int(i)) for i in sorted(int(h) for h in hits))
    result: npt.NDArray[np.int32] = rasterize(
        shapes, out_shape=shape, transform=t, fill=-1, dtype="int32"
    )
    return result
