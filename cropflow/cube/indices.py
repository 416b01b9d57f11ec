"""Spectral indices by name, computed from composite reflectance (float32, NaN-propagating)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

Arrays = Mapping[str, np.ndarray]


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised difference (a - b) / (a + b); NaN where the sum is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (a - b) / (a + b)
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32, copy=False)


def _evi(x: Arrays) -> np.ndarray:
    nir, red, blue = x["nir"], x["red"], x["blue"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 2.5 * (nir - red) / (nir + 6.0 * red - 7.5 * blue + 1.0)
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32, copy=False)


def _savi(x: Arrays) -> np.ndarray:
    nir, red = x["nir"], x["red"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 1.5 * (nir - red) / (nir + red + 0.5)
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32, copy=False)


@dataclass(frozen=True)
class SpectralIndex:
    """A named index: the bands it needs and how to compute it."""

    name: str
    bands: tuple[str, ...]
    compute: Callable[[Arrays], np.ndarray]
    description: str


def _nd_index(name: str, a: str, b: str, description: str) -> SpectralIndex:
    return SpectralIndex(name, (a, b), lambda x: _nd(x[a], x[b]), description)


#: Every index cropflow computes, by name.
INDICES: dict[str, SpectralIndex] = {
    i.name: i
    for i in (
        _nd_index("ndvi", "nir", "red", "Normalised difference vegetation index."),
        _nd_index("ndwi", "green", "nir", "Normalised difference water index (McFeeters)."),
        _nd_index("mndwi", "green", "swir16", "Modified NDWI (Xu)."),
        _nd_index("ndmi", "nir", "swir16", "Normalised difference moisture index."),
        _nd_index("nbr", "nir", "swir22", "Normalised burn ratio."),
        _nd_index("ndre", "nir", "rededge1", "Normalised difference red-edge index."),
        SpectralIndex("evi", ("nir", "red", "blue"), _evi, "Enhanced vegetation index."),
        SpectralIndex("savi", ("nir", "red"), _savi, "Soil-adjusted vegetation index (L=0.5)."),
    )
}


def compute_index(name: str, bands: Arrays) -> np.ndarray:
    """Index ``name`` from reflectance arrays keyed by band name."""
    return INDICES[name].compute(bands)
