"""Probability calibration: expected calibration error and temperature scaling.

A network trained with cross-entropy is usually over-confident: among pixels it calls 90 %
sure, fewer than 90 % are right. Temperature scaling (Guo et al. 2017, "On Calibration of
Modern Neural Networks") divides the logits by one scalar ``T`` fitted on the validation split
(minimising its negative log-likelihood); the predicted class does not change, the probability
and confidence products become honest. The expected calibration error (ECE) is the
sample-weighted mean gap between confidence and accuracy over equal-width confidence bins.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from cropflow.classes import IGNORE_INDEX
from cropflow.train.data import Normaliser, SplitArrays, TrainingData, batch_indices, take
from cropflow.train.sampling import LogitsFn
from models.base import CropflowModel

#: Temperatures are searched within these bounds (log-space), wide enough for any sane model.
T_MIN, T_MAX = 0.05, 20.0
#: Logits used to fit (a random subset beyond this many labelled pixels/samples).
MAX_FIT = 200_000


def expected_calibration_error(
    probs: npt.NDArray[np.floating], y: npt.NDArray[np.integer], n_bins: int = 15
) -> float:
    """ECE of class probabilities ``probs`` ``[N, K]`` against labels ``y`` ``[N]``."""
    if len(y) == 0:
        return float("nan")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        sel = which == b
        if sel.any():
            total += sel.sum() * abs(float(correct[sel].mean()) - float(confidence[sel].mean()))
    return float(total / len(y))


def fit_temperature(logits: Tensor, y: Tensor) -> float:
    """The temperature minimising the NLL of ``softmax(logits / T)`` on ``(logits, y)``.

    ``logits`` ``[N, K]`` float, ``y`` ``[N]`` class indices. A 1-D problem: golden-section
    search over ``log T`` in ``[log T_MIN, log T_MAX]`` (the NLL is convex in ``1/T``), so
    the result is deterministic and needs no learning rate. 1.0 when there is nothing to fit.
    """
    if len(y) == 0:
        return 1.0
    logits = logits.double()
    y = y.long()

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), y))

    lo, hi = math.log(T_MIN), math.log(T_MAX)
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return math.exp((lo + hi) / 2.0)


def labelled_logits(
    logits: Tensor, y: Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """Flatten a batch's logits and targets to ``[M, K]``, ``[M]`` of the labelled ones
    (pixel ``[B, K]``/``[B]`` or patch ``[B, K, H, W]``/``[B, H, W]``)."""
    if logits.ndim == 4:
        logits = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
        y = y.reshape(-1)
    keep = y != ignore_index
    return logits[keep].float().cpu(), y[keep].cpu()


def split_logits(
    logits_of: LogitsFn,
    split: SplitArrays,
    norm: Normaliser,
    batch_size: int,
    ignore_index: int = IGNORE_INDEX,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Labelled logits and targets of a whole split (a random :data:`MAX_FIT` subset when
    larger), from ``logits_of(tensors) -> logits``."""
    parts: list[Tensor] = []
    targets: list[Tensor] = []
    gen = torch.Generator().manual_seed(seed)
    n_batches = max(1, -(-len(split) // batch_size))
    per_batch = max(1, -(-MAX_FIT // n_batches))  # keeps memory bounded for patch splits
    with torch.no_grad():
        for idx in batch_indices(len(split), batch_size, None):
            t = take(split, idx, norm)
            lg, yy = labelled_logits(logits_of(t), t.y, ignore_index)
            if len(yy) > per_batch:
                pick = torch.randperm(len(yy), generator=gen)[:per_batch]
                lg, yy = lg[pick], yy[pick]
            parts.append(lg)
            targets.append(yy)
    if not parts:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    logits, y = torch.cat(parts), torch.cat(targets)
    if len(y) > MAX_FIT:
        pick = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:MAX_FIT]
        logits, y = logits[pick], y[pick]
    return logits, y


def calibrate(
    model: CropflowModel, data: TrainingData, device: torch.device, batch_size: int, amp: bool
) -> dict[str, float]:
    """Fit ``model.temperature`` on the val split (in place); the ECE on val and test before
    and after, and the temperature, as metrics."""
    from cropflow.train.engine import date_kind_of, logits_fn

    was_training = model.training
    model.eval()
    try:
        run = logits_fn(model, date_kind_of(model), device, amp)
        norm = Normaliser(model.contract.bands, model.contract.normalisation)
        val = split_logits(run, data.split("val"), norm, batch_size, model.ignore_index)
        test = split_logits(run, data.split("test"), norm, batch_size, model.ignore_index)
    finally:
        model.train(was_training)
    temperature = fit_temperature(*val)
    model.temperature.fill_(temperature)
    metrics = {"temperature": temperature}
    for name, (logits, y) in (("val", val), ("test", test)):
        if len(y) == 0:
            continue
        raw = torch.softmax(logits, dim=1).numpy()
        scaled = torch.softmax(logits / temperature, dim=1).numpy()
        metrics[f"{name}_ece_uncalibrated"] = expected_calibration_error(raw, y.numpy())
        metrics[f"{name}_ece"] = expected_calibration_error(scaled, y.numpy())
    return metrics
