"""The training loop: one engine for every model family.

:func:`fit` trains a :class:`~models.base.CropflowModel` on :class:`TrainingData` with
per-epoch checkpoints (bit-for-bit resumable), early stopping on a validation metric and a
NaN guard. :func:`predict_split` and :func:`evaluate_split` run a model over a split.
Nothing here knows MLflow: callers log through ``on_epoch_end``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, cast

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cropflow.classes import IGNORE_INDEX
from cropflow.errors import ConfigError, TrainingError
from cropflow.train import sampling as sel
from cropflow.train.augment import Tensors, augment
from cropflow.train.checkpoint import CheckpointStore, RngState, TrainState
from cropflow.train.data import (
    Normaliser,
    SplitArrays,
    TrainingData,
    batch_indices,
    field_extents,
    sized_batches,
    take,
)
from cropflow.train.metrics import Evaluation, evaluate_labels
from cropflow.train.params import TrainParams
from models.base import Batch, CropflowModel, ModelOutput

DateKind = Literal["day_of_year", "days_since_reference"]


class ProgressReporter(Protocol):
    """What the engine tells a progress display (the CLI's rich bar)."""

    def start_epoch(self, epoch: int, n_epochs: int, n_batches: int) -> None: ...
    def advance(self, loss: float) -> None: ...
    def end_epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


#: Called after each epoch's checkpoint is written: (epoch, metrics, model).
EpochCallback = Callable[[int, dict[str, float], CropflowModel], None]


@dataclass
class FitResult:
    """How a :func:`fit` call ended. ``model`` holds the best epoch's weights (finished runs)."""

    model: CropflowModel
    status: Literal["finished", "early_stopped", "paused"]
    epochs_run: int
    best_epoch: int
    best_score: float
    monitor: str
    history: list[dict[str, float]]
    checkpoint_dir: Path
    mlflow_run_id: str | None
    resumed_from: int | None


# ---------------------------------------------------------------------------------------------
# Devices, dates, batches
# ---------------------------------------------------------------------------------------------


def pick_device(choice: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU; ``cuda`` without a GPU is refused."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                "device='cuda' but torch sees no CUDA device",
                hint="use device='auto' or 'cpu', or install a CUDA build of torch",
            )
        return torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on CUDA when ``amp``; nothing on CPU."""
    if device.type == "cuda" and amp:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def date_kind_of(model: CropflowModel) -> DateKind:
    """What ``Batch.dates`` holds for this model (families that ignore dates: day of year)."""
    kind = getattr(model.config, "dates", "day_of_year")
    return "days_since_reference" if kind == "days_since_reference" else "day_of_year"


def encode_dates(days: Tensor, pad_mask: Tensor | None, kind: DateKind) -> Tensor:
    """Model dates ``[B, T]`` from days since 1970-01-01 (training and prediction both call
    this, so that a model sees the same dates in both).

    ``day_of_year``: 1..366. ``days_since_reference``: days since 1 January of the year of
    the series' first time step (padded or not), so a season crossing new year keeps
    counting. ``pad_mask`` does not change the encoding (padded steps are masked anyway).
    """
    del pad_mask
    d = days.numpy().astype("datetime64[D]")
    if kind == "day_of_year":
        doy = (d - d.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64) + 1
        return torch.from_numpy(doy)
    first = d[:, :1].astype("datetime64[Y]").astype("datetime64[D]")
    return torch.from_numpy((d - first).astype(np.int64))


def to_batch(t: Tensors, kind: DateKind) -> Batch:
    """A model batch from CPU tensors (dates encoded for the model)."""
    return Batch(
        x=t.x,
        dates=encode_dates(t.dates, t.pad_mask, kind),
        pad_mask=t.pad_mask,
        field_mask=t.field_mask,
    )


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


def classification_loss(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    *,
    kind: Literal["ce", "focal"],
    gamma: float,
    smoothing: float,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Class-weighted (focal) cross-entropy with label smoothing, in float32.

    ``logits`` ``[B, K]`` or ``[B, K, H, W]``; ``ignore_index`` targets are left out; 0 (not
    NaN) when every target is ignored. ``ce`` is ``F.cross_entropy``; ``focal`` multiplies
    each sample's smoothed cross-entropy by ``(1 - p_true) ** gamma`` and averages with the
    class weights of the targets.
    """
    logits = logits.float()
    target = target.long()
    w = None if weight is None else weight.float().to(logits.device)
    valid = target != ignore_index
    if not bool(valid.any()):
        return logits.sum() * 0.0
    if kind == "ce":
        return F.cross_entropy(
            logits, target, weight=w, ignore_index=ignore_index, label_smoothing=smoothing
        )
    if logits.ndim == 4:
        logits = logits.permute(0, 2, 3, 1)
    flat, t = logits[valid], target[valid]
    logp = F.log_softmax(flat, dim=-1)
    nll = -logp.gather(1, t[:, None]).squeeze(1)
    per = (1.0 - smoothing) * nll + smoothing * (-logp.mean(dim=-1)) if smoothing else nll
    per = (1.0 - torch.exp(-nll)).clamp(min=0.0) ** gamma * per
    wt = torch.ones_like(per) if w is None else w[t]
    return (per * wt).sum() / wt.sum()


def _uses_own_loss(model: CropflowModel) -> bool:
    return type(model).loss is not CropflowModel.loss


def check_loss_params(model: CropflowModel, params: TrainParams) -> None:
    """Families with their own combined loss (crop-mask's two heads) take plain CE only."""
    if _uses_own_loss(model) and (params.loss != "ce" or params.label_smoothing > 0):
        raise ConfigError(
            f"model {model.config.name!r} trains with its own combined loss; loss="
            f"{params.loss!r} and label_smoothing={params.label_smoothing} are not supported",
            hint="use loss='ce' and label_smoothing=0 for this family",
        )


def compute_loss(
    model: CropflowModel, out: ModelOutput, y: Tensor, weight: Tensor | None, params: TrainParams
) -> Tensor:
    if _uses_own_loss(model):
        return model.loss(out, y, weight)
    return classification_loss(
        out.logits,
        y,
        weight,
        kind=params.loss,
        gamma=params.focal_gamma,
        smoothing=params.label_smoothing,
        ignore_index=model.ignore_index,
    )


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------


def _cosine(step: int, span: int, floor: float) -> float:
    """Cosine decay from 1 to ``floor`` over ``span`` steps."""
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * step / max(1, span)))


def lr_factor(params: TrainParams, step: int, steps_per_epoch: int) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    total = max(1, params.planned_epochs * steps_per_epoch)
    s = min(step, total)
    if params.schedule == "constant":
        return 1.0
    if params.schedule == "step":
        frac = s / total
        return 1.0 if frac < 0.5 else (0.1 if frac < 0.75 else 0.01)
    if params.schedule == "onecycle":
        up = max(1, int(0.3 * total))
        if s < up:
            return 0.04 + 0.96 * s / up
        return _cosine(s - up, total - up, floor=1e-4)
    warm = params.warmup_epochs * steps_per_epoch
    if s < warm:
        return (s + 1) / warm
    return _cosine(s - warm, total - warm, floor=1e-3)


# ---------------------------------------------------------------------------------------------
# Prediction and evaluation
# ---------------------------------------------------------------------------------------------


def _eval_batches(split: SplitArrays, norm: Normaliser, batch_size: int) -> Iterator[Tensors]:
    for idx in batch_indices(len(split), batch_size, None):
        yield take(split, idx, norm)


@torch.no_grad()
def predict_split(
    model: CropflowModel,
    split: SplitArrays,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool = True,
    loss_params: TrainParams | None = None,
    weight: Tensor | None = None,
) -> tuple[npt.NDArray[np.int64], float | None]:
    """Predicted class indices over a split (``[N]`` or ``[N, H, W]``) and, when
    ``loss_params`` is given, the mean loss. Normalises with the model's own contract."""
    norm = Normaliser(model.contract.bands, model.contract.normalisation)
    kind = date_kind_of(model)
    was_training = model.training
    model.eval()
    preds: list[npt.NDArray[np.int64]] = []
    loss_sum, n_loss = 0.0, 0
    try:
        for t in _eval_batches(split, norm, batch_size):
            batch = to_batch(t, kind).to(device, non_blocking=device.type == "cuda")
            with autocast(device, amp):
                out = model(batch)
            if loss_params is not None:
                y = t.y.to(device)
                loss = compute_loss(model, out, y, weight, loss_params)
                loss_sum += float(loss) * int(t.y.shape[0])
                n_loss += int(t.y.shape[0])
            preds.append(out.logits.float().argmax(dim=1).cpu().numpy().astype(np.int64))
    finally:
        model.train(was_training)
    mean_loss = loss_sum / n_loss if n_loss else None
    return np.concatenate(preds), mean_loss


def evaluate_split(
    model: CropflowModel,
    split: SplitArrays,
    split_name: str,
    *,
    batch_size: int,
    device: torch.device,
    amp: bool = True,
) -> Evaluation:
    """Every score of ``model`` on a split, classes named by the model's class map."""
    pred, _ = predict_split(model, split, batch_size=batch_size, device=device, amp=amp)
    names = model.contract.class_map.names
    return evaluate_labels(split.y, pred, names, split_name, model.ignore_index)


# ---------------------------------------------------------------------------------------------
# Active batch selection (cropflow.train.sampling)
# ---------------------------------------------------------------------------------------------


def logits_fn(
    model: CropflowModel, kind: DateKind, device: torch.device, amp: bool
) -> sel.LogitsFn:
    """``tensors -> logits`` of ``model`` (dates encoded as in training), on ``device``."""

    def run(t: Tensors) -> Tensor:
        batch = to_batch(t, kind).to(device, non_blocking=device.type == "cuda")
        with autocast(device, amp):
            return model(batch).logits

    return run


def _optimise(
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    loss: Tensor,
    grad_clip: float | None,
) -> None:
    """One optimisation step: backward, clip the gradient norm (when set), step."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimiser.step()


def irreducible_losses(
    template: CropflowModel, data: TrainingData, params: TrainParams, device: torch.device
) -> Tensor:
    """RHO-Loss's irreducible loss of every training sample, ``[n_train]``.

    A copy of ``template`` (the freshly built model) trains ``sampling.holdout_epochs`` epochs
    on the validation split (same loss, learning rate and clipping, no augmentation), then
    scores each training sample. The global RNG is forked, so the main run's stream and a
    resumed run's selections are unchanged; the result depends only on the seed.
    """
    val, train = data.split("val"), data.split("train")
    norm = Normaliser(data.bands, data.normalisation)
    kind = date_kind_of(template)
    weight = data.weight_vector() if params.class_weighting == "training_set" else None
    if weight is not None:
        weight = weight.to(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(params.seed + 1)
        holdout = copy.deepcopy(template)
        holdout.to(device).train()
        optimiser = torch.optim.AdamW(
            holdout.parameters(), lr=params.lr, weight_decay=params.weight_decay
        )
        gen = torch.Generator().manual_seed(params.seed + 1)
        for _ in range(params.sampling.holdout_epochs):
            for idx in batch_indices(len(val), params.batch_size, gen):
                t = take(val, idx, norm)
                batch = to_batch(t, kind).to(device)
                with autocast(device, params.amp):
                    out = holdout(batch)
                loss = compute_loss(holdout, out, t.y.to(device), weight, params)
                _optimise(holdout, optimiser, loss, params.grad_clip)
        holdout.eval()
        batches = (
            (idx.numpy(), take(train, idx, norm))
            for idx in batch_indices(len(train), params.effective_eval_batch_size, None)
        )
        return sel.losses_over(
            logits_fn(holdout, kind, device, params.amp), batches, len(train), holdout.ignore_index
        )


def _finite_mean(values: list[Tensor]) -> float:
    if not values:
        return float("nan")
    v = torch.cat(values)
    v = v[torch.isfinite(v)]
    return float(v.mean()) if v.numel() else float("nan")


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _is_better(score: float, best: float | None, maximise: bool, min_delta: float) -> bool:
    if best is None:
        return True
    return score > best + min_delta if maximise else score < best - min_delta


def _finite_params(model: CropflowModel) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def weight_average(
    model: CropflowModel, average_epochs: float | None, steps_per_epoch: int
) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and buffers over about
    ``average_epochs`` epochs (None: no averaging). The decay follows from the steps of an
    epoch, so the horizon is in epochs whatever the training set's size."""
    if average_epochs is None:
        return None
    decay = 1.0 - 1.0 / max(1.0, average_epochs * steps_per_epoch)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def fit(
    model: CropflowModel,
    data: TrainingData,
    params: TrainParams,
    store: CheckpointStore,
    *,
    resume_state: TrainState | None = None,
    mlflow_run_id: str | None = None,
    on_epoch_end: EpochCallback | None = None,
    progress: ProgressReporter | None = None,
) -> FitResult:
    """Train ``model`` (already seeded and built) until ``params.planned_epochs``, early stop or
    ``params.max_epochs``; write a checkpoint after every epoch; return the best weights.

    Raises TrainingError on an empty split or a non-finite loss (the last good checkpoint
    stays on disk).
    """
    train_split, val_split = data.split("train"), data.split("val")
    check_loss_params(model, params)
    device = pick_device(params.device)
    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True

    weight = data.weight_vector() if params.class_weighting == "training_set" else None
    if weight is not None:
        weight = weight.to(device)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=params.lr, weight_decay=params.weight_decay
    )
    n_train = len(train_split)
    steps_per_epoch = sum(1 for _ in batch_indices(n_train, params.batch_size, torch.Generator()))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: lr_factor(params, step, steps_per_epoch)
    )
    gen = torch.Generator().manual_seed(params.seed)
    norm = Normaliser(data.bands, data.normalisation)
    kind = date_kind_of(model)
    spatial = data.input_kind in ("patch", "field")
    fm = train_split.field_mask
    extents = None if fm is None else field_extents(fm)
    strategy = params.sampling.strategy
    irreducible = (
        irreducible_losses(model, data, params, device) if strategy == "rho_loss" else None
    )
    averaged = weight_average(model, params.average_epochs, steps_per_epoch)
    scoring = logits_fn(model, kind, device, params.amp)
    monitor = params.early_stopping.metric
    maximise = monitor != "loss"

    start_epoch = 0
    best_score: float | None = None
    best_epoch: int | None = None
    bad_epochs = 0
    history: list[dict[str, float]] = []
    resumed_from: int | None = None
    if resume_state is not None:
        model.load_state_dict(resume_state.model)
        optimiser.load_state_dict(resume_state.optimizer)
        scheduler.load_state_dict(resume_state.scheduler)
        resume_state.rng.restore(gen)
        start_epoch = resume_state.epoch
        best_score, best_epoch = resume_state.best_score, resume_state.best_epoch
        bad_epochs = resume_state.bad_epochs
        history = list(resume_state.history)
        mlflow_run_id = mlflow_run_id or resume_state.mlflow_run_id
        resumed_from = resume_state.epoch
        if averaged is not None and resume_state.averaged is not None:
            averaged.module.load_state_dict(resume_state.averaged)
            averaged.n_averaged.fill_(max(1, start_epoch * steps_per_epoch))
    else:
        torch.manual_seed(params.seed)

    stop_at = params.max_epochs or params.planned_epochs
    status: Literal["finished", "early_stopped", "paused"] = "finished"
    patience = params.early_stopping.patience
    if patience is not None and start_epoch > 0 and bad_epochs >= patience:
        status = "early_stopped"
    last_epoch = start_epoch
    for epoch in range(start_epoch + 1, stop_at + 1):
        if status == "early_stopped":
            break
        last_epoch = epoch
        model.train()
        if progress is not None:
            progress.start_epoch(epoch, params.planned_epochs, steps_per_epoch)
        loss_sum, n_seen = 0.0, 0
        picked: list[Tensor] = []
        offered: list[Tensor] = []
        if strategy == "uniform" and extents is not None:  # fields: similar sizes together
            steps: Iterator[Tensor] = sized_batches(extents, params.batch_size, gen)
        elif strategy == "uniform":
            steps = batch_indices(n_train, params.batch_size, gen)
        else:
            size = params.sampling.candidates * params.batch_size
            steps = (sel.candidate_indices(n_train, size, gen) for _ in range(steps_per_epoch))
        for step, idx in enumerate(steps, start=1):
            t = augment(take(train_split, idx, norm), params.augment, gen, spatial)
            if strategy != "uniform":
                model.eval()
                scores, losses = sel.score_batch(
                    scoring,
                    t,
                    None if irreducible is None else irreducible[idx],
                    model.ignore_index,
                    chunk=params.effective_eval_batch_size,
                )
                model.train()
                pos = sel.select_top(scores, params.batch_size)
                picked.append(losses[pos])
                offered.append(losses)
                t, idx = sel.subset(t, pos), idx[pos]
            batch = to_batch(t, kind).to(device, non_blocking=device.type == "cuda")
            y = t.y.to(device, non_blocking=device.type == "cuda")
            with autocast(device, params.amp):
                out = model(batch)
            loss = compute_loss(model, out, y, weight, params)
            value = float(loss.detach())
            if not math.isfinite(value):
                last = store.epochs()
                kept = (
                    f"the last good checkpoint is {store.epoch_path(last[-1])}"
                    if last
                    else ("no epoch completed, so no checkpoint was written")
                )
                raise TrainingError(
                    f"training loss became {value} at epoch {epoch}, step {step} "
                    f"(lr {scheduler.get_last_lr()[0]:.3g}); {kept}",
                    hint="lower lr, keep grad_clip on, and check the training set for "
                    "extreme values; rerun with resume=True to continue from the checkpoint",
                )
            _optimise(model, optimiser, loss, params.grad_clip)
            scheduler.step()
            if averaged is not None:
                averaged.update_parameters(model)
            loss_sum += value * int(idx.numel())
            n_seen += int(idx.numel())
            if progress is not None:
                progress.advance(value)

        if not _finite_params(model):
            raise TrainingError(
                f"model weights became non-finite in epoch {epoch}",
                hint="lower lr and keep grad_clip on; the previous checkpoint is kept",
            )
        judged = model if averaged is None else cast(CropflowModel, averaged.module)  # kept
        pred, val_loss = predict_split(
            judged,
            val_split,
            batch_size=params.effective_eval_batch_size,
            device=device,
            amp=params.amp,
            loss_params=params,
            weight=weight,
        )
        ev = evaluate_labels(val_split.y, pred, data.class_map.names, "val", model.ignore_index)
        metrics = {
            "train_loss": loss_sum / max(1, n_seen),
            "val_loss": float(val_loss if val_loss is not None else float("nan")),
            "lr": float(optimiser.param_groups[0]["lr"]),
            **ev.summary("val_"),
        }
        if strategy != "uniform":
            metrics["sampling_selected_loss"] = _finite_mean(picked)
            metrics["sampling_candidate_loss"] = _finite_mean(offered)
        if irreducible is not None:
            metrics["sampling_irreducible_loss"] = _finite_mean([irreducible])
        history.append({"epoch": float(epoch), **metrics})
        score = metrics[f"val_{monitor}"]
        keep_last = params.early_stopping.keep == "last"
        if keep_last or _is_better(score, best_score, maximise, params.early_stopping.min_delta):
            best_score, best_epoch, bad_epochs = score, epoch, 0
            store.save_best({k: v.detach().cpu().clone() for k, v in judged.state_dict().items()})
        else:
            bad_epochs += 1
        if patience is not None and bad_epochs >= patience:
            status = "early_stopped"
        store.save(
            TrainState(
                run_key=store.run_key,
                epoch=epoch,
                model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                optimizer=optimiser.state_dict(),
                scheduler=scheduler.state_dict(),
                rng=RngState.capture(gen),
                best_score=best_score,
                best_epoch=best_epoch,
                bad_epochs=bad_epochs,
                history=history,
                mlflow_run_id=mlflow_run_id,
                averaged=None
                if averaged is None
                else {k: v.detach().cpu().clone() for k, v in averaged.module.state_dict().items()},
            )
        )
        if progress is not None:
            progress.end_epoch(epoch, metrics)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, model)
    if status == "finished" and last_epoch < params.planned_epochs:
        status = "paused"

    if best_epoch is None or best_score is None:
        raise TrainingError(
            f"no epoch completed for run {store.run_key}",
            hint="check epochs/max_epochs, or start afresh with resume=False",
        )
    if status != "paused":
        model.load_state_dict(store.load_best())
    model.eval()
    return FitResult(
        model=model,
        status=status,
        epochs_run=len(history),
        best_epoch=best_epoch,
        best_score=best_score,
        monitor=monitor,
        history=history,
        checkpoint_dir=store.directory,
        mlflow_run_id=mlflow_run_id,
        resumed_from=resumed_from,
    )
