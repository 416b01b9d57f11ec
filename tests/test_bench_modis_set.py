"""The MODIS NDVI benchmark set (benchmarks/bench_quality.py): real cube, point folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_quality import import_set, modis_table
from cropflow.train.data import load_training_data


@pytest.mark.parametrize("fold", [0, 1, 2, 4])
def test_each_fold_tests_every_class_on_points_it_never_trains_on(
    fold: int, tmp_path: Path
) -> None:
    table = pd.read_csv(modis_table(tmp_path / "t.csv", fold))
    assert table["sample"].nunique() == 18 * 9 and table["date"].nunique() == 12
    assert table["ndvi"].between(-1.0, 1.0).all()  # scaled int16 NDVI, not raw counts
    test = table[table["split"] == "test"]
    train = table[table["split"] == "train"]
    assert set(test["point"]).isdisjoint(train["point"])
    assert set(test["label"]) == set(table["label"])  # every class tested in every fold


def test_the_three_folds_partition_the_points(tmp_path: Path) -> None:
    tested = [
        set(pd.read_csv(modis_table(tmp_path / f"{f}.csv", f)).query("split == 'test'")["point"])
        for f in (3, 4, 5)
    ]
    assert set().union(*tested) == set(range(1, 19))
    assert sum(len(t) for t in tested) == 18


def test_a_window_reaching_past_the_raster_edge_is_refused(tmp_path: Path) -> None:
    # a window as wide as the raster cannot fit around any point: no silent wrap-around
    with pytest.raises(ValueError, match="edge"):
        modis_table(tmp_path / "t.csv", 0, window=10_001)
    assert not (tmp_path / "t.csv").exists()


def test_the_imported_set_keeps_points_whole_and_the_real_dates(tmp_path: Path) -> None:
    data = load_training_data(import_set("modis-ndvi", tmp_path, seed=1))
    units = {k: set(v.units.tolist()) for k, v in data.splits.items() if v.units is not None}
    assert len(units) == 3
    assert units["train"].isdisjoint(units["val"]) and units["train"].isdisjoint(units["test"])
    assert units["val"].isdisjoint(units["test"])
    assert sum(len(v) for v in data.splits.values()) == 162
    assert data.bands == ["ndvi"] and data.splits["train"].x.shape[1:] == (12, 1)
    gaps = np.diff(data.splits["train"].dates[0])
    assert (gaps > 25).all() and (gaps < 40).all()  # the 16-day composites picked monthly
