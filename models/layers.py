"""Building blocks shared by the families: date encoding, L-TAE, padding and masking helpers."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from cropflow.errors import ContractError

# --------------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------------


def date_encoding(dates: Tensor, dim: int, max_period: float) -> Tensor:
    """Sinusoidal encoding of integer dates, ``[..., dim]`` float32.

    Channel ``i`` is ``sin(d / max_period^(2*(i//2)/dim))`` for even ``i`` and the cosine for
    odd ``i`` (the Transformer encoding with the day number as position), so dates of any
    spacing, gaps included, get distinct codes.
    """
    i = torch.arange(dim, device=dates.device)
    inv_freq = max_period ** (-(2 * (i // 2)).float() / dim)
    angles = dates.float().unsqueeze(-1) * inv_freq
    return torch.where(i % 2 == 0, torch.sin(angles), torch.cos(angles))


# --------------------------------------------------------------------------------------------
# L-TAE
# --------------------------------------------------------------------------------------------


class TemporalAttentionEncoder(nn.Module):
    """Lightweight Temporal Attention Encoder (L-TAE, Garnot & Landrieu 2020).

    Collapses a sequence ``[N, T, C]`` into one embedding ``[N, D]`` with ``n_head`` heads,
    each owning one learnt *master query*; the values of head ``h`` are the ``h``-th group of
    ``d_model / n_head`` channels of the projected input, so the heads are cheap.

    Args:
        in_channels: channels ``C`` of the input sequence.
        n_head: number of heads (and master queries).
        d_k: key/query dimension of each head.
        d_model: width the input is projected to; a multiple of ``n_head``.
        mlp_widths: widths of the MLP after the concatenated heads (Linear + BatchNorm +
            ReLU each); the last one is ``D``.
        dropout: dropout after the MLP.
        attention_dropout: dropout on the attention weights.
        max_period: longest period of the date encoding, in days.
        input_norm: ``"layer"`` normalises each date over its channels (LayerNorm), as the
            reference does for its inputs, which are learnt embeddings (the pixel-set encoder's
            in L-TAE, the convolutional encoder's in U-TAE); ``"none"`` leaves the input as it
            is, for raw bands already standardised per band. On raw bands the per-date
            LayerNorm erases each date's brightness, and with one channel the whole input
            (every value becomes 0), so it needs at least 2 channels. It applies to what
            enters the attention: the per-date encoder's output when there is one.
        input_widths: a per-date encoder before the attention (Linear + BatchNorm + ReLU per
            width, on each valid date alone; BatchNorm statistics over valid dates only), the
            single-pixel case of the reference's pixel-set encoder; ``[]`` for none, when the
            input is a learnt embedding already (U-TAE). Without it each head's output is a
            weighted mean of a *linear* function of the bands, which is little with few bands.

    The output is normalised by LayerNorm; padded dates never enter any statistic, so the
    output is exactly invariant to padding.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        n_head: int,
        d_k: int,
        d_model: int,
        mlp_widths: list[int],
        dropout: float,
        attention_dropout: float,
        max_period: float,
        input_norm: Literal["layer", "none"],
        input_widths: list[int],
    ) -> None:
        super().__init__()
        encoded = input_widths[-1] if input_widths else in_channels
        if input_norm == "layer" and encoded < 2:
            raise ContractError(
                f"input_norm='layer' normalises each date over its {encoded} channel: "
                "every input would become 0",
                hint="use input_norm='none' (the bands are standardised already), a per-date "
                "encoder (input_widths) or more bands",
            )
        self.n_head = n_head
        self.d_k = d_k
        self.d_model = d_model
        self.max_period = max_period
        self.date_encoder: nn.Module | None = (
            nn.Sequential(*linear_bn_relu(in_channels, input_widths)) if input_widths else None
        )
        self.in_norm: nn.Module = nn.LayerNorm(encoded) if input_norm == "layer" else nn.Identity()
        self.in_proj = nn.Linear(encoded, d_model)
        self.query = nn.Parameter(torch.randn(n_head, d_k) * math.sqrt(2.0 / d_k))
        self.key = nn.Linear(d_model, n_head * d_k)
        nn.init.normal_(self.key.weight, mean=0.0, std=math.sqrt(2.0 / d_k))
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.mlp = nn.Sequential(*linear_bn_relu(d_model, mlp_widths))
        width = mlp_widths[-1] if mlp_widths else d_model
        self.dropout = nn.Dropout(dropout)
        self.out_norm = nn.LayerNorm(width)
        self.out_channels = width

    def forward(self, x: Tensor, dates: Tensor, pad_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Encode ``x`` ``[N, T, C]`` with ``dates`` and ``pad_mask`` ``[N, T]``.

        Returns:
            The embeddings ``[N, D]`` and the attention ``[N, n_head, T]`` (0 on padded
            dates; rows of all-padded sequences are all 0).
        """
        n, t, _ = x.shape
        # -- per-date encoder (valid dates only), input projection and date encoding
        if self.date_encoder is not None:
            x = scatter_frames(self.date_encoder(x[~pad_mask]), pad_mask)
        h = self.in_proj(self.in_norm(x))
        pe = date_encoding(dates, self.d_model // self.n_head, self.max_period)
        h = h + pe.repeat(1, 1, self.n_head).to(h.dtype)

        # -- attention: one master query per head against per-date keys
        keys = self.key(h).view(n, t, self.n_head, self.d_k)
        scores = torch.einsum("nthk,hk->nht", keys, self.query.to(keys.dtype))
        scores = scores / math.sqrt(self.d_k)
        scores = scores.masked_fill(pad_mask[:, None, :], torch.finfo(scores.dtype).min)
        attn = torch.softmax(scores.float(), dim=-1) * (~pad_mask)[:, None, :]
        attn = self.attention_dropout(attn)

        # -- values: head h reads its own group of channels
        values = h.view(n, t, self.n_head, self.d_model // self.n_head)
        out = torch.einsum("nht,nthc->nhc", attn.to(values.dtype), values)
        out = out.reshape(n, self.d_model)

        # -- output MLP
        out = self.out_norm(self.dropout(self.mlp(out)))
        return out, attn


# --------------------------------------------------------------------------------------------
# Padding and masking helpers
# --------------------------------------------------------------------------------------------


def scatter_frames(values: Tensor, pad_mask: Tensor) -> Tensor:
    """Put per-valid-date results ``[N_valid, ...]`` back into ``[B, T, ...]`` (0 if padded)."""
    b, t = pad_mask.shape
    out = values.new_zeros((b, t, *values.shape[1:]))
    out[~pad_mask] = values
    return out


def to_autocast_dtype(x: Tensor) -> Tensor:
    """``x`` in the autocast dtype when autocast is on for its device, else unchanged.

    Recurrent layers need it: on CPU (torch 2.13, oneDNN) an LSTM under bf16 autocast fails
    on a float32 input ("could not create a primitive descriptor").
    """
    device = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(device):
        return x.to(torch.get_autocast_dtype(device))
    return x


def pack_valid_steps(x: Tensor, pad_mask: Tensor) -> PackedSequence:
    """Pack ``x`` ``[B, T, F]`` for an RNN, keeping only the valid steps (in time order).

    Padded steps may sit anywhere in the sequence; they are moved behind the valid ones
    (stable sort) and cut off by the packing. A sequence with no valid step keeps one step so
    that the RNN can run; its output is meaningless and should be ignored by the caller.
    """
    x_sorted, lengths = compact_valid_steps(x, pad_mask)
    return pack_padded_sequence(x_sorted, lengths.cpu(), batch_first=True, enforce_sorted=False)


def compact_valid_steps(x: Tensor, pad_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Move the valid steps of ``x`` ``[B, T, F]`` to the front (time order kept), zero the
    rest -> (``[B, T, F]``, lengths ``[B]``, at least 1, on ``x``'s device)."""
    x = to_autocast_dtype(x)
    order = torch.argsort(pad_mask.to(torch.uint8), dim=1, stable=True)
    x_sorted = torch.gather(x, 1, order.unsqueeze(-1).expand_as(x))
    lengths = (~pad_mask).sum(dim=1)
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return x_sorted * valid.unsqueeze(-1).to(x_sorted.dtype), lengths.clamp_min(1)


def padded_size(size: int, multiple: int, minimum: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``size`` and >= ``minimum``."""
    return max(math.ceil(size / multiple), math.ceil(minimum / multiple)) * multiple


def pad_to_multiple(x: Tensor, multiple: int, minimum: int) -> Tensor:
    """Replicate-pad the last two dims of ``x`` ``[..., C, H, W]`` to :func:`padded_size`."""
    h, w = x.shape[-2:]
    hp = padded_size(h, multiple, minimum)
    wp = padded_size(w, multiple, minimum)
    if (hp, wp) == (h, w):
        return x
    lead = x.shape[:-3]
    flat = x.reshape(math.prod(lead), *x.shape[-3:])
    flat = nn.functional.pad(flat, (0, wp - w, 0, hp - h), mode="replicate")
    return flat.reshape(*lead, *flat.shape[-3:])


def linear_bn_relu(in_width: int, widths: list[int]) -> list[nn.Module]:
    """Linear + :class:`BatchNorm1dAnyBatch` + ReLU per width, from ``in_width`` (flat, to
    splat into an ``nn.Sequential``: its state-dict keys are the layers' positions)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Linear(in_width, w), BatchNorm1dAnyBatch(w), nn.ReLU()]
        in_width = w
    return layers


class GaussianNoise(nn.Module):
    """Adds zero-mean Gaussian noise of standard deviation ``std`` in training, nothing in
    evaluation (a regulariser on normalised inputs, like dropout; no parameters).

    Args:
        std: the noise's standard deviation, in the units of the input (0: identity).
    """

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.std == 0:
            return x
        return x + torch.randn_like(x) * self.std

    def extra_repr(self) -> str:
        return f"std={self.std}"


class BatchNorm1dAnyBatch(nn.BatchNorm1d):
    """BatchNorm1d that also trains on a batch of one sample or none (e.g. an epoch's last
    batch, or the valid dates of a batch without any).

    On a single sample ``[1, C]`` or an empty ``[0, C]`` in training mode, plain BatchNorm
    fails; this one normalises with the running statistics instead and leaves them unchanged.
    """

    def forward(self, input: Tensor) -> Tensor:
        if self.training and input.dim() == 2 and input.shape[0] <= 1:
            return nn.functional.batch_norm(
                input,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                eps=self.eps,
            )
        out: Tensor = super().forward(input)
        return out


class MaskedGroupNorm(nn.Module):
    """GroupNorm whose statistics use only the pixels inside a mask; outside is set to 0.

    Args:
        num_groups: channel groups.
        num_channels: channels (a multiple of ``num_groups``).
        eps: added to the variance.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Normalise ``x`` ``[N, C, H, W]`` over the pixels where ``mask`` ``[N, H, W]`` holds."""
        n, c, h, w = x.shape
        g = self.num_groups
        xf = x.float().view(n, g, c // g, h, w)
        m = mask.to(xf.dtype).view(n, 1, 1, h, w)
        count = (m.sum(dim=(2, 3, 4)) * (c // g)).clamp_min(1.0)
        mean = (xf * m).sum(dim=(2, 3, 4)) / count
        centred = (xf - mean[..., None, None, None]) * m
        var = (centred**2).sum(dim=(2, 3, 4)) / count
        y = centred / torch.sqrt(var[..., None, None, None] + self.eps)
        y = y.view(n, c, h, w) * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return (y * m.view(n, 1, h, w)).to(x.dtype)
