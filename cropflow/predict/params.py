"""Prediction parameters: the one typed home of every prediction default.

The Prefect UI form of the ``predict`` flow and the ``cropflow predict`` command both read
:class:`PredictParams`; nothing else repeats these defaults.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cropflow.errors import ConfigError

#: Samples per forward pass on CPU when ``batch_size`` is "auto", by input kind. On a GPU
#: "auto" starts here and grows or shrinks to fit the device's free memory. Batches always
#: have this many samples (the last one of a tile padded), so that a pixel's result never
#: depends on the tiling; a smaller pixel batch wastes less on a tile's last batch.
AUTO_BATCH: dict[str, int] = {"pixel": 2048, "patch": 8, "field": 16}
#: The tile side of ``tile_size="auto"`` for pixel and field models
#: (:func:`cropflow.predict.tiling.auto_tile_side`).
AUTO_TILE = 256
#: The largest automatic tile side (a patch model's tile holds its read window in memory).
AUTO_TILE_MAX = 512
#: Patch strides an automatic tile spans at least, up to :data:`AUTO_TILE_MAX`.
AUTO_TILE_STRIDES = 16

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PredictOptions(BaseModel):
    """How to predict, whatever the cube: model, tiling, devices, products.

    The chained flows (remap of a region) take these and add the cube they built; see
    :meth:`PredictParams.of`.
    """

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None,
        description="Model to use: a registry alias of the registered model (champion, "
        "challenger), or an MLflow model URI (models:/name/3, models:/m-<id>, runs:/<id>/model). "
        "None: the registry's default, the champion.",
    )
    fields: str | None = Field(
        None,
        description="Field polygons (GeoPackage, GeoParquet, GeoJSON, ...). Needed by field "
        "models; with any model they add the per-field results product.",
    )
    field_id_column: str | None = Field(
        None, description="Column of `fields` holding a field id. None: the row number."
    )
    tile_size: Annotated[int, Field(ge=16, le=8192)] | Literal["auto"] = Field(
        "auto",
        description="Side of a tile in pixels (also the output chunk). auto: 256; for patch "
        "models up to 512, so that a tile spans 16 patch strides (a patch across a tile border "
        "runs once in each tile: 1.12x the model's work at 16 strides, 1.25x at 8).",
    )
    patch_overlap: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="Patch models: overlap of neighbouring patches, as a fraction of the "
        "patch size (0 = patches side by side, no blending).",
    )
    blend: Literal["hann", "uniform"] = Field(
        "hann",
        description="Patch models: weight of a patch's pixels when overlapping patches are "
        "averaged (hann: a raised-cosine window that fades towards the patch edges).",
    )
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Samples per forward pass (pixels, patches or fields). auto: a default per "
        "input kind on CPU, sized to free memory on a GPU.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: every CUDA GPU when present (one model copy each), else CPU."
    )
    executor: Literal["auto", "dask", "local"] = Field(
        "auto",
        description="Where CPU tiles run. dask: on the Dask cluster of the settings "
        "(LocalCluster unless an address is set); local: in this process. auto: local on a "
        "GPU, dask on CPU.",
    )
    resume: bool = Field(
        True,
        description="Keep tiles finished by an earlier, interrupted run of the same prediction "
        "(same cube, model and tiling). False: predict every tile again.",
    )
    products: bool = Field(True, description="Build and publish the map products.")
    in_season: Literal["truncation", "forecast"] = Field(
        "truncation",
        description="An in-season cube (built with as_of, the end of its season not yet "
        "observed): 'truncation' maps with the model itself, which must have been trained on "
        "truncated seasons (augment.truncation; refused when it needs more steps than the "
        "cube has); 'forecast' completes each series with the season forecaster trained "
        "beside the model (its MLflow run's forecaster), then classifies. A whole-season cube "
        "ignores this.",
    )

    tta: Literal["none", "flips", "dihedral"] = Field(
        "none",
        title="Test-time augmentation",
        description="Patch and field models: average the class probabilities over flipped "
        "(4 views: as is, left-right, up-down, both) or all 8 dihedral views (rotations by 90 "
        "degrees, each also flipped) of every tile, each mapped back before averaging; the "
        "probability and confidence products reflect the average. Costs 4 or 8 forward "
        "passes. Pixel models see no geometry: refused for them.",
    )

    ensemble: list[str] = Field(
        default_factory=list,
        title="Ensemble members",
        description="Further models whose class probabilities are averaged with the model's "
        "(each calibrated by its own temperature): registry aliases or versions of the "
        "registered model, or MLflow model URIs, e.g. the same family trained with other "
        "seeds. They must take the model's bands, steps and normalisation and give its "
        "classes. The class, probability and confidence products then show the average. "
        "Costs one forward pass per member. Empty: the model alone.",
    )

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_from_text(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value


class PredictParams(PredictOptions):
    """Everything one prediction run needs. Defaults here are the only ones."""

    cube: str = Field(description="Path or URI of the datacube Zarr to map.")
    key: str | None = Field(
        None,
        description="Name of the prediction (predictions/<key>.zarr). None: the cube's name.",
    )
    region: str | None = Field(
        None, description="Name of the product folder (products/<region>/). None: the key."
    )
    registered_model: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Registered model (MLflow) whose alias `model` names. None: "
        "settings.mlflow.registered_model (a region's runs use the region's).",
    )
    pinned_from: str | None = Field(
        None,
        description="The registry alias `model` was pinned from at the start of the run "
        "(recorded with the products); None when `model` was given as is.",
    )

    @field_validator("key", "region")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and not _KEY_RE.match(value):
            raise ConfigError(
                f"name {value!r} is not usable as a folder name",
                hint="use letters, digits, '.', '_' and '-', starting with a letter or digit",
            )
        return value

    @classmethod
    def of(
        cls,
        options: PredictOptions,
        cube: str,
        region: str | None = None,
        model_alias: str | None = None,
        registered_model: str | None = None,
    ) -> PredictParams:
        """``options`` applied to ``cube``; a region's ``model_alias`` overrides the model,
        which is looked up in ``registered_model`` (the region's)."""
        data = options.model_dump()
        if model_alias is not None:
            data["model"] = model_alias
        return cls(cube=cube, region=region, registered_model=registered_model, **data)

    def pinned(self) -> PredictParams:
        """These parameters with the model alias replaced by the registry version holding it
        now (:func:`cropflow.train.pin_model`); a URI of one version is kept as it is.

        A run that pins first predicts with one version from start to end, and its cached
        prediction is keyed by that version: a promotion never serves an old map."""
        from cropflow.train import pin_model

        pin = pin_model(self.model, self.registered_model)
        if pin.alias is None:  # a URI that names one model already
            return self
        return self.model_copy(update={"model": pin.uri, "pinned_from": pin.alias})

    def prediction_key(self) -> str:
        """The prediction's name: ``key``, else the cube's file name without ``.zarr``."""
        if self.key:
            return self.key
        stem = Path(self.cube.rstrip("/")).name
        stem = stem.removesuffix(".zarr") or "prediction"
        safe = re.sub(r"[^A-Za-z0-9_.-]", "-", stem).lstrip(".-_") or "prediction"
        return safe

    def region_name(self) -> str:
        """The product folder's name: ``region``, else the prediction key."""
        return self.region or self.prediction_key()
