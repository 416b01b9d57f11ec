"""Weight averaging (issue 13): an exponential moving average of the weights over a horizon in
epochs is what training validates, keeps and resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from train_helpers import interrupt_then_resume

from cropflow.train import TrainParams, train
from cropflow.train.engine import weight_average
from cropflow.train.synthetic import synthetic_training_data

pytestmark = pytest.mark.usefixtures("test_mlflow")

TINY = {"name": "tempcnn", "conv_widths": [8], "hidden_size": 16, "dropout": 0.2}


def _params(tmp_path: Path, **kw: object) -> TrainParams:
    base: dict[str, object] = {
        "training_set": "memory://synthetic",
        "model": TINY,
        "epochs": 4,
        "batch_size": 16,
        "lr": 3e-3,
        "average_epochs": 1.0,
        "checkpoint_dir": tmp_path / "ckpt",
        "register_model": False,
    }
    base.update(kw)
    return TrainParams.model_validate(base)


def test_the_average_follows_the_weights_with_a_decay_set_in_epochs() -> None:
    """decay = 1 - 1 / (epochs x steps per epoch): after the first update (a copy) each update
    moves the average by 1 / horizon of the way to the weights."""
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    average = weight_average(layer, 2.0, 5)  # type: ignore[arg-type]
    assert average is not None and weight_average(layer, None, 5) is None  # type: ignore[arg-type]
    average.update_parameters(layer)
    with torch.no_grad():
        layer.weight.fill_(11.0)
    average.update_parameters(layer)
    averaged = average.module.weight
    assert isinstance(averaged, torch.Tensor)
    assert torch.allclose(averaged, torch.full((1, 2), 1.0 + 10.0 / 10.0))


def test_the_kept_model_is_the_average_and_the_run_key_says_so(tmp_path: Path) -> None:
    data = synthetic_training_data("pixel", sizes=(80, 24, 24), n_time=6)
    raw_params = _params(tmp_path / "raw", average_epochs=None)
    assert _params(tmp_path).run_key() != raw_params.run_key()
    result = train(_params(tmp_path / "avg"), data=data)
    ckpt = torch.load(sorted((tmp_path / "avg" / "ckpt").glob("epoch-*.pt"))[-1], weights_only=True)
    averaged, raw = ckpt["averaged"], ckpt["model"]
    assert averaged is not None and averaged.keys() == raw.keys()
    moved = [k for k in raw if raw[k].is_floating_point() and not torch.equal(raw[k], averaged[k])]
    assert moved, "the average is not the last weights"
    best = torch.load(tmp_path / "avg" / "ckpt" / "best.pt", weights_only=True)
    if result.best_epoch == ckpt["epoch"]:
        for k in averaged:
            assert torch.equal(best[k], averaged[k]), k
    assert result.test["macro_f1"] > 0.5


def test_an_averaged_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    data = synthetic_training_data("pixel", sizes=(80, 24, 24), n_time=6)
    whole = train(_params(tmp_path / "a"), data=data)

    p = _params(tmp_path / "b")
    resumed = interrupt_then_resume(p, data)
    assert resumed.resumed_from == 2
    assert resumed.val == whole.val and resumed.test == whole.test
    a = torch.load(sorted((tmp_path / "a" / "ckpt").glob("epoch-*.pt"))[-1], weights_only=True)
    b = torch.load(sorted((tmp_path / "b" / "ckpt").glob("epoch-*.pt"))[-1], weights_only=True)
    for k in a["averaged"]:
        assert torch.equal(a["averaged"][k], b["averaged"][k]), k
