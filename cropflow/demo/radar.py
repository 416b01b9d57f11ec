"""Sentinel-1 backscatter of the demo region: a water-cloud model over the same fields.

Each pixel's gamma0 (linear power) at VV and VH is, for the land part of the pixel, a
vegetation layer over soil (Attema & Ulaby's water-cloud model)::

    sigma = A * V * cos(theta) * (1 - tau2) + tau2 * sigma_soil,   tau2 = exp(-2 B V / cos(theta))

``V`` is the canopy's water/biomass proxy: the unit's green, structure, dry and flower
fractions of the optical simulation, times the crop's height (maize and sunflower tall,
cereals middling, beet and soybean low, grass lower) and the field's vigour. Cereals' upright
stems attenuate VV more than VH (a larger ``B_vv``), so their VV dips while they grow, as
observed. The soil term rises with the top-soil moisture of the optical simulation (rain
events drying out in days), so backscatter follows rain the optical surface only shows where
soil is bare. Forest, water (wind-roughened, date by date), built-up (double bounce) and
roads have their own levels. Multiplicative speckle (gamma, 4.4 looks like Sentinel-1 GRD)
is independent per pixel, date and polarisation.

The truth is available without speckle (:func:`backscatter` with ``looks=None``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

from cropflow.demo.noise import stream
from cropflow.demo.phenology import FRACTIONS, UnitTable, unit_fractions

#: Equivalent number of looks of Sentinel-1 IW GRD high resolution.
LOOKS = 4.4
#: Local incidence angle (degrees) of each orbit direction over the region.
INCIDENCE = {"ascending": 40.5, "descending": 35.0}
#: Days between acquisitions of one orbit direction (the other is offset by half of it).
REVISIT_DAYS = 6
#: Crop height factors of the vegetation proxy (unlisted covers: 0.5).
HEIGHT = {
    "winter_wheat": 1.0,
    "winter_barley": 0.95,
    "spring_barley": 0.9,
    "winter_rapeseed": 1.35,
    "maize": 1.8,
    "sunflower": 1.6,
    "sugar_beet": 0.85,
    "soybean": 0.8,
    "double_crop": 1.0,
    "grassland": 0.35,
    "clover_grass": 0.4,
    "margin": 0.3,
    "road": 0.2,
    "hedge": 1.2,
}
#: Covers whose upright stems attenuate VV strongly.
CEREALS = frozenset({"winter_wheat", "winter_barley", "spring_barley", "double_crop"})
#: Water-cloud parameters (A: volume scattering, B: attenuation) per polarisation.
A = {"vv": 0.11, "vh": 0.028}
B = {"vv": 0.55, "vh": 0.45}
B_CEREAL_VV = 1.4
#: Levels (dB) of the non-land fractions of a pixel: (vv, vh).
LEVELS_DB = {
    "conifer": (-7.0, -12.5),
    "broadleaf": (-7.5, -13.0),
    "bare_branches": (-9.0, -15.5),
    "impervious": (-3.0, -10.5),
    "asphalt": (-17.0, -25.0),
}
#: Water: calm -24 dB VV, up to -14 dB with wind; VH 8 dB lower.
WATER_CALM_DB, WATER_WIND_DB, WATER_VH_DROP_DB = -24.0, 10.0, 8.0
#: Bare soil: dry -19 dB VV, +10 dB when saturated; VH 8.5 dB below VV.
SOIL_DRY_DB, SOIL_WET_DB, SOIL_VH_DROP_DB = -19.0, 10.0, 8.5

_COL = {name: i for i, name in enumerate(FRACTIONS)}


@dataclass(frozen=True)
class RadarPass:
    """One Sentinel-1 acquisition over the region."""

    date: date
    orbit: str  # "ascending" | "descending"
    platform: str

    @property
    def incidence(self) -> float:
        return INCIDENCE[self.orbit]


def plan_passes(start: date, end: date) -> list[RadarPass]:
    """Both orbit directions every :data:`REVISIT_DAYS` days, offset by half of it."""
    out: list[RadarPass] = []
    day = 0
    while start + timedelta(days=day) <= end:
        when = start + timedelta(days=day)
        orbit = "ascending" if (day // (REVISIT_DAYS // 2)) % 2 == 0 else "descending"
        out.append(RadarPass(when, orbit, "SENTINEL-1A"))
        day += REVISIT_DAYS // 2
    return out


def _db(x: float | np.ndarray) -> np.ndarray:
    return np.asarray(10.0 ** (np.asarray(x, dtype=np.float64) / 10.0))


def backscatter(
    *,
    seed: int,
    units: UnitTable,
    unit_raster: np.ndarray,
    vigour: np.ndarray,
    moisture: np.ndarray,
    radar_pass: RadarPass,
    looks: float | None = LOOKS,
) -> dict[str, np.ndarray]:
    """gamma0 (linear power, float32) at ``vv`` and ``vh`` on the 10 m world grid.

    ``vigour`` and ``moisture`` are the optical simulation's per-pixel canopy vigour and
    top-soil moisture (0..1) of the day; ``looks=None`` leaves speckle out (the truth).
    """
    doy = radar_pass.date.timetuple().tm_yday
    frac = unit_fractions(units, doy)
    cos_t = float(np.cos(np.radians(radar_pass.incidence)))
    height = np.array([HEIGHT.get(c, 0.5) for c in units.cover])
    cereal = np.array([c in CEREALS for c in units.cover])
    canopy = (
        frac[:, _COL["green"]]
        + frac[:, _COL["green_structure"]]
        + 0.5 * frac[:, _COL["dry"]]
        + frac[:, _COL["flower"]]
    )
    land = (
        frac[:, _COL["green"]]
        + frac[:, _COL["green_structure"]]
        + frac[:, _COL["dry"]]
        + frac[:, _COL["flower"]]
        + frac[:, _COL["soil"]]
    )
    v = (np.divide(canopy, land, out=np.zeros_like(canopy), where=land > 0) * height)[unit_raster]
    v = v * vigour
    land_px = land[unit_raster]
    rng_wind = stream(seed, "radar-wind", radar_pass.date.toordinal())
    wind = float(rng_wind.uniform(0.0, 1.0))
    out: dict[str, np.ndarray] = {}
    for pol, drop in (("vv", 0.0), ("vh", SOIL_VH_DROP_DB)):
        b = np.where(cereal, B_CEREAL_VV, B["vv"]) if pol == "vv" else np.full(len(cereal), B[pol])
        tau2 = np.exp(-2.0 * b[unit_raster] * v / cos_t)
        soil = _db(SOIL_DRY_DB + SOIL_WET_DB * moisture - drop)
        sigma = land_px * (A[pol] * v * cos_t * (1.0 - tau2) + tau2 * soil)
        k = 0 if pol == "vv" else 1
        for name, levels in LEVELS_DB.items():
            sigma = sigma + frac[:, _COL[name]][unit_raster] * _db(levels[k])
        water_db = WATER_CALM_DB + WATER_WIND_DB * wind - (WATER_VH_DROP_DB if k else 0.0)
        sigma = sigma + frac[:, _COL["water"]][unit_raster] * _db(water_db)
        if looks is not None:
            rng = stream(seed, "speckle", radar_pass.date.toordinal(), zlib.crc32(pol.encode()))
            sigma = sigma * rng.gamma(looks, 1.0 / looks, size=sigma.shape)
        out[pol] = sigma.astype(np.float32)
    return out
