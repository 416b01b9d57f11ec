"""Building a training set from a cube and a label file, step by step.

Each step reads what the previous one wrote (by reference) and writes its own output aside
before renaming it into place, under ``<out>.parts/`` next to the training set:

1. :func:`prepare_labels`: read, validate, map codes to classes, vote points, reproject to the
   cube grid -> ``labels.parquet`` (GeoParquet);
2. :func:`rasterize_labels`: class and field rasters on the cube grid -> ``rasters.zarr``;
3. :func:`split_labels`: split units and their splits -> ``splits.zarr`` (with a split file,
   also the fields it cut or dropped);
4. :func:`write_training_set`: samples, statistics, class weights -> the training set.

:func:`build_training_set` runs the four in a row (the CLI calls it); the Prefect flow
``flows/training_set.py`` runs them as tasks. :func:`import_sample_tables` turns a table of
labelled time series into a training set directly.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import xarray as xr
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, Field

from cropflow.classes import IGNORE_INDEX
from cropflow.errors import LabelError
from cropflow.labels.grid import (
    cube_bands,
    cube_geobox,
    cube_time_kind,
    grid_crs_wkt,
    harvest_year,
    labels_to_grid,
    open_cube,
)
from cropflow.labels.io import ReadReport, read_labels
from cropflow.labels.mapping import LabelMapping, MappingReport, apply_mapping, load_mapping
from cropflow.labels.options import (  # noqa: F401 - also imported from here
    NAME_PATTERN,
    SPLIT_NAMES,
    LabelSource,
    TrainingSetOptions,
    TrainingSetParams,
    output_path,
)
from cropflow.labels.points import (
    PointReport,
    aggregate_points,
    find_labeller_column,
    points_to_rasters,
)
from cropflow.labels.rasterize import (
    RasterReport,
    find_field_column,
    rasterize_fields,
)
from cropflow.labels.samples import GridLabels, write_samples
from cropflow.labels.splits import (
    SplitLayerReport,
    assign_splits,
    block_units,
    load_split_rules,
    split_by_layer,
    units_from_rasters,
)
from cropflow.labels.store import FORMAT_VERSION
from cropflow.labels.summary import TrainingSetSummary
from cropflow.labels.tables import SampleTableParams, import_tables
from cropflow.storage import atomic_file, consolidate_zarr, replace_dir

SOURCE_ID = "_source_id"


class PreparedLabels(BaseModel):
    """Step 1: labels mapped to classes, on the cube's CRS."""

    uri: str
    kind: Literal["point", "polygon"]
    read: ReadReport
    mapping: MappingReport
    points: PointReport | None = None


class LabelRasters(BaseModel):
    """Step 2: class and field rasters on the cube grid."""

    uri: str
    kind: Literal["point", "polygon"]
    raster: RasterReport | None = None
    points: PointReport | None = None


class SplitResult(BaseModel):
    """Step 3: split units and their splits."""

    uri: str
    n_units: int
    units_per_split: dict[str, int]
    layer: SplitLayerReport | None = Field(
        None, description="What the split file did (when splits come from one)."
    )


def _write_zarr(ds: xr.Dataset, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
    consolidate_zarr(tmp)
    replace_dir(tmp, final)


def prepare_labels(params: TrainingSetParams) -> PreparedLabels:
    """Read, validate and map the labels, vote points, and reproject onto the cube's CRS."""
    src = params.labels
    gdf, read = read_labels(
        src.path, layer=src.layer, crs=src.crs, repair_invalid=src.repair_invalid
    )
    mapping = load_mapping(src.mapping_path)
    source = f"labels file {src.path}"
    mapped, mapping_report = apply_mapping(gdf, mapping, source=source)
    if len(mapped) == 0:
        raise LabelError(
            f"{source}: no feature kept after mapping codes to classes "
            f"(unknown codes: {mapping_report.unknown_codes})",
            hint="check source_column and the codes in the mapping file",
        )
    columns = [str(c) for c in mapped.columns]
    point_report = None
    if read.kind == "point":
        labeller = src.labeller_column or find_labeller_column(columns)
        id_col = src.field_column
        mapped, point_report = aggregate_points(mapped, labeller_column=labeller, id_column=id_col)
        if len(mapped) == 0:
            raise LabelError(f"{source}: every labelled location was a tie between labellers")
        mapped = mapped.rename(columns={"source_id": SOURCE_ID})
    else:
        field_col = src.field_column or find_field_column(columns)
        if src.field_column and src.field_column not in columns:
            raise LabelError(
                f"{source}: field id column {src.field_column!r} not found; columns are {columns}",
                hint="set field_column to an existing column, or leave it unset",
            )
        ids = (
            mapped[field_col]
            if field_col
            else pd.Series(np.arange(len(mapped)), index=mapped.index)
        )
        mapped = mapped.assign(**{SOURCE_ID: ids.astype(str).to_numpy()})
    ds = open_cube(params.cube_uri)
    gbox = cube_geobox(ds, params.cube_uri)
    cube_bands(ds, params.samples.bands, params.cube_uri)  # refuse unknown bands before work
    on_grid = labels_to_grid(mapped, gbox, source)
    keep = [SOURCE_ID, "class_id", "class_name", "geometry"]
    keep += [c for c in ("n_votes", "agreement") if c in on_grid.columns]
    out = params.parts() / "labels.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp:
        gpd.GeoDataFrame(on_grid[keep], geometry="geometry", crs=on_grid.crs).to_parquet(tmp)
    return PreparedLabels(
        uri=str(out), kind=read.kind, read=read, mapping=mapping_report, points=point_report
    )


def _mapping(params: TrainingSetParams) -> LabelMapping:
    return load_mapping(params.labels.mapping_path)


def rasterize_labels(params: TrainingSetParams, prepared: PreparedLabels) -> LabelRasters:
    """Class and field rasters of the prepared labels on the cube grid."""
    ds = open_cube(params.cube_uri)
    gbox = cube_geobox(ds, params.cube_uri)
    labels = gpd.read_parquet(prepared.uri)
    opts = params.rasterize
    class_map = _mapping(params).class_map
    raster_report = point_report = None
    if prepared.kind == "point":
        points = labels.rename(columns={SOURCE_ID: "source_id"})
        label, field, fields, point_report = points_to_rasters(
            points, gbox, window=opts.point_window, report=prepared.points
        )
    else:
        boundary_id = class_map.id_of(opts.boundary_class) if opts.boundary_class else None
        label, field, fields, raster_report = rasterize_fields(
            labels, gbox, opts, field_column=SOURCE_ID, boundary_id=boundary_id
        )
    coords = {k: ds.coords[k] for k in ("y", "x", "spatial_ref") if k in ds.coords}
    out = xr.Dataset(
        {
            "label": (("y", "x"), label, {"ignore_index": IGNORE_INDEX}),
            "field": (("y", "x"), field),
            "field_source_id": (
                "field_table",
                fields["source_id"].astype(str).to_numpy(dtype=object),
            ),
            "field_class": ("field_table", fields["class_id"].to_numpy(dtype=np.uint8)),
        },
        coords=coords | {"field_table": fields["field"].to_numpy(dtype=np.int32)},
        attrs={"class_map": class_map.model_dump(mode="json")},
    )
    path = params.parts() / "rasters.zarr"
    _write_zarr(out, path)
    return LabelRasters(
        uri=str(path), kind=prepared.kind, raster=raster_report, points=point_report
    )


def _open_rasters(uri: str) -> xr.Dataset:
    result: xr.Dataset = xr.open_zarr(uri, consolidated=False, mask_and_scale=False).load()
    return result


def _field_table_vars(fields: pd.DataFrame) -> dict[str, Any]:
    """The field table as variables along ``field_table`` (its coordinate: the number)."""
    return {
        "field_source_id": (
            "field_table",
            fields["source_id"].astype(str).to_numpy(dtype=object),
        ),
        "field_class": ("field_table", fields["class_id"].to_numpy(dtype=np.uint8)),
    }


def _fields_of(r: xr.Dataset) -> pd.DataFrame:
    """The field table (field, source_id, class_id) stored beside a field raster."""
    return pd.DataFrame(
        {
            "field": r["field_table"].values,
            "source_id": [str(v) for v in r["field_source_id"].values],
            "class_id": r["field_class"].values,
        }
    )


def _splits_by_layer(
    params: TrainingSetParams, rasters: LabelRasters, r: xr.Dataset, gbox: GeoBox
) -> tuple[xr.Dataset, np.ndarray, np.ndarray, SplitLayerReport]:
    """Splits from the split file: the splits dataset (with the cut fields), the unit codes,
    labelled pixels per unit and class, and the file's report."""
    by_layer = split_by_layer(
        np.asarray(r["label"].values, dtype=np.uint8),
        np.asarray(r["field"].values, dtype=np.int32),
        _fields_of(r),
        gbox,
        _mapping(params).class_map.ids,
        params.splits,
        points=rasters.kind == "point",
    )
    cut = by_layer.cut
    coords = {k: r.coords[k] for k in ("y", "x", "spatial_ref") if k in r.coords}
    out = xr.Dataset(
        {
            "split": (("y", "x"), by_layer.split),
            "unit": (("y", "x"), by_layer.unit),
            "layer_split": (("y", "x"), by_layer.layer_split),
            "label": (("y", "x"), cut.label, {"ignore_index": IGNORE_INDEX}),
            "field": (("y", "x"), cut.field),
            "field_parent": ("field_table", cut.fields["parent"].to_numpy(dtype=np.int32)),
        }
        | _field_table_vars(cut.fields),
        coords=coords | {"field_table": cut.fields["field"].to_numpy(dtype=np.int32)},
        attrs={"split_names": list(SPLIT_NAMES)},
    )
    return out, by_layer.unit_codes, by_layer.counts, by_layer.report


def _splits_by_rules(
    params: TrainingSetParams, r: xr.Dataset, ds: xr.Dataset, gbox: GeoBox
) -> tuple[xr.Dataset, np.ndarray, np.ndarray]:
    """Splits of block units by the split rules and fractions: the splits dataset, the unit
    codes and labelled pixels per unit and class."""
    opts = params.splits
    label = np.asarray(r["label"].values, dtype=np.uint8)
    unit, n_units = block_units(np.asarray(r["field"].values, dtype=np.int32), opts.block_px)
    ys = gbox.affine.f + gbox.affine.e * (np.arange(gbox.shape[0]) + 0.5)
    xs = gbox.affine.c + gbox.affine.a * (np.arange(gbox.shape[1]) + 0.5)
    units = units_from_rasters(
        label,
        unit,
        n_units,
        _mapping(params).class_map.ids,
        centres=(xs, ys),
        crs=grid_crs_wkt(gbox),
        tile=params.tile,
        year=params.year or harvest_year(np.asarray(ds["time"].values)),
    )
    rules = load_split_rules(opts.rules_path) if opts.rules_path else None
    codes = assign_splits(units, opts.fractions, opts.seed, rules)
    coords = {k: r.coords[k] for k in ("y", "x", "spatial_ref") if k in r.coords}
    out = xr.Dataset(
        {"split": (("y", "x"), codes[unit]), "unit": (("y", "x"), unit)},
        coords=coords,
        attrs={"split_names": list(SPLIT_NAMES)},
    )
    return out, codes, units.counts


def split_labels(params: TrainingSetParams, rasters: LabelRasters) -> SplitResult:
    """Cut the grid into split units (blocks joined by fields) and assign their splits.

    With a split file (``splits.layer_path``) the file decides, pixel by pixel, and the fields
    it cuts (or drops) are written here too: ``splits.zarr`` then holds the ``label`` and
    ``field`` rasters and the field table that the samples use.
    """
    ds = open_cube(params.cube_uri)
    gbox = cube_geobox(ds, params.cube_uri)
    r = _open_rasters(rasters.uri)
    layer_report = None
    if params.splits.layer_path is not None:
        out, codes, counts, layer_report = _splits_by_layer(params, rasters, r, gbox)
    else:
        out, codes, counts = _splits_by_rules(params, r, ds, gbox)
    path = params.parts() / "splits.zarr"
    _write_zarr(out, path)
    labelled_units = counts.sum(axis=1) > 0
    per_split = {s: int(((codes == i) & labelled_units).sum()) for i, s in enumerate(SPLIT_NAMES)}
    return SplitResult(
        uri=str(path), n_units=len(codes), units_per_split=per_split, layer=layer_report
    )


def split_notes(splits: SplitResult) -> list[str]:
    """Things the user should know about what a split file did to their labels."""
    rep = splits.layer
    if rep is None:
        return []
    notes: list[str] = []
    if rep.n_fields_cut and rep.crossing == "cut":
        notes.append(
            f"{rep.n_fields_cut} fields cut by split lines into {rep.n_pieces} fields "
            "(one per split; they keep their source id)"
        )
    if rep.n_fields_dropped:
        notes.append(
            f"{rep.n_fields_dropped} fields crossing split lines or leaving the split polygons "
            "dropped"
        )
    if rep.n_fields_trimmed:
        notes.append(
            f"{rep.n_fields_trimmed} fields reach outside the split polygons; their pixels "
            "there are left out"
        )
    if rep.n_fields_outside:
        notes.append(f"{rep.n_fields_outside} fields lie wholly outside the split polygons")
    if rep.n_overlap_pixels:
        notes.append(
            f"{rep.n_overlap_pixels} pixels under split polygons of different splits left out"
        )
    if rep.n_labelled_pixels_no_split:
        notes.append(f"{rep.n_labelled_pixels_no_split} labelled pixels are in no split")
    return notes


def report_notes(prepared: PreparedLabels, rasters: LabelRasters) -> list[str]:
    """Things the user should know about their labels (repairs, drops, conflicts)."""
    notes: list[str] = []
    if prepared.read.n_repaired:
        notes.append(f"{prepared.read.n_repaired} invalid geometries repaired (make_valid)")
    if prepared.read.n_empty_dropped:
        notes.append(f"{prepared.read.n_empty_dropped} features without geometry dropped")
    m = prepared.mapping
    if m.n_dropped:
        notes.append(f"{m.n_dropped} features with unknown codes dropped: {m.unknown_codes}")
    if m.n_other:
        notes.append(
            f"{m.n_other} features with unknown codes mapped to 'other': {m.unknown_codes}"
        )
    p = rasters.points or prepared.points
    if p is not None:
        if p.n_duplicates:
            notes.append(f"{p.n_duplicates} duplicate point rows removed")
        if p.n_ties_dropped:
            notes.append(f"{p.n_ties_dropped} point locations dropped: labellers tied")
        if p.n_outside:
            notes.append(f"{p.n_outside} point locations outside the cube dropped")
        if p.n_conflict_pixels:
            notes.append(f"{p.n_conflict_pixels} pixels claimed by points of different classes")
    rr = rasters.raster
    if rr is not None:
        if rr.n_fields_outside:
            notes.append(f"{rr.n_fields_outside} fields cover no pixel of the cube")
        if rr.n_fields_unlabelled:
            notes.append(
                f"{rr.n_fields_unlabelled} fields have no labelled pixel left "
                "(inward buffer or overlaps)"
            )
        if rr.n_overlap_pixels:
            notes.append(f"{rr.n_overlap_pixels} pixels covered by two fields left unlabelled")
    return notes


def write_training_set(
    params: TrainingSetParams,
    prepared: PreparedLabels,
    rasters: LabelRasters,
    splits: SplitResult,
    *,
    started: float | None = None,
) -> TrainingSetSummary:
    """Cut samples from the cube, compute statistics and write the training set."""
    t0 = started if started is not None else time.perf_counter()
    ds = open_cube(params.cube_uri)
    gbox = cube_geobox(ds, params.cube_uri)
    bands = cube_bands(ds, params.samples.bands, params.cube_uri)
    r = _open_rasters(rasters.uri)
    s = _open_rasters(splits.uri)
    mapping = _mapping(params)
    class_map = mapping.class_map
    opts = params.rasterize
    fields_from = s if "field" in s else r  # a split file may have cut or dropped fields
    grid = GridLabels(
        label=np.asarray(fields_from["label"].values, dtype=np.uint8),
        field=np.asarray(fields_from["field"].values, dtype=np.int32),
        split=np.asarray(s["split"].values, dtype=np.uint8),
        fields=_fields_of(fields_from),
        boundary_id=class_map.id_of(opts.boundary_class) if opts.boundary_class else None,
    )
    time_kind, period = cube_time_kind(ds)
    point_report = rasters.points or prepared.points
    reports: dict[str, Any] = {
        "read": prepared.read.model_dump(),
        "mapping": prepared.mapping.model_dump(),
        "points": point_report.model_dump() if point_report else None,
        "raster": rasters.raster.model_dump() if rasters.raster else None,
        "splits": splits.model_dump(),
    }
    attrs = {
        "cropflow_training_set": FORMAT_VERSION,
        "class_map": class_map.model_dump(mode="json"),
        "split_names": list(SPLIT_NAMES),
        "time_kind": time_kind,
        "period": period,
        "summary": {"name": params.name, "reports": reports},
        "source": {
            "cube": params.cube_uri,
            "labels": params.labels.model_dump(),
            "params": params.model_dump(mode="json"),
        },
    }
    counts, warnings = write_samples(
        ds,
        gbox,
        bands,
        grid,
        params.samples,
        class_map,
        params.output(),
        attrs=attrs,
        class_weight_blend=params.stats.class_weight_blend,
        warnings=report_notes(prepared, rasters) + split_notes(splits),
    )
    return TrainingSetSummary(
        uri=str(params.output()),
        name=params.name,
        kind=params.samples.kind,
        unit=counts.unit,
        bands=bands,
        n_time=int(ds.sizes["time"]),
        n_samples=counts.n_samples,
        class_counts=counts.class_counts,
        warnings=warnings,
        reports=reports,
        seconds=time.perf_counter() - t0,
    )


def build_training_set(params: TrainingSetParams) -> TrainingSetSummary:
    """All four steps in a row (what the CLI runs)."""
    started = time.perf_counter()
    prepared = prepare_labels(params)
    rasters = rasterize_labels(params, prepared)
    splits = split_labels(params, rasters)
    return write_training_set(params, prepared, rasters, splits, started=started)


class TableImportParams(BaseModel):
    """An imported sample table and where its training set goes."""

    table: SampleTableParams
    name: str = Field("imported", pattern=NAME_PATTERN, description="Name of the training set.")
    out_uri: str | None = Field(
        None, description="Where to write it (default: <workdir>/training-sets/<name>.zarr)."
    )


def import_sample_tables(params: TableImportParams) -> TrainingSetSummary:
    """A training set straight from tables of labelled time series."""
    started = time.perf_counter()
    out = output_path(params.name, params.out_uri)
    counts, warnings, bands, n_time = import_tables(params.table, out, name=params.name)
    return TrainingSetSummary(
        uri=str(out),
        name=params.name,
        kind=params.table.kind,
        unit=counts.unit,
        bands=bands,
        n_time=n_time,
        n_samples=counts.n_samples,
        class_counts=counts.class_counts,
        warnings=warnings,
        seconds=time.perf_counter() - started,
    )
