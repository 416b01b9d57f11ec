"""Endmember spectra: bottom-of-atmosphere reflectance of pure surfaces in the ten S2 bands.

Values are typical Sentinel-2 L2A reflectances of each surface (green canopies: red ~0.03 and
NIR ~0.45, NDVI ~0.88; dry loamy-sand soil: a rising line, NDVI ~0.2; clear water: dark and
falling towards the SWIR). A pixel's reflectance is the linear mix of these spectra weighted by
the surface fractions that the phenology gives (see :mod:`cropflow.demo.phenology`).
"""

from __future__ import annotations

import numpy as np

from cropflow.bands import S2_TEN_BANDS


def _spectrum(**values: float) -> np.ndarray:
    if set(values) != set(S2_TEN_BANDS):
        raise ValueError(f"a spectrum needs exactly the bands {S2_TEN_BANDS}")
    return np.array([values[b] for b in S2_TEN_BANDS], dtype=np.float64)


# fmt: off
#: Endmembers of the mixing model (rows of the mixing matrix), by name.
ENDMEMBERS: dict[str, np.ndarray] = {
    # dense green herbaceous canopy (a crop or grass at full cover)
    "green": _spectrum(
        blue=0.025, green=0.065, red=0.030, rededge1=0.110, rededge2=0.330, rededge3=0.430,
        nir=0.460, nir08=0.470, swir16=0.230, swir22=0.110,
    ),
    # canopy-structure term: green fraction x (structure - 1) raises or lowers the NIR plateau
    "green_structure": _spectrum(
        blue=0.0, green=0.0, red=0.0, rededge1=0.044, rededge2=0.330, rededge3=0.430,
        nir=0.460, nir08=0.470, swir16=0.069, swir22=0.0,
    ),
    # senesced canopy, ripe cereals, straw and stubble
    "dry": _spectrum(
        blue=0.070, green=0.100, red=0.130, rededge1=0.160, rededge2=0.200, rededge3=0.230,
        nir=0.260, nir08=0.270, swir16=0.360, swir22=0.280,
    ),
    # a canopy in yellow bloom (rapeseed, sunflower heads)
    "flower": _spectrum(
        blue=0.045, green=0.150, red=0.120, rededge1=0.170, rededge2=0.300, rededge3=0.370,
        nir=0.400, nir08=0.410, swir16=0.250, swir22=0.130,
    ),
    # coniferous (pine) crowns
    "conifer": _spectrum(
        blue=0.020, green=0.040, red=0.022, rededge1=0.070, rededge2=0.180, rededge3=0.230,
        nir=0.250, nir08=0.260, swir16=0.120, swir22=0.055,
    ),
    # broadleaved crowns in leaf
    "broadleaf": _spectrum(
        blue=0.025, green=0.055, red=0.028, rededge1=0.095, rededge2=0.270, rededge3=0.350,
        nir=0.380, nir08=0.390, swir16=0.190, swir22=0.085,
    ),
    # leafless broadleaved crowns over litter
    "bare_branches": _spectrum(
        blue=0.045, green=0.065, red=0.075, rededge1=0.100, rededge2=0.130, rededge3=0.150,
        nir=0.170, nir08=0.180, swir16=0.210, swir22=0.140,
    ),
    # clear mesotrophic lake water
    "water": _spectrum(
        blue=0.045, green=0.060, red=0.035, rededge1=0.025, rededge2=0.015, rededge3=0.012,
        nir=0.010, nir08=0.009, swir16=0.004, swir22=0.003,
    ),
    # roofs, concrete, yards
    "impervious": _spectrum(
        blue=0.110, green=0.125, red=0.140, rededge1=0.150, rededge2=0.160, rededge3=0.165,
        nir=0.175, nir08=0.180, swir16=0.200, swir22=0.185,
    ),
    # road asphalt
    "asphalt": _spectrum(
        blue=0.065, green=0.075, red=0.085, rededge1=0.090, rededge2=0.095, rededge3=0.100,
        nir=0.105, nir08=0.108, swir16=0.130, swir22=0.120,
    ),
}

#: Order of the endmember fractions in the phenology tables (soil is handled apart).
ENDMEMBER_NAMES: tuple[str, ...] = tuple(ENDMEMBERS)

#: Dry loamy-sand soil, before per-pixel brightness and moisture.
SOIL = _spectrum(
    blue=0.080, green=0.110, red=0.150, rededge1=0.175, rededge2=0.195, rededge3=0.210,
    nir=0.230, nir08=0.240, swir16=0.330, swir22=0.280,
)

#: Relative darkening of saturated soil (moisture 1); water absorbs most in the SWIR.
SOIL_WET_DARKENING = _spectrum(
    blue=0.35, green=0.35, red=0.35, rededge1=0.35, rededge2=0.35, rededge3=0.36,
    nir=0.37, nir08=0.37, swir16=0.50, swir22=0.55,
)

#: Change of lake water at the peak of the summer algal bloom (chlorophyll: green, red edge).
ALGAL_BLOOM = _spectrum(
    blue=-0.005, green=0.015, red=0.000, rededge1=0.020, rededge2=0.010, rededge3=0.006,
    nir=0.004, nir08=0.004, swir16=0.0, swir22=0.0,
)

#: Top of a thick water cloud (L2A values; bright and flat, darker in the SWIR).
CLOUD = _spectrum(
    blue=0.62, green=0.60, red=0.59, rededge1=0.59, rededge2=0.60, rededge3=0.60,
    nir=0.61, nir08=0.61, swir16=0.43, swir22=0.30,
)

#: Thin ice cloud (cirrus) at full optical thickness of the model; blue-heavy scattering.
CIRRUS = _spectrum(
    blue=0.36, green=0.34, red=0.32, rededge1=0.31, rededge2=0.30, rededge3=0.30,
    nir=0.29, nir08=0.29, swir16=0.22, swir22=0.16,
)

# fmt: on

#: Share of the light that still reaches the ground in a cloud's full shadow (diffuse sky).
SHADOW_DIFFUSE = 0.35


def endmember_matrix(algal_bloom: float) -> np.ndarray:
    """Mixing matrix ``(n_endmembers, n_bands)``; ``algal_bloom`` in [0, 1] alters water."""
    rows = [ENDMEMBERS[name] for name in ENDMEMBER_NAMES]
    matrix = np.stack(rows)
    matrix[ENDMEMBER_NAMES.index("water")] += algal_bloom * ALGAL_BLOOM
    return matrix
