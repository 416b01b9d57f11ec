"""STAC items and collection shaped like Earth Search v1 ``sentinel-2-l2a``.

Field by field after the real items in ``../shared/fixtures/stac/earthsearch-v1_*.json``: the
same ``stac_extensions``, asset keys, titles, ``eo:bands``, ``raster:bands`` (scale 0.0001,
offset -0.1, nodata 0), projection fields, ``s2:*`` scene statistics computed from the SCL that
was written, MGRS fields, and ``earthsearch:boa_offset_applied``. Differences, on purpose:
hrefs are absolute ``file://`` URIs; ``proj:code`` is given next to ``proj:epsg`` (pystac >= 1.12
keeps only ``proj:code``, stackstac 0.5 reads only ``proj:epsg``); each asset has ``proj:bbox``;
S3 paths, payload ids and the jp2/metadata/visual assets are omitted.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from pyproj import Transformer

from cropflow.bands import S2_SPECTRAL, S2_TEN_BANDS, SCL
from cropflow.demo.config import GENERATOR_VERSION
from cropflow.demo.grid import LATITUDE_BAND, UTM_ZONE, TileGeometry
from cropflow.demo.sky import Acquisition

#: The extensions of a real Earth Search v1 sentinel-2-l2a item, in its order.
ITEM_EXTENSIONS = [
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]
COLLECTION_EXTENSIONS = [
    "https://stac-extensions.github.io/item-assets/v1.0.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
]
COG_MEDIA_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
#: Radiometry of baseline >= 04.00 products: reflectance = DN * 0.0001 - 0.1.
SCALE, OFFSET = 0.0001, -0.1
#: Processing baseline of the products, and of their reprocessed duplicates.
BASELINE, REPROCESSED_BASELINE = "05.10", "05.11"
RELATIVE_ORBIT = 65
#: Per-tile viewing geometry (the tiles sit at different places across the swath).
VIEW_INCIDENCE = {"33UUT": 6.1, "33UVT": 3.4}
VIEW_AZIMUTH = {"33UUT": 105.2, "33UVT": 104.6}

#: Band -> (title, common name, centre wavelength um, FWHM um), as Earth Search writes them.
BAND_META: dict[str, tuple[str, str, float, float]] = {
    "blue": ("Blue - 10m", "blue", 0.49, 0.098),
    "green": ("Green - 10m", "green", 0.56, 0.045),
    "red": ("Red - 10m", "red", 0.665, 0.038),
    "rededge1": ("Red Edge 1 - 20m", "rededge", 0.704, 0.019),
    "rededge2": ("Red Edge 2 - 20m", "rededge", 0.74, 0.018),
    "rededge3": ("Red Edge 3 - 20m", "rededge", 0.783, 0.028),
    "nir": ("NIR 1 - 10m", "nir", 0.842, 0.145),
    "nir08": ("NIR 2 - 20m", "nir08", 0.865, 0.033),
    "swir16": ("SWIR 1.6μm - 20m", "swir16", 1.61, 0.143),
    "swir22": ("SWIR 2.2μm - 20m", "swir22", 2.19, 0.242),
}
#: Collection-level band descriptions, as in the real collection's summaries.
BAND_DESCRIPTIONS = {
    "blue": "Blue (band 2)",
    "green": "Green (band 3)",
    "red": "Red (band 4)",
    "rededge1": "Red edge 1 (band 5)",
    "rededge2": "Red edge 2 (band 6)",
    "rededge3": "Red edge 3 (band 7)",
    "nir": "NIR 1 (band 8)",
    "nir08": "NIR 2 (band 8A)",
    "swir16": "SWIR 1 (band 11)",
    "swir22": "SWIR 2 (band 12)",
}
SCL_TITLE = "Scene classification map (SCL)"

#: SCL code -> name of its s2:*_percentage property.
SCL_PERCENTAGES = {
    1: "s2:saturated_defective_pixel_percentage",
    2: "s2:dark_features_percentage",
    3: "s2:cloud_shadow_percentage",
    4: "s2:vegetation_percentage",
    5: "s2:not_vegetated_percentage",
    6: "s2:water_percentage",
    7: "s2:unclassified_percentage",
    8: "s2:medium_proba_clouds_percentage",
    9: "s2:high_proba_clouds_percentage",
    10: "s2:thin_cirrus_percentage",
    11: "s2:snow_ice_percentage",
}


def _num(x: float) -> float | int:
    """Integral floats as ints (the real items write ``399960``, not ``399960.0``)."""
    return int(x) if float(x).is_integer() else float(x)


def _stamp(when: datetime) -> str:
    """``2024-05-01T10:06:29.123000Z`` (the items' datetime format)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stamp_ms(when: datetime) -> str:
    """``2024-05-01T12:51:07.123Z`` (the items' created/updated format)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def scl_statistics(scl: np.ndarray) -> dict[str, float]:
    """Sen2Cor's scene percentages of valid pixels, and ``eo:cloud_cover`` (8 + 9 + 10)."""
    total = scl.size
    valid = int(np.count_nonzero(scl))
    counts = np.bincount(scl.ravel(), minlength=12)
    stats = {"s2:nodata_pixel_percentage": round(100.0 * (total - valid) / total, 6)}
    for code, key in SCL_PERCENTAGES.items():
        stats[key] = round(100.0 * counts[code] / valid, 6) if valid else 0.0
    cloudy = counts[8] + counts[9] + counts[10]
    stats["eo:cloud_cover"] = round(100.0 * cloudy / valid, 6) if valid else 0.0
    return stats


def footprint(
    tile: TileGeometry, epsg: int
) -> tuple[dict[str, Any], list[float], dict[str, float]]:
    """GeoJSON polygon, bbox and centroid (lon/lat) of a tile."""
    to_wgs84 = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
    xmin, ymin, xmax, ymax = tile.bounds
    t = np.linspace(0.0, 1.0, 5)
    xs = np.concatenate(
        [xmin + (xmax - xmin) * t, np.full(4, xmax), xmax - (xmax - xmin) * t[1:], np.full(4, xmin)]
    )
    ys = np.concatenate(
        [
            np.full(5, ymax),
            ymax - (ymax - ymin) * t[1:],
            np.full(4, ymin),
            ymin + (ymax - ymin) * t[1:],
        ]
    )
    lon, lat = to_wgs84.transform(xs, ys)
    ring = [[round(float(a), 9), round(float(b), 9)] for a, b in zip(lon, lat, strict=True)]
    if ring[-1] != ring[0]:
        ring.append(ring[0])
    bbox = [
        round(float(min(lon)), 6),
        round(float(min(lat)), 6),
        round(float(max(lon)), 6),
        round(float(max(lat)), 6),
    ]
    clon, clat = to_wgs84.transform(0.5 * (xmin + xmax), 0.5 * (ymin + ymax))
    return (
        {"type": "Polygon", "coordinates": [ring]},
        bbox,
        {
            "lat": round(float(clat), 5),
            "lon": round(float(clon), 5),
        },
    )


def item_id(acq: Acquisition, tile: TileGeometry, sequence: int) -> str:
    """Earth Search item id, e.g. ``S2A_33UUT_20240501_0_L2A``."""
    sat = "A" if acq.platform.endswith("a") else "B"
    return f"S2{sat}_{tile.mgrs}_{acq.date:%Y%m%d}_{sequence}_L2A"


def _asset(href: str, band: str, tile: TileGeometry, res: float, data_type: str) -> dict[str, Any]:
    rows, cols = tile.shape(res)
    transform = tile.transform(res)
    asset: dict[str, Any] = {"href": href, "type": COG_MEDIA_TYPE}
    if band == SCL:
        asset["title"] = SCL_TITLE
    else:
        title, common, centre, fwhm = BAND_META[band]
        asset["title"] = title
        asset["eo:bands"] = [
            {
                "name": S2_SPECTRAL[band][1],
                "common_name": common,
                "center_wavelength": centre,
                "full_width_half_max": fwhm,
            }
        ]
    asset["gsd"] = _num(res)
    asset["proj:shape"] = [rows, cols]
    asset["proj:transform"] = [_num(v) for v in transform[:6]]
    asset["proj:bbox"] = [_num(v) for v in tile.bounds]
    raster: dict[str, Any] = {"nodata": 0, "data_type": data_type, "spatial_resolution": _num(res)}
    if band != SCL:
        raster["scale"] = SCALE
        raster["offset"] = OFFSET
    asset["raster:bands"] = [raster]
    asset["roles"] = ["data"] if band == SCL else ["data", "reflectance"]
    return asset


def s2_item(
    *,
    acq: Acquisition,
    tile: TileGeometry,
    epsg: int,
    sequence: int,
    baseline: str,
    published: datetime,
    sun: tuple[float, float],
    scl_stats: dict[str, float],
    hrefs: dict[str, str],
    collection_id: str,
) -> dict[str, Any]:
    """One item as Earth Search v1 writes it (``hrefs``: asset key -> file URI)."""
    geometry, bbox, centroid = footprint(tile, epsg)
    sat = "A" if acq.platform.endswith("a") else "B"
    days = (acq.date - datetime(2024, 1, 1).date()).days
    absolute_orbit = (44_520 if sat == "A" else 35_660) + round(days * 14.3)
    generated = acq.datetime + timedelta(hours=2, minutes=11, seconds=38)
    bl = baseline.replace(".", "")
    sensing = f"{acq.datetime:%Y%m%dT%H%M%S}"
    gen = f"{generated:%Y%m%dT%H%M%S}"
    props: dict[str, Any] = {
        "created": _stamp_ms(published),
        "platform": acq.platform,
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "eo:cloud_cover": scl_stats["eo:cloud_cover"],
        "proj:epsg": epsg,
        "proj:code": f"EPSG:{epsg}",
        "proj:centroid": centroid,
        "mgrs:utm_zone": UTM_ZONE,
        "mgrs:latitude_band": LATITUDE_BAND,
        "mgrs:grid_square": tile.grid_square,
        "grid:code": f"MGRS-{tile.mgrs}",
        "view:azimuth": VIEW_AZIMUTH.get(tile.mgrs, 105.0),
        "view:incidence_angle": VIEW_INCIDENCE.get(tile.mgrs, 5.0),
        "view:sun_azimuth": round(sun[0], 6),
        "view:sun_elevation": round(sun[1], 6),
        "s2:tile_id": f"S2{sat}_OPER_MSI_L2A_TL_2{sat}PS_{gen}_A{absolute_orbit:06d}_"
        f"T{tile.mgrs}_N{baseline}",
        "s2:degraded_msi_data_percentage": 0,
        **{k: v for k, v in scl_stats.items() if k != "eo:cloud_cover"},
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": baseline,
        "s2:product_uri": f"S2{sat}_MSIL2A_{sensing}_N{bl}_R{RELATIVE_ORBIT:03d}_T{tile.mgrs}_"
        f"{gen}.SAFE",
        "s2:generation_time": _stamp(generated),
        "s2:datatake_id": f"GS2{sat}_{sensing}_{absolute_orbit:06d}_N{baseline}",
        "s2:datatake_type": "INS-NOBS",
        "s2:datastrip_id": f"S2{sat}_OPER_MSI_L2A_DS_2{sat}PS_{gen}_S{sensing}_N{baseline}",
        "s2:reflectance_conversion_factor": round(
            1.0 / (1.0 - 0.01673 * np.cos(0.0172 * (acq.date.timetuple().tm_yday - 4))) ** 2, 12
        ),
        "datetime": _stamp(acq.datetime),
        "s2:sequence": str(sequence),
        # False: the pixels still carry the +1000 of baseline >= 04.00 (DN = refl*1e4 + 1000),
        # which Earth Search signals with this flag off and raster:bands offset -0.1.
        "earthsearch:boa_offset_applied": False,
        "processing:software": {"cropflow-demo": GENERATOR_VERSION},
        "updated": _stamp_ms(published),
    }
    assets = {
        band: _asset(hrefs[band], band, tile, float(S2_SPECTRAL[band][0]), "uint16")
        for band in S2_TEN_BANDS
    }
    assets[SCL] = _asset(hrefs[SCL], SCL, tile, 20.0, "uint8")
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": list(ITEM_EXTENSIONS),
        "id": item_id(acq, tile, sequence),
        "geometry": geometry,
        "bbox": bbox,
        "properties": props,
        "links": [],
        "assets": assets,
        "collection": collection_id,
    }


def collection(
    collection_id: str, bbox: list[float], start: datetime, end: datetime
) -> dict[str, Any]:
    """The collection, shaped like Earth Search's ``sentinel-2-l2a``."""
    eo_bands = [
        {
            "name": band,
            "common_name": BAND_META[band][1],
            "description": BAND_DESCRIPTIONS[band],
            "center_wavelength": BAND_META[band][2],
            "full_width_half_max": BAND_META[band][3],
        }
        for band in S2_TEN_BANDS
    ]
    item_assets: dict[str, Any] = {}
    for band in (*S2_TEN_BANDS, SCL):
        res = float(S2_SPECTRAL[band][0]) if band != SCL else 20.0
        entry: dict[str, Any] = {"type": COG_MEDIA_TYPE}
        if band == SCL:
            entry["title"] = SCL_TITLE
            entry["raster:bands"] = [
                {"nodata": 0, "data_type": "uint8", "spatial_resolution": _num(res)}
            ]
            entry["roles"] = ["data"]
        else:
            entry["title"] = f"{BAND_DESCRIPTIONS[band]} - {int(res)}m"
            entry["eo:bands"] = [eo_bands[S2_TEN_BANDS.index(band)]]
            entry["gsd"] = _num(res)
            entry["raster:bands"] = [
                {
                    "nodata": 0,
                    "data_type": "uint16",
                    "bits_per_sample": 15,
                    "spatial_resolution": _num(res),
                    "scale": SCALE,
                    "offset": OFFSET,
                }
            ]
            entry["roles"] = ["data", "reflectance"]
        item_assets[band] = entry
    return {
        "type": "Collection",
        "id": collection_id,
        "stac_version": "1.0.0",
        "title": "Sentinel-2 Level-2A (cropflow demo region, synthetic)",
        "description": "A synthetic Sentinel-2 L2A region generated by cropflow.demo: "
        "two overlapping MGRS tile windows in Brandenburg (UTM 33N), one season every few "
        "days, with clouds, shadows and cirrus. Shaped like Earth Search v1 sentinel-2-l2a.",
        "links": [],
        "stac_extensions": list(COLLECTION_EXTENSIONS),
        "extent": {
            "spatial": {"bbox": [bbox]},
            "temporal": {"interval": [[_stamp(start), _stamp(end)]]},
        },
        "license": "CC0-1.0",
        "keywords": ["sentinel", "earth observation", "synthetic", "cropflow"],
        "providers": [
            {
                "name": "cropflow demo generator",
                "roles": ["producer", "processor", "host"],
            }
        ],
        "summaries": {
            "platform": ["sentinel-2a", "sentinel-2b"],
            "constellation": ["sentinel-2"],
            "instruments": ["msi"],
            "gsd": [10, 20],
            "view:off_nadir": [0],
            "eo:bands": eo_bands,
        },
        "item_assets": item_assets,
    }
