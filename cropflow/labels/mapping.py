"""The label mapping file: raw crop codes or OSM-style tags -> class names and ids.

Format (YAML)::

    source_column: crop_code        # column of the raw code (or OSM tag key) in the label file
    unknown: drop                   # policy for raw codes not listed: error | drop | other
    other_class: other              # the class that receives unknown codes (policy "other")
    classes:                        # order = model output order; ids are raster values
      - {name: winter_wheat, id: 1, color: "#d8b365", codes: [115, 116]}
      - {name: forest, id: 9, color: "#1b7837", codes: ["landuse=forest", "natural=wood"]}
      - {name: other, id: 20, color: "#bbbbbb", codes: []}

Matching rules:

- codes are compared as text; integral numbers match whatever their type in the file
  (``115``, ``115.0`` and ``"115"`` are one code);
- a ``key=value`` code matches a feature whose column ``key`` holds ``value`` (OSM tags as
  columns), or whose ``source_column`` value is the text ``key=value`` itself;
- a feature matching codes of several classes gets the first class in file order;
- a code listed under two classes is an error; so are two names on one id (ClassMap's rule).

Unknown codes (and missing values) follow ``unknown``: ``error`` refuses the file naming the
codes, ``drop`` removes the features and reports the codes with their counts, ``other`` gives
them the class named by ``other_class`` (which must be listed, usually with no codes).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from cropflow.classes import IGNORE_INDEX, ClassDef, ClassMap
from cropflow.errors import ConfigError, LabelError

UnknownPolicy = Literal["error", "drop", "other"]

#: Name under which missing raw values are reported.
MISSING_CODE = "<missing>"


def normalize_code(value: Any) -> str | None:
    """One text form per raw code: ``115``, ``115.0`` and ``" 115"`` all become ``"115"``."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    text = str(value).strip()
    if not text:
        return None
    # numeric text such as "115.0" is the same code as 115
    try:
        number = float(text)
    except ValueError:
        return text
    if (
        math.isfinite(number)
        and number.is_integer()
        and text.lstrip("+-").replace(".", "", 1).isdigit()
    ):
        return str(int(number))
    return text


class MappedClass(BaseModel):
    """One output class and the raw codes that become it."""

    name: str = Field(min_length=1, description="Class name, e.g. 'winter_wheat'.")
    id: int = Field(ge=0, lt=IGNORE_INDEX, description="Raster / tensor value of the class.")
    color: str = Field("#808080", pattern=r"^#[0-9a-fA-F]{6}$", description="Map colour.")
    codes: list[str | int | float] = Field(
        default_factory=list, description="Raw codes or 'key=value' tags of this class."
    )
    description: str = ""


class LabelMapping(BaseModel):
    """A parsed mapping file (see the module docstring for the format)."""

    source_column: str = Field(description="Column of the raw code (or OSM tag key).")
    unknown: UnknownPolicy = Field(
        "error", description="What to do with raw codes not listed: error | drop | other."
    )
    other_class: str = Field("other", description="Class receiving unknown codes (policy other).")
    classes: list[MappedClass] = Field(min_length=1, description="Output classes, in order.")

    @model_validator(mode="after")
    def _consistent(self) -> LabelMapping:
        self.class_map  # noqa: B018 - ClassMap refuses duplicate names and ids
        seen: dict[str, str] = {}
        for cls in self.classes:
            for code in cls.codes:
                key = normalize_code(code)
                if key is None:
                    raise ConfigError(
                        f"class {cls.name!r} lists an empty code", hint="remove the empty code"
                    )
                if key in seen and seen[key] != cls.name:
                    raise ConfigError(
                        f"raw code {key!r} is listed under two classes: "
                        f"{seen[key]!r} and {cls.name!r}",
                        hint="list every raw code under one class only",
                    )
                seen[key] = cls.name
        if self.unknown == "other" and self.other_class not in [c.name for c in self.classes]:
            raise ConfigError(
                f"unknown: other needs a class named {self.other_class!r}, which is not listed",
                hint=f"add '- {{name: {self.other_class}, id: <free id>, codes: []}}' to classes, "
                "or set other_class to a listed class",
            )
        return self

    @property
    def class_map(self) -> ClassMap:
        """The legend that travels with the training set and the model."""
        return ClassMap(
            classes=[
                ClassDef(id=c.id, name=c.name, color=c.color, description=c.description)
                for c in self.classes
            ]
        )

    def code_table(self) -> dict[str, int]:
        """Normalised raw code -> position of its class in ``classes``."""
        return {
            key: pos
            for pos, cls in enumerate(self.classes)
            for key in (normalize_code(code) for code in cls.codes)
            if key is not None
        }

    def tag_keys(self) -> list[str]:
        """Keys of the ``key=value`` codes, in first-seen order."""
        keys: list[str] = []
        for key in self.code_table():
            if "=" in key:
                tag = key.split("=", 1)[0].strip()
                if tag not in keys:
                    keys.append(tag)
        return keys


class MappingReport(BaseModel):
    """What the mapping did to a label table."""

    policy: UnknownPolicy
    n_features: int
    n_mapped: int = Field(description="Features that got a listed class from their code.")
    n_other: int = Field(0, description="Unknown features sent to the 'other' class.")
    n_dropped: int = Field(0, description="Unknown features removed (policy drop).")
    unknown_codes: dict[str, int] = Field(
        default_factory=dict, description="Unknown raw code -> number of features."
    )


def load_mapping(path: str | Path) -> LabelMapping:
    """Read and validate a mapping YAML file; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"label mapping file not found: {path}",
            hint="give the path of a mapping YAML (source_column, unknown, classes)",
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"label mapping {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"label mapping {path} must be a mapping with source_column, unknown and classes",
            hint="see cropflow.labels.mapping for the format",
        )
    try:
        return LabelMapping.model_validate(raw)
    except ConfigError as exc:
        raise ConfigError(f"label mapping {path}: {exc.message}", hint=exc.hint) from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(
            f"label mapping {path} is invalid: {problems}",
            hint="see cropflow.labels.mapping for the format",
        ) from exc


def classify(table: pd.DataFrame, mapping: LabelMapping) -> np.ndarray:
    """Position in ``mapping.classes`` of each row's class, or -1 where no code matches."""
    if mapping.source_column not in table.columns:
        raise LabelError(
            f"label column {mapping.source_column!r} (source_column of the mapping) is not in "
            f"the labels; columns are {[str(c) for c in table.columns]}",
            hint="set source_column in the mapping file to the column holding the raw codes",
        )
    codes = mapping.code_table()
    big = len(mapping.classes)
    best = np.full(len(table), big, dtype=np.int64)

    def lookup(keys: pd.Series) -> np.ndarray:
        pos = keys.map(lambda k: codes.get(k, big) if isinstance(k, str) else big)
        return pos.to_numpy(dtype=np.int64)

    plain = table[mapping.source_column].map(normalize_code)
    best = np.minimum(best, lookup(plain))
    prefixed = plain.map(lambda v: None if v is None else f"{mapping.source_column}={v}")
    best = np.minimum(best, lookup(prefixed))
    for key in mapping.tag_keys():
        if key in table.columns and key != mapping.source_column:
            values = table[key].map(normalize_code)
            tagged = values.map(lambda v, k=key: None if v is None else f"{k}={v}")
            best = np.minimum(best, lookup(tagged))
    return np.where(best == big, -1, best)


def apply_mapping(
    table: pd.DataFrame, mapping: LabelMapping, *, source: str = "labels"
) -> tuple[pd.DataFrame, MappingReport]:
    """Add ``class_id`` and ``class_name`` columns; handle unknown codes per the policy.

    ``source`` names the label file in error messages.
    """
    pos = classify(table, mapping)
    unknown = pos < 0
    raw = table[mapping.source_column].map(normalize_code).fillna(MISSING_CODE)
    counts: dict[Hashable, int] = raw[unknown].value_counts().to_dict()
    unknown_codes = {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}
    report = MappingReport(
        policy=mapping.unknown,
        n_features=len(table),
        n_mapped=int((~unknown).sum()),
        unknown_codes=unknown_codes,
    )
    if unknown.any():
        if mapping.unknown == "error":
            shown = dict(list(unknown_codes.items())[:20])
            raise LabelError(
                f"{source}: {int(unknown.sum())} features have raw codes the mapping does not "
                f"list (code: count): {shown}",
                hint="add the codes to a class in the mapping, or set 'unknown: drop' or "
                "'unknown: other'",
            )
        if mapping.unknown == "other":
            other_pos = [c.name for c in mapping.classes].index(mapping.other_class)
            pos = np.where(unknown, other_pos, pos)
            report.n_other = int(unknown.sum())
        else:
            report.n_dropped = int(unknown.sum())
    keep = pos >= 0
    out = table.loc[keep].copy()
    kept = pos[keep]
    out["class_id"] = np.array([mapping.classes[p].id for p in kept], dtype=np.uint8)
    out["class_name"] = [mapping.classes[p].name for p in kept]
    return out, report
