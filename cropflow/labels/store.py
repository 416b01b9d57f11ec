"""The training set on disk (Zarr v3) and its typed reader, :func:`open_training_set`.

Layout (format version 1). A training set is one Zarr v3 group written by xarray; arrays are
chunked along the sample axis and compressed, with consolidated metadata.
``xr.open_zarr(uri)`` opens it; :func:`open_training_set` adds typed access.

Group attributes (JSON):

- ``cropflow_training_set``: format version (1); ``kind``: ``pixel`` | ``patch`` | ``field``
- ``class_map``: the :class:`~cropflow.classes.ClassMap` (names, ids, colours, ignore index)
- ``norm_stats``: ``{band: {mean, std, min, max, count}}`` from the **train** split only
- ``class_weights``: ``{class name: weight}`` from the train split; ``class_weight_blend``
- ``split_names``: ``["train", "val", "test"]`` (a ``split`` value is a position in it)
- ``time_kind`` (``composite`` | ``acquisition``), ``period`` (e.g. ``1MS`` or null)
- ``crs``: WKT of the cube grid (null for imported tables); ``patch_size``, ``patch_stride``
- ``summary``: class counts per split, warnings and reports; ``source``: provenance

Coordinates: ``band`` (band names, the order of the band axis), ``time`` (datetime64; an
integer step for tables without dates), ``doy`` (day of year, int16; only with dates).

``pixel`` kind — one labelled pixel per sample:
  ``data`` (sample, time, band) float32; ``label`` (sample) uint8 class id; ``field``
  (sample) int32 field number (0 = none); ``split`` (sample) uint8; ``row``/``col`` (sample)
  int32 on the cube grid (-1 for tables); ``coord_x``/``coord_y`` pixel centre in the cube
  CRS; ``lon``/``lat`` (NaN for tables).

``patch`` kind — one patch per sample, top-left at ``row``/``col``:
  ``data`` (sample, time, band, py, px) float32; ``label`` (sample, py, px) uint8 with 255
  where unlabelled; ``field`` (sample, py, px) int32; ``split``, ``row``, ``col``,
  ``coord_x``/``coord_y``/``lon``/``lat`` (patch centre) per sample.

``field`` kind — per-field pixel sets (PSE-style):
  ``data`` (pixel, time, band) float32, pixels of one field contiguous; ``pixel_row``,
  ``pixel_col`` (pixel); per field (dim ``field``, coordinate = field number): ``label``,
  ``split``, ``start``, ``count`` (its pixels are ``data[start:start+count]``),
  ``coord_x``/``coord_y``/``lon``/``lat`` (centroid of its pixels).

All kinds: ``field_source_id`` (dim ``field_table`` whose coordinate is the field number) is
the field's id in the label file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from cropflow.classes import ClassMap
from cropflow.errors import DataError
from cropflow.labels.options import (
    SPLIT_NAMES,
    Kind,
)
from cropflow.labels.stats import NormStats, StatsAccumulator
from cropflow.storage import consolidate_zarr

if TYPE_CHECKING:
    from models.contract import InputContract

FORMAT_VERSION = 1
#: Target size of one data chunk (bytes, uncompressed).
CHUNK_BYTES = 8 * 2**20


def _path(uri: str | Path) -> Path:
    return Path(str(uri).removeprefix("file://"))


def doy_of(times: np.ndarray) -> np.ndarray | None:
    """Day of year of datetime64 times (None for step indices)."""
    if not np.issubdtype(times.dtype, np.datetime64):
        return None
    days = times.astype("datetime64[D]")
    result: np.ndarray | None = (days - days.astype("datetime64[Y]")).astype(np.int16) + 1
    return result


def base_coords(bands: list[str], times: np.ndarray) -> dict[str, Any]:
    """The ``band``, ``time`` (and ``doy``) coordinates of a training set."""
    coords: dict[str, Any] = {
        "band": ("band", np.asarray(bands, dtype=object)),
        "time": ("time", np.asarray(times)),
    }
    doy = doy_of(np.asarray(times))
    if doy is not None:
        coords["doy"] = ("time", doy)
    return coords


@dataclass
class TrainingSetWriter:
    """Writes a training set aside, block by block, then renames it into place.

    ``meta`` holds every variable but ``data`` (labels, fields, splits, coordinates).
    ``data_dims``/``data_shape`` describe ``data``; blocks are written along its first axis.
    ``train_rows`` says, for each row of ``data``, whether it belongs to the train split:
    statistics are accumulated from those rows only.
    """

    uri: Path
    meta: xr.Dataset
    data_dims: tuple[str, ...]
    data_shape: tuple[int, ...]
    train_rows: np.ndarray
    bands: list[str]
    _stats: StatsAccumulator = field(init=False)
    _tmp: Path = field(init=False)
    _array: Any = field(init=False)

    def __post_init__(self) -> None:
        self.uri = _path(self.uri)
        self.uri.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.uri.parent / f".{self.uri.name}.tmp-{os.getpid()}"
        if self._tmp.exists():
            shutil.rmtree(self._tmp)
        self._stats = StatsAccumulator(self.bands, band_axis=self.data_dims.index("band"))
        row_bytes = int(np.prod(self.data_shape[1:])) * 4
        rows = max(1, min(self.data_shape[0], CHUNK_BYTES // max(row_bytes, 1)))
        chunks = (rows, *self.data_shape[1:])
        placeholder = da.zeros(self.data_shape, dtype=np.float32, chunks=chunks)
        ds = self.meta.assign(data=(self.data_dims, placeholder))
        encoding = {"data": {"chunks": chunks}}
        ds.to_zarr(
            self._tmp, mode="w", compute=False, zarr_format=3, consolidated=False, encoding=encoding
        )
        self._array = zarr.open_group(self._tmp, mode="r+", zarr_format=3)["data"]

    def write(self, start: int, block: np.ndarray) -> None:
        """Write rows ``start:start+len(block)`` of ``data``; add train rows to the stats."""
        stop = start + block.shape[0]
        self._array[start:stop] = block.astype(np.float32, copy=False)
        train = self.train_rows[start:stop]
        if train.any():
            self._stats.add(block[train])

    def norm_stats(self) -> dict[str, NormStats]:
        return self._stats.result()

    def finish(self, attrs: dict[str, Any]) -> Path:
        """Record attributes and atomically replace any previous training set at ``uri``."""
        attrs = {**attrs, "norm_stats": {b: s.model_dump() for b, s in self.norm_stats().items()}}
        group = zarr.open_group(self._tmp, mode="r+", zarr_format=3)
        group.attrs.update(json.loads(json.dumps(attrs, default=_json_default)))
        consolidate_zarr(self._tmp)
        old = self.uri.parent / f".{self.uri.name}.old-{os.getpid()}"
        if self.uri.exists():
            self.uri.rename(old)
        self._tmp.rename(self.uri)
        if old.exists():
            shutil.rmtree(old)
        return self.uri

    def abort(self) -> None:
        """Remove the partial output."""
        if self._tmp.exists():
            shutil.rmtree(self._tmp, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value)}")


@dataclass(frozen=True)
class TrainingSet:
    """Typed, lazy access to a training set (see the module docstring for the layout)."""

    uri: str
    dataset: xr.Dataset
    kind: Kind
    bands: list[str]
    times: np.ndarray
    class_map: ClassMap
    norm_stats: dict[str, NormStats]
    class_weights: dict[str, float]
    time_kind: Literal["composite", "acquisition"]
    period: str | None
    patch_size: int | None
    crs: str | None
    summary: dict[str, Any]

    @property
    def doy(self) -> np.ndarray | None:
        """Day of year per time step (None without dates)."""
        return self.dataset["doy"].values if "doy" in self.dataset else None

    @property
    def n_samples(self) -> int:
        """Pixels, patches or fields."""
        dim = "field" if self.kind == "field" else "sample"
        return int(self.dataset.sizes[dim])

    @property
    def labels(self) -> np.ndarray:
        """Class id per sample (pixel/field), or per patch pixel (N, H, W)."""
        return np.asarray(self.dataset["label"].values)

    @property
    def fields(self) -> np.ndarray:
        """Field number per sample (0 = none), per patch pixel, or of each field."""
        return np.asarray(self.dataset["field"].values)

    @property
    def split(self) -> np.ndarray:
        """Split name per sample (or per field for the field kind)."""
        codes = np.asarray(self.dataset["split"].values)
        result: np.ndarray = np.asarray(SPLIT_NAMES, dtype=object)[codes]
        return result

    def indices(self, split: str) -> np.ndarray:
        """Sample (or field) positions of one split."""
        if split not in SPLIT_NAMES:
            raise DataError(f"unknown split {split!r}", hint=f"use one of {list(SPLIT_NAMES)}")
        code = list(SPLIT_NAMES).index(split)
        return np.flatnonzero(np.asarray(self.dataset["split"].values) == code)

    @property
    def data(self) -> xr.DataArray:
        """The values, lazily (Dask): see the layout for the dims of each kind."""
        return self.dataset["data"]

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of one split in memory: pixel/patch samples, or field pixels with the
        field's class per pixel (field kind)."""
        idx = self.indices(split)
        if self.kind == "field":
            starts = self.dataset["start"].values[idx]
            counts = self.dataset["count"].values[idx]
            pieces = [np.arange(s, s + c) for s, c in zip(starts, counts, strict=True)]
            rows = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)
            x = np.asarray(self.data.isel(pixel=rows).values)
            y = np.repeat(self.labels[idx], counts)
            return x, y
        x = np.asarray(self.data.isel(sample=idx).values)
        return x, self.labels[idx]

    def field_pixels(self, i: int) -> np.ndarray:
        """Pixel set (n, time, band) of the ``i``-th field (field kind)."""
        if self.kind != "field":
            raise DataError(f"{self.uri} is a {self.kind} training set, not a field one")
        start = int(self.dataset["start"].values[i])
        count = int(self.dataset["count"].values[i])
        return np.asarray(self.data[start : start + count].values)

    def input_contract(self) -> InputContract:
        """The input contract of a model trained on this set."""
        from models.contract import InputContract  # models/ imports torch: only when asked

        return InputContract(
            bands=self.bands,
            input_kind=self.kind,
            time_kind=self.time_kind,
            n_time=len(self.times),
            period=self.period,
            normalisation={b: s.band_stats() for b, s in self.norm_stats.items()},
            class_map=self.class_map,
            patch_size=self.patch_size,
        )


def open_training_set(uri: str | Path) -> TrainingSet:
    """Open a training set written by cropflow (lazily); DataError if it is not one."""
    path = _path(uri)
    if not path.exists():
        raise DataError(f"training set not found: {uri}", hint="build it first, or fix the path")
    try:
        ds = xr.open_zarr(path, consolidated=False)
    except Exception as exc:  # zarr raises several types for a broken store
        raise DataError(f"{uri} is not a readable Zarr store: {exc}") from exc
    attrs = ds.attrs
    version = attrs.get("cropflow_training_set")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{uri} is not a cropflow training set (format {version!r}, expected {FORMAT_VERSION})",
            hint="rebuild it with build_training_set",
        )
    return TrainingSet(
        uri=str(path),
        dataset=ds,
        kind=attrs["kind"],
        bands=[str(b) for b in ds["band"].values],
        times=np.asarray(ds["time"].values),
        class_map=ClassMap.model_validate(attrs["class_map"]),
        norm_stats={b: NormStats.model_validate(s) for b, s in attrs["norm_stats"].items()},
        class_weights={str(k): float(v) for k, v in attrs["class_weights"].items()},
        time_kind=attrs.get("time_kind", "acquisition"),
        period=attrs.get("period"),
        patch_size=attrs.get("patch_size"),
        crs=attrs.get("crs"),
        summary=dict(attrs.get("summary", {})),
    )
