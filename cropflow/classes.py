"""Class lists: names, ids and colours that travel from labels to training sets to models to maps.

A :class:`ClassMap` is the single description of a legend. Training sets store it, model input
contracts carry it, map products embed it (colour map and class names). Classes are referred to
by name everywhere; ids exist only for rasters and tensors.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from cropflow.errors import ConfigError

#: Label value of pixels that carry no label (excluded from losses and metrics).
IGNORE_INDEX = 255


class ClassDef(BaseModel):
    """One class of a legend."""

    id: int = Field(ge=0, lt=IGNORE_INDEX, description="Value in rasters and tensors.")
    name: str = Field(min_length=1, description="Unique class name, e.g. 'winter_wheat'.")
    color: str = Field("#808080", pattern=r"^#[0-9a-fA-F]{6}$", description="Map colour.")
    description: str = ""


class ClassMap(BaseModel):
    """An ordered legend. Ids need not be contiguous, but names and ids must be unique."""

    classes: list[ClassDef] = Field(min_length=1)
    ignore_index: int = IGNORE_INDEX

    @model_validator(mode="after")
    def _unique(self) -> ClassMap:
        names = [c.name for c in self.classes]
        ids = [c.id for c in self.classes]
        dup_names = sorted({n for n in names if names.count(n) > 1})
        dup_ids = sorted({i for i in ids if ids.count(i) > 1})
        if dup_names:
            raise ConfigError(
                f"class names used twice: {dup_names}", hint="give each class one name"
            )
        if dup_ids:
            by_id = {i: [c.name for c in self.classes if c.id == i] for i in dup_ids}
            raise ConfigError(
                f"class ids used by more than one class: {by_id}",
                hint="give each class its own id",
            )
        return self

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def ids(self) -> list[int]:
        return [c.id for c in self.classes]

    def id_of(self, name: str) -> int:
        for c in self.classes:
            if c.name == name:
                return c.id
        raise ConfigError(f"unknown class name {name!r}", hint=f"use one of {self.names}")

    def name_of(self, class_id: int) -> str:
        for c in self.classes:
            if c.id == class_id:
                return c.name
        raise ConfigError(f"unknown class id {class_id}", hint=f"use one of {self.ids}")

    def index_of(self, name: str) -> int:
        """Position of a class in the model's output (ordered as listed)."""
        return self.names.index(self.name_of(self.id_of(name)))
