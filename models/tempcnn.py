"""TempCNN (Pelletier, Webb & Petitjean 2019): temporal 1D convolutions for pixel series.

Three (by default) blocks of Conv1d over time + BatchNorm + ReLU + dropout keep the time axis,
which is then flattened (so the number of dates T is fixed by the contract) and fed to a
dense layer + BatchNorm + ReLU + dropout and a linear classifier. Dates are not used: the
input is a regular series (composites). Padded steps are set to 0, the band mean. In training,
Gaussian noise on the normalised input (``input_noise``) regularises the flatten + dense layer,
which has most of the weights and overfits a small training set first.
"""

from __future__ import annotations

from torch import Tensor, nn

from models.base import Batch, CropflowModel, ModelOutput
from models.configs import TempCNNConfig
from models.contract import InputContract
from models.layers import BatchNorm1dAnyBatch, GaussianNoise


class TempCNNNet(nn.Module):
    """TempCNN network.

    Args:
        in_channels: bands per date.
        n_time: number of dates T (fixed: the flatten layer depends on it).
        n_classes: output classes.
        conv_widths: filters of each temporal convolution block.
        kernel_size: odd temporal kernel size ("same" padding keeps T).
        hidden_size: width of the dense layer.
        dropout: dropout after each block and the dense layer.
        input_noise: std of the Gaussian noise added to the normalised input in training
            (0: none).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        n_time: int,
        n_classes: int,
        conv_widths: list[int],
        kernel_size: int,
        hidden_size: int,
        dropout: float,
        input_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.noise = GaussianNoise(input_noise)
        blocks: list[nn.Module] = []
        width = in_channels
        for w in conv_widths:
            blocks += [
                nn.Conv1d(width, w, kernel_size, padding=kernel_size // 2),
                nn.BatchNorm1d(w),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
            width = w
        self.encoder = nn.Sequential(*blocks)
        self.dense = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width * n_time, hidden_size),
            BatchNorm1dAnyBatch(hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, x: Tensor, pad_mask: Tensor) -> Tensor:
        """``x`` ``[B, T, C]``, ``pad_mask`` ``[B, T]`` -> logits ``[B, K]``."""
        # -- input noise (training only)
        x = self.noise(x)
        # -- padded dates become the band mean (no copy of a batch without padding)
        if bool(pad_mask.any()):
            x = x.masked_fill(pad_mask.unsqueeze(-1), 0.0)
        # -- temporal convolutions (channels first)
        features = self.encoder(x.transpose(1, 2))
        # -- flatten + dense
        hidden = self.dense(features)
        # -- classifier
        logits: Tensor = self.head(hidden)
        return logits


class TempCNN(CropflowModel):
    """:class:`TempCNNNet` as a cropflow model (family ``tempcnn``, pixel input, fixed T)."""

    input_kind = "pixel"

    def __init__(self, config: TempCNNConfig, contract: InputContract) -> None:
        super().__init__(config, contract)
        self.net = TempCNNNet(
            in_channels=self.n_channels,
            n_time=self.required_n_time(),
            n_classes=self.n_classes,
            conv_widths=config.conv_widths,
            kernel_size=config.kernel_size,
            hidden_size=config.hidden_size,
            dropout=config.dropout,
            input_noise=config.input_noise,
        )

    def forward(self, batch: Batch) -> ModelOutput:
        self.check_batch(batch)
        return ModelOutput(logits=self.net(batch.x, batch.pad_mask))
