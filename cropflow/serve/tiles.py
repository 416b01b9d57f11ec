"""Map tiles and point queries of a published map, rendered by rio-tiler from its COGs.

Tiles are XYZ in Web Mercator (``WebMercatorQuad``), 256 px, PNG or WebP. The class map is
drawn with the classes' colours (the legend's), the confidence with a perceptual colour map;
pixels without a class (outside the AOI, no data) are transparent. rio-tiler is imported
here, at module level: importing it lazily from several request threads at once races.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from rio_tiler.colormap import cmap
from rio_tiler.errors import PointOutsideBounds, TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.utils import render

from cropflow.errors import ConfigError
from cropflow.serve.catalog import TILE_LAYERS, PublishedMap

TileFormat = Literal["png", "webp"]
TILE_SIZE = 256
#: Colour map of the confidence layer (rio-tiler's name).
CONFIDENCE_CMAP = "viridis"


def _rgba(color: str) -> tuple[int, int, int, int]:
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16), 255


def class_colormap(m: PublishedMap) -> dict[int, tuple[int, int, int, int]]:
    """Pixel value -> RGBA of the class map: the classes' colours, anything else clear."""
    cmap = dict.fromkeys(range(256), (0, 0, 0, 0))
    cmap.update({c.value: _rgba(c.color) for c in m.classes})
    return cmap


@lru_cache(maxsize=1)
def _empty_tile(fmt: TileFormat) -> bytes:

    data = np.zeros((1, TILE_SIZE, TILE_SIZE), dtype=np.uint8)
    mask = np.zeros((TILE_SIZE, TILE_SIZE), dtype=np.uint8)
    out: bytes = render(data, mask, img_format=fmt.upper())
    return out


def render_tile(m: PublishedMap, layer: str, z: int, x: int, y: int, fmt: TileFormat) -> bytes:
    """One XYZ tile of ``layer``; a transparent tile where the map has no data."""

    if layer not in TILE_LAYERS or layer not in m.layers:
        raise ConfigError(
            f"map {m.region!r} has no tile layer {layer!r}",
            hint=f"use one of: {', '.join(m.layers)}",
        )
    if not (0 <= z <= 24 and 0 <= x < 2**z and 0 <= y < 2**z):
        raise ConfigError(f"tile {z}/{x}/{y} does not exist", hint="0 <= x, y < 2**z, z <= 24")
    with Reader(str(m.file(layer))) as src:
        rgb = layer == "truecolor"
        try:
            img = src.tile(
                x,
                y,
                z,
                tilesize=TILE_SIZE,
                indexes=(1, 2, 3) if rgb else None,
                resampling_method="bilinear" if rgb else "nearest",
            )
        except TileOutsideBounds:
            return _empty_tile(fmt)
        colors: Any = None
        if layer == "class_map":
            colors = class_colormap(m)
        elif layer == "confidence":
            colors = cmap.get(CONFIDENCE_CMAP)
        out: bytes = img.render(img_format=fmt.upper(), colormap=colors)
        return out


class PointResult(BaseModel):
    """What the map says at one place."""

    region: str
    lon: float
    lat: float
    class_value: int | None = Field(None, description="Pixel value; None: no class here.")
    class_name: str | None = None
    color: str | None = None
    confidence: float | None = Field(None, description="Probability of the class (0-1).")
    probabilities: dict[str, float] = Field(
        default_factory=dict, description="Class name -> probability."
    )
    field_id: str | None = Field(None, description="The field (parcel) here, if fields exist.")


def _point(path: str, lon: float, lat: float) -> tuple[np.ndarray, np.ndarray, list[str]]:

    with Reader(path) as src:
        try:
            pt = src.point(lon, lat)
        except PointOutsideBounds:
            raise ConfigError(
                f"({lon}, {lat}) is outside the map",
                hint="click inside the map's extent (GET /maps/<region>: bbox)",
            ) from None
        names = [d[1] for d in src.info().band_descriptions]
        return np.asarray(pt.data), np.asarray(pt.mask), names


def query_point(m: PublishedMap, lon: float, lat: float) -> PointResult:
    """Class, probabilities and field at (lon, lat) (WGS84 degrees)."""
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ConfigError(
            f"({lon}, {lat}) is not a lon/lat", hint="lon in [-180, 180], lat in [-90, 90]"
        )
    data, mask, _ = _point(str(m.file("class_map")), lon, lat)
    value = int(data[0])
    by_value = {c.value: c for c in m.classes}
    result = PointResult(region=m.region, lon=lon, lat=lat)
    if not mask.any() or value not in by_value:
        return result
    cls = by_value[value]
    result.class_value, result.class_name, result.color = value, cls.name, cls.color
    if "probability" in m.files:
        probs, _, names = _point(str(m.file("probability")), lon, lat)
        result.probabilities = {
            n: round(float(p) / 255.0, 4) for n, p in zip(names, probs, strict=True)
        }
        result.confidence = result.probabilities.get(cls.name)
    if "fields" in m.files:
        result.field_id = _field_at(m, lon, lat)
    return result


def _field_at(m: PublishedMap, lon: float, lat: float) -> str | None:
    import geopandas as gpd
    from shapely.geometry import Point

    fields = gpd.read_parquet(m.file("fields"))
    here = gpd.GeoSeries([Point(lon, lat)], crs="EPSG:4326").to_crs(fields.crs).iloc[0]
    hit = fields[fields.contains(here)]
    if hit.empty:
        return None
    column = "field_id" if "field_id" in hit.columns else hit.columns[0]
    return str(hit.iloc[0][column])
