"""One block of the cube, computed from its COG windows: read -> mask -> composite -> fill.

A block is a block of the grid (one Zarr chunk in space, every time step). Its memory is
bounded by the block size, never by the area of the cube: time steps are processed one at
a time (only that step's acquisitions are held), and the outputs are (steps, h, w) float32.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, Field

from cropflow.cube.composite import (
    MedianMask,
    dilate,
    fill_linear,
    masked_first,
    masked_mean,
    masked_mean_db,
    masked_median,
)
from cropflow.cube.grid import Block
from cropflow.cube.indices import compute_index
from cropflow.cube.plan import BadItem, CubePlan, SourceItem
from cropflow.cube.read import SourceReadError, read_band, reader_context

#: Stored values a mask band may hold (read as uint16; lookup tables cover them all).
MASK_VALUES = 2**16


class BlockStats(BaseModel):
    """What a finished block reports (also stored as its completion marker)."""

    key: str
    n_pixels: int
    valid_obs: list[int] = Field(description="Per step: sum of valid_count over the pixels.")
    observed: list[int] = Field(description="Per step: pixels with at least one observation.")
    interpolated: list[int] = Field(description="Per step: pixels filled by interpolation.")
    empty: list[int] = Field(description="Per step: pixels left NaN.")
    bad_items: list[BadItem] = Field(default_factory=list)
    n_reads: int = Field(0, description="COG windows read.")
    seconds: float = Field(0.0, description="Compute time (read, mask, composite, fill).")
    write_seconds: float = Field(0.0, description="Time to write the block's Zarr chunks.")


@dataclass
class BlockResult:
    """The arrays of every cube variable for one block, and its stats."""

    block: Block
    arrays: dict[str, np.ndarray]
    stats: BlockStats


#: glibc ``mallopt`` parameters (malloc.h) and the values block tasks set (see below).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30
HEAP_UP_TO_BYTES = 32 << 20  # glibc's largest accepted mmap threshold on 64-bit


@functools.cache
def keep_freed_memory() -> bool:
    """Let this process reuse the memory block tasks free instead of returning it (glibc).

    A block task allocates and frees arrays of 4-50 MB. By default glibc maps the larger ones
    afresh and returns freed heap to the system, so every block touches new pages: on this
    project's VM that cost a third of the block time in page faults (system time; measured
    with ``benchmarks/bench_cube.py``). Fixed thresholds keep up to :data:`KEEP_FREED_BYTES`
    of freed heap for reuse; peak memory is unchanged (still one block's arrays). Once per
    process; returns False where there is no glibc (nothing to tune)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok: bool = mallopt(_M_MMAP_THRESHOLD, HEAP_UP_TO_BYTES) == 1
    trimmed: bool = mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES) == 1
    return ok and trimmed


def _intersects(a: Sequence[float], b: Sequence[float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _is_missing(a: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.isnan(a) if np.issubdtype(a.dtype, np.floating) else a == 0
    return result


def _is_present(a: np.ndarray) -> np.ndarray:
    result: np.ndarray = ~np.isnan(a) if np.issubdtype(a.dtype, np.floating) else a != 0
    return result


class _DayReader:
    """Reads and mosaics the items of one solar day onto a block."""

    def __init__(self, plan: CubePlan, gbox: GeoBox, ctx: Any) -> None:
        self.plan = plan
        self.params = plan.params
        self.gbox = gbox
        self.pad = self.params.dilation
        self.mask_gbox = gbox.pad(self.pad) if self.pad else gbox
        self.ctx = ctx
        self.bad: dict[str, BadItem] = {}
        self.n_reads = 0
        self.mask = plan.mask
        if plan.mask is not None:
            masked, nodata = plan.mask.spec.lookup(plan.mask.groups, MASK_VALUES)
            self.cloud_lut = masked & ~nodata
            self.nodata_lut = nodata
            self.clear_lut = ~masked & ~nodata
            self.mask_fill = plan.mask.spec.fill_value()

    def _band_dtype(self, item: SourceItem, band: str) -> tuple[np.dtype, float]:
        if self.plan.kernels[band] == "dn":
            return np.dtype(item.bands[band].dtype or "uint16"), 0.0
        return np.dtype(np.float32), float("nan")

    def _read_item(self, item: SourceItem) -> dict[str, np.ndarray] | None:
        p = self.params
        out: dict[str, np.ndarray] = {}
        try:
            for band in self.plan.bands:
                src = item.bands[band]
                dtype, fill = self._band_dtype(item, band)
                arr = np.empty(self.gbox.shape.yx, dtype=dtype)
                read_band(
                    src,
                    self.gbox,
                    arr,
                    fill=fill,
                    resampling=p.resampling,
                    ctx=self.ctx,
                    retries=p.retries,
                    backoff_s=p.retry_backoff_s,
                    direct=p.reader == "auto",
                )
                self.n_reads += 1
                if self.plan.kernels[band] == "float" and (src.scale != 1 or src.offset != 0):
                    arr *= np.float32(src.scale)
                    arr += np.float32(src.offset)
                out[band] = arr
            if self.mask is not None:
                src = item.bands[self.mask.band]
                arr = np.empty(self.mask_gbox.shape.yx, dtype=np.uint16)
                read_band(
                    src,
                    self.mask_gbox,
                    arr,
                    fill=self.mask_fill,
                    resampling="nearest",
                    ctx=self.ctx,
                    retries=p.retries,
                    backoff_s=p.retry_backoff_s,
                    direct=p.reader == "auto",
                )
                self.n_reads += 1
                out[self.mask.band] = arr
        except SourceReadError as exc:
            self.bad[item.id] = BadItem(id=item.id, stage="read", reason=str(exc))
            return None
        return out

    def read_day(
        self, items: Sequence[SourceItem]
    ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
        """Mosaic (first valid pixel wins, in time/id order) and the day's validity mask."""
        acc: dict[str, np.ndarray] | None = None
        for item in items:
            if item.id in self.bad:
                continue
            got = self._read_item(item)
            if got is None:
                continue
            if acc is None:
                acc = got
                continue
            for band, arr in got.items():
                if self.mask is not None and band == self.mask.band:
                    missing = np.take(self.nodata_lut, acc[band])
                else:
                    missing = _is_missing(acc[band])
                np.copyto(acc[band], arr, where=missing)
        if acc is None:
            return None
        bands = self.plan.bands
        valid = _is_present(acc[bands[0]])
        for band in bands[1:]:
            valid &= _is_present(acc[band])
        if self.mask is not None:
            qa = acc.pop(self.mask.band)
            if not self.pad:
                valid &= np.take(self.clear_lut, qa)  # a table lookup: one pass
                return acc, valid
            cloud = dilate(np.take(self.cloud_lut, qa), self.pad)
            crop = (slice(self.pad, -self.pad), slice(self.pad, -self.pad))
            valid &= ~cloud[crop] & ~np.take(self.nodata_lut, qa[crop])
        return acc, valid


def _step_days(plan: CubePlan) -> np.ndarray:
    t = np.array(plan.axis.times, dtype="datetime64[s]")
    result: np.ndarray = (t - t[0]).astype(np.float64) / 86400.0
    return result


def _composite(plan: CubePlan, band: str, layers: list[np.ndarray], mask: MedianMask) -> np.ndarray:
    """One band's composite of one step, by the band's compositing rule."""
    if plan.kernels[band] == "dn":  # values still stored numbers: scale at the end
        ref = plan.items[0].bands[band]
        scale, offset = ref.scale, ref.offset
    else:
        scale, offset = 1.0, 0.0
    info = plan.band_info.get(band)
    rule = info.composite if info is not None else "median"
    if rule == "mean":
        return masked_mean(layers, mask, scale, offset)[0]
    if rule == "mean_db":
        source_db = info is not None and (info.unit or "").lower() == "db"
        return masked_mean_db(layers, mask, scale, offset, source_db=source_db)[0]
    if rule == "first":
        return masked_first(layers, mask, scale, offset)[0]
    return masked_median(layers, mask, scale, offset, overwrite=True)[0]


def compute_block(plan: CubePlan, block: Block, scope: str = "") -> BlockResult:
    """Every variable of the cube over ``block`` (see the module docstring).

    ``scope`` names the build: sources found unreadable are not retried within one build (one
    scope), and are tried again by the next (default: the plan's key)."""
    keep_freed_memory()
    t0 = time.perf_counter()
    p = plan.params
    bands = plan.bands
    gbox = plan.geobox()[block.slices]
    left, bottom, right, top = gbox.boundingbox
    skipped = plan.skipped_ids
    items = [
        i
        for i in plan.items
        if i.id not in skipped and _intersects(i.bbox, (left, bottom, right, top))
    ]
    n_steps = len(plan.axis)
    h, w = block.shape
    outs = {b: np.empty((n_steps, h, w), dtype=np.float32) for b in bands}
    count = np.zeros((n_steps, h, w), dtype=plan.count_dtype)

    by_step: dict[int, dict[date, list[SourceItem]]] = {}
    for item in items:
        by_step.setdefault(item.step, {}).setdefault(item.day, []).append(item)

    computed: set[int] = set()
    with reader_context(gbox, scope=scope or plan.key) as ctx:
        reader = _DayReader(plan, gbox, ctx)
        for step in sorted(by_step):
            layers: dict[str, list[np.ndarray]] = {b: [] for b in bands}
            valids: list[np.ndarray] = []
            for day in sorted(by_step[step]):
                got = reader.read_day(by_step[step][day])
                if got is None:
                    continue
                day_arrays, valid = got
                for b in bands:
                    layers[b].append(day_arrays[b])
                valids.append(valid)
            if not valids:
                continue
            mask = MedianMask(np.stack(valids))
            del valids
            for b in bands:
                outs[b][step] = _composite(plan, b, layers[b], mask)
                layers[b] = []
            count[step] = mask.count
            computed.add(step)
    for step in set(range(n_steps)) - computed:
        for b in bands:
            outs[b][step] = np.nan

    has = count > 0
    interpolated = np.zeros_like(has)
    if p.fill == "linear":  # within the observed steps: a step after as_of is never filled
        k = plan.observed_steps
        values = [o[:k] for o in outs.values()]
        interpolated[:k] = fill_linear(values, has[:k], _step_days(plan)[:k])
    arrays: dict[str, np.ndarray] = dict(outs)
    for name in plan.indices:
        arrays[name] = compute_index(name, outs)
    arrays["valid_count"] = count
    arrays["interpolated"] = interpolated
    first = outs[bands[0]]
    stats = BlockStats(
        key=block.key,
        n_pixels=h * w,
        valid_obs=[int(x) for x in count.sum(axis=(1, 2), dtype=np.int64)],
        observed=[int(x) for x in has.sum(axis=(1, 2))],
        interpolated=[int(x) for x in interpolated.sum(axis=(1, 2))],
        empty=[int(x) for x in np.isnan(first).sum(axis=(1, 2))],
        bad_items=list(reader.bad.values()),
        n_reads=reader.n_reads,
        seconds=time.perf_counter() - t0,
    )
    return BlockResult(block=block, arrays=arrays, stats=stats)
