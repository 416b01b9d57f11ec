"""Reading one band of one item onto a block of the grid.

Two readers, chosen per source (``CubeParams.reader``):

* **odc-stac's reader** (``odc.loader.RioReader``, the rasterio reader under
  ``odc.stac.load``): a window read when the COG sits on the grid's pixel lattice, a warp
  otherwise (other CRS, other resolution, bilinear...). Used for every remote COG and every
  source that needs resampling, and for all sources with ``reader="odc"``.
* **direct window read** (``reader="auto"``, the default): a local COG already on the grid's
  lattice is read with one ``rasterio`` window read through a per-thread cache of open
  datasets. Measured on 1024 px blocks of 4096 px COGs: odc-stac's per-read overhead (open,
  reprojection geometry, environment) cost 25 % on top of decoding, this path about 0
  (``benchmarks/RESULTS.md``). Open datasets are keyed by path, mtime and size, so a
  rewritten file is reopened; GDAL's block cache is capped at :data:`GDAL_CACHE_MB` while
  reading, so cached datasets cannot grow a worker's memory.

A band stored at an integer multiple k of the grid resolution on the same lattice (Sentinel-2's
20 m bands and SCL on a 10 m grid) is read at its native resolution and repeated k x k when the
resampling is nearest: exactly what a nearest warp computes, without the warp's cost.

Failed reads are retried with exponential backoff (the dataset is reopened); then
:class:`SourceReadError` names the source, and the caller skips the item.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from odc.loader import RasterLoadParams, RasterSource, RioDriver, RioReader
from pyproj import CRS
from rasterio.windows import Window

from cropflow.cube.plan import SourceBand
from cropflow.stac.signing import readable_href

log = logging.getLogger(__name__)

#: Tolerance (in grid pixels) when deciding that two pixel lattices coincide.
LATTICE_TOL = 1e-6
#: Open datasets kept per thread by the direct reader.
HANDLE_CACHE_SIZE = 256
#: GDAL block cache (MB) while a block is read: bounds what cached datasets hold.
GDAL_CACHE_MB = 64

_HANDLES = threading.local()

_DRIVER = RioDriver()


class SourceReadError(Exception):
    """A COG could not be read after the retries."""

    def __init__(self, href: str, reason: str) -> None:
        super().__init__(f"{href}: {reason}")
        self.href = href
        self.reason = reason


@lru_cache(maxsize=256)
def _crs(text: str) -> CRS:
    return CRS.from_user_input(text)


@contextmanager
def reader_context(gbox: GeoBox, scope: str = "") -> Iterator[Any]:
    """The rasterio/GDAL environment odc-stac reads in, for one block.

    ``scope`` (a cube's key): this thread's cached datasets and known-bad sources are kept
    while blocks of the same scope follow each other, and dropped when the scope changes.
    """
    if getattr(_HANDLES, "scope", None) != scope:
        close_handles()
        _HANDLES.bad = {}
        _HANDLES.scope = scope
    with (
        _DRIVER.restore_env(_DRIVER.capture_env(), _DRIVER.new_load(gbox)) as ctx,
        rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB),
    ):
        yield ctx


def local_path(href: str) -> str | None:
    """The file path of a local href (``file://`` URI or plain path), else None."""
    if href.startswith("file://"):
        return url2pathname(urlparse(href).path)
    if "://" in href:
        return None
    return href


def _handles() -> OrderedDict[tuple[str, int, int], Any]:
    cache: OrderedDict[tuple[str, int, int], Any] | None = getattr(_HANDLES, "cache", None)
    if cache is None:
        cache = _HANDLES.cache = OrderedDict()
    return cache


def _open_cached(path: str) -> Any:
    st = Path(path).stat()
    key = (path, st.st_mtime_ns, st.st_size)
    cache = _handles()
    ds = cache.get(key)
    if ds is not None:
        cache.move_to_end(key)
        return ds
    ds = rasterio.open(path, sharing=False)
    cache[key] = ds
    while len(cache) > HANDLE_CACHE_SIZE:
        _, old = cache.popitem(last=False)
        old.close()
    return ds


def _forget(path: str) -> None:
    cache = _handles()
    for key in [k for k in cache if k[0] == path]:
        cache.pop(key).close()


def close_handles() -> None:
    """Close this thread's cached datasets."""
    cache = _handles()
    while cache:
        cache.popitem()[1].close()


def lattice_factor(src: SourceBand, gbox: GeoBox) -> int | None:
    """k when ``src`` is on the grid's pixel lattice at k times its pixel size (the same k
    along x and y; pixels may be non-square), else None."""
    if src.transform is None or src.crs is None or gbox.crs is None:
        return None
    a, b, c, d, e, f = src.transform
    g = gbox.transform
    if b or d or g.b or g.d or g.e >= 0 or e >= 0:
        return None
    rx, ry = g.a, -g.e
    k = a / rx
    if round(k) < 1 or abs(k - round(k)) > LATTICE_TOL or abs(-e / ry - round(k)) > LATTICE_TOL:
        return None
    phase_x = (g.c - c) / rx
    phase_y = (f - g.f) / ry
    if abs(phase_x - round(phase_x)) > LATTICE_TOL or abs(phase_y - round(phase_y)) > LATTICE_TOL:
        return None
    if _crs(src.crs) != gbox.crs.proj:
        return None
    return round(k)


def _source_box(src: SourceBand, gbox: GeoBox, k: int) -> tuple[GeoBox, int, int]:
    """The box on the source's lattice (k x the pixel size) that covers ``gbox``, and the
    phase."""
    if k == 1:
        return gbox, 0, 0
    if src.transform is None:
        raise ValueError(f"{src.href}: no transform known")
    _, _, c, _, _, f = src.transform
    g = gbox.transform
    rx, ry = g.a, -g.e
    px = round((g.c - c) / rx) % k
    py = round((f - g.f) / ry) % k
    h, w = gbox.shape.yx
    shape = (math.ceil((h + py) / k), math.ceil((w + px) / k))
    aff = Affine(rx * k, 0.0, g.c - px * rx, 0.0, -ry * k, g.f + py * ry)
    return GeoBox(shape, aff, gbox.crs), py, px


def _load_cfg(dtype: np.dtype, fill: float, nodata: float | None, resampling: str) -> Any:
    return RasterLoadParams(
        dtype=str(dtype),
        fill_value=fill,
        src_nodata_override=nodata,
        resampling=resampling,
        fail_on_error=True,
    )


def _direct_read(src: SourceBand, path: str, box: GeoBox, buf: np.ndarray, fill: float) -> None:
    """One window read of a COG whose pixels coincide with ``box``'s (cached dataset)."""
    ds = _open_cached(path)
    t = ds.transform
    col0 = round((box.affine.c - t.c) / t.a)
    row0 = round((box.affine.f - t.f) / t.e)
    h, w = buf.shape
    r0, r1 = max(row0, 0), min(row0 + h, ds.height)
    c0, c1 = max(col0, 0), min(col0 + w, ds.width)
    if r0 >= r1 or c0 >= c1:
        buf[...] = fill
        return
    window = Window(c0, r0, c1 - c0, r1 - r0)
    if (r0, r1, c0, c1) == (row0, row0 + h, col0, col0 + w):
        part = buf
        # a view: rasterio reshapes ``out`` in place and leaves it 3-D when a read fails
        ds.read(src.band_index, window=window, out=part.view())
    else:
        buf[...] = fill
        part = ds.read(src.band_index, window=window, out_dtype=buf.dtype)
        buf[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = part
        part = buf[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0]
    nodata = src.nodata if src.nodata is not None else ds.nodata
    if nodata is not None and fill != nodata:
        part[part == nodata] = fill


def _read_once(
    src: SourceBand,
    gbox: GeoBox,
    out: np.ndarray,
    fill: float,
    resampling: str,
    ctx: Any,
    direct: bool,
) -> None:
    k = lattice_factor(src, gbox)
    if k is None or (k > 1 and resampling != "nearest"):
        out[...] = fill
        cfg = _load_cfg(out.dtype, fill, src.nodata, resampling)
        source = RasterSource(readable_href(src.href, src.sign), band=src.band_index)
        RioReader(source, ctx).read(cfg, gbox, dst=out)
        return
    box, py, px = _source_box(src, gbox, k)
    buf = out if k == 1 else np.empty(box.shape.yx, dtype=out.dtype)
    path = local_path(src.href) if direct else None
    if path is not None:
        _direct_read(src, path, box, buf, fill)
    else:
        buf[...] = fill
        cfg = _load_cfg(out.dtype, fill, src.nodata, "nearest")
        source = RasterSource(readable_href(src.href, src.sign), band=src.band_index)
        RioReader(source, ctx).read(cfg, box, dst=buf)
    if k > 1:
        up = np.repeat(np.repeat(buf, k, axis=1), k, axis=0)
        h, w = out.shape
        out[...] = up[py : py + h, px : px + w]


def read_band(
    src: SourceBand,
    gbox: GeoBox,
    out: np.ndarray,
    *,
    fill: float,
    resampling: str,
    ctx: Any,
    retries: int = 2,
    backoff_s: float = 0.5,
    direct: bool = True,
) -> None:
    """Read ``src`` onto ``gbox`` into ``out`` (its dtype); pixels it does not cover = fill.

    ``direct``: allow the direct window read (see the module docstring). Raises
    SourceReadError after ``retries`` failed retries.
    """
    known_bad: dict[str, str] = getattr(_HANDLES, "bad", {})
    if src.href in known_bad:  # failed in an earlier block of this cube: no more retries
        raise SourceReadError(src.href, known_bad[src.href])
    delay = backoff_s
    for attempt in range(retries + 1):
        try:
            _read_once(src, gbox, out, fill, resampling, ctx, direct)
            return
        except (rasterio.errors.RasterioError, OSError) as exc:
            path = local_path(src.href)
            if path is not None:
                _forget(path)
            reason = f"{type(exc).__name__}: {exc}"
            if attempt == retries:
                known_bad[src.href] = reason
                _HANDLES.bad = known_bad
                raise SourceReadError(src.href, reason) from exc
            log.info("retrying %s after %s", src.href, reason)
            time.sleep(delay)
            delay *= 2
