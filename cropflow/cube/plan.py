"""Planning a cube: items -> band rules -> grid, time axis, sources, regions (no pixel read).

``plan_cube`` does everything that can fail cheaply before any pixel is read: bands the
provider lacks (ProviderError), the grid, the time axis, which items touch the grid, and a
header check of every COG (missing or corrupt files are retried, then the item is recorded as
bad and skipped; past ``max_bad_fraction`` the build fails here). The plan is a plain,
JSON-serialisable model: it is what region tasks receive and what the cube's provenance records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from typing import Literal, Protocol

import numpy as np
import pystac
import rasterio
from odc.geo import geom
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, ConfigDict, Field
from pyproj import CRS

from cropflow import __version__
from cropflow.bands import BandRule
from cropflow.cube.grid import GridSpec, Region, choose_chunk, crs_string, derive_grid, regions
from cropflow.cube.params import BBox, CubeParams
from cropflow.cube.periods import (
    TimeAxis,
    acquisition_axis,
    composite_axis,
    solar_day,
    step_of_day,
)
from cropflow.errors import DataError, EmptySearchError, ProviderError

log = logging.getLogger(__name__)

#: Version of the cube layout written by this module (stored in the cube's attributes).
CUBE_FORMAT = "cropflow-cube/1"
#: Threads used to check COG headers before the build.
PREFLIGHT_THREADS = 8

Kernel = Literal["dn", "float"]


class BandRuleSource(Protocol):
    """Anything that maps (item, band name) to a BandRule: a provider profile."""

    def band_rule(self, item: pystac.Item, band: str) -> BandRule: ...


class SourceBand(BaseModel):
    """One band of one item: where to read it and how stored numbers become values."""

    model_config = ConfigDict(frozen=True)

    href: str
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
    """An item skipped because a COG could not be read."""

    id: str
    band: str | None = None
    stage: Literal["preflight", "read"]
    reason: str


class CubePlan(BaseModel):
    """Everything a region task needs; JSON-serialisable; identifies the cube by ``key``."""

    params: CubeParams
    grid: GridSpec
    axis: TimeAxis
    items: list[SourceItem]
    bad_items: list[BadItem] = Field(default_factory=list)
    n_items_in: int = Field(description="Items given to the planner (before any filtering).")
    kernels: dict[str, Kernel] = Field(description="Per data band: DN or float compositing.")
    chunk: int = Field(description="Spatial chunk / region side in pixels.")
    count_dtype: Literal["uint8", "uint16"]
    provider: str | None = None
    search_uri: str | None = None
    key: str = ""

    @property
    def mask_enabled(self) -> bool:
        return bool(self.params.mask)

    @property
    def read_bands(self) -> list[str]:
        """Data bands, then the mask band when the mask is on."""
        extra = [self.params.mask_band] if self.mask_enabled else []
        return [*self.params.bands, *extra]

    @property
    def variables(self) -> list[str]:
        """Data variables of the cube in order: bands, indices, valid_count, interpolated."""
        return [*self.params.bands, *self.params.indices, "valid_count", "interpolated"]

    def geobox(self) -> GeoBox:
        return self.grid.geobox()

    def regions(self) -> list[Region]:
        return regions(self.grid.shape, self.chunk)

    def identity(self) -> dict[str, object]:
        """What the key hashes: parameters, grid, axis, items and their sources, format."""
        return {
            "format": CUBE_FORMAT,
            "params": self.params.model_dump(mode="json"),
            "grid": self.grid.model_dump(mode="json"),
            "axis": self.axis.model_dump(mode="json"),
            "items": [
                {"id": i.id, "step": i.step, "bands": {b: s.href for b, s in i.bands.items()}}
                for i in self.items
            ],
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


def band_rules(
    items: Sequence[pystac.Item], rules: BandRuleSource, bands: Sequence[str]
) -> list[dict[str, BandRule]]:
    """The provider's rule for every (item, band); ProviderError before any work otherwise."""
    out: list[dict[str, BandRule]] = []
    for item in items:
        per: dict[str, BandRule] = {}
        for band in bands:
            try:
                per[band] = rules.band_rule(item, band)
            except ProviderError as exc:
                raise ProviderError(
                    f"cannot build a cube with band {band!r}: {exc.message}",
                    hint=exc.hint or "ask only for bands the provider has",
                ) from None
        out.append(per)
    return out


def _open_header(href: str, retries: int, backoff_s: float) -> SourceBand | str:
    """COG header facts, or the error text after ``retries`` retries."""
    delay = backoff_s
    for attempt in range(retries + 1):
        try:
            with rasterio.open(href) as src:
                t = src.transform
                return SourceBand(
                    href=href,
                    nodata=src.nodata,
                    dtype=str(src.dtypes[0]),
                    crs=crs_string(CRS.from_user_input(src.crs)) if src.crs else None,
                    transform=(t.a, t.b, t.c, t.d, t.e, t.f),
                    shape=(src.height, src.width),
                )
        except (rasterio.errors.RasterioError, OSError) as exc:
            if attempt == retries:
                return f"{type(exc).__name__}: {exc}"
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _source_band(rule: BandRule, header: SourceBand | None) -> SourceBand:
    if header is None:
        return SourceBand(href=rule.href, scale=rule.scale, offset=rule.offset, nodata=rule.nodata)
    return header.model_copy(
        update={
            "scale": rule.scale,
            "offset": rule.offset,
            "nodata": rule.nodata if rule.nodata is not None else header.nodata,
        }
    )


def choose_kernels(items: Sequence[SourceItem], bands: Sequence[str]) -> dict[str, Kernel]:
    """DN compositing where every item stores a band the same way (unsigned, nodata 0, same
    positive scale and offset); float compositing otherwise."""
    out: dict[str, Kernel] = {}
    for band in bands:
        forms = {(s.dtype, s.scale, s.offset, s.nodata) for s in (i.bands[band] for i in items)}
        ok = len(forms) == 1
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


def _time_axis(params: CubeParams, days: Sequence[tuple[date, datetime]]) -> TimeAxis:
    first = params.start or min(d for d, _ in days)
    last = params.end or max(d for d, _ in days)
    if params.period is not None:
        return composite_axis(first, last, params.period)
    return acquisition_axis([(d, t) for d, t in days if first <= d <= last])


def plan_cube(
    items: Sequence[pystac.Item],
    rules: BandRuleSource,
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
    read_bands = [*params.bands, *([params.mask_band] if params.mask else [])]
    rules_per_item = band_rules(items, rules, read_bands)
    lonlat = [_lonlat_bbox(i) for i in items]
    grid = derive_grid(params.grid, _union(lonlat))
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
    stepped = [(c, step_of_day(axis, c[3])) for c in candidates]
    in_time = [(c, s) for c, s in stepped if s is not None]
    if not in_time:
        raise EmptySearchError(
            f"no item falls between {params.start} and {params.end}",
            hint="widen start/end or the search's datetime",
        )

    headers: dict[str, SourceBand | str] = {}
    if preflight:
        hrefs = sorted({r.href for (c, _) in in_time for r in c[1].values()})
        with ThreadPoolExecutor(PREFLIGHT_THREADS) as pool:
            found = pool.map(
                lambda h: _open_header(h, params.retries, params.retry_backoff_s), hrefs
            )
            headers = dict(zip(hrefs, found, strict=True))

    sources: list[SourceItem] = []
    bad: list[BadItem] = []
    for (item, per, bbox, day, when), step in in_time:
        failed = [
            (band, h) for band, rule in per.items() if isinstance(h := headers.get(rule.href), str)
        ]
        if failed:
            band, reason = failed[0]
            bad.append(BadItem(id=item.id, band=band, stage="preflight", reason=reason))
            log.warning("skipping item %s: band %s unreadable (%s)", item.id, band, reason)
            continue
        src = {
            b: _source_band(r, h if isinstance(h := headers.get(r.href), SourceBand) else None)
            for b, r in per.items()
        }
        sources.append(
            SourceItem(id=item.id, datetime=when, day=day, step=step, bbox=bbox, bands=src)
        )
    check_bad_fraction(len(bad), len(in_time), params.max_bad_fraction, bad)
    if not sources:
        raise DataError("every item is unreadable", hint="check the COG hrefs")

    sources.sort(key=lambda s: (s.step, s.day, s.datetime, s.id))
    per_step_days: dict[int, set[date]] = {}
    for s in sources:
        per_step_days.setdefault(s.step, set()).add(s.day)
    max_days = max(len(d) for d in per_step_days.values())
    n_vars = len(params.bands) + len(params.indices) + 1
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
        kernels=choose_kernels(sources, params.bands),
        chunk=chunk,
        count_dtype="uint8" if max_days <= 255 else "uint16",
        provider=provider,
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
