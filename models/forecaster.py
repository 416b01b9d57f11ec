"""The season forecaster of nasaharvest/crop-mask: complete a partial season, step by step.

crop-mask trains, beside its classifier, an LSTM that forecasts the remaining months of a
pixel's series from the months seen so far; the completed series goes to the classifier
trained on whole seasons, so that a map can be made in season. :class:`SeasonForecaster` does
that on the normalised composites of a contract (any bands, any number of steps):

* **step**: at each step the LSTM reads the observed value, or, where the step is not observed
  (after the in-season cut, or a gap), its own forecast of it; an extra input channel tells
  which (1 = observed);
* **forecast**: a linear head reads the LSTM state after step ``t - 1`` and forecasts step
  ``t`` (step 0 from the zero state: the learned mean first step);
* **complete**: observed steps are kept as they are, the others take the forecast.

Trained (``cropflow.train.forecast``) by cutting each series at a random step and scoring the
forecasts of every observed step: one step ahead before the cut, many steps after it.

Differences from the reference: the reference forecasts with teacher forcing probability
annealed over epochs; here every training series is cut, so the model learns the rollout it
runs in season. Missing steps inside the observed part are forecast too (the cube's gap
filling usually leaves none).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cropflow.errors import ContractError
from models.base import Batch, ModelOutput
from models.configs import ForecasterConfig
from models.contract import InputContract


@dataclass(frozen=True)
class ForecastOutput:
    """What the forecaster returns.

    Attributes:
        forecast: ``[B, T, C]`` the forecast of every step from the steps before it.
        completed: ``[B, T, C]`` observed steps as given, the others forecast.
    """

    forecast: Tensor
    completed: Tensor


class SeasonForecaster(nn.Module):
    """An LSTM that forecasts each composite from the ones before it (see the module doc).

    Args:
        config: hidden size, layers, dropout.
        contract: the classifier's input contract: bands (channels), ``n_time`` composite
            steps, normalisation (the forecaster works on normalised values, as the
            classifier reads them).
    """

    def __init__(self, config: ForecasterConfig, contract: InputContract) -> None:
        super().__init__()
        if contract.time_kind != "composite" or contract.n_time is None:
            raise ContractError(
                "the season forecaster completes composite series of a fixed number of steps; "
                f"this contract has time_kind {contract.time_kind!r}",
                hint="build the cube with a composite period (e.g. '1MS')",
            )
        self.config = config
        self.contract = contract
        self.n_channels = len(contract.bands)
        self.n_time = contract.n_time
        self.lstm = nn.LSTM(
            input_size=self.n_channels + 1,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(config.hidden_size, self.n_channels)

    def forward(self, x: Tensor, observed: Tensor) -> ForecastOutput:
        """Forecast and complete a batch of series.

        Args:
            x: ``[B, T, C]`` normalised values (anything where not observed).
            observed: ``[B, T]`` bool, True where the step was observed.
        """
        b, t, c = x.shape
        if c != self.n_channels or t != self.n_time or tuple(observed.shape) != (b, t):
            raise ContractError(
                f"the forecaster takes x [B, {self.n_time}, {self.n_channels}] and observed "
                f"[B, {self.n_time}], got {tuple(x.shape)} and {tuple(observed.shape)}",
                hint="give the contract's bands and time steps",
            )
        # phase 1: step through the season, feeding observed values or the forecast
        state: tuple[Tensor, Tensor] | None = None
        hidden = x.new_zeros(b, self.config.hidden_size)
        forecasts: list[Tensor] = []
        inputs: list[Tensor] = []
        for step in range(t):
            guess = self.head(hidden)
            seen = observed[:, step, None]
            value = torch.where(seen, x[:, step], guess)
            forecasts.append(guess)
            inputs.append(value)
            out, state = self.lstm(torch.cat([value, seen.to(x.dtype)], dim=1)[:, None], state)
            hidden = out[:, 0]
        # phase 2: the forecast of every step and the completed series
        return ForecastOutput(
            forecast=torch.stack(forecasts, dim=1), completed=torch.stack(inputs, dim=1)
        )

    def __call__(self, x: Tensor, observed: Tensor) -> ForecastOutput:  # typed nn.Module call
        out: ForecastOutput = super().__call__(x, observed)
        return out


class CompletedSeasonModel(nn.Module):
    """A whole-season classifier that maps from a partial season: the forecaster completes
    each pixel's series, the classifier reads the completed series (strategy "forecast").

    Args:
        classifier: a model trained on whole seasons (a :class:`models.base.CropflowModel`).
        forecaster: a :class:`SeasonForecaster` trained on the same bands, steps and
            normalisation.
    Its contract is the classifier's, with the forecaster's ``min_steps``: the fewest observed
    leading steps it maps from.
    """

    def __init__(self, classifier: nn.Module, forecaster: SeasonForecaster) -> None:
        super().__init__()
        contract: InputContract = getattr(classifier, "contract")  # noqa: B009
        if (
            contract.bands != forecaster.contract.bands
            or contract.n_time != forecaster.n_time
            or contract.normalisation != forecaster.contract.normalisation
        ):
            raise ContractError(
                f"the forecaster (bands {forecaster.contract.bands}, {forecaster.n_time} steps) "
                f"was not trained for the classifier (bands {contract.bands}, "
                f"{contract.n_time} steps) or with another normalisation",
                hint="train the forecaster on the classifier's training set",
            )
        self.classifier = classifier
        self.classifier_contract = contract
        self.forecaster = forecaster
        self.config = getattr(classifier, "config")  # noqa: B009 - dates are the classifier's
        self.contract = contract.model_copy(
            update={"min_steps": forecaster.contract.min_steps or 1}
        )

    @property
    def temperature(self) -> Tensor:
        """The classifier's calibration temperature (what the probabilities use)."""
        t = getattr(self.classifier, "temperature", None)
        return t if isinstance(t, Tensor) else torch.ones(())

    def forward(self, batch: Batch) -> ModelOutput:
        x, pad = batch.x, batch.pad_mask
        # phase 1: one series per pixel (patch and field inputs: every pixel of the window)
        if x.ndim == 5:
            b, t, c, h, w = x.shape
            series = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)
            seen = (~pad)[:, None, None, :].expand(b, h, w, t).reshape(b * h * w, t)
        else:
            series, seen = x, ~pad
        # phase 2: complete the season
        completed = self.forecaster(series, seen).completed
        if x.ndim == 5:
            completed = completed.reshape(b, h, w, t, c).permute(0, 3, 4, 1, 2)
        # phase 3: classify the completed series (no step is missing any more)
        full = Batch(
            x=completed,
            dates=batch.dates,
            pad_mask=torch.zeros_like(pad),
            field_mask=batch.field_mask,
        )
        out: ModelOutput = self.classifier(full)
        return out

    def __call__(self, batch: Batch) -> ModelOutput:  # typed nn.Module.__call__
        out: ModelOutput = super().__call__(batch)
        return out
