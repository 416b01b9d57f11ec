"""Ensembles (PredictOptions.ensemble): the average of calibrated member probabilities, in the
model, through the Dask payload and in a map whose members come from the MLflow registry."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import ContractError
from cropflow.predict import PredictParams, open_prediction, predict
from cropflow.predict.executors import ModelPayload
from cropflow.predict.store import META_ATTR
from cropflow.predict.testing import smooth_noise, tiny_bundle, write_cube
from cropflow.train.registry import RunLogger, mlflow_target
from models.base import Batch, CropflowModel
from models.ensemble import ModelEnsemble

pytestmark = pytest.mark.usefixtures("test_mlflow")

T, H, W = 4, 21, 26
BANDS = ["nir", "red"]
STATS = {"nir": (0.3, 0.1), "red": (0.1, 0.05)}
DATES = ["2021-04-01", "2021-05-01", "2021-06-01", "2021-07-01"]
CLASSES = ClassMap(
    classes=[
        ClassDef(id=1, name="wheat", color="#e6c619"),
        ClassDef(id=5, name="maize", color="#2ca02c"),
        ClassDef(id=9, name="grassland", color="#98df8a"),
    ]
)
TEMPCNN = {
    "name": "tempcnn",
    "conv_widths": [8],
    "kernel_size": 3,
    "hidden_size": 8,
    "dropout": 0.0,
}


def _member(seed: int, temperature: float = 1.0, bands: list[str] = BANDS) -> CropflowModel:
    model = tiny_bundle(TEMPCNN, bands, T, CLASSES, "pixel", stats=STATS, seed=seed, gain=3)
    m = model.model
    assert isinstance(m, CropflowModel)
    m.temperature.fill_(temperature)
    return m


def _batch(n: int = 64) -> Batch:
    g = torch.Generator().manual_seed(0)
    doy = torch.tensor([91, 121, 152, 182]).expand(n, T)
    return Batch(x=torch.randn(n, T, len(BANDS), generator=g), dates=doy,
                 pad_mask=torch.zeros(n, T, dtype=torch.bool))  # fmt: skip


def test_the_ensemble_is_the_mean_of_calibrated_member_probabilities() -> None:
    members = [_member(0, 1.0), _member(1, 2.5), _member(2, 0.7)]
    batch = _batch()
    with torch.no_grad():
        each = [m.probabilities(m(batch).logits) for m in members]
        got = torch.softmax(ModelEnsemble(members).eval()(batch).logits, dim=1)
    torch.testing.assert_close(got, torch.stack(each).mean(0), atol=1e-6, rtol=1e-5)
    # the members disagree, so the average is not any one of them
    assert all(not torch.allclose(got, p, atol=1e-3) for p in each)
    # temperatures matter: the same members uncalibrated give another average
    flat = [copy.deepcopy(m) for m in members]
    for m in flat:
        m.temperature.fill_(1.0)
    with torch.no_grad():
        plain = torch.softmax(ModelEnsemble(flat)(batch).logits, dim=1)
    assert not torch.allclose(plain, got, atol=1e-4)


def test_members_trained_for_another_input_or_classes_are_refused_by_name() -> None:
    other_bands = _member(1, bands=["nir", "green"])
    with pytest.raises(ContractError, match=r"models:/b.*bands.*normalisation") as err:
        ModelEnsemble([_member(0), other_bands], names=["models:/a", "models:/b"])
    assert "same training set" in str(err.value.hint)
    fewer = tiny_bundle(
        TEMPCNN, BANDS, T, ClassMap(classes=CLASSES.classes[:2]), "pixel", stats=STATS
    ).model
    assert isinstance(fewer, CropflowModel)
    with pytest.raises(ContractError, match="class_map"):
        ModelEnsemble([_member(0), fewer])
    with pytest.raises(ContractError, match="at least one"):
        ModelEnsemble([])


def test_the_dask_payload_rebuilds_the_same_ensemble() -> None:
    ensemble = ModelEnsemble([_member(0, 1.3), _member(1, 0.8)]).eval()
    payload = ModelPayload.of(ensemble, ensemble.contract)
    assert len(payload.members) == 2 and payload.state is None
    rebuilt, contract = payload.build()
    assert isinstance(rebuilt, ModelEnsemble) and contract == ensemble.contract
    batch = _batch(16)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch).logits, ensemble(batch).logits)


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    data = {b: m + s * smooth_noise((T, H, W), rng, sigma=2.0) for b, (m, s) in STATS.items()}
    return write_cube(
        tmp_path_factory.mktemp("cube") / "ens.zarr",
        data,
        DATES,
        Affine(10, 0, 600000, 0, -10, 5200000),
        "EPSG:32633",
    )


def test_an_ensemble_map_from_registry_members_averages_their_maps(cube: Path) -> None:
    bundles = [
        tiny_bundle(TEMPCNN, BANDS, T, CLASSES, "pixel", stats=STATS, seed=s, gain=3)
        for s in range(3)
    ]
    target = mlflow_target()
    uris = []
    for b in bundles[1:]:
        logger = RunLogger.start(target, None, "ensemble-member", {})
        assert isinstance(b.model, CropflowModel)
        uris.append(logger.log_model(b.model))
        logger.finish()
    common = {"cube": str(cube), "tile_size": 16, "executor": "local"}
    alone = [
        open_prediction(predict(PredictParams(key=f"alone-{i}", **common), b).store).load()
        for i, b in enumerate(bundles)
    ]
    result = predict(PredictParams(key="ensemble", ensemble=uris, **common), bundles[0])
    ens = open_prediction(result.store).load()
    mean = np.mean([a["probability"].values for a in alone], axis=0)
    np.testing.assert_allclose(ens["probability"].values, mean, atol=1.0)  # percent, rounded
    assert (ens["class_id"].values != alone[0]["class_id"].values).any(), "members disagree"
    meta = ens.attrs[META_ATTR]
    assert meta["ensemble"] == uris
    assert meta["fingerprint"] != alone[0].attrs[META_ATTR]["fingerprint"]

    # a member trained for other bands is refused before any pixel is read, naming it
    other = tiny_bundle(TEMPCNN, ["nir", "green"], T, CLASSES, "pixel", stats=STATS, seed=5)
    logger = RunLogger.start(target, None, "odd-member", {})
    assert isinstance(other.model, CropflowModel)
    odd = logger.log_model(other.model)
    with pytest.raises(ContractError, match=odd):
        predict(PredictParams(key="ensemble-odd", ensemble=[odd], **common), bundles[0])
