"""Imported sample tables: labelled per-pixel time series (CSV/Parquet) straight to a training set.

A table row is one pixel: a class id column, optionally a field (polygon) id column, then the
values, ``n_time x n_band`` columns, either time-major (``d1.b1 d1.b2 ... d2.b1 ...``, as in
charlotte-pel/temporalCNN) or band-major (``b1.d1 b1.d2 ... b2.d1 ...``). Files are given per
split (``train``/``val``/``test``, kept as given) or as ``all`` (split by fractions). When no
``val`` file is given, a validation split is carved from ``train`` by field, so no field crosses
splits. The legend is a CSV with ``value,class,colour`` columns (temporalCNN's class_map.txt)
or a mapping YAML; ``class_id_offset`` is added to table values to get legend ids.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from pydantic import BaseModel, Field, model_validator

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import ConfigError, DataError, LabelError
from cropflow.labels.mapping import load_mapping
from cropflow.labels.samples import SampleCounts, count_by_split
from cropflow.labels.splits import SPLIT_NAMES, SplitFractions, stratified_assign
from cropflow.labels.stats import StatsOptions, class_weights
from cropflow.labels.store import FORMAT_VERSION, Kind, TrainingSetWriter, base_coords
from cropflow.labels.summary import class_warnings


class SampleTableParams(BaseModel):
    """An imported table of labelled time series."""

    files: dict[Literal["train", "val", "test", "all"], str] = Field(
        description="Split name (train, val, test) or 'all' -> CSV or Parquet file."
    )
    legend_path: str = Field(description="Class legend: value,class,colour CSV or mapping YAML.")
    bands: list[str] = Field(min_length=1, description="Band names of the value columns.")
    layout: Literal["time_major", "band_major"] = Field(
        "time_major", description="time_major: d1.b1 d1.b2 ...; band_major: b1.d1 b1.d2 ..."
    )
    class_column: str | int = Field(0, description="Class id column (name or position).")
    field_column: str | int | None = Field(
        1, description="Field / polygon id column (name or position); None: rows are units."
    )
    value_columns: list[str] | None = Field(
        None, description="Value columns in order (default: all other columns)."
    )
    header: bool = Field(False, description="The CSV files have a header row.")
    dates: list[dt.date] | None = Field(None, description="Dates of the time steps, if known.")
    class_id_offset: int = Field(0, description="Added to table class values to get legend ids.")
    val_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of train carved out as val (by field) when no val file is given.",
    )
    fractions: SplitFractions = Field(
        default_factory=SplitFractions, description="Split shares for an 'all' file."
    )
    seed: int = Field(0, description="Seed of the split assignment.")
    kind: Literal["pixel", "field"] = Field("pixel", description="Pixel series or field sets.")
    stats: StatsOptions = Field(default_factory=StatsOptions)

    @model_validator(mode="after")
    def _files(self) -> SampleTableParams:
        if "all" in self.files and len(self.files) > 1:
            raise ConfigError(
                "an 'all' table cannot be combined with per-split tables",
                hint="give either one 'all' file or train/val/test files",
            )
        if "all" not in self.files and "train" not in self.files:
            raise ConfigError("sample tables need a 'train' (or 'all') file")
        return self


def read_legend(path: str | Path) -> ClassMap:
    """A ClassMap from a ``value,class,colour`` CSV or a mapping YAML."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return load_mapping(path).class_map
    if not path.is_file():
        raise ConfigError(f"class legend not found: {path}", hint="check the path")
    frame = pd.read_csv(path)
    cols = {c.lower().strip(): c for c in frame.columns}
    id_col = next((cols[c] for c in ("value", "id", "class_id") if c in cols), None)
    name_col = next((cols[c] for c in ("class", "name", "class_name") if c in cols), None)
    color_col = next((cols[c] for c in ("colour", "color") if c in cols), None)
    if id_col is None or name_col is None:
        raise ConfigError(
            f"class legend {path} needs value and class columns, has {list(frame.columns)}",
            hint="write it as 'value,class,colour' with a header row",
        )
    classes = [
        ClassDef(
            id=int(row[id_col]),
            name=str(row[name_col]).strip(),
            color=str(row[color_col]).strip() if color_col else "#808080",
        )
        for _, row in frame.iterrows()
    ]
    try:
        return ClassMap(classes=classes)
    except ConfigError as exc:
        raise ConfigError(f"class legend {path}: {exc.message}", hint=exc.hint) from exc


def _read_table(path: str, header: bool) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"sample table not found: {p}", hint="check the path")
    if p.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(p)
    return pd.read_csv(p, header=0 if header else None)


def _column(frame: pd.DataFrame, spec: str | int, what: str, path: str) -> str | int:
    if isinstance(spec, int) and not isinstance(frame.columns[0], int | np.integer):
        if spec >= frame.shape[1]:
            raise DataError(f"{path}: no column {spec} for the {what}")
        return str(frame.columns[spec])
    if spec not in frame.columns:
        raise DataError(
            f"{path}: no {what} column {spec!r}; columns start {list(frame.columns[:5])}",
            hint=f"set the {what} column by name or position",
        )
    return spec


def _values(
    frame: pd.DataFrame, params: SampleTableParams, used: list[str | int], path: str
) -> np.ndarray:
    if params.value_columns is not None:
        cols: list[Any] = list(params.value_columns)
    else:
        cols = [c for c in frame.columns if c not in used]
    values = frame[cols].to_numpy(dtype=np.float32)
    n_band = len(params.bands)
    if values.shape[1] % n_band:
        raise DataError(
            f"{path}: {values.shape[1]} value columns are not a multiple of the "
            f"{n_band} bands {params.bands}",
            hint="check the band list and the class/field columns",
        )
    n_time = values.shape[1] // n_band
    if params.layout == "time_major":
        return values.reshape(len(frame), n_time, n_band)
    return np.transpose(values.reshape(len(frame), n_band, n_time), (0, 2, 1))


def read_sample_tables(
    params: SampleTableParams, class_map: ClassMap
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """``(x (N,T,C), class ids (N,), field source ids (N,), given split code or -1, warnings)``."""
    xs, ys, fs, ss = [], [], [], []
    for split, path in params.files.items():
        frame = _read_table(path, params.header)
        cls = _column(frame, params.class_column, "class", path)
        used: list[str | int] = [cls]
        fld = None
        if params.field_column is not None:
            fld = _column(frame, params.field_column, "field", path)
            used.append(fld)
        xs.append(_values(frame, params, used, path))
        raw = pd.to_numeric(frame[cls], errors="coerce")
        if raw.isna().any():
            raise DataError(f"{path}: class column {cls!r} has non-numeric values")
        ids = raw.to_numpy(dtype=np.int64) + params.class_id_offset
        unknown = sorted(set(ids.tolist()) - set(class_map.ids))
        if unknown:
            shifted = set((ids + 1).tolist()) <= set(class_map.ids)
            raise LabelError(
                f"{path}: class values {[u - params.class_id_offset for u in unknown]} "
                f"(+ offset {params.class_id_offset}) are not in the legend ids {class_map.ids}",
                hint="set class_id_offset to 1 (table classes count from 0)"
                if shifted and params.class_id_offset == 0
                else "fix the legend or class_id_offset",
            )
        ys.append(ids.astype(np.uint8))
        if fld is not None:
            fs.append(frame[fld].astype(str).to_numpy(dtype=object))
        else:
            fs.append(np.array([f"{split}:{i}" for i in range(len(frame))], dtype=object))
        code = list(SPLIT_NAMES).index(split) if split in SPLIT_NAMES else -1
        ss.append(np.full(len(frame), code, dtype=np.int64))
    n_times = {x.shape[1] for x in xs}
    if len(n_times) > 1:
        raise DataError(f"sample tables have different numbers of time steps: {sorted(n_times)}")
    warnings: list[str] = []
    splits_of_field = pd.Series(np.concatenate(ss)).groupby(np.concatenate(fs)).nunique()
    shared = splits_of_field[splits_of_field > 1]
    if len(shared):
        warnings.append(
            f"{len(shared)} field ids appear in more than one given split file "
            f"(e.g. {shared.index[:5].tolist()}): the given split leaks"
        )
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(fs), np.concatenate(ss), warnings


def _unit_counts(units: np.ndarray, labels: np.ndarray, class_map: ClassMap) -> np.ndarray:
    lut = {cid: k for k, cid in enumerate(class_map.ids)}
    pos = np.array([lut[int(c)] for c in labels], dtype=np.int64)
    n_units = int(units.max()) + 1 if units.size else 0
    return np.bincount(units * len(lut) + pos, minlength=n_units * len(lut)).reshape(
        n_units, len(lut)
    )


def assign_table_splits(
    given: np.ndarray,
    field_codes: np.ndarray,
    labels: np.ndarray,
    params: SampleTableParams,
    class_map: ClassMap,
) -> np.ndarray:
    """Split code per row: given splits kept; val carved from train by field; 'all' by field."""
    rng = np.random.default_rng(params.seed)
    split = given.copy()
    if (given < 0).any():
        rows = np.flatnonzero(given < 0)
        _, units = np.unique(field_codes[rows], return_inverse=True)
        codes = stratified_assign(
            _unit_counts(units, labels[rows], class_map), params.fractions, rng
        )
        split[rows] = codes[units]
    elif "val" not in params.files and params.val_fraction > 0:
        rows = np.flatnonzero(given == SPLIT_NAMES.index("train"))
        _, units = np.unique(field_codes[rows], return_inverse=True)
        carve = SplitFractions(train=1 - params.val_fraction, val=params.val_fraction, test=0.0)
        codes = stratified_assign(_unit_counts(units, labels[rows], class_map), carve, rng)
        split[rows] = codes[units]
    return split.astype(np.uint8)


def import_tables(
    params: SampleTableParams, out_uri: str | Path, *, name: str = "imported"
) -> tuple[SampleCounts, list[str], list[str], int]:
    """Write a training set from sample tables: ``(counts, warnings, bands, n_time)``."""
    class_map = read_legend(params.legend_path)
    x, labels, field_ids, given, warnings = read_sample_tables(params, class_map)
    n_time = x.shape[1]
    if params.dates is not None and len(params.dates) != n_time:
        raise ConfigError(
            f"{len(params.dates)} dates given for {n_time} time steps",
            hint="give one date per time step, or none",
        )
    codes, uniques = pd.factorize(pd.Series(field_ids))
    field_no = (codes + 1).astype(np.int32)
    split = assign_table_splits(given, codes.astype(np.int64), labels, params, class_map)
    times = (
        np.array(params.dates, dtype="datetime64[ns]")
        if params.dates is not None
        else np.arange(n_time, dtype=np.int64)
    )
    coords = base_coords(params.bands, times)
    table = {
        "field_source_id": ("field_table", np.asarray(uniques, dtype=object)),
        "field_table": ("field_table", np.arange(1, len(uniques) + 1, dtype=np.int32)),
    }
    kind: Kind = params.kind
    if kind == "pixel":
        n = len(labels)
        meta: dict[str, Any] = {
            "label": ("sample", labels),
            "field": ("sample", field_no),
            "split": ("sample", split),
            "row": ("sample", np.full(n, -1, np.int32)),
            "col": ("sample", np.full(n, -1, np.int32)),
            "coord_x": ("sample", np.full(n, np.nan)),
            "coord_y": ("sample", np.full(n, np.nan)),
            "lon": ("sample", np.full(n, np.nan)),
            "lat": ("sample", np.full(n, np.nan)),
        }
        dims: tuple[str, ...] = ("sample", "time", "band")
        data, train_rows = x, split == 0
        count_labels, count_split = labels, split
    else:
        order = np.argsort(field_no, kind="stable")
        data, f_sorted = x[order], field_no[order]
        uniq, start, count = np.unique(f_sorted, return_index=True, return_counts=True)
        f_label, f_split = labels[order][start], split[order][start]
        nf = len(uniq)
        meta = {
            "field": ("field", uniq.astype(np.int32)),
            "label": ("field", f_label),
            "split": ("field", f_split),
            "start": ("field", start.astype(np.int64)),
            "count": ("field", count.astype(np.int64)),
            "coord_x": ("field", np.full(nf, np.nan)),
            "coord_y": ("field", np.full(nf, np.nan)),
            "lon": ("field", np.full(nf, np.nan)),
            "lat": ("field", np.full(nf, np.nan)),
            "pixel_row": ("pixel", np.full(len(data), -1, np.int32)),
            "pixel_col": ("pixel", np.full(len(data), -1, np.int32)),
        }
        dims = ("pixel", "time", "band")
        train_rows = split[order] == 0
        count_labels, count_split = f_label, f_split
    counts = count_by_split(count_labels, count_split, class_map)
    weights = class_weights(counts["train"], params.stats.class_weight_blend)
    warnings += class_warnings(counts, class_map)
    writer = TrainingSetWriter(
        uri=Path(str(out_uri)),
        meta=xr.Dataset(meta | table, coords=coords),
        data_dims=dims,
        data_shape=data.shape,
        train_rows=train_rows,
        bands=list(params.bands),
    )
    step = max(1, 2**20 // max(1, n_time * len(params.bands)))
    n_samples = {s: int((count_split == c).sum()) for c, s in enumerate(SPLIT_NAMES)}
    result = SampleCounts(
        unit="pixels" if kind == "pixel" else "fields",
        n_samples=n_samples,
        class_counts=counts,
    )
    try:
        for start_row in range(0, len(data), step):
            writer.write(start_row, data[start_row : start_row + step])
        writer.finish(
            {
                "cropflow_training_set": FORMAT_VERSION,
                "kind": kind,
                "class_map": class_map.model_dump(mode="json"),
                "class_weights": weights,
                "class_weight_blend": params.stats.class_weight_blend,
                "split_names": list(SPLIT_NAMES),
                "time_kind": "acquisition" if params.dates is not None else "composite",
                "period": None,
                "crs": None,
                "patch_size": None,
                "summary": {"name": name, "counts": result.model_dump(), "warnings": warnings},
                "source": {"tables": dict(params.files), "params": params.model_dump(mode="json")},
            }
        )
    except BaseException:
        writer.abort()
        raise
    return result, warnings, list(params.bands), n_time
