"""Active batch selection: train each step on the most useful samples of a larger candidate batch.

Two rules from the online batch-selection literature, as options of the training parameters
(:class:`~cropflow.train.params.SamplingParams`):

- ``loss``: the samples the model currently gets most wrong (highest training loss);
- ``rho_loss`` (Mindermann et al. 2022, "Prioritized training on points that are learnable,
  worth learning, and not yet learnt"): the highest *reducible* loss, the training loss minus
  the *irreducible* loss that a holdout model trained on other data (here the validation split)
  still has on the sample. Noisy or ambiguous samples have a high loss under both models and are
  skipped; samples the model has already learnt have a low training loss and are skipped too.

Scores are unweighted per-sample cross-entropies (a patch's is the mean over its labelled
pixels; a patch without any labelled pixel scores ``-inf`` and is never picked). Everything
here is a small pure function; :func:`cropflow.train.engine.fit` wires them in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from cropflow.classes import IGNORE_INDEX
from cropflow.train.augment import Tensors

#: Run a model on a batch of CPU tensors and return its logits (``[B, K]`` or ``[B, K, H, W]``).
LogitsFn = Callable[[Tensors], Tensor]


def per_sample_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Unweighted cross-entropy of each sample, ``[B]`` float32.

    ``logits`` ``[B, K]`` with ``target`` ``[B]``, or ``[B, K, H, W]`` with ``[B, H, W]``
    (the mean over the sample's labelled pixels). A sample with no labelled target is ``-inf``.
    """
    logits = logits.float()
    target = target.long().to(logits.device)
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    ce = F.cross_entropy(logits, safe, reduction="none") * valid
    if ce.ndim == 1:
        count = valid.float()
        total = ce
    else:
        count = valid.flatten(1).float().sum(dim=1)
        total = ce.flatten(1).sum(dim=1)
    out = total / count.clamp(min=1.0)
    return torch.where(count > 0, out, torch.full_like(out, -math.inf))


def selection_scores(train_loss: Tensor, irreducible: Tensor | None) -> Tensor:
    """Reducible loss (``train_loss - irreducible``) or, without a holdout model, the loss.
    A sample without a labelled target (loss ``-inf``) scores ``-inf``: it is picked last."""
    if irreducible is None:
        return train_loss
    reducible = train_loss - irreducible.to(train_loss.device, train_loss.dtype)
    return torch.where(torch.isfinite(train_loss), reducible, torch.full_like(reducible, -math.inf))


def select_top(scores: Tensor, k: int) -> Tensor:
    """Positions of the ``k`` highest scores, highest first; ties keep the candidate order."""
    if k <= 0:
        raise ValueError(f"select_top needs k >= 1, got {k}")
    k = min(k, int(scores.numel()))
    safe = torch.nan_to_num(scores.detach().float().cpu(), nan=-math.inf)
    order = torch.sort(safe, descending=True, stable=True).indices
    return order[:k]


def subset(t: Tensors, pos: Tensor) -> Tensors:
    """The samples at positions ``pos`` of a batch."""
    return Tensors(
        x=t.x[pos],
        y=t.y[pos],
        dates=t.dates[pos],
        pad_mask=t.pad_mask[pos],
        field_mask=None if t.field_mask is None else t.field_mask[pos],
    )


def candidate_indices(n: int, size: int, gen: torch.Generator) -> Tensor:
    """``size`` distinct random sample indices out of ``n`` (all of them when ``size >= n``)."""
    return torch.randperm(n, generator=gen)[: min(size, n)]


@torch.no_grad()
def score_batch(
    logits_of: LogitsFn,
    t: Tensors,
    irreducible: Tensor | None,
    ignore_index: int = IGNORE_INDEX,
    chunk: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``(scores, losses)`` of a candidate batch: the selection score and the training loss,
    scored ``chunk`` samples at a time (all at once when None)."""
    n = int(t.y.shape[0])
    step = n if chunk is None else max(1, chunk)
    parts = []
    for start in range(0, n, step):
        part = subset(t, torch.arange(start, min(n, start + step)))
        parts.append(per_sample_loss(logits_of(part), part.y, ignore_index).cpu())
    losses = torch.cat(parts) if parts else torch.zeros(0)
    return selection_scores(losses, irreducible), losses


@torch.no_grad()
def losses_over(
    logits_of: LogitsFn,
    batches: Iterable[tuple[npt.NDArray[np.int64], Tensors]],
    n: int,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Per-sample losses ``[n]`` of indexed batches (``(indices, tensors)`` pairs)."""
    out = torch.full((n,), math.nan, dtype=torch.float32)
    for idx, t in batches:
        out[torch.from_numpy(idx)] = per_sample_loss(logits_of(t), t.y, ignore_index).cpu()
    return out
