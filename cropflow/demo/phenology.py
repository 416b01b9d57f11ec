"""Seasonal surface fractions of every land-cover unit, day by day.

Crops follow a double-logistic green-up and senescence (Beck et al. 2006 style), then a sharp
harvest that leaves stubble, later tilled into bare soil. Winter crops start the season already
green, summer crops emerge in May and June, the double crop grows twice, rapeseed and sunflower
bloom yellow. Grassland is mown (green drop, cut hay, regrowth), broadleaved trees leaf out and
shed. Every field shifts and stretches its class calendar and scales its peak cover (vigour), so
that classes overlap as they do in reality.

Fractions are per *unit*: unit 0 is the grassy margin between fields, units ``1..N`` are the
parcels (unit id = field id), then the roads and the hedges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from cropflow.demo.spectra import ENDMEMBER_NAMES

#: Columns of a fraction table: the endmembers, then bare soil.
FRACTIONS: tuple[str, ...] = (*ENDMEMBER_NAMES, "soil")
_COL = {name: i for i, name in enumerate(FRACTIONS)}


@dataclass(frozen=True)
class Calendar:
    """A crop calendar in day-of-year, for an average field of the class."""

    winter_cover: float  # green cover at the start of the season (winter crops)
    green_up: float  # middle of the spring green-up
    green_up_days: float  # logistic time scale of the green-up
    peak_cover: float  # green cover at the peak (before vigour)
    senescence: float  # middle of the senescence
    senescence_days: float
    harvest: float
    residue: float  # stubble / straw cover left by the harvest
    tillage: float | None  # when the stubble is ploughed under (None: not in the season)
    structure: float  # NIR canopy-structure factor (planophile > 1 > erectophile)
    flowering: tuple[float, float, float] | None = None  # (day, sd days, share of canopy)
    catch_crop_share: float = 0.0  # share of fields sown with a catch crop after harvest
    shift_sd: float = 7.0  # field-to-field spread of the calendar, days
    second: Calendar | None = None  # a second crop after the harvest (double cropping)


CALENDARS: dict[str, Calendar] = {
    "winter_wheat": Calendar(0.30, 100, 7, 0.93, 180, 6, 210, 0.35, 238, 0.95, None, 0.3, 5.0),
    "winter_barley": Calendar(0.35, 92, 7, 0.90, 166, 5, 189, 0.35, 215, 0.93, None, 0.3, 5.0),
    "winter_rapeseed": Calendar(
        0.40, 86, 7, 0.95, 174, 6, 200, 0.45, 228, 1.03, (122, 9, 0.75), 0.0, 5.0
    ),
    "spring_barley": Calendar(0.0, 130, 6, 0.86, 192, 5, 216, 0.30, 246, 0.93, None, 0.2),
    "maize": Calendar(0.0, 172, 7, 0.92, 262, 7, 282, 0.25, None, 1.00),
    "sugar_beet": Calendar(0.0, 152, 8, 0.95, 292, 12, 290, 0.10, None, 1.10),
    "sunflower": Calendar(0.0, 158, 6, 0.86, 220, 7, 258, 0.40, None, 1.00, (200, 7, 0.6)),
    "soybean": Calendar(0.0, 175, 6, 0.90, 248, 6, 268, 0.30, None, 1.05),
    "double_crop": Calendar(
        0.35,
        92,
        7,
        0.90,
        164,
        5,
        184,
        0.35,
        188,
        0.93,
        shift_sd=5.0,
        second=Calendar(0.0, 222, 6, 0.86, 300, 8, 330, 0.20, None, 1.00),
    ),
    "peas": Calendar(0.0, 125, 6, 0.85, 178, 5, 200, 0.30, 230, 1.00),
}

#: Mowing days of a meadow (three cuts) and of clover grass (four cuts).
MEADOW_CUTS = (145.0, 190.0, 240.0)
CLOVER_CUTS = (140.0, 175.0, 210.0, 250.0)
#: Leaf-out and leaf-fall of broadleaved trees (middle of the transition, day of year).
LEAF_OUT, LEAF_FALL = 118.0, 292.0


@dataclass
class UnitTable:
    """Per-unit parameters (index = unit id). Built by :mod:`cropflow.demo.landscape`."""

    cover: list[str]
    shift: np.ndarray  # calendar shift, days
    stretch: np.ndarray  # calendar stretch factor
    vigour: np.ndarray  # peak cover factor
    catch_crop: np.ndarray  # bool
    conifer: np.ndarray  # conifer share of forests
    impervious: np.ndarray  # sealed share of built-up units
    mown: np.ndarray  # bool: grassland is mown (meadow), else grazed (pasture)
    soil_brightness: np.ndarray
    groups: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = np.array(self.cover)
        self.groups = {c: np.flatnonzero(names == c) for c in sorted(set(self.cover))}

    @property
    def n_units(self) -> int:
        return len(self.cover)


def _gauss(t: np.ndarray | float, centre: float, sd: float) -> np.ndarray:
    return np.exp(-0.5 * ((np.asarray(t, dtype=np.float64) - centre) / sd) ** 2)


def _crop(
    cal: Calendar,
    doy: float,
    shift: np.ndarray,
    stretch: np.ndarray,
    vigour: np.ndarray,
    catch: np.ndarray,
) -> dict[str, np.ndarray]:
    t = cal.green_up + (doy - shift - cal.green_up) / stretch
    peak = np.minimum(cal.peak_cover * vigour, 0.97)
    winter = np.minimum(cal.winter_cover * vigour, peak)
    structure = winter + (peak - winter) * expit((t - cal.green_up) / cal.green_up_days)
    harvested = expit((t - cal.harvest) / 1.5)
    green = structure * (1 - expit((t - cal.senescence) / cal.senescence_days)) * (1 - harvested)
    tilled = 0.0 if cal.tillage is None else expit((t - cal.tillage) / 2.0)
    canopy = structure * (1 - harvested) + cal.residue * harvested * (1 - tilled)
    dry = np.clip(canopy - green, 0.0, None)
    flower = np.zeros_like(green)
    if cal.flowering is not None:
        day, sd, share = cal.flowering
        flower = share * _gauss(t, day, sd) * green
        green = green - flower
    struct_term = green * (cal.structure - 1.0)
    if cal.second is not None:
        nxt = _crop(cal.second, doy, shift, np.ones_like(stretch), vigour, np.zeros_like(catch))
        green, dry, flower = green + nxt["green"], dry + nxt["dry"], flower + nxt["flower"]
        struct_term = struct_term + nxt["green_structure"]
    if cal.catch_crop_share > 0:
        green = green + 0.5 * catch * expit((t - (cal.harvest + 40.0)) / 6.0)
    total = green + dry + flower
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-9), 1.0)
    return {
        "green": green * scale,
        "green_structure": struct_term * scale,
        "dry": dry * scale,
        "flower": flower * scale,
    }


def grass_base(doy: float, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """Green cover of unmown grass: greens up in April, browns a little in October."""
    t = doy - np.asarray(shift, dtype=np.float64)
    result: np.ndarray = (0.5 + 0.4 * expit((t - 100.0) / 8.0)) * (
        1 - 0.3 * expit((doy - 292.0) / 10.0)
    )
    return result


def _grass(
    doy: float, shift: np.ndarray, vigour: np.ndarray, cuts: np.ndarray, mown: np.ndarray
) -> dict[str, np.ndarray]:
    base = np.minimum(grass_base(doy, shift) * vigour, 0.95)
    recovery = np.ones_like(base)
    hay = np.zeros_like(base)
    for cut in cuts:
        since = doy - (cut + shift)
        after = expit(since / 0.5) * mown
        recovery *= 1 - 0.65 * np.exp(-np.maximum(since, 0.0) / 12.0) * after
        hay += 0.30 * np.exp(-np.maximum(since, 0.0) / 5.0) * after
    grazed = np.where(mown, 1.0, 0.85)
    green = base * recovery * grazed
    dry = np.minimum(hay + 0.05 + (1 - grazed) * 0.5, 1.0 - green)
    return {"green": green, "green_structure": green * -0.08, "dry": dry}


def leaf_on(doy: float, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """Leaf cover of broadleaved trees (0 in winter, 1 in summer)."""
    t = doy - np.asarray(shift, dtype=np.float64)
    result: np.ndarray = expit((t - LEAF_OUT) / 5.0) * (1 - expit((t - LEAF_FALL) / 7.0))
    return result


def algal_bloom(doy: float) -> float:
    """Strength of the lake's summer algal bloom, 0..1."""
    return float(_gauss(doy, 215.0, 22.0))


def unit_fractions(units: UnitTable, doy: float) -> np.ndarray:
    """Surface fractions ``(n_units, len(FRACTIONS))`` of every unit on ``doy``; rows sum to 1."""
    out = np.zeros((units.n_units, len(FRACTIONS)), dtype=np.float64)
    for cover, idx in units.groups.items():
        parts = _cover_parts(cover, units, idx, doy)
        for name, value in parts.items():
            out[idx, _COL[name]] = value
    cover_sum = out[:, : _COL["soil"]].sum(axis=1) - out[:, _COL["green_structure"]]
    out[:, _COL["soil"]] = np.clip(1.0 - cover_sum, 0.0, 1.0)
    return out


def _cover_parts(cover: str, u: UnitTable, idx: np.ndarray, doy: float) -> dict[str, np.ndarray]:
    n = idx.size
    if cover in CALENDARS:
        return _crop(
            CALENDARS[cover],
            doy,
            u.shift[idx],
            u.stretch[idx],
            u.vigour[idx],
            u.catch_crop[idx].astype(np.float64),
        )
    if cover in ("grassland", "clover_grass"):
        cuts = np.array(CLOVER_CUTS if cover == "clover_grass" else MEADOW_CUTS)
        return _grass(doy, u.shift[idx], u.vigour[idx], cuts, u.mown[idx].astype(np.float64))
    leaves = leaf_on(doy, u.shift[idx])
    if cover == "forest":
        conifer = u.conifer[idx]
        return {
            "conifer": 0.95 * conifer,
            "broadleaf": 0.95 * (1 - conifer) * leaves,
            "bare_branches": 0.95 * (1 - conifer) * (1 - leaves),
        }
    if cover == "water":
        return {"water": np.ones(n)}
    if cover == "built_up":
        sealed = u.impervious[idx]
        return {
            "impervious": sealed,
            "broadleaf": (1 - sealed) * 0.6 * leaves,
            "bare_branches": (1 - sealed) * 0.6 * (1 - leaves),
            "green": (1 - sealed) * 0.3 * grass_base(doy),
        }
    if cover == "road":
        return {"asphalt": np.full(n, 0.8), "green": 0.12 * grass_base(doy, u.shift[idx])}
    if cover == "hedge":
        return {
            "broadleaf": 0.85 * leaves,
            "bare_branches": 0.85 * (1 - leaves),
            "green": 0.10 * grass_base(doy, u.shift[idx]),
        }
    if cover == "margin":
        return {"green": 0.6 * grass_base(doy, u.shift[idx]), "dry": np.full(n, 0.2)}
    raise KeyError(f"no land-cover model for {cover!r}")
