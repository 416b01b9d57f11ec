"""U-TAE (Garnot & Landrieu 2021, "Panoptic Segmentation of Satellite Image Time Series with
Convolutional Temporal Attention Networks"; reference code VSainteuf/utae-paps).

Input: an irregular image time series ``[B, T, C, H, W]`` with its dates (day of year or days
since a reference date) and padding mask. Phases of :meth:`UTAENet.forward`:

1. **spatial encoding** -- a convolutional encoder shared by all dates (valid dates only)
   gives feature maps at ``len(encoder_widths)`` resolutions, each halved by a strided conv;
2. **temporal attention** -- an L-TAE at the lowest resolution collapses time for every pixel
   and yields, per head, attention masks over the dates;
3. **temporal aggregation** -- the masks, bilinearly up-sampled, collapse time in the feature
   maps of every higher level (``att_group``: channel group ``g`` uses head ``g``'s mask);
4. **decoding** -- transposed convs go back up, concatenating the collapsed skips;
5. **head** -- output convs to one channel per class.

Sizes: the encoder halves H and W ``len(encoder_widths)-1`` times, so the input is
replicate-padded to a multiple of ``2**(levels-1)`` (and at least twice that, so the lowest
level is >= 2x2) and the logits are cropped back: any H, W works.

Boundary class (Crop2Seg): a boundary class is one more class of the class map, labelled on
parcel edges by the label pipeline; the model treats it as any class. ``config.boundary_class``
names it so that ``build_model`` checks it exists; ``model.boundary_index`` gives its channel.

Differences from the reference: padded dates are dropped before the encoder (not detected
from a pad value) and the L-TAE normalises per date, so padding is exactly ignored; the last
output layer is a plain 1x1 conv (the reference applies BatchNorm + ReLU to the logits).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cropflow.errors import ContractError
from models.base import Batch, CropflowModel, ModelOutput
from models.configs import UTAEConfig
from models.contract import InputContract
from models.layers import TemporalAttentionEncoder, pad_to_multiple, scatter_frames

PaddingMode = Literal["zeros", "reflect", "replicate"]


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(groups, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def _conv(
    d_in: int, d_out: int, norm: str, groups: int, padding_mode: PaddingMode, k: int = 3, s: int = 1
) -> nn.Sequential:
    """Conv (k x k, stride s, 'same' padding for k=3 and halving for k=4, s=2) + norm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(d_in, d_out, k, stride=s, padding=1, padding_mode=padding_mode),
        _norm(norm, d_out, groups),
        nn.ReLU(),
    )


class _DownBlock(nn.Module):
    """Strided 4x4 conv (H/2, W/2), then two 3x3 convs with a residual."""

    def __init__(
        self, d_in: int, d_out: int, norm: str, groups: int, padding_mode: PaddingMode
    ) -> None:
        super().__init__()
        self.down = _conv(d_in, d_in, norm, groups, padding_mode, k=4, s=2)
        self.conv1 = _conv(d_in, d_out, norm, groups, padding_mode)
        self.conv2 = _conv(d_out, d_out, norm, groups, padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv1(self.down(x))
        result: Tensor = out + self.conv2(out)
        return result


class _UpBlock(nn.Module):
    """Transposed 4x4 conv (2H, 2W), concatenation with the 1x1-convolved skip, two convs."""

    def __init__(self, d_in: int, d_out: int, d_skip: int, padding_mode: PaddingMode) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.ConvTranspose2d(d_in, d_out, 4, stride=2, padding=1),
            nn.BatchNorm2d(d_out),
            nn.ReLU(),
        )
        self.skip_conv = nn.Sequential(
            nn.Conv2d(d_skip, d_skip, 1), nn.BatchNorm2d(d_skip), nn.ReLU()
        )
        self.conv1 = _conv(d_out + d_skip, d_out, "batch", 1, padding_mode)
        self.conv2 = _conv(d_out, d_out, "batch", 1, padding_mode)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        out = torch.cat([self.up(x), self.skip_conv(skip)], dim=1)
        out = self.conv1(out)
        result: Tensor = out + self.conv2(out)
        return result


class UTAENet(nn.Module):
    """U-TAE network.

    Args:
        in_channels: bands per date C.
        n_classes: output classes (a boundary class, if any, included).
        encoder_widths: encoder channels per level, highest resolution first.
        decoder_widths: decoder channels per level, highest resolution first; the last equals
            the last encoder width.
        out_conv: hidden widths of the 3x3 output convs before the 1x1 class conv.
        encoder_norm: "group", "batch" or "none" in the encoder (the decoder uses BatchNorm).
        norm_groups: groups of the encoder GroupNorm.
        padding_mode: spatial padding of the convs ("reflect", "zeros", "replicate").
        agg_mode: "att_group", "att_mean" or "mean" (how skips collapse time).
        n_head: L-TAE heads.
        d_model: L-TAE projection width.
        d_k: L-TAE key/query dimension per head.
        dropout: dropout after the L-TAE MLP.
        attention_dropout: dropout on the attention weights.
        max_period: longest period of the date encoding, in days.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        n_classes: int,
        encoder_widths: list[int],
        decoder_widths: list[int],
        out_conv: list[int],
        encoder_norm: str,
        norm_groups: int,
        padding_mode: PaddingMode,
        agg_mode: str,
        n_head: int,
        d_model: int,
        d_k: int,
        dropout: float,
        attention_dropout: float,
        max_period: float,
    ) -> None:
        super().__init__()
        levels = len(encoder_widths)
        self.multiple = 2 ** (levels - 1)
        self.agg_mode = agg_mode
        self.n_head = n_head
        self.in_conv = nn.Sequential(
            _conv(in_channels, encoder_widths[0], encoder_norm, norm_groups, padding_mode),
            _conv(encoder_widths[0], encoder_widths[0], encoder_norm, norm_groups, padding_mode),
        )
        self.downs = nn.ModuleList(
            _DownBlock(
                encoder_widths[i], encoder_widths[i + 1], encoder_norm, norm_groups, padding_mode
            )
            for i in range(levels - 1)
        )
        self.temporal_encoder = TemporalAttentionEncoder(
            in_channels=encoder_widths[-1],
            n_head=n_head,
            d_k=d_k,
            d_model=d_model,
            mlp_widths=[encoder_widths[-1]],
            dropout=dropout,
            attention_dropout=attention_dropout,
            max_period=max_period,
            input_norm="layer",  # on learnt features, as the reference
            input_widths=[],  # the convolutional encoder is the per-date encoder
        )
        self.ups = nn.ModuleList(
            _UpBlock(decoder_widths[i], decoder_widths[i - 1], encoder_widths[i - 1], padding_mode)
            for i in range(levels - 1, 0, -1)
        )
        head: list[nn.Module] = []
        width = decoder_widths[0]
        for w in out_conv:
            head.append(_conv(width, w, "batch", 1, padding_mode))
            width = w
        head.append(nn.Conv2d(width, n_classes, 1))
        self.head = nn.Sequential(*head)

    def forward(self, x: Tensor, dates: Tensor, pad_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``[B, T, C, H, W]`` -> logits ``[B, K, H, W]``, attention ``[B, n_head, T, h, w]``.

        The attention is at the lowest resolution ``h, w`` of the padded input.
        """
        b, t, _, h, w = x.shape
        # -- spatial encoding, shared by the valid dates
        frames = pad_to_multiple(x[~pad_mask], self.multiple, 2 * self.multiple)
        maps = [self.in_conv(frames)]
        for down in self.downs:
            maps.append(down(maps[-1]))
        features = [scatter_frames(m, pad_mask) for m in maps]

        # -- temporal attention (L-TAE) on every pixel of the lowest level
        lowest = features[-1]
        _, _, c_low, h_low, w_low = lowest.shape
        rows = lowest.permute(0, 3, 4, 1, 2).reshape(b * h_low * w_low, t, c_low)
        row_dates = dates[:, None, None, :].expand(b, h_low, w_low, t).reshape(-1, t)
        row_pad = pad_mask[:, None, None, :].expand(b, h_low, w_low, t).reshape(-1, t)
        embedding, attention = self.temporal_encoder(rows, row_dates, row_pad)
        out = embedding.view(b, h_low, w_low, -1).permute(0, 3, 1, 2)
        attention = attention.view(b, h_low, w_low, self.n_head, t).permute(0, 3, 4, 1, 2)

        # -- decoding: collapse time in each skip with the attention masks, go up
        for i, up in enumerate(self.ups):
            skip = self._aggregate(features[-(i + 2)], attention, pad_mask)
            out = up(out, skip)

        # -- head, cropped back to the input size
        logits: Tensor = self.head(out)
        return logits[..., :h, :w], attention

    def _aggregate(self, x: Tensor, attention: Tensor, pad_mask: Tensor) -> Tensor:
        """Collapse ``x`` ``[B, T, C, H, W]`` over time into ``[B, C, H, W]``."""
        b, t, c, h, w = x.shape
        valid = (~pad_mask).to(x.dtype)
        if self.agg_mode == "mean":
            total = (x * valid[:, :, None, None, None]).sum(dim=1)
            return total / valid.sum(dim=1).clamp_min(1.0)[:, None, None, None]
        g = self.n_head
        a = attention
        if a.shape[-2:] != (h, w):
            a = F.interpolate(
                a.reshape(b, g * t, *a.shape[-2:]), size=(h, w), mode="bilinear"
            ).view(b, g, t, h, w)
        a = (a * valid[:, None, :, None, None]).to(x.dtype)
        if self.agg_mode == "att_mean":
            return torch.einsum("bthw,btchw->bchw", a.mean(dim=1), x)
        grouped = x.view(b, t, g, c // g, h, w)
        return torch.einsum("bgthw,btgchw->bgchw", a, grouped).reshape(b, c, h, w)


class UTAE(CropflowModel):
    """:class:`UTAENet` as a cropflow model (family ``utae``, patch input, any dates)."""

    input_kind = "patch"

    def __init__(self, config: UTAEConfig, contract: InputContract) -> None:
        super().__init__(config, contract)
        names = contract.class_map.names
        #: Output channel of the boundary class, or None.
        self.boundary_index: int | None = None
        if config.boundary_class is not None:
            if config.boundary_class not in names:
                raise ContractError(
                    f"utae boundary_class {config.boundary_class!r} is not in the contract's "
                    f"classes {names}",
                    hint="add the boundary class to the class map, or unset boundary_class",
                )
            self.boundary_index = names.index(config.boundary_class)
        self.net = UTAENet(
            in_channels=self.n_channels,
            n_classes=self.n_classes,
            encoder_widths=config.encoder_widths,
            decoder_widths=config.decoder_widths,
            out_conv=config.out_conv,
            encoder_norm=config.encoder_norm,
            norm_groups=config.norm_groups,
            padding_mode=config.padding_mode,
            agg_mode=config.agg_mode,
            n_head=config.n_head,
            d_model=config.d_model,
            d_k=config.d_k,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            max_period=config.max_period,
        )

    def forward(self, batch: Batch) -> ModelOutput:
        self.check_batch(batch)
        logits, _ = self.net(batch.x, batch.dates, batch.pad_mask)
        return ModelOutput(logits=logits)
