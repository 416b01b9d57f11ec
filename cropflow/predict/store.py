"""The prediction store: a Zarr v3 group on the cube's grid, plus one marker per finished tile.

Layout (``<key>`` is the prediction's name)::

    <key>.zarr/          class_id (y, x) uint8, fill 255 = no prediction
                         probability (class, y, x) uint8, 0..255 = 0..1, ``class`` = class names
                         confidence (y, x) uint8, the largest probability
                         coordinates y, x, spatial_ref copied from the cube
    <key>.zarr.tiles/    <tile>.done markers (and, for field models, per-group results)

Chunks are the tiles, so tiles written by different processes never share a chunk. A marker
is created only after its tile's chunks are written, so a crash leaves at most a tile with no
marker, which a resumed run predicts again. The group attribute ``cropflow:prediction``
holds the fingerprint of the run (cube, model, tiling); a store with another fingerprint is
discarded rather than resumed.
"""

from __future__ import annotations

import json
import shutil
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import numpy.typing as npt
import xarray as xr
import zarr

from cropflow.classes import ClassMap
from cropflow.errors import DataError
from cropflow.predict.cube import open_lazy
from cropflow.predict.tiling import Window
from cropflow.storage import consolidate_zarr, zarr_stamp

#: Group attribute holding the prediction's metadata.
META_ATTR = "cropflow:prediction"
#: Value of ``class_id`` where nothing was predicted (no data, or tile not done yet).
NODATA = 255


def markers_dir(store: Path) -> Path:
    """Where the tile markers of ``store`` live."""
    return store.with_name(store.name + ".tiles")


def read_meta(store: Path) -> dict[str, Any] | None:
    """The ``cropflow:prediction`` metadata of a store, or None when there is no such store."""
    if not (store / "zarr.json").is_file():
        return None
    try:
        attrs = zarr.open_group(str(store), mode="r").attrs.asdict()
    except Exception:  # an unreadable leftover is treated as absent
        return None
    meta = attrs.get(META_ATTR)
    return meta if isinstance(meta, dict) else None


def discard(store: Path) -> None:
    """Remove a store and its markers (an earlier prediction with another fingerprint)."""
    for path in (store, markers_dir(store)):
        if path.exists():
            shutil.rmtree(path)


def _template(cube_uri: str, class_map: ClassMap, tile_size: int) -> xr.Dataset:
    cube = open_lazy(cube_uri)
    ny, nx = int(cube.sizes["y"]), int(cube.sizes["x"])
    k = len(class_map.classes)
    chunks2 = (min(tile_size, ny), min(tile_size, nx))
    coords: dict[str, Any] = {
        "y": cube["y"].variable.load(),
        "x": cube["x"].variable.load(),
        "class": ("class", np.array(class_map.names, dtype=object)),
        "class_value": ("class", np.array(class_map.ids, dtype=np.uint8)),
    }
    if "spatial_ref" in cube.coords:
        coords["spatial_ref"] = cube["spatial_ref"].variable.load()
    ds = xr.Dataset(
        {
            "class_id": (("y", "x"), da.full((ny, nx), NODATA, dtype=np.uint8, chunks=chunks2)),
            "probability": (
                ("class", "y", "x"),
                da.zeros((k, ny, nx), dtype=np.uint8, chunks=(k, *chunks2)),
            ),
            "confidence": (("y", "x"), da.zeros((ny, nx), dtype=np.uint8, chunks=chunks2)),
        },
        coords=coords,
    )
    ds["class_id"].attrs = {
        "long_name": "class id",
        "flag_values": class_map.ids,
        "flag_meanings": " ".join(class_map.names),
        "nodata": NODATA,
    }
    ds["probability"].attrs = {"long_name": "class probability", "scale_factor_note": "1/255"}
    ds["confidence"].attrs = {"long_name": "largest class probability", "note": "0..255 = 0..1"}
    ds["class_id"].encoding = {"fill_value": NODATA}
    ds["probability"].encoding = {"fill_value": 0}
    ds["confidence"].encoding = {"fill_value": 0}
    return ds


def create_store(
    store: Path, cube_uri: str, class_map: ClassMap, tile_size: int, meta: dict[str, Any]
) -> None:
    """Write an empty prediction store (metadata and coordinates only), atomically."""
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.with_name(f".{store.name}.{uuid.uuid4().hex[:8]}.tmp")
    ds = _template(cube_uri, class_map, tile_size)
    ds.attrs[META_ATTR] = {**meta, "complete": False}
    try:
        ds.to_zarr(str(tmp), mode="w", compute=False, zarr_format=3, consolidated=False)
        tmp.rename(store)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    markers_dir(store).mkdir(exist_ok=True)


def prepare_store(
    store: Path,
    cube_uri: str,
    class_map: ClassMap,
    tile_size: int,
    meta: dict[str, Any],
    resume: bool,
) -> set[str]:
    """Create the store, or reuse one of the same fingerprint; returns the tiles already done."""
    old = read_meta(store)
    if old is not None and resume and old.get("fingerprint") == meta["fingerprint"]:
        markers_dir(store).mkdir(exist_ok=True)
        return done_tiles(store)
    discard(store)
    create_store(store, cube_uri, class_map, tile_size, meta)
    return set()


def done_tiles(store: Path) -> set[str]:
    """Names of the tiles whose marker exists."""
    folder = markers_dir(store)
    if not folder.is_dir():
        return set()
    return {p.name.removesuffix(".done") for p in folder.glob("*.done")}


def mark_done(store: Path, name: str) -> None:
    """Record that tile ``name`` is written (call only after its chunks are written)."""
    (markers_dir(store) / f"{name}.done").touch()


def write_tile(
    store: Path,
    window: Window,
    class_id: npt.NDArray[np.uint8],
    probability: npt.NDArray[np.uint8],
    confidence: npt.NDArray[np.uint8],
) -> None:
    """Write one tile's arrays into its window of the store."""
    cls, prob, conf = _output_arrays(str(store), zarr_stamp(store))
    cls[window.rows, window.cols] = class_id
    prob[:, window.rows, window.cols] = probability
    conf[window.rows, window.cols] = confidence


_Array = zarr.Array[Any]


@lru_cache(maxsize=4)
def _output_arrays(store: str, stamp: tuple[int, int, int]) -> tuple[_Array, _Array, _Array]:
    """The store's three output arrays, opened once per store (``stamp``: its
    :func:`~cropflow.storage.zarr_stamp`, so a store made again at the same path is opened
    again). Opening them for every tile cost as much as writing the tile."""
    cls, prob, conf = (
        zarr.open_array(f"{store}/{name}", mode="r+")
        for name in ("class_id", "probability", "confidence")
    )
    return cls, prob, conf


def mark_complete(store: Path) -> None:
    """Flag the store as complete (every tile written)."""
    group = zarr.open_group(str(store), mode="r+")
    old = group.attrs.asdict().get(META_ATTR)
    meta = dict(old) if isinstance(old, dict) else {}
    meta["complete"] = True
    group.attrs[META_ATTR] = meta
    consolidate_zarr(store)


def open_prediction(store: str | Path, require_complete: bool = True) -> xr.Dataset:
    """A prediction store as an xarray Dataset (lazy), refusing an incomplete one."""
    path = Path(store)
    meta = read_meta(path)
    if meta is None:
        raise DataError(
            f"{path} is not a prediction store",
            hint="give the path of a <key>.zarr written by the predict flow",
        )
    if require_complete and not meta.get("complete"):
        raise DataError(
            f"prediction {path} is incomplete (an interrupted run)",
            hint="run the prediction again with resume=True to finish the missing tiles",
        )
    result: xr.Dataset = xr.open_zarr(str(path), consolidated=False, decode_coords="all")
    return result


def meta_json(meta: dict[str, Any]) -> str:
    """The metadata as stable JSON (for fingerprints)."""
    return json.dumps(meta, sort_keys=True, default=str)
