"""SegFormer on stacked composites, as lulc-utility segments its Sentinel-1/2 + DEM feature space.

Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic Segmentation with
Transformers" (NeurIPS). Written from the paper, trained from scratch (no downloaded weights):

- **input**: the composites ``[T, C, H, W]`` stacked into ``T*C`` channels (fixed T, dates
  unused), padded steps set to 0 (the band mean);
- **encoder** (Mix Transformer, "MiT"): four stages, each an overlapping patch embedding (a
  strided convolution), ``depths[i]`` transformer blocks and a LayerNorm. A block is efficient
  self-attention, whose keys and values come from the stage map shrunk by ``sr_ratios[i]`` (a
  strided convolution), and a Mix-FFN (linear, 3x3 depth-wise convolution, GELU, linear) that
  gives position information without positional encodings. Stage ``i`` works at 1/4, 1/8,
  1/16, 1/32 of the input with the default strides;
- **decoder** (all-MLP): each stage's features projected to ``decoder_dim`` by a linear layer,
  up-sampled to the first stage's resolution, concatenated, fused by a 1x1 convolution
  (+BatchNorm+ReLU), dropout, a 1x1 convolution to the classes, up-sampled to the input.

Any H, W works: the input is replicate-padded so that every stage and every spatial reduction
divides exactly, and the logits are cropped back to H, W.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import Batch, CropflowModel, ModelOutput
from models.configs import SegFormerConfig
from models.contract import InputContract
from models.layers import pad_to_multiple


class _OverlapPatchEmbed(nn.Module):
    """Strided convolution with overlap (kernel > stride), then LayerNorm over channels."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(out_ch)

    def forward(self, x: Tensor) -> tuple[Tensor, int, int]:
        """``[B, C, H, W]`` -> tokens ``[B, h*w, D]`` and the map size ``h, w``."""
        x = self.proj(x)
        h, w = x.shape[-2:]
        tokens: Tensor = self.norm(x.flatten(2).transpose(1, 2))
        return tokens, h, w


class _EfficientSelfAttention(nn.Module):
    """Multi-head self-attention with keys/values from a map shrunk ``sr_ratio`` times."""

    def __init__(self, dim: int, n_head: int, sr_ratio: int, attention_dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attention_dropout = attention_dropout
        self.sr: nn.Module | None = None
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.sr_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, n, d = x.shape
        q = self.q(x).reshape(b, n, self.n_head, d // self.n_head).transpose(1, 2)
        source = x
        if self.sr is not None:
            grid = x.transpose(1, 2).reshape(b, d, h, w)
            source = self.sr_norm(self.sr(grid).flatten(2).transpose(1, 2))
        kv = self.kv(source).reshape(b, -1, 2, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        p = self.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], dropout_p=p)
        projected: Tensor = self.proj(out.transpose(1, 2).reshape(b, n, d))
        return projected


class _MixFFN(nn.Module):
    """Linear -> 3x3 depth-wise convolution -> GELU -> linear."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b = x.shape[0]
        y = self.fc1(x)
        y = self.dw(y.transpose(1, 2).reshape(b, -1, h, w)).flatten(2).transpose(1, 2)
        out: Tensor = self.drop(self.fc2(self.drop(F.gelu(y))))
        return out


class _Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MixFFN(LN(x))."""

    def __init__(
        self,
        dim: int,
        n_head: int,
        sr_ratio: int,
        mlp_ratio: int,
        dropout: float,
        attention_dropout: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _EfficientSelfAttention(dim, n_head, sr_ratio, attention_dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = _MixFFN(dim, dim * mlp_ratio, dropout)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        out: Tensor = x + self.ffn(self.norm2(x), h, w)
        return out


class _Stage(nn.Module):
    """Patch embedding, ``depth`` blocks, LayerNorm; returns a feature map ``[B, D, h, w]``."""

    def __init__(
        self,
        in_ch: int,
        dim: int,
        *,
        kernel: int,
        stride: int,
        depth: int,
        n_head: int,
        sr_ratio: int,
        mlp_ratio: int,
        dropout: float,
        attention_dropout: float,
    ) -> None:
        super().__init__()
        self.embed = _OverlapPatchEmbed(in_ch, dim, kernel, stride)
        self.blocks = nn.ModuleList(
            _Block(dim, n_head, sr_ratio, mlp_ratio, dropout, attention_dropout)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        tokens, h, w = self.embed(x)
        for block in self.blocks:
            tokens = block(tokens, h, w)
        normed: Tensor = self.norm(tokens)
        return normed.transpose(1, 2).reshape(x.shape[0], -1, h, w)


def input_multiple(strides: list[int], sr_ratios: list[int]) -> int:
    """The side every input is padded to a multiple of, so that each stage's map divides by
    its stride and by its spatial-reduction ratio exactly."""
    multiple, scale = 1, 1
    for stride, sr in zip(strides, sr_ratios, strict=True):
        scale *= stride
        multiple = math.lcm(multiple, scale * sr)
    return multiple


class SegFormerNet(nn.Module):
    """SegFormer over ``T*C`` stacked channels.

    Args:
        in_channels: bands per date C.
        n_time: dates T (stacked into ``T*C`` input channels).
        n_classes: output classes.
        hidden_sizes: channels of each encoder stage (MiT-b0: 32, 64, 160, 256).
        depths: transformer blocks per stage.
        n_heads: attention heads per stage (each divides its hidden size).
        sr_ratios: spatial reduction of keys/values per stage.
        patch_sizes: kernel of each stage's overlapping patch embedding.
        strides: stride of each stage's patch embedding (4, 2, 2, 2: 1/4 ... 1/32).
        mlp_ratio: Mix-FFN hidden width as a multiple of the stage's width.
        decoder_dim: channels of the all-MLP decoder.
        dropout: dropout in the Mix-FFN and before the classifier.
        attention_dropout: dropout on the attention weights.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        n_time: int,
        n_classes: int,
        hidden_sizes: list[int],
        depths: list[int],
        n_heads: list[int],
        sr_ratios: list[int],
        patch_sizes: list[int],
        strides: list[int],
        mlp_ratio: int,
        decoder_dim: int,
        dropout: float,
        attention_dropout: float,
    ) -> None:
        super().__init__()
        self.multiple = input_multiple(strides, sr_ratios)
        widths = [in_channels * n_time, *hidden_sizes]
        self.stages = nn.ModuleList(
            _Stage(
                widths[i],
                widths[i + 1],
                kernel=patch_sizes[i],
                stride=strides[i],
                depth=depths[i],
                n_head=n_heads[i],
                sr_ratio=sr_ratios[i],
                mlp_ratio=mlp_ratio,
                dropout=dropout,
                attention_dropout=attention_dropout,
            )
            for i in range(len(hidden_sizes))
        )
        self.project = nn.ModuleList(nn.Linear(d, decoder_dim) for d in hidden_sizes)
        self.fuse = nn.Sequential(
            nn.Conv2d(decoder_dim * len(hidden_sizes), decoder_dim, 1, bias=False),
            nn.BatchNorm2d(decoder_dim),
            nn.ReLU(inplace=True),
        )
        self.drop = nn.Dropout2d(dropout)
        self.classify = nn.Conv2d(decoder_dim, n_classes, 1)

    def forward(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        """``x`` ``[B, T, C, H, W]``, ``pad_mask`` ``[B, T]`` -> logits ``[B, K, H, W]``."""
        b, t, c, h, w = x.shape
        # -- stack dates as channels (padded dates = band mean), pad to the stage multiple
        x = x.masked_fill(pad_mask[:, :, None, None, None], 0.0)
        stacked = pad_to_multiple(x.reshape(b, t * c, h, w), self.multiple, self.multiple)

        # -- hierarchical encoding: one feature map per stage, each coarser than the last
        features: list[Tensor] = []
        out = stacked
        for stage in self.stages:
            out = stage(out)
            features.append(out)

        # -- all-MLP decoding: project each stage, up-sample to the first stage's size, fuse
        size = features[0].shape[-2:]
        decoded = []
        for feature, project in zip(features, self.project, strict=True):
            y = project(feature.flatten(2).transpose(1, 2)).transpose(1, 2)
            y = y.reshape(b, -1, *feature.shape[-2:])
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            decoded.append(y)
        fused = self.fuse(torch.cat(decoded[::-1], dim=1))

        # -- classes, up-sampled to the padded input and cropped back to H, W
        logits = self.classify(self.drop(fused))
        logits = F.interpolate(
            logits, size=stacked.shape[-2:], mode="bilinear", align_corners=False
        )
        return logits[..., :h, :w]


class SegFormer(CropflowModel):
    """:class:`SegFormerNet` as a cropflow model (family ``segformer``, patch input, fixed T)."""

    input_kind = "patch"

    def __init__(self, config: SegFormerConfig, contract: InputContract) -> None:
        super().__init__(config, contract)
        self.net = SegFormerNet(
            in_channels=self.n_channels,
            n_time=self.required_n_time(),
            n_classes=self.n_classes,
            hidden_sizes=list(config.hidden_sizes),
            depths=list(config.depths),
            n_heads=list(config.n_heads),
            sr_ratios=list(config.sr_ratios),
            patch_sizes=list(config.patch_sizes),
            strides=list(config.strides),
            mlp_ratio=config.mlp_ratio,
            decoder_dim=config.decoder_dim,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
        )

    def forward(self, batch: Batch) -> ModelOutput:
        self.check_batch(batch)
        return ModelOutput(logits=self.net(batch.x, batch.pad_mask))
