"""A whole prediction: check the contract, plan the tiles, run the missing ones.

:func:`predict` is the library entry point (the ``predict`` task wraps it). Order matters:
the model's contract is checked against the cube's metadata *before* any pixel is read, the
store is created (or an interrupted one of the same fingerprint reopened), and only tiles
without a marker are run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pydantic import BaseModel, Field

from cropflow.classes import ClassMap
from cropflow.cube.cluster import dask_client
from cropflow.errors import ConfigError, ContractError
from cropflow.predict.cube import CubeInfo, inspect_cube
from cropflow.predict.engine import FieldGroupJob, FieldSample, Job, PaintJob, Runner, TileJob
from cropflow.predict.executors import (
    device_runners,
    resolve_devices,
    resolve_executor,
    run_dask,
    run_local,
)
from cropflow.predict.fields import load_fields, pixel_window
from cropflow.predict.model import (
    ModelBundle,
    days_since_epoch,
    load_bundle,
    with_ensemble,
    with_forecaster,
)
from cropflow.predict.params import AUTO_BATCH, PredictParams
from cropflow.predict.store import (
    discard,
    done_tiles,
    mark_complete,
    markers_dir,
    prepare_store,
)
from cropflow.predict.tiling import patch_stride, read_window, tile_grid, tile_side
from cropflow.settings import get_settings
from cropflow.storage import atomic_file, storage_errors
from models.contract import InputContract
from models.forecaster import CompletedSeasonModel

#: ``on_progress(done, total)``: called once at the start and after every finished job.
OnProgress = Callable[[int, int], None]


#: Stores kept per prediction name (the newest; other models' or older cubes' predictions).
KEEP_STORES = 3


class ModelInfo(BaseModel):
    """Where the model of a prediction came from."""

    uri: str = Field(description="What was asked for (alias or URI), as resolved.")
    alias: str | None = Field(None, description="Registry alias it was loaded by, if any.")
    name: str | None = Field(None, description="Registered model name.")
    version: str | None = Field(None, description="Registered model version.")
    run_id: str | None = Field(None, description="MLflow run that trained it.")
    identity: str = Field(description="Registry name, version, run and the weights' hash.")
    bands: list[str] = Field(
        default_factory=list, description="Input bands of the model's contract, by name."
    )


class PredictionResult(BaseModel):
    """A finished prediction, by reference: the store and what made it."""

    key: str
    region: str
    store: str = Field(description="Path of the prediction Zarr.")
    fingerprint: str = Field(
        "",
        description="Identity of the prediction (cube content, model version and weights, "
        "prediction parameters); the store records it, and products are built only from a "
        "store that holds this one.",
    )
    cube: str
    cube_degraded: list[str] = Field(
        default_factory=list, description="Items the cube was built without (degraded cube)."
    )
    model: ModelInfo
    input_kind: str
    class_map: ClassMap
    fields: str | None = None
    field_id_column: str | None = None
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]
    start: datetime = Field(description="First date of the cube (UTC).")
    end: datetime = Field(description="Last date of the cube (UTC).")
    tiles_total: int = Field(description="Jobs of the whole prediction (tiles, field groups).")
    tiles_predicted: int = Field(description="Jobs run by this call.")
    tiles_skipped: int = Field(description="Jobs already done by an earlier, interrupted run.")
    seconds: float
    devices: list[str]
    executor: str
    batch_size: int


def in_season_bundle(bundle: ModelBundle, cube: CubeInfo, strategy: str) -> ModelBundle:
    """The model that maps ``cube``: ``bundle`` itself, or, for an in-season cube with the
    "forecast" strategy, ``bundle`` completed by its season forecaster."""
    partial = cube.observed_steps is not None and cube.observed_steps < cube.n_time
    if not partial or strategy != "forecast" or isinstance(bundle.model, CompletedSeasonModel):
        return bundle
    return with_forecaster(bundle)


def with_tta(bundle: ModelBundle, tta: str) -> ModelBundle:
    """``bundle`` predicting with test-time augmentation ``tta`` (patch and field models)."""
    if tta == "none":
        return bundle
    if bundle.input_kind == "pixel":
        raise ConfigError(
            f"tta={tta!r} was asked for but model {bundle.uri} is a pixel model: flips and "
            "rotations do not change a pixel's series",
            hint="use tta='none' with pixel models (tta applies to patch and field models)",
        )
    return dataclasses.replace(bundle, tta=tta)


def check_contract(contract: InputContract, cube: CubeInfo, fields: str | None) -> None:
    """Refuse a cube (or missing fields) that the model's contract does not accept.

    Reads nothing but the cube's metadata: bands (naming both lists), time steps and
    period, normalisation of every band, patch size of patch models, fields of field models.
    """
    contract.check_bands(cube.bands)
    contract.check_time(cube.n_time, cube.period)
    if cube.observed_steps is not None:
        contract.check_observed(cube.observed_steps, cube.as_of)
    missing = [b for b in contract.bands if b not in contract.normalisation]
    if missing:
        raise ContractError(
            f"model contract has no normalisation for bands {missing} "
            f"(it has {sorted(contract.normalisation)})",
            hint="retrain the model; its training set must store statistics for every band",
        )
    check_backscatter_scale(contract, cube)
    if contract.input_kind == "patch" and not contract.patch_size:
        raise ContractError(
            "patch model contract has no patch_size",
            hint="retrain the model with a patch training set (it records the patch size)",
        )
    if contract.input_kind == "field" and not fields:
        raise ConfigError(
            "a field model needs field polygons, but no fields were given",
            hint="pass fields=<path of a GeoPackage/GeoParquet of field polygons>",
        )


def check_backscatter_scale(contract: InputContract, cube: CubeInfo) -> None:
    """Refuse backscatter in dB for a model trained on linear power, and the reverse.

    Cubes written since backscatter is composited as ``mean_db`` hold dB (mean of a season's
    backscatter below 0); older ones, and ``composite: mean``, hold linear power (always above
    0). The model's normalisation mean for the band tells which one it was trained on.
    """
    for band in contract.bands:
        unit = cube.units.get(band, "").lower()
        mean = contract.normalisation[band].mean
        if unit == "db" and mean > 0:
            trained, given, rule = "linear power", "dB", "mean"
        elif unit == "linear power" and mean < 0:
            trained, given, rule = "dB", "linear power", "mean_db"
        else:
            continue
        raise ContractError(
            f"the model was trained on {band} in {trained} (normalisation mean {mean:.3g}) but "
            f"cube {cube.uri} holds {band} in {given}",
            hint="retrain the model on a cube built like this one, or build the cube with the "
            f"composite the model was trained on (composite: {rule} in the profile's band)",
        )


def _stamp(path: str | None) -> str | None:
    """A path with the modification time of its file (or of its Zarr root metadata)."""
    if path is None:
        return None
    p = Path(path)
    probe = p / "zarr.json" if p.is_dir() else p
    return f"{p.resolve()}:{probe.stat().st_mtime_ns}" if probe.exists() else path


def fingerprint(
    cube: CubeInfo, model_identity: str, params: PredictParams, tile: int, extra: dict[str, Any]
) -> str:
    """What must be equal for an interrupted prediction to be resumed."""

    blob = {
        "cube": _stamp(cube.uri),
        "cube_identity": cube.identity,
        "model": model_identity,
        "tile_size": tile,
        **extra,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:24]


def store_path(key: str, fingerprint: str) -> Path:
    """``<workdir>/predictions/<key>/<fingerprint>.zarr``: one store per prediction identity,
    so a prediction of the same cube by another model never overwrites this one."""
    return get_settings().workdir / "predictions" / key / f"{fingerprint}.zarr"


def prune_stores(current: Path, keep: int = KEEP_STORES) -> None:
    """Delete the oldest stores of the same prediction name, keeping ``keep`` (and
    ``current``). A cached run whose store was pruned predicts again (its output is gone)."""
    siblings = [p for p in current.parent.glob("*.zarr") if p != current and p.is_dir()]
    siblings.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in siblings[max(keep - 1, 0) :]:
        discard(old)


def _tile_jobs(
    cube: CubeInfo,
    bundle: ModelBundle,
    params: PredictParams,
    store: Path,
    days: tuple[int, ...],
    patch: int,
    stride: int,
    side: int,
) -> list[Job]:
    jobs: list[Job] = []
    for tile in tile_grid(cube.height, cube.width, side):
        read = (
            read_window(tile.core, cube.height, cube.width, patch, stride)
            if bundle.input_kind == "patch"
            else tile.core
        )
        jobs.append(
            TileJob(
                name=tile.name,
                cube_uri=cube.uri,
                store=str(store),
                bands=tuple(bundle.contract.bands),
                days=days,
                tile=tile,
                read=read,
                kind=bundle.input_kind,
                height=cube.height,
                width=cube.width,
                class_ids=tuple(bundle.class_map.ids),
                patch=patch,
                stride=stride,
                blend=params.blend,
            )
        )
    return jobs


def _field_jobs(
    cube: CubeInfo,
    bundle: ModelBundle,
    fields: gpd.GeoDataFrame,
    markers: Path,
    days: tuple[int, ...],
    group_size: int,
) -> list[Job]:
    out_dir = markers / "fields"
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for row, geom in enumerate(fields.geometry):
        window = pixel_window(geom, cube.affine, cube.height, cube.width)
        if window is not None:
            samples.append(FieldSample(row, shapely.to_wkb(geom), window))
    jobs: list[Job] = []
    for g, start in enumerate(range(0, len(samples), group_size)):
        jobs.append(
            FieldGroupJob(
                name=f"fields-g{g:06d}",
                cube_uri=cube.uri,
                bands=tuple(bundle.contract.bands),
                days=days,
                transform=cube.transform,
                samples=tuple(samples[start : start + group_size]),
                out_dir=str(out_dir),
            )
        )
    return jobs


def _paint_jobs(
    cube: CubeInfo, bundle: ModelBundle, side: int, store: Path, fields_path: Path
) -> list[Job]:
    return [
        PaintJob(
            name=tile.name,
            store=str(store),
            tile=tile,
            fields_path=str(fields_path),
            results_dir=str(markers_dir(store) / "fields"),
            transform=cube.transform,
            class_ids=tuple(bundle.class_map.ids),
        )
        for tile in tile_grid(cube.height, cube.width, side)
    ]


def _alias(uri: str) -> str | None:
    """``champion`` of ``models:/name@champion``; None for other URIs."""
    if uri.startswith("models:/") and "@" in uri:
        return uri.rsplit("@", 1)[1]
    return None


def _utc(t: np.datetime64) -> datetime:
    return pd.Timestamp(t).tz_localize("UTC").to_pydatetime()


def _sample_shape(bundle: ModelBundle, n_time: int) -> tuple[int, ...]:
    c = len(bundle.contract.bands)
    if bundle.input_kind == "pixel":
        return (n_time, c)
    side = bundle.contract.patch_size or 64
    return (n_time, c, side, side)


def _store_meta(
    cube: CubeInfo, bundle: ModelBundle, params: PredictParams, identity: str, kind: str,
    patch: int, stride: int, side: int,
) -> dict[str, Any]:  # fmt: skip
    """The store's metadata, with the fingerprint that decides whether it can be resumed."""
    extra: dict[str, Any] = {"kind": kind, "patch": patch, "stride": stride, "blend": params.blend}
    if bundle.tta != "none":  # averaged views are another map (absent: stores before tta)
        extra["tta"] = bundle.tta
    if bundle.members:  # the ensemble's weights are in the identity; its members named here
        extra["ensemble"] = list(bundle.members)
    if kind == "field":  # fields shape a field model's map; for others they are a product
        extra |= {"fields": _stamp(params.fields), "field_id_column": params.field_id_column}
    return {
        "fingerprint": fingerprint(cube, identity, params, side, extra),
        "cube": cube.uri,
        "cube_identity": cube.identity,
        "cube_degraded": cube.degraded,
        "model": {
            "uri": bundle.uri,
            "alias": _alias(bundle.uri) or params.pinned_from,
            "name": bundle.name,
            "version": bundle.version,
            "run_id": bundle.run_id,
            "identity": identity,
            "bands": list(bundle.contract.bands),
        },
        "input_kind": kind,
        "in_season": None
        if cube.as_of is None
        else {
            "as_of": cube.as_of,
            "observed_steps": cube.observed_steps,
            "n_time": cube.n_time,
            "strategy": "forecast"
            if isinstance(bundle.model, CompletedSeasonModel)
            else "truncation",
        },
        "class_map": bundle.class_map.model_dump(mode="json"),
        "tta": bundle.tta,
        "ensemble": list(bundle.members),
        "tile_size": side,
        "bands": list(bundle.contract.bands),
    }


def _plan(
    cube: CubeInfo, bundle: ModelBundle, params: PredictParams, store: Path, patch: int,
    stride: int, side: int, group_size: int,
) -> tuple[list[list[Job]], set[str]]:  # fmt: skip
    """The jobs, in phases that run one after the other, and the field groups already done."""
    days = tuple(int(d) for d in days_since_epoch(cube.times))
    if bundle.input_kind != "field":
        return [_tile_jobs(cube, bundle, params, store, days, patch, stride, side)], set()
    fields = load_fields(str(params.fields), params.field_id_column, cube.crs_wkt)
    fields_path = markers_dir(store) / "fields.parquet"
    if not fields_path.exists():
        with atomic_file(fields_path) as tmp:
            fields.to_parquet(tmp)
    groups = _field_jobs(cube, bundle, fields, markers_dir(store), days, group_size)
    groups_done = {p.stem for p in (markers_dir(store) / "fields").glob("*.parquet")}
    return [groups, _paint_jobs(cube, bundle, side, store, fields_path)], groups_done


def _execute(
    phases: list[list[Job]], executor: str, bundle: ModelBundle, runners: list[Runner],
    client: Any, on_done: Callable[[str], None],
) -> None:  # fmt: skip
    """Run the phases' jobs, in order, in this process or on Dask."""
    if not any(phases):
        return
    if executor == "local":
        for jobs in phases:
            run_local(jobs, runners, on_done)
        return
    with nullcontext(client) if client is not None else dask_client() as dask:
        for jobs in phases:
            run_dask(jobs, bundle, dask, runners[0].batch_size, on_done)


def predict(
    params: PredictParams,
    model: ModelBundle | None = None,
    on_progress: OnProgress | None = None,
    client: Any = None,
) -> PredictionResult:
    """Map ``params.cube`` with a model; returns the prediction store by reference.

    Args:
        params: what to predict and how.
        model: an already loaded model; None loads ``params.model`` from the registry.
        on_progress: called with (jobs done, jobs total) at the start and after each job.
        client: a Dask client to use instead of one from the settings (executor "dask").
    """
    started = time.perf_counter()
    bundle = model if model is not None else load_bundle(params.model, params.registered_model)
    bundle = with_ensemble(bundle, params.ensemble, params.registered_model)
    cube = inspect_cube(params.cube)
    bundle = with_tta(in_season_bundle(bundle, cube, params.in_season), params.tta)
    check_contract(bundle.contract, cube, params.fields)  # before any pixel is read

    kind = bundle.input_kind
    patch = bundle.contract.patch_size or 0
    stride = patch_stride(patch, round(patch * params.patch_overlap)) if kind == "patch" else 0
    key = params.prediction_key()
    identity = bundle.identity()
    side = tile_side(params.tile_size, stride)
    meta = _store_meta(cube, bundle, params, identity, kind, patch, stride, side)
    store = store_path(key, meta["fingerprint"])
    with storage_errors(store.parent, f"creating prediction {key}"):
        done = prepare_store(store, cube.uri, bundle.class_map, side, meta, params.resume)
        prune_stores(store)

    devices = resolve_devices(params.device)
    executor = resolve_executor(params.executor, devices)
    auto = params.batch_size == "auto"
    start_batch = AUTO_BATCH[kind] if auto else int(params.batch_size)
    runners = device_runners(bundle, devices, start_batch, auto, _sample_shape(bundle, cube.n_time))
    phases, groups_done = _plan(cube, bundle, params, store, patch, stride, side, start_batch)
    done |= groups_done

    total = sum(len(p) for p in phases)
    skipped = sum(1 for p in phases for j in p if j.name in done)
    count = {"done": skipped, "run": 0}

    def on_done(_: str) -> None:
        count["done"] += 1
        count["run"] += 1
        if on_progress is not None:
            on_progress(count["done"], total)

    if on_progress is not None:
        on_progress(skipped, total)
    pending = [[j for j in p if j.name not in done] for p in phases]
    with storage_errors(store.parent, f"writing prediction {key}"):
        _execute(pending, executor, bundle, runners, client, on_done)
        if {j.name for j in phases[-1]} <= done_tiles(store):
            mark_complete(store)

    return PredictionResult(
        key=key,
        region=params.region_name(),
        store=str(store),
        fingerprint=meta["fingerprint"],
        cube=cube.uri,
        cube_degraded=cube.degraded,
        model=ModelInfo.model_validate(meta["model"]),
        input_kind=kind,
        class_map=bundle.class_map,
        fields=params.fields,
        field_id_column=params.field_id_column,
        crs_wkt=cube.crs_wkt,
        transform=cube.transform,
        shape=(cube.height, cube.width),
        start=_utc(cube.times.min()),
        end=_utc(cube.times.max()),
        tiles_total=total,
        tiles_predicted=count["run"],
        tiles_skipped=skipped,
        seconds=round(time.perf_counter() - started, 3),
        devices=[str(d) for d in devices],
        executor=executor,
        batch_size=runners[0].batch_size,
    )
