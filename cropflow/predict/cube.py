"""Reading the datacube for prediction: its metadata (no pixels) and windows of pixels.

The cube format is the datacube package's: Zarr v3, one float32 variable per band name with
dims ``(time, y, x)``, pixel-centre coordinates and a ``spatial_ref`` coordinate. Opening it
reads metadata and coordinates only; :func:`read_window` reads the chunks of one window.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr
from affine import Affine

from cropflow.errors import DataError
from cropflow.predict.tiling import Window
from cropflow.storage import zarr_stamp

#: Cube variables that are bookkeeping, not bands.
NOT_BANDS = frozenset({"valid_count", "interpolated", "spatial_ref"})


@dataclass(frozen=True)
class CubeInfo:
    """What prediction needs to know about a cube before reading any pixel."""

    uri: str
    bands: list[str]
    times: npt.NDArray[np.datetime64]
    height: int
    width: int
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    period: str | None
    identity: str
    degraded: list[str] = field(default_factory=list)
    """Items the cube was built without (unreadable when it was built)."""
    as_of: str | None = None
    """In-season cube: the day it was cut at (ISO date); None for a whole season."""
    observed_steps: int | None = None
    """In-season cube: leading steps that may hold data (None: every step)."""
    units: dict[str, str] = field(default_factory=dict)
    """Units of the bands that state them (the cube's ``units`` attributes)."""

    @property
    def n_time(self) -> int:
        return len(self.times)

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)


def _open_lazy(uri: str) -> xr.Dataset:
    """The cube with lazily indexed (not dask) variables: indexing reads only what it needs."""
    try:
        result: xr.Dataset = xr.open_zarr(uri, consolidated=False, decode_coords="all", chunks=None)
        return result
    except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
        raise DataError(
            f"cannot open cube {uri!r}: {exc}",
            hint="give the path or URI of a cube written by the cube flow",
        ) from exc


def _check_complete(uri: str) -> None:
    """Let the datacube package refuse a missing or incomplete cube (a DataError)."""
    from cropflow.cube.store import open_cube

    open_cube(uri, require_complete=True)


def inspect_cube(uri: str, check_complete: bool = True) -> CubeInfo:
    """Bands, dates, grid and CRS of a cube; reads metadata and coordinates, no band data."""
    if check_complete:
        _check_complete(uri)
    ds = open_lazy(uri)
    for dim in ("time", "y", "x"):
        if dim not in ds.dims:
            raise DataError(
                f"cube {uri!r} has no {dim!r} dimension (dims: {list(ds.dims)})",
                hint="give a cube written by the cube flow (dims time, y, x)",
            )
    bands = [
        str(name)
        for name, var in ds.data_vars.items()
        if name not in NOT_BANDS and set(var.dims) in ({"time", "y", "x"}, {"y", "x"})
    ]
    try:
        import odc.geo.xr  # noqa: F401  (registers the .odc accessor)

        geobox = ds.odc.geobox
    except Exception as exc:  # odc raises several types for a missing/odd CRS
        raise DataError(
            f"cube {uri!r} has no usable grid/CRS: {exc}",
            hint="write the cube with a spatial_ref coordinate (the cube flow does)",
        ) from exc
    if geobox is None or geobox.crs is None:
        raise DataError(
            f"cube {uri!r} has no CRS", hint="write the cube with a spatial_ref coordinate"
        )
    a = geobox.affine
    attrs = ds.attrs
    time_attr = attrs.get("cropflow:time")
    period = time_attr.get("period") if isinstance(time_attr, dict) else None
    as_of = time_attr.get("as_of") if isinstance(time_attr, dict) else None
    observed = time_attr.get("observed_steps") if isinstance(time_attr, dict) else None
    period = period or attrs.get("period") or attrs.get("cropflow:period")
    identity = f"{attrs.get('cropflow:key') or uri}:{attrs.get('cropflow:version') or ''}"
    bad = attrs.get("cropflow:bad_items")
    degraded = (
        [str(b.get("id")) for b in bad if isinstance(b, dict)] if isinstance(bad, list) else []
    )
    return CubeInfo(
        uri=uri,
        bands=bands,
        times=np.asarray(ds["time"].values).astype("datetime64[ns]"),
        height=int(ds.sizes["y"]),
        width=int(ds.sizes["x"]),
        crs_wkt=geobox.crs.to_wkt(),
        transform=(a.a, a.b, a.c, a.d, a.e, a.f),
        period=None if period is None else str(period),
        identity=identity,
        degraded=degraded,
        as_of=None if as_of is None else str(as_of),
        observed_steps=int(observed) if as_of is not None and observed is not None else None,
        units={b: str(ds[b].attrs["units"]) for b in bands if "units" in ds[b].attrs},
    )


@lru_cache(maxsize=4)
def _cached(uri: str, stamp: tuple[int, int, int]) -> xr.Dataset:
    return _open_lazy(uri)


def open_lazy(uri: str) -> xr.Dataset:
    """The cube, lazily indexed, opened once per process (again when it was rewritten)."""
    return _cached(uri, zarr_stamp(uri))


#: Threads reading the bands of a window concurrently (Zarr decodes them in parallel).
_READERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cropflow-band")


@lru_cache(maxsize=4)
def _raw_arrays(uri: str, stamp: tuple[int, int, int]) -> dict[str, Any]:
    """The cube's band arrays that can be read as stored (zarr, no xarray decoding): float32,
    dims (time, y, x), NaN fill, no scale or offset, as the cube flow writes them."""
    import zarr

    out: dict[str, Any] = {}
    try:
        group = zarr.open_group(uri, mode="r", use_consolidated=False)  # as xarray reads it
    except Exception:  # anything odd: every band goes through xarray
        return out
    for name, array in group.arrays():
        meta = array.metadata
        dims = tuple(getattr(meta, "dimension_names", None) or ())
        attrs = dict(array.attrs)
        fill = getattr(meta, "fill_value", None)
        if (
            dims == ("time", "y", "x")
            and array.dtype == np.float32
            and not {"scale_factor", "add_offset"} & attrs.keys()
            and (fill is None or np.isnan(fill))
        ):
            out[name] = array
    return out


def read_window(uri: str, bands: list[str], window: Window) -> npt.NDArray[np.float32]:
    """Pixels ``[T, C, h, w]`` (float32, NaN = missing) of ``bands`` in ``window``; a
    time-invariant ``(y, x)`` layer (a static source's) has the same value at every date."""
    ds = open_lazy(uri)
    out = np.empty((ds.sizes["time"], len(bands), window.height, window.width), np.float32)
    raw = _raw_arrays(uri, zarr_stamp(uri))
    stored = [c for c, band in enumerate(bands) if band in raw]
    if stored:  # as stored, every band in one trip to zarr's event loop: a third of the CPU
        from zarr.core.sync import sync

        sel = (slice(None), window.rows, window.cols)
        got = sync(_gather([raw[bands[c]].async_array.getitem(sel) for c in stored]))
        for c, values in zip(stored, got, strict=True):
            out[:, c] = values

    def decoded(c: int) -> None:  # through xarray (scaled, other dims, static layers)
        var = ds[bands[c]]
        dims = ("time", "y", "x") if "time" in var.dims else ("y", "x")  # static: every date
        out[:, c] = var.transpose(*dims).isel(y=window.rows, x=window.cols).values

    others = [c for c in range(len(bands)) if c not in stored]
    for done in [_READERS.submit(decoded, c) for c in others]:
        done.result()
    return out


async def _gather(reads: list[Any]) -> list[Any]:
    import asyncio

    return list(await asyncio.gather(*reads))
