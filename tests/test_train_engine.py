"""The training engine: losses, augmentation, resume, NaN guard and input checks.

Runs against a real MLflow SQLite store in a temporary folder; models and data are tiny.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow import MlflowClient
from train_helpers import interrupt_then_resume

from cropflow.classes import IGNORE_INDEX
from cropflow.errors import ContractError, TrainingError
from cropflow.train import TrainParams, train
from cropflow.train.augment import Tensors, augment
from cropflow.train.data import SplitArrays
from cropflow.train.engine import classification_loss, lr_factor
from cropflow.train.params import AUTO_EPOCHS, AugmentParams, TrainOptions
from cropflow.train.synthetic import synthetic_training_data
from models.base import CropflowModel

TINY_TEMPCNN = {"name": "tempcnn", "conv_widths": [8], "hidden_size": 16, "dropout": 0.2}


pytestmark = pytest.mark.usefixtures("test_mlflow")


def _params(tmp_path: Path, **kw: object) -> TrainParams:
    base: dict[str, object] = {
        "training_set": "memory://synthetic",
        "model": TINY_TEMPCNN,
        "epochs": 4,
        "batch_size": 16,
        "lr": 3e-3,
        "augment": {"date_dropout": 0.2, "noise_std": 0.05},
        "checkpoint_dir": tmp_path / "ckpt",
        "register_model": False,
    }
    base.update(kw)
    return TrainParams.model_validate(base)


# ---------------------------------------------------------------------------------------------
# Losses and schedule
# ---------------------------------------------------------------------------------------------


def test_ce_and_focal_gamma0_equal_weighted_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (6, 4, 4), generator=g)
    target[:, 0] = IGNORE_INDEX
    weight = torch.tensor([0.5, 2.0, 1.0])
    want = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)
    ce = classification_loss(logits, target, weight, kind="ce", gamma=2.0, smoothing=0.0)
    focal0 = classification_loss(logits, target, weight, kind="focal", gamma=0.0, smoothing=0.0)
    assert float(ce) == pytest.approx(float(want), rel=1e-6)
    assert float(focal0) == pytest.approx(float(want), rel=1e-5)


def test_focal_discounts_easy_samples_and_all_ignored_gives_zero() -> None:
    target = torch.tensor([0, 1])
    easy = torch.tensor([[6.0, 0.0], [0.0, 6.0]])
    hard = torch.tensor([[0.2, 0.0], [0.0, 0.2]])
    ratio = {
        name: float(classification_loss(x, target, None, kind="focal", gamma=2.0, smoothing=0.0))
        / float(F.cross_entropy(x, target))
        for name, x in (("easy", easy), ("hard", hard))
    }
    assert ratio["easy"] < 0.01 < 0.2 < ratio["hard"] < 1.0
    ignored = torch.full((2,), IGNORE_INDEX)
    loss = classification_loss(hard, ignored, None, kind="focal", gamma=2.0, smoothing=0.1)
    assert float(loss) == 0.0


def test_label_smoothing_raises_the_loss_of_confident_right_answers() -> None:
    logits = torch.tensor([[8.0, 0.0, 0.0]])
    target = torch.tensor([0])
    plain = classification_loss(logits, target, None, kind="focal", gamma=0.0, smoothing=0.0)
    smooth = classification_loss(logits, target, None, kind="focal", gamma=0.0, smoothing=0.2)
    assert float(smooth) > float(plain) * 10


@pytest.mark.parametrize("schedule", ["constant", "cosine", "onecycle", "step"])
def test_lr_schedule_bounds(schedule: str, tmp_path: Path) -> None:
    p = _params(
        tmp_path, schedule=schedule, epochs=10, warmup_epochs=2 if schedule == "cosine" else 0
    )
    factors = [lr_factor(p, s, 5) for s in range(50)]
    assert max(factors) == pytest.approx(1.0, abs=0.02)
    assert all(0 < f <= 1.0 + 1e-9 for f in factors)
    if schedule != "constant":
        assert factors[-1] < 0.1


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------


def test_spatial_augmentation_moves_inputs_labels_and_masks_together() -> None:
    b, t, c, s = 16, 3, 2, 6
    pos = torch.arange(s * s).view(s, s)
    x = pos.float().expand(b, t, c, s, s).clone()
    y = pos.expand(b, s, s).clone()
    fm = (pos % 3 == 0).expand(b, s, s).clone()
    batch = Tensors(
        x=x,
        y=y,
        dates=torch.zeros(b, t, dtype=torch.long),
        pad_mask=torch.zeros(b, t, dtype=torch.bool),
        field_mask=fm,
    )
    out = augment(batch, AugmentParams(), torch.Generator().manual_seed(1), spatial=True)
    assert torch.equal(out.x[:, 0, 0].long(), out.y)
    assert torch.equal(out.field_mask, out.y % 3 == 0)  # type: ignore[arg-type]
    moved = [not torch.equal(out.y[i], y[i]) for i in range(b)]
    assert any(moved), "16 samples and none flipped or rotated"
    for i in range(b):  # a rigid motion: the same values, rearranged
        assert torch.equal(out.y[i].flatten().sort().values, pos.flatten())


def test_date_dropout_masks_and_zeroes_dates_but_keeps_one() -> None:
    b, t = 64, 5
    x = torch.ones(b, t, 2)
    pad = torch.zeros(b, t, dtype=torch.bool)
    pad[:, 1:] = torch.rand(b, t - 1, generator=torch.Generator().manual_seed(0)) < 0.5
    batch = Tensors(x=x, y=torch.zeros(b, dtype=torch.long), dates=torch.zeros(b, t), pad_mask=pad)
    params = AugmentParams(date_dropout=0.9)
    out = augment(batch, params, torch.Generator().manual_seed(2), spatial=False)
    dropped = out.pad_mask & ~pad
    assert bool(dropped.any())
    assert bool((~out.pad_mask).sum(dim=1).min() >= 1)
    assert bool((out.x[dropped] == 0).all()) and bool((out.x[~out.pad_mask] == 1).all())


# ---------------------------------------------------------------------------------------------
# Resume, NaN, bad input
# ---------------------------------------------------------------------------------------------


def _last_checkpoint(store_dir: Path) -> dict[str, object]:
    files = sorted(store_dir.glob("epoch-*.pt"))
    ckpt: dict[str, object] = torch.load(files[-1], map_location="cpu", weights_only=True)
    return ckpt


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path: Path) -> None:
    data = synthetic_training_data("pixel", sizes=(80, 24, 24), n_time=6)
    whole = train(_params(tmp_path / "a"), data=data)

    files: list[str] = []

    def checkpoints_at_the_stop(epoch: int, metrics: dict[str, float], model: object) -> None:
        files[:] = sorted(f.name for f in (tmp_path / "b" / "ckpt").glob("epoch-*.pt"))

    resumed = interrupt_then_resume(_params(tmp_path / "b"), data, seen=checkpoints_at_the_stop)
    ckpt = tmp_path / "b" / "ckpt"
    assert files == ["epoch-0001.pt", "epoch-0002.pt"], "the stop came right after epoch 2"

    assert resumed.resumed_from == 2
    assert (resumed.best_epoch, resumed.best_score) == (whole.best_epoch, whole.best_score)
    assert resumed.test == whole.test and resumed.val == whole.val
    a, b = _last_checkpoint(tmp_path / "a" / "ckpt"), _last_checkpoint(ckpt)
    wa, wb = a["model"], b["model"]
    assert isinstance(wa, dict) and isinstance(wb, dict) and wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert a["history"] == b["history"] and a["epoch"] == b["epoch"] == 4
    # the resumed training continued the interrupted MLflow run, with every epoch's metrics
    client = MlflowClient(tracking_uri=resumed.tracking_uri)
    run = client.get_run(resumed.run_id)
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(resumed.run_id, "val_macro_f1")]
    assert sorted(set(steps)) == [1, 2, 3, 4]


def test_pause_with_max_epochs_then_resume_continues_the_run(tmp_path: Path) -> None:
    data = synthetic_training_data("pixel", sizes=(48, 16, 16), n_time=5)
    paused = train(_params(tmp_path, epochs=3, max_epochs=1), data=data)
    assert paused.status == "paused" and paused.model_uri is None and paused.epochs_run == 1
    done = train(_params(tmp_path, epochs=3), data=data)
    assert done.status == "finished" and done.model_uri is not None
    assert done.resumed_from == 1 and done.run_id == paused.run_id and done.epochs_run == 3


def test_nan_loss_stops_with_training_error_and_keeps_last_good_checkpoint(
    tmp_path: Path,
) -> None:
    data = synthetic_training_data("pixel", sizes=(48, 16, 16), n_time=5)

    def poison_after_epoch_1(epoch: int, metrics: dict[str, float], model: CropflowModel) -> None:
        # the fault under test: weights go NaN (as after a diverging step) once epoch 1 is saved
        if epoch == 1:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))

    with pytest.raises(TrainingError) as err:
        train(_params(tmp_path), data=data, on_epoch_end=poison_after_epoch_1)
    msg = str(err.value)
    assert "loss became nan at epoch 2" in msg and "epoch-0001.pt" in msg
    ckpt = tmp_path / "ckpt"
    assert sorted(f.name for f in ckpt.glob("epoch-*.pt")) == ["epoch-0001.pt"]
    state = torch.load(ckpt / "epoch-0001.pt", weights_only=True)
    assert all(
        bool(torch.isfinite(v).all()) for v in state["model"].values() if v.is_floating_point()
    )


def test_empty_split_is_a_training_error(tmp_path: Path) -> None:
    data = synthetic_training_data("pixel", sizes=(32, 8, 8))
    val = data.splits["val"]
    data.splits["val"] = SplitArrays(
        x=val.x[:0], y=val.y[:0], dates=val.dates[:0], pad_mask=val.pad_mask[:0]
    )
    with pytest.raises(TrainingError, match=r"'val' split .* no labelled samples"):
        train(_params(tmp_path), data=data)
    unlabelled = synthetic_training_data("pixel", sizes=(32, 8, 8))
    unlabelled.splits["test"].y[:] = IGNORE_INDEX
    with pytest.raises(TrainingError, match="'test' split"):
        train(_params(tmp_path), data=unlabelled)


def test_band_and_class_mismatch_name_both_lists(tmp_path: Path) -> None:
    data = synthetic_training_data("pixel", sizes=(32, 8, 8), bands=("red", "nir"))
    with pytest.raises(ContractError) as err:
        train(_params(tmp_path, bands=["red", "swir16"]), data=data)
    assert "['red', 'swir16']" in str(err.value) and "['red', 'nir']" in str(err.value)
    with pytest.raises(ContractError) as err:
        train(_params(tmp_path, classes=["wheat", "rice"]), data=data)
    assert "['wheat', 'rice']" in str(err.value)
    assert "['wheat', 'maize', 'forest']" in str(err.value)


def test_band_selection_and_progress_bar(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from cropflow.train.progress import RichProgress

    data = synthetic_training_data("pixel", sizes=(32, 8, 8), bands=("blue", "red", "nir"))
    out = io.StringIO()
    with RichProgress(Console(file=out, width=120)) as bar:
        res = train(_params(tmp_path, bands=["nir", "red"], epochs=2), data=data, progress=bar)
    assert re.findall(r"epoch (\d): train_loss [\d.]+, val_loss", out.getvalue()) == ["1", "2"]
    client = MlflowClient(tracking_uri=res.tracking_uri)
    contract = client.download_artifacts(res.run_id, "contract.json", str(tmp_path))
    text = Path(contract).read_text()
    assert re.search(r'"bands":\s*\[\s*"nir",\s*"red"\s*\]', text)
    assert np.isfinite(res.best_score)


def test_dates_encoding() -> None:
    import pandas as pd

    from cropflow.train.data import days_since_epoch
    from cropflow.train.engine import encode_dates

    times = np.array(["2021-03-01", "2021-12-31", "2022-01-05"], dtype="datetime64[ns]")
    days = torch.from_numpy(days_since_epoch(times)).expand(2, 3)
    pad = torch.tensor([[False, False, False], [True, False, False]])
    doy = encode_dates(days, pad, "day_of_year")
    assert doy.tolist() == [list(pd.DatetimeIndex(times).dayofyear)] * 2 == [[60, 365, 5]] * 2
    since = encode_dates(days, pad, "days_since_reference")
    want = (pd.DatetimeIndex(times) - pd.Timestamp("2021-01-01")).days
    assert since.tolist() == [list(want)] * 2 == [[59, 364, 369]] * 2


def test_fresh_start_removes_only_checkpoint_files(tmp_path: Path) -> None:
    from cropflow.train.checkpoint import CheckpointStore

    (tmp_path / "epoch-0003.pt").write_bytes(b"x")
    (tmp_path / "best.pt").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "sub").mkdir()
    CheckpointStore(tmp_path, "key").reset()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "sub"]


# ---------------------------------------------------------------------------------------------
# Epochs that hold up on small training sets
# ---------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    n_train=st.integers(1, 200_000),
    batch=st.integers(1, 512),
    min_steps=st.integers(1, 20_000),
    patience=st.one_of(st.none(), st.integers(1, 50)),
)
def test_unset_epochs_reach_min_steps_and_scale_patience(
    n_train: int, batch: int, min_steps: int, patience: int | None
) -> None:
    options = TrainOptions.model_validate(
        {"batch_size": batch, "min_steps": min_steps, "early_stopping": {"patience": patience}}
    )
    resolved = options.for_training_size(n_train)
    steps_per_epoch = -(-n_train // batch)
    epochs = resolved.planned_epochs
    assert epochs >= AUTO_EPOCHS and epochs * steps_per_epoch >= min_steps
    assert epochs == AUTO_EPOCHS or (epochs - 1) * steps_per_epoch < min_steps  # no more
    if patience is None:
        assert resolved.early_stopping.patience is None
    else:
        got = resolved.early_stopping.patience
        assert got is not None and got >= patience
        assert got == -(-patience * epochs // AUTO_EPOCHS)  # the same share of the epochs


def test_given_epochs_are_kept_and_unresolved_epochs_are_refused() -> None:
    given_epochs = TrainOptions(epochs=4).for_training_size(10)
    assert given_epochs.planned_epochs == 4
    assert given_epochs.early_stopping.patience == TrainOptions().early_stopping.patience
    with pytest.raises(TrainingError, match="not resolved"):
        _ = TrainOptions().planned_epochs
    # 216 samples (the temporalCNN fixture) in batches of 64: 375 epochs of 4 steps
    assert TrainOptions().for_training_size(216).planned_epochs == 375


@settings(max_examples=50, deadline=None)
@given(
    n_train=st.integers(1, 50_000),
    n_val=st.integers(1, 20_000),
    batch=st.integers(1, 512),
    epochs=st.one_of(st.none(), st.integers(1, 400)),
    data=st.data(),
)
def test_a_refit_runs_the_best_epochs_share_of_its_schedule(
    n_train: int, n_val: int, batch: int, epochs: int | None, data: st.DataObject
) -> None:
    options = TrainOptions.model_validate({"batch_size": batch, "epochs": epochs})
    selection = options.for_training_size(n_train)
    best = data.draw(st.integers(1, selection.planned_epochs), label="best epoch")
    refit = options.for_refit(n_train, n_val, best)
    planned = refit.planned_epochs
    assert planned == options.for_training_size(n_train + n_val).planned_epochs
    assert refit.max_epochs is not None and 1 <= refit.max_epochs <= planned
    assert refit.early_stopping.patience is None  # val is in the training data
    # the same share of the schedule, to the nearest epoch (at least one epoch)
    share = abs(refit.max_epochs / planned - best / selection.planned_epochs)
    assert share <= 0.5 / planned + 1e-9 or refit.max_epochs == 1
    if epochs is not None:  # given epochs: the same schedule, stopped at the best epoch
        assert refit.max_epochs == best


def test_a_refit_of_a_small_set_takes_about_the_selections_steps() -> None:
    # the temporalCNN fixture: 216 train + 44 val series, batches of 64, min_steps 1500:
    # 375 epochs of 4 steps for the selection, 300 of 5 for the refit
    refit = TrainOptions().for_refit(216, 44, best_epoch=96)
    assert (refit.planned_epochs, refit.max_epochs) == (300, 77)
    assert abs(77 * 5 - 96 * 4) <= 5  # 385 steps against the selection's 384


def test_refit_auto_is_for_small_pixel_sets_only() -> None:
    auto = TrainOptions()
    assert auto.refits("pixel", 216) and auto.refits("pixel", 9_999)
    assert not auto.refits("pixel", 10_000)  # large: the val split's share is small
    assert not auto.refits("patch", 200) and not auto.refits("field", 200)
    rho = TrainOptions.model_validate({"sampling": {"strategy": "rho_loss"}})
    assert not rho.refits("pixel", 216)  # its holdout model learns from val
    assert TrainOptions(refit="always").refits("patch", 10**6)
    assert not TrainOptions(refit="never").refits("pixel", 10)


def test_splits_concatenate_with_the_shorter_series_padded() -> None:
    rng = np.random.default_rng(0)

    def split(n: int, t: int, first_unit: int) -> SplitArrays:
        return SplitArrays(
            x=rng.normal(size=(n, t, 2)).astype(np.float32),
            y=rng.integers(0, 3, n),
            dates=np.tile(np.arange(1, t + 1) * 10, (n, 1)),
            pad_mask=np.zeros((n, t), bool),
            units=np.arange(first_unit, first_unit + n),
            unit_kind="field",
        )

    a, b = split(5, 6, 0), split(3, 4, 0)
    both = a.concat(b)
    assert both.x.shape == (8, 6, 2) and both.dates.shape == both.pad_mask.shape == (8, 6)
    np.testing.assert_array_equal(both.x[:5], a.x)
    np.testing.assert_array_equal(both.x[5:, :4], b.x)
    assert both.pad_mask[5:, 4:].all() and not both.pad_mask[5:, :4].any()
    assert not both.pad_mask[:5].any()
    np.testing.assert_array_equal(both.y, np.concatenate([a.y, b.y]))
    assert both.units is not None and len(set(both.units.tolist())) == 8  # no unit shared
    assert both.unit_kind == "field"
    data = synthetic_training_data("pixel", sizes=(20, 7, 5))
    merged = data.with_val_in_train()
    assert len(merged.split("train")) == 27 and len(merged.split("val")) == 7


def test_a_small_val_split_trains_with_a_warning(tmp_path: Path) -> None:
    """16 val samples (< 30 units): trained anyway, the run tagged with the warning; 40 do not."""
    small = synthetic_training_data("pixel", sizes=(48, 16, 16), n_time=5)
    result = train(_params(tmp_path / "a", epochs=1), data=small)
    tags = MlflowClient(tracking_uri=result.tracking_uri).get_run(result.run_id).data.tags
    assert "16 samples (< 30)" in tags["cropflow.warning"]
    assert "whole schedule" in tags["cropflow.warning"]
    assert result.status == "finished"
    large = synthetic_training_data("pixel", sizes=(48, 40, 16), n_time=5)
    result = train(_params(tmp_path / "b", epochs=1), data=large)
    tags = MlflowClient(tracking_uri=result.tracking_uri).get_run(result.run_id).data.tags
    assert "cropflow.warning" not in tags


def test_a_small_val_split_selects_nothing_the_whole_schedule_is_kept(tmp_path: Path) -> None:
    """Under min_val_units no epoch is picked on val: the run trains every planned epoch and
    keeps the last, even with a patience of 1 (a large val split would stop it and keep its
    best)."""
    small = synthetic_training_data("pixel", sizes=(48, 16, 16), n_time=5)
    params = _params(tmp_path / "a", epochs=8, lr=0.3, early_stopping={"patience": 1})
    result = train(params, data=small)
    assert (result.epochs_run, result.best_epoch) == (8, 8)
    assert result.status == "finished"
    # the same split counted as large enough: early stopping and selection as usual
    params = _params(
        tmp_path / "b",
        epochs=8,
        lr=0.3,
        early_stopping={"patience": 1, "min_val_units": 16},
    )
    result = train(params, data=small)
    assert result.epochs_run < 8 or result.best_epoch < 8
    # and by choice, on the small split too
    opts = _params(tmp_path / "c", early_stopping={"patience": 3, "small_val": "early_stop"})
    assert opts.for_val_units(2) == opts
    resolved = _params(tmp_path / "c", early_stopping={"patience": 3}).for_val_units(29)
    assert resolved.early_stopping.patience is None and resolved.early_stopping.keep == "last"
