"""Spatial k-fold cross-validation: folds of whole fields or blocks, mean and spread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cropflow.errors import TrainingError
from cropflow.train.crossval import assign_folds, cross_validate, fold_data
from cropflow.train.data import load_training_data
from cropflow.train.params import CrossValParams
from cropflow.train.synthetic import synthetic_training_data

TCNN = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "temporalcnn"


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=3, max_size=80),
    folds=st.integers(3, 8),
    seed=st.integers(0, 5),
)
def test_every_unit_is_in_one_fold_and_folds_are_balanced(
    sizes: list[int], folds: int, seed: int
) -> None:
    units = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)  # any ids
    np.random.default_rng(seed).shuffle(units)
    if len(sizes) < folds:
        with pytest.raises(TrainingError, match="cannot make"):
            assign_folds(units, folds, seed)
        return
    fold = assign_folds(units, folds, seed)
    for u in np.unique(units):
        assert np.unique(fold[units == u]).size == 1  # a unit never straddles folds
    counts = np.bincount(fold, minlength=folds)
    assert (counts > 0).all() and counts.max() - counts.min() <= max(sizes)


def test_fold_sets_never_share_a_field() -> None:
    data = synthetic_training_data("pixel", sizes=(90, 30, 20), seed=4)
    # give the samples fields: 4 pixels each, as a field-labelled training set has
    for name, split in data.splits.items():
        offset = {"train": 0, "val": 1000, "test": 2000}[name]
        split.units = (np.arange(len(split)) // 4 + offset).astype(np.int64)
        split.unit_kind = "field"
    sets = fold_data(data, 5, seed=1)
    pooled = 90 + 30
    tested = []
    for fold in sets:
        parts = {k: set(v.units.tolist()) for k, v in fold.splits.items()}  # type: ignore[union-attr]
        assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"]
        assert not parts["val"] & parts["test"]
        assert sum(len(v) for v in fold.splits.values()) == pooled
        tested.append(parts["test"])
    pooled_units = {int(u) for name in ("train", "val") for u in data.splits[name].units}  # type: ignore[union-attr]
    assert set().union(*tested) == pooled_units, "every unit of train + val is tested"
    assert sum(len(t) for t in tested) == len(pooled_units), "each unit tested once"


def test_cross_validation_scores_every_fold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path))
    data = synthetic_training_data("pixel", sizes=(120, 40, 20), noise=0.6, seed=2)
    params = CrossValParams.model_validate(
        {
            "training_set": "memory://synthetic",
            "model": {"name": "tempcnn"},
            "epochs": 3,
            "folds": 4,
            "checkpoint_dir": None,
        }
    )
    result = cross_validate(params, data=data)
    assert [f.fold for f in result.folds] == [1, 2, 3, 4]
    assert sum(f.n_test for f in result.folds) == 160  # train + val pooled, each tested once
    assert len({f.run_id for f in result.folds}) == 4
    scores = [f.scores["macro_f1"] for f in result.folds]
    assert result.mean["macro_f1"] == pytest.approx(np.mean(scores))
    assert result.std["macro_f1"] == pytest.approx(np.std(scores, ddof=1))
    assert "mean ± sd" in result.to_markdown()


@pytest.mark.slow
def test_evaluate_from_the_cli_on_the_real_fixture(tmp_path: Path) -> None:
    """`cropflow evaluate --folds 3` on the real temporalCNN series, folds by polygon."""
    from cropflow.labels.build import TableImportParams, import_sample_tables
    from cropflow.labels.tables import SampleTableParams

    summary = import_sample_tables(
        TableImportParams(
            table=SampleTableParams(
                files={
                    "train": str(TCNN / "train_dataset.csv"),
                    "test": str(TCNN / "test_dataset.csv"),
                },
                legend_path=str(TCNN / "class_map.txt"),
                bands=["nir", "red", "green"],
                class_id_offset=1,
                val_fraction=0.2,
            ),
            out_uri=str(tmp_path / "tcnn.zarr"),
        )
    )
    data = load_training_data(summary.uri)
    assert data.splits["train"].unit_kind == "field"  # the polygons of the table
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["CROPFLOW_WORKDIR"] = str(tmp_path / "work")
    exe = str(Path(sys.executable).with_name("cropflow"))
    done = subprocess.run(
        [exe, "evaluate", "--training-set", summary.uri, "--folds", "3", "--epochs", "3",
         "--model", '{"name": "tempcnn"}'],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3-fold spatial cross-validation of tempcnn" in done.stdout
    assert "folds of whole fields" in done.stdout and "mean ± sd" in done.stdout
