"""Train -> register -> load by alias against a real MLflow SQLite store; champion/challenger."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from cropflow.errors import ConfigError
from cropflow.settings import get_settings
from cropflow.train import CHALLENGER, CHAMPION, TrainParams, load_model, register_run, train
from cropflow.train.checkpoint import CheckpointStore
from cropflow.train.data import Normaliser, SplitArrays, TrainingData
from cropflow.train.engine import evaluate_split
from cropflow.train.synthetic import synthetic_training_data
from cropflow.train.training import TrainOutcome, val_units
from models.base import Batch, CropflowModel, build_model

TINY = {
    "ltae": {
        "name": "ltae",
        "n_head": 4,
        "d_k": 4,
        "d_model": 16,
        "mlp_widths": [16],
        "decoder_widths": [8],
        "input_widths": [8],
    },
    "utae": {
        "name": "utae",
        "encoder_widths": [8, 16],
        "decoder_widths": [8, 16],
        "out_conv": [8],
        "n_head": 4,
        "d_model": 16,
        "d_k": 4,
        "norm_groups": 4,
    },
}


@pytest.fixture(scope="module")
def mlflow_uri(session_root: Path) -> str:
    """One SQLite store for the session's training tests (creating one takes seconds)."""
    folder = session_root / "train-mlflow"
    folder.mkdir(exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def registered_name(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    """Each test gets its own registered model in the shared store."""
    monkeypatch.setenv("CROPFLOW_MLFLOW__TRACKING_URI", mlflow_uri)
    name = "registry-" + re.sub(r"[^A-Za-z0-9_-]", "-", request.node.name)
    monkeypatch.setenv("CROPFLOW_MLFLOW__REGISTERED_MODEL", name)
    return name


def _params(tmp_path: Path, family: str, **kw: object) -> TrainParams:
    base: dict[str, object] = {
        "training_set": "memory://synthetic",
        "model": TINY[family],
        "epochs": 3,
        "batch_size": 8,
        "lr": 5e-3,
        "checkpoint_dir": tmp_path / "ckpt",
    }
    if kw.pop("refit_auto", False) is False:
        base["refit"] = "never"
    base.update(kw)
    return TrainParams.model_validate(base)


def _in_memory_model(params: TrainParams, data: TrainingData, refit: bool = False) -> CropflowModel:
    """The trained weights straight from the run's checkpoints (no MLflow involved): the best
    epoch's, or with ``refit`` the last epoch of the refit on train + val."""
    model = build_model(params.model, data.contract())
    assert params.checkpoint_dir is not None
    if refit:
        resolved = params.for_training_size(len(data.split("train")))
        key = resolved.for_val_units(val_units(data)).run_key()  # as train() resolves them
        store = CheckpointStore(params.checkpoint_dir / "refit", f"{key}-refit")
        last = store.latest()
        assert last is not None
        model.load_state_dict(last.model)
    else:
        model.load_state_dict(torch.load(params.checkpoint_dir / "best.pt", weights_only=True))
    return model.eval()


@pytest.mark.parametrize(
    ("family", "kind", "train_size", "tile"),
    [("ltae", "pixel", None, None), ("utae", "patch", 8, 16)],
)
def test_train_register_load_by_alias_round_trip(
    tmp_path: Path,
    registered_name: str,
    family: str,
    kind: str,
    train_size: int | None,
    tile: int | None,
) -> None:
    data = synthetic_training_data(
        kind,  # type: ignore[arg-type]
        sizes=(32, 12, 12) if kind == "patch" else (64, 24, 24),
        size=train_size or 8,
    )
    params = _params(tmp_path, family, refit_auto=True)
    result = train(params, data=data)
    assert result.status == "finished" and result.model_uri
    # refit="auto": the small pixel set is refit on train + val, the patch set is not
    assert (result.refit_epochs is not None) == (kind == "pixel")
    reg = register_run(result.run_id, data=data)
    assert (reg.alias, reg.version, reg.reason) == (CHAMPION, "1", "no champion yet")

    loaded = load_model(CHAMPION)
    assert (loaded.version, loaded.run_id, loaded.name) == ("1", result.run_id, registered_name)
    assert loaded.class_map.names == data.class_map.names
    assert loaded.contract == data.contract()

    # a batch size (and tile size) other than training's
    rng = np.random.default_rng(5)
    b, t, c = 3, data.n_time or 1, len(data.bands)
    shape = (b, t, c, tile, tile) if tile else (b, t, c)
    raw = (rng.normal(size=shape) * 2 + 0.5).astype(np.float32)
    doy = torch.tensor([[20 + 15 * i for i in range(t)]] * b)
    norm = Normaliser(data.bands, data.normalisation)
    batch = Batch(
        x=norm(torch.from_numpy(raw)), dates=doy, pad_mask=torch.zeros(b, t, dtype=torch.bool)
    )
    with torch.no_grad():
        want = _in_memory_model(params, data, refit=result.refit_epochs is not None)(batch).logits
        got = loaded.model(batch).logits
    assert tuple(got.shape) == ((b, 3, tile, tile) if tile else (b, 3))
    torch.testing.assert_close(got, want, rtol=0, atol=0)

    # the same model through MLflow's own pyfunc loader (models from code, nothing unpickled)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{registered_name}@{CHAMPION}")
    pad = np.zeros((b, t), dtype=bool)
    probs = pyfunc.predict({"x": raw, "dates": doy.numpy(), "pad_mask": pad})
    # probabilities are calibrated: the logits over the temperature fitted on val
    temperature = float(loaded.model.temperature)
    assert temperature == pytest.approx(result.calibration["temperature"], rel=1e-6)
    calibrated = torch.softmax(want / temperature, dim=1).numpy()
    np.testing.assert_allclose(probs, calibrated, rtol=1e-5, atol=1e-6)


def test_a_refit_is_judged_by_its_selection(tmp_path: Path, registered_name: str) -> None:
    """The logged model is the refit on train + val; val scores, the temperature and the
    champion comparison are those of the model selected on val (saved with the run)."""
    data = synthetic_training_data("pixel", sizes=(96, 48, 24), separation=1.0, noise=0.8)
    params = _params(tmp_path / "a", "ltae", epochs=6, refit="always")
    result = train(params, data=data)
    assert result.refit_epochs == result.best_epoch  # given epochs: stopped at the best one
    assert set(result.selection_test) == set(result.test)
    assert result.val["macro_f1"] == pytest.approx(result.best_score)
    report = TrainOutcome(training=result).to_markdown()
    assert f"refit on train + val for {result.refit_epochs} epochs" in report

    reg = register_run(result.run_id, data=data)
    selection, refit = _in_memory_model(params, data), _in_memory_model(params, data, refit=True)
    logged = load_model(CHAMPION).model
    weights = zip(logged.state_dict().items(), refit.state_dict().items(), strict=True)
    for (name, got), (_, want) in weights:
        if name != "temperature":
            torch.testing.assert_close(got, want, rtol=0, atol=0)  # the logged model: the refit
    assert any(
        not torch.equal(a, b)
        for a, b in zip(selection.state_dict().values(), refit.state_dict().values(), strict=True)
    )
    # the temperature fitted on val for the selection, carried over to the refit
    assert float(logged.temperature) == pytest.approx(result.calibration["temperature"], rel=1e-6)
    # the registry scored the selection model on val, not the refit (which trained on val)
    val = data.split("val")
    scored = evaluate_split(selection, val, "val", batch_size=64, device=torch.device("cpu"))
    assert reg.score == pytest.approx(scored.macro_f1)
    # a second refit run meets the first as champion: judged by its selection model too
    second = train(_params(tmp_path / "b", "ltae", epochs=6, refit="always", seed=4), data=data)
    reg2 = register_run(second.run_id, data=data)
    assert reg2.champion_score == pytest.approx(reg.score)
    assert reg2.score == pytest.approx(second.val["macro_f1"])


def _val_score(version: str, name: str, data: TrainingData) -> float:
    model = load_model(f"models:/{name}/{version}").model
    ev = evaluate_split(
        model,
        data.with_bands(model.contract.bands).split("val"),
        "val",
        batch_size=64,
        device=torch.device("cpu"),
    )
    return ev.macro_f1


def test_champion_challenger(tmp_path: Path, registered_name: str) -> None:
    data = synthetic_training_data("pixel", sizes=(96, 48, 24), separation=1.0, noise=0.8)
    # A: briefly trained -> champion (the first model); no refit: each model is judged by
    # its own val predictions here (refit models: test_a_refit_is_judged_by_its_selection)
    a = train(_params(tmp_path / "a", "ltae", epochs=3, lr=5e-3), data=data)
    reg_a = register_run(a.run_id, data=data)
    assert reg_a.alias == CHAMPION

    # B: practically untrained -> worse -> challenger; the champion stays
    b = train(_params(tmp_path / "b", "ltae", epochs=1, lr=1e-7, seed=3), data=data)
    reg_b = register_run(b.run_id, data=data)
    assert reg_b.score < reg_a.score
    assert reg_b.alias == CHALLENGER and reg_b.champion_version == "1"
    assert reg_b.champion_score == pytest.approx(reg_a.score)

    # C: trained longer, on a training set with another validation split -> champion;
    # the champion's score is its score on C's validation split, recorded on C's version
    data_c = synthetic_training_data(
        "pixel", sizes=(96, 48, 24), separation=1.0, noise=0.8, seed=11
    )
    c = train(_params(tmp_path / "c", "ltae", epochs=8, lr=1e-2), data=data_c)
    reg_c = register_run(c.run_id, data=data_c)
    assert reg_c.alias == CHAMPION and reg_c.score > reg_c.champion_score  # type: ignore[operator]
    assert reg_c.comparison is not None and reg_c.comparison.p_better >= 0.9
    assert reg_c.reason.startswith("beats champion v1") and "paired resamples" in reg_c.reason
    assert reg_c.champion_score == pytest.approx(_val_score("1", registered_name, data_c))
    assert reg_c.champion_score != pytest.approx(reg_a.score)  # another split, another score

    client = MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)
    assert str(client.get_model_version_by_alias(registered_name, CHAMPION).version) == "3"
    assert str(client.get_model_version_by_alias(registered_name, CHALLENGER).version) == "2"
    tags = client.get_model_version(registered_name, "3").tags
    assert float(tags["cropflow.val_macro_f1"]) == pytest.approx(reg_c.score, abs=1e-6)
    assert float(tags["cropflow.promotion_p_better"]) >= 0.9
    assert float(tags["cropflow.champion_val_macro_f1"]) == pytest.approx(
        reg_c.champion_score, abs=1e-6
    )
    run_metrics = client.get_run(c.run_id).data.metrics
    assert run_metrics["registry_champion_val_macro_f1"] == pytest.approx(reg_c.champion_score)
    assert load_model(CHAMPION).run_id == c.run_id

    # Described in the MLflow UI: the model, and each version's decision, data and metrics.
    assert "`@champion`" in (client.get_registered_model(registered_name).description or "")
    described = {v: client.get_model_version(registered_name, v).description or "" for v in "23"}
    assert described["2"].startswith(f"**challenger**: {reg_b.reason}.")
    assert described["3"].startswith(f"**champion**: {reg_c.reason}.")
    assert f"Validation macro_f1 {reg_c.score:.4f}" in described["3"]
    assert "- Model: ltae" in described["3"] and f"`{c.run_id}`" in described["3"]
    assert f"{len(data_c.splits['val'])} val" in described["3"], described["3"]


def test_champion_on_other_classes_is_not_comparable(tmp_path: Path) -> None:
    data = synthetic_training_data("pixel", sizes=(32, 12, 12))
    first = train(_params(tmp_path / "a", "ltae", epochs=1), data=data)
    assert register_run(first.run_id, data=data).alias == CHAMPION
    other = synthetic_training_data("pixel", sizes=(32, 12, 12), classes=("rice", "soy", "urban"))
    second = train(_params(tmp_path / "b", "ltae", epochs=1), data=other)
    reg = register_run(second.run_id, data=other)
    assert reg.alias == CHALLENGER and reg.champion_score is None
    assert "not comparable" in reg.reason and "rice" in reg.reason


def test_unknown_alias_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="train and register a model first"):
        load_model(CHAMPION)


def test_unfinished_run_cannot_be_registered(tmp_path: Path) -> None:
    data = synthetic_training_data("pixel", sizes=(32, 12, 12))
    paused = train(_params(tmp_path, "ltae", epochs=3, max_epochs=1), data=data)
    assert paused.status == "paused"
    with pytest.raises(Exception, match="no logged model"):
        register_run(paused.run_id, data=data)


def test_split_arrays_shapes_roundtrip() -> None:
    """SplitArrays keeps field masks through band selection (used by field models)."""
    data = synthetic_training_data("field", sizes=(4, 2, 2), bands=("red", "nir", "blue"))
    sub = data.with_bands(["blue", "red"])
    s: SplitArrays = sub.splits["train"]
    assert s.x.shape[2] == 2 and s.field_mask is not None
    np.testing.assert_array_equal(s.x[:, :, 0], data.splits["train"].x[:, :, 2])
