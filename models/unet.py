"""U-Net on stacked composites, as in agri_strat (jjurm/crop-segmentation, after S4A-Models).

The composites ``[T, C, H, W]`` (e.g. monthly medians) are stacked into ``T*C`` input
channels, so T is fixed by the contract and dates are not used. A classic U-Net follows:
double 3x3 conv (+BatchNorm+ReLU) per level, max-pool down, transposed conv (or bilinear)
up, skip concatenation, 1x1 conv to the classes. Padded steps are set to 0 (the band mean).

Any H, W works: the input is replicate-padded to a multiple of ``2**(depth-1)`` (and at least
twice that, so that BatchNorm at the lowest level never sees a single value when training on
one patch) and the logits are cropped back to H, W.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.base import Batch, CropflowModel, ModelOutput
from models.configs import UNetConfig
from models.contract import InputContract
from models.layers import pad_to_multiple


def _double_conv(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class _Up(nn.Module):
    """Up-sample by 2, concatenate the skip, double conv."""

    def __init__(self, in_ch: int, out_ch: int, bilinear: bool) -> None:
        super().__init__()
        self.up: nn.Module
        if bilinear:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_ch, in_ch // 2, 1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, 2, stride=2)
        self.conv = _double_conv(in_ch // 2 + out_ch, out_ch)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        out: Tensor = self.conv(torch.cat([skip, self.up(x)], dim=1))
        return out


class UNetNet(nn.Module):
    """U-Net over ``T*C`` stacked channels.

    Args:
        in_channels: bands per date C.
        n_time: dates T (stacked into ``T*C`` input channels).
        n_classes: output classes.
        depth: resolution levels; ``depth-1`` down-samplings by 2.
        base_width: channels at full resolution, doubled at each level.
        bilinear: up-sample bilinearly + 1x1 conv instead of a transposed convolution.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        n_time: int,
        n_classes: int,
        depth: int,
        base_width: int,
        bilinear: bool,
    ) -> None:
        super().__init__()
        self.multiple = 2 ** (depth - 1)
        widths = [base_width * 2**i for i in range(depth)]
        self.in_conv = _double_conv(in_channels * n_time, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _double_conv(widths[i], widths[i + 1]))
            for i in range(depth - 1)
        )
        self.ups = nn.ModuleList(
            _Up(widths[i + 1], widths[i], bilinear) for i in reversed(range(depth - 1))
        )
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        """``x`` ``[B, T, C, H, W]``, ``pad_mask`` ``[B, T]`` -> logits ``[B, K, H, W]``."""
        b, t, c, h, w = x.shape
        # -- stack dates as channels (padded dates = band mean), pad to the level multiple
        x = x.masked_fill(pad_mask[:, :, None, None, None], 0.0)
        stacked = pad_to_multiple(x.reshape(b, t * c, h, w), self.multiple, 2 * self.multiple)

        # -- encoding
        features = [self.in_conv(stacked)]
        for down in self.downs:
            features.append(down(features[-1]))

        # -- decoding with skips
        out = features[-1]
        for up, skip in zip(self.ups, reversed(features[:-1]), strict=True):
            out = up(out, skip)

        # -- head, cropped back to the input size
        logits: Tensor = self.head(out)
        return logits[..., :h, :w]


class UNet(CropflowModel):
    """:class:`UNetNet` as a cropflow model (family ``unet``, patch input, fixed T)."""

    input_kind = "patch"

    def __init__(self, config: UNetConfig, contract: InputContract) -> None:
        super().__init__(config, contract)
        self.net = UNetNet(
            in_channels=self.n_channels,
            n_time=self.required_n_time(),
            n_classes=self.n_classes,
            depth=config.depth,
            base_width=config.base_width,
            bilinear=config.bilinear,
        )

    def forward(self, batch: Batch) -> ModelOutput:
        self.check_batch(batch)
        return ModelOutput(logits=self.net(batch.x, batch.pad_mask))
