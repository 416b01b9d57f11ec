"""Stack the cubes of several sources, built on one grid, into one cube.

The main cube keeps its variables and names; each more source adds ``<source>_<band>``
variables (``s1_vv``, ``dem_elevation``...), a static source as ``(y, x)`` layers, plus the
terrain layers derived from its elevation. The result is a cube of the usual format
(:mod:`cropflow.cube.store`) with one more group attribute, ``cropflow:sources``: each
source's name, provider, collections, cube key and variables. It is written beside the main
cube as ``<key>.zarr.partial`` and renamed into place when complete, so a failed stack leaves
no half-written cube where a good one was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt
import odc.geo.xr  # noqa: F401 - registers the .odc accessor
import xarray as xr
import zarr

from cropflow.cube.grid import store_layout
from cropflow.cube.sources import SourceSpec
from cropflow.cube.store import (
    ATTR,
    CubeRef,
    _compressor,
    cube_path,
    dir_size,
    open_cube,
    partial_path,
    read_ref,
)
from cropflow.errors import DataError
from cropflow.storage import consolidate_zarr, replace_dir

#: Bumped when the stacked cube's content changes for the same parts (part of its key).
STACK_VERSION = 1
#: Units and descriptions of the derived terrain layers.
TERRAIN = {
    "slope": ("degree", "terrain slope (0 flat, 90 vertical), from the elevation"),
    "aspect": (
        "degree",
        "terrain aspect: the direction the slope faces, degrees clockwise from north "
        "(NaN where flat)",
    ),
}


@dataclass(frozen=True)
class SourcePart:
    """One more source's cube, built on the main cube's grid."""

    spec: SourceSpec
    cube: CubeRef


def stack_key(main: CubeRef, parts: list[SourcePart]) -> str:
    """Key of the stacked cube: the parts' contents and how they are stacked."""
    blob = {
        "version": STACK_VERSION,
        "main": [main.key, main.version],
        "parts": [[p.spec.model_dump(mode="json"), p.cube.key, p.cube.version] for p in parts],
    }
    text = json.dumps(blob, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def terrain(
    elevation: npt.NDArray[np.floating[Any]], res_x: float, res_y: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Slope and aspect (degrees) of an elevation block whose rows run north to south.

    Central differences inside, one-sided ones at the edges (``np.gradient``); ``res_x`` and
    ``res_y`` are the pixel width and height in the units of the elevation (metres).
    Aspect is the direction of steepest descent, clockwise from north; NaN where flat.
    """
    z = np.asarray(elevation, dtype=np.float64)
    if min(z.shape) < 2:
        nan = np.full(z.shape, np.nan, np.float32)
        return nan, nan.copy()
    d_row, d_col = np.gradient(z, res_y, res_x)
    east, north = d_col, -d_row  # rows increase southwards
    slope = np.degrees(np.arctan(np.hypot(east, north)))
    aspect = np.mod(np.degrees(np.arctan2(-east, -north)), 360.0)
    aspect[slope == 0] = np.nan
    return slope.astype(np.float32), aspect.astype(np.float32)


def _terrain_layer(elevation: xr.DataArray, which: str, res_x: float, res_y: float) -> xr.DataArray:
    """One terrain layer of a (y, x) elevation, chunk by chunk with a one-pixel halo."""
    index = 0 if which == "slope" else 1

    def block(z: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return terrain(z, res_x, res_y)[index]

    data = elevation.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data))
    out = da.map_overlap(block, data, depth=1, boundary="none", dtype=np.float32, trim=True)
    unit, text = TERRAIN[which]
    return xr.DataArray(out, dims=("y", "x"), attrs={"units": unit, "long_name": text})


def _same_grid(main: xr.Dataset, other: xr.Dataset, name: str) -> None:
    a, b = main.odc.geobox, other.odc.geobox
    if a.shape != b.shape or a.crs != b.crs or not a.affine.almost_equals(b.affine, 1e-6):
        raise DataError(
            f"the cube of source {name!r} is not on the main cube's grid ({b} vs {a})",
            hint="build every source with the main cube's grid (the chained flows do)",
        )


def _static_layer(var: xr.DataArray) -> xr.DataArray:
    """One (y, x) layer of a static source: its only date, else the median of its dates."""
    if "time" not in var.dims:
        return var
    if var.sizes["time"] == 1:
        return var.isel(time=0, drop=True)
    return var.median("time", skipna=True)


def _source_variables(main: xr.Dataset, part: SourcePart, chunk: int) -> dict[str, xr.DataArray]:
    """The part's variables, renamed, on the main cube's coordinates."""
    spec = part.spec
    ds = open_cube(part.cube.uri)
    _same_grid(main, ds, spec.name)
    if not spec.static:
        mine = np.asarray(ds["time"].values)
        theirs = np.asarray(main["time"].values)
        if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
            raise DataError(
                f"source {spec.name!r} has {mine.size} time steps, the main cube "
                f"{theirs.size} ({part.cube.uri})",
                hint="build the source with the main cube's period, start and end (the "
                "chained flows do), or make it static",
            )
    out: dict[str, xr.DataArray] = {}
    for band in part.cube.bands:
        var = ds[band]
        attrs = {
            **{k: v for k, v in var.attrs.items() if k != "grid_mapping"},
            "source": spec.name,
            "provider": ds.attrs.get(ATTR + "provider"),
            "band": band,
        }
        if spec.static:
            var = _static_layer(var)
            attrs["kind"] = "static"
        var = var.drop_vars([c for c in var.coords if c not in var.dims], errors="ignore")
        var = var.assign_coords({d: main[d] for d in var.dims})
        out[spec.variable(band)] = var.assign_attrs(attrs)
    if spec.derive:
        elevation = out.get(spec.variable("elevation"))
        if elevation is None:
            raise DataError(
                f"source {spec.name!r} derives {spec.derive} but has no elevation band "
                f"(its bands: {part.cube.bands})",
                hint="add elevation to the source's bands",
            )
        gbox = main.odc.geobox
        if gbox.crs is None or gbox.crs.geographic:
            raise DataError(
                f"source {spec.name!r}: slope and aspect need a projected grid in metres, the "
                f"cube's CRS is {gbox.crs}",
                hint="set the region's grid crs to a projected CRS (e.g. its UTM zone)",
            )
        res_x, res_y = abs(gbox.affine.a), abs(gbox.affine.e)
        elev = elevation.chunk({"y": chunk, "x": chunk})
        for which in spec.derive:
            layer = _terrain_layer(elev, which, res_x, res_y)
            layer = layer.assign_coords(y=main["y"], x=main["x"])
            out[spec.variable(which)] = layer.assign_attrs(
                source=spec.name, kind="static", band=which
            )
    return out


def _encoding(ds: xr.Dataset, chunk: int, compressor: str) -> dict[str, dict[str, Any]]:
    comp = _compressor(compressor)
    enc: dict[str, dict[str, Any]] = {}
    side, shard = store_layout(chunk)  # as the cube store: a block = one shard of chunks
    for name, var in ds.data_vars.items():
        chunks = tuple(
            ds.sizes[d] if d == "time" else (side if shard else min(chunk, ds.sizes[d]))
            for d in var.dims
        )
        enc[str(name)] = {"chunks": chunks, "compressors": [comp]}
        if shard:
            enc[str(name)]["shards"] = tuple(
                ds.sizes[d] if d == "time" else shard for d in var.dims
            )
        if var.dtype.kind == "f":
            enc[str(name)]["_FillValue"] = np.nan
    enc["time"] = {"units": "microseconds since 1970-01-01", "dtype": "int64"}
    return enc


def stack_sources(
    main: CubeRef, specs: list[SourceSpec], cubes: list[CubeRef], out: str | None = None
) -> CubeRef:
    """One cube of the main cube and the cube of every more source (``specs[i]`` built into
    ``cubes[i]`` on the main cube's grid; see the module doc); its reference.

    ``out``: the store path (unset: ``<key>.zarr`` beside the main cube). A complete stacked
    cube of the same key is returned as it is.
    """
    if len(specs) != len(cubes):
        raise DataError(
            f"{len(specs)} sources but {len(cubes)} source cubes",
            hint="give one built cube per source, in the same order",
        )
    if not specs:
        return main
    parts = [SourcePart(s, c) for s, c in zip(specs, cubes, strict=True)]
    key = stack_key(main, parts)
    final = cube_path(out) if out else cube_path(main.uri).with_name(f"{key}.zarr")
    if final.exists():
        try:
            ref = read_ref(final)
            if ref.key == key:
                return ref
        except DataError:
            pass
    t0 = time.perf_counter()
    base = open_cube(main.uri)
    chunk = main.chunk
    variables: dict[str, xr.DataArray] = {str(k): v for k, v in base.data_vars.items()}
    sources: list[dict[str, Any]] = []
    for part in parts:
        added = _source_variables(base, part, chunk)
        clash = sorted(set(added) & set(variables))
        if clash:
            raise DataError(
                f"source {part.spec.name!r} adds variables {clash} the cube already has",
                hint="give the source another name",
            )
        variables |= added
        sources.append(
            {
                "name": part.spec.name,
                "provider": part.spec.provider,
                "collections": part.spec.collections,
                "static": part.spec.static,
                "cube": part.cube.key,
                "version": part.cube.version,
                "n_items": part.cube.n_items,
                "variables": sorted(added),
            }
        )
    ds = xr.Dataset(variables, coords=base.coords, attrs=dict(base.attrs))
    for name, var in ds.data_vars.items():
        chunked = var.chunk({d: (-1 if d == "time" else chunk) for d in var.dims})
        chunked.attrs["grid_mapping"] = "spatial_ref"
        chunked.encoding = {}
        ds[name] = chunked
    bands = main.bands + [v for s in sources for v in s["variables"]]
    summary = main.model_dump(mode="json") | {
        "key": key,
        "bands": bands,
        "version": hashlib.sha256(
            json.dumps([main.version] + [s["version"] for s in sources]).encode()
        ).hexdigest()[:16],
        "degraded": main.degraded or any(p.cube.degraded for p in parts),
        "n_items": main.n_items + sum(p.cube.n_items for p in parts),
        "bad_items": [b.model_dump() for b in main.bad_items]
        + [b.model_dump() for p in parts for b in p.cube.bad_items],
    }
    ds.attrs |= {
        ATTR + "key": key,
        ATTR + "complete": False,
        ATTR + "main": {"key": main.key, "uri": main.uri},
        ATTR + "sources": sources,
    }
    ds.attrs.pop(ATTR + "summary", None)
    partial = partial_path(final)
    if partial.exists():
        shutil.rmtree(partial)
    partial.parent.mkdir(parents=True, exist_ok=True)
    recorded = base.attrs.get(ATTR + "params")  # the main cube's build parameters
    compressor = str((recorded if isinstance(recorded, dict) else {}).get("compressor") or "")
    compressor = compressor or "blosc-blosclz"
    ds.to_zarr(
        partial,
        mode="w",
        zarr_format=3,
        consolidated=False,
        encoding=_encoding(ds, chunk, compressor),
    )
    summary |= {
        "uri": str(final),
        "size_bytes": dir_size(partial),
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "blocks_written": main.blocks_total,
    }
    group = zarr.open_group(str(partial), mode="r+", zarr_format=3)
    group.attrs.update({ATTR + "summary": summary, ATTR + "complete": True})
    consolidate_zarr(partial)
    replace_dir(partial, final)
    return read_ref(final)
