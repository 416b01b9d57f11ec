"""L-TAE pixel classifier (Garnot & Landrieu 2020, "Lightweight Temporal Self-Attention").

Each pixel's series ``[T, C]`` of irregular dates is projected to ``d_model`` channels, a
sinusoidal encoding of its dates (day of year, or days since a reference date) is added, and
``n_head`` heads, each with one learnt master query, pool the dates into one embedding; an
MLP classifier gives the logits. Padded dates get zero attention, so any number of dates
works and padding never changes the output. See :class:`models.layers.TemporalAttentionEncoder`.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from models.base import Batch, CropflowModel, ModelOutput
from models.configs import LTAEConfig
from models.contract import InputContract
from models.layers import TemporalAttentionEncoder, linear_bn_relu


class LTAENet(nn.Module):
    """L-TAE encoder followed by an MLP classifier.

    Args:
        in_channels: bands per date.
        n_classes: output classes.
        n_head: attention heads.
        d_k: key/query dimension per head.
        d_model: projection width (multiple of ``n_head``).
        mlp_widths: MLP after the heads; its last width is the embedding size.
        decoder_widths: hidden widths of the classifier (Linear + BatchNorm + ReLU each).
        dropout: dropout after the attention MLP.
        attention_dropout: dropout on the attention weights.
        max_period: longest period of the date encoding, in days.
        input_norm: per-date normalisation of the input (see
            :class:`models.layers.TemporalAttentionEncoder`): ``"none"`` for standardised bands.
        input_widths: per-date encoder widths before the attention (``[]`` for none).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        n_classes: int,
        n_head: int,
        d_k: int,
        d_model: int,
        mlp_widths: list[int],
        decoder_widths: list[int],
        dropout: float,
        attention_dropout: float,
        max_period: float,
        input_norm: Literal["layer", "none"],
        input_widths: list[int],
    ) -> None:
        super().__init__()
        self.encoder = TemporalAttentionEncoder(
            in_channels=in_channels,
            n_head=n_head,
            d_k=d_k,
            d_model=d_model,
            mlp_widths=mlp_widths,
            dropout=dropout,
            attention_dropout=attention_dropout,
            max_period=max_period,
            input_norm=input_norm,
            input_widths=input_widths,
        )
        width = self.encoder.out_channels
        hidden = linear_bn_relu(width, decoder_widths)
        last = decoder_widths[-1] if decoder_widths else width
        self.decoder = nn.Sequential(*hidden, nn.Linear(last, n_classes))

    def forward(self, x: Tensor, dates: Tensor, pad_mask: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``[B, T, C]`` -> logits ``[B, K]`` and attention ``[B, n_head, T]``."""
        # -- temporal attention encoding
        embedding, attention = self.encoder(x, dates, pad_mask)
        # -- classifier
        logits: Tensor = self.decoder(embedding)
        return logits, attention


class LTAEClassifier(CropflowModel):
    """:class:`LTAENet` as a cropflow model (family ``ltae``, pixel input, any dates)."""

    input_kind = "pixel"

    def __init__(self, config: LTAEConfig, contract: InputContract) -> None:
        super().__init__(config, contract)
        self.net = LTAENet(
            in_channels=self.n_channels,
            n_classes=self.n_classes,
            n_head=config.n_head,
            d_k=config.d_k,
            d_model=config.d_model,
            mlp_widths=config.mlp_widths,
            decoder_widths=config.decoder_widths,
            dropout=config.dropout,
            attention_dropout=config.attention_dropout,
            max_period=config.max_period,
            input_norm=config.input_norm,
            input_widths=config.input_widths,
        )

    def forward(self, batch: Batch) -> ModelOutput:
        self.check_batch(batch)
        logits, _ = self.net(batch.x, batch.dates, batch.pad_mask)
        return ModelOutput(logits=logits)
