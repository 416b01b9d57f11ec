"""Field-level classifier after radiantearth/CropDetectionDL (CV4A 2020 crop detection winner).

Input: one chip per field and date ``[B, T, C, H, W]`` with the field's rasterised polygon
``field_mask`` ``[B, H, W]``. Phases of :meth:`FieldBiGRUNet.forward`:

1. **spatial encoding** -- three convolutions (3x3, 3x3, 1x1 by default) + GroupNorm + ELU,
   shared by all dates;
2. **masked field averaging** -- the features are averaged over the pixels inside the field
   (like global average pooling, but pixels outside the field contribute nothing);
3. **temporal encoding** -- a 3-layer bidirectional GRU over the valid dates;
4. **head** -- a linear layer on the last forward and backward hidden states.

Pixels outside the field never change the output: the input is zeroed outside the mask, the
GroupNorm statistics use in-field pixels only and every layer's output is re-zeroed outside.
So the result depends on the field's pixels and shape only, not on the chip around it. A
field with an empty mask gets all-zero features (its output is meaningless).

Differences from the reference: field-masked GroupNorm (the reference normalises over the whole
chip); the head reads both directions' final states (the reference takes the output of the last
time step, where the backward direction has seen one date only); padded dates are skipped.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from models.base import Batch, CropflowModel, ModelOutput
from models.configs import FieldBiGRUConfig
from models.contract import InputContract
from models.layers import MaskedGroupNorm, pack_valid_steps, scatter_frames


class FieldBiGRUNet(nn.Module):
    """Per-date convolutions, field-masked mean, bidirectional GRU, linear head.

    Args:
        in_channels: bands per date.
        n_classes: output classes.
        conv_widths: channels of each convolution.
        kernel_sizes: odd kernel size of each convolution.
        norm_groups: groups of the field-masked GroupNorm.
        hidden_size: GRU hidden size per direction.
        num_layers: stacked bidirectional GRU layers.
        dropout: dropout between GRU layers.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        n_classes: int,
        conv_widths: list[int],
        kernel_sizes: list[int],
        norm_groups: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        widths = [in_channels, *conv_widths]
        self.convs = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], k, padding=k // 2, bias=False)
            for i, k in enumerate(kernel_sizes)
        )
        self.norms = nn.ModuleList(MaskedGroupNorm(norm_groups, w) for w in conv_widths)
        self.gru = nn.GRU(
            input_size=conv_widths[-1],
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
            bidirectional=True,
        )
        self.head = nn.Linear(2 * hidden_size, n_classes)

    def forward(self, x: Tensor, field_mask: Tensor, pad_mask: Tensor) -> Tensor:
        """``x`` ``[B, T, C, H, W]``, ``field_mask`` ``[B, H, W]`` -> logits ``[B, K]``."""
        b, t = pad_mask.shape
        valid = ~pad_mask
        # -- spatial encoding of the valid dates, inside the field only
        frames = x[valid]
        mask = field_mask[:, None].expand(b, t, *field_mask.shape[1:])[valid]
        out = frames * mask[:, None].to(frames.dtype)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            out = F.elu(norm(conv(out), mask))  # norm zeroes outside the field; elu(0) = 0

        # -- masked field averaging
        m = mask[:, None].to(out.dtype)
        pooled = (out * m).sum(dim=(2, 3)) / m.sum(dim=(2, 3)).clamp_min(1.0)
        series = scatter_frames(pooled, pad_mask)

        # -- temporal encoding: bidirectional GRU over the valid dates
        _, h_n = self.gru(pack_valid_steps(series, pad_mask))
        last = h_n.view(-1, 2, b, h_n.shape[-1])[-1]  # last layer: [direction, B, hidden]
        encoding = last.permute(1, 0, 2).reshape(b, -1)

        # -- head
        logits: Tensor = self.head(encoding)
        return logits


class FieldBiGRU(CropflowModel):
    """:class:`FieldBiGRUNet` as a cropflow model (family ``field_bigru``, field input)."""

    input_kind = "field"

    def __init__(self, config: FieldBiGRUConfig, contract: InputContract) -> None:
        super().__init__(config, contract)
        self.net = FieldBiGRUNet(
            in_channels=self.n_channels,
            n_classes=self.n_classes,
            conv_widths=config.conv_widths,
            kernel_sizes=config.kernel_sizes,
            norm_groups=config.norm_groups,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
        )

    def forward(self, batch: Batch) -> ModelOutput:
        self.check_batch(batch)
        field_mask = batch.require_field_mask()
        return ModelOutput(logits=self.net(batch.x, field_mask, batch.pad_mask))
