"""Area per class, in hectares, counted window by window.

Pixel areas come from the grid: constant for a projected CRS (``|a*e - b*d|`` in the CRS's
linear unit), per row on the ellipsoid for a geographic CRS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from affine import Affine
from pyproj import CRS, Geod

from cropflow.classes import ClassMap
from cropflow.predict.store import NODATA
from cropflow.products.cog import windows

#: Columns of the area table, in order.
AREA_COLUMNS = ("class_id", "class_name", "color", "pixels", "area_ha", "fraction")


def row_areas_ha(crs_wkt: str, transform: Affine, height: int) -> npt.NDArray[np.float64]:
    """Area of one pixel of each row, in hectares."""
    crs = CRS.from_wkt(crs_wkt)
    if crs.is_geographic:
        geod = crs.get_geod() or Geod(ellps="WGS84")
        out = np.empty(height, np.float64)
        for r in range(height):
            pts = [transform @ (c, rr) for c, rr in ((0, r), (1, r), (1, r + 1), (0, r + 1))]
            area, _ = geod.polygon_area_perimeter([p[0] for p in pts], [p[1] for p in pts])
            out[r] = abs(area) / 1e4
        return out
    unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    pixel_m2 = abs(transform.a * transform.e - transform.b * transform.d) * unit * unit
    return np.full(height, pixel_m2 / 1e4)


def class_areas(
    class_id: Any, class_map: ClassMap, crs_wkt: str, transform: Affine
) -> pd.DataFrame:
    """Pixels, hectares and share of the predicted area of every class (all classes listed)."""
    height = int(class_id.shape[0])
    width = int(class_id.shape[1])
    row_ha = row_areas_ha(crs_wkt, transform, height)
    pixels = np.zeros(256, np.int64)
    hectares = np.zeros(256, np.float64)
    for w in windows(height, width):
        block = np.asarray(class_id[w.rows, w.cols], np.uint8)
        weights = np.repeat(row_ha[w.rows], w.width)
        pixels += np.bincount(block.ravel(), minlength=256)
        hectares += np.bincount(block.ravel(), weights=weights, minlength=256)
    predicted = hectares.sum() - hectares[NODATA]
    rows = [
        {
            "class_id": c.id,
            "class_name": c.name,
            "color": c.color,
            "pixels": int(pixels[c.id]),
            "area_ha": float(hectares[c.id]),
            "fraction": float(hectares[c.id] / predicted) if predicted > 0 else 0.0,
        }
        for c in class_map.classes
    ]
    return pd.DataFrame(rows, columns=list(AREA_COLUMNS))


def write_area_table(table: pd.DataFrame, folder: Path, stem: str = "class_area") -> list[Path]:
    """The area table as CSV and Parquet in ``folder``."""
    csv = folder / f"{stem}.csv"
    parquet = folder / f"{stem}.parquet"
    table.to_csv(csv, index=False, float_format="%.4f")
    table.to_parquet(parquet, index=False)
    return [csv, parquet]
