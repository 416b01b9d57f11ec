"""Planning a cube: items -> band rules -> grid, time axis, sources, blocks (no pixel read).

``plan_cube`` does everything that can fail cheaply before any pixel is read: the bands,
indices and mask groups against the collection profile, bands the items lack or a profile that
does not fit them (ProviderError), the grid, the time axis, which items touch the grid, and a
header check of every COG (missing or corrupt files are retried, then the item is recorded as
bad and skipped; past ``max_bad_fraction`` the build fails here; a COG whose data type or band
count contradicts the profile fails the plan). The plan is a plain, JSON-serialisable model:
it is what block tasks receive and what the cube's provenance records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timedelta
from typing import Literal

import numpy as np
import pystac
import rasterio
from odc.geo import geom
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, ConfigDict, Field
from pyproj import CRS

from cropflow import __version__
from cropflow.bands import BandRule
from cropflow.cube.grid import (
    Block,
    GridSpec,
    Lattice,
    aoi_geometry,
    blocks,
    choose_chunk,
    crs_string,
    derive_grid,
    lattice_grid,
    projected_bounds,
)
from cropflow.cube.indices import default_indices
from cropflow.cube.params import BBox, CubeParams, check_indices
from cropflow.cube.periods import (
    TimeAxis,
    acquisition_axis,
    composite_axis,
    solar_day,
    step_of_day,
)
from cropflow.errors import ConfigError, DataError, EmptySearchError, ProviderError
from cropflow.redact import unsigned_href
from cropflow.stac.profiles import (
    CollectionProfile,
    Composite,
    MaskSpec,
    is_metric,
    proj_field,
    stac_crs,
)
from cropflow.stac.signing import readable_href

log = logging.getLogger(__name__)

#: Version of the cube layout written by this module (stored in the cube's attributes).
CUBE_FORMAT = "cropflow-cube/1"
#: Threads used to check COG headers before the build.
PREFLIGHT_THREADS = 8

Kernel = Literal["dn", "float"]
#: Tolerance (in pixels) when deciding that two items' pixel lattices coincide.
LATTICE_TOL = 1e-6


class SourceBand(BaseModel):
    """One band of one item: where to read it and how stored numbers become values."""

    model_config = ConfigDict(frozen=True)

    href: str = Field(description="Unsigned href (signed afresh when read, see ``sign``).")
    sign: str = Field("none", description="How the href is signed when read.")
    band_index: int = Field(1, description="Band of the file (1 = first).")
    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None
    dtype: str | None = Field(None, description="Stored dtype (from the COG header).")
    crs: str | None = Field(None, description="CRS of the COG (from its header).")
    transform: tuple[float, float, float, float, float, float] | None = None
    shape: tuple[int, int] | None = None


class SourceItem(BaseModel):
    """One STAC item as the cube reads it."""

    model_config = ConfigDict(frozen=True)

    id: str
    datetime: datetime
    day: date = Field(description="Solar day of the acquisition.")
    step: int = Field(description="Index of the time step the item contributes to.")
    bbox: BBox = Field(description="Footprint bounds in the grid CRS.")
    bands: dict[str, SourceBand] = Field(description="Band name (data bands + mask) -> source.")


class BadItem(BaseModel):
    """An item skipped because a COG could not be read (the cube is then *degraded*: a rerun
    retries it and rewrites the blocks it touches)."""

    id: str
    band: str | None = None
    stage: Literal["preflight", "read"]
    reason: str


class BandInfo(BaseModel):
    """What the profile says about a cube band: its kind, unit and compositing."""

    model_config = ConfigDict(frozen=True)

    kind: str
    unit: str | None = None
    composite: Composite = "median"


class PlanMask(BaseModel):
    """The mask of a plan: the profile's mask specification and the groups masked."""

    model_config = ConfigDict(frozen=True)

    spec: MaskSpec
    groups: list[str]

    @property
    def band(self) -> str:
        return self.spec.band


class CubePlan(BaseModel):
    """Everything a block task needs; JSON-serialisable; identifies the cube by ``key``.

    ``params`` are the resolved parameters: bands, indices and mask groups filled from the
    collection profile where the caller left them unset. ``items`` are every item the cube is
    made of, those found unreadable before the build (``bad_items``) included: the key names
    the cube of these inputs, whichever could be read this time (the cube records what was
    skipped, and a rerun retries it)."""

    params: CubeParams
    grid: GridSpec
    axis: TimeAxis
    items: list[SourceItem]
    bad_items: list[BadItem] = Field(default_factory=list)
    n_items_in: int = Field(description="Items given to the planner (before any filtering).")
    kernels: dict[str, Kernel] = Field(description="Per data band: DN or float compositing.")
    band_info: dict[str, BandInfo] = Field(default_factory=dict, description="Per data band.")
    mask: PlanMask | None = None
    chunk: int = Field(description="Spatial chunk / block side in pixels.")
    count_dtype: Literal["uint8", "uint16"]
    provider: str | None = None
    profile_digest: str = Field("", description="Hash of the collection profile, as read.")
    search_uri: str | None = None
    key: str = ""

    @property
    def bands(self) -> list[str]:
        """The data bands (resolved)."""
        return list(self.params.bands or [])

    @property
    def indices(self) -> list[str]:
        """The indices (resolved)."""
        return list(self.params.indices or [])

    @property
    def mask_enabled(self) -> bool:
        return self.mask is not None

    @property
    def skipped_ids(self) -> set[str]:
        """Items the plan knows are unreadable (checked before the build): not read."""
        return {b.id for b in self.bad_items}

    def item(self, item_id: str) -> SourceItem | None:
        """The planned item ``item_id`` (None if the plan has none of that id)."""
        return next((i for i in self.items if i.id == item_id), None)

    @property
    def observed_steps(self) -> int:
        """Steps that may hold data: all of them, or those complete by ``params.as_of``."""
        return complete_steps(self.axis, self.params.as_of)

    @property
    def read_bands(self) -> list[str]:
        """Data bands, then the mask band when the mask is on."""
        extra = [self.mask.band] if self.mask is not None else []
        return [*self.bands, *extra]

    @property
    def variables(self) -> list[str]:
        """Data variables of the cube in order: bands, indices, valid_count, interpolated."""
        return [*self.bands, *self.indices, "valid_count", "interpolated"]

    def geobox(self) -> GeoBox:
        return self.grid.geobox()

    def blocks(self) -> list[Block]:
        return blocks(self.grid.shape, self.chunk)

    def identity(self) -> dict[str, object]:
        """What the key hashes: parameters, grid, axis, items and their sources (href without
        any signature or credential, band of the file, radiometry), the mask, format."""
        return {
            "format": CUBE_FORMAT,
            # orbit_state at its default is left out: cubes planned before it keep their key
            "params": self.params.model_dump(
                mode="json", exclude={"orbit_state"} if self.params.orbit_state == "any" else None
            ),
            "grid": self.grid.model_dump(mode="json"),
            "axis": self.axis.model_dump(mode="json"),
            "items": [
                {
                    "id": i.id,
                    "step": i.step,
                    "bands": {
                        b: [unsigned_href(s.href), s.band_index, s.scale, s.offset]
                        for b, s in i.bands.items()
                    },
                }
                for i in self.items
            ],
            "profile": self.profile_digest,
            "mask": self.mask.model_dump(mode="json") if self.mask else None,
            "band_info": {b: v.model_dump(mode="json") for b, v in self.band_info.items()},
            "chunk": self.chunk,
        }


def _item_datetime(item: pystac.Item) -> datetime:
    if item.datetime is not None:
        return item.datetime
    start = item.properties.get("start_datetime")
    if isinstance(start, str):
        return datetime.fromisoformat(start.replace("Z", "+00:00"))
    raise DataError(
        f"item {item.id!r} has no datetime nor start_datetime",
        hint="fix the item; every acquisition needs a time",
    )


def _lonlat_bbox(item: pystac.Item) -> BBox:
    if item.geometry is not None:
        g = geom.Geometry(item.geometry, "EPSG:4326")
        x0, y0, x1, y1 = g.boundingbox
        return (x0, y0, x1, y1)
    if item.bbox is not None and len(item.bbox) >= 4:
        b = item.bbox
        if len(b) == 6:
            return (b[0], b[1], b[3], b[4])
        return (b[0], b[1], b[2], b[3])
    raise DataError(
        f"item {item.id!r} has neither geometry nor bbox", hint="fix the item's footprint"
    )


def _union(boxes: Sequence[BBox]) -> BBox:
    a = np.asarray(boxes, dtype=float)
    return (a[:, 0].min(), a[:, 1].min(), a[:, 2].max(), a[:, 3].max())


def _to_grid_bbox(lonlat: BBox, crs: CRS) -> BBox:
    w, s, e, n = lonlat
    step = max(e - w, n - s) / 32 or 1e-4
    x0, y0, x1, y1 = geom.box(w, s, e, n, "EPSG:4326").to_crs(crs, resolution=step).boundingbox
    return (x0, y0, x1, y1)


def _intersects(a: BBox, b: BBox) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# --- Bands, indices and mask from the collection profile -------------------------------------


def default_bands(profile: CollectionProfile, items: Sequence[pystac.Item]) -> list[str]:
    """The profile's default cube bands; for a profile that declares none, its
    non-categorical bands that every item has."""
    if profile.default_bands is not None:
        return list(profile.default_bands)
    bands = [b for b in profile.cube_bands() if all(b in profile.bands_available(i) for i in items)]
    if not bands:
        raise ProviderError(
            f"the items have none of the bands of collection profile {profile.name!r} in common "
            f"({', '.join(profile.bands)})",
            hint="name the cube's bands, or fix the profile's band assets",
        )
    return bands


def resolve_params(
    profile: CollectionProfile, params: CubeParams, items: Sequence[pystac.Item]
) -> tuple[CubeParams, PlanMask | None, dict[str, BandInfo]]:
    """``params`` with bands, indices and mask groups filled from the profile, checked
    against it (ConfigError/ProviderError naming the bad name and the fix)."""
    bands = list(params.bands) if params.bands is not None else default_bands(profile, items)
    for band in bands:
        profile.spec(band)  # ProviderError naming the profile's bands
    indices = list(params.indices) if params.indices is not None else default_indices(bands)
    try:
        check_indices(indices, bands)
    except ValueError as exc:
        raise ConfigError(f"cube indices: {exc}", hint="drop the index or add its bands") from None
    mask: PlanMask | None = None
    groups = params.mask
    if profile.mask is None:
        if groups:
            raise ConfigError(
                f"mask groups {groups} asked, but collection profile {profile.name!r} has no mask",
                hint="set mask: [] (no mask), or add a mask to the profile",
            )
    else:
        groups = list(profile.mask.default) if groups is None else list(groups)
        unknown = [g for g in groups if g not in profile.mask.groups]
        if unknown:
            raise ConfigError(
                f"mask groups {unknown} are not in collection profile {profile.name!r}",
                hint=f"use groups of the profile: {', '.join(profile.mask.groups)} ([]: none)",
            )
        if groups:
            mask = PlanMask(spec=profile.mask, groups=groups)
            if mask.band in bands:
                raise ConfigError(
                    f"the mask band {mask.band!r} cannot also be a data band of the cube",
                    hint=f"drop {mask.band!r} from bands, or set mask: []",
                )
    if params.dilation and mask is None:
        raise ConfigError(
            "dilation is set but no mask is applied", hint="set mask groups or dilation=0"
        )
    info = {
        b: BandInfo(
            kind=str(profile.kind(b)), unit=profile.spec(b).unit, composite=profile.composite(b)
        )
        for b in bands
    }
    resolved = params.model_copy(
        update={"bands": bands, "indices": indices, "mask": mask.groups if mask else []}
    )
    return resolved, mask, info


def band_rules(
    items: Sequence[pystac.Item], profile: CollectionProfile, bands: Sequence[str]
) -> list[dict[str, BandRule]]:
    """The profile's rule for every (item, band); ProviderError before any work otherwise."""
    out: list[dict[str, BandRule]] = []
    for item in items:
        per: dict[str, BandRule] = {}
        for band in bands:
            try:
                per[band] = profile.band_rule(item, band)
            except ProviderError as exc:
                raise ProviderError(
                    f"cannot build a cube with band {band!r}: {exc.message}",
                    hint=exc.hint or "ask only for bands the items have",
                ) from None
        out.append(per)
    return out


# --- The grid -------------------------------------------------------------------------------


def _stac_transform(item: pystac.Item, asset_key: str) -> tuple[float, ...] | None:
    value = proj_field(item, asset_key, "proj:transform")
    if isinstance(value, list) and len(value) >= 6:
        return tuple(float(v) for v in value[:6])
    return None


def native_resolution(
    rules: Sequence[dict[str, BandRule]], bands: Sequence[str], grid_crs: CRS | None
) -> float | None:
    """The finest native pixel size (metres) of ``bands`` when the grid is in metres."""
    if grid_crs is not None and not is_metric(grid_crs):
        return None
    sizes = [r[b].resolution for r in rules for b in bands]
    known = [s for s in sizes if s is not None]
    return min(known) if known and len(known) == len(sizes) else None


def _item_lattice(
    item: pystac.Item, per: dict[str, BandRule], bands: Sequence[str], params: CubeParams
) -> tuple[Lattice, BBox]:
    """The lattice of the item's finest data band, and its extent, from STAC or the header."""
    found: list[tuple[float, Lattice, BBox]] = []
    for band in bands:
        rule = per[band]
        crs = stac_crs(item, rule.asset_key)
        transform = _stac_transform(item, rule.asset_key)
        shape = proj_field(item, rule.asset_key, "proj:shape")
        if crs is None or transform is None or not isinstance(shape, list):
            header = _open_header(
                readable_href(rule.href, rule.sign), params.retries, params.retry_backoff_s
            )
            if isinstance(header, str) or header.crs is None:
                raise DataError(
                    f"item {item.id!r}: the grid of band {band!r} is unknown (no proj:code/"
                    f"proj:transform/proj:shape and the COG header is unreadable: {header})",
                    hint="add projection fields to the items, or do not use grid like_items",
                )
            crs, transform, shape = (
                CRS.from_user_input(header.crs),
                header.transform,
                [*header.shape],
            )
        a, b, c, d, e, f = transform
        if b or d or e >= 0:
            raise DataError(
                f"item {item.id!r}: band {band!r} is not north-up (transform {list(transform)})",
                hint="grid like_items keeps only north-up grids; give the cube a grid instead",
            )
        h, w = int(shape[0]), int(shape[1])
        lat = Lattice(crs=crs_string(crs), res_x=a, res_y=-e, x0=c, y0=f)
        found.append((a * -e, lat, (c, f + e * h, c + a * w, f)))
    _, lattice, extent = min(found, key=lambda t: t[0])
    return lattice, extent


def _same_lattice(a: Lattice, b: Lattice) -> bool:
    if a.crs != b.crs and CRS.from_user_input(a.crs) != CRS.from_user_input(b.crs):
        return False
    if (
        abs(a.res_x - b.res_x) > LATTICE_TOL * a.res_x
        or abs(a.res_y - b.res_y) > LATTICE_TOL * a.res_y
    ):
        return False
    px, py = (b.x0 - a.x0) / a.res_x, (b.y0 - a.y0) / a.res_y
    return abs(px - round(px)) < 1e-4 and abs(py - round(py)) < 1e-4


def items_lattice(
    items: Sequence[pystac.Item],
    rules: Sequence[dict[str, BandRule]],
    bands: Sequence[str],
    params: CubeParams,
) -> tuple[Lattice, BBox]:
    """The one pixel lattice the items share, and the union of their extents in its CRS;
    DataError naming the items when they do not share one."""
    lattices = [_item_lattice(i, r, bands, params) for i, r in zip(items, rules, strict=True)]
    ref, _ = lattices[0]
    odd = [items[k].id for k, (lat, _) in enumerate(lattices) if not _same_lattice(ref, lat)]
    if odd:
        first = lattices[[i.id for i in items].index(odd[0])][0]
        raise DataError(
            f"grid like_items: the items do not share one pixel grid: {items[0].id!r} is on "
            f"{ref.crs} at {ref.res_x:g} x {ref.res_y:g} from ({ref.x0:g}, {ref.y0:g}), "
            f"{odd[0]!r} on {first.crs} at {first.res_x:g} x {first.res_y:g} from "
            f"({first.x0:g}, {first.y0:g}) ({len(odd)} item(s) differ: {', '.join(odd[:5])})",
            hint="search items of one grid (one tile or UTM zone), or give the cube a grid "
            "(crs and resolution) so that they are resampled onto it",
        )
    extent = _union([e for _, e in lattices])
    return ref, extent


def plan_grid(
    params: CubeParams,
    items: Sequence[pystac.Item],
    rules: Sequence[dict[str, BandRule]],
    lonlat: Sequence[BBox],
) -> GridSpec:
    """The cube's grid: kept from the items (like_items) or derived (see derive_grid)."""
    bands = list(params.bands or [])
    g = params.grid
    if g.like_items:
        lattice, extent = items_lattice(items, rules, bands, params)
        if g.aoi is None and g.bbox is None:
            return lattice_grid(lattice, extent)
        area = aoi_geometry(g, _union(lonlat))
        return lattice_grid(lattice, projected_bounds(area, CRS.from_user_input(lattice.crs)))
    crs = CRS.from_user_input(g.crs) if g.crs else None
    native = None if g.resolution else native_resolution(rules, bands, crs)
    if native is None and g.resolution is None:
        native = header_resolution(rules[0], bands, crs, params)
    return derive_grid(g, _union(lonlat), native)


def header_resolution(
    rules: dict[str, BandRule], bands: Sequence[str], grid_crs: CRS | None, params: CubeParams
) -> float | None:
    """The finest pixel size of one item's bands read from their COG headers (no pixel read),
    when the COGs and the grid are in metres; None otherwise."""
    if grid_crs is not None and not is_metric(grid_crs):
        return None
    sizes = []
    for band in bands:
        rule = rules[band]
        header = _open_header(
            readable_href(rule.href, rule.sign), params.retries, params.retry_backoff_s
        )
        if isinstance(header, str) or header.crs is None:
            return None
        if not is_metric(CRS.from_user_input(header.crs)):
            return None
        sizes.append(abs(header.transform[0]))
    return min(sizes) if sizes else None


# --- COG headers ----------------------------------------------------------------------------


class _Header(BaseModel):
    """What a COG's header says (all bands)."""

    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]
    dtypes: list[str]
    nodatas: list[float | None]


def _open_header(href: str, retries: int, backoff_s: float) -> _Header | str:
    """COG header facts, or the error text after ``retries`` retries."""
    delay = backoff_s
    for attempt in range(retries + 1):
        try:
            with rasterio.open(href) as src:
                t = src.transform
                return _Header(
                    crs=crs_string(CRS.from_user_input(src.crs)) if src.crs else None,
                    transform=(t.a, t.b, t.c, t.d, t.e, t.f),
                    shape=(src.height, src.width),
                    dtypes=[str(d) for d in src.dtypes],
                    nodatas=list(src.nodatavals),
                )
        except (rasterio.errors.RasterioError, OSError) as exc:
            if attempt == retries:
                return f"{type(exc).__name__}: {exc}"
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _source_band(item_id: str, rule: BandRule, header: _Header | None) -> SourceBand:
    """The source of one band; ProviderError when the COG contradicts the profile."""
    base = SourceBand(
        href=rule.href,
        sign=rule.sign,
        band_index=rule.band_index,
        scale=rule.scale,
        offset=rule.offset,
        nodata=rule.nodata,
        dtype=rule.dtype,
    )
    if header is None:
        return base
    count = len(header.dtypes)
    if rule.band_index > count:
        raise ProviderError(
            f"band {rule.band!r} of item {item_id!r} is band {rule.band_index} of asset "
            f"{rule.asset_key!r}, but {rule.href} has {count} band(s)",
            hint="fix band_index of that band in the collection profile",
        )
    dtype = header.dtypes[rule.band_index - 1]
    if rule.dtype is not None and np.dtype(dtype) != np.dtype(rule.dtype):
        raise ProviderError(
            f"the collection profile declares band {rule.band!r} (asset {rule.asset_key!r}) as "
            f"{rule.dtype}, but {rule.href} of item {item_id!r} stores {dtype}",
            hint=f"set dtype: {dtype} for that band in the profile (or remove dtype)",
        )
    return base.model_copy(
        update={
            "dtype": dtype,
            "nodata": rule.nodata
            if rule.nodata is not None
            else header.nodatas[rule.band_index - 1],
            "crs": header.crs,
            "transform": header.transform,
            "shape": header.shape,
        }
    )


def _header_extent(bands: Iterable[SourceBand], grid_crs: str) -> BBox | None:
    """The exact extent of an item's COGs on the grid's CRS (from their headers), when they
    are in that CRS: the footprint's bbox projected from lon/lat is a little larger."""
    boxes = []
    for b in bands:
        if b.transform is None or b.shape is None or b.crs is None:
            continue
        if b.crs != grid_crs and CRS.from_user_input(b.crs) != CRS.from_user_input(grid_crs):
            continue
        a, _, c, _, e, f = b.transform
        h, w = b.shape
        xs, ys = (c, c + a * w), (f, f + e * h)
        boxes.append((min(xs), min(ys), max(xs), max(ys)))
    return _union(boxes) if boxes else None


def choose_kernels(
    items: Sequence[SourceItem], bands: Sequence[str], info: dict[str, BandInfo] | None = None
) -> dict[str, Kernel]:
    """DN compositing where a band is composited by its median and every item stores it the
    same way (unsigned, nodata 0, same positive scale and offset); float compositing otherwise."""
    out: dict[str, Kernel] = {}
    for band in bands:
        forms = {(s.dtype, s.scale, s.offset, s.nodata) for s in (i.bands[band] for i in items)}
        ok = len(forms) == 1 and (info is None or info[band].composite == "median")
        if ok:
            dtype, scale, _, nodata = next(iter(forms))
            ok = (
                dtype is not None
                and np.issubdtype(np.dtype(dtype), np.unsignedinteger)
                and nodata == 0
                and scale > 0
            )
        out[band] = "dn" if ok else "float"
    return out


def complete_steps(axis: TimeAxis, as_of: date | None) -> int:
    """How many leading steps of ``axis`` are complete on day ``as_of`` (every step: None).

    A step is complete when its period ends (exclusive) on or before the day after
    ``as_of``; for acquisition dates, when it is on or before ``as_of``."""
    if as_of is None:
        return len(axis)
    limit = datetime(as_of.year, as_of.month, as_of.day) + timedelta(days=1)
    return sum(1 for end in axis.ends if end <= limit)


def _time_axis(params: CubeParams, days: Sequence[tuple[date, datetime]]) -> TimeAxis:
    first = params.start or min(d for d, _ in days)
    last = params.end or max(d for d, _ in days)
    if params.period is not None:
        return composite_axis(first, last, params.period)
    if params.as_of is not None:  # acquisition dates: the axis ends at as_of
        last = min(last, params.as_of)
    return acquisition_axis([(d, t) for d, t in days if first <= d <= last])


def _of_orbit(items: list[pystac.Item], orbit_state: str) -> list[pystac.Item]:
    """The items of one orbit direction (``sat:orbit_state``); all of them for ``any``."""
    if orbit_state == "any":
        return items
    kept = [i for i in items if i.properties.get("sat:orbit_state") == orbit_state]
    if not kept:
        seen = sorted({str(i.properties.get("sat:orbit_state")) for i in items})
        raise EmptySearchError(
            f"none of the {len(items)} items is from the {orbit_state} orbit direction (their "
            f"sat:orbit_state: {', '.join(seen)})",
            hint="set orbit_state: any, or search a collection whose items state their orbit",
        )
    return kept


def plan_cube(
    items: Sequence[pystac.Item],
    profile: CollectionProfile,
    params: CubeParams,
    *,
    provider: str | None = None,
    search_uri: str | None = None,
    preflight: bool = True,
) -> CubePlan:
    """Plan a cube (no pixel is read). See the module docstring for what is checked."""
    items = list(items)
    if not items:
        raise EmptySearchError(
            "no items to build a cube from", hint="widen the search (area, dates, cloud cover)"
        )
    items = _of_orbit(items, params.orbit_state)
    params, mask, info = resolve_params(profile, params, items)
    bands = list(params.bands or [])
    read_bands = [*bands, *([mask.band] if mask else [])]
    rules_per_item = band_rules(items, profile, read_bands)
    lonlat = [_lonlat_bbox(i) for i in items]
    grid = plan_grid(params, items, rules_per_item, lonlat)
    grid_crs = CRS.from_user_input(grid.crs)

    candidates: list[tuple[pystac.Item, dict[str, BandRule], BBox, date, datetime]] = []
    for item, per, ll in zip(items, rules_per_item, lonlat, strict=True):
        bbox = _to_grid_bbox(ll, grid_crs)
        if not _intersects(bbox, grid.bounds):
            continue
        when = _item_datetime(item)
        candidates.append((item, per, bbox, solar_day(when, (ll[0] + ll[2]) / 2), when))
    if not candidates:
        raise EmptySearchError(
            f"none of the {len(items)} items overlaps the grid {grid.describe()}",
            hint="check the grid bounds/CRS or the AOI",
        )
    candidates = [
        c
        for c in candidates
        if (params.start is None or c[3] >= params.start)
        and (params.end is None or c[3] <= params.end)
    ]
    if not candidates:
        raise EmptySearchError(
            f"no item falls between {params.start} and {params.end}",
            hint="widen start/end or the search's datetime",
        )
    axis = _time_axis(params, [(c[3], c[4]) for c in candidates])
    n_observed = complete_steps(axis, params.as_of)
    stepped = [(c, step_of_day(axis, c[3])) for c in candidates]
    in_time = [(c, s) for c, s in stepped if s is not None and s < n_observed]
    if not in_time:
        if params.as_of is not None:
            first_end = axis.ends[0].date() - timedelta(days=1) if len(axis) else None
            raise EmptySearchError(
                f"no item falls in a period complete by as_of {params.as_of} (periods of "
                f"{params.period!r} from {params.start}; the first ends on {first_end})",
                hint="choose a later as_of, or a shorter cube period",
            )
        raise EmptySearchError(
            f"no item falls between {params.start} and {params.end}",
            hint="widen start/end or the search's datetime",
        )

    headers: dict[str, _Header | str] = {}
    if preflight:
        signs = {r.href: r.sign for (c, _) in in_time for r in c[1].values()}
        hrefs = sorted(signs)
        with ThreadPoolExecutor(PREFLIGHT_THREADS) as pool:
            found = pool.map(
                lambda h: _open_header(
                    readable_href(h, signs[h]), params.retries, params.retry_backoff_s
                ),
                hrefs,
            )
            headers = dict(zip(hrefs, found, strict=True))

    sources: list[SourceItem] = []
    bad: list[BadItem] = []
    for (item, per, bbox, day, when), step in in_time:
        failed = [
            (band, h) for band, rule in per.items() if isinstance(h := headers.get(rule.href), str)
        ]
        if failed:  # kept in the plan (the cube's identity), skipped when reading
            band, reason = failed[0]
            bad.append(BadItem(id=item.id, band=band, stage="preflight", reason=reason))
            log.warning("skipping item %s: band %s unreadable (%s)", item.id, band, reason)
        src = {
            b: _source_band(
                item.id, r, h if isinstance(h := headers.get(r.href), _Header) else None
            )
            for b, r in per.items()
        }
        bbox = _header_extent(src.values(), grid.crs) or bbox
        sources.append(
            SourceItem(id=item.id, datetime=when, day=day, step=step, bbox=bbox, bands=src)
        )
    check_bad_fraction(len(bad), len(in_time), params.max_bad_fraction, bad)
    if len(bad) == len(sources):
        raise DataError("every item is unreadable", hint="check the COG hrefs")

    sources.sort(key=lambda s: (s.step, s.day, s.datetime, s.id))
    per_step_days: dict[int, set[date]] = {}
    for s in sources:
        per_step_days.setdefault(s.step, set()).add(s.day)
    max_days = max(len(d) for d in per_step_days.values())
    n_vars = len(bands) + len(params.indices or []) + 1
    chunk = params.chunk_size or choose_chunk(
        params.task_memory_mib * 2**20, len(axis), n_vars, max_days, len(read_bands)
    )
    plan = CubePlan(
        params=params,
        grid=grid,
        axis=axis,
        items=sources,
        bad_items=bad,
        n_items_in=len(items),
        kernels=choose_kernels(
            [x for x in sources if x.id not in {b.id for b in bad}], bands, info
        ),
        band_info=info,
        mask=mask,
        chunk=chunk,
        count_dtype="uint8" if max_days <= 255 else "uint16",
        provider=provider or profile.reference,
        profile_digest=hashlib.sha256(
            profile.model_dump_json(exclude={"source"}).encode()
        ).hexdigest()[:16],
        search_uri=search_uri,
    )
    digest = hashlib.sha256(json.dumps(plan.identity(), sort_keys=True).encode()).hexdigest()
    return plan.model_copy(update={"key": digest[:16]})


def check_bad_fraction(n_bad: int, n_total: int, limit: float, bad: Sequence[BadItem]) -> None:
    """DataError when more than ``limit`` of the items are unreadable."""
    if n_total and n_bad / n_total > limit:
        listed = "; ".join(f"{b.id} ({b.band}: {b.reason})" for b in bad[:3])
        raise DataError(
            f"{n_bad} of {n_total} items are unreadable, more than max_bad_fraction={limit}: "
            f"{listed}{' ...' if len(bad) > 3 else ''}",
            hint="check that the COGs exist and are valid (network, storage), or raise "
            "max_bad_fraction to build without them",
        )


def version_info() -> dict[str, str]:
    """Versions recorded in a cube's provenance."""
    import odc.stac
    import zarr

    return {"cropflow": __version__, "odc-stac": odc.stac.__version__, "zarr": zarr.__version__}
