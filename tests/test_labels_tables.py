"""Imported sample tables: the real temporalCNN tables become a training set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cropflow.errors import ConfigError, LabelError
from cropflow.labels.build import TableImportParams, import_sample_tables
from cropflow.labels.splits import leakage_problems
from cropflow.labels.store import open_training_set
from cropflow.labels.tables import SampleTableParams, read_legend


def _tcnn(fixtures_dir: Path, **kw: object) -> SampleTableParams:
    base = fixtures_dir / "real/temporalcnn"
    return SampleTableParams(
        files={"train": str(base / "train_dataset.csv"), "test": str(base / "test_dataset.csv")},
        legend_path=str(base / "class_map.txt"),
        bands=["nir", "red", "green"],
        **({"class_id_offset": 1} | kw),  # type: ignore[arg-type]
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
        layout="band_major",
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


def test_legend_with_two_names_on_one_id_is_refused(tmp_path: Path) -> None:
    legend = tmp_path / "legend.csv"
    legend.write_text("value,class,colour\n1,a,#ff0000\n1,b,#00ff00\n")
    with pytest.raises(ConfigError, match="more than one class") as err:
        read_legend(legend)
    assert str(legend) in str(err.value)
