"""Training-time augmentation on normalised CPU tensors, driven by one torch generator.

Every random draw comes from the generator passed in, whose state is part of each
checkpoint, so that a resumed run augments exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cropflow.train.params import AugmentParams


@dataclass
class Tensors:
    """One batch as plain tensors (CPU), before it becomes a model batch.

    ``x``: pixel ``[B, T, C]``, patch/field ``[B, T, C, H, W]``; ``y``: ``[B]`` (pixel,
    field) or ``[B, H, W]`` (patch), output indices; ``dates`` ``[B, T]`` int;
    ``pad_mask`` ``[B, T]`` (True = missing); ``field_mask`` ``[B, H, W]`` (field only).
    """

    x: torch.Tensor
    y: torch.Tensor
    dates: torch.Tensor
    pad_mask: torch.Tensor
    field_mask: torch.Tensor | None = None

    def to(self, device: torch.device) -> Tensors:
        nb = device.type == "cuda"
        return Tensors(
            x=self.x.to(device, non_blocking=nb),
            y=self.y.to(device, non_blocking=nb),
            dates=self.dates.to(device, non_blocking=nb),
            pad_mask=self.pad_mask.to(device, non_blocking=nb),
            field_mask=None
            if self.field_mask is None
            else self.field_mask.to(device, non_blocking=nb),
        )


def _spatial(t: Tensors, gen: torch.Generator, params: AugmentParams) -> Tensors:
    """Random flips and 90-degree rotations, the same for the inputs, labels and masks of
    each sample (square tiles rotate by any multiple of 90 degrees, others by 180)."""
    b = t.x.shape[0]
    h, w = t.x.shape[-2:]
    flips = torch.randint(0, 2, (b, 2), generator=gen) if params.flips else torch.zeros(b, 2)
    turns = torch.randint(0, 4, (b,), generator=gen) if params.rotations else torch.zeros(b)
    x, y = t.x.clone(), t.y.clone()
    fm = None if t.field_mask is None else t.field_mask.clone()
    for i in range(b):
        dims: list[int] = [d for d, f in zip((-2, -1), flips[i].tolist(), strict=True) if f]
        k = int(turns[i])
        if h != w:
            k = 2 * (k % 2)
        xi, yi = x[i], y[i]
        fi = None if fm is None else fm[i]
        if dims:
            xi = xi.flip(dims)
            yi = yi.flip(dims) if yi.ndim >= 2 else yi
            fi = None if fi is None else fi.flip(dims)
        if k:
            xi = torch.rot90(xi, k, dims=(-2, -1))
            yi = torch.rot90(yi, k, dims=(-2, -1)) if yi.ndim >= 2 else yi
            fi = None if fi is None else torch.rot90(fi, k, dims=(-2, -1))
        x[i], y[i] = xi, yi
        if fm is not None and fi is not None:
            fm[i] = fi
    return Tensors(x=x, y=y, dates=t.dates, pad_mask=t.pad_mask, field_mask=fm)


def _date_dropout(t: Tensors, gen: torch.Generator, p: float) -> Tensors:
    """Mark random dates missing (and zero them, i.e. the band mean), keeping >= 1 per sample."""
    drop = (torch.rand(t.pad_mask.shape, generator=gen) < p) & ~t.pad_mask
    left = (~t.pad_mask & ~drop).sum(dim=1)
    drop[left == 0] = False
    shape = drop.shape + (1,) * (t.x.ndim - 2)
    x = t.x.masked_fill(drop.view(shape), 0.0)
    return Tensors(x=x, y=t.y, dates=t.dates, pad_mask=t.pad_mask | drop, field_mask=t.field_mask)


def _truncate(t: Tensors, gen: torch.Generator, fraction: float, min_steps: int) -> Tensors:
    """Cut a ``fraction`` of the series at a random step ``k`` (uniform in
    ``[min_steps, T - 1]``): steps ``>= k`` become missing (pad_mask, zeroed), as the
    not-yet-observed end of a season does in an in-season cube."""
    b, n = t.pad_mask.shape
    low = min(max(1, min_steps), n)
    if low >= n:
        return t
    cut = torch.rand(b, generator=gen) < fraction
    k = torch.randint(low, n, (b,), generator=gen)
    steps = torch.arange(n).expand(b, n)
    drop = cut[:, None] & (steps >= k[:, None])
    shape = drop.shape + (1,) * (t.x.ndim - 2)
    x = t.x.masked_fill(drop.view(shape), 0.0)
    return Tensors(x=x, y=t.y, dates=t.dates, pad_mask=t.pad_mask | drop, field_mask=t.field_mask)


def augment(t: Tensors, params: AugmentParams, gen: torch.Generator, spatial: bool) -> Tensors:
    """Apply the switched-on augmentations; ``spatial`` for patch and field batches."""
    if spatial and (params.flips or params.rotations):
        t = _spatial(t, gen, params)
    if params.truncation > 0:
        t = _truncate(t, gen, params.truncation, params.truncation_min_steps)
    if params.date_dropout > 0:
        t = _date_dropout(t, gen, params.date_dropout)
    if params.noise_std > 0:
        noise = torch.randn(t.x.shape, generator=gen) * params.noise_std
        t = Tensors(
            x=t.x + noise, y=t.y, dates=t.dates, pad_mask=t.pad_mask, field_mask=t.field_mask
        )
    return t
