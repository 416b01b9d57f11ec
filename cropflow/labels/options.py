"""Training-set options and parameters: the one typed home of their defaults, light to import
(pydantic and the standard library: the CLI and the Prefect forms read them without loading
geopandas, rasterio or xarray). The label modules that use them import them from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cropflow.errors import ConfigError
from cropflow.settings import get_settings

Kind = Literal["pixel", "patch", "field"]


SplitName = Literal["train", "val", "test"]


#: Split names in code order: a split raster or array holds the position in this tuple.
SPLIT_NAMES: tuple[SplitName, ...] = ("train", "val", "test")


#: Code of pixels or samples in no split.
NO_SPLIT = 255


#: What a split-file value means: a split, or ``none`` (its pixels are in no split).
LayerValue = Literal["train", "val", "test", "none"]


#: Split-file values understood without ``layer_values`` (compared case-insensitively).
DEFAULT_LAYER_VALUES: dict[str, LayerValue] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def _normalise_value(value: object) -> str:
    """A split-file value as compared with the value map: text, stripped, lower case."""
    return str(value).strip().lower()


class SplitFractions(BaseModel):
    """Shares of labelled pixels (or samples) per split; they sum to 1."""

    model_config = ConfigDict(extra="forbid")

    #: Whether the training share must be positive (see :class:`RuleFractions`).
    require_train: ClassVar[bool] = True

    train: float = Field(0.7, ge=0, le=1, description="Share of the training split.")
    val: float = Field(0.15, ge=0, le=1, description="Share of the validation split.")
    test: float = Field(0.15, ge=0, le=1, description="Share of the test split.")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:g}")
        if self.require_train and self.train <= 0:
            raise ValueError("the training split must have a positive fraction")
        return self

    def as_array(self) -> np.ndarray:
        return np.array([getattr(self, s) for s in SPLIT_NAMES], dtype=float)


class RuleFractions(SplitFractions):
    """Fractions of a final stratified rule: the training share may be 0 when an earlier rule
    selects train units (checked by :class:`SplitRules`)."""

    require_train: ClassVar[bool] = False


#: Side of the split blocks when neither the run nor the region sets one, in pixels.
DEFAULT_BLOCK_PX = 64


class SplitOptions(BaseModel):
    """How samples are split into train / val / test."""

    model_config = ConfigDict(extra="forbid")

    block_size_px: int | None = Field(
        None,
        ge=1,
        description="Side of the spatial blocks, in pixels (a multiple of the patch size and "
        f"stride keeps most patches). None: the region's split_block_px, else {DEFAULT_BLOCK_PX}.",
    )
    fractions: SplitFractions = Field(
        default_factory=SplitFractions,
        description="Default shares of the splits (with a split file only the ratio train : "
        "val is used, to carve val from the train area).",
    )
    seed: int = Field(0, description="Seed of the split assignment (deterministic).")
    rules_path: str | None = Field(None, description="YAML split rules (bbox/tile/year/...).")
    layer_path: str | None = Field(
        None,
        description="Split file: polygons of train, val and test areas (GeoPackage, "
        "GeoParquet, Shapefile or GeoJSON, in any CRS). A pixel takes the split of the polygon "
        "holding its centre; pixels in no polygon (the gaps between areas) are in no split. "
        "Replaces split rules; of the fractions only the val share is used, to carve val from "
        "the train area when the file has no val polygon on the cube.",
    )
    layer_name: str | None = Field(
        None, description="Layer of a multi-layer split file (GeoPackage); default: the first."
    )
    layer_column: str = Field(
        "split", description="Column of the split file that names each polygon's split."
    )
    layer_values: dict[str, LayerValue] = Field(
        default_factory=dict,
        description="Values of the split column and the split each means: train, val, test, "
        "or none (a gap drawn as a polygon: its pixels are in no split). Added to the "
        "defaults train/training, val/valid/validation, test/testing; case-insensitive.",
    )
    crossing: Literal["cut", "drop"] = Field(
        "cut",
        description="Fields that a split file's lines cut: cut: each part becomes a field of "
        "its own in its own split (parts outside every polygon are left out); drop: the field "
        "loses its labels (so does a field partly outside every polygon). Point labels are "
        "always cut.",
    )

    @model_validator(mode="after")
    def _one_way_to_split(self) -> SplitOptions:
        if self.layer_path is not None and self.rules_path is not None:
            raise ConfigError(
                f"both a split file (layer_path={self.layer_path!r}) and split rules "
                f"(rules_path={self.rules_path!r}) are given",
                hint="give layer_path or rules_path, not both",
            )
        seen: dict[str, LayerValue] = {}
        for key, value in self.layer_values.items():
            norm = _normalise_value(key)
            if seen.get(norm, value) != value:
                raise ConfigError(
                    f"layer_values maps {norm!r} (case-insensitive) to both {seen[norm]} and "
                    f"{value}",
                    hint="give each split-file value one split in layer_values",
                )
            seen[norm] = value
        return self

    @property
    def block_px(self) -> int:
        """The split blocks' side in pixels: ``block_size_px``, else the default."""
        return self.block_size_px or DEFAULT_BLOCK_PX

    def layer_value_map(self) -> dict[str, LayerValue]:
        """Split of each (normalised) split-file value: the defaults, then ``layer_values``."""
        out = dict(DEFAULT_LAYER_VALUES)
        out.update({_normalise_value(k): v for k, v in self.layer_values.items()})
        return out


class RasterizeOptions(BaseModel):
    """How labels become pixels."""

    model_config = ConfigDict(extra="forbid")

    all_touched: bool = Field(
        False, description="Label every pixel a polygon touches (else: pixel centre inside)."
    )
    inward_buffer_px: float = Field(
        0.0, ge=0, description="Shrink polygons by this many pixels before labelling."
    )
    boundary_class: str | None = Field(
        None, description="Class name (in the mapping) for field boundary pixels (Crop2Seg)."
    )
    boundary_width_px: int = Field(1, ge=1, description="Width of the boundary ring, pixels.")
    point_window: int = Field(
        1, ge=1, description="Points label a window of this many pixels square (odd)."
    )


class SampleOptions(BaseModel):
    """What a training set holds."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(
        "pixel",
        description="pixel: time series per pixel; patch: T x C x H x W patches; "
        "field: pixel sets per field.",
    )
    bands: list[str] | None = Field(None, description="Cube variables to sample (default: all).")
    patch_size: int = Field(32, ge=1, description="Patch side, pixels (patch kind).")
    patch_stride: int | None = Field(
        None, ge=1, description="Step between patches, pixels (default: the patch size)."
    )
    min_labelled_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Keep patches with at least this share of labelled pixels (and at least one).",
    )


class StatsOptions(BaseModel):
    """Statistics stored with a training set."""

    model_config = ConfigDict(extra="forbid")

    class_weight_blend: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Class weights: 0 = inverse frequency, 1 = uniform, in between a linear blend.",
    )


#: Training set names become file names.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class LabelSource(BaseModel):
    """A label file and how to read it."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="GeoPackage, GeoParquet, Shapefile, GeoJSON or CSV of points.")
    mapping_path: str = Field(description="Label mapping YAML (raw codes -> classes).")
    layer: str | None = Field(None, description="Layer of a multi-layer file (GeoPackage).")
    crs: str | None = Field(
        None, description="CRS of CSV x/y columns, or to assign to a file without one."
    )
    field_column: str | None = Field(
        None, description="Field id column (default: field_id, fid, parcel_id, field or id)."
    )
    labeller_column: str | None = Field(
        None, description="Labeller column of points (default: labeller, labeler, ...)."
    )
    repair_invalid: bool = Field(True, description="Repair invalid polygons (else refuse).")


class TrainingSetOptions(BaseModel):
    """How to build a training set, apart from which cube and labels (chained flows fill those).

    The one home of the training-set defaults: :class:`TrainingSetParams` adds the inputs.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field("training-set", pattern=NAME_PATTERN, description="Name of the training set.")
    out_uri: str | None = Field(
        None, description="Where to write it (default: <workdir>/training-sets/<name>.zarr)."
    )
    rasterize: RasterizeOptions = Field(default_factory=RasterizeOptions)
    samples: SampleOptions = Field(default_factory=SampleOptions)
    splits: SplitOptions = Field(default_factory=SplitOptions)
    stats: StatsOptions = Field(default_factory=StatsOptions)
    tile: str | None = Field(None, description="Tile id of the cube (for tile split rules).")
    year: int | None = Field(
        None, description="Season year (for year split rules; default: the cube's last year)."
    )


class TrainingSetParams(TrainingSetOptions):
    """Everything that defines a training set built from a cube and labels."""

    cube_uri: str = Field(description="The datacube (Zarr) to sample.")
    labels: LabelSource

    @classmethod
    def of(
        cls, options: TrainingSetOptions, cube_uri: str, labels: LabelSource
    ) -> TrainingSetParams:
        """The full parameters from options and the two inputs."""
        return cls(**options.model_dump(), cube_uri=cube_uri, labels=labels)

    def output(self) -> Path:
        """The training set's path."""
        return output_path(self.name, self.out_uri)

    def parts(self) -> Path:
        """Where the intermediate steps write."""
        out = self.output()
        return out.parent / f"{out.stem}.parts"


def output_path(name: str, out_uri: str | None) -> Path:
    """``out_uri`` as a path, or ``<workdir>/training-sets/<name>.zarr``."""
    if out_uri:
        return Path(out_uri.removeprefix("file://"))
    return get_settings().workdir / "training-sets" / f"{name}.zarr"
