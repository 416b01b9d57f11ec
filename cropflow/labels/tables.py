"""Imported sample tables: labelled per-pixel time series (CSV/Parquet) straight to a training set.

Everything is set by :class:`SampleTableParams`; nothing about a table is guessed from its
content except, with ``class_values: auto``, how the class column is read.

Layouts (``layout``):

- ``wide``: one row per sample: a class column, optionally a field (polygon) id column, a
  split column and a sample id column, then the values, ``n_time x n_band`` columns, in
  ``column_order``: ``time_major`` (``d1.b1 d1.b2 ... d2.b1 ...``, as in
  charlotte-pel/temporalCNN) or ``band_major`` (``b1.d1 b1.d2 ... b2.d1 ...``). The value
  columns are ``value_columns`` when given, else every other column less ``ignore_columns``;
  a text column among them is an error (name it in ``ignore_columns``).
- ``long``: one row per sample and date: ``id_column`` says which rows are one sample,
  ``date_column`` holds the date (the dates become the time coordinate) and each band has a
  column (named as the band, or as ``band_columns`` says). Every sample needs one row for
  each date of the table; rows may come in any order.

The class column holds legend ids, raw codes or class names (``class_values``; ``auto``: raw
codes when the legend is a mapping YAML listing codes, compared as the label mapping compares
them; otherwise numbers are legend ids, ``class_id_offset`` added, and text is a class name,
compared case-insensitively with spaces, ``_`` and ``-`` alike). Rows whose class the legend
does not know are refused or left out and reported (``unknown_classes``). Refusing is the
default: such values are mostly a wrong legend, offset or spelling, and leaving them out
quietly would shrink or remove whole classes; the error lists the values, so the fix (or
``unknown_classes: drop``) is one edit. Columns are named or given by position (header-less
CSVs such as temporalCNN's); a named class column needs a named field column (or none), as
the default field column is a position.

Splits: files are given per split (``train``/``val``/``test``, kept as given) or as one
``all`` file, split by fractions, or by its ``split_column`` when one is named (its values
are read through ``split_values``; rows with other values are refused or left out,
``unknown_splits``). When no row is in the validation split, one is carved from ``train`` by
field (``val_fraction``), so no field crosses splits. The legend is a CSV with
``value,class,colour`` columns (temporalCNN's class_map.txt) or a mapping YAML
(:mod:`cropflow.labels.mapping`; its ``source_column`` and ``unknown`` apply to label files,
a table uses ``class_column`` and ``unknown_classes``).

Every error names the file, the column and the values at fault, and its hint names the
option that fixes it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from pydantic import BaseModel, Field, model_validator

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import ConfigError, DataError, LabelError
from cropflow.labels.mapping import MISSING_CODE, load_mapping, normalize_code
from cropflow.labels.options import SPLIT_NAMES, Kind, SplitFractions, SplitName, StatsOptions
from cropflow.labels.samples import SampleCounts, count_by_split
from cropflow.labels.splits import stratified_assign
from cropflow.labels.stats import class_weights
from cropflow.labels.store import FORMAT_VERSION, TrainingSetWriter, base_coords
from cropflow.labels.summary import class_warnings

DropOrError = Literal["error", "drop"]
ClassValues = Literal["auto", "ids", "codes", "names"]

#: How many distinct bad values an error message shows.
SHOWN = 10


def _default_split_values() -> dict[SplitName, list[str | int]]:
    return {
        "train": ["train", "training"],
        "val": ["val", "validation", "valid"],
        "test": ["test", "testing"],
    }


class SampleTableParams(BaseModel):
    """An imported table of labelled time series (see the module docstring)."""

    files: dict[Literal["train", "val", "test", "all"], str] = Field(
        description="Split name (train, val, test) or 'all' -> CSV or Parquet file."
    )
    legend_path: str = Field(description="Class legend: value,class,colour CSV or mapping YAML.")
    bands: list[str] = Field(min_length=1, description="Band names of the values, in order.")
    layout: Literal["wide", "long"] = Field(
        "wide",
        description="wide: one row per sample with n_time x n_band value columns; "
        "long: one row per sample and date, one column per band.",
    )
    column_order: Literal["time_major", "band_major"] = Field(
        "time_major",
        description="Order of the value columns of a wide table: time_major: d1.b1 d1.b2 ... "
        "d2.b1 ...; band_major: b1.d1 b1.d2 ... b2.d1 ...",
    )
    header: bool = Field(
        False, description="The CSV files have a header row naming the columns (Parquet has)."
    )
    class_column: str | int = Field(0, description="Class column (name or position).")
    class_values: ClassValues = Field(
        "auto",
        description="What the class column holds: ids (legend ids, after class_id_offset), "
        "codes (raw codes of a mapping YAML legend), names (class names, case and "
        "space/_/- insensitive) or auto (codes with a mapping YAML listing codes, else ids "
        "for a numeric column and names for a text column).",
    )
    class_id_offset: int = Field(
        0, description="Added to numeric class values to get legend ids (ids only)."
    )
    unknown_classes: DropOrError = Field(
        "error",
        description="Rows whose class is not in the legend: error (refuse the table, naming "
        "the values) or drop (leave the rows out and report the values with their counts). "
        "The default refuses, since such values are mostly a wrong legend, offset or "
        "spelling, and dropping them quietly would remove whole classes from training.",
    )
    field_column: str | int | None = Field(
        1,
        description="Field / polygon id column (name or position), the unit of the splits; "
        "None: each sample is its own unit.",
    )
    split_column: str | int | None = Field(
        None,
        description="Column giving each row's split (with a single 'all' file); its values "
        "are read through split_values.",
    )
    split_values: dict[SplitName, list[str | int]] = Field(
        default_factory=_default_split_values,
        description="Split -> the split column's values meaning it (case-insensitive; "
        "numbers match whatever their type in the file). Given lists replace the default "
        "ones.",
    )
    unknown_splits: DropOrError = Field(
        "error",
        description="Rows whose split value is not in split_values (or missing): error or "
        "drop (leave the rows out, reported).",
    )
    id_column: str | None = Field(
        None,
        description="Sample id column: needed by the long layout; in the wide layout it is "
        "left out of the values and, without a field column, identifies the samples.",
    )
    date_column: str | None = Field(
        None, description="Date column of a long table (dates such as 2021-04-01)."
    )
    band_columns: dict[str, str] | None = Field(
        None,
        description="Band -> its column in a long table (default: the column named as the band).",
    )
    value_columns: list[str] | None = Field(
        None,
        description="Value columns of a wide table, in order (default: every column not "
        "used otherwise and not in ignore_columns).",
    )
    ignore_columns: list[str] = Field(
        default_factory=list,
        description="Columns of a wide table that are not values (site names, notes, "
        "coordinates, ...), when value_columns is not given.",
    )
    dates: list[dt.date] | None = Field(
        None, description="Dates of the time steps of a wide table, if known."
    )
    val_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of train carved out as val (by field) when no row is in val.",
    )
    fractions: SplitFractions = Field(
        default_factory=SplitFractions,
        description="Split shares for an 'all' file without a split column.",
    )
    seed: int = Field(0, description="Seed of the split assignment.")
    kind: Literal["pixel", "field"] = Field("pixel", description="Pixel series or field sets.")
    stats: StatsOptions = Field(default_factory=StatsOptions)

    @model_validator(mode="before")
    @classmethod
    def _old_layout_names(cls, data: Any) -> Any:
        """``layout: time_major | band_major`` (before the long layout) is a wide layout."""
        if isinstance(data, dict) and data.get("layout") in ("time_major", "band_major"):
            order = data["layout"]
            if data.get("column_order", order) != order:
                raise ConfigError(
                    f"layout {order!r} and column_order {data['column_order']!r} disagree",
                    hint="set layout: wide and column_order only",
                )
            return data | {"layout": "wide", "column_order": order}
        return data

    @model_validator(mode="after")
    def _files(self) -> SampleTableParams:
        if "all" in self.files and len(self.files) > 1:
            raise ConfigError(
                "an 'all' table cannot be combined with per-split tables",
                hint="give either one 'all' file or train/val/test files",
            )
        if "all" not in self.files and "train" not in self.files:
            raise ConfigError("sample tables need a 'train' (or 'all') file")
        if self.split_column is not None and set(self.files) != {"all"}:
            raise ConfigError(
                f"split_column {self.split_column!r} gives the splits, but the files are given "
                f"per split ({', '.join(self.files)})",
                hint="give the table as files: {all: <path>}, or leave split_column unset",
            )
        return self

    @model_validator(mode="after")
    def _columns(self) -> SampleTableParams:
        if isinstance(self.class_column, str) and isinstance(self.field_column, int):
            raise ConfigError(
                f"class_column is the name {self.class_column!r} but field_column is the "
                f"position {self.field_column} (the default is the second column)",
                hint="name the field column in field_column, or set field_column to null "
                "when each sample is its own unit",
            )
        both = sorted(set(self.value_columns or []) & set(self.ignore_columns))
        if both:
            raise ConfigError(
                f"columns {both} are in both value_columns and ignore_columns",
                hint="list each column in one of them only",
            )
        seen: dict[str, str] = {}
        for split, values in self.split_values.items():
            for value in values:
                key = _split_key(value)
                if key in seen and seen[key] != split:
                    raise ConfigError(
                        f"split value {value!r} is listed under {seen[key]} and {split}",
                        hint="list each value of split_values under one split only",
                    )
                seen[key] = split
        return self

    @model_validator(mode="after")
    def _layout(self) -> SampleTableParams:
        if self.layout == "wide":
            for option in ("date_column", "band_columns"):
                if getattr(self, option) is not None:
                    raise ConfigError(
                        f"{option} is for the long layout (one row per sample and date)",
                        hint=f"set layout: long, or leave {option} unset",
                    )
            return self
        missing = [o for o in ("id_column", "date_column") if getattr(self, o) is None]
        if missing:
            raise ConfigError(
                f"the long layout needs {' and '.join(missing)}",
                hint="name the sample id column (id_column) and the date column (date_column)",
            )
        for option in ("value_columns", "dates", "ignore_columns"):
            if getattr(self, option):
                raise ConfigError(
                    f"{option} is for the wide layout; a long table has its dates in "
                    "date_column and a column per band, and its other columns are not read",
                    hint=f"leave {option} unset (band_columns names the band columns)",
                )
        if self.band_columns is not None:
            extra = sorted(set(self.band_columns) - set(self.bands))
            if extra:
                raise ConfigError(
                    f"band_columns names bands {extra} that are not in bands {self.bands}",
                    hint="use the band names of bands as the keys of band_columns",
                )
        csv = [p for p in self.files.values() if not _is_parquet(p)]
        if csv and not self.header:
            raise ConfigError(
                f"the long layout finds its columns by name, but {csv[0]} is read without a "
                "header row",
                hint="set header: true (the first row of the CSV names the columns)",
            )
        return self


@dataclass(frozen=True)
class Legend:
    """A class legend and, for a mapping YAML listing codes, its raw code -> class id table."""

    class_map: ClassMap
    path: str
    codes: dict[str, int] | None = None


def load_legend(path: str | Path) -> Legend:
    """The legend of a ``value,class,colour`` CSV or a mapping YAML (with its codes)."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        mapping = load_mapping(path)
        codes = {key: mapping.classes[pos].id for key, pos in mapping.code_table().items()}
        return Legend(class_map=mapping.class_map, path=str(path), codes=codes or None)
    if not path.is_file():
        raise ConfigError(f"class legend not found: {path}", hint="check legend_path")
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
        return Legend(class_map=ClassMap(classes=classes), path=str(path))
    except ConfigError as exc:
        raise ConfigError(f"class legend {path}: {exc.message}", hint=exc.hint) from exc


def read_legend(path: str | Path) -> ClassMap:
    """A ClassMap from a ``value,class,colour`` CSV or a mapping YAML."""
    return load_legend(path).class_map


def name_key(name: str) -> str:
    """The form in which class names are compared: ``"Soy corn"``, ``"soy_corn"`` and
    ``"SOY-CORN"`` are one name."""
    return re.sub(r"[\s_\-]+", "_", name.strip().casefold()).strip("_")


def _split_key(value: Any) -> str:
    return (normalize_code(value) or "").casefold()


def _is_parquet(path: str) -> bool:
    return Path(path).suffix.lower() in (".parquet", ".pq")


def _read_table(path: str, header: bool) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"sample table not found: {p}", hint="check the path in files")
    if _is_parquet(path):
        return pd.read_parquet(p)
    return pd.read_csv(p, header=0 if header else None)


def _py(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds (for messages: ``1007``, not
    ``np.int64(1007)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _shown(items: Sequence[Any], n: int = SHOWN) -> str:
    """The first ``n`` items, and how many there are in all."""
    text = ", ".join(repr(_py(i)) for i in items[:n])
    return f"{text}, ... ({len(items)} in all)" if len(items) > n else text


def _columns_text(frame: pd.DataFrame) -> str:
    names = [c if isinstance(c, str) else int(c) for c in frame.columns]
    return f"the file's columns are {_shown(names, 12)}"


def _no_header_note(frame: pd.DataFrame, spec: Any) -> str:
    if isinstance(spec, str) and isinstance(frame.columns[0], int | np.integer):
        return (
            "; the file was read without a header row (header: false), so its columns are "
            "numbered: set header: true if its first row names the columns"
        )
    return ""


def _column(frame: pd.DataFrame, spec: str | int, option: str, path: str) -> Hashable:
    """The column that ``option`` (e.g. ``class_column``) names, by name or position."""
    if isinstance(spec, int) and not isinstance(frame.columns[0], int | np.integer):
        if not 0 <= spec < frame.shape[1]:
            raise DataError(
                f"{path}: {option} is position {spec}, but the file has {frame.shape[1]} columns",
                hint=f"set {option} to a column name or a position below {frame.shape[1]}",
            )
        return frame.columns[spec]
    if spec not in frame.columns:
        raise DataError(
            f"{path}: no column {spec!r} ({option}); {_columns_text(frame)}",
            hint=f"set {option} to one of the file's columns" + _no_header_note(frame, spec),
        )
    return spec


def _named_columns(frame: pd.DataFrame, names: Sequence[str], option: str, path: str) -> None:
    """Refuse names of ``option`` that are not columns of the file."""
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: {option} names columns the file does not have: {_shown(missing)}; "
            f"{_columns_text(frame)}",
            hint=f"fix {option}" + _no_header_note(frame, missing[0]),
        )


def _text_cells(column: pd.Series) -> pd.Series:
    """The cells of a column that hold something other than a number."""
    if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return column.iloc[:0]
    numbers = pd.to_numeric(column, errors="coerce")
    return column[numbers.isna() & column.notna()]


def _numeric(frame: pd.DataFrame, cols: Sequence[Hashable]) -> list[tuple[Hashable, Any]]:
    """``(column, example text value)`` of the columns among ``cols`` that hold text."""
    out = []
    for col in cols:
        text = _text_cells(frame[col])
        if len(text):
            out.append((col, text.iloc[0]))
    return out


def _as_float(frame: pd.DataFrame, cols: Sequence[Hashable]) -> np.ndarray:
    result: np.ndarray = frame[list(cols)].apply(pd.to_numeric).to_numpy(dtype=np.float32)
    return result


@dataclass
class _Roles:
    """The columns of a table with a role other than values, by option name."""

    cols: dict[str, Hashable] = field(default_factory=dict)

    def add(self, option: str, col: Hashable, path: str) -> None:
        for other, have in self.cols.items():
            if have == col:
                raise DataError(
                    f"{path}: column {_py(col)!r} is both the {other} and the {option}",
                    hint=f"give {other} and {option} different columns",
                )
        self.cols[option] = col

    def get(self, option: str) -> Hashable | None:
        return self.cols.get(option)


def _roles(frame: pd.DataFrame, params: SampleTableParams, path: str) -> _Roles:
    """Resolve the class, field, split, id and date columns of one file."""
    roles = _Roles()
    roles.add("class_column", _column(frame, params.class_column, "class_column", path), path)
    specs: dict[str, str | int | None] = {
        "field_column": params.field_column,
        "split_column": params.split_column,
        "id_column": params.id_column,
        "date_column": params.date_column,
    }
    for option, spec in specs.items():
        if spec is not None:
            roles.add(option, _column(frame, spec, option, path), path)
    return roles


def _wide_values(
    frame: pd.DataFrame, params: SampleTableParams, roles: _Roles, path: str
) -> np.ndarray:
    """``(N, T, C)`` values of a wide table."""
    _named_columns(frame, params.ignore_columns, "ignore_columns", path)
    if params.value_columns is not None:
        _named_columns(frame, params.value_columns, "value_columns", path)
        cols: list[Hashable] = list(params.value_columns)
        used = [c for c in cols if c in roles.cols.values()]
        if used:
            raise DataError(
                f"{path}: value_columns lists {_shown(used)}, which also have another role",
                hint="leave the class, field, split and id columns out of value_columns",
            )
    else:
        skip = set(roles.cols.values()) | set(params.ignore_columns)
        cols = [c for c in frame.columns if c not in skip]
    text = _numeric(frame, cols)
    if text:
        names = [c for c, _ in text]
        example = f"{_py(text[0][0])!r} holds {_py(text[0][1])!r}"
        if params.value_columns is not None:
            raise DataError(
                f"{path}: value columns {_shown(names)} hold text, not numbers ({example})",
                hint="fix the values, or list only numeric columns in value_columns",
            )
        raise DataError(
            f"{path}: columns {_shown(names)} hold text, not numbers ({example}), and would be "
            "read as values",
            hint=f"list the value columns in value_columns, or leave these out with "
            f"ignore_columns: {[str(c) for c in names]}",
        )
    if not cols:
        raise DataError(
            f"{path}: no value columns left; {_columns_text(frame)}",
            hint="check value_columns and ignore_columns",
        )
    values = _as_float(frame, cols)
    n_band = len(params.bands)
    if values.shape[1] % n_band:
        raise DataError(
            f"{path}: {values.shape[1]} value columns are not a multiple of the "
            f"{n_band} bands {params.bands}",
            hint="check bands, the class/field columns, value_columns and ignore_columns",
        )
    n_time = values.shape[1] // n_band
    if params.column_order == "time_major":
        return values.reshape(len(frame), n_time, n_band)
    return np.transpose(values.reshape(len(frame), n_band, n_time), (0, 2, 1))


def _dates(frame: pd.DataFrame, col: Hashable, path: str) -> pd.Series:
    """The date column as midnight timestamps (no time zone)."""
    raw = frame[col]
    if pd.api.types.is_integer_dtype(raw):  # 20210401, not nanoseconds since 1970
        raw = raw.astype(str)
    parsed = pd.to_datetime(raw, errors="coerce")
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert(None)
    bad = raw[parsed.isna()]
    if len(bad):
        shown = [str(v) for v in bad.drop_duplicates().tolist()]
        raise DataError(
            f"{path}: date column {_py(col)!r} has {len(bad)} values that are not dates: "
            f"{_shown(shown)}",
            hint="write dates as YYYY-MM-DD, or set date_column to the column of the dates",
        )
    return parsed.dt.normalize()


def _constant_per_sample(
    frame: pd.DataFrame, codes: np.ndarray, ids: pd.Index, roles: _Roles, path: str
) -> None:
    """Refuse samples whose rows disagree on their class, field or split."""
    for option in ("class_column", "field_column", "split_column"):
        col = roles.get(option)
        if col is None:
            continue
        n_values = frame[col].groupby(codes).nunique(dropna=False)
        bad = np.flatnonzero(n_values.to_numpy() > 1)
        if len(bad):
            code = int(n_values.index[bad[0]])
            values = frame[col][codes == code].unique().tolist()
            raise DataError(
                f"{path}: sample {_py(ids[code])!r} has rows with different values in column "
                f"{_py(col)!r} ({option}): {_shown(values)} ({len(bad)} samples disagree)",
                hint=f"give every row of a sample the same {option} value, or check id_column",
            )


@dataclass
class _LongTable:
    x: np.ndarray
    first_rows: pd.DataFrame
    sample_ids: np.ndarray
    dates: pd.DatetimeIndex


def _long_values(
    frame: pd.DataFrame, params: SampleTableParams, roles: _Roles, path: str
) -> _LongTable:
    """A long table pivoted to ``(N, T, C)``: samples in order of first appearance, dates
    ascending."""
    band_cols = params.band_columns or {}
    cols: list[Hashable] = [band_cols.get(b, b) for b in params.bands]
    missing = [(b, c) for b, c in zip(params.bands, cols, strict=True) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: no column for band(s) {_shown([f'{b} (column {c!r})' for b, c in missing])}"
            f"; {_columns_text(frame)}",
            hint="name the column of each band in band_columns (band: column), or fix bands",
        )
    for band, col in zip(params.bands, cols, strict=True):
        roles.add(f"column of band {band!r}", col, path)
    text = _numeric(frame, cols)
    if text:
        raise DataError(
            f"{path}: band columns {_shown([c for c, _ in text])} hold text, not numbers "
            f"({_py(text[0][0])!r} holds {_py(text[0][1])!r})",
            hint="fix the values, or name the right columns in band_columns",
        )
    id_col, date_col = roles.cols["id_column"], roles.cols["date_column"]
    if frame[id_col].isna().any():
        raise DataError(
            f"{path}: {int(frame[id_col].isna().sum())} rows have no sample id in column "
            f"{_py(id_col)!r} (id_column)",
            hint="give every row a sample id, or set id_column to the sample id column",
        )
    dates = _dates(frame, date_col, path)
    codes, ids = pd.factorize(frame[id_col])
    all_dates = pd.DatetimeIndex(np.sort(dates.unique()))
    t_codes = all_dates.get_indexer(pd.DatetimeIndex(dates))
    n_s, n_t = len(ids), len(all_dates)
    cell = codes.astype(np.int64) * n_t + t_codes
    uniq, count = np.unique(cell, return_counts=True)
    if (count > 1).any():
        dup = int(uniq[np.argmax(count > 1)])
        raise DataError(
            f"{path}: sample {_py(ids[dup // n_t])!r} has {int(count.max())} rows for the date "
            f"{all_dates[dup % n_t].date()} (column {_py(date_col)!r}); "
            f"{int((count > 1).sum())} sample/date pairs repeat",
            hint="give one row per sample and date, or set id_column to the column that "
            "identifies the samples",
        )
    per_sample = np.bincount(codes, minlength=n_s)
    short = np.flatnonzero(per_sample < n_t)
    if len(short):
        s = int(short[0])
        have = set(t_codes[codes == s].tolist())
        lacking = [str(all_dates[t].date()) for t in range(n_t) if t not in have]
        raise DataError(
            f"{path}: sample {_py(ids[s])!r} (column {_py(id_col)!r}) has no row for the dates "
            f"{_shown(lacking, 5)}; {len(short)} of {n_s} samples miss dates, and every sample "
            f"needs a row for each of the table's {n_t} dates "
            f"({all_dates[0].date()} to {all_dates[-1].date()})",
            hint="fill the gaps (e.g. interpolate) or leave those samples out; id_column and "
            "date_column say which rows belong together",
        )
    _constant_per_sample(frame, codes, pd.Index(ids), roles, path)
    x = np.empty((n_s, n_t, len(cols)), dtype=np.float32)
    x[codes, t_codes, :] = _as_float(frame, cols)
    first = np.unique(codes, return_index=True)[1]
    return _LongTable(
        x=x,
        first_rows=frame.iloc[first].reset_index(drop=True),
        sample_ids=np.asarray([str(v) for v in ids], dtype=object),
        dates=all_dates,
    )


def _counts(values: pd.Series) -> dict[str, int]:
    """Value (as text, ``<missing>`` for empty cells) -> rows, most frequent first."""
    text = values.map(normalize_code).fillna(MISSING_CODE)
    counts: dict[Hashable, int] = text.value_counts().to_dict()
    return {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))}


def _class_rule(values: pd.Series, legend: Legend, params: SampleTableParams, where: str) -> str:
    """How the class column is read: ids, codes or names (``class_values`` resolved)."""
    rule = params.class_values
    if rule == "codes" and legend.codes is None:
        raise ConfigError(
            f"class_values is codes, but the legend {legend.path} lists no raw codes",
            hint="give a mapping YAML whose classes list codes as legend_path, or set "
            "class_values to ids or names",
        )
    if rule == "auto":
        if legend.codes is not None:
            rule = "codes"
        else:
            rule = "names" if len(_text_cells(values.dropna())) else "ids"
    if rule != "ids" and params.class_id_offset:
        raise ConfigError(
            f"{where} is read as class {rule}, but class_id_offset is "
            f"{params.class_id_offset}; the offset applies to numeric class ids only",
            hint="set class_id_offset to 0, or class_values: ids if the column holds ids",
        )
    return rule


def _name_table(class_map: ClassMap, path: str) -> dict[str, int]:
    table: dict[str, int] = {}
    for cls in class_map.classes:
        key = name_key(cls.name)
        if key in table:
            raise ConfigError(
                f"class legend {path}: classes {class_map.name_of(table[key])!r} and "
                f"{cls.name!r} are one name when case, spaces, '_' and '-' are ignored",
                hint="give the classes names that differ in letters, or set class_values: ids",
            )
        table[key] = cls.id
    return table


def _class_ids(values: pd.Series, rule: str, legend: Legend, offset: int) -> np.ndarray:
    """Legend id of each row's class value, or -1 where the legend does not know it."""
    known = set(legend.class_map.ids)
    if rule == "ids":
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        whole = np.isfinite(numbers) & (np.round(numbers) == numbers)
        ids = np.full(len(numbers), -1, dtype=np.int64)
        ids[whole] = numbers[whole].astype(np.int64) + offset
        return np.where(np.isin(ids, list(known)), ids, -1)
    if rule == "codes":
        table = legend.codes or {}
        keys = values.map(normalize_code)
    else:
        table = _name_table(legend.class_map, legend.path)
        keys = values.map(lambda v: None if normalize_code(v) is None else name_key(str(v)))
    return keys.map(lambda k: table.get(k, -1) if isinstance(k, str) else -1).to_numpy(
        dtype=np.int64
    )


def _unknown_class_error(
    where: str,
    rule: str,
    unknown: dict[str, int],
    legend: Legend,
    params: SampleTableParams,
    values: pd.Series,
) -> LabelError:
    """The error for class values the legend does not know, with the most likely fix."""
    n_rows = sum(unknown.values())
    shown = dict(list(unknown.items())[:SHOWN])
    more = f" and {len(unknown) - SHOWN} more values" if len(unknown) > SHOWN else ""
    class_map = legend.class_map
    if rule == "ids":
        how = (
            f"read as legend ids (value + class_id_offset {params.class_id_offset}); "
            f"the legend ids are {class_map.ids}"
        )
        numbers = pd.to_numeric(values, errors="coerce")
        plus_one = (numbers.dropna() + params.class_id_offset + 1).astype(np.int64)
        if len(_text_cells(values.dropna())):
            fix = "the column holds text: set class_values to names (or auto)"
        elif params.class_id_offset == 0 and set(plus_one.tolist()) <= set(class_map.ids):
            fix = "set class_id_offset to 1 (table classes count from 0)"
        else:
            fix = "fix the legend or class_id_offset"
    elif rule == "codes":
        how = "read as raw codes of the legend's classes"
        names = {name_key(n) for n in class_map.names}
        if all(name_key(v) in names for v in list(unknown)[:SHOWN] if v != MISSING_CODE):
            fix = "these values are class names: set class_values: names"
        else:
            fix = "add the codes to the classes of the mapping"
    else:
        how = f"read as class names; the legend's classes are {class_map.names}"
        fix = "add the classes to the legend or fix the labels"
    return LabelError(
        f"{where}: {n_rows} rows have class values that are not in the legend "
        f"{legend.path} ({how}) (value: rows): {shown}{more}",
        hint=f"{fix}, or set unknown_classes: drop to leave those rows out",
    )


def _split_codes(
    values: pd.Series, params: SampleTableParams, where: str
) -> tuple[np.ndarray, dict[str, int]]:
    """Split code of each row (-1: not mapped) and the unmapped values with their rows."""
    table = {
        _split_key(v): SPLIT_NAMES.index(split)
        for split, vals in params.split_values.items()
        for v in vals
    }
    codes = values.map(_split_key).map(lambda k: table.get(k, -1)).to_numpy(dtype=np.int64)
    unmapped = _counts(values[codes < 0])
    if unmapped and params.unknown_splits == "error":
        accepted = {s: [str(v) for v in vals] for s, vals in params.split_values.items()}
        raise DataError(
            f"{where}: {sum(unmapped.values())} rows have split values that split_values does "
            f"not map (value: rows): {dict(list(unmapped.items())[:SHOWN])}; "
            f"mapped values are {accepted}",
            hint="add the values to split_values (split: [values]), or set unknown_splits: "
            "drop to leave those rows out",
        )
    return codes, unmapped


@dataclass
class TableRows:
    """The rows of all the tables of an import, ready to be written."""

    x: np.ndarray
    labels: np.ndarray
    field_ids: np.ndarray
    given: np.ndarray
    dates: list[dt.date] | None
    warnings: list[str]
    report: dict[str, Any]


@dataclass
class _FileRows:
    x: np.ndarray
    labels: np.ndarray
    field_ids: np.ndarray
    given: np.ndarray
    dates: pd.DatetimeIndex | None
    report: dict[str, Any]
    warnings: list[str]


def _read_file(split: str, path: str, params: SampleTableParams, legend: Legend) -> _FileRows:
    """One table: values, class ids, field ids and given split codes, after the policies."""
    frame = _read_table(path, params.header)
    if frame.empty:
        raise DataError(f"{path}: the table has no rows", hint="check the path in files")
    roles = _roles(frame, params, path)
    dates: pd.DatetimeIndex | None = None
    if params.layout == "long":
        long = _long_values(frame, params, roles, path)
        x, rows, dates = long.x, long.first_rows, long.dates
        fallback_ids = long.sample_ids
    else:
        x, rows = _wide_values(frame, params, roles, path), frame
        id_col = roles.get("id_column")
        fallback_ids = (
            rows[id_col].astype(str).to_numpy(dtype=object)
            if id_col is not None
            else np.array([f"{split}:{i}" for i in range(len(rows))], dtype=object)
        )
    cls = roles.cols["class_column"]
    where = f"{path}: class column {_py(cls)!r}"
    rule = _class_rule(rows[cls], legend, params, where)
    ids = _class_ids(rows[cls], rule, legend, params.class_id_offset)
    unknown = _counts(rows[cls][ids < 0])
    if unknown and params.unknown_classes == "error":
        raise _unknown_class_error(where, rule, unknown, legend, params, rows[cls])
    fld = roles.get("field_column")
    field_ids = rows[fld].astype(str).to_numpy(dtype=object) if fld is not None else fallback_ids
    split_col = roles.get("split_column")
    unmapped: dict[str, int] = {}
    if split_col is not None:
        given, unmapped = _split_codes(
            rows[split_col], params, f"{path}: split column {_py(split_col)!r}"
        )
    else:
        code = list(SPLIT_NAMES).index(split) if split in SPLIT_NAMES else -1
        given = np.full(len(rows), code, dtype=np.int64)
    keep = (ids >= 0) & (given >= 0) if split_col is not None else ids >= 0
    warnings = []
    unit = "samples" if params.layout == "long" else "rows"
    if unknown:
        warnings.append(
            f"{path}: left out {sum(unknown.values())} {unit} whose class is not in the legend "
            f"(unknown_classes: drop; value: {unit}): {dict(list(unknown.items())[:SHOWN])}"
        )
    if unmapped:
        warnings.append(
            f"{path}: left out {sum(unmapped.values())} {unit} whose split value is not in "
            f"split_values (unknown_splits: drop; value: {unit}): "
            f"{dict(list(unmapped.items())[:SHOWN])}"
        )
    report = {
        "file": path,
        "split": split,
        "class_values": rule,
        "n_read": len(rows),
        "n_kept": int(keep.sum()),
        "unknown_classes": unknown,
        "unknown_splits": unmapped,
    }
    return _FileRows(
        x=x[keep],
        labels=ids[keep].astype(np.uint8),
        field_ids=field_ids[keep],
        given=given[keep],
        dates=dates,
        report=report,
        warnings=warnings,
    )


def read_sample_tables(params: SampleTableParams, legend: Legend) -> TableRows:
    """Every table of ``params`` read, checked and concatenated (see the module docstring)."""
    parts = [_read_file(split, path, params, legend) for split, path in params.files.items()]
    n_times = {p.x.shape[1] for p in parts}
    if len(n_times) > 1:
        raise DataError(
            f"sample tables have different numbers of time steps: "
            f"{ {p.report['file']: p.x.shape[1] for p in parts} }",
            hint="give tables of the same time series (same dates and bands)",
        )
    dates: list[dt.date] | None = list(params.dates) if params.dates is not None else None
    if params.layout == "long":
        first = parts[0].dates
        for part in parts[1:]:
            if part.dates is not None and first is not None and not part.dates.equals(first):
                diff = sorted(set(first).symmetric_difference(part.dates))
                raise DataError(
                    f"{part.report['file']} and {parts[0].report['file']} have different "
                    f"dates (e.g. {diff[0].date()})",
                    hint="give tables of the same dates",
                )
        dates = [t.date() for t in first] if first is not None else None
    warnings = [w for p in parts for w in p.warnings]
    given = np.concatenate([p.given for p in parts])
    field_ids = np.concatenate([p.field_ids for p in parts])
    if len(given) == 0:
        raise DataError(
            "no sample left after leaving out unknown classes and splits",
            hint="check the legend, class_column, split_column and split_values",
        )
    splits_of_field = pd.Series(given).groupby(field_ids).nunique()
    shared = splits_of_field[splits_of_field > 1]
    if len(shared):
        warnings.append(
            f"{len(shared)} field ids appear in more than one given split "
            f"(e.g. {shared.index[:5].tolist()}): the given split leaks"
        )
    return TableRows(
        x=np.concatenate([p.x for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        field_ids=field_ids,
        given=given,
        dates=dates,
        warnings=warnings,
        report={"files": [p.report for p in parts]},
    )


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
    """Split code per row: given splits kept; val carved from train by field when no row is
    in val; rows without a given split (an 'all' file) by field."""
    rng = np.random.default_rng(params.seed)
    split = given.copy()
    val = SPLIT_NAMES.index("val")
    if (given < 0).any():
        rows = np.flatnonzero(given < 0)
        _, units = np.unique(field_codes[rows], return_inverse=True)
        codes = stratified_assign(
            _unit_counts(units, labels[rows], class_map), params.fractions, rng
        )
        split[rows] = codes[units]
    elif not (given == val).any() and params.val_fraction > 0:
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
    legend = load_legend(params.legend_path)
    class_map = legend.class_map
    rows = read_sample_tables(params, legend)
    x, labels, field_ids, given, warnings = (
        rows.x,
        rows.labels,
        rows.field_ids,
        rows.given,
        rows.warnings,
    )
    n_time = x.shape[1]
    if rows.dates is not None and len(rows.dates) != n_time:
        raise ConfigError(
            f"{len(rows.dates)} dates given for {n_time} time steps",
            hint="give one date per time step in dates, or none",
        )
    codes, uniques = pd.factorize(pd.Series(field_ids))
    field_no = (codes + 1).astype(np.int32)
    split = assign_table_splits(given, codes.astype(np.int64), labels, params, class_map)
    times = (
        np.array(rows.dates, dtype="datetime64[ns]")
        if rows.dates is not None
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
                "time_kind": "acquisition" if rows.dates is not None else "composite",
                "period": None,
                "crs": None,
                "patch_size": None,
                "summary": {
                    "name": name,
                    "counts": result.model_dump(),
                    "warnings": warnings,
                    "reports": {"tables": rows.report},
                },
                "source": {"tables": dict(params.files), "params": params.model_dump(mode="json")},
            }
        )
    except BaseException:
        writer.abort()
        raise
    return result, warnings, list(params.bands), n_time
