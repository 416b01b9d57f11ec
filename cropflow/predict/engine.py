"""What one tile (or one group of fields) does: read, normalise, run the model, write, mark.

Jobs are small frozen dataclasses holding references (cube URI, store path, windows), so they
travel cheaply to Dask workers. Each job has two phases: :meth:`load` reads pixels (I/O, can
run ahead in a thread) and :meth:`process` runs the model and writes the result.

* pixels: every valid pixel of the tile is one sample ``[T, C]``; batches always have
  ``batch_size`` rows (the last one padded), so every forward call has the same shape and a
  pixel's result does not depend on which tile it was in.
* patches: patches lie on one grid for the whole region (:mod:`cropflow.predict.tiling`); a
  tile computes every patch touching its core and averages their probabilities per pixel,
  weighted by a window (Hann: fading to the patch edges), so neighbouring tiles agree.
* fields: each field is one sample (its window and rasterised polygon); results go to a
  per-group table, then "paint" jobs write the field's prediction into its pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
import torch
from affine import Affine
from torch import Tensor, nn

from cropflow.predict.cube import read_window
from cropflow.predict.fields import field_index_raster, field_mask
from cropflow.predict.model import Normalise, augmented_probs, encode_dates
from cropflow.predict.store import NODATA, mark_done, write_tile
from cropflow.predict.tiling import Tile, Window, patch_starts, starts_touching
from cropflow.storage import atomic_file
from models.base import Batch
from models.contract import InputContract

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]


class Runner:
    """A model on a device with its contract's normalisation, run in fixed-size batches."""

    def __init__(
        self,
        model: nn.Module,
        contract: InputContract,
        device: torch.device,
        batch_size: int,
        tta: str = "none",
    ) -> None:
        self.model = model
        self.tta = tta
        self.contract = contract
        self.device = device
        self.batch_size = batch_size
        self.normalise = Normalise(contract)
        self.n_classes = len(contract.class_map.classes)
        self._shared_dates: dict[tuple[tuple[int, ...], int], Tensor] = {}

    def probs(
        self,
        x: FloatArray,
        days: npt.NDArray[np.int64],
        pad_mask: BoolArray,
        field_mask: BoolArray | None = None,
    ) -> FloatArray:
        """Probabilities ``[N, K, ...]`` of ``N`` normalised samples ``x [N, T, C, ...]``.

        ``days`` ``[N, T]``: dates as days since 1970-01-01; ``pad_mask`` ``[N, T]``.
        """
        n = x.shape[0]
        b = self.batch_size
        out: list[FloatArray] = []
        with torch.inference_mode():
            for start in range(0, n, b):
                stop = min(start + b, n)
                pad = torch.from_numpy(_pad_rows(pad_mask[start:stop], b))
                dates = self._dates(days[start:stop], pad, b)
                fb = None if field_mask is None else _pad_rows(field_mask[start:stop], b)
                batch = Batch(
                    x=torch.from_numpy(_pad_rows(x[start:stop], b)),
                    dates=dates,
                    pad_mask=pad,
                    field_mask=None if fb is None else torch.from_numpy(fb),
                ).to(self.device)
                p = augmented_probs(self.model, batch, self.tta)[: stop - start]
                out.append(p.cpu().numpy().astype(np.float32, copy=False))
        if not out:
            return np.zeros((0, self.n_classes, *x.shape[3:]), np.float32)
        return np.concatenate(out)

    def _dates(self, days: npt.NDArray[np.int64], pad: Tensor, rows: int) -> Tensor:
        """``Batch.dates`` of ``rows`` samples; encoded once per run when every sample has
        the same dates (a broadcast row, as for the pixels of a cube)."""
        if days.ndim == 2 and days.shape[0] > 0 and days.strides[0] == 0:
            key = (tuple(int(d) for d in days[0]), rows)
            cached = self._shared_dates.get(key)
            if cached is None:
                one = encode_dates(self.model, torch.from_numpy(days[:1].copy()), pad[:1])
                cached = one.expand(rows, -1).contiguous()
                self._shared_dates = {key: cached}  # one series of dates per run
            return cached
        return encode_dates(self.model, torch.from_numpy(_pad_rows(days, rows)), pad)


def _pad_rows(a: npt.NDArray[Any], rows: int) -> npt.NDArray[Any]:
    """``a`` with zero rows appended up to ``rows`` (a copy only when padding is needed)."""
    if a.shape[0] == rows:
        return np.ascontiguousarray(a)
    pad = np.zeros((rows - a.shape[0], *a.shape[1:]), a.dtype)
    return np.concatenate([a, pad])


#: A tile's class ids, probabilities and confidence, uint8 (what :func:`quantise` returns).
TileResult = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]


def quantise(probs: FloatArray, valid: BoolArray, ids: list[int]) -> TileResult:
    """Class ids, probabilities and confidence as uint8 (``round(p * 255)``), ``[K, h, w]``."""
    p = np.clip(probs, 0.0, 1.0)
    p8 = np.rint(p * 255.0).astype(np.uint8)
    conf = np.rint(p.max(axis=0) * 255.0).astype(np.uint8)
    lut = np.asarray(ids, np.uint8)
    cls = lut[p.argmax(axis=0)]
    cls[~valid] = NODATA
    p8[:, ~valid] = 0
    conf[~valid] = 0
    return cls, p8, conf


@dataclass(frozen=True)
class PixelInput:
    """A tile's pixels ready for a pixel model: the valid ones, normalised, as series."""

    x: FloatArray  # [n, T, C] normalised
    missing: BoolArray  # [n, T]: the date is missing for the pixel (pad_mask)
    valid: BoolArray  # [h, w]: the pixel has at least one date


def prepare_pixels(raw: FloatArray, normalise: Normalise) -> PixelInput:
    """Series ``[n, T, C]`` of the valid pixels of ``raw [T, C, h, w]``, normalised (``raw``
    is normalised in place: it must be the caller's own copy).

    A date is missing for a pixel when none of its bands is finite there; a pixel with no
    date at all is not valid (no prediction).
    """
    t, c, h, w = raw.shape
    missing: BoolArray = ~np.any(np.isfinite(raw), axis=1).reshape(t, h * w).T  # [N, T]
    valid: BoolArray = ~np.all(missing, axis=1)
    normalise.inplace(raw, axis=1)  # raw is this tile's own copy, read for this job
    keep = None if valid.all() else valid
    series = to_series(raw.reshape(t * c, h * w), keep)
    if keep is not None:
        missing = missing[keep]
    return PixelInput(series.reshape(-1, t, c), np.ascontiguousarray(missing), valid.reshape(h, w))


def to_series(rows: FloatArray, keep: BoolArray | None = None) -> FloatArray:
    """The transpose ``[N, R]`` of ``rows [R, N]`` (only the columns in ``keep``), contiguous.

    Copied one source row at a time: each read is contiguous and the writes are a few hundred
    bytes apart, where numpy's transposing copy reads every element from another page (2x
    slower on a 128 x 128 px tile of 120 rows)."""
    idx = None if keep is None else np.flatnonzero(keep)
    out = np.empty((rows.shape[1] if idx is None else idx.size, rows.shape[0]), np.float32)
    for r in range(rows.shape[0]):
        out[:, r] = rows[r] if idx is None else rows[r].take(idx)
    return out


def pixel_probs(
    runner: Runner, inp: PixelInput, days: npt.NDArray[np.int64]
) -> tuple[FloatArray, BoolArray]:
    """Probabilities ``[K, h, w]`` and validity ``[h, w]`` of a tile's pixels."""
    h, w = inp.valid.shape
    probs = np.zeros((runner.n_classes, h * w), np.float32)
    if inp.x.shape[0]:
        d = np.broadcast_to(days, (inp.x.shape[0], days.shape[0]))
        probs[:, inp.valid.ravel()] = runner.probs(inp.x, d, inp.missing).T
    return probs.reshape(runner.n_classes, h, w), inp.valid


def blend_window(patch: int, kind: str) -> FloatArray:
    """Weights ``[patch, patch]`` of a patch's pixels: Hann (``sin^2``, never 0) or uniform."""
    if kind == "uniform":
        return np.ones((patch, patch), np.float32)
    i = np.arange(patch, dtype=np.float64)
    w1 = np.sin(math.pi * (i + 0.5) / patch) ** 2
    return np.outer(w1, w1).astype(np.float32)


@dataclass(frozen=True)
class PatchInput:
    """A tile's read window ready for a patch model: normalised, with its missing dates."""

    x: FloatArray  # [T, C, rh, rw] normalised (non-finite -> 0)
    missing: BoolArray  # [T, rh, rw]: no band of the date is finite at the pixel


def prepare_patches(raw: FloatArray, normalise: Normalise) -> PatchInput:
    """The read window ``raw [T, C, rh, rw]`` normalised in place (it must be the caller's own
    copy: no second window-sized array), and where each date is missing."""
    missing: BoolArray = ~np.any(np.isfinite(raw), axis=1)
    normalise.inplace(raw, axis=1)
    return PatchInput(raw, missing)


def patch_probs(
    runner: Runner,
    inp: PatchInput,
    read: Window,
    core: Window,
    height: int,
    width: int,
    patch: int,
    stride: int,
    blend: str,
    days: npt.NDArray[np.int64],
) -> tuple[FloatArray, BoolArray]:
    """Blended probabilities ``[K, h, w]`` and validity of the ``core`` of a tile.

    ``inp`` holds the tile's read window ``read``. Patches come from the region-wide grid, in
    row-major order, so each pixel's sum is the same in every tiling.
    """
    x, nan_t = inp.x, inp.missing  # [T, C, rh, rw], [T, rh, rw]
    t, _, h, w = x.shape
    rh, rw = max(h, patch), max(w, patch)
    if (rh, rw) != (h, w):  # a region smaller than a patch: zeros, as normalised no-data
        x = np.pad(x, ((0, 0), (0, 0), (0, rh - h), (0, rw - w)))
    rows = starts_touching(patch_starts(height, patch, stride), patch, core.row0, core.row1)
    cols = starts_touching(patch_starts(width, patch, stride), patch, core.col0, core.col1)
    origins = [(r - read.row0, c - read.col0) for r in rows for c in cols]
    cr = core.relative_to(read)
    weights = blend_window(patch, blend)
    acc = np.zeros((runner.n_classes, cr.height, cr.width), np.float64)
    wsum = np.zeros((cr.height, cr.width), np.float64)
    for start in range(0, len(origins), runner.batch_size):
        chunk = origins[start : start + runner.batch_size]
        xb = np.stack([x[:, :, r : r + patch, c : c + patch] for r, c in chunk])
        # a date is padding for a patch when it is missing at every pixel of the patch
        pad = np.stack(
            [
                np.all(nan_t[:, r : r + patch, c : c + patch].reshape(t, -1), axis=1)
                for r, c in chunk
            ]
        )
        d = np.broadcast_to(days, (len(chunk), t))
        pb = runner.probs(xb, d, pad)  # [B, K, P, P]
        for (r, c), p in zip(chunk, pb, strict=True):
            r0, r1 = max(r, cr.row0), min(r + patch, cr.row1)
            c0, c1 = max(c, cr.col0), min(c + patch, cr.col1)
            if r0 >= r1 or c0 >= c1:
                continue
            wpart = weights[r0 - r : r1 - r, c0 - c : c1 - c]
            acc[:, r0 - cr.row0 : r1 - cr.row0, c0 - cr.col0 : c1 - cr.col0] += (
                wpart * p[:, r0 - r : r1 - r, c0 - c : c1 - c]
            )
            wsum[r0 - cr.row0 : r1 - cr.row0, c0 - cr.col0 : c1 - cr.col0] += wpart
    probs = (acc / np.maximum(wsum, 1e-30)).astype(np.float32)
    valid: BoolArray = ~np.all(nan_t[:, cr.rows, cr.cols], axis=0)
    return probs, valid


@dataclass(frozen=True)
class TileJob:
    """Predict the pixels of one tile with a pixel or patch model and write them."""

    name: str
    cube_uri: str
    store: str
    bands: tuple[str, ...]
    days: tuple[int, ...]
    tile: Tile
    read: Window
    kind: str
    height: int
    width: int
    class_ids: tuple[int, ...]
    patch: int = 0
    stride: int = 0
    blend: str = "hann"

    def load(self, runner: Runner) -> PixelInput | PatchInput:
        """Read the tile and prepare the model's input (in the reader thread)."""
        raw = read_window(self.cube_uri, list(self.bands), self.read)
        if self.kind == "pixel":
            return prepare_pixels(raw, runner.normalise)
        return prepare_patches(raw, runner.normalise)

    def process(self, data: PixelInput | PatchInput, runner: Runner) -> None:
        self.commit(self.compute(data, runner))

    def compute(self, data: PixelInput | PatchInput, runner: Runner) -> TileResult:
        """The model's classes, probabilities and confidence of the tile (no write)."""
        days = np.asarray(self.days, np.int64)
        if isinstance(data, PixelInput):
            probs, valid = pixel_probs(runner, data, days)
        else:
            probs, valid = patch_probs(
                runner,
                data,
                self.read,
                self.tile.core,
                self.height,
                self.width,
                self.patch,
                self.stride,
                self.blend,
                days,
            )
        return quantise(probs, valid, list(self.class_ids))

    def commit(self, result: TileResult) -> None:
        """Write the tile and mark it done."""
        store = Path(self.store)
        write_tile(store, self.tile.core, *result)
        mark_done(store, self.name)


@dataclass(frozen=True)
class FieldSample:
    """One field: its row in the field table, geometry (WKB) and the window it is read in."""

    row: int
    wkb: bytes
    window: Window


@dataclass(frozen=True)
class FieldGroupJob:
    """Predict a group of fields with a field model; results go to ``<out>/<name>.parquet``.

    Each field becomes a square canvas with its bounding box centred and NaN (so 0 after
    normalisation) outside the field, as :func:`cropflow.train.data.field_canvases` builds
    training samples.
    """

    name: str
    cube_uri: str
    bands: tuple[str, ...]
    days: tuple[int, ...]
    transform: tuple[float, float, float, float, float, float]
    samples: tuple[FieldSample, ...]
    out_dir: str

    def load(self, runner: Runner) -> list[FloatArray]:
        return [read_window(self.cube_uri, list(self.bands), s.window) for s in self.samples]

    def process(self, raws: list[FloatArray], runner: Runner) -> None:
        self.commit(self.compute(raws, runner))

    def compute(self, raws: list[FloatArray], runner: Runner) -> pd.DataFrame:
        """The group's per-field probabilities (no write)."""
        from cropflow.train.data import MAX_FIELD_SIDE, field_canvases, field_side

        transform = Affine(*self.transform)
        pixels, rows, cols, counts = [], [], [], []
        for s, raw in zip(self.samples, raws, strict=True):
            m = field_mask(shapely.from_wkb(s.wkb), transform, s.window)
            r, c = np.nonzero(m)
            pixels.append(np.moveaxis(raw[:, :, r, c], -1, 0))  # [n, T, C]
            rows.append(r + s.window.row0)
            cols.append(c + s.window.col0)
            counts.append(len(r))
        t = len(self.days)
        n_counts = np.asarray(counts, np.int64)
        starts = np.concatenate([[0], np.cumsum(n_counts)[:-1]]).astype(np.int64)
        all_rows, all_cols = np.concatenate(rows), np.concatenate(cols)
        side = min(MAX_FIELD_SIDE, field_side(all_rows, all_cols, starts, n_counts))
        canvas, masks = field_canvases(
            np.concatenate(pixels).astype(np.float32), all_rows, all_cols, starts, n_counts, side
        )
        pad: BoolArray = ~np.any(np.isfinite(canvas), axis=(2, 3, 4))  # [F, T]
        valid: BoolArray = np.any(masks, axis=(1, 2)) & ~np.all(pad, axis=1)
        probs = np.full((len(self.samples), runner.n_classes), np.nan, np.float32)
        if valid.any():
            x = runner.normalise(np.ascontiguousarray(canvas[valid]))
            d = np.broadcast_to(np.asarray(self.days, np.int64), (int(valid.sum()), t))
            probs[valid] = runner.probs(x, d, pad[valid], masks[valid])
        table = pd.DataFrame({"row": [s.row for s in self.samples], "valid": valid})
        for j in range(runner.n_classes):
            table[f"p{j}"] = probs[:, j]
        return table

    def commit(self, table: pd.DataFrame) -> None:
        """Write the group's table."""
        out = Path(self.out_dir)
        with atomic_file(out / f"{self.name}.parquet") as tmp:
            table.to_parquet(tmp, index=False)


def _listing(folder: Path) -> tuple[tuple[str, int, int], ...]:
    return tuple(
        sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.glob("*.parquet"))
    )


@lru_cache(maxsize=2)
def _field_results(folder: str, listing: tuple[tuple[str, int, int], ...], n: int) -> FloatArray:
    """Per-field probabilities ``[n_fields, K]`` from the group tables (NaN = no result)."""
    tables = [pd.read_parquet(Path(folder) / name) for name, _, _ in listing]
    table = pd.concat(tables, ignore_index=True)
    cols = sorted((c for c in table.columns if c.startswith("p")), key=lambda c: int(c[1:]))
    out = np.full((n, len(cols)), np.nan, np.float32)
    ok = table["valid"].to_numpy(bool)
    out[table["row"].to_numpy()[ok]] = table.loc[ok, cols].to_numpy(np.float32)
    return out


@lru_cache(maxsize=2)
def _fields_table(path: str, mtime_ns: int) -> gpd.GeoDataFrame:
    return gpd.read_parquet(path)


@dataclass(frozen=True)
class PaintJob:
    """Write the field results of a field model into the pixels of one tile."""

    name: str
    store: str
    tile: Tile
    fields_path: str
    results_dir: str
    transform: tuple[float, float, float, float, float, float]
    class_ids: tuple[int, ...]

    def load(self, runner: Runner) -> None:
        return None

    def process(self, data: None, runner: Runner) -> None:
        self.commit(self.compute(data, runner))

    def compute(self, data: None, runner: Runner) -> TileResult:
        """The tile's classes from the fields' results (no write)."""
        fields_file = Path(self.fields_path)
        fields = _fields_table(self.fields_path, fields_file.stat().st_mtime_ns)
        results_dir = Path(self.results_dir)
        by_row = _field_results(self.results_dir, _listing(results_dir), len(fields))
        idx = field_index_raster(fields, Affine(*self.transform), self.tile.core)
        k = by_row.shape[1]
        probs = np.zeros((k, *idx.shape), np.float32)
        inside = idx >= 0
        probs[:, inside] = by_row[idx[inside]].T
        valid = inside & ~np.isnan(probs).any(axis=0)
        probs = np.nan_to_num(probs)
        return quantise(probs, valid, list(self.class_ids))

    def commit(self, result: TileResult) -> None:
        """Write the tile and mark it done."""
        store = Path(self.store)
        write_tile(store, self.tile.core, *result)
        mark_done(store, self.name)


class Job(Protocol):
    """What the executors run: read (:meth:`load`), then compute and write (:meth:`process`,
    which is :meth:`commit` of :meth:`compute`: an executor may write one job while it
    computes the next)."""

    @property
    def name(self) -> str: ...

    def load(self, runner: Runner) -> Any: ...

    def compute(self, data: Any, runner: Runner) -> Any: ...

    def commit(self, result: Any) -> None: ...

    def process(self, data: Any, runner: Runner) -> None: ...


def run_job(job: Job, runner: Runner) -> str:
    """Run one job start to end (load then process); returns its name."""
    job.process(job.load(runner), runner)
    return job.name
