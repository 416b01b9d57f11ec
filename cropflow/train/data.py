"""Training data as the engine sees it: per-split arrays, bands and classes by name.

:func:`load_training_data` opens a training-set Zarr (by reference) with the labels
package's reader and turns it into :class:`TrainingData`; tests and benchmarks may build a
:class:`TrainingData` directly. Labels are class *ids* in the training set and output
*indices* (position in the class map) here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch

from cropflow.classes import IGNORE_INDEX, ClassMap
from cropflow.errors import DataError, TrainingError
from cropflow.train.augment import Tensors
from models.contract import BandStats, InputContract

InputKind = Literal["pixel", "patch", "field"]
TimeKind = Literal["composite", "acquisition"]
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class SplitArrays:
    """The samples of one split (numpy, un-normalised).

    ``x``: pixel ``[N, T, C]``, patch/field ``[N, T, C, H, W]`` float32; ``y``: output
    indices, ``[N]`` (pixel, field) or ``[N, H, W]`` (patch), ``IGNORE_INDEX`` = unlabelled;
    ``dates``: ``[N, T]`` int; ``pad_mask``: ``[N, T]`` bool (True = missing date);
    ``field_mask``: ``[N, H, W]`` bool (field samples only); ``units``: ``[N]`` the
    validation unit of each sample for model comparisons (its field, else its spatial block,
    else itself; :mod:`cropflow.train.selection`), ``unit_kind`` what they are.
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    dates: npt.NDArray[np.int64]
    pad_mask: npt.NDArray[np.bool_]
    field_mask: npt.NDArray[np.bool_] | None = None
    units: npt.NDArray[np.int64] | None = None
    unit_kind: str = "sample"

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def select_channels(self, idx: Sequence[int]) -> SplitArrays:
        return replace(self, x=np.ascontiguousarray(self.x[:, :, list(idx)]))

    def concat(self, other: SplitArrays) -> SplitArrays:
        """This split's samples, then ``other``'s; the shorter series padded to the longer
        (missing dates), ``other``'s units renumbered after this split's."""

        def pad_time(a: npt.NDArray[Any], t: int, value: float) -> npt.NDArray[Any]:
            widths = [(0, 0)] * a.ndim
            widths[1] = (0, t - a.shape[1])
            return np.pad(a, widths, constant_values=value)

        t = max(self.x.shape[1], other.x.shape[1])

        def both(name: str, value: float) -> npt.NDArray[Any]:
            a, b = getattr(self, name), getattr(other, name)
            return np.concatenate([pad_time(a, t, value), pad_time(b, t, value)])

        units = None
        if self.units is not None and other.units is not None:
            offset = int(self.units.max()) + 1 if len(self.units) else 0
            units = np.concatenate([self.units, other.units + offset])
        masks = None
        if self.field_mask is not None and other.field_mask is not None:
            masks = np.concatenate([self.field_mask, other.field_mask])
        return SplitArrays(
            x=both("x", 0.0),
            y=np.concatenate([self.y, other.y]),
            dates=both("dates", 0),
            pad_mask=both("pad_mask", 1),
            field_mask=masks,
            units=units,
            unit_kind=self.unit_kind,
        )


@dataclass
class TrainingData:
    """A training set in memory: splits plus everything the input contract needs."""

    uri: str
    input_kind: InputKind
    time_kind: TimeKind
    bands: list[str]
    class_map: ClassMap
    normalisation: dict[str, BandStats]
    splits: dict[str, SplitArrays]
    class_weights: dict[str, float] | None = None
    n_time: int | None = None
    period: str | None = None
    patch_size: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def split(self, name: str) -> SplitArrays:
        """A split that must hold samples (else a TrainingError naming every split's size)."""
        s = self.splits.get(name)
        if s is None or len(s) == 0 or not bool((s.y != IGNORE_INDEX).any()):
            sizes = {k: len(v) for k, v in self.splits.items()}
            raise TrainingError(
                f"the {name!r} split of training set {self.uri} has no labelled samples "
                f"(split sizes: {sizes})",
                hint="rebuild the training set with split rules or fractions that give every "
                "split (train, val, test) some samples",
            )
        return s

    def contract(self) -> InputContract:
        """The input contract of a model trained on this data."""
        return InputContract(
            bands=list(self.bands),
            input_kind=self.input_kind,
            time_kind=self.time_kind,
            n_time=self.n_time,
            period=self.period,
            normalisation={b: self.normalisation[b] for b in self.bands},
            class_map=self.class_map,
            patch_size=self.patch_size,
        )

    def with_bands(self, bands: Sequence[str]) -> TrainingData:
        """Only these bands, in this order (the caller checked they exist)."""
        idx = [self.bands.index(b) for b in bands]
        return replace(
            self,
            bands=list(bands),
            splits={k: v.select_channels(idx) for k, v in self.splits.items()},
        )

    def with_val_in_train(self) -> TrainingData:
        """The val split's samples added to the train split (a refit on all labelled data but
        the test split); val stays as it is."""
        train = self.split("train").concat(self.split("val"))
        return replace(self, splits={**self.splits, "train": train})

    def weight_vector(self) -> torch.Tensor | None:
        """Class weights in output order (None when the training set has none)."""
        if self.class_weights is None:
            return None
        missing = [n for n in self.class_map.names if n not in self.class_weights]
        if missing:
            raise DataError(
                f"training set {self.uri} has no class weight for {missing}",
                hint="rebuild the training set, or train with class_weighting='none'",
            )
        return torch.tensor([self.class_weights[n] for n in self.class_map.names])


def ids_to_indices(ids: npt.ArrayLike, class_map: ClassMap, where: str) -> npt.NDArray[np.int64]:
    """Map class ids (raster values) to output indices; ``ignore_index`` stays."""
    arr = np.asarray(ids).astype(np.int64)
    lut = np.full(max([*class_map.ids, class_map.ignore_index]) + 1, -1, dtype=np.int64)
    for i, cid in enumerate(class_map.ids):
        lut[cid] = i
    lut[class_map.ignore_index] = IGNORE_INDEX
    bad = (arr < 0) | (arr >= lut.size)
    out = np.full(arr.shape, -1, dtype=np.int64)
    out[~bad] = lut[arr[~bad]]
    if (out < 0).any():
        unknown = sorted({int(v) for v in np.unique(arr[out < 0])})[:10]
        raise DataError(
            f"{where}: class ids {unknown} are not in the class map {class_map.ids} "
            f"({class_map.names})",
            hint="rebuild the training set with the label mapping that made its class map",
        )
    return out


class Normaliser:
    """``(x - mean) / std`` per band (channel axis 2); non-finite values become 0 (the mean)."""

    def __init__(self, bands: Sequence[str], stats: dict[str, BandStats]) -> None:
        self.mean = torch.tensor([stats[b].mean for b in bands], dtype=torch.float32)
        self.std = torch.tensor([stats[b].std for b in bands], dtype=torch.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, 1, -1) + (1,) * (x.ndim - 3)
        out = (x - self.mean.view(shape)) / self.std.view(shape)
        return torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _span(any_: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """First and one-past-last True of a 1-D mask ((0, 0) when none)."""
    hit = np.flatnonzero(any_)
    return (int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, 0)


def field_window(masks: npt.NDArray[np.bool_]) -> tuple[slice, slice]:
    """The smallest centred square of the canvases ``masks`` ``[B, S, S]`` that holds every
    field pixel of the batch. Field models see nothing outside their field, so a batch cut to
    it gives the same output at a fraction of the cost (a canvas is as large as the largest
    field of the whole training set)."""
    side_full = masks.shape[-1]
    r0, r1 = _span(np.asarray(masks.any(axis=(0, 2)), dtype=bool))
    c0, c1 = _span(np.asarray(masks.any(axis=(0, 1)), dtype=bool))
    side = max(r1 - r0, c1 - c0, 1)

    def centred(lo: int, hi: int) -> slice:
        start = min(max(0, (lo + hi - side) // 2), side_full - side)  # holds [lo, hi)
        return slice(start, start + side)

    return centred(r0, r1), centred(c0, c1)


def take(split: SplitArrays, idx: torch.Tensor, norm: Normaliser) -> Tensors:
    """Samples ``idx`` of a split as normalised CPU tensors (field canvases cut to the
    batch's :func:`field_window`)."""
    i = idx.numpy()
    fm = split.field_mask
    x = split.x[i]
    masks = None
    if fm is not None:
        masks = fm[i]
        rows, cols = field_window(masks)
        x, masks = x[..., rows, cols], masks[:, rows, cols]
    return Tensors(
        x=norm(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))),
        y=torch.from_numpy(np.ascontiguousarray(split.y[i], dtype=np.int64)),
        dates=torch.from_numpy(np.ascontiguousarray(split.dates[i], dtype=np.int64)),
        pad_mask=torch.from_numpy(np.ascontiguousarray(split.pad_mask[i], dtype=np.bool_)),
        field_mask=None if masks is None else torch.from_numpy(np.ascontiguousarray(masks)),
    )


def field_extents(masks: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """``[N]``: the side of each field's bounding box on its canvas (0 for an empty mask)."""
    rows = np.asarray(masks.any(axis=2), dtype=bool)
    cols = np.asarray(masks.any(axis=1), dtype=bool)
    out = np.zeros(len(masks), np.int64)
    for k in range(len(masks)):
        r0, r1 = _span(rows[k])
        c0, c1 = _span(cols[k])
        out[k] = max(r1 - r0, c1 - c0)
    return out


#: Batches of similar-sized fields are drawn from windows of this many batches.
SIZE_WINDOW_BATCHES = 8


def sized_batches(
    sizes: npt.NDArray[np.int64], batch_size: int, gen: torch.Generator
) -> Iterator[torch.Tensor]:
    """Shuffled index batches of samples of similar ``sizes`` (field extents): a random
    order cut into windows of :data:`SIZE_WINDOW_BATCHES` batches, each window sorted by size
    and cut into batches, the batches shuffled. As many batches as :func:`batch_indices`
    (a batch of one sample dropped), each sample once per epoch; a batch's canvas is then
    about as large as its own fields, not the largest field of the set."""
    n = len(sizes)
    order = torch.randperm(n, generator=gen).numpy()
    window = batch_size * SIZE_WINDOW_BATCHES
    batches: list[npt.NDArray[np.int64]] = []
    for start in range(0, n, window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(sizes[chunk], kind="stable")]
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    for b in torch.randperm(len(batches), generator=gen).tolist():
        if len(batches[b]) == 1 and n > 1:
            continue
        yield torch.from_numpy(np.ascontiguousarray(batches[b], dtype=np.int64))


def batch_indices(n: int, batch_size: int, gen: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` samples: shuffled with ``gen``, in order without. A trailing
    batch of one sample is dropped when shuffling (batch norm cannot train on it)."""
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        chunk = order[start : start + batch_size]
        if gen is not None and chunk.numel() == 1 and n > 1:
            return
        yield chunk


# ---------------------------------------------------------------------------------------------
# Reading a training-set Zarr (cropflow.labels.store)
# ---------------------------------------------------------------------------------------------

#: Field samples are laid out on a square canvas of at most this many pixels a side (the
#: field's bounding box, padded; larger fields keep the pixels nearest their centre).
MAX_FIELD_SIDE = 64


def days_since_epoch(times: npt.NDArray[np.generic]) -> npt.NDArray[np.int64]:
    """datetime64 times as days since 1970-01-01; integer steps (tables without dates) as is."""
    t = np.asarray(times)
    if np.issubdtype(t.dtype, np.datetime64):
        return t.astype("datetime64[D]").astype(np.int64)
    return t.astype(np.int64)


def missing_dates(x: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """``[N, T]``: True where a sample has no finite value at a date (a padded date)."""
    finite = np.isfinite(x)
    axes = tuple(range(2, x.ndim))
    return np.asarray(~finite.any(axis=axes), dtype=bool)


def field_side(
    rows: npt.NDArray[np.integer],
    cols: npt.NDArray[np.integer],
    starts: npt.NDArray[np.integer],
    counts: npt.NDArray[np.integer],
) -> int:
    """Canvas side that holds every field's bounding box (at most ``MAX_FIELD_SIDE``)."""
    extents = [
        max(int(np.ptp(rows[s : s + c])), int(np.ptp(cols[s : s + c]))) + 1 if c else 1
        for s, c in zip(starts, counts, strict=True)
    ]
    return min(MAX_FIELD_SIDE, max(extents, default=1))


def field_canvases(
    pixels: npt.NDArray[np.float32],
    rows: npt.NDArray[np.integer],
    cols: npt.NDArray[np.integer],
    starts: npt.NDArray[np.integer],
    counts: npt.NDArray[np.integer],
    side: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Pixel sets ``(pixel, T, C)`` back on their grid: ``[F, T, C, S, S]`` values (NaN
    outside the field) and ``[F, S, S]`` field masks, one square canvas per field, the
    field's bounding box centred."""
    n_f = len(starts)
    t, ch = pixels.shape[1], pixels.shape[2]
    x = np.full((n_f, t, ch, side, side), np.nan, dtype=np.float32)
    mask = np.zeros((n_f, side, side), dtype=bool)
    for i, (s, c) in enumerate(zip(starts, counts, strict=True)):
        if not c:
            continue
        r, q = rows[s : s + c].astype(np.int64), cols[s : s + c].astype(np.int64)
        # bounding box centred on the canvas (its central part when larger than the canvas)
        r = r - r.min() + (side - (int(r.max() - r.min()) + 1)) // 2
        q = q - q.min() + (side - (int(q.max() - q.min()) + 1)) // 2
        inside = (r >= 0) & (r < side) & (q >= 0) & (q < side)
        vals = pixels[s : s + c][inside]  # (n, T, C)
        x[i][:, :, r[inside], q[inside]] = np.moveaxis(vals, 0, -1)
        mask[i, r[inside], q[inside]] = True
    return x, mask


def _units(ds: Any, kind: str, idx: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], str]:
    """Validation units of the samples ``idx``: pixels by field, else by spatial block;
    patches and fields are units themselves."""
    from cropflow.train.selection import unit_ids

    index = np.asarray(idx, np.int64)
    if kind != "pixel" or "field" not in ds or ds["field"].ndim != 1:
        return unit_ids(len(idx), index=index)
    fields = np.asarray(ds["field"].values)[idx].astype(np.int64)
    rows = np.asarray(ds["row"].values)[idx].astype(np.int64) if "row" in ds else None
    cols = np.asarray(ds["col"].values)[idx].astype(np.int64) if "col" in ds else None
    return unit_ids(len(idx), fields, rows, cols, index)


def load_training_data(uri: str) -> TrainingData:
    """Read a training set written by :mod:`cropflow.labels.store` into memory.

    Labels become output indices; per-field pixel sets become field canvases with masks;
    dates are days since 1970-01-01 (or time steps for tables without dates); a date with no
    finite value in a sample is marked in its ``pad_mask``.
    """
    from cropflow.labels.store import open_training_set

    ts = open_training_set(uri)
    days = days_since_epoch(ts.times)
    splits: dict[str, SplitArrays] = {}
    if ts.kind == "field":
        ds = ts.dataset
        all_pixels = np.asarray(ts.data.values, dtype=np.float32)
        rows = np.asarray(ds["pixel_row"].values)
        cols = np.asarray(ds["pixel_col"].values)
        starts_all = np.asarray(ds["start"].values)
        counts_all = np.asarray(ds["count"].values)
        if rows.size and bool((rows < 0).all()):
            raise DataError(
                f"field training set {uri} has no pixel positions (imported from a table), "
                "so its fields cannot be laid out for a field model",
                hint="import the table as a pixel training set and train a pixel model, or "
                "build the field training set from polygons on a cube",
            )
        side = field_side(rows, cols, starts_all, counts_all)
    for name in SPLITS:
        idx = ts.indices(name)
        if ts.kind == "field":
            x, fmask = field_canvases(
                all_pixels, rows, cols, starts_all[idx], counts_all[idx], side
            )
            y = ids_to_indices(ts.labels[idx], ts.class_map, f"{uri} ({name})")
        else:
            x = np.asarray(ts.data.isel(sample=idx).values, dtype=np.float32)
            y = ids_to_indices(ts.labels[idx], ts.class_map, f"{uri} ({name})")
            fmask = None
        pad = missing_dates(x)
        dates = np.broadcast_to(days, (len(idx), days.size)).copy()
        units, unit_kind = _units(ts.dataset, ts.kind, idx)
        splits[name] = SplitArrays(
            x=x,
            y=y,
            dates=dates,
            pad_mask=pad,
            field_mask=fmask,
            units=units,
            unit_kind=unit_kind,
        )
    return TrainingData(
        uri=str(ts.uri),
        input_kind=ts.kind,
        time_kind=ts.time_kind,
        bands=list(ts.bands),
        class_map=ts.class_map,
        normalisation={b: s.band_stats() for b, s in ts.norm_stats.items()},
        splits=splits,
        class_weights=dict(ts.class_weights) or None,
        n_time=len(ts.times),
        period=ts.period,
        patch_size=ts.patch_size,
    )
