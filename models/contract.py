"""The input contract: what a model expects of the data it is given.

A contract is stored with every trained model (MLflow artifact ``contract.json``) and checked
before training and before prediction, so that a model never silently sees bands in another
order, another number of time steps, or another normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

from cropflow.classes import ClassMap
from cropflow.errors import ContractError


class BandStats(BaseModel):
    """Normalisation of one band: ``(value - mean) / std``."""

    mean: float
    std: float = Field(gt=0)


class InputContract(BaseModel):
    """Bands, time steps, normalisation and classes a model was trained with."""

    bands: list[str] = Field(min_length=1, description="Band names, in the model's input order.")
    input_kind: Literal["pixel", "patch", "field"] = Field(
        description="pixel: N x T x C series; patch: T x C x H x W; field: pixel sets per field."
    )
    time_kind: Literal["composite", "acquisition"] = Field(
        description="composite: fixed periods (n_time fixed); acquisition: irregular dates."
    )
    n_time: int | None = Field(
        None, ge=1, description="Number of time steps (required for composites)."
    )
    period: str | None = Field(None, description="Composite period, e.g. '1MS' (composites).")
    min_steps: int | None = Field(
        None,
        ge=1,
        description="Composites: the leading steps that must be observed for a map (the last "
        "date the model needs is the end of step min_steps). None: every step (a model trained "
        "on whole seasons); fewer for a model trained on truncated seasons.",
    )
    normalisation: dict[str, BandStats] = Field(description="Per-band statistics, by band name.")
    class_map: ClassMap
    patch_size: int | None = Field(None, ge=1, description="Patch side in pixels (patch models).")

    def check_bands(self, available: Sequence[str]) -> None:
        """Refuse data that lacks any of the contract's bands (naming both lists)."""
        missing = [b for b in self.bands if b not in available]
        if missing:
            raise ContractError(
                f"model expects bands {self.bands} but the data has {list(available)} "
                f"(missing {missing})",
                hint="build the cube with the model's bands, or use a model trained on these"
                + (
                    " (variables <source>_<band> come from the region's sources, e.g. s1_vv "
                    "from a source named s1)"
                    if any("_" in b for b in missing)
                    else ""
                ),
            )

    def check_time(self, n_time: int, period: str | None = None) -> None:
        """Refuse data with another number of composite periods or another period length."""
        if self.time_kind != "composite":
            return
        if self.n_time is not None and n_time != self.n_time:
            raise ContractError(
                f"model expects {self.n_time} time steps of period {self.period!r}, "
                f"the data has {n_time}",
                hint="build the cube over the same season and period as the training cube",
            )
        if period is not None and self.period is not None and period != self.period:
            raise ContractError(
                f"model expects composite period {self.period!r}, the data has {period!r}",
                hint="build the cube with the model's period",
            )

    def needed_steps(self) -> int | None:
        """Leading composite steps the model needs observed (None: not a composite model)."""
        if self.time_kind != "composite" or self.n_time is None:
            return None
        return min(self.min_steps or self.n_time, self.n_time)

    def check_observed(self, observed: int, as_of: str | None = None) -> None:
        """Refuse an in-season cube with fewer observed leading steps than the model needs."""
        needed = self.needed_steps()
        if needed is None or observed >= needed:
            return
        when = f" as of {as_of}" if as_of else ""
        raise ContractError(
            f"the model needs the first {needed} of its {self.n_time} time steps observed, the "
            f"cube{when} has {observed}",
            hint="map later in the season, or use a model trained with augment.truncation "
            "(min_steps <= the observed steps), or the region's forecast strategy",
        )

    def check_classes(self, class_map: ClassMap) -> None:
        """Refuse a training set whose classes differ from the model's (naming both lists)."""
        if class_map.names != self.class_map.names or class_map.ids != self.class_map.ids:
            raise ContractError(
                f"model classes {self.class_map.names} differ from the data's {class_map.names}",
                hint="train with the training set's class map",
            )
