"""Parameters of the sample design and of the area estimate: their one typed home.

Kept apart from :mod:`cropflow.products.sampling` and :mod:`cropflow.products.estimate` so that
the CLI and the Prefect forms can read them without loading pandas, rasterio or matplotlib
(pydantic only). The ``*Options`` models say how; the ``*Params`` models add the files a
command or a flow works on.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from cropflow.errors import ConfigError

Allocation = Literal["proportional", "equal", "neyman"]
DropOrError = Literal["error", "drop"]
SmallStratum = Literal["error", "warn"]
PureStrata = Literal["wilson", "textbook"]


class SampleDesignOptions(BaseModel):
    """How to design a stratified random sample of a class map (strata = map classes).

    Give either ``n`` or ``target_se``. Defaults here are the only ones."""

    n: int | None = Field(
        None,
        ge=1,
        description="Total number of sample points. None: the smallest n that reaches target_se.",
    )
    target_se: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Target standard error of the overall accuracy (or, with target_class, "
        "of that class's estimated area proportion), anticipated from the user's accuracies "
        "below; sets n (Olofsson et al. 2014, eq. 13). E.g. 0.01.",
    )
    target_class: str | None = Field(
        None,
        description="Class (by name) whose area proportion target_se is about, and for which "
        "neyman allocation is optimised. None: the overall accuracy.",
    )
    allocation: Allocation = Field(
        "neyman",
        description="How n is shared between strata: proportional (to each class's mapped "
        "area), equal, or neyman (proportional to area x the anticipated standard deviation "
        "sqrt(U(1-U)); more points where the map is less sure). Each stratum gets at least "
        "min_per_stratum points and never more than its pixels.",
    )
    min_per_stratum: int = Field(
        50,
        ge=0,
        description="Fewest points in each stratum (a stratum with fewer pixels gets all of "
        "them). Olofsson et al. (2014) suggest 50-100 for rare classes; the estimates need at "
        "least 2 labelled points per stratum.",
    )
    anticipated_users_accuracy: dict[str, float] = Field(
        default_factory=dict,
        description="Class name -> the user's accuracy you expect for it (0 < U < 1), for "
        "neyman allocation and target_se. Classes not listed get default_users_accuracy.",
    )
    default_users_accuracy: float = Field(
        0.8,
        gt=0.0,
        lt=1.0,
        description="Anticipated user's accuracy of the classes not in anticipated_users_accuracy.",
    )
    max_sample_size: int = Field(
        20_000,
        ge=1,
        description="Refuse a design that needs more points than this (a target_se too "
        "small for the labelling you can afford).",
    )
    seed: int = Field(0, ge=0, description="Random seed: the same map and seed, the same points.")

    @model_validator(mode="after")
    def _size(self) -> SampleDesignOptions:
        if (self.n is None) == (self.target_se is None):
            raise ConfigError(
                "a sample design needs exactly one of n and target_se "
                f"(got n={self.n}, target_se={self.target_se})",
                hint="give the number of points (n) or the standard error to reach (target_se)",
            )
        bad = {k: v for k, v in self.anticipated_users_accuracy.items() if not 0.0 < v < 1.0}
        if bad:
            raise ConfigError(
                f"anticipated user's accuracies must be strictly between 0 and 1: {bad}",
                hint="give the accuracy you expect as a fraction, e.g. 0.85",
            )
        return self


class SampleDesignParams(SampleDesignOptions):
    """A sample design of one class map (the ``sample-design`` command and flow)."""

    class_map: str = Field(description="The class map COG (products/<region>/class_map.tif).")
    output: str | None = Field(
        None, description="Folder for the sample files. None: beside the class map, sample/."
    )


class AreaEstimateOptions(BaseModel):
    """How to read a labelled sample and estimate class areas from it."""

    label_column: str = Field(
        "label",
        description="Column of the sample holding each point's reference class: a class name "
        "of the map's legend (case, spaces, '-' and '_' ignored) or its class id.",
    )
    z: float = Field(
        1.96,
        gt=0.0,
        description="Normal quantile of the confidence intervals: 1.96 for 95 % (Olofsson et "
        "al. 2014), 1.645 for 90 %.",
    )
    outside: DropOrError = Field(
        "error",
        description="Points outside the map or on a pixel without a class: error (refuse the "
        "sample, naming them) or drop (leave them out, listed in the result). They belong to "
        "no stratum.",
    )
    unlabelled: DropOrError = Field(
        "error",
        description="Points with an empty label: error or drop (leave them out, listed). "
        "Dropping is unbiased only if the points left unlabelled are a random subset.",
    )
    other_label: str | None = Field(
        None,
        description="Label of reference points whose class is none of the map's legend (e.g. "
        "'other': roads, hedges, classes the model does not know). They count as errors of "
        "the class mapped there, and their area is estimated too (a row with no mapped pixel, "
        "class_id -1). None: labels outside the legend are refused.",
    )
    pure_strata: PureStrata = Field(
        "wilson",
        description="A stratum whose labelled points all have one reference class has a "
        "variance of 0 by the textbook formulas (a zero-width interval): wilson gives its share "
        "the Wilson-centred value (n + z²/2)/(n + z²) in the variances; textbook keeps 0.",
    )
    on_small_stratum: SmallStratum = Field(
        "error",
        description="A stratum with a single labelled point (its variance is undefined): error, "
        "or warn (estimates given, the standard errors that need that stratum left undefined).",
    )


class AreaEstimateParams(AreaEstimateOptions):
    """An area estimate of one class map from one labelled sample (``area-estimate``)."""

    class_map: str = Field(description="The class map COG (products/<region>/class_map.tif).")
    sample: str = Field(
        description="The labelled sample: GeoPackage/GeoJSON/GeoParquet points in any CRS, or "
        "CSV with x,y in the map's CRS or lon,lat (as written by sample-design)."
    )
    output: str | None = Field(
        None, description="Folder for the estimate files. None: beside the class map."
    )


class ReferenceSample(AreaEstimateOptions):
    """A labelled reference sample of a region's map: the remap estimates class areas from
    it with every map it publishes (``class_area_estimate.*`` among the products)."""

    sample: str = Field(
        description="The labelled sample: GeoPackage/GeoJSON/GeoParquet points in any CRS, or "
        "CSV with x,y in the map's CRS or lon,lat (as written by sample-design)."
    )
