"""The crop-mask classifier of nasaharvest/crop-mask (Tseng et al. 2020), on pixel time series.

A shared LSTM encodes each pixel's series; two heads read its encoding:

* the **global** head classifies the full class list of the contract (``logits``, ``[B, K]``);
* the **local** head answers one binary question for the region being mapped, e.g. crop vs
  non-crop (``aux_logits``, ``[B]``; positive = one of ``config.local_positive_classes``).

In the reference, the local head learns only from samples of the target region and the global
head from all others, with the weighting of :func:`combined_loss`. Here ``aux_mask`` marks
the local samples; without it both heads learn from every sample.

Differences from the reference: ``nn.LSTM`` (dropout between layers and on the encoding)
replaces its unrolled LSTM with variational dropout; the global head is multi-class (K
logits, cross-entropy) rather than binary; padded dates are skipped (packed sequence); the
forget gates start with a bias of 1 (Jozefowicz et al. 2015); and, by default, the encoding is
the mean output of each of 12 equal parts of the valid dates, side by side
(``pooling="windows"``), rather than the last hidden state. The reference reads 12 monthly
steps; over long series (149 dates of the temporalCNN fixture) the last state forgets the
early season (macro-F1 0.27 with zero forget bias), mean + max of the outputs loses when in
the season a feature occurs (0.650 over 4 seeds), the windows keep it (0.676; on the NDVI
band 0.598 -> 0.643; ``benchmarks/RESULTS.md``). On series of 24 steps or more the LSTM
reads, by default (``conv_kernel``), ``hidden_size`` features of a 1-D convolution over 5
neighbouring valid dates rather than each date's bands: with 1-3 bands per date its gates
otherwise see 1-3 numbers per step (149 dates of 1-3 bands: 0.680 -> 0.718 and 0.651 ->
0.661; on 8 monthly composites of 11 bands the convolution costs 0.983 -> 0.938, so short
series keep the reference's input). Without ``local_positive_classes`` only the global head
learns.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from cropflow.errors import ContractError
from models.base import Batch, CropflowModel, ModelOutput
from models.configs import CropMaskLSTMConfig
from models.contract import InputContract
from models.layers import BatchNorm1dAnyBatch, compact_valid_steps


def _head(in_features: int, out_features: int, n_layers: int) -> nn.Sequential:
    """``n_layers`` linear layers, ReLU + BatchNorm between them (as in the reference)."""
    layers: list[nn.Module] = []
    for i in range(n_layers):
        last = i == n_layers - 1
        layers.append(nn.Linear(in_features, out_features if last else in_features))
        if not last:
            layers += [nn.ReLU(), BatchNorm1dAnyBatch(in_features)]
    return nn.Sequential(*layers)


class CropMaskNet(nn.Module):
    """Shared LSTM encoder with a global (K classes) and a local (binary) head.

    Args:
        in_channels: bands per date.
        n_classes: classes of the global head.
        hidden_size: LSTM hidden size, also the width of the heads' hidden layers.
        num_layers: stacked LSTM layers.
        dropout: dropout between LSTM layers and on the final encoding.
        num_global_layers: linear layers of the global head.
        num_local_layers: linear layers of the local head.
        pooling: ``"last"``: the last layer's final hidden state (the reference);
            ``"mean_max"``: mean + max over the valid dates of the last layer's outputs;
            ``"windows"``: the mean output of each of ``windows`` equal parts of the valid
            dates, concatenated (:func:`window_means`).
        windows: parts of ``pooling="windows"``.
        bidirectional: also read each series backwards (the encoding is then twice as wide);
            the reference reads forwards only.
        conv_kernel: 0: the LSTM reads the bands of each date (the reference); an odd
            ``k``: it reads ``hidden_size`` features of a 1-D convolution (kernel ``k``,
            layer norm over the features, ReLU) over each series' valid dates, i.e. of ``k``
            neighbouring dates (:meth:`CropMaskLSTMConfig.resolved_conv_kernel` picks it).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        n_classes: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        num_global_layers: int,
        num_local_layers: int,
        pooling: Literal["last", "mean_max", "windows"],
        windows: int,
        bidirectional: bool,
        conv_kernel: int,
    ) -> None:
        super().__init__()
        self.stem = (
            nn.Conv1d(in_channels, hidden_size, conv_kernel, padding=conv_kernel // 2)
            if conv_kernel
            else None
        )
        self.stem_norm = nn.LayerNorm(hidden_size) if conv_kernel else None
        self.pooling = pooling
        self.windows = windows
        self.lstm = nn.LSTM(
            input_size=hidden_size if self.stem is not None else in_channels,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
            bidirectional=bidirectional,
        )
        self.directions = 2 if bidirectional else 1
        width = hidden_size * self.directions * (windows if pooling == "windows" else 1)
        for name, param in self.lstm.named_parameters():
            if name.startswith("bias_ih"):  # forget gate (i, f, g, o order): b_ih + b_hh = 1
                with torch.no_grad():
                    param[hidden_size : 2 * hidden_size].fill_(1.0)
            elif name.startswith("bias_hh"):
                with torch.no_grad():
                    param[hidden_size : 2 * hidden_size].fill_(0.0)
        self.dropout = nn.Dropout(dropout)
        self.norm = BatchNorm1dAnyBatch(width)
        self.global_head = _head(width, n_classes, num_global_layers)
        self.local_head = _head(width, 1, num_local_layers)

    def forward(self, x: Tensor, pad_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``[B, T, C]``, ``pad_mask`` ``[B, T]`` -> global ``[B, K]``, local ``[B]``."""
        # -- stem: the valid dates side by side (padding zeroed behind them), optionally convolved
        steps_in, lengths_in = compact_valid_steps(x, pad_mask)
        if self.stem is not None:
            steps_in = self.stem(steps_in.transpose(1, 2)).transpose(1, 2)
            if self.stem_norm is not None:
                steps_in = self.stem_norm(steps_in)
            steps_in = F.relu(steps_in)

        # -- encoding: LSTM over the valid dates, then the final state or a pooling of its steps
        packed = pack_padded_sequence(
            steps_in, lengths_in.cpu(), batch_first=True, enforce_sorted=False
        )
        outputs, (h_n, _) = self.lstm(packed)
        if self.pooling == "last":  # the last layer's final state of each direction
            state = torch.cat(list(h_n[-self.directions :]), dim=-1)
        else:
            steps, lengths = pad_packed_sequence(outputs, batch_first=True)
            lengths = lengths.to(steps.device)
            if self.pooling == "windows":
                state = window_means(steps, lengths, self.windows).flatten(1)
            else:  # mean_max
                valid = (
                    torch.arange(steps.shape[1], device=steps.device)[None, :] < lengths[:, None]
                )
                valid = valid.unsqueeze(-1)
                mean = (steps * valid).sum(dim=1) / lengths.to(steps.dtype)[:, None]
                peak = steps.masked_fill(~valid, torch.finfo(steps.dtype).min).amax(dim=1)
                state = mean + peak
        encoding = self.norm(self.dropout(state))

        # -- heads
        global_logits = self.global_head(encoding)
        local_logits = self.local_head(encoding).squeeze(-1)
        return global_logits, local_logits


def window_means(steps: Tensor, lengths: Tensor, windows: int) -> Tensor:
    """Mean of ``steps`` ``[B, L, H]`` over each of ``windows`` equal parts of each series'
    first ``lengths`` ``[B]`` steps -> ``[B, windows, H]`` (0 for a part with no step)."""
    b, n, h = steps.shape
    index = torch.arange(n, device=steps.device)[None, :]
    part = index * windows // lengths.clamp_min(1)[:, None]
    part = torch.where(index < lengths[:, None], part, windows)  # padding: a dropped part
    sums = steps.new_zeros(b, windows + 1, h).scatter_add_(
        1, part.unsqueeze(-1).expand(b, n, h), steps
    )
    counts = steps.new_zeros(b, windows + 1).scatter_add_(
        1, part, torch.ones_like(part, dtype=steps.dtype)
    )
    return sums[:, :windows] / counts[:, :windows].clamp_min(1.0).unsqueeze(-1)


def combined_loss(
    global_logits: Tensor,
    local_logits: Tensor,
    target: Tensor,
    *,
    positive_indices: Tensor,
    alpha: float,
    ignore_index: int,
    local_mask: Tensor | None = None,
    local_target: Tensor | None = None,
    weight: Tensor | None = None,
) -> Tensor:
    """The crop-mask loss: local head (binary cross-entropy) plus global head (cross-entropy).

    With ``n_local`` samples for the local head and per-sample losses ``l_i`` (local) and
    ``g_j`` (global)::

        loss = (sum_i l_i + sum_j g_j / alpha) / n_local     if n_local > 0
        loss = mean_j g_j                                     otherwise

    i.e. a global sample weighs ``1/alpha`` of a local one; this equals the reference's
    ``local_mean + (n_global / n_local) / alpha * global_mean``. With class weights ``w``,
    ``g_j`` is ``w[target_j]`` times the cross-entropy and the global-only mean divides by
    the sum of those weights (as ``F.cross_entropy`` does).

    Args:
        global_logits: ``[B, K]``.
        local_logits: ``[B]``.
        target: ``[B]`` class indices; ``ignore_index`` = unlabelled.
        positive_indices: class indices that are positive for the local head.
        alpha: the weighting above (reference default 10).
        ignore_index: the class map's ignore value.
        local_mask: ``[B]`` bool, True for samples of the local region: they train only the
            local head, the others only the global head. None: every sample trains both.
        local_target: ``[B]`` 0/1 (``ignore_index`` = unknown) labels of the local head, for
            samples labelled only for the binary question; default: ``target`` in
            ``positive_indices``.
        weight: optional per-class weights ``[K]`` of the global cross-entropy.
    """
    target = target.long()
    labelled = target != ignore_index
    if local_target is None:
        local_y = torch.isin(target, positive_indices.to(target.device)).float()
        # no positive class named: the local head has no question to learn
        local_ok = labelled if positive_indices.numel() > 0 else torch.zeros_like(labelled)
    else:
        local_ok = local_target != ignore_index
        local_y = (local_target == 1).float()
    if local_mask is None:
        global_rows, local_rows = labelled, local_ok
    else:
        global_rows, local_rows = labelled & ~local_mask, local_ok & local_mask

    w = None if weight is None else weight.float().to(global_logits.device)
    safe_target = torch.where(global_rows, target, 0)
    g = F.cross_entropy(global_logits.float(), safe_target, weight=w, reduction="none")
    g_sum = (g * global_rows).sum()
    g_count = (global_rows * (1.0 if w is None else w[safe_target])).sum()
    l_terms = F.binary_cross_entropy_with_logits(local_logits.float(), local_y, reduction="none")
    l_sum = (l_terms * local_rows).sum()

    n_local = local_rows.sum()
    if bool(n_local > 0):
        return (l_sum + g_sum / alpha) / n_local
    if bool(global_rows.any()):
        return g_sum / g_count
    return (global_logits.float().sum() + local_logits.float().sum()) * 0.0


class CropMaskLSTM(CropflowModel):
    """:class:`CropMaskNet` as a cropflow model (family ``crop_mask_lstm``, pixel input)."""

    input_kind = "pixel"

    def __init__(self, config: CropMaskLSTMConfig, contract: InputContract) -> None:
        super().__init__(config, contract)
        names = contract.class_map.names
        unknown = [c for c in config.local_positive_classes if c not in names]
        if unknown:
            raise ContractError(
                f"crop_mask_lstm local_positive_classes {unknown} are not in the contract's "
                f"classes {names}",
                hint="name classes of the class map in local_positive_classes",
            )
        self.alpha = config.alpha
        self.register_buffer(
            "positive_indices",
            torch.tensor([names.index(c) for c in config.local_positive_classes], dtype=torch.long),
            persistent=False,
        )
        self.net = CropMaskNet(
            in_channels=self.n_channels,
            n_classes=self.n_classes,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
            num_global_layers=config.num_global_layers,
            num_local_layers=config.num_local_layers,
            pooling=config.pooling,
            windows=config.windows,
            bidirectional=config.bidirectional,
            conv_kernel=config.resolved_conv_kernel(contract.n_time),
        )

    def forward(self, batch: Batch) -> ModelOutput:
        self.check_batch(batch)
        global_logits, local_logits = self.net(batch.x, batch.pad_mask)
        return ModelOutput(logits=global_logits, aux_logits=local_logits)

    def loss(
        self,
        output: ModelOutput,
        target: Tensor,
        weight: Tensor | None = None,
        *,
        aux_target: Tensor | None = None,
        aux_mask: Tensor | None = None,
    ) -> Tensor:
        """:func:`combined_loss`; ``aux_mask`` = local samples, ``aux_target`` = local labels."""
        if output.aux_logits is None:
            raise ContractError(
                "crop_mask_lstm loss needs the local head's aux_logits",
                hint="pass this model's own output",
            )
        positive: Tensor = self.positive_indices  # type: ignore[assignment]
        return combined_loss(
            output.logits,
            output.aux_logits,
            target,
            positive_indices=positive,
            alpha=self.alpha,
            ignore_index=self.ignore_index,
            local_mask=aux_mask,
            local_target=aux_target,
            weight=weight,
        )
