"""The predict flow end to end on a real Sentinel-2 scene, with a model from the registry.

The scene (``real/ftw/inference-img.tif``, Austria, EPSG:32633) has no labels, so the model
is a small L-TAE trained here, through cropflow.train and a real MLflow store, on a few
hundred of the scene's pixels labelled by an NDVI rule (vegetated / sparse / bare). It is
registered as champion of its own registered model, and the flow loads it by that alias.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    ArtifactFilterType,
)
from rich.console import Console

from cropflow.classes import ClassDef, ClassMap
from cropflow.predict import PredictParams
from cropflow.predict.command import run_predict
from cropflow.predict.progress import progress_sink
from cropflow.predict.testing import write_cube
from cropflow.train import TrainParams, register_run, train
from cropflow.train.data import SplitArrays, TrainingData, days_since_epoch
from models.contract import BandStats

BANDS = ["red", "green", "blue", "nir"]
DATES = np.array(["2021-06-17", "2021-09-25"], dtype="datetime64[ns]")
CLASSES = ClassMap(
    classes=[
        ClassDef(id=1, name="vegetated", color="#1a9641"),
        ClassDef(id=2, name="sparse", color="#fdae61"),
        ClassDef(id=3, name="bare", color="#d7191c"),
    ]
)


def ndvi_class(x: np.ndarray) -> np.ndarray:
    """Label index by the June NDVI of ``x [..., T, C]`` (C in BANDS order)."""
    red, nir = x[..., 0, 0], x[..., 0, 3]
    ndvi = (nir - red) / (nir + red + 1e-6)
    return np.where(ndvi > 0.6, 0, np.where(ndvi > 0.35, 1, 2))


@pytest.fixture
def scene(fixtures_dir: Path, tmp_path: Path) -> tuple[Path, np.ndarray, rasterio.Affine]:
    """The scene as a cube (reflectance = DN / 10000) and as an array [T, C, H, W]."""
    with rasterio.open(fixtures_dir / "real" / "ftw" / "inference-img.tif") as src:
        raw = src.read().astype(np.float32) / 10_000.0
        transform, crs = src.transform, src.crs.to_wkt()
    stack = raw.reshape(2, 4, *raw.shape[1:])  # [T, C, H, W]: 4 bands per date
    bands = {b: stack[:, i] for i, b in enumerate(BANDS)}
    cube = write_cube(tmp_path / "ftw.zarr", bands, DATES, transform, crs, 128, period=None)
    return cube, stack, transform


def _training_data(stack: np.ndarray) -> TrainingData:
    rng = np.random.default_rng(0)
    t, c, h, w = stack.shape
    series = stack.reshape(t, c, h * w).transpose(2, 0, 1)  # [N, T, C]
    pick = rng.choice(h * w, size=900, replace=False)
    days = days_since_epoch(DATES)
    splits = {}
    for name, idx in zip(("train", "val", "test"), np.split(pick, [600, 750]), strict=True):
        x = series[idx]
        splits[name] = SplitArrays(
            x=x,
            y=ndvi_class(x).astype(np.int64),
            dates=np.broadcast_to(days, (len(idx), t)).copy(),
            pad_mask=np.zeros((len(idx), t), bool),
        )
    train_x = splits["train"].x
    norm = {
        b: BandStats(mean=float(train_x[:, :, i].mean()), std=float(train_x[:, :, i].std()))
        for i, b in enumerate(BANDS)
    }
    return TrainingData(
        uri="memory://ftw-ndvi",
        input_kind="pixel",
        time_kind="acquisition",
        bands=BANDS,
        class_map=CLASSES,
        normalisation=norm,
        splits=splits,
        n_time=t,
    )


@pytest.mark.slow
def test_flow_maps_the_real_scene_with_the_champion_aligned_pixel_for_pixel(
    scene: tuple[Path, np.ndarray, rasterio.Affine],
    prefect_harness: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cube, stack, transform = scene
    monkeypatch.setenv("CROPFLOW_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("CROPFLOW_MLFLOW__REGISTERED_MODEL", "predict-ftw-test")
    data = _training_data(stack)
    trained = train(
        TrainParams.model_validate(
            {
                "training_set": data.uri,
                "model": {"name": "ltae", "n_head": 4, "d_k": 4, "d_model": 16,
                          "mlp_widths": [16], "decoder_widths": [8]},
                "epochs": 12,
                "batch_size": 64,
                "lr": 1e-2,
                "checkpoint_dir": tmp_path / "ckpt",
            }
        ),
        data=data,
    )  # fmt: skip
    assert register_run(trained.run_id, data=data).alias == "champion"

    seen: list[tuple[int, int]] = []
    params = PredictParams(
        cube=str(cube), model="champion", key="ftw", region="ftw", tile_size=128,
        executor="local",
    )  # fmt: skip
    console = Console(file=io.StringIO(), width=200)
    with progress_sink(lambda done, total: seen.append((done, total))):
        prediction, products = run_predict(params, console)  # the CLI's body: the flow + bar
    assert products is not None
    summary = console.file.getvalue()  # type: ignore[attr-defined]
    assert "vegetated" in summary and products.catalog in summary
    assert prediction.model.version == "1" and prediction.model.run_id == trained.run_id
    assert prediction.model.alias == "champion"
    assert products.files()["catalog"] == products.catalog
    assert seen[-1] == (prediction.tiles_total, prediction.tiles_total) == (3 * 5, 15)

    h, w = stack.shape[2:]
    for key in ("class_map", "probability", "confidence"):
        with rasterio.open(products.paths[key]) as out:
            assert out.crs.to_epsg() == 32633, key
            assert out.transform == transform, key
            assert (out.height, out.width) == (h, w), key
    with rasterio.open(products.paths["class_map"]) as out:
        classes = out.read(1)
    series = stack.reshape(2, 4, h * w).transpose(2, 0, 1)
    rule = np.asarray(CLASSES.ids)[ndvi_class(series)].reshape(h, w)
    agreement = float((classes == rule).mean())
    assert agreement > 0.75, agreement  # the chain keeps bands, dates and scaling in order

    with get_client(sync_client=True) as client:
        reports = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["predict-report-ftw"]))
        )
        progress = client.read_artifacts(
            artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"]))
        )
    mine = [a for a in progress if "ftw" in (a.description or "")]
    assert mine and float(mine[-1].data) == pytest.approx(100.0)  # type: ignore[arg-type]
    assert reports, "no report artifact"
    md = str(reports[0].data)
    print(f"agreement with the NDVI rule: {agreement:.3f}")
    assert "predict-ftw-test v1" in md and "| vegetated |" in md and "catalog.json" in md
    assert "## Model metrics" in md and trained.run_id in md
