"""A model trained on the demo region maps the real scene, pixel for pixel (issue 6).

The chain: generate the tiny demo region -> the ``retrain`` flow (STAC search over HTTP ->
cube -> pixel training set from the demo parcels and mapping -> L-TAE -> MLflow registry on
SQLite, alias ``champion``) -> a cube of the real Sentinel-2 scene ``real/ftw/inference-img.tif``
built by the cube builder from hand-made STAC items (as ``test_cube_real`` builds it) -> the
predict flow with the champion -> map products.

Why this configuration is the honest one. The real scene has two irregular acquisitions
(2021-06-17, 2021-09-25) and only four bands (red, green, blue, nir), no SCL, no offset
(reflectance = DN / 10000, processing baseline before 04.00). So both cubes keep every
acquisition date (``period=None``), which makes the training set's and the model's
``time_kind`` ``acquisition``: the contract then checks bands by name and not the number of
time steps, and L-TAE takes any number of dates (missing ones masked). Its dates are encoded as
day of year, so the demo's 2024 season and the scene's 2021 dates are on the same axis. Both
cubes hold reflectance (each provider's scale and offset applied by the cube builder), so the
normalisation stored with the model from the demo cube applies to the scene as is. Neither
cube has spectral indices: the model sees exactly the four bands. The demo cube masks clouds
with SCL; the scene cube has no mask (the scene has no SCL asset). The scene cube's grid is
the scene's own (``GridParams(crs, bounds)``), so products must share its transform exactly.

Nothing asserts the model's accuracy on the scene: it has no labels, and a synthetic
Brandenburg season (an acquisition every 15 days, March to October) is no basis for a
two-date Austrian map.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from distributed import Client
from rich.console import Console
from rio_cogeo.cogeo import cog_validate
from test_cube_real import FTW_BANDS, ftw_items
from test_cube_support import asset_profile

from cropflow.chain import embedded_demo_region
from cropflow.cube import CubeParams, GridParams, open_cube, plan_cube, write_cube
from cropflow.demo import DemoConfig, generate_demo, load_demo
from cropflow.labels import TrainingSetOptions
from cropflow.predict import PredictParams
from cropflow.predict.command import run_predict
from cropflow.settings import get_settings
from cropflow.train import TrainOptions
from flows.retrain import RetrainParams, retrain

SCENE = Path("real") / "ftw" / "inference-img.tif"


def _hex_rgb(color: str) -> tuple[int, int, int]:
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


@pytest.mark.slow
def test_demo_trained_champion_maps_the_real_scene_pixel_for_pixel(
    fixtures_dir: Path,
    prefect_harness: None,
    client: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t0 = time.perf_counter()
    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("CROPFLOW_MLFLOW__TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    generate_demo(get_settings().demo_dir, DemoConfig.tiny())
    legend = load_demo(get_settings().demo_dir).class_map()

    # -- train on the demo region: the four bands the scene has, at its acquisition dates
    four_bands = CubeParams(bands=list(FTW_BANDS), indices=[], period=None)
    trained = retrain(
        RetrainParams(
            # the region's own registered model
            region=embedded_demo_region().model_copy(
                update={"registered_model": "demo-to-ftw-test"}
            ),
            cube=four_bands,
            training_set=TrainingSetOptions.model_validate({"splits": {"block_size_px": 16}}),
            train=TrainOptions.model_validate(
                {
                    "model": {"name": "ltae", "n_head": 4, "d_k": 4, "d_model": 16,
                              "mlp_widths": [16], "decoder_widths": [16]},
                    "epochs": 4,
                    "batch_size": 128,
                    "lr": 5e-3,
                    "checkpoint_dir": tmp_path / "ckpt",
                }
            ),
        )
    )  # fmt: skip
    assert trained.summary.model_alias == "champion"
    t_train = time.perf_counter()

    # -- the real scene as a cube on its own grid
    src_path = fixtures_dir / SCENE
    with rasterio.open(src_path) as src:
        crs, transform, shape = src.crs, src.transform, src.shape
        bounds = tuple(src.bounds)
    scene_params = four_bands.model_copy(
        update={"mask": [], "grid": GridParams(crs=f"EPSG:{crs.to_epsg()}", bounds=bounds)}
    )
    plan = plan_cube(ftw_items(fixtures_dir, tmp_path), asset_profile(), scene_params)
    cube = write_cube(plan, tmp_path / "ftw.zarr", client=client)
    ds = open_cube(cube.uri)
    dates = [str(t)[:10] for t in ds.time.values]
    assert dates == ["2021-06-17", "2021-09-25"]
    assert ds.attrs["cropflow:time"]["period"] is None  # acquisition dates, as in training

    # -- predict with the registered champion
    params = PredictParams(
        cube=cube.uri, model="champion", registered_model="demo-to-ftw-test", key="ftw-demo",
        region="ftw-demo", tile_size=256, executor="local",
    )  # fmt: skip
    prediction, products = run_predict(params, Console(file=io.StringIO()))
    assert products is not None
    assert prediction.model.alias == "champion"
    assert prediction.model.run_id == trained.summary.mlflow_run_id
    assert prediction.class_map.names == legend.names

    path = products.paths["class_map"]
    valid, errors, _ = cog_validate(path, quiet=True)
    assert valid, errors
    with rasterio.open(path) as out:
        assert out.crs == crs
        assert out.transform == transform
        assert out.shape == shape
        assert out.dtypes[0] == "uint8"
        classes = out.read(1)
        cmap = out.colormap(1)
        band_tags = out.tags(1)
        names = json.loads(out.tags()["CLASSES"])
    for c in legend.classes:
        assert band_tags[f"CLASS_{c.id}"] == c.name
        assert cmap[c.id][:3] == _hex_rgb(c.color), c.name
    assert [(c["id"], c["name"], c["color"].lower()) for c in names] == [
        (c.id, c.name, c.color.lower()) for c in legend.classes
    ]
    # every pixel of the scene got a class of the legend (no nodata, nothing outside it)
    assert np.isin(classes, legend.ids).all(), np.unique(classes)
    t_end = time.perf_counter()
    found = {
        legend.name_of(int(i)): int(n)
        for i, n in zip(*np.unique(classes, return_counts=True), strict=True)
    }
    print(f"train {t_train - t0:.1f} s, scene cube + predict {t_end - t_train:.1f} s; {found}")
