"""A self-contained STAC catalog of the products (relative hrefs: the folder can move).

One item per product (class map, probabilities, confidence, area table, per-field results),
each with the projection extension (raster items) and, where values are classes, the
classification extension's ``classification:classes`` (value, name, colour hint, pixel count
and percentage).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pystac
import shapely
from pyproj import CRS
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from rasterio.warp import transform_geom

from cropflow.classes import ClassMap
from cropflow.predict.store import NODATA

COG = str(pystac.MediaType.COG)
PNG = str(pystac.MediaType.PNG)
PARQUET = "application/vnd.apache.parquet"
GPKG = "application/geopackage+sqlite3"
CSV = "text/csv"


@dataclass
class ProductAsset:
    """One file of a product: key in the item, path, media type, roles, extra fields."""

    key: str
    path: Path
    media_type: str
    roles: list[str]
    title: str | None = None
    classes: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProductItem:
    """One product: an item id, a title and its assets."""

    id: str
    title: str
    assets: list[ProductAsset]
    raster: bool = True
    properties: dict[str, Any] = field(default_factory=dict)


def classifications(class_map: ClassMap, areas: pd.DataFrame | None) -> list[Classification]:
    """``classification:classes`` of a class map, with counts and shares when known."""
    stats: Mapping[int, tuple[int, float]] = {}
    if areas is not None:
        rows = zip(
            areas["class_id"].to_numpy(int),
            areas["pixels"].to_numpy(int),
            areas["fraction"].to_numpy(float),
            strict=True,
        )
        stats = {int(cid): (int(px), float(frac) * 100.0) for cid, px, frac in rows}
    out = []
    for c in class_map.classes:
        count, pct = stats.get(c.id, (None, None))
        out.append(
            Classification.create(
                value=c.id,
                name=c.name,
                description=c.description or None,
                color_hint=c.color.lstrip("#").upper(),
                count=count,
                percentage=None if pct is None else round(pct, 4),
            )
        )
    out.append(Classification.create(value=NODATA, name="no_data", nodata=True))
    return out


def footprint(
    crs_wkt: str, transform: Any, shape: tuple[int, int]
) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON footprint (WGS 84) and bbox of the grid."""
    h, w = shape
    corners = [transform @ (c, r) for c, r in ((0, 0), (w, 0), (w, h), (0, h))]
    # a few points per side, so that a large grid's curved outline in WGS 84 is kept
    poly = shapely.segmentize(shapely.Polygon(corners), max(abs(transform.a) * max(h, w) / 4, 1))
    geom = transform_geom(
        CRS.from_wkt(crs_wkt).to_wkt(), "EPSG:4326", shapely.geometry.mapping(poly), precision=7
    )
    bbox = list(shapely.geometry.shape(geom).bounds)
    return geom, bbox


def _projection(item: pystac.Item, crs_wkt: str, transform: Any, shape: tuple[int, int]) -> None:
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    crs = CRS.from_wkt(crs_wkt)
    epsg = crs.to_epsg()
    if epsg is not None:
        proj.code = f"EPSG:{epsg}"
    else:
        proj.wkt2 = crs.to_wkt()
    proj.shape = [int(shape[0]), int(shape[1])]
    proj.transform = [transform.a, transform.b, transform.c, transform.d, transform.e, transform.f]


def write_catalog(
    folder: Path,
    region: str,
    items: list[ProductItem],
    class_map: ClassMap,
    areas: pd.DataFrame | None,
    crs_wkt: str,
    transform: Any,
    shape: tuple[int, int],
    start: datetime,
    end: datetime,
    properties: dict[str, Any],
    description: str,
) -> Path:
    """Write ``catalog.json`` and one item per product into ``folder``; returns the catalog."""
    geom, bbox = footprint(crs_wkt, transform, shape)
    catalog = pystac.Catalog(
        id=f"cropflow-{region}", description=description, title=f"cropflow products: {region}"
    )
    for spec in items:
        item = pystac.Item(
            id=spec.id,
            geometry=geom,
            bbox=bbox,
            datetime=None,
            start_datetime=start,
            end_datetime=end,
            properties={"title": spec.title, **properties, **spec.properties},
        )
        if spec.raster:
            _projection(item, crs_wkt, transform, shape)
        for a in spec.assets:
            asset = pystac.Asset(
                href=str(a.path.resolve()),
                media_type=a.media_type,
                roles=a.roles,
                title=a.title,
                extra_fields=dict(a.extra),
            )
            item.add_asset(a.key, asset)
            if a.classes:
                ClassificationExtension.ext(asset, add_if_missing=True).classes = classifications(
                    class_map, areas
                )
        catalog.add_item(item)
    # a trailing separator: pystac takes a last part with a dot (".x.staging-1") for a file
    catalog.normalize_hrefs(str(folder.resolve()) + "/")
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return folder / "catalog.json"
