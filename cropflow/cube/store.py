"""The cube on disk: a Zarr v3 group, written block by block, resumable, atomic on completion.

Cube format (``cropflow-cube/1``; the labels, training and prediction steps code against it)
-------------------------------------------------------------------------------------------
A Zarr v3 group with consolidated metadata. Open it with :func:`open_cube`, or with
``xr.open_zarr(uri, decode_coords="all")``; ``ds.odc.geobox`` and
``ds.rio.crs`` then work.

Data variables, all with dims ``(time, y, x)``, stored in chunks ``(all times, side, side)``
(time in chunks of ``params.time_chunk`` when set), ``side`` =
:func:`cropflow.cube.grid.store_chunk` of the write block (at most 256 px: window readers
decode what they read); :func:`open_cube` gives Dask chunks of one block:

* one ``float32`` variable per band NAME, as the collection profile names it (``red``,
  ``nir``, ``ndvi``, ``vv``...): ``stored * scale + offset`` of the profile's rule, composited
  over the valid observations of the time step by the band's rule (median; mean for
  backscatter, in linear power, written in dB; first for categorical bands); attributes ``kind``,
  ``units``, ``composite``; NaN where nothing valid was seen and nothing could be interpolated;
* one ``float32`` variable per index NAME (``ndvi``, ...), computed from those composites;
* ``valid_count`` (``uint8``, or ``uint16`` when a step can hold more than 255 acquisitions):
  valid observations (solar days, overlapping tiles mosaicked; not cloud-masked, no band
  missing) behind each value; 0 = none;
* ``interpolated`` (``bool``): the value was filled in time (linear between the nearest
  filled steps, the nearest one before the first or after the last); ``valid_count`` is 0.

Coordinates: ``time`` (period start for composites; acquisition time for ``period=None``,
naive UTC), ``y`` and ``x`` (pixel centres, grid CRS units, y decreasing), ``spatial_ref``
(scalar; ``crs_wkt``/``spatial_ref``/``GeoTransform`` attributes, CF grid mapping; every data
variable has ``grid_mapping: spatial_ref``).

Group attributes (JSON): ``cropflow:format``, ``cropflow:complete`` (false until the final
step), ``cropflow:key`` (hash of parameters, grid, items), ``cropflow:params``,
``cropflow:grid``, ``cropflow:time`` (period starts/ends), ``cropflow:items`` (ids used),
``cropflow:bad_items`` (skipped items and why), ``cropflow:provider``,
``cropflow:search_uri``, ``cropflow:versions`` and, once complete, ``cropflow:summary``.

Life cycle: a build writes ``<name>.zarr.partial`` (every block writes its chunks, then an
atomic marker ``_cropflow_blocks/<iy>-<ix>.json``); a re-run skips blocks with a marker; the
final step records the summary, sets ``cropflow:complete`` and renames the store to
``<name>.zarr``. A reader can therefore tell an incomplete cube (no final path, or the flag is
false); :func:`open_cube` refuses one with a DataError.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from odc.geo.xr import xr_coords
from pydantic import BaseModel, Field
from zarr.codecs import BloscCodec, ZstdCodec

from cropflow.cube.block import BlockResult, BlockStats
from cropflow.cube.grid import GridSpec, store_chunk, store_layout
from cropflow.cube.indices import INDICES
from cropflow.cube.plan import CUBE_FORMAT, BadItem, CubePlan, version_info
from cropflow.errors import DataError
from cropflow.storage import atomic_write, consolidate_zarr, replace_dir

MARKER_DIR = "_cropflow_blocks"
PARTIAL_SUFFIX = ".partial"
ATTR = "cropflow:"


def cube_path(uri: str | Path) -> Path:
    """Local path of a cube URI (a path or a ``file://`` URI)."""
    text = str(uri)
    if text.startswith("file://"):
        return Path(url2pathname(urlparse(text).path))
    if "://" in text:
        raise DataError(f"cube URI {text!r} is not a local path", hint="use a path or file://")
    return Path(text)


def partial_path(final: Path) -> Path:
    """Where an unfinished build of ``final`` lives."""
    return final.with_name(final.name + PARTIAL_SUFFIX)


def _compressor(name: str) -> Any:
    if name == "blosc-blosclz":  # the fastest of these on float32 reflectance, same ratio
        return BloscCodec(cname="blosclz", clevel=5, shuffle="shuffle")
    if name == "blosc-lz4":
        return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    if name == "blosc-zstd":
        return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle")
    return ZstdCodec(level=3)


def _var_attrs(name: str, plan: CubePlan) -> dict[str, Any]:
    if name in plan.bands:
        info = plan.band_info.get(name)
        kind = info.kind if info is not None else "reflectance"
        what = {"reflectance": "surface reflectance", "static": "(time-invariant)"}.get(kind, kind)
        attrs = {
            "long_name": f"{name} {what}",
            "kind": kind,
            "composite": info.composite if info is not None else "median",
            "kernel": plan.kernels[name],
        }
        unit = info.unit if info is not None else "1"
        if info is not None and info.composite == "mean_db":
            unit = "dB"  # composited in linear power, written in decibels
        return attrs | ({"units": unit} if unit else {})
    if name in INDICES:
        return {"long_name": INDICES[name].description, "units": "1"}
    if name == "valid_count":
        return {"long_name": "valid observations behind the value", "units": "1"}
    return {"long_name": "value filled by linear interpolation in time"}


def _dtype(name: str, plan: CubePlan) -> np.dtype:
    if name == "valid_count":
        return np.dtype(plan.count_dtype)
    if name == "interpolated":
        return np.dtype(bool)
    return np.dtype(np.float32)


def template(plan: CubePlan) -> xr.Dataset:
    """The cube's empty, lazily backed Dataset: coordinates, variables, chunks, attributes."""
    gbox = plan.geobox()
    h, w = gbox.shape.yx
    n = len(plan.axis)
    chunks = _chunks(plan)
    coords: dict[str, Any] = {
        str(k): v for k, v in xr_coords(gbox, crs_coord_name="spatial_ref").items()
    }
    coords["time"] = pd.DatetimeIndex(plan.axis.times)
    data_vars = {}
    for name in plan.variables:
        arr = da.zeros(
            (n, h, w), chunks=(chunks[0], plan.chunk, plan.chunk), dtype=_dtype(name, plan)
        )
        attrs = {**_var_attrs(name, plan), "grid_mapping": "spatial_ref"}
        data_vars[name] = xr.Variable(("time", "y", "x"), arr, attrs=attrs)
    return xr.Dataset(data_vars, coords=coords)


def _chunks(plan: CubePlan) -> tuple[int, int, int]:
    n = len(plan.axis)
    side, _ = store_layout(plan.chunk)
    return (min(plan.params.time_chunk or n, n), side, side)


def _encoding(plan: CubePlan) -> dict[str, dict[str, Any]]:
    comp = _compressor(plan.params.compressor)
    enc: dict[str, dict[str, Any]] = {}
    chunks = _chunks(plan)
    _, shard = store_layout(plan.chunk)
    for name in plan.variables:
        enc[name] = {"chunks": chunks, "compressors": [comp]}
        if shard:  # a block's chunks in one shard: one file per block write
            enc[name]["shards"] = (chunks[0], shard, shard)
        if _dtype(name, plan).kind == "f":
            enc[name]["_FillValue"] = np.nan
    # microseconds: acquisition times (period=None) carry fractions of a second
    enc["time"] = {"units": "microseconds since 1970-01-01", "dtype": "int64"}
    return enc


def provenance(plan: CubePlan) -> dict[str, Any]:
    """The group attributes recorded when a build starts."""
    return {
        ATTR + "format": CUBE_FORMAT,
        ATTR + "complete": False,
        ATTR + "key": plan.key,
        ATTR + "params": plan.params.model_dump(mode="json"),
        ATTR + "grid": {
            **plan.grid.model_dump(mode="json"),
            "shape": list(plan.grid.shape),
            "chunk": plan.chunk,
            "store_chunk": store_chunk(plan.chunk),
        },
        ATTR + "time": {
            "period": plan.axis.period,
            "starts": [t.isoformat() for t in plan.axis.starts],
            "ends": [t.isoformat() for t in plan.axis.ends],
            "as_of": None if plan.params.as_of is None else plan.params.as_of.isoformat(),
            "observed_steps": plan.observed_steps,
        },
        ATTR + "items": [i.id for i in plan.items],
        ATTR + "n_items_in": plan.n_items_in,
        ATTR + "bad_items": [b.model_dump() for b in plan.bad_items],
        ATTR + "provider": plan.provider,
        ATTR + "search_uri": plan.search_uri,
        ATTR + "versions": version_info(),
    }


def create_store(path: Path, plan: CubePlan) -> None:
    """Write the group's metadata and coordinates (no data chunk) at ``path``."""
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = template(plan)
    ds.attrs.update(provenance(plan))
    ds.to_zarr(
        path, mode="w", compute=False, zarr_format=3, consolidated=False, encoding=_encoding(plan)
    )


def store_key(path: Path) -> str | None:
    """The plan key recorded in a store, or None if there is no readable store."""
    try:
        attrs = zarr.open_group(str(path), mode="r", zarr_format=3).attrs.asdict()
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError):
        return None
    key = attrs.get(ATTR + "key")
    return key if isinstance(key, str) else None


def write_block(path: Path, result: BlockResult) -> None:
    """Write one block's arrays into their chunks, then its completion marker."""
    t0 = time.perf_counter()
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    r = result.block
    for name, arr in result.arrays.items():
        target = group[name]
        if not isinstance(target, zarr.Array):
            raise DataError(f"{path}/{name} is not an array", hint="delete the partial cube")
        target[:, r.y0 : r.y1, r.x0 : r.x1] = arr.astype(target.dtype, copy=False)
    result.stats.write_seconds = time.perf_counter() - t0
    write_marker(path, result.stats)


def write_marker(path: Path, stats: BlockStats) -> None:
    """Record that a block is written (atomically)."""
    folder = path / MARKER_DIR
    folder.mkdir(exist_ok=True)
    atomic_write(folder / f"{stats.key}.json", stats.model_dump_json())


def done_blocks(path: Path) -> dict[str, BlockStats]:
    """Markers of the blocks already written in a partial store."""
    folder = path / MARKER_DIR
    if not folder.is_dir():
        return {}
    out = {}
    for f in folder.glob("*.json"):
        s = BlockStats.model_validate_json(f.read_text())
        out[s.key] = s
    return out


class StepStats(BaseModel):
    """Valid-observation statistics of one time step over the whole cube."""

    time: str
    mean_valid_obs: float = Field(description="Mean valid observations per pixel.")
    observed_fraction: float = Field(description="Pixels with at least one valid observation.")
    interpolated_fraction: float
    empty_fraction: float


class CubeRef(BaseModel):
    """A finished cube, by reference, with what a summary shows."""

    uri: str = Field(description="Local path of the Zarr store.")
    key: str
    version: str = Field(
        "", description="Stamp of the content: the key and the items actually used."
    )
    degraded: bool = Field(
        False,
        description="Built without some items (unreadable): not final; a rerun retries them.",
    )
    grid: GridSpec
    chunk: int
    period: str | None
    times: list[str]
    bands: list[str]
    indices: list[str]
    n_items: int = Field(description="Items used.")
    bad_items: list[BadItem] = Field(default_factory=list)
    blocks_total: int
    blocks_written: int = Field(description="Blocks written by this run (others resumed).")
    size_bytes: int
    elapsed_s: float = Field(description="Wall time of this run's write step.")
    task_s: float = Field(
        0.0, description="Summed time of this run's block tasks (compute + write), all workers."
    )
    steps: list[StepStats]

    def to_markdown(self) -> str:
        """A short report: grid, periods, valid observations, size, time."""
        h, w = self.grid.shape
        lines = [
            f"# Datacube `{self.key}`",
            "",
            f"- store: `{self.uri}`",
            f"- grid: {self.grid.describe()} (chunk {self.chunk} px)",
            f"- time: {len(self.times)} steps, period {self.period or 'acquisition dates'}",
            f"- bands: {', '.join(self.bands)}; indices: {', '.join(self.indices) or 'none'}",
            f"- items used: {self.n_items}; skipped as unreadable: {len(self.bad_items)}"
            + (" (**DEGRADED**: a rerun retries them)" if self.degraded else ""),
            f"- blocks: {self.blocks_total} ({self.blocks_written} written by this run)",
            f"- size on disk: {self.size_bytes / 2**20:.1f} MiB for {h * w * len(self.times)} "
            "pixel-steps",
            f"- write time: {self.elapsed_s:.1f} s wall, {self.task_s:.1f} s in block tasks",
            "",
            "| time | mean valid obs | observed | interpolated | empty |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {s.time} | {s.mean_valid_obs:.2f} | {s.observed_fraction:.1%} | "
            f"{s.interpolated_fraction:.1%} | {s.empty_fraction:.1%} |"
            for s in self.steps
        ]
        for b in self.bad_items:
            lines.append(f"\n- skipped item `{b.id}` ({b.stage}, {b.band}): {b.reason}")
        return "\n".join(lines) + "\n"


def step_stats(plan: CubePlan, stats: Iterable[BlockStats]) -> list[StepStats]:
    """Aggregate block stats into per-step cube statistics."""
    n = len(plan.axis)
    total = 0
    sums = np.zeros((4, n), dtype=np.int64)
    for s in stats:
        total += s.n_pixels
        sums += np.array([s.valid_obs, s.observed, s.interpolated, s.empty], dtype=np.int64)
    total = max(total, 1)
    return [
        StepStats(
            time=plan.axis.times[i].isoformat(),
            mean_valid_obs=float(sums[0, i] / total),
            observed_fraction=float(sums[1, i] / total),
            interpolated_fraction=float(sums[2, i] / total),
            empty_fraction=float(sums[3, i] / total),
        )
        for i in range(n)
    ]


def dir_size(path: Path) -> int:
    """Bytes of all files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def items_version(key: str, used: list[str]) -> str:
    """A stamp of the cube's content: its key and the items it was actually built from."""
    blob = json.dumps({"key": key, "items": sorted(used)}).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def finalize(partial: Path, final: Path, summary: dict[str, Any], bad: list[BadItem]) -> None:
    """The final step: record summary and skipped items, mark complete, swap into place.

    The block markers are kept beside the store (:func:`kept_markers`): a rerun of a
    degraded cube reopens it and rewrites only the blocks of the skipped items. An existing
    cube at ``final`` is replaced by two renames, so a reader sees the old cube or the new one,
    never a mix."""
    group = zarr.open_group(str(partial), mode="r+", zarr_format=3)
    group.attrs.update(
        {
            ATTR + "summary": summary,
            ATTR + "bad_items": [b.model_dump() for b in bad],
            ATTR + "degraded": bool(bad),
            ATTR + "version": summary.get("version"),
            ATTR + "complete": True,
        }
    )
    kept = kept_markers(final)
    if kept.exists():
        shutil.rmtree(kept)
    markers = partial / MARKER_DIR
    if markers.is_dir():
        markers.rename(kept)  # out of the store: Zarr warns about unknown folders
    consolidate_zarr(partial)
    replace_dir(partial, final)


def kept_markers(final: Path) -> Path:
    """Where the block markers of a complete cube are kept: ``.<name>.blocks`` beside it."""
    return final.with_name(f".{final.name}.blocks")


def reopen(final: Path, partial: Path, drop_blocks: set[str]) -> None:
    """Turn a complete cube back into a partial store whose blocks ``drop_blocks`` are to
    be written again (their markers removed); readers see no complete cube meanwhile."""
    if partial.exists():
        shutil.rmtree(partial)
    final.rename(partial)
    group = zarr.open_group(str(partial), mode="r+", zarr_format=3)
    group.attrs[ATTR + "complete"] = False
    folder = partial / MARKER_DIR
    kept = kept_markers(final)
    if kept.is_dir() and not folder.exists():
        kept.rename(folder)
    for key in drop_blocks:
        (folder / f"{key}.json").unlink(missing_ok=True)


def read_ref(path: Path) -> CubeRef:
    """The CubeRef recorded in a complete cube's attributes."""
    attrs = zarr.open_group(str(path), mode="r", zarr_format=3).attrs.asdict()
    summary = attrs.get(ATTR + "summary")
    if not isinstance(summary, dict):
        raise DataError(f"cube {path} has no summary", hint="re-run the build")
    return CubeRef.model_validate({**summary, "uri": str(path)})


def open_cube(uri: str | Path, require_complete: bool = True) -> xr.Dataset:
    """Open a cube lazily (dask arrays), refusing a missing or incomplete one with DataError."""
    path = cube_path(uri)
    partial = partial_path(path)
    if not path.exists():
        if partial.exists():
            done = len(done_blocks(partial))
            raise DataError(
                f"cube {path} is incomplete: its build stopped after {done} block(s) "
                f"({partial} holds the partial store)",
                hint="re-run the same build; it resumes where it stopped",
            )
        raise DataError(f"no cube at {path}", hint="build it first (the build_cube flow)")
    try:
        blocks = _dask_chunks(path)
        chunks: dict[str, Any] = {} if blocks is None else {"chunks": blocks}
        ds = xr.open_zarr(path, consolidated=False, decode_coords="all", zarr_format=3, **chunks)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError) as exc:
        raise DataError(
            f"{path} is not a readable cube ({exc})", hint="re-run the build that writes it"
        ) from None
    if require_complete and ds.attrs.get(ATTR + "complete") is not True:
        raise DataError(
            f"cube {path} is incomplete (cropflow:complete is not set)",
            hint="re-run the build to finish it, or pass require_complete=False to inspect it",
        )
    result: xr.Dataset = ds
    return result


def _dask_chunks(path: Path) -> dict[str, int] | None:
    """Dask chunks of a cube's arrays: one write block (a shard of several stored chunks) per
    Dask chunk, so that a graph over a whole tile stays as small as the build's; None (the
    stored chunks, xarray's default) for a cube stored without shards (one chunk per block)."""
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
        for _, array in group.arrays():
            shards = array.shards
            dims = getattr(array.metadata, "dimension_names", None)
            if shards is not None and dims == ("time", "y", "x"):
                return {"y": int(shards[1]), "x": int(shards[2])}
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError, KeyError):
        return None
    return None


def cube_json(path: Path) -> str:
    """The cube's attributes as pretty JSON (for debugging and the CLI)."""
    attrs = zarr.open_group(str(path), mode="r", zarr_format=3).attrs.asdict()
    return json.dumps(attrs, indent=2, default=str)
