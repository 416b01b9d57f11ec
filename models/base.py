"""The model interface: typed configs, batch and output containers, the base class, the builder.

Every family in :mod:`models` is built the same way::

    config = parse_model_config({"name": "ltae", "d_model": 128})
    model = build_model(config, contract)          # a CropflowModel
    output = model(Batch(x=x, dates=dates, pad_mask=pad_mask))
    loss = model.loss(output, target)

``build_model`` takes the number of input channels from ``len(contract.bands)``, the number
of classes from ``contract.class_map`` and, for the families that need a fixed number of time
steps (TempCNN, U-Net), ``contract.n_time``. It refuses a config whose input kind differs
from the contract's.

Conventions shared by all families
----------------------------------
* ``x`` holds normalised values (``(value - mean) / std`` with the contract's statistics) in
  the contract's band order, so 0 is the band mean.
* ``dates`` are integers, ``[B, T]``: either the day of year (1..366) or days since a reference
  date (e.g. the season start; may exceed 366 and be negative). Which one a model was trained
  with is recorded in its config field ``dates`` (families that use dates). Models that ignore
  dates (TempCNN, U-Net, the LSTM and the BiGRU) assume the steps are in time order.
* ``pad_mask`` is ``[B, T]`` bool, True where a date is padding or missing. What a padded step
  contains never changes the output: attention and recurrent families skip it, fixed-length
  families (TempCNN, U-Net) see it as 0 (the band mean).
* Targets are class *indices* (positions in ``contract.class_map.classes``), not class ids;
  ``class_map.ignore_index`` marks unlabelled samples/pixels. :func:`ids_to_indices` converts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cropflow.classes import ClassMap
from cropflow.errors import ConfigError, ContractError
from models.configs import (  # noqa: F401 - the configs, re-exported beside the modules
    FAMILY_NAMES,
    CropMaskLSTMConfig,
    DateKind,
    FieldBiGRUConfig,
    InputKind,
    LTAEConfig,
    ModelConfig,
    SegFormerConfig,
    TempCNNConfig,
    UNetConfig,
    UTAEConfig,
    model_config_json_schema,
    parse_model_config,
)
from models.contract import InputContract

# --------------------------------------------------------------------------------------------
# Batch and output containers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One batch of model input.

    Attributes:
        x: pixel models ``[B, T, C]``; patch and field models ``[B, T, C, H, W]``; float.
        dates: ``[B, T]`` integer dates (day of year, or days since a reference date).
        pad_mask: ``[B, T]`` bool, True = padded/missing date, to be ignored.
        field_mask: field models only: ``[B, H, W]`` bool, True inside the field.
    """

    x: Tensor
    dates: Tensor
    pad_mask: Tensor
    field_mask: Tensor | None = None

    @classmethod
    def dense(
        cls, x: Tensor, dates: Tensor | None = None, field_mask: Tensor | None = None
    ) -> Batch:
        """A batch without padding; ``dates`` default to ``0, 1, ..., T-1`` for every sample."""
        b, t = x.shape[0], x.shape[1]
        if dates is None:
            dates = torch.arange(t, device=x.device).expand(b, t)
        pad_mask = torch.zeros(b, t, dtype=torch.bool, device=x.device)
        return cls(x=x, dates=dates, pad_mask=pad_mask, field_mask=field_mask)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """The same batch on another device."""
        fm = self.field_mask
        return replace(
            self,
            x=self.x.to(device, non_blocking=non_blocking),
            dates=self.dates.to(device, non_blocking=non_blocking),
            pad_mask=self.pad_mask.to(device, non_blocking=non_blocking),
            field_mask=None if fm is None else fm.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> Batch:
        """The same batch in pinned memory (DataLoader(pin_memory=True) calls this)."""
        fm = self.field_mask
        return replace(
            self,
            x=self.x.pin_memory(),
            dates=self.dates.pin_memory(),
            pad_mask=self.pad_mask.pin_memory(),
            field_mask=None if fm is None else fm.pin_memory(),
        )

    def require_field_mask(self) -> Tensor:
        """``field_mask``, or a ContractError if the batch has none."""
        if self.field_mask is None:
            raise ContractError(
                "this batch has no field_mask, which field models need",
                hint="pass the field's rasterised polygon as Batch.field_mask [B, H, W] bool",
            )
        return self.field_mask

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_time(self) -> int:
        return int(self.x.shape[1])


@dataclass(frozen=True)
class ModelOutput:
    """What every model returns.

    Attributes:
        logits: ``[B, K]`` (pixel and field models) or ``[B, K, H, W]`` (patch models), one
            channel per class of the contract's class map, in its order.
        aux_logits: the crop-mask model's local head, ``[B]`` (one logit: positive vs not);
            None for every other family.
    """

    logits: Tensor
    aux_logits: Tensor | None = None


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def ids_to_indices(ids: Tensor, class_map: ClassMap) -> Tensor:
    """Class ids (raster values) to class indices (model outputs); unknown ids are ignored.

    ``class_map.ignore_index`` and any id not in the class map become ``ignore_index``.
    """
    lut = torch.full((256,), class_map.ignore_index, dtype=torch.long, device=ids.device)
    for index, class_id in enumerate(class_map.ids):
        lut[class_id] = index
    ids = ids.long()
    inside = (ids >= 0) & (ids < 256)
    return torch.where(inside, lut[ids.clamp(0, 255)], class_map.ignore_index)


# --------------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------------


#: The state-dict key of the calibration temperature.
TEMPERATURE_KEY = "temperature"


class CropflowModel(nn.Module):
    """Base class of every family: a torch module that knows its config and contract.

    Subclasses set ``input_kind`` and implement ``forward(batch) -> ModelOutput``; the default
    :meth:`loss` is cross-entropy over ``logits`` with the class map's ``ignore_index``.
    """

    input_kind: ClassVar[InputKind]

    def __init__(self, config: ModelConfig, contract: InputContract) -> None:
        super().__init__()
        check_contract(config, contract)
        self.config = config
        self.contract = contract
        self.n_channels = len(contract.bands)
        self.n_classes = len(contract.class_map.classes)
        self.ignore_index = contract.class_map.ignore_index
        #: Fixed number of time steps (families that need one), else None.
        self.n_time: int | None = contract.n_time if config.needs_n_time else None
        #: Softmax temperature fitted on the validation split (1: not calibrated). Class
        #: probabilities are ``softmax(logits / temperature)``; the class does not depend on it.
        self.temperature: Tensor
        self.register_buffer(TEMPERATURE_KEY, torch.ones(()))

    def forward(self, batch: Batch) -> ModelOutput:
        raise NotImplementedError

    def probabilities(self, logits: Tensor) -> Tensor:
        """Calibrated class probabilities of ``logits`` (softmax over axis 1), float32."""
        return torch.softmax(logits.float() / self.temperature.float(), dim=1)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """As :meth:`torch.nn.Module.load_state_dict`; weights saved before calibration
        existed load with temperature 1."""
        if TEMPERATURE_KEY not in state_dict:
            state_dict = {**state_dict, TEMPERATURE_KEY: torch.ones(())}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def required_n_time(self) -> int:
        """The contract's fixed number of time steps (families that need one)."""
        if self.n_time is None:
            raise ContractError(
                f"model {self.config.name!r} needs a fixed number of time steps",
                hint="set n_time in the contract",
            )
        return self.n_time

    def __call__(self, batch: Batch) -> ModelOutput:  # typed nn.Module.__call__
        out: ModelOutput = super().__call__(batch)
        return out

    @property
    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def check_batch(self, batch: Batch) -> None:
        """Refuse a batch whose shapes do not fit this model (naming expected and actual)."""
        x = batch.x
        spatial = self.input_kind in ("patch", "field")
        want = "[B, T, C, H, W]" if spatial else "[B, T, C]"
        if x.ndim != (5 if spatial else 3):
            raise ContractError(
                f"{self.config.name} takes {self.input_kind} input {want}, got x of shape "
                f"{tuple(x.shape)}",
                hint=f"give x as {want}",
            )
        b, t, c = x.shape[0], x.shape[1], x.shape[2]
        if c != self.n_channels:
            raise ContractError(
                f"{self.config.name} expects {self.n_channels} channels {self.contract.bands}, "
                f"x has {c}",
                hint="stack the contract's bands, in its order, on axis 2",
            )
        if self.n_time is not None and t != self.n_time:
            raise ContractError(
                f"{self.config.name} expects {self.n_time} time steps, x has {t}",
                hint="build the input over the contract's season and period",
            )
        if tuple(batch.dates.shape) != (b, t) or tuple(batch.pad_mask.shape) != (b, t):
            raise ContractError(
                f"dates {tuple(batch.dates.shape)} and pad_mask {tuple(batch.pad_mask.shape)} "
                f"must both be [B, T] = {(b, t)}",
                hint="give one date and one pad flag per sample and time step",
            )
        if batch.pad_mask.dtype != torch.bool:
            raise ContractError(
                f"pad_mask must be bool (True = padded), got {batch.pad_mask.dtype}",
                hint="pass pad_mask as a bool tensor",
            )
        if self.input_kind == "field":
            fm = batch.require_field_mask()
            want_fm = (b, int(x.shape[3]), int(x.shape[4]))
            if tuple(fm.shape) != want_fm or fm.dtype != torch.bool:
                raise ContractError(
                    f"{self.config.name} needs field_mask as bool [B, H, W] = {want_fm}, "
                    f"got {fm.dtype} {tuple(fm.shape)}",
                    hint="pass the field's rasterised polygon as Batch.field_mask",
                )

    def loss(
        self,
        output: ModelOutput,
        target: Tensor,
        weight: Tensor | None = None,
        *,
        aux_target: Tensor | None = None,
        aux_mask: Tensor | None = None,
    ) -> Tensor:
        """Mean cross-entropy of ``output.logits`` against class indices ``target``.

        Args:
            output: this model's output.
            target: ``[B]`` or ``[B, H, W]`` class indices; ``ignore_index`` is skipped.
            weight: optional per-class weights ``[K]``.
            aux_target, aux_mask: only for families with an auxiliary head (crop-mask LSTM).
        """
        if aux_target is not None or aux_mask is not None:
            raise ConfigError(
                f"{self.config.name} has no auxiliary head, but aux_target/aux_mask were given",
                hint="pass them only to the crop_mask_lstm model",
            )
        return masked_cross_entropy(output.logits, target, weight, self.ignore_index)


def masked_cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int
) -> Tensor:
    """Cross-entropy (float32) that is 0, not NaN, when every target is ``ignore_index``."""
    target = target.long()
    if not bool((target != ignore_index).any()):
        return logits.float().sum() * 0.0
    w = None if weight is None else weight.float().to(logits.device)
    return F.cross_entropy(logits.float(), target, weight=w, ignore_index=ignore_index)


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------


def _family_class(name: str) -> type[CropflowModel]:
    # Imported here: the family modules import this one.
    from models.crop_mask import CropMaskLSTM
    from models.field import FieldBiGRU
    from models.ltae import LTAEClassifier
    from models.segformer import SegFormer
    from models.tempcnn import TempCNN
    from models.unet import UNet
    from models.utae import UTAE

    families: dict[str, type[CropflowModel]] = {
        "crop_mask_lstm": CropMaskLSTM,
        "tempcnn": TempCNN,
        "ltae": LTAEClassifier,
        "unet": UNet,
        "utae": UTAE,
        "field_bigru": FieldBiGRU,
        "segformer": SegFormer,
    }
    return families[name]


def build_model(config: ModelConfig, contract: InputContract) -> CropflowModel:
    """The model of ``config``'s family, sized by ``contract`` (bands, classes, time steps)."""
    check_contract(config, contract)
    return _family_class(config.name)(config, contract)


def check_contract(config: ModelConfig, contract: InputContract) -> None:
    """Refuse a config that cannot run on data of ``contract`` (naming both)."""
    if config.input_kind != contract.input_kind:
        raise ContractError(
            f"model {config.name!r} takes {config.input_kind!r} input but the contract's "
            f"input_kind is {contract.input_kind!r}",
            hint=f"use a {contract.input_kind} family, or build a {config.input_kind} contract",
        )
    if config.needs_n_time and contract.n_time is None:
        raise ContractError(
            f"model {config.name!r} needs a fixed number of time steps but the contract has "
            f"n_time=None (time_kind={contract.time_kind!r})",
            hint="set n_time in the contract (composites), or use ltae/utae for irregular dates",
        )
