"""The demo region's Sentinel-1 RTC and Copernicus DEM files and STAC items.

Shaped like Planetary Computer's ``sentinel-1-rtc`` (gamma0 in linear power, float32, nodata
-32768, ``sat:orbit_state``, ``sar:*``) and ``cop-dem-glo-30`` (float32 elevation in
EPSG:4326, 1 arc-second in latitude and 1.5 in longitude at this latitude: non-square
pixels in degrees, as the real tiles north of 50 degrees). Each collection gets its own
``collection-<id>.json`` and ``items-<id>.json`` beside the Sentinel-2 catalog; the local
STAC API serves them together.

Footprints: an ascending pass covers the whole region; a descending pass is cut by its swath
edge and misses the eastern strip (:data:`DESCENDING_EAST_GAP`), so the two orbit directions
have footprints of their own.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.warp import Resampling, reproject, transform_bounds

from cropflow.demo.cog import write_cog
from cropflow.demo.config import GENERATOR_VERSION
from cropflow.demo.radar import LOOKS, RadarPass, backscatter, plan_passes
from cropflow.demo.stac import COG_MEDIA_TYPE
from cropflow.demo.terrain import elevation
from cropflow.demo.world import DemoWorld

S1_COLLECTION = "sentinel-1-rtc"
DEM_COLLECTION = "cop-dem-glo-30"
S1_NODATA = -32768.0
#: Share of the region's columns (east) outside a descending pass's swath.
DESCENDING_EAST_GAP = 0.15
#: Copernicus DEM GLO-30 spacing between 50 and 60 degrees north: (lon, lat) in degrees.
DEM_SPACING = (1.5 / 3600.0, 1.0 / 3600.0)
#: Local overpass times (UTC) of each orbit direction over Brandenburg.
PASS_TIME = {"ascending": time(16, 51, 22), "descending": time(5, 9, 48)}
RELATIVE_ORBIT = {"ascending": 146, "descending": 22}
STAC_EXTENSIONS_S1 = [
    "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]
STAC_EXTENSIONS_DEM = [
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _polygon(
    bounds: tuple[float, float, float, float], crs: str
) -> tuple[dict[str, Any], list[float]]:
    """GeoJSON polygon (lon/lat) and bbox of projected ``bounds``."""
    to_wgs84 = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    x0, y0, x1, y1 = bounds
    xs = [x0, x1, x1, x0, x0]
    ys = [y1, y1, y0, y0, y1]
    lon, lat = to_wgs84.transform(xs, ys)
    ring = [[round(float(a), 9), round(float(b), 9)] for a, b in zip(lon, lat, strict=True)]
    bbox = [round(float(min(lon)), 6), round(float(min(lat)), 6)]
    bbox += [round(float(max(lon)), 6), round(float(max(lat)), 6)]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def s1_item_id(p: RadarPass) -> str:
    """A Planetary Computer-like id, e.g. ``S1A_IW_GRDH_1SDV_20240305T165122_..._rtc``."""
    start = datetime.combine(p.date, PASS_TIME[p.orbit])
    end = start + timedelta(seconds=25)
    absolute = 52_500 + (p.date - datetime(2024, 1, 1).date()).days * 175 // 12
    return (
        f"S1A_IW_GRDH_1SDV_{start:%Y%m%dT%H%M%S}_{end:%Y%m%dT%H%M%S}_{absolute:06d}_"
        f"{absolute % 65536:04X}A_rtc"
    )


def write_radar(root: Path, final_root: Path, world: DemoWorld) -> list[dict[str, Any]]:
    """Write one vv and one vh COG per pass and return the passes' STAC items."""
    config = world.config
    grid = world.grid
    features = []
    cut = round(grid.width * (1.0 - DESCENDING_EAST_GAP))
    for p in plan_passes(config.season_start, config.season_end):
        sigma = backscatter(
            seed=config.seed,
            units=world.landscape.units,
            unit_raster=world.landscape.unit_raster,
            vigour=world.vigour,
            moisture=world.soil_moisture(p.date),
            radar_pass=p,
        )
        width = grid.width if p.orbit == "ascending" else cut
        x0, y0, _, y1 = grid.bounds
        bounds = (x0, y0, x0 + width * 10.0, y1)
        transform = Affine(10.0, 0.0, x0, 0.0, -10.0, y1)
        iid = s1_item_id(p)
        hrefs = {}
        for pol in ("vv", "vh"):
            path = root / "cogs" / S1_COLLECTION / iid / f"{pol}.tif"
            write_cog(path, sigma[pol][:, :width], transform, grid.crs, nodata=S1_NODATA)
            hrefs[pol] = (final_root / path.relative_to(root)).as_uri()
        geometry, bbox = _polygon(bounds, grid.crs)
        when = datetime.combine(p.date, PASS_TIME[p.orbit], tzinfo=UTC)
        features.append(
            {
                "type": "Feature",
                "stac_version": "1.0.0",
                "stac_extensions": STAC_EXTENSIONS_S1,
                "id": iid,
                "geometry": geometry,
                "bbox": bbox,
                "collection": S1_COLLECTION,
                "links": [],
                "properties": {
                    "datetime": _stamp(when + timedelta(seconds=12)),
                    "start_datetime": _stamp(when),
                    "end_datetime": _stamp(when + timedelta(seconds=25)),
                    "platform": p.platform,
                    "constellation": "Sentinel-1",
                    "sar:instrument_mode": "IW",
                    "sar:frequency_band": "C",
                    "sar:center_frequency": 5.405,
                    "sar:polarizations": ["VV", "VH"],
                    "sar:product_type": "GRD",
                    "sar:looks_equivalent_number": LOOKS,
                    "sat:orbit_state": p.orbit,
                    "sat:relative_orbit": RELATIVE_ORBIT[p.orbit],
                    "view:incidence_angle": p.incidence,
                    "proj:epsg": grid.epsg,
                    "proj:bbox": list(bounds),
                    "proj:shape": [grid.height, width],
                    "proj:transform": list(transform)[:6],
                    "processing:software": {"cropflow-demo": GENERATOR_VERSION},
                },
                "assets": {
                    pol: {
                        "href": hrefs[pol],
                        "type": COG_MEDIA_TYPE,
                        "title": f"{pol.upper()}: gamma naught, radiometric terrain corrected",
                        "roles": ["data"],
                        "raster:bands": [
                            {
                                "nodata": S1_NODATA,
                                "data_type": "float32",
                                "spatial_resolution": 10.0,
                            }
                        ],
                    }
                    for pol in ("vv", "vh")
                },
            }
        )
    return features


def dem_array(world: DemoWorld) -> np.ndarray:
    """The region's elevation (m) on the 10 m world grid."""
    classes = world.classes()
    forest = classes == _class_id("forest")
    water = classes == _class_id("water")
    return elevation(
        world.config.seed, forest, water, world.grid.x_centres(), world.grid.y_centres()
    )


def _class_id(name: str) -> int:
    from cropflow.demo.legend import CLASSES

    return next(c.id for c in CLASSES if c.name == name)


def write_dem(root: Path, final_root: Path, world: DemoWorld) -> dict[str, Any]:
    """Write the DEM COG (EPSG:4326, GLO-30 spacing) and return its STAC item."""
    grid = world.grid
    z = dem_array(world)
    west, south, east, north = transform_bounds(grid.crs, "EPSG:4326", *grid.bounds)
    dx, dy = DEM_SPACING
    west, south = np.floor(west / dx) * dx - dx, np.floor(south / dy) * dy - dy
    east, north = np.ceil(east / dx) * dx + dx, np.ceil(north / dy) * dy + dy
    width, height = round((east - west) / dx), round((north - south) / dy)
    transform = Affine(dx, 0.0, west, 0.0, -dy, north)
    out = np.full((height, width), -32767.0, np.float32)
    reproject(
        z,
        out,
        src_transform=grid.transform,
        src_crs=grid.crs,
        dst_transform=transform,
        dst_crs="EPSG:4326",
        dst_nodata=-32767.0,
        resampling=Resampling.bilinear,
    )
    iid = f"Copernicus_DSM_COG_10_N{int(np.floor(south)):02d}_00_E{int(np.floor(west)):03d}_00_DEM"
    path = root / "cogs" / DEM_COLLECTION / f"{iid}.tif"
    write_cog(path, out, transform, CRS.from_epsg(4326), nodata=-32767)
    geometry = {
        "type": "Polygon",
        "coordinates": [
            [[west, north], [east, north], [east, south], [west, south], [west, north]]
        ],
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": STAC_EXTENSIONS_DEM,
        "id": iid,
        "geometry": geometry,
        "bbox": [west, south, east, north],
        "collection": DEM_COLLECTION,
        "links": [],
        "properties": {
            "datetime": "2021-04-22T00:00:00Z",
            "platform": "TanDEM-X",
            "gsd": 30,
            "proj:epsg": 4326,
            "proj:shape": [height, width],
            "proj:transform": list(transform)[:6],
        },
        "assets": {
            "data": {
                "href": (final_root / path.relative_to(root)).as_uri(),
                "type": COG_MEDIA_TYPE,
                "title": iid,
                "roles": ["data"],
                "raster:bands": [
                    {
                        "nodata": -32767,
                        "data_type": "float32",
                        "spatial_resolution": 30,
                        "unit": "m",
                    }
                ],
            }
        },
    }


def collection_of(
    collection_id: str, features: list[dict[str, Any]], title: str, description: str
) -> dict[str, Any]:
    """A collection whose extent is its items'."""
    bboxes = np.array([f["bbox"] for f in features], dtype=float)
    times = sorted(f["properties"]["datetime"] for f in features)
    return {
        "type": "Collection",
        "id": collection_id,
        "stac_version": "1.0.0",
        "title": title,
        "description": description,
        "links": [],
        "license": "CC0-1.0",
        "extent": {
            "spatial": {
                "bbox": [
                    [
                        float(bboxes[:, 0].min()),
                        float(bboxes[:, 1].min()),
                        float(bboxes[:, 2].max()),
                        float(bboxes[:, 3].max()),
                    ]
                ]
            },
            "temporal": {"interval": [[times[0], times[-1]]]},
        },
        "providers": [{"name": "cropflow demo generator", "roles": ["producer", "host"]}],
    }
