"""The middling-length benchmark set (benchmarks/bench_quality.py:thinned_table)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.bench_quality import TCNN, thinned_table


def test_every_sixth_date_of_each_pixel_keeps_its_three_bands(tmp_path: Path) -> None:
    source = TCNN / "train_dataset.csv"
    full = np.loadtxt(source, delimiter=",")
    thin = np.loadtxt(thinned_table(source, tmp_path / "t.csv", 6), delimiter=",")
    assert thin.shape == (len(full), 2 + 25 * 3)  # 149 dates -> dates 0, 6, ..., 144
    np.testing.assert_array_equal(thin[:, :2], full[:, :2])  # class and polygon
    for k, date in enumerate(range(0, 149, 6)):
        np.testing.assert_allclose(
            thin[:, 2 + 3 * k : 5 + 3 * k], full[:, 2 + 3 * date : 5 + 3 * date], rtol=1e-5
        )
