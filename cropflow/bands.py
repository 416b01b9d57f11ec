"""Band names and the rule for reading one band of one item.

Bands are named by the collection profile that reads them (:mod:`cropflow.stac.profiles`):
any name (``red``, ``ndvi``, ``vv``, ``elevation``...); nothing downstream refers to a band by
position. The Sentinel-2 names below follow Earth Search v1 (STAC ``eo`` common names); the
built-in Sentinel-2 profiles, the demo region and the spectral indices use them.
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

    ``value = stored * scale + offset``; ``stored == nodata`` is missing (NaN allowed).
    """

    band: str
    asset_key: str
    href: str
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    resolution: float | None = None
    band_index: int = 1
    """Band of the asset's file (1 = first)."""
    kind: str = "reflectance"
    """What the band measures (:class:`cropflow.stac.profiles.BandKind`)."""
    dtype: str | None = None
    """Stored data type the profile declares (checked against the COG header)."""
    sign: str = "none"
    """How the href is signed when it is read ("planetary-computer"); hrefs are kept unsigned
    (no token in plans, cache keys or saved files) and signed afresh at every read."""
