"""Imported sample tables: the real temporalCNN tables become a training set; tables with text
labels, extra columns, split columns and the long layout import by configuration alone."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cropflow.errors import ConfigError, DataError, LabelError
from cropflow.labels.build import TableImportParams, import_sample_tables
from cropflow.labels.splits import leakage_problems
from cropflow.labels.store import open_training_set
from cropflow.labels.tables import (
    SampleTableParams,
    load_legend,
    read_legend,
    read_sample_tables,
)


def _tcnn(fixtures_dir: Path, **kw: object) -> SampleTableParams:
    base = fixtures_dir / "real/temporalcnn"
    return SampleTableParams(
        files={"train": str(base / "train_dataset.csv"), "test": str(base / "test_dataset.csv")},
        legend_path=str(base / "class_map.txt"),
        bands=["nir", "red", "green"],
        **({"class_id_offset": 1} | kw),
    )


def test_temporalcnn_tables_import_with_their_13_classes(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    params = TableImportParams(
        table=_tcnn(fixtures_dir), name="tcnn", out_uri=str(tmp_path / "tcnn.zarr")
    )
    summary = import_sample_tables(params)
    ts = open_training_set(summary.uri)
    base = fixtures_dir / "real/temporalcnn"
    train = pd.read_csv(base / "train_dataset.csv", header=None)
    test = pd.read_csv(base / "test_dataset.csv", header=None)
    assert len(ts.class_map.classes) == 13
    assert ts.class_map.names[:3] == ["wheat", "barley", "rapeseed"]
    assert ts.class_map.names[-1] == "urban"
    assert ts.data.shape == (520, 149, 3) and ts.bands == ["nir", "red", "green"]
    # the given test split is kept as it is; train is train + val
    split = ts.split
    assert (split == "test").sum() == len(test) == 260
    assert (split != "test").sum() == len(train)
    assert 0 < (split == "val").sum() < 0.3 * len(train)
    # values: NIR, R, G of date t are columns 2 + 3t, 3 + 3t, 4 + 3t
    first = train.iloc[0]
    x = ts.data.values
    assert np.allclose(x[0, :, 0], first.iloc[2::3].to_numpy(dtype=np.float32))
    assert np.allclose(x[0, :, 1], first.iloc[3::3].to_numpy(dtype=np.float32))
    assert np.allclose(x[0, :, 2], first.iloc[4::3].to_numpy(dtype=np.float32))
    # class values 0..12 are legend ids 1..13; every class is in train and in test
    assert ts.labels[0] == int(first.iloc[0]) + 1
    counts = summary.class_counts
    for name in ts.class_map.names:
        assert counts["train"][name] > 0 and counts["test"][name] == 20
    # val is carved by polygon: no polygon crosses splits
    assert leakage_problems(ts.dataset["split"].values, ts.fields) == []
    source = np.array([str(v) for v in ts.dataset["field_source_id"].values])
    polygon_of_row = source[ts.fields - 1]
    assert (polygon_of_row[:260] == train.iloc[:, 1].astype(str).to_numpy()).all()
    # no dates in the tables: time is a step index; a contract can still be built
    assert ts.times.tolist() == list(range(149)) and ts.doy is None
    assert ts.input_contract().n_time == 149
    assert set(ts.norm_stats) == {"nir", "red", "green"}
    assert ts.norm_stats["nir"].count == 149 * (split == "train").sum()


def test_field_kind_groups_rows_by_polygon(fixtures_dir: Path, tmp_path: Path) -> None:
    params = TableImportParams(
        table=_tcnn(fixtures_dir, kind="field", val_fraction=0.2),
        name="tcnn-fields",
        out_uri=str(tmp_path / "f.zarr"),
    )
    summary = import_sample_tables(params)
    ts = open_training_set(summary.uri)
    train = pd.read_csv(fixtures_dir / "real/temporalcnn/train_dataset.csv", header=None)
    test = pd.read_csv(fixtures_dir / "real/temporalcnn/test_dataset.csv", header=None)
    assert ts.n_samples == train.iloc[:, 1].nunique() + test.iloc[:, 1].nunique()
    assert int(ts.dataset["count"].values.sum()) == 520
    assert summary.unit == "fields"


def test_missing_offset_is_refused_with_a_hint(fixtures_dir: Path, tmp_path: Path) -> None:
    params = TableImportParams(
        table=_tcnn(fixtures_dir, class_id_offset=0), name="x", out_uri=str(tmp_path / "x.zarr")
    )
    with pytest.raises(LabelError, match="not in the legend") as err:
        import_sample_tables(params)
    assert err.value.hint and "class_id_offset" in err.value.hint
    assert not (tmp_path / "x.zarr").exists()


def test_all_table_is_split_by_field_and_bad_params_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"cls": rng.integers(1, 4, n), "parcel": rng.integers(0, 80, n)})
    for t in range(4):
        for b in ("red", "nir"):
            frame[f"{b}_{t}"] = rng.normal(size=n)
    frame["cls"] = frame.groupby("parcel")["cls"].transform("first")
    path = tmp_path / "all.parquet"
    frame.to_parquet(path)
    legend = tmp_path / "legend.csv"
    legend.write_text("value,class,colour\n1,a,#ff0000\n2,b,#00ff00\n3,c,#0000ff\n")
    table = SampleTableParams(
        files={"all": str(path)},
        legend_path=str(legend),
        bands=["red", "nir"],
        column_order="band_major",
        class_column="cls",
        field_column="parcel",
        value_columns=[f"{b}_{t}" for b in ("red", "nir") for t in range(4)],
        dates=["2021-04-01", "2021-05-01", "2021-06-01", "2021-07-01"],
    )
    summary = import_sample_tables(TableImportParams(table=table, out_uri=str(tmp_path / "a.zarr")))
    ts = open_training_set(summary.uri)
    assert leakage_problems(ts.dataset["split"].values, ts.fields) == []
    assert all(v > 0 for v in summary.n_samples.values())
    assert ts.time_kind == "acquisition" and ts.doy is not None
    assert np.allclose(ts.data.values[:, 2, 1], frame["nir_2"].to_numpy(dtype=np.float32))
    with pytest.raises(ConfigError, match="'all' table"):
        SampleTableParams(files={"all": "a", "train": "b"}, legend_path=str(legend), bands=["red"])
    # the spelling from before the long layout still reads
    old = SampleTableParams(
        files={"all": "a"}, legend_path=str(legend), bands=["red"], layout="band_major"
    )
    assert (old.layout, old.column_order) == ("wide", "band_major")


def test_legend_with_two_names_on_one_id_is_refused(tmp_path: Path) -> None:
    legend = tmp_path / "legend.csv"
    legend.write_text("value,class,colour\n1,a,#ff0000\n1,b,#00ff00\n")
    with pytest.raises(ConfigError, match="more than one class") as err:
        read_legend(legend)
    assert str(legend) in str(err.value)


# --- tables by configuration: text labels, extra columns, split columns, long layout ---------

BANDS = ["nir", "red", "green"]
N_TIME = 149
#: Made-up acquisition dates for the 149 steps of the temporalCNN series (the real dates are
#: not in the tables; the values are real).
TCNN_DATES = pd.date_range("2006-02-01", periods=N_TIME, freq="2D")


def _tcnn_rows(fixtures_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """The real train and test rows, and the legend's class names in id order."""
    base = fixtures_dir / "real/temporalcnn"
    train = pd.read_csv(base / "train_dataset.csv", header=None)
    test = pd.read_csv(base / "test_dataset.csv", header=None)
    names = pd.read_csv(base / "class_map.txt").sort_values("value")["class"].tolist()
    return train, test, names


def _value_names() -> list[str]:
    return [f"t{t:03d}_{b}" for t in range(N_TIME) for b in BANDS]


def _labelled_table(fixtures_dir: Path) -> pd.DataFrame:
    """The real rows as a user's table: text labels written in varied ways, a site name, a
    numeric column that is no value, a split column with long split names, a pixel id."""
    train, test, names = _tcnn_rows(fixtures_dir)
    rows = pd.concat([train, test], ignore_index=True)
    n_train = len(train)
    spelled = [str.upper, str.title, lambda n: f" {n} "]
    polygon = rows[1].to_numpy()
    split = np.where(np.arange(len(rows)) < n_train, "Training", "testing")
    split = np.where((np.arange(len(rows)) < n_train) & (polygon % 4 == 0), "validation", split)
    frame = pd.DataFrame(
        {
            "pixel": np.arange(len(rows)) + 1000,
            "split": split,
            "site": [f"Toulouse-{p % 3}" for p in polygon],
            "crop": [spelled[i % 3](names[int(c)]) for i, c in enumerate(rows[0])],
            "polygon": polygon,
        }
    )
    values = pd.DataFrame(rows.iloc[:, 2:].to_numpy(), columns=_value_names())
    frame = pd.concat([frame, values], axis=1)
    frame["pixel_area_m2"] = 64.0
    return frame


def _table_params(path: Path, legend: Path, **kw: object) -> SampleTableParams:
    base: dict[str, object] = {
        "files": {"all": str(path)},
        "legend_path": str(legend),
        "bands": BANDS,
        "header": True,
        "class_column": "crop",
        "field_column": "polygon",
        "split_column": "split",
        "id_column": "pixel",
        "ignore_columns": ["site", "pixel_area_m2"],
    }
    return SampleTableParams.model_validate(base | kw)


def test_a_table_with_text_labels_extra_columns_and_a_split_column_imports_by_configuration(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    frame = _labelled_table(fixtures_dir)
    path = tmp_path / "samples.csv"
    frame.to_csv(path, index=False)
    legend = fixtures_dir / "real/temporalcnn/class_map.txt"
    table = _table_params(path, legend)
    summary = import_sample_tables(
        TableImportParams(table=table, name="labelled", out_uri=str(tmp_path / "l.zarr"))
    )
    ts = open_training_set(summary.uri)
    train, test, names = _tcnn_rows(fixtures_dir)
    source = pd.concat([train, test], ignore_index=True)
    # splits come from the column: Training / validation / testing
    expected = {
        "train": int((frame["split"] == "Training").sum()),
        "val": int((frame["split"] == "validation").sum()),
        "test": len(test),
    }
    assert summary.n_samples == expected and expected["val"] > 0
    split_of_row = (
        frame["split"]
        .str.lower()
        .map({"training": "train", "validation": "val", "testing": "test"})
    )
    assert (ts.split == split_of_row.to_numpy()).all()
    # class ids: the text labels, however spelled, are the legend's classes
    assert ts.class_map.names == names
    assert (ts.labels == source[0].to_numpy() + 1).all()
    for name in names:
        assert summary.class_counts["test"][name] == 20
    # values: the site name, the area column and the pixel id are not values
    assert ts.data.shape == (520, N_TIME, 3) and ts.bands == BANDS
    x = ts.data.values
    for band_pos, band in enumerate(BANDS):
        assert np.allclose(x[:, :, band_pos], source.iloc[:, 2 + band_pos :: 3].to_numpy())
        assert np.allclose(x[:, 5, band_pos], frame[f"t005_{band}"].to_numpy())
    assert leakage_problems(ts.dataset["split"].values, ts.fields) == []
    assert not [w for w in summary.warnings if "left out" in w or "leaks" in w]


def _long_form(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """``frame`` (as built by :func:`_labelled_table`) with one row per pixel and date, in a
    shuffled row order, and band columns named after the sensor."""
    keys = ["pixel", "split", "site", "crop", "polygon"]
    parts = []
    for t, day in enumerate(TCNN_DATES):
        part = frame[keys].copy()
        part["date"] = day.strftime("%Y-%m-%d")
        for band in BANDS:
            part[f"fs2_{band}"] = frame[f"t{t:03d}_{band}"].to_numpy()
        parts.append(part)
    long = pd.concat(parts, ignore_index=True)
    return long.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_the_long_layout_gives_the_same_data_as_the_wide_one(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    frame = _labelled_table(fixtures_dir)
    wide_path, long_path = tmp_path / "wide.csv", tmp_path / "long.parquet"
    frame.to_csv(wide_path, index=False)
    _long_form(frame).to_parquet(long_path)
    legend = fixtures_dir / "real/temporalcnn/class_map.txt"
    wide = import_sample_tables(
        TableImportParams(
            table=_table_params(wide_path, legend, dates=list(TCNN_DATES.date)),
            out_uri=str(tmp_path / "w.zarr"),
        )
    )
    long = import_sample_tables(
        TableImportParams(
            table=_table_params(
                long_path,
                legend,
                layout="long",
                date_column="date",
                band_columns={b: f"fs2_{b}" for b in BANDS},
                ignore_columns=[],
            ),
            out_uri=str(tmp_path / "l.zarr"),
        )
    )
    a, b = open_training_set(wide.uri), open_training_set(long.uri)
    # shuffled rows: samples come in order of first appearance, dates ascending
    order = pd.factorize(_long_form(frame)["pixel"])[1].to_numpy()
    pos = pd.Index(frame["pixel"]).get_indexer(order)
    assert np.array_equal(b.data.values, a.data.values[pos])
    assert np.array_equal(b.labels, a.labels[pos])
    assert np.array_equal(b.split, a.split[pos])
    assert np.array_equal(b.times, TCNN_DATES.values)
    assert np.array_equal(a.times, TCNN_DATES.values)
    assert b.time_kind == "acquisition"
    assert long.n_samples == wide.n_samples and long.class_counts == wide.class_counts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_sample=st.integers(1, 6),
    n_time=st.integers(1, 5),
    n_band=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_long_and_wide_tables_round_trip(
    n_sample: int, n_time: int, n_band: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_sample, n_time, n_band)).astype(np.float32)
    bands = [f"b{k}" for k in range(n_band)]
    days = pd.date_range("2021-03-01", periods=n_time, freq="7D")
    ids = rng.permutation(100)[:n_sample] + 1
    classes = rng.integers(1, 3, n_sample)
    wide = pd.DataFrame({"sample": ids, "cls": classes})
    for t in range(n_time):
        for k, band in enumerate(bands):
            wide[f"{band}@{t}"] = x[:, t, k]
    long = pd.DataFrame(
        {
            "sample": np.repeat(ids, n_time),
            "cls": np.repeat(classes, n_time),
            "when": np.tile(days.strftime("%d %b %Y"), n_sample),
        }
        | {band: x[:, :, k].ravel() for k, band in enumerate(bands)}
    ).sample(frac=1.0, random_state=seed)
    with tempfile.TemporaryDirectory() as tmp:
        legend = Path(tmp) / "legend.csv"
        legend.write_text("value,class,colour\n1,a,#ff0000\n2,b,#00ff00\n")
        wide.to_parquet(Path(tmp) / "wide.parquet")
        long.to_parquet(Path(tmp) / "long.parquet")
        common: dict[str, object] = {
            "legend_path": str(legend),
            "bands": bands,
            "class_column": "cls",
            "field_column": None,
            "id_column": "sample",
        }
        wide_params = SampleTableParams.model_validate(
            common | {"files": {"train": str(Path(tmp) / "wide.parquet")}}
        )
        long_params = SampleTableParams.model_validate(
            common
            | {
                "files": {"train": str(Path(tmp) / "long.parquet")},
                "layout": "long",
                "date_column": "when",
            }
        )
        a = read_sample_tables(wide_params, load_legend(legend))
        b = read_sample_tables(long_params, load_legend(legend))
    order = pd.Index(ids).get_indexer(pd.Index(pd.unique(long["sample"])))
    assert np.array_equal(a.x, x) and np.array_equal(b.x, x[order])
    assert np.array_equal(b.labels, classes[order]) and np.array_equal(a.labels, classes)
    assert b.dates == list(days.date) and a.dates is None
    assert list(b.field_ids) == [str(i) for i in ids[order]]


def _sinop(fixtures_dir: Path, tmp_path: Path, legend: str, **kw: object) -> SampleTableParams:
    """The 18 real sits points (text labels Pasture, Forest, Soy_Corn, Cerrado) as a table
    whose 'series' is one step of two 'bands', the point's longitude and latitude."""
    path = tmp_path / "legend.csv"
    path.write_text(legend)
    base: dict[str, object] = {
        "files": {"train": str(fixtures_dir / "real/sits/samples_sinop_crop.csv")},
        "legend_path": str(path),
        "bands": ["longitude", "latitude"],
        "header": True,
        "class_column": "label",
        "field_column": None,
        "id_column": "id",
        "ignore_columns": ["start_date", "end_date"],
        "val_fraction": 0.0,
    }
    return SampleTableParams.model_validate(base | kw)


SINOP_LEGEND = "value,class,colour\n1,pasture,#ffff00\n2,forest,#008c00\n3,Soy corn,#ff3333\n"


def test_unknown_classes_are_refused_by_default_naming_values_file_and_option(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    params = _sinop(fixtures_dir, tmp_path, SINOP_LEGEND)
    with pytest.raises(LabelError) as err:
        read_sample_tables(params, load_legend(params.legend_path))
    message = str(err.value.message)
    assert "samples_sinop_crop.csv" in message and "'label'" in message
    assert "{'Cerrado': 3}" in message and "3 rows" in message
    assert "class names" in message and "'Soy corn'" in message
    assert err.value.hint and "unknown_classes: drop" in err.value.hint


def test_unknown_classes_dropped_are_reported_with_their_counts(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    params = _sinop(fixtures_dir, tmp_path, SINOP_LEGEND, unknown_classes="drop")
    summary = import_sample_tables(
        TableImportParams(table=params, name="sinop", out_uri=str(tmp_path / "s.zarr"))
    )
    points = pd.read_csv(fixtures_dir / "real/sits/samples_sinop_crop.csv")
    kept = points[points["label"] != "Cerrado"]
    assert summary.n_samples["train"] == len(kept) == 15
    # Soy_Corn is the legend's "Soy corn": spaces and underscores alike, any case
    assert summary.class_counts["train"] == {"pasture": 4, "forest": 3, "Soy corn": 8}
    dropped = [w for w in summary.warnings if "left out" in w]
    assert len(dropped) == 1 and "{'Cerrado': 3}" in dropped[0] and "unknown_classes" in dropped[0]
    ts = open_training_set(summary.uri)
    assert np.allclose(ts.data.values[:, 0, 0], kept["longitude"].to_numpy())
    assert np.allclose(ts.data.values[:, 0, 1], kept["latitude"].to_numpy())
    report = ts.dataset.attrs["summary"]["reports"]["tables"]["files"][0]
    assert report["unknown_classes"] == {"Cerrado": 3} and report["n_kept"] == 15
    # the sample id column identifies the samples (no field column)
    assert sorted(str(v) for v in ts.dataset["field_source_id"].values) == sorted(
        kept["id"].astype(str)
    )


def test_text_labels_go_through_the_codes_of_a_mapping_legend(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    mapping = tmp_path / "sinop.yaml"
    mapping.write_text(
        "source_column: label\n"
        "codes: {Pasture: pasture, Forest: natural, Cerrado: natural, Soy_Corn: crops}\n"
    )
    params = _sinop(fixtures_dir, tmp_path, SINOP_LEGEND).model_copy(
        update={"legend_path": str(mapping)}
    )
    legend = load_legend(mapping)
    rows = read_sample_tables(params, legend)
    labels = pd.read_csv(fixtures_dir / "real/sits/samples_sinop_crop.csv")["label"]
    expected = labels.map({"Pasture": 1, "Forest": 2, "Cerrado": 2, "Soy_Corn": 3})
    assert rows.labels.tolist() == expected.tolist()
    assert legend.class_map.names == ["pasture", "natural", "crops"]
    assert rows.report["files"][0]["class_values"] == "codes"
    # codes are compared exactly (after normalize_code): a class name is not a code
    renamed = tmp_path / "named.csv"
    pd.read_csv(fixtures_dir / "real/sits/samples_sinop_crop.csv").assign(
        label=lambda f: f["label"].map({"Pasture": "pasture"}).fillna("crops")
    ).to_csv(renamed, index=False)
    with pytest.raises(LabelError, match="raw codes") as err:
        read_sample_tables(params.model_copy(update={"files": {"train": str(renamed)}}), legend)
    assert err.value.hint and "class_values: names" in err.value.hint
    named = params.model_copy(update={"files": {"train": str(renamed)}, "class_values": "names"})
    assert set(read_sample_tables(named, legend).labels.tolist()) == {1, 3}


def test_text_columns_without_value_columns_name_the_columns_and_both_options(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    params = _sinop(fixtures_dir, tmp_path, SINOP_LEGEND, ignore_columns=[])
    with pytest.raises(DataError) as err:
        read_sample_tables(params, load_legend(params.legend_path))
    assert "samples_sinop_crop.csv" in err.value.message
    assert "'start_date', 'end_date'" in err.value.message and "2013-09-14" in err.value.message
    assert "could not convert" not in str(err.value)
    assert err.value.hint and "value_columns" in err.value.hint
    assert "ignore_columns: ['start_date', 'end_date']" in err.value.hint


def test_named_columns_that_do_not_exist_are_refused_naming_the_option(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    csv = str(fixtures_dir / "real/sits/samples_sinop_crop.csv")
    cases: list[tuple[dict[str, object], str, str]] = [
        ({"class_column": "crop_type"}, "'crop_type'", "class_column"),
        ({"id_column": "sample_id"}, "'sample_id'", "id_column"),
        ({"ignore_columns": ["start", "end_date"]}, "'start'", "ignore_columns"),
        ({"value_columns": ["longitude", "lat"]}, "'lat'", "value_columns"),
    ]
    for change, named, option in cases:
        params = _sinop(fixtures_dir, tmp_path, SINOP_LEGEND, **change)
        if "value_columns" in change:
            params = params.model_copy(update={"ignore_columns": []})
        with pytest.raises(DataError) as err:
            read_sample_tables(params, load_legend(params.legend_path))
        assert csv in err.value.message and named in err.value.message, err.value
        assert "'latitude'" in err.value.message  # the columns the file has
        assert err.value.hint and option in err.value.hint
    # a header-less read of a named column says so
    params = _sinop(fixtures_dir, tmp_path, SINOP_LEGEND, header=False)
    with pytest.raises(DataError) as err:
        read_sample_tables(params, load_legend(params.legend_path))
    assert err.value.hint and "header: true" in err.value.hint


def test_unmapped_split_values_are_refused_or_left_out(fixtures_dir: Path, tmp_path: Path) -> None:
    frame = _labelled_table(fixtures_dir)
    frame.loc[frame["polygon"] % 7 == 3, "split"] = "holdout"
    frame.loc[frame.index[:2], "split"] = np.nan
    holdout = frame["split"] == "holdout"
    path = tmp_path / "samples.parquet"
    frame.to_parquet(path)
    legend = fixtures_dir / "real/temporalcnn/class_map.txt"
    params = _table_params(path, legend)
    with pytest.raises(DataError) as err:
        read_sample_tables(params, load_legend(legend))
    message = err.value.message
    assert str(path) in message and "split column 'split'" in message
    assert f"'holdout': {int(holdout.sum())}" in message and "'<missing>': 2" in message
    assert err.value.hint and "split_values" in err.value.hint
    assert "unknown_splits: drop" in err.value.hint
    # mapped by option: holdout is test; the two empty cells are left out and reported
    mapped = params.model_copy(
        update={
            "split_values": {
                "train": ["training"],
                "val": ["validation"],
                "test": ["testing", "holdout"],
            },
            "unknown_splits": "drop",
        }
    )
    rows = read_sample_tables(mapped, load_legend(legend))
    assert len(rows.x) == len(frame) - 2
    assert int((rows.given == 2).sum()) == int(frame["split"].isin(["testing", "holdout"]).sum())
    assert any("{'<missing>': 2}" in w and "unknown_splits" in w for w in rows.warnings)
    # a split column needs the table as one 'all' file
    with pytest.raises(ConfigError, match="split_column") as cfg:
        _table_params(path, legend, files={"train": str(path)})
    assert cfg.value.hint and "all" in cfg.value.hint


def test_a_long_table_with_a_missing_date_names_the_sample(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    frame = _labelled_table(fixtures_dir).iloc[:40]
    long = _long_form(frame)
    gone = long.index[(long["pixel"] == 1007) & (long["date"] == "2006-02-05")]
    path = tmp_path / "long.csv"
    long.drop(index=gone).to_csv(path, index=False)
    legend = fixtures_dir / "real/temporalcnn/class_map.txt"
    params = _table_params(
        path,
        legend,
        layout="long",
        date_column="date",
        band_columns={b: f"fs2_{b}" for b in BANDS},
        ignore_columns=[],
    )
    with pytest.raises(DataError) as err:
        read_sample_tables(params, load_legend(legend))
    message = err.value.message
    assert str(path) in message and "sample 1007" in message and "2006-02-05" in message
    assert "1 of 40 samples" in message and "'pixel'" in message
    assert err.value.hint and "id_column" in err.value.hint and "date_column" in err.value.hint
    # a band column that is not there names band_columns
    wrong = params.model_copy(update={"band_columns": {"nir": "NIR"}})
    with pytest.raises(DataError) as err:
        read_sample_tables(wrong, load_legend(legend))
    assert "'NIR'" in err.value.message and "'fs2_red'" in err.value.message
    assert err.value.hint and "band_columns" in err.value.hint


def test_inconsistent_settings_are_refused_with_the_option_to_change(tmp_path: Path) -> None:
    base: dict[str, object] = {"files": {"all": "t.csv"}, "legend_path": "l.csv", "bands": ["a"]}
    cases: list[tuple[dict[str, object], str]] = [
        ({"layout": "long", "header": True}, "id_column"),
        ({"layout": "long", "id_column": "i", "date_column": "d"}, "header: true"),
        ({"date_column": "d"}, "layout: long"),
        ({"class_column": "crop"}, "field_column"),
        ({"value_columns": ["x"], "ignore_columns": ["x"]}, "one of them"),
        ({"split_values": {"train": ["a"], "test": ["A"]}}, "one split"),
    ]
    for change, fix in cases:
        with pytest.raises(ConfigError) as err:
            SampleTableParams.model_validate(base | change)
        assert err.value.hint and fix in err.value.hint, (change, err.value)
