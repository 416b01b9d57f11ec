"""The summary of a training set: samples and classes per split, warnings, reports."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from cropflow.classes import ClassMap
from cropflow.labels.options import SPLIT_NAMES


class TrainingSetSummary(BaseModel):
    """What a training set holds, returned by the build and shown as a Prefect table."""

    uri: str = Field(description="Where the training set was written.")
    name: str
    kind: str = Field(description="pixel, patch or field.")
    unit: str = Field(description="What class counts count: pixels (labelled) or fields.")
    bands: list[str]
    n_time: int
    n_samples: dict[str, int] = Field(description="Samples (pixels, patches, fields) per split.")
    class_counts: dict[str, dict[str, int]] = Field(description="split -> class -> count.")
    warnings: list[str] = Field(default_factory=list)
    reports: dict[str, Any] = Field(default_factory=dict, description="Per-step reports.")
    seconds: float = Field(0.0, description="Wall time of the build.")

    def table(self) -> list[dict[str, Any]]:
        """One row per class with its count in each split (for a table artifact)."""
        classes = list(next(iter(self.class_counts.values()), {}).keys())
        rows = [
            {"class": name} | {s: self.class_counts[s].get(name, 0) for s in SPLIT_NAMES}
            for name in classes
        ]
        rows.append({"class": f"samples ({self.kind})"} | dict(self.n_samples))
        return rows

    def markdown(self) -> str:
        """A short description: where, what, and the warnings."""
        lines = [f"Training set `{self.name}` ({self.kind}, {self.unit}) at `{self.uri}`"]
        lines += [f"- warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def class_warnings(counts: dict[str, dict[str, int]], class_map: ClassMap) -> list[str]:
    """Classes of the class map absent from the data or present in one split only; empty
    splits."""
    out: list[str] = []
    for name in class_map.names:
        where = [s for s in SPLIT_NAMES if counts[s].get(name, 0) > 0]
        if not where:
            out.append(f"class {name!r} is in the class map but has no samples")
        elif len(where) == 1:
            out.append(f"class {name!r} has samples in the {where[0]} split only")
    empty = [s for s in SPLIT_NAMES if sum(counts[s].values()) == 0]
    if empty:
        out.append(f"splits without samples: {empty}")
    return out
