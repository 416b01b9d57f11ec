"""Writing Cloud-Optimized GeoTIFFs like the Sentinel-2 L2A COGs of Earth Search.

GDAL's COG driver: tiled, DEFLATE with a horizontal predictor, internal overviews (average for
reflectance, nearest for categorical layers), nodata 0. Blocks are sized so that every file has
at least one overview level, however small the demo.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

#: Largest internal block (real S2 COGs use 1024; the demo tiles are small).
MAX_BLOCK = 512
#: Smallest block GDAL's COG driver accepts without a warning.
MIN_BLOCK = 128


def block_size(rows: int, cols: int) -> int:
    """The largest power of two, MIN_BLOCK .. MAX_BLOCK, not above half the smaller side
    (MIN_BLOCK for rasters smaller than that: one partial block)."""
    size = MIN_BLOCK
    while size * 2 <= min(rows, cols) // 2 and size * 2 <= MAX_BLOCK:
        size *= 2
    return size


def _small_overviews(rows: int, cols: int) -> dict[str, int]:
    """A raster within one or two blocks gets no overview from GDAL's AUTO rule: ask for the
    levels down to about 16 px, as real COGs have overviews."""
    side = min(rows, cols)
    if side >= 2 * block_size(rows, cols):
        return {}
    return {"overview_count": max(1, int(math.log2(max(side, 16) / 16)))}


def write_cog(
    path: Path,
    array: np.ndarray,
    transform: Affine,
    crs: CRS | str,
    *,
    nodata: float | None = 0,
    categorical: bool = False,
    colormap: dict[int, tuple[int, int, int, int]] | None = None,
    description: str | None = None,
) -> None:
    """Write one single-band COG (``array`` is ``(rows, cols)``)."""
    rows, cols = array.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "COG",
        "width": cols,
        "height": rows,
        "count": 1,
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "DEFLATE",
        "predictor": 2,
        "blocksize": block_size(rows, cols),
        **_small_overviews(rows, cols),
        "overview_resampling": "nearest" if categorical else "average",
        "num_threads": 1,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)
        if colormap:
            dst.write_colormap(1, colormap)
        if description:
            dst.set_band_description(1, description)
