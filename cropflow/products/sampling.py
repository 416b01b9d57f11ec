"""A stratified random sample of a published class map, for labelling and area estimation.

Good practice (Olofsson et al. 2014, "Good practices for estimating area and assessing
accuracy of land change", Remote Sensing of Environment 148, 42-57, section 5.1) estimates
class areas from a probability sample of reference labels, stratified by the map's classes.
This module designs and draws that sample:

* **strata** are the map's classes (by id, named by the map's own class table, see
  :func:`read_class_map`); pixel counts and areas are counted window by window
  (:func:`count_strata`), nodata pixels (255) are never strata;
* **sample size**: a total ``n``, or the smallest ``n`` whose anticipated standard error of the
  overall accuracy (or of one class's area proportion) is at most ``target_se``, from
  anticipated user's accuracies (Olofsson et al. 2014, eq. 13, after Cochran 1977, ch. 5);
* **allocation** to strata: ``proportional`` (n_h ∝ W_h), ``equal``, or ``neyman``
  (n_h ∝ W_h S_h, Cochran 1977, ch. 5, with S_h = sqrt(U_h (1 - U_h)) from the anticipated
  user's accuracy U_h), each with a minimum per stratum and never more than a stratum's pixels;
* **drawing**: ``n_h`` distinct pixels uniformly at random in each stratum (simple random
  sampling without replacement within strata), found in a second window-wise pass, so memory
  stays bounded by a window and the sample whatever the size of the map. The same map, options
  and seed always give the same points. Points are pixel centres, shuffled so that their order
  does not give their stratum away.

The labellers' copy (:func:`labellers_copy`) has no map class: reference labels must be given
blind to the map (Olofsson et al. 2014, section 4, response design).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
from affine import Affine
from pydantic import BaseModel, Field
from pyproj import CRS, Transformer
from rasterio.errors import RasterioError
from rasterio.windows import Window as RioWindow

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import ConfigError, DataError
from cropflow.predict.store import NODATA
from cropflow.products.area_params import Allocation, SampleDesignOptions, SampleDesignParams
from cropflow.products.areas import row_areas_ha
from cropflow.products.cog import windows

#: Columns of a drawn sample, in order (plus ``geometry``).
SAMPLE_COLUMNS = (
    "point_id",
    "stratum_id",
    "stratum_name",
    "row",
    "col",
    "x",
    "y",
    "lon",
    "lat",
    "label",
)
#: Columns that give a point's map class away: never in the labellers' copy.
STRATUM_COLUMNS = ("stratum_id", "stratum_name", "row", "col")
#: Columns of the per-stratum design table.
DESIGN_COLUMNS = (
    "class_id",
    "class_name",
    "pixels",
    "area_ha",
    "weight",
    "anticipated_users_accuracy",
    "n",
)


class StratumSize(BaseModel):
    """One stratum of a class map: a class, its pixels and their area."""

    class_id: int
    class_name: str
    color: str = "#808080"
    pixels: int = Field(ge=0, description="Pixels of the class in the map.")
    area_ha: float = Field(ge=0.0, description="Their area in hectares.")


class MapStrata(BaseModel):
    """What a sample design and an area estimate need to know about a class map."""

    class_map: str = Field(description="Path of the map.")
    classes: ClassMap
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    height: int
    width: int
    strata: list[StratumSize] = Field(description="One per legend class, in legend order.")
    nodata: list[int] = Field(description="Pixel values that are no class (255, the map's).")
    nodata_pixels: int = Field(description="Pixels without a class (never sampled).")

    @property
    def total_pixels(self) -> int:
        return sum(s.pixels for s in self.strata)

    @property
    def total_area_ha(self) -> float:
        return float(sum(s.area_ha for s in self.strata))

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)


class StratumAllocation(BaseModel):
    """A stratum of a sample design and the points it gets."""

    class_id: int
    class_name: str
    pixels: int
    area_ha: float
    weight: float = Field(description="W_h: share of the mapped area.")
    anticipated_users_accuracy: float
    n: int = Field(description="Points allocated (and drawn).")


class SampleDesignSummary(BaseModel):
    """The design of a drawn sample: per stratum pixels, area and points."""

    class_map: str = Field("", description="The map sampled (empty: designed without one).")
    crs_wkt: str = Field("", description="The map's CRS (empty: designed without a map).")
    n: int = Field(description="Points drawn.")
    allocation: Allocation
    min_per_stratum: int
    seed: int
    target_se: float | None
    target_class: str | None
    anticipated_se_overall_accuracy: float = Field(
        description="Standard error of the overall accuracy expected from this allocation and "
        "the anticipated user's accuracies."
    )
    anticipated_se_target: float | None = Field(
        None, description="Expected standard error of target_class's area proportion."
    )
    strata: list[StratumAllocation]
    nodata_pixels: int = 0

    def table(self) -> pd.DataFrame:
        """One row per stratum (``DESIGN_COLUMNS``)."""
        return pd.DataFrame([s.model_dump() for s in self.strata], columns=list(DESIGN_COLUMNS))


@dataclass(frozen=True)
class DrawnSample:
    """Sample points (``SAMPLE_COLUMNS`` + geometry, in the map's CRS) and their design."""

    points: gpd.GeoDataFrame
    summary: SampleDesignSummary


# --- reading the map ---------------------------------------------------------------------------


def open_map(path: Path) -> Any:
    try:
        return rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise DataError(
            f"class map {path} cannot be read: {exc}",
            hint="give the class_map.tif of a published product folder",
        ) from exc


def read_class_map(path: str | Path) -> ClassMap:
    """The legend stored in a class map COG (tag ``CLASSES``, else band tags ``CLASS_<id>``)."""
    path = Path(path)
    with open_map(path) as src:
        tags = src.tags()
        band_tags = src.tags(1)
    if "CLASSES" in tags:
        try:
            entries = json.loads(tags["CLASSES"])
            return ClassMap(classes=[ClassDef(**e) for e in entries])
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"class map {path} has an unreadable CLASSES tag: {exc}",
                hint="write the map with cropflow's products (write_class_cog)",
            ) from exc
    named = {
        int(k.removeprefix("CLASS_")): v
        for k, v in band_tags.items()
        if k.startswith("CLASS_") and k.removeprefix("CLASS_").isdigit()
    }
    if not named:
        raise DataError(
            f"class map {path} has no class table (no CLASSES tag, no CLASS_<id> band tags)",
            hint="use a class_map.tif written by cropflow's products, which names its classes",
        )
    return ClassMap(classes=[ClassDef(id=i, name=n) for i, n in sorted(named.items())])


def count_strata(path: str | Path, classes: ClassMap | None = None) -> MapStrata:
    """Pixels and hectares of every legend class, counted window by window.

    Pixel areas come from the map's grid (:func:`cropflow.products.areas.row_areas_ha`:
    ``|a*e - b*d|`` for any pixel shape in a projected CRS, per row on the ellipsoid in a
    geographic one). DataError when the map holds values that are neither a class nor nodata.
    """
    path = Path(path)
    legend = classes if classes is not None else read_class_map(path)
    with open_map(path) as src:
        if src.count != 1 or src.dtypes[0] != "uint8":
            raise DataError(
                f"class map {path} has {src.count} band(s) of {src.dtypes[0]}, not one uint8 band",
                hint="give the class_map.tif of a product folder, not probability/confidence",
            )
        if src.crs is None:
            raise DataError(f"class map {path} has no CRS", hint="write the map with its CRS")
        height, width, transform = src.height, src.width, src.transform
        crs_wkt = src.crs.to_wkt()
        nodata = nodata_values(src.nodata)
        row_ha = row_areas_ha(crs_wkt, transform, height)
        pixels = np.zeros(256, np.int64)
        hectares = np.zeros(256, np.float64)
        for w in windows(height, width):
            block = src.read(1, window=RioWindow(w.col0, w.row0, w.width, w.height))
            flat = block.ravel()
            pixels += np.bincount(flat, minlength=256)
            hectares += np.bincount(flat, weights=np.repeat(row_ha[w.rows], w.width), minlength=256)
    known = set(legend.ids) | nodata
    stray = [v for v in np.flatnonzero(pixels) if int(v) not in known]
    if stray:
        raise DataError(
            f"class map {path} has pixel values {[int(v) for v in stray]} that are not in its "
            f"class table {dict(zip(legend.ids, legend.names, strict=True))}",
            hint="the map and its class table disagree; publish the map again",
        )
    strata = [
        StratumSize(
            class_id=c.id,
            class_name=c.name,
            color=c.color,
            pixels=int(pixels[c.id]),
            area_ha=float(hectares[c.id]),
        )
        for c in legend.classes
    ]
    return MapStrata(
        class_map=str(path),
        classes=legend,
        crs_wkt=crs_wkt,
        transform=(transform.a, transform.b, transform.c, transform.d, transform.e, transform.f),
        height=height,
        width=width,
        strata=strata,
        nodata=sorted(nodata),
        nodata_pixels=int(sum(pixels[v] for v in nodata)),
    )


def nodata_values(nodata: float | None) -> set[int]:
    """Pixel values that are no class: 255 always, and the map's own nodata."""
    values = {NODATA}
    if nodata is not None and float(nodata).is_integer() and 0 <= nodata <= 255:
        values.add(int(nodata))
    return values


# --- sample size and allocation (pure arithmetic) ------------------------------------------------


def allocation_shares(
    weights: npt.ArrayLike, sd: npt.ArrayLike, allocation: Allocation
) -> npt.NDArray[np.float64]:
    """Share of the sample each stratum should get (sums to 1 over strata with weight > 0).

    proportional: W_h; equal: 1/k; neyman: W_h S_h / sum(W S) (Neyman allocation, Cochran
    1977, ch. 5)."""
    w = np.asarray(weights, np.float64)
    s = np.asarray(sd, np.float64)
    present = w > 0
    if not present.any():
        raise DataError("the map has no classified pixel", hint="check the class map")
    if allocation == "proportional":
        raw = np.where(present, w, 0.0)
    elif allocation == "equal":
        raw = present.astype(np.float64)
    else:
        raw = np.where(present, w * s, 0.0)
        if raw.sum() <= 0:
            raw = np.where(present, w, 0.0)
    return np.asarray(raw / raw.sum(), np.float64)


def allocate(shares: npt.ArrayLike, n: int, minimum: int, capacity: npt.ArrayLike) -> list[int]:
    """Integer points per stratum: ∝ ``shares``, summing to ``n`` exactly.

    Each stratum with pixels gets at least ``min(minimum, capacity)`` and at most its
    ``capacity`` (its pixels); the rest is shared in proportion to ``shares`` among the strata
    not held at a bound, and rounded by largest remainders. ConfigError when ``n`` cannot
    satisfy the bounds."""
    cap = np.asarray(capacity, np.int64)
    share = np.asarray(shares, np.float64)
    lo = np.minimum(minimum, cap)
    if n > int(cap.sum()):
        raise ConfigError(
            f"a sample of {n} points needs more pixels than the map's {int(cap.sum())}",
            hint="draw fewer points",
        )
    if int(lo.sum()) > n:
        raise ConfigError(
            f"n={n} is less than the {int(lo.sum())} points the minimum of {minimum} per "
            f"stratum needs over {int((cap > 0).sum())} strata",
            hint="draw more points or lower min_per_stratum",
        )
    ideal = _bounded_shares(share, float(n), lo.astype(np.float64), cap.astype(np.float64))
    return _round_to_total(ideal, n, lo, cap)


def _bounded_shares(
    share: npt.NDArray[np.float64],
    total: float,
    lo: npt.NDArray[np.float64],
    cap: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Real-valued allocation ∝ share within [lo, cap], summing to total (strata with no
    capacity get 0). Caps are settled first (they only raise the others), then minimums (they
    only lower the others)."""
    out = np.zeros_like(share)
    fixed = cap <= 0
    for bound in ("cap", "lo"):
        while True:
            free = ~fixed
            if not free.any():
                break
            remaining = total - out[fixed].sum()
            s = share[free]
            ideal = remaining * (s / s.sum() if s.sum() > 0 else np.full(s.size, 1 / s.size))
            out[free] = ideal
            idx = np.flatnonzero(free)
            hit = ideal > cap[free] if bound == "cap" else ideal < lo[free]
            if not hit.any():
                break
            out[idx[hit]] = cap[idx[hit]] if bound == "cap" else lo[idx[hit]]
            fixed[idx[hit]] = True
    return out


def _round_to_total(
    ideal: npt.NDArray[np.float64],
    n: int,
    lo: npt.NDArray[np.int64],
    cap: npt.NDArray[np.int64],
) -> list[int]:
    """Largest-remainder rounding of ``ideal`` to integers within [lo, cap] summing to n."""
    base = np.clip(np.floor(ideal + 1e-9).astype(np.int64), lo, cap)
    frac = ideal - base
    order = np.argsort(-frac, kind="stable")
    diff = n - int(base.sum())
    while diff > 0:
        moved = False
        for i in order:
            if diff == 0:
                break
            if base[i] < cap[i]:
                base[i] += 1
                diff -= 1
                moved = True
        if not moved:
            break
    for i in order[::-1]:
        while diff < 0 and base[i] > lo[i]:
            base[i] -= 1
            diff += 1
    return [int(v) for v in base]


def anticipated_variance(weights: npt.ArrayLike, sd: npt.ArrayLike, n: npt.ArrayLike) -> float:
    """Anticipated variance of a stratified estimate: sum W_h² S_h² / n_h (Cochran 1977,
    ch. 5, without the finite population correction); infinite if a stratum with weight has
    no point."""
    w = np.asarray(weights, np.float64)
    s = np.asarray(sd, np.float64)
    k = np.asarray(n, np.float64)
    used = w > 0
    if (k[used] <= 0).any():
        return math.inf
    return float(np.sum(w[used] ** 2 * s[used] ** 2 / k[used]))


def sample_size_for_target(
    weights: npt.ArrayLike, sd: npt.ArrayLike, shares: npt.ArrayLike, target_se: float
) -> int:
    """Smallest n (before rounding to strata) whose anticipated SE is ``target_se`` under the
    allocation ``shares``: n = sum(W_h² S_h² / a_h) / SE². With neyman shares this is
    Olofsson et al. (2014) eq. 13, n = (sum W_h S_h / SE)²."""
    w = np.asarray(weights, np.float64)
    s = np.asarray(sd, np.float64)
    a = np.asarray(shares, np.float64)
    used = (w > 0) & (s > 0)
    if (a[used] <= 0).any():
        return 0
    return math.ceil(float(np.sum(w[used] ** 2 * s[used] ** 2 / a[used])) / target_se**2 - 1e-9)


def _users_accuracies(options: SampleDesignOptions, classes: ClassMap) -> list[float]:
    unknown = sorted(set(options.anticipated_users_accuracy) - set(classes.names))
    if unknown:
        raise ConfigError(
            f"anticipated_users_accuracy names classes {unknown} that are not in the map's "
            f"legend {classes.names}",
            hint="name the map's classes as its legend does",
        )
    return [
        options.anticipated_users_accuracy.get(n, options.default_users_accuracy)
        for n in classes.names
    ]


def target_sd(users: Sequence[float], weights: Sequence[float], target: int | None) -> list[float]:
    """Anticipated standard deviation S_h, per stratum, of the quantity the design aims at.

    Overall accuracy (``target`` None): S_h = sqrt(U_h (1 - U_h)). Area proportion of class
    ``target`` (its index): in its own stratum the share is U_k; in every other stratum h the
    errors (1 - U_h) are assumed spread evenly over the other classes, so the share of class k
    is (1 - U_h)/(K - 1) with K the strata with pixels; S_h = sqrt(p (1 - p))."""
    u = np.asarray(users, np.float64)
    if target is None:
        return [float(v) for v in np.sqrt(u * (1 - u))]
    k = max(1, int((np.asarray(weights) > 0).sum()) - 1)
    p = (1 - u) / k
    p[target] = u[target]
    return [float(v) for v in np.sqrt(p * (1 - p))]


def design_allocation(
    strata: Sequence[StratumSize], options: SampleDesignOptions, classes: ClassMap
) -> SampleDesignSummary:
    """Sample size and points per stratum for ``options`` (no map reading, no drawing).

    With ``target_se``, n is the smallest size whose *integer* allocation (minimums and caps
    included) reaches the target, starting from :func:`sample_size_for_target`."""
    if options.target_class is not None and options.target_class not in classes.names:
        raise ConfigError(
            f"target_class {options.target_class!r} is not a class of the map's legend "
            f"{classes.names}",
            hint="name one of the map's classes",
        )
    total = sum(s.area_ha for s in strata)
    if total <= 0:
        raise DataError("the class map has no classified pixel", hint="check the map")
    weights = [s.area_ha / total for s in strata]
    capacity = [s.pixels for s in strata]
    users = _users_accuracies(options, classes)
    target = None if options.target_class is None else classes.names.index(options.target_class)
    sd_target = target_sd(users, weights, target)
    sd_oa = target_sd(users, weights, None)
    shares = allocation_shares(weights, sd_target, options.allocation)

    def alloc(n: int) -> list[int]:
        return allocate(shares, n, options.min_per_stratum, capacity)

    if options.n is not None:
        n = options.n
        if n > options.max_sample_size:
            raise ConfigError(
                f"n={n} is more than max_sample_size={options.max_sample_size}",
                hint="draw fewer points or raise max_sample_size",
            )
        counts = alloc(n)
    else:
        target_se = options.target_se
        if target_se is None:  # the validator requires n or target_se
            raise ConfigError("no sample size", hint="give n or target_se")
        counts = _smallest_allocation(
            alloc,
            lambda c: anticipated_variance(weights, sd_target, c) <= target_se**2,
            start=sample_size_for_target(weights, sd_target, shares, target_se),
            floor=sum(min(options.min_per_stratum, c) for c in capacity),
            limit=min(options.max_sample_size, sum(capacity)),
            what=f"a standard error of {target_se} for "
            + (options.target_class or "the overall accuracy"),
        )
    return SampleDesignSummary(
        n=sum(counts),
        allocation=options.allocation,
        min_per_stratum=options.min_per_stratum,
        seed=options.seed,
        target_se=options.target_se,
        target_class=options.target_class,
        anticipated_se_overall_accuracy=math.sqrt(anticipated_variance(weights, sd_oa, counts)),
        anticipated_se_target=(
            math.sqrt(anticipated_variance(weights, sd_target, counts))
            if target is not None
            else None
        ),
        strata=[
            StratumAllocation(
                class_id=s.class_id,
                class_name=s.class_name,
                pixels=s.pixels,
                area_ha=s.area_ha,
                weight=w,
                anticipated_users_accuracy=u,
                n=c,
            )
            for s, w, u, c in zip(strata, weights, users, counts, strict=True)
        ],
    )


def _smallest_allocation(
    alloc: Any, good: Any, start: int, floor: int, limit: int, what: str
) -> list[int]:
    """The allocation of the smallest n in [max(start, floor), limit] that is ``good``
    (exponential search, then bisection; the anticipated variance falls with n)."""
    lo = max(start, floor, 1)
    if lo > limit or not good(alloc(limit)):
        raise ConfigError(
            f"{what} needs more than {limit} points (max_sample_size or the map's pixels)",
            hint="accept a larger target_se, or raise max_sample_size",
        )
    if good(alloc(lo)):
        return list(alloc(lo))
    hi = lo
    while not good(alloc(hi)):
        lo, hi = hi, min(limit, hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if good(alloc(mid)):
            hi = mid
        else:
            lo = mid
    return list(alloc(hi))


# --- drawing ----------------------------------------------------------------------------------


def draw_sample(class_map: str | Path, options: SampleDesignOptions) -> DrawnSample:
    """Design and draw a stratified random sample of ``class_map`` (two window-wise passes).

    Returns the points (``SAMPLE_COLUMNS``: a shuffled ``point_id`` from 1, the stratum's class
    id and name, pixel row/col, pixel-centre x/y in the map's CRS, lon/lat, an empty ``label``)
    and the design summary."""
    path = Path(class_map)
    info = count_strata(path)
    design = design_allocation(info.strata, options, info.classes)
    design = design.model_copy(
        update={
            "class_map": str(path),
            "crs_wkt": info.crs_wkt,
            "nodata_pixels": info.nodata_pixels,
        }
    )
    rng = np.random.default_rng(options.seed)
    ranks = {
        s.class_id: np.sort(rng.choice(st.pixels, size=s.n, replace=False)).astype(np.int64)
        for s, st in zip(design.strata, info.strata, strict=True)
        if s.n > 0
    }
    rows, cols, ids = _pick_pixels(path, info, ranks)
    order = rng.permutation(rows.size)
    rows, cols, ids = rows[order], cols[order], ids[order]
    return DrawnSample(points=_points(info, rows, cols, ids), summary=design)


def _pick_pixels(
    path: Path, info: MapStrata, ranks: dict[int, npt.NDArray[np.int64]]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Rows, cols and class ids of the pixels whose rank (row-major order of the windows, of
    the pixels within a window) within their class is in ``ranks``."""
    seen = dict.fromkeys(ranks, 0)
    out_r: list[npt.NDArray[np.int64]] = []
    out_c: list[npt.NDArray[np.int64]] = []
    out_k: list[npt.NDArray[np.int64]] = []
    with open_map(path) as src:
        for w in windows(info.height, info.width):
            block = src.read(1, window=RioWindow(w.col0, w.row0, w.width, w.height)).ravel()
            counts = np.bincount(block, minlength=256)
            for cid, chosen in ranks.items():
                here = int(counts[cid])
                if here == 0:
                    continue
                start = seen[cid]
                a, b = np.searchsorted(chosen, [start, start + here])
                if b > a:
                    where = np.flatnonzero(block == cid)[chosen[a:b] - start]
                    out_r.append(w.row0 + where // w.width)
                    out_c.append(w.col0 + where % w.width)
                    out_k.append(np.full(where.size, cid, np.int64))
                seen[cid] = start + here
    if not out_r:
        empty = np.zeros(0, np.int64)
        return empty, empty.copy(), empty.copy()
    return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_k)


def _points(
    info: MapStrata,
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    ids: npt.NDArray[np.int64],
) -> gpd.GeoDataFrame:
    """The sample table: pixel centres in the map's CRS and in lon/lat."""
    t = info.affine
    x = np.asarray(t.a * (cols + 0.5) + t.b * (rows + 0.5) + t.c, np.float64)
    y = np.asarray(t.d * (cols + 0.5) + t.e * (rows + 0.5) + t.f, np.float64)
    crs = CRS.from_wkt(info.crs_wkt)
    to_lonlat = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    lon, lat = to_lonlat.transform(x, y)
    names = {s.class_id: s.class_name for s in info.strata}
    frame = pd.DataFrame(
        {
            "point_id": np.arange(1, rows.size + 1, dtype=np.int64),
            "stratum_id": ids.astype(np.int64),
            "stratum_name": [names[int(i)] for i in ids],
            "row": rows,
            "col": cols,
            "x": x,
            "y": y,
            "lon": np.asarray(lon, np.float64),
            "lat": np.asarray(lat, np.float64),
            "label": pd.Series([None] * rows.size, dtype=object),
        },
        columns=list(SAMPLE_COLUMNS),
    )
    return gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(x, y), crs=crs)


# --- writers ----------------------------------------------------------------------------------


def labellers_copy(points: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The sample without the columns that give a point's map class away."""
    keep = [c for c in points.columns if c not in STRATUM_COLUMNS]
    return gpd.GeoDataFrame(points[keep], geometry="geometry", crs=points.crs)


def write_sample_gpkg(points: gpd.GeoDataFrame, dest: Path, hide_strata: bool = False) -> Path:
    """The sample as a GeoPackage (layer ``sample``); ``hide_strata``: the labellers' copy."""
    table = labellers_copy(points) if hide_strata else points
    if dest.exists():
        dest.unlink()
    table.to_file(dest, layer="sample", driver="GPKG")
    return dest


def write_sample_csv(points: gpd.GeoDataFrame, dest: Path, hide_strata: bool = False) -> Path:
    """The sample as CSV (x/y in the map's CRS, lon/lat in WGS 84, no geometry column)."""
    table = labellers_copy(points) if hide_strata else points
    pd.DataFrame(table.drop(columns="geometry")).to_csv(dest, index=False)
    return dest


def write_sample(drawn: DrawnSample, folder: Path) -> dict[str, Path]:
    """Every file of a drawn sample in ``folder``::

    sample_design.gpkg   the points with their stratum (for the analyst)
    sample_labelling.gpkg, sample_labelling.csv
                         the labellers' copy: no map class, an empty ``label`` column
    sample_design.csv    one row per stratum: pixels, area, weight, anticipated U, n
    sample_design.json   the design summary

    All or nothing: the files are written to a folder aside and it replaces ``folder`` whole,
    so a failed write leaves the previous sample as it was.
    """
    import shutil
    import uuid

    from cropflow.storage import replace_dir

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        write_sample_gpkg(drawn.points, tmp / "sample_design.gpkg")
        write_sample_gpkg(drawn.points, tmp / "sample_labelling.gpkg", hide_strata=True)
        write_sample_csv(drawn.points, tmp / "sample_labelling.csv", hide_strata=True)
        drawn.summary.table().to_csv(tmp / "sample_design.csv", index=False)
        (tmp / "sample_design.json").write_text(drawn.summary.model_dump_json(indent=2) + "\n")
        replace_dir(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    files = {
        "design_gpkg": folder / "sample_design.gpkg",
        "labelling_gpkg": folder / "sample_labelling.gpkg",
        "labelling_csv": folder / "sample_labelling.csv",
        "design_csv": folder / "sample_design.csv",
        "design_json": folder / "sample_design.json",
    }
    return files


class SampleDesignResult(BaseModel):
    """A written sample design, by reference."""

    class_map: str = Field(description="The map sampled.")
    folder: str = Field(description="Where the sample files are.")
    files: dict[str, str] = Field(description="File kind -> path.")
    summary: SampleDesignSummary

    def markdown(self) -> str:
        """The design as markdown: points per stratum, the expected precision, the files."""
        s = self.summary
        lines = [
            f"# Sample design of `{self.class_map}`",
            "",
            f"{s.n} points, {s.allocation} allocation (at least {s.min_per_stratum} per "
            f"stratum), seed {s.seed}; expected standard error of the overall accuracy "
            f"{s.anticipated_se_overall_accuracy:.4f}"
            + (
                f", of {s.target_class}'s area proportion {s.anticipated_se_target:.4f}"
                if s.target_class and s.anticipated_se_target is not None
                else ""
            )
            + ".",
            "",
            "| stratum (map class) | pixels | area (ha) | weight | anticipated U | points |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for st in s.strata:
            lines.append(
                f"| {st.class_name} | {st.pixels:,} | {st.area_ha:,.1f} | {st.weight:.4f} | "
                f"{st.anticipated_users_accuracy:.2f} | {st.n} |"
            )
        lines += ["", "Files (give the labellers the `labelling` ones):", ""]
        lines += [f"- {kind}: `{path}`" for kind, path in self.files.items()]
        return "\n".join(lines) + "\n"


def design_sample(params: SampleDesignParams) -> SampleDesignResult:
    """Draw the sample of ``params.class_map`` and write its files (the command's one call):
    to ``params.output``, else ``sample/`` beside the class map."""
    from cropflow.storage import storage_errors

    folder = Path(params.output) if params.output else Path(params.class_map).parent / "sample"
    drawn = draw_sample(params.class_map, params)
    with storage_errors(folder.parent, "writing the sample design"):
        files = write_sample(drawn, folder)
    return SampleDesignResult(
        class_map=str(params.class_map),
        folder=str(folder),
        files={k: str(v) for k, v in files.items()},
        summary=drawn.summary,
    )
