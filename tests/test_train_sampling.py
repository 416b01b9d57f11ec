"""Active batch selection: per-sample losses, loss and RHO-Loss selection, the holdout model,
and training with each strategy (resumable, tracked in MLflow).

Real tiny models on synthetic data with known label noise; MLflow on a SQLite store.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient

from cropflow.classes import IGNORE_INDEX
from cropflow.train import TrainParams, train
from cropflow.train.augment import Tensors
from cropflow.train.data import TrainingData
from cropflow.train.engine import date_kind_of, irreducible_losses, logits_fn
from cropflow.train.sampling import per_sample_loss, score_batch, select_top
from cropflow.train.synthetic import synthetic_training_data
from models.base import CropflowModel, build_model

TINY_TEMPCNN = {"name": "tempcnn", "conv_widths": [8], "hidden_size": 16, "dropout": 0.0}


pytestmark = pytest.mark.usefixtures("test_mlflow")


def _params(tmp_path: Path, **kw: object) -> TrainParams:
    base: dict[str, object] = {
        "training_set": "memory://synthetic",
        "model": TINY_TEMPCNN,
        "epochs": 4,
        "batch_size": 16,
        "lr": 3e-3,
        "augment": {"date_dropout": 0.0, "noise_std": 0.0},
        "checkpoint_dir": tmp_path / "ckpt",
        "register_model": False,
    }
    base.update(kw)
    return TrainParams.model_validate(base)


class Recorder:
    """Keeps every epoch's metrics and the model (trained in place: the best weights at the end)."""

    def __init__(self) -> None:
        self.history: list[dict[str, float]] = []
        self.model: CropflowModel | None = None

    def __call__(self, epoch: int, metrics: dict[str, float], model: CropflowModel) -> None:
        self.history.append(dict(metrics))
        self.model = model


def _noisy(data: TrainingData, share: float, seed: int = 1) -> tuple[TrainingData, np.ndarray]:
    """``data`` with ``share`` of the training labels moved to another class; the moved mask."""
    rng = np.random.default_rng(seed)
    tr = data.split("train")
    k = len(data.class_map.names)
    flipped = rng.random(len(tr)) < share
    y = tr.y.copy()
    y[flipped] = (y[flipped] + rng.integers(1, k, int(flipped.sum()))) % k
    train_split = dataclasses.replace(tr, y=y)
    return dataclasses.replace(data, splits={**data.splits, "train": train_split}), flipped


# ---------------------------------------------------------------------------------------------
# Pure pieces
# ---------------------------------------------------------------------------------------------


def test_per_sample_loss_is_each_samples_cross_entropy_over_its_labelled_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g)
    target = torch.tensor([0, 1, 2, 1, IGNORE_INDEX])
    got = per_sample_loss(logits, target)
    want = F.cross_entropy(logits[:4], target[:4], reduction="none")
    assert torch.allclose(got[:4], want) and got[4] == -math.inf

    logits4 = torch.randn(3, 4, 2, 2, generator=g)
    t4 = torch.randint(0, 4, (3, 2, 2), generator=g)
    t4[0, 0, 0] = IGNORE_INDEX
    t4[2] = IGNORE_INDEX
    got4 = per_sample_loss(logits4, t4)
    ce = F.cross_entropy(logits4, torch.where(t4 == IGNORE_INDEX, 0, t4), reduction="none")
    assert float(got4[0]) == pytest.approx(float(ce[0].flatten()[1:].mean()), rel=1e-6)
    assert float(got4[1]) == pytest.approx(float(ce[1].mean()), rel=1e-6)
    assert got4[2] == -math.inf


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=40),
    k=st.integers(1, 50),
)
def test_select_top_takes_the_k_highest_distinct_positions(scores: list[float], k: int) -> None:
    s = torch.tensor(scores)
    pos = select_top(s, k)
    assert pos.numel() == min(k, len(scores)) == len(set(pos.tolist()))
    chosen = set(pos.tolist())
    rest = [i for i in range(len(scores)) if i not in chosen]
    if rest:
        assert bool(s[pos].min() >= s[rest].max())


def test_rho_loss_selects_high_reducible_loss_samples_on_a_constructed_batch() -> None:
    """Three kinds of candidates, four of each: learnt (low loss, low irreducible loss), noisy
    (high loss under both models) and learnable-not-learnt (high loss, low irreducible loss).
    Loss selection spends the batch on the noisy ones; RHO-Loss picks the learnable ones."""
    strong, weak = 6.0, 0.1
    rows, targets, irr, kinds = [], [], [], []
    for kind in ("learnt", "noisy", "learnable"):
        for i in range(4):
            y = i % 3
            logit = torch.zeros(3)
            if kind == "learnt":
                logit[y] = strong
            else:  # noisy: confidently another class; learnable: undecided, wrong-ish
                logit[(y + 1) % 3] = strong + 1.0 if kind == "noisy" else 1.0
            rows.append(logit)
            targets.append(y)
            irr.append(weak if kind != "noisy" else strong)
            kinds.append(kind)
    logits = torch.stack(rows)
    t = Tensors(
        x=torch.zeros(12, 2, 1),
        y=torch.tensor(targets),
        dates=torch.zeros(12, 2, dtype=torch.long),
        pad_mask=torch.zeros(12, 2, dtype=torch.bool),
    )

    def logits_of(_: Tensors) -> torch.Tensor:
        return logits

    rho, losses = score_batch(logits_of, t, torch.tensor(irr))
    by_rho = {kinds[i] for i in select_top(rho, 4).tolist()}
    loss_only, _ = score_batch(logits_of, t, None)
    by_loss = {kinds[i] for i in select_top(loss_only, 4).tolist()}
    assert by_rho == {"learnable"}
    assert by_loss == {"noisy"}
    assert torch.equal(loss_only, losses)


# ---------------------------------------------------------------------------------------------
# With real models
# ---------------------------------------------------------------------------------------------


def test_holdout_model_gives_mislabelled_samples_the_high_irreducible_loss(tmp_path: Path) -> None:
    data, flipped = _noisy(synthetic_training_data("pixel", sizes=(200, 96, 16), n_time=6), 0.2)
    params = _params(tmp_path, sampling={"strategy": "rho_loss", "holdout_epochs": 15})
    torch.manual_seed(0)
    model = build_model(params.model, data.contract())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    irr = irreducible_losses(model, data, params, torch.device("cpu"))
    assert irr.shape == (200,) and bool(torch.isfinite(irr).all())
    # the template and the global RNG are untouched: training proceeds as without selection
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng_before, torch.get_rng_state())
    noisy, clean = float(irr[flipped].mean()), float(irr[~flipped].mean())
    assert noisy > 3.0 * clean, (noisy, clean)
    # the same seed gives the same losses (resumed runs select the same samples)
    again = irreducible_losses(model, data, params, torch.device("cpu"))
    assert torch.equal(irr, again)


def test_rho_loss_training_skips_mislabelled_samples_that_loss_selection_chases(
    tmp_path: Path,
) -> None:
    """After training, rank the whole training set as a step would: the top quarter by loss is
    mostly mislabelled samples, the top quarter by reducible loss far less so."""
    data, flipped = _noisy(synthetic_training_data("pixel", sizes=(240, 96, 32), n_time=6), 0.2)
    params = _params(tmp_path, epochs=6, sampling={"strategy": "rho_loss"})
    rec = Recorder()
    train(params, data=data, on_epoch_end=rec)
    model = rec.model
    assert model is not None
    irr = irreducible_losses(
        build_model(params.model, data.contract()), data, params, torch.device("cpu")
    )
    tr = data.split("train")
    t = Tensors(
        x=(torch.from_numpy(tr.x) - torch.tensor([data.normalisation[b].mean for b in data.bands]))
        / torch.tensor([data.normalisation[b].std for b in data.bands]),
        y=torch.from_numpy(tr.y),
        dates=torch.from_numpy(tr.dates),
        pad_mask=torch.from_numpy(tr.pad_mask),
    )
    model.eval()
    logits_of = logits_fn(model, date_kind_of(model), torch.device("cpu"), False)
    rho, losses = score_batch(logits_of, t, irr)
    top = len(tr) // 4
    noisy_by_loss = float(flipped[select_top(losses, top).numpy()].mean())
    noisy_by_rho = float(flipped[select_top(rho, top).numpy()].mean())
    assert noisy_by_loss > 0.5
    assert noisy_by_rho < noisy_by_loss - 0.2, (noisy_by_rho, noisy_by_loss)


@pytest.mark.parametrize("strategy", ["loss", "rho_loss"])
def test_training_with_selection_is_tracked_and_resumes_bit_for_bit(
    tmp_path: Path, strategy: str
) -> None:
    data = synthetic_training_data("pixel", sizes=(80, 24, 24), n_time=6)
    sampling = {"strategy": strategy, "candidates": 3, "holdout_epochs": 3}
    rec = Recorder()
    whole = train(_params(tmp_path / "a", sampling=sampling), data=data, on_epoch_end=rec)
    hist = rec.history
    assert len(hist) == 4
    for h in hist:
        if strategy == "loss":  # each step trained on the candidates with the highest loss
            assert h["sampling_selected_loss"] > h["sampling_candidate_loss"]
        else:  # reducible loss: ranked by loss minus irreducible loss, not by loss
            assert math.isfinite(h["sampling_selected_loss"])
        assert ("sampling_irreducible_loss" in h) == (strategy == "rho_loss")
    client = MlflowClient(tracking_uri=whole.tracking_uri)
    run = client.get_run(whole.run_id)
    assert run.data.params["sampling.strategy"] == strategy
    assert run.data.params["sampling.candidates"] == "3"
    assert "sampling_selected_loss" in run.data.metrics

    class Crash(KeyboardInterrupt):
        pass

    seen = Recorder()

    def crash_after_epoch_2(epoch: int, metrics: dict[str, float], model: CropflowModel) -> None:
        seen(epoch, metrics, model)
        if epoch == 2:
            raise Crash

    p = _params(tmp_path / "b", sampling=sampling)
    with pytest.raises(Crash):
        train(p, data=data, on_epoch_end=crash_after_epoch_2)
    resumed = train(p, data=data, on_epoch_end=seen)
    assert resumed.resumed_from == 2
    assert seen.history == rec.history  # epochs 1-2, then 3-4 after the resume
    assert resumed.val == whole.val and resumed.best_score == whole.best_score


def test_uniform_training_is_unchanged_by_the_sampling_options(tmp_path: Path) -> None:
    """candidates and holdout_epochs do nothing under uniform sampling (the default)."""
    data = synthetic_training_data("pixel", sizes=(64, 16, 16), n_time=5)
    ra, rb = Recorder(), Recorder()
    train(_params(tmp_path / "a"), data=data, on_epoch_end=ra)
    train(
        _params(
            tmp_path / "b",
            sampling={"strategy": "uniform", "candidates": 8, "holdout_epochs": 2},
        ),
        data=data,
        on_epoch_end=rb,
    )
    assert ra.history == rb.history
    assert not any(k.startswith("sampling_") for k in ra.history[-1])


def test_selection_works_for_patch_models(tmp_path: Path) -> None:
    data = synthetic_training_data("patch", sizes=(48, 16, 16), n_time=4, size=8)
    params = _params(
        tmp_path,
        model={"name": "unet", "depth": 2, "base_width": 8},
        epochs=2,
        batch_size=8,
        sampling={"strategy": "rho_loss", "candidates": 2, "holdout_epochs": 2},
    )
    rec = Recorder()
    train(params, data=data, on_epoch_end=rec)
    assert len(rec.history) == 2
    for h in rec.history:
        assert math.isfinite(h["sampling_selected_loss"]) and math.isfinite(
            h["sampling_irreducible_loss"]
        )


def test_rho_loss_warns_when_the_holdout_model_sees_classes_too_rarely(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cropflow.train.training import RHO_MIN_VAL_PER_CLASS, holdout_warning

    small = synthetic_training_data("pixel", sizes=(60, 12, 12), n_time=5)  # ~4 per class
    big = synthetic_training_data("pixel", sizes=(60, 90, 12), n_time=5)  # ~30 per class
    rho = _params(tmp_path, sampling={"strategy": "rho_loss"}, epochs=1)
    assert holdout_warning(big, rho) is None
    assert holdout_warning(small, _params(tmp_path)) is None, "only rho_loss has a holdout"
    message = holdout_warning(small, rho)
    assert message is not None and f"fewer than {RHO_MIN_VAL_PER_CLASS}" in message
    assert "wheat (" in message and "larger val split" in message
    result = train(rho, data=small)
    assert "holdout model" in caplog.text
    tags = MlflowClient(tracking_uri=result.tracking_uri).get_run(result.run_id).data.tags
    assert "holdout model" in tags["cropflow.warning"]


def test_a_candidate_without_labels_is_picked_last_by_every_rule() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    t = Tensors(
        x=torch.zeros(3, 2, 1),
        y=torch.tensor([1, 0, IGNORE_INDEX]),  # the third has no label: loss -inf
        dates=torch.zeros(3, 2, dtype=torch.long),
        pad_mask=torch.zeros(3, 2, dtype=torch.bool),
    )

    def logits_of(batch: Tensors) -> torch.Tensor:
        return logits

    irreducible = torch.tensor([0.1, 0.1, -math.inf])  # the holdout cannot score it either
    for irr in (None, irreducible):
        scores, _ = score_batch(logits_of, t, irr)
        assert select_top(scores, 3).tolist()[-1] == 2, irr
        assert set(select_top(scores, 2).tolist()) == {0, 1}


def test_the_run_key_keeps_earlier_checkpoints_and_tells_selections_apart(tmp_path: Path) -> None:
    base = _params(tmp_path)
    assert _params(tmp_path, sampling={"strategy": "uniform"}).run_key() == base.run_key()
    assert _params(tmp_path, calibrate=False).run_key() == base.run_key()
    assert _params(tmp_path, sampling={"strategy": "rho_loss"}).run_key() != base.run_key()
    assert "sampling" not in json.dumps(base.model_dump(mode="json", exclude={"sampling"}))
