"""Helpers for the datacube tests: small synthetic Sentinel-2-like COGs whose pixels we know.

Imported by the ``test_cube_*`` modules (no tests here). The COGs are real files read by the
real reader; the expected composites are computed from the arrays written, with numpy.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine, from_origin

from cropflow.stac.profiles import CollectionProfile, get_profile

SCALE, OFFSET = 1e-4, -0.1
CLOUD_CODES = (3, 8, 9, 10, 11, 1)  # the default CubeParams.mask groups


def write_cog(
    path: Path,
    arr: np.ndarray,
    crs: str,
    transform: Affine,
    nodata: float | None = 0,
    block: int = 64,
) -> None:
    """A tiled, DEFLATE-compressed GeoTIFF (COG layout, no overviews)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "dtype": arr.dtype.name,
        "count": 1,
        "width": arr.shape[1],
        "height": arr.shape[0],
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)


def lonlat_footprint(crs: str, bounds: tuple[float, float, float, float]) -> list[float]:
    tf = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return list(tf.transform_bounds(*bounds, densify_pts=21))


def s2_item(
    item_id: str,
    when: dt.datetime,
    crs: str,
    bounds: tuple[float, float, float, float],
    hrefs: dict[str, Path],
) -> pystac.Item:
    """An Earth Search v1-shaped item (asset key = band name, raster:bands scale/offset)."""
    w, s, e, n = lonlat_footprint(crs, bounds)
    item = pystac.Item(
        id=item_id,
        geometry={"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        bbox=[w, s, e, n],
        datetime=when,
        collection="sentinel-2-l2a",
        properties={"s2:processing_baseline": "05.10"},
    )
    for band, href in hrefs.items():
        rb: dict[str, Any] = {"nodata": 0}
        if band != "scl":
            rb.update(scale=SCALE, offset=OFFSET)
        item.add_asset(
            band,
            pystac.Asset(
                href=href.resolve().as_uri(), roles=["data"], extra_fields={"raster:bands": [rb]}
            ),
        )
    return item


@dataclass
class Scene:
    """A synthetic acquisition series and the arrays written to its COGs."""

    items: list[pystac.Item]
    crs: str
    transform: Affine
    shape: tuple[int, int]
    dn: dict[str, np.ndarray]  # band -> (T, h, w) uint16 at 10 m
    scl10: np.ndarray  # (T, h, w) uint8, SCL repeated to 10 m
    times: list[dt.datetime]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        h, w = self.shape
        t = self.transform
        return (t.c, t.f + h * t.e, t.c + w * t.a, t.f)

    def reflectance(self, band: str) -> np.ndarray:
        """(T, h, w) float64 reflectance with NaN where nodata."""
        dn = self.dn[band].astype(np.float64)
        out = dn * SCALE + OFFSET
        out[dn == 0] = np.nan
        return out

    def valid(self, codes: tuple[int, ...] = CLOUD_CODES, dilation: int = 0) -> np.ndarray:
        """(T, h, w) bool: clear SCL and every band present."""
        from scipy.ndimage import binary_dilation

        cloud = np.isin(self.scl10, codes)
        if dilation:
            st = np.zeros((1, 2 * dilation + 1, 2 * dilation + 1), dtype=bool)
            st[0] = True
            cloud = binary_dilation(cloud, structure=st)
        ok = ~cloud & (self.scl10 != 0)
        for arr in self.dn.values():
            ok &= arr != 0
        return ok


def make_scene(
    root: Path,
    *,
    bands: tuple[str, ...] = ("red", "nir"),
    n_dates: int = 8,
    shape: tuple[int, int] = (96, 80),
    start: dt.datetime | None = None,
    step_days: int = 7,
    seed: int = 0,
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (600000.0, 5300000.0),
    nodata_corner: bool = True,
) -> Scene:
    """``n_dates`` acquisitions with random clouds (SCL at 20 m) and a nodata corner."""
    rng = np.random.default_rng(seed)
    h, w = shape
    start = start or dt.datetime(2024, 5, 3, 10, 30, tzinfo=dt.UTC)
    transform = from_origin(origin[0], origin[1], 10.0, 10.0)
    t20 = from_origin(origin[0], origin[1], 20.0, 20.0)
    bounds = (origin[0], origin[1] - 10 * h, origin[0] + 10 * w, origin[1])
    items, times = [], []
    dn = {b: np.zeros((n_dates, h, w), np.uint16) for b in bands}
    scl10 = np.zeros((n_dates, h, w), np.uint8)
    base = {b: rng.integers(500, 4000, (h, w)) for b in bands}
    for i in range(n_dates):
        when = start + dt.timedelta(days=step_days * i)
        folder = root / f"d{i:02d}"
        scl = rng.choice(np.array([4, 4, 4, 5, 6, 8, 9, 3, 10, 2], np.uint8), size=(h // 2, w // 2))
        if nodata_corner and i % 3 == 1:
            scl[: h // 6, : w // 6] = 0
        up = np.repeat(np.repeat(scl, 2, axis=0), 2, axis=1)
        hrefs = {}
        for b in bands:
            arr = (base[b] + rng.integers(-300, 300, (h, w)) + 1000).astype(np.uint16)
            arr[up == 0] = 0
            write_cog(folder / f"{b}.tif", arr, crs, transform)
            dn[b][i] = arr
            hrefs[b] = folder / f"{b}.tif"
        write_cog(folder / "scl.tif", scl, crs, t20, block=32)
        hrefs["scl"] = folder / "scl.tif"
        scl10[i] = up
        items.append(s2_item(f"S2A_T{seed}_{when:%Y%m%d}_0_L2A", when, crs, bounds, hrefs))
        times.append(when)
    return Scene(items, crs, transform, shape, dn, scl10, times)


def asset_profile() -> CollectionProfile:
    """The built-in generic profile: asset key = band name, radiometry from raster:bands."""
    return get_profile("assets")


def nanmedian(stack: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Median over axis 0 of the valid values (NaN where none)."""
    import warnings

    x = np.where(valid, stack, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(x, axis=0)
