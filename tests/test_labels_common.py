"""Shared helpers of the label tests: small cubes in the cube format and synthetic fields.

Tests build small cubes exactly as :mod:`cropflow.cube.store` documents them (read back with
``cropflow.cube.open_cube``): a Zarr v3 group with one float32 (time, y, x) variable per band
name, ``valid_count``, ``interpolated``, pixel-centre ``x``/``y``, a ``spatial_ref``
coordinate, and the ``cropflow:complete`` / ``cropflow:time`` attributes.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import odc.geo.xr  # noqa: F401 - .odc accessor
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_zeros
from shapely.geometry import box

UTM = "EPSG:32633"


def write_cube(
    path: Path,
    gbox: GeoBox,
    times: list[str] | np.ndarray,
    bands: dict[str, np.ndarray],
    attrs: dict[str, object] | None = None,
    period: str | None = None,
    chunk: int | None = None,
) -> Path:
    """Write bands (each (time, y, x)) as a cube in the documented format; ``chunk``: spatial
    chunk side (time whole in a chunk, as the cube package writes)."""
    template = xr_zeros(gbox, dtype="float32", time=np.asarray(times, dtype="datetime64[ns]"))
    ds = xr.Dataset(coords=template.coords)
    for name, values in bands.items():
        ds[name] = (("time", "y", "x"), np.asarray(values, dtype=np.float32))
    shape = template.shape
    ds["valid_count"] = (("time", "y", "x"), np.ones(shape, dtype=np.uint8))
    ds["interpolated"] = (("time", "y", "x"), np.zeros(shape, dtype=bool))
    # the cube package's completeness flag and time axis attributes (cropflow/cube/store.py)
    ds.attrs.update({"cropflow:complete": True, "cropflow:time": {"period": period}})
    ds.attrs.update(attrs or {})
    if chunk:
        ds = ds.chunk({"time": -1, "y": chunk, "x": chunk})
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    return path


def position_bands(gbox: GeoBox, n_time: int) -> dict[str, np.ndarray]:
    """``red`` = row * 1000 + col (every date), ``nir`` = date index: alignment is checkable."""
    ny, nx = gbox.shape
    rows, cols = np.mgrid[0:ny, 0:nx]
    red = np.broadcast_to(rows * 1000 + cols, (n_time, ny, nx)).astype(np.float32)
    nir = np.broadcast_to(np.arange(n_time)[:, None, None], (n_time, ny, nx)).astype(np.float32)
    return {"red": red, "nir": nir}


def field_scene(
    gbox: GeoBox, n_rows: int, n_cols: int, *, gap: int = 1, codes: list[int] | None = None
) -> tuple[gpd.GeoDataFrame, np.ndarray]:
    """Rectangular fields with pixel-aligned edges in a ``n_rows`` x ``n_cols`` layout, with
    ``gap`` unlabelled pixels between them (roads). Returns the fields in EPSG:4326 (columns
    field_id, crop_code, name) and the expected field raster (by array slicing, 0 = none)."""
    ny, nx = gbox.shape
    codes = codes or [115, 311, 411, 115, 999]
    a = gbox.affine
    expected = np.zeros((ny, nx), dtype=np.int32)
    rows = []
    h, w = ny // n_rows, nx // n_cols
    fid = 0
    for i in range(n_rows):
        for j in range(n_cols):
            fid += 1
            r0, r1 = i * h + gap, (i + 1) * h - gap
            c0, c1 = j * w + gap, (j + 1) * w - gap
            expected[r0:r1, c0:c1] = fid
            x0, y0 = a.c + c0 * a.a, a.f + r0 * a.e
            x1, y1 = a.c + c1 * a.a, a.f + r1 * a.e
            rows.append(
                {
                    "field_id": f"F{fid:03d}",
                    "crop_code": codes[(fid - 1) % len(codes)],
                    "name": f"field {fid}",
                    "geometry": box(x0, y1, x1, y0),
                }
            )
    gdf = gpd.GeoDataFrame(pd.DataFrame(rows), geometry="geometry", crs=str(gbox.crs))
    return gdf.to_crs("EPSG:4326"), expected


MAPPING_YAML = """\
source_column: crop_code
unknown: {unknown}
classes:
  - {{name: wheat, id: 1, color: "#d8b365", codes: [115, 116]}}
  - {{name: maize, id: 2, color: "#f6e8c3", codes: [411]}}
  - {{name: grass, id: 5, color: "#5ab4ac", codes: ["311"]}}
  - {{name: other, id: 9, color: "#999999", codes: []}}
  - {{name: boundary, id: 10, color: "#000000", codes: []}}
"""


def write_mapping(path: Path, unknown: str = "drop") -> Path:
    path.write_text(MAPPING_YAML.format(unknown=unknown))
    return path


def test_helper_cube_is_in_the_cube_format(tmp_path: Path) -> None:
    gbox = GeoBox.from_bbox((500000, 5200000, 500640, 5200480), UTM, resolution=10)
    cube = write_cube(
        tmp_path / "c.zarr", gbox, ["2021-03-01", "2021-04-01"], position_bands(gbox, 2)
    )
    ds = xr.open_zarr(cube, consolidated=False, decode_coords="all")
    assert ds.odc.geobox == gbox
    assert ds["red"].dims == ("time", "y", "x")
    assert float(ds["red"].isel(time=1, y=3, x=7)) == 3007.0
