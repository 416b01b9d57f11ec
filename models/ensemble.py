"""An ensemble of models trained for one contract: the average of their class probabilities.

Members are typically the same family trained with k seeds (``TrainParams.seed``), or any
families trained on the same training set: what they must share is what the input to them is
(bands, steps, normalisation, patch size, input kind, date encoding) and what comes out (the
class map). Each member's probabilities are calibrated by its own temperature before the
average, so a member that is overconfident does not dominate.

The ensemble answers like a model (:class:`models.base.ModelOutput`): its ``logits`` are the
log of the averaged probabilities, so ``softmax(logits)`` gives the average back and
``argmax`` is the ensemble's class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn

from cropflow.errors import ContractError
from models.base import Batch, CropflowModel, ModelOutput
from models.contract import InputContract

#: Floor of an averaged probability before its log (a class no member gives any chance).
_MIN_PROB = 1e-12


def _date_kind(model: CropflowModel) -> str:
    return str(getattr(model.config, "dates", "day_of_year"))


def check_members(members: Sequence[CropflowModel], names: Sequence[str] | None = None) -> None:
    """Refuse members that do not take the same input or give the same classes, naming the
    member and the first field that differs.

    Args:
        members: the models, at least one.
        names: how to call each member in a message (e.g. its URI); default "member <i>".
    """
    if not members:
        raise ContractError(
            "an ensemble needs at least one model", hint="give the models to average"
        )
    labels = list(names) if names is not None else [f"member {i}" for i in range(len(members))]
    first: InputContract = members[0].contract
    reference = first.model_dump(mode="json")
    for label, member in zip(labels[1:], members[1:], strict=True):
        other = member.contract.model_dump(mode="json")
        differ = [k for k in reference if reference[k] != other.get(k)]
        if differ:
            raise ContractError(
                f"ensemble member {label} was trained for another input or class map than "
                f"{labels[0]}: its {', '.join(differ)} differ",
                hint="average models trained on the same training set (e.g. one family with "
                "several seeds)",
            )
        if _date_kind(member) != _date_kind(members[0]):
            raise ContractError(
                f"ensemble member {label} reads its dates as {_date_kind(member)!r}, "
                f"{labels[0]} as {_date_kind(members[0])!r}",
                hint="average models whose families encode dates alike",
            )


class ModelEnsemble(nn.Module):
    """The average of the calibrated class probabilities of several models.

    Args:
        members: models trained for one contract (see :func:`check_members`), in eval mode
            or not (the ensemble's ``eval()`` sets them all).
        names: how to name each member in errors (e.g. its model URI).

    Attributes:
        contract: the members' shared contract.
        config: the first member's config (its date encoding is every member's).
        temperature: 1: each member's own temperature is applied before the average.
    """

    def __init__(
        self, members: Sequence[CropflowModel], names: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        check_members(members, names)
        self.members = nn.ModuleList(members)
        self.contract: InputContract = members[0].contract
        self.config: Any = members[0].config
        self.ignore_index: int = members[0].ignore_index
        self.n_time: int | None = members[0].n_time
        self.temperature: Tensor
        self.register_buffer("temperature", torch.ones(()), persistent=False)

    @property
    def size(self) -> int:
        """Number of members."""
        return len(self.members)

    def forward(self, batch: Batch) -> ModelOutput:
        # phase 1: each member's class probabilities, calibrated by its own temperature
        probs = [
            cast(CropflowModel, member).probabilities(member(batch).logits)
            for member in self.members
        ]
        # phase 2: the average, as log-probabilities (softmax of them is the average)
        mean = torch.stack(probs).mean(dim=0)
        return ModelOutput(logits=torch.log(mean.clamp_min(_MIN_PROB)))

    def __call__(self, batch: Batch) -> ModelOutput:  # typed nn.Module.__call__
        out: ModelOutput = super().__call__(batch)
        return out
