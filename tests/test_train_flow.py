"""Training from a real training-set Zarr (temporalCNN tables imported by cropflow.labels),
directly and through the Prefect ``train`` flow."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cropflow.train import CHAMPION, TrainParams, load_model
from cropflow.train.data import load_training_data

TCNN_CLASSES = [
    "wheat", "barley", "rapeseed", "corn", "soy", "sunflower", "sorghum", "pea", "grassland",
    "deciduous", "conifer", "water", "urban",
]  # fmt: skip


@pytest.fixture(scope="module")
def tcnn_set(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The real temporalCNN tables (149 dates x nir, red, green) as a training set."""
    from cropflow.labels.build import TableImportParams, import_sample_tables
    from cropflow.labels.tables import SampleTableParams

    src = fixtures_dir / "real" / "temporalcnn"
    out = tmp_path_factory.mktemp("trainingsets") / "tcnn.zarr"
    summary = import_sample_tables(
        TableImportParams(
            table=SampleTableParams(
                files={
                    "train": str(src / "train_dataset.csv"),
                    "test": str(src / "test_dataset.csv"),
                },
                legend_path=str(src / "class_map.txt"),
                bands=["nir", "red", "green"],
                class_id_offset=1,
                val_fraction=0.2,
            ),
            out_uri=str(out),
        )
    )
    return summary.uri


def test_real_training_set_loads_with_names_values_and_splits(
    tcnn_set: str, fixtures_dir: Path
) -> None:
    data = load_training_data(tcnn_set)
    assert data.input_kind == "pixel" and data.bands == ["nir", "red", "green"]
    assert data.class_map.names == TCNN_CLASSES and data.n_time == 149
    assert {k: len(v) for k, v in data.splits.items()}["test"] == 260
    assert len(data.splits["train"]) + len(data.splits["val"]) == 260

    # the test split holds exactly the rows of test_dataset.csv (class ids count from 0 there)
    table = pd.read_csv(fixtures_dir / "real" / "temporalcnn" / "test_dataset.csv", header=None)
    want_x = table.iloc[:, 2:].to_numpy(np.float32)  # time-major: d1.nir d1.red d1.green ...
    want_y = table.iloc[:, 0].to_numpy()
    test = data.splits["test"]
    got_x = test.x.reshape(len(test), -1)
    order_w, order_g = np.lexsort(want_x.T[::-1]), np.lexsort(got_x.T[::-1])
    np.testing.assert_allclose(got_x[order_g], want_x[order_w], rtol=1e-6)
    np.testing.assert_array_equal(test.y[order_g], want_y[order_w])
    assert not test.pad_mask.any()


def test_train_flow_trains_registers_and_reports(
    tcnn_set: str,
    prefect_harness: None,
    session_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    from prefect.artifacts import Artifact

    from flows.train import train_flow

    folder = session_root / "train-mlflow"
    folder.mkdir(exist_ok=True)
    monkeypatch.setenv("CROPFLOW_MLFLOW__TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    name = "flow-" + re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)
    monkeypatch.setenv("CROPFLOW_MLFLOW__REGISTERED_MODEL", name)

    params = TrainParams(
        training_set=tcnn_set,
        model={"name": "tempcnn", "conv_widths": [16], "hidden_size": 32},
        epochs=3,
        batch_size=32,
        checkpoint_dir=tmp_path / "ckpt",
    )
    outcome = train_flow(params)
    assert outcome.training.status == "finished"
    assert outcome.registration is not None and outcome.registration.alias == CHAMPION
    assert set(outcome.training.test) >= {"overall_accuracy", "macro_f1", "kappa", "mean_iou"}
    loaded = load_model(CHAMPION)
    assert loaded.run_id == outcome.training.run_id
    assert loaded.contract.bands == ["nir", "red", "green"]
    assert loaded.class_map.names == TCNN_CLASSES
    artifact = Artifact.get("training-report")
    assert artifact is not None and outcome.training.run_id in str(artifact.data)


def test_field_pixel_sets_are_laid_back_on_their_grid() -> None:
    from cropflow.train.data import field_canvases, field_side

    # two fields: an L of 3 pixels, and a 2-pixel bar; values = 10 * row + col
    rows = np.array([5, 6, 6, 20, 20])
    cols = np.array([7, 7, 8, 3, 4])
    pixels = (10.0 * rows + cols).astype(np.float32)[:, None, None].repeat(2, axis=1)
    starts, counts = np.array([0, 3]), np.array([3, 2])
    side = field_side(rows, cols, starts, counts)
    assert side == 2
    x, mask = field_canvases(pixels, rows, cols, starts, counts, side)
    assert x.shape == (2, 2, 1, 2, 2) and mask.sum() == 5
    np.testing.assert_array_equal(mask[0], [[True, False], [True, True]])
    np.testing.assert_array_equal(x[0, 0, 0], [[57, np.nan], [67, 68]])
    np.testing.assert_array_equal(mask[1], [[True, True], [False, False]])
    np.testing.assert_array_equal(x[1, 1, 0][mask[1]], [203, 204])


def test_field_set_without_pixel_positions_is_refused(fixtures_dir: Path, tmp_path: Path) -> None:
    from cropflow.errors import DataError
    from cropflow.labels.build import TableImportParams, import_sample_tables
    from cropflow.labels.tables import SampleTableParams

    src = fixtures_dir / "real" / "temporalcnn"
    summary = import_sample_tables(
        TableImportParams(
            table=SampleTableParams(
                files={"all": str(src / "test_dataset.csv")},
                legend_path=str(src / "class_map.txt"),
                bands=["nir", "red", "green"],
                class_id_offset=1,
                kind="field",
            ),
            out_uri=str(tmp_path / "fields.zarr"),
        )
    )
    with pytest.raises(DataError, match="no pixel positions"):
        load_training_data(summary.uri)
