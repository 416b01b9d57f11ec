"""Spectral indices by name, computed from composite reflectance (float32, NaN-propagating).

An index names the *roles* it needs (``nir``, ``red``...) and, for each, the band names that
can play it, by preference: the near infrared is ``nir`` (Sentinel-2 B08) or, in a cube
without it, ``nir08`` (Sentinel-2 B8A, Landsat OLI band 5). An index is computed only from
bands the cube has, by name (:func:`index_bands`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Arrays = Mapping[str, np.ndarray]

#: Band names that can play each role, by preference.
ROLES: dict[str, tuple[str, ...]] = {
    "blue": ("blue",),
    "green": ("green",),
    "red": ("red",),
    "rededge1": ("rededge1",),
    "nir": ("nir", "nir08"),
    "swir16": ("swir16",),
    "swir22": ("swir22",),
}


def _finite(out: np.ndarray) -> np.ndarray:
    out[~np.isfinite(out)] = np.nan
    return out.astype(np.float32, copy=False)


def _nd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Normalised difference (a - b) / (a + b); NaN where the sum is 0."""
    out: np.ndarray = np.subtract(a, b, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(out, np.add(a, b, dtype=np.float32), out=out)
    # finite inputs give a non-finite ratio only where the sum is 0 (+-inf, or NaN for 0/0)
    np.copyto(out, np.float32(np.nan), where=np.isinf(out))
    return out


def _evi(x: Arrays) -> np.ndarray:
    nir, red, blue = x["nir"], x["red"], x["blue"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return _finite(2.5 * (nir - red) / (nir + 6.0 * red - 7.5 * blue + 1.0))


def _savi(x: Arrays) -> np.ndarray:
    nir, red = x["nir"], x["red"]
    with np.errstate(divide="ignore", invalid="ignore"):
        return _finite(1.5 * (nir - red) / (nir + red + 0.5))


@dataclass(frozen=True)
class SpectralIndex:
    """A named index: the roles it needs (see :data:`ROLES`) and how to compute it from arrays
    keyed by role."""

    name: str
    roles: tuple[str, ...]
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

#: Indices a cube gets when its parameters name none, where its bands allow them.
DEFAULT_INDICES: tuple[str, ...] = ("ndvi",)


def index_bands(name: str, bands: Sequence[str]) -> dict[str, str] | None:
    """Role -> band name for index ``name`` from ``bands``; None when a role has no band."""
    out: dict[str, str] = {}
    for role in INDICES[name].roles:
        found = next((b for b in ROLES[role] if b in bands), None)
        if found is None:
            return None
        out[role] = found
    return out


def missing_roles(name: str, bands: Sequence[str]) -> list[str]:
    """Roles of index ``name`` that no band of ``bands`` can play (as 'nir (nir or nir08)')."""
    out = []
    for role in INDICES[name].roles:
        if not any(b in bands for b in ROLES[role]):
            names = ROLES[role]
            out.append(role if names == (role,) else f"{role} ({' or '.join(names)})")
    return out


def default_indices(bands: Sequence[str]) -> list[str]:
    """The default indices the bands allow (none for a cube of, say, NDVI or backscatter)."""
    return [i for i in DEFAULT_INDICES if index_bands(i, bands) is not None and i not in bands]


def compute_index(name: str, bands: Arrays) -> np.ndarray:
    """Index ``name`` from reflectance arrays keyed by band name."""
    roles = index_bands(name, list(bands))
    if roles is None:
        raise KeyError(f"index {name!r} needs bands {missing_roles(name, list(bands))}")
    return INDICES[name].compute({role: bands[band] for role, band in roles.items()})
