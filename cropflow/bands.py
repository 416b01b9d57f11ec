"""The band vocabulary: every band in cropflow is referred to by one of these names.

Names follow Earth Search v1 (the most widely used public Sentinel-2 catalog). Provider
profiles (:mod:`cropflow.stac.providers`) map each provider's asset keys and radiometric rules
onto these names; nothing downstream ever refers to a band by position.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Sentinel-2 spectral bands by name, with their native resolution (m) and ESA band id.
S2_SPECTRAL: dict[str, tuple[int, str]] = {
    "coastal": (60, "B01"),
    "blue": (10, "B02"),
    "green": (10, "B03"),
    "red": (10, "B04"),
    "rededge1": (20, "B05"),
    "rededge2": (20, "B06"),
    "rededge3": (20, "B07"),
    "nir": (10, "B08"),
    "nir08": (20, "B8A"),
    "nir09": (60, "B09"),
    "swir16": (20, "B11"),
    "swir22": (20, "B12"),
}

#: The ten bands at 10 m and 20 m that land-cover work uses.
S2_TEN_BANDS: tuple[str, ...] = (
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "swir16",
    "swir22",
)

#: Scene classification layer (a categorical band, never scaled).
SCL = "scl"

#: SCL classes (Sentinel-2 L2A product specification).
SCL_CLASSES: dict[int, str] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_pixels",
    3: "cloud_shadows",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}


@dataclass(frozen=True)
class BandRule:
    """How to read one band of one item: where, and how to turn stored numbers into values.

    ``value = stored * scale + offset``; ``stored == nodata`` is missing.
    """

    band: str
    asset_key: str
    href: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    resolution: float | None = None
