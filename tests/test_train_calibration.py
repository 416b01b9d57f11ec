"""Calibration (issue 13): the expected calibration error, temperature scaling fitted on val,
stored with the model and used by every probability it gives (prediction, pyfunc)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from cropflow.train import TrainParams, train
from cropflow.train.calibration import expected_calibration_error, fit_temperature
from cropflow.train.synthetic import synthetic_training_data
from models.base import Batch, build_model
from models.configs import parse_model_config
from models.serialization import WEIGHTS_FILE, load_model, save_model

pytestmark = pytest.mark.usefixtures("test_mlflow")


def test_ece_by_hand() -> None:
    """Two bins used: 3 samples at confidence 0.9 (2 right), 1 at 0.6 (right).
    ECE = 3/4 * |2/3 - 0.9| + 1/4 * |1 - 0.6| = 0.175 + 0.1 = 0.275."""
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.4, 0.6]])
    y = np.array([0, 1, 1, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.275)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == 0.0


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_the_fitted_temperature_recovers_the_one_the_labels_were_drawn_with(true_t: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(20_000, 4, generator=g)
    y = torch.multinomial(torch.softmax(logits / true_t, dim=1), 1, generator=g).squeeze(1)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(true_t, rel=0.08)
    raw = expected_calibration_error(torch.softmax(logits, 1).numpy(), y.numpy())
    fitted = expected_calibration_error(torch.softmax(logits / t, 1).numpy(), y.numpy())
    assert fitted < 0.02
    if true_t != 1.0:
        assert fitted < raw / 2, (raw, fitted)


def test_training_fits_stores_and_uses_the_temperature(tmp_path: Path) -> None:
    """A model trained to over-confidence on noisy data (best epoch by macro F1, 40 epochs):
    its temperature rises above 1 (2.97 when written), the
    val ECE falls, and the saved and MLflow-logged model gives calibrated probabilities."""
    data = synthetic_training_data("pixel", sizes=(160, 120, 120), n_time=6, noise=1.5)
    params = TrainParams.model_validate(
        {
            "training_set": "memory://synthetic",
            "model": {
                "name": "tempcnn",
                "conv_widths": [16],
                "hidden_size": 32,
                "dropout": 0.0,
                "input_noise": 0.0,
            },
            "epochs": 40,
            "batch_size": 16,
            "lr": 1e-2,
            "early_stopping": {"patience": None},
            "augment": {"date_dropout": 0.0, "noise_std": 0.0},
            "checkpoint_dir": tmp_path / "ckpt",
            "register_model": False,
        }
    )
    result = train(params, data=data)
    cal = result.calibration
    assert cal["temperature"] > 1.2, cal
    assert cal["val_ece"] < cal["val_ece_uncalibrated"]
    assert {"test_ece", "test_ece_uncalibrated"} <= set(cal)
    client = MlflowClient(tracking_uri=result.tracking_uri)
    logged = client.get_run(result.run_id).data.metrics
    assert logged["temperature"] == pytest.approx(cal["temperature"])

    from cropflow.predict.model import forward_probs
    from cropflow.train.registry import load_model as load_logged

    assert result.model_uri is not None
    loaded = load_logged(result.model_uri).model
    assert float(loaded.temperature) == pytest.approx(cal["temperature"], rel=1e-6)
    x = torch.randn(5, 6, 2)
    batch = Batch.dense(x, torch.arange(6).expand(5, 6) * 15 + 20)
    with torch.no_grad():
        logits = loaded(batch).logits
        probs = forward_probs(loaded, batch)
    want = torch.softmax(logits / cal["temperature"], dim=1)
    torch.testing.assert_close(probs, want)
    assert torch.equal(probs.argmax(1), logits.argmax(1)), "the class does not change"


def test_calibration_off_keeps_temperature_one(tmp_path: Path) -> None:
    data = synthetic_training_data("pixel", sizes=(48, 16, 16), n_time=5)
    params = TrainParams.model_validate(
        {
            "training_set": "memory://synthetic",
            "model": {"name": "tempcnn", "conv_widths": [8], "hidden_size": 16},
            "epochs": 2,
            "calibrate": False,
            "checkpoint_dir": tmp_path / "ckpt",
            "register_model": False,
        }
    )
    result = train(params, data=data)
    assert result.calibration == {}
    metrics = MlflowClient(tracking_uri=result.tracking_uri).get_run(result.run_id).data.metrics
    assert "temperature" not in metrics


def test_weights_saved_before_calibration_load_with_temperature_one(tmp_path: Path) -> None:
    data = synthetic_training_data("pixel", sizes=(8, 4, 4), n_time=5)
    model = build_model(parse_model_config({"name": "ltae"}), data.contract())
    model.temperature.fill_(2.0)
    folder = save_model(model, tmp_path / "m")
    assert float(load_model(folder).temperature) == 2.0
    state = torch.load(folder / WEIGHTS_FILE, weights_only=True)
    del state["temperature"]  # as every model saved before calibration existed
    torch.save(state, folder / WEIGHTS_FILE)
    old = load_model(folder)
    assert float(old.temperature) == 1.0
    for k, v in model.state_dict().items():
        if k != "temperature":
            assert torch.equal(old.state_dict()[k], v)


def test_the_model_identity_changes_with_a_fitted_temperature_only() -> None:
    """Uncalibrated weights hash as they did before the temperature existed (so earlier
    predictions resume); a fitted temperature is another model (other probabilities)."""
    import hashlib

    from cropflow.predict.model import ModelBundle

    data = synthetic_training_data("pixel", sizes=(8, 4, 4), n_time=5)
    model = build_model(parse_model_config({"name": "tempcnn"}), data.contract())
    bundle = ModelBundle(model=model, contract=data.contract(), uri="memory://m")
    before = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        if key == "temperature":
            continue
        t = tensor.detach().cpu().contiguous()
        before.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        before.update(t.numpy().tobytes())
    assert bundle.weights_digest() == before.hexdigest()[:20]
    model.temperature.fill_(1.7)
    assert bundle.weights_digest() != before.hexdigest()[:20]
