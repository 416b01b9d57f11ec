"""What the chained flows (retrain, remap_region, demo) need beyond the stage libraries.

Small functions that turn a region's configuration into the parameters of each stage. The
stage parameter models stay the one home of their defaults: a region only overrides what it
states (grid, period, model alias, labels).
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cropflow.cube import CubeParams
from cropflow.cube.sources import SourceSpec
from cropflow.demo import DemoConfig
from cropflow.demo.config import CLOUDY_PRESET
from cropflow.errors import ConfigError
from cropflow.forms import form_order
from cropflow.labels.options import LabelSource, TrainingSetOptions
from cropflow.predict.params import PredictOptions
from cropflow.regions import RegionConfig
from cropflow.settings import Settings, get_settings
from cropflow.stac.params import SearchParams
from cropflow.train.params import TrainOptions

if TYPE_CHECKING:
    from cropflow.train.params import ForecastParams


class RegionRunParams(BaseModel):
    """What every run on a region starts from (the base of the retrain and remap forms).

    In the Prefect UI's form a subclass's own options (training, prediction) come first and
    the region, fixed by a region's deployment, last.
    """

    model_config = ConfigDict(
        extra="forbid", json_schema_extra=form_order(last=("region", "cube", "refresh"))
    )

    region: str | RegionConfig | dict[str, Any] = Field(
        "demo",
        title="Region",
        description="Region: the name of a file in deployments/regions/, or its fields. "
        "A region's own deployment sets it: leave it as it is.",
    )
    cube: CubeParams = Field(
        default_factory=CubeParams,
        title="Datacube",
        description="Datacube options (the region's grid, period and season override).",
    )
    refresh: bool = Field(
        False,
        title="Recompute every stage",
        description="Run every stage again instead of reusing the cached results of a "
        "previous run with the same inputs (the new results replace them). Outputs complete "
        "on disk are still found by their stage: delete one to rebuild it.",
    )


def cube_params_for(
    region: RegionConfig,
    base: CubeParams,
    today: date | None = None,
    settings: Settings | None = None,
    as_of: date | None = None,
) -> CubeParams:
    """``base`` with the region's AOI, grid, bands, compositing period and season applied
    (cut ``as_of`` a day of the season for an in-season map).

    The region's AOI bounds the cube (its bounds in the grid CRS, snapped to the grid), so a
    cube covers the region, not the union of the items' footprints (a whole tile or more).
    """
    data = base.model_dump()
    grid = dict(data["grid"])
    if region.grid is not None:
        if region.grid.like_items:
            grid.update(like_items=True, crs=None, resolution=None, bounds=None)
        if region.grid.crs is not None:
            grid["crs"] = region.grid.crs
        if region.grid.resolution is not None:
            grid["resolution"] = region.grid.resolution
    if grid.get("bounds") is None and grid.get("bbox") is None and grid.get("aoi") is None:
        grid["aoi"] = aoi_geometry(region, settings)
    data["grid"] = grid
    if region.bands is not None and data.get("bands") is None:
        data["bands"] = list(region.bands)
    if region.cube_period is not None:
        data["period"] = region.cube_period
    start, end = region.season.interval(today)
    data["start"] = data["start"] or start
    data["end"] = data["end"] or end
    if as_of is not None:
        data["as_of"] = as_of
    return CubeParams.model_validate(data)


AsOf = date | Literal["today"] | None


class InSeasonCut(BaseModel):
    """The day an in-season remap maps the season as of, resolved for a run."""

    as_of: date | None = Field(description="The cut day; None: the whole season.")
    earliest: date | None = Field(
        None, description="The first day the region's model can map (in_season.min_steps)."
    )
    too_early: bool = Field(False, description="'today' is before `earliest`: nothing to map yet.")

    def too_early_message(self, region: str) -> str:
        return (
            f"{self.as_of}: too early in the season to map region {region!r}; its first "
            f"in-season map can be made on {self.earliest}"
        )

    def folder(self, region: str) -> str:
        """The product folder of the map: ``<region>`` or ``<region>-as-of-<day>``."""
        return region if self.as_of is None else f"{region}-as-of-{self.as_of.isoformat()}"


def earliest_as_of(region: RegionConfig, base: CubeParams, today: date | None = None) -> date:
    """The first day on which ``in_season.min_steps`` composite periods are complete."""
    from datetime import timedelta

    from cropflow.cube.periods import composite_axis

    start, end = region.season.interval(today)
    period = region.cube_period or base.period
    need = region.in_season.min_steps if region.in_season else 1
    if period is None:  # acquisition dates: no periods to complete
        return start
    axis = composite_axis(start, end, period)
    step = min(need, len(axis)) - 1
    last: date = (axis.ends[step] - timedelta(days=1)).date()
    return last


def resolve_as_of(
    region: RegionConfig, base: CubeParams, as_of: AsOf, today: date | None = None
) -> InSeasonCut:
    """The cut of an in-season remap: ``as_of`` (``"today"``: the run's day); a day on or
    after the season's end maps the whole season. A date before the earliest possible map is
    refused (naming that day); ``"today"`` before it is reported as too early."""
    if as_of is None:
        return InSeasonCut(as_of=None)
    day = today or date.today()
    cut = day if as_of == "today" else as_of
    start, end = region.season.interval(day)
    if cut >= end:
        return InSeasonCut(as_of=None)
    earliest = earliest_as_of(region, base, day)
    if cut < earliest:
        if as_of == "today":
            return InSeasonCut(as_of=cut, earliest=earliest, too_early=True)
        need = region.in_season.min_steps if region.in_season else 1
        raise ConfigError(
            f"as_of {cut} is too early for region {region.name!r}: its season starts {start} "
            f"and a map needs {need} complete composite period(s), the first day being "
            f"{earliest}",
            hint=f"choose as_of on or after {earliest} (or lower in_season.min_steps and retrain)",
        )
    return InSeasonCut(as_of=cut, earliest=earliest)


def in_season_train_options(region: RegionConfig, options: TrainOptions) -> TrainOptions:
    """``options`` for the region's in-season strategy: truncation trains on cut seasons
    (unless the options cut already), forecast and whole-season regions change nothing."""
    spec = region.in_season
    if spec is None or spec.strategy != "truncation" or options.augment.truncation > 0:
        return options
    augment = options.augment.model_copy(
        update={"truncation": spec.truncation, "truncation_min_steps": spec.min_steps}
    )
    return options.model_copy(update={"augment": augment})


def needs_forecaster(region: RegionConfig) -> bool:
    """Whether a retrain of the region trains a season forecaster beside its model."""
    return region.in_season is not None and region.in_season.strategy == "forecast"


def forecast_params_for(region: RegionConfig, params: ForecastParams) -> ForecastParams:
    """``params`` with the region's earliest map (in_season.min_steps)."""
    if region.in_season is None:
        return params
    return params.model_copy(update={"min_steps": region.in_season.min_steps})


def in_season_predict_options(region: RegionConfig, options: PredictOptions) -> PredictOptions:
    """``options`` with the region's in-season strategy."""
    if region.in_season is None:
        return options
    return options.model_copy(update={"in_season": region.in_season.strategy})


def aoi_geometry(region: RegionConfig, settings: Settings | None = None) -> dict[str, Any]:
    """The region's AOI as one GeoJSON geometry in degrees (a bbox becomes its polygon)."""
    from cropflow.stac.aoi import parse_aoi

    return parse_aoi(region.aoi_value(settings)).geojson()


def patch_block_px(block_px: int, patch_size: int) -> int:
    """A region's split block side for patch samples: the smallest multiple of
    ``patch_size`` that is at least ``block_px`` and two patches wide. A patch is kept only
    when all its pixels are in one split: blocks smaller than a patch keep only patches over
    neighbouring blocks of the same split (the demo's 16 px blocks left its 32 px patch set
    without a val split), blocks of one patch one position in four at stride
    ``patch_size / 2``."""
    side = max(block_px, 2 * patch_size)
    return -(-side // patch_size) * patch_size


def training_set_options_for(
    region: RegionConfig, options: TrainingSetOptions, settings: Settings | None = None
) -> TrainingSetOptions:
    """``options`` with the region's split file (unless the options name one, or rules) and
    its split block size (unless the options set one; for patch samples widened by
    :func:`patch_block_px`)."""
    splits = options.splits
    update: dict[str, Any] = {}
    if region.split_block_px is not None and splits.block_size_px is None:
        block = region.split_block_px
        if options.samples.kind == "patch":
            block = patch_block_px(block, options.samples.patch_size)
        update["block_size_px"] = block
    layer = region.split_layer_path(settings)
    if layer is not None and splits.layer_path is None and splits.rules_path is None:
        update["layer_path"] = str(layer)
    if not update:
        return options
    return options.model_copy(update={"splits": splits.model_copy(update=update)})


def search_params_for(region: RegionConfig, settings: Settings | None = None) -> SearchParams:
    """The region's STAC search for a run today (placeholders filled from ``settings``)."""
    params: SearchParams = region.search_params(settings or get_settings())
    return params


def source_search_params_for(
    region: RegionConfig, spec: SourceSpec, settings: Settings | None = None
) -> SearchParams:
    """The search of one of the region's more sources for a run today."""
    return region.source_search_params(spec, settings or get_settings())


def labels_for(region: RegionConfig, settings: Settings | None = None) -> LabelSource:
    """The region's labels and mapping for a retrain; ConfigError when it has none."""
    s = settings or get_settings()
    labels, mapping = region.labels_path(s), region.mapping_path(s)
    if labels is None or mapping is None:
        raise ConfigError(
            f"region {region.name!r} has no labels to train on",
            hint="set `labels` and `mapping` in its region file",
        )
    for what, path in (("labels", labels), ("mapping", mapping)):
        if not path.exists():
            raise ConfigError(
                f"{what} file {path} of region {region.name!r} does not exist",
                hint="generate the demo region (`cropflow demo`) or fix the region file",
            )
    return LabelSource(path=str(labels), mapping_path=str(mapping))


#: The demo's more sources (a demo generated with ``radar``): its Sentinel-1 RTC and DEM,
#: served by the same local STAC API.
DEMO_SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec(name="s1", provider="local-demo-sentinel-1-rtc"),
    SourceSpec(name="dem", provider="local-demo-cop-dem", static=True, derive=["slope", "aspect"]),
)


def embedded_demo_region(settings: Settings | None = None, radar: bool = False) -> RegionConfig:
    """The bundled demo region for a run without the stack: its STAC API is served by the
    search step itself (on 127.0.0.1, for the search's duration) instead of the stack's.
    ``radar``: with the demo's Sentinel-1 and DEM stacked into its cube (:data:`DEMO_SOURCES`).
    """
    from cropflow.regions import get_region

    update: dict[str, Any] = {"api_url": None}
    if radar:
        update["sources"] = list(DEMO_SOURCES)
    region = get_region("demo").model_copy(update=update)
    s = settings or get_settings()
    if not (s.demo_dir / "stac" / "items.json").exists():
        raise ConfigError(
            f"the demo region is not generated under {s.demo_dir}",
            hint="run `cropflow demo` (it generates the region first)",
        )
    if radar and not (s.demo_dir / "stac" / "items-sentinel-1-rtc.json").exists():
        raise ConfigError(
            f"the demo region under {s.demo_dir} has no Sentinel-1 and DEM",
            hint="run `cropflow demo --radar` (it generates them)",
        )
    return region


def demo_config(
    size: str, seed: int | None, radar: bool = False, weather: str = "normal"
) -> DemoConfig:
    """The demo region's configuration for a size preset ('default' or 'tiny'), seed,
    Sentinel-1 and DEM (``radar``) and weather ('normal', or 'cloudy': most optical
    acquisitions overcast)."""
    update: dict[str, Any] = {"radar": radar, "terrain": radar}
    if weather == "cloudy":
        update |= CLOUDY_PRESET
    if seed is not None:
        update["seed"] = seed
    base = DemoConfig.tiny() if size == "tiny" else DemoConfig()
    return DemoConfig.model_validate(base.model_dump() | update)


class ChainSummary(BaseModel):
    """Where a chained run left its outputs (references only)."""

    region: str
    search_uri: str | None = None
    cube_uri: str | None = None
    training_set_uri: str | None = None
    mlflow_run_id: str | None = None
    model_version: str | None = None
    model_alias: str | None = None
    products_dir: str | None = None
    products: dict[str, str] = Field(default_factory=dict)

    def to_text(self) -> str:
        """A few lines for the CLI."""
        rows = [(k, v) for k, v in self.model_dump(exclude={"products"}).items() if v]
        rows += sorted(self.products.items())
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class DemoParams(BaseModel):
    """The demo's knobs; every stage default lives in that stage's own options."""

    model_config = ConfigDict(extra="forbid")

    size: Literal["default", "tiny"] = Field(
        "default", description="Demo region preset: 'default' (two 256 px tiles) or 'tiny'."
    )
    seed: int | None = Field(None, description="Region seed (unset: the preset's).")
    radar: bool = Field(
        False,
        description="Also generate Sentinel-1 RTC and a DEM, and stack them into the cube "
        "(variables s1_vv, s1_vh, dem_elevation, dem_slope, dem_aspect).",
    )
    weather: Literal["normal", "cloudy"] = Field(
        "normal",
        description="'cloudy': a wet year whose optical acquisitions are mostly overcast.",
    )
    cube: CubeParams = Field(default_factory=CubeParams, description="Datacube options.")
    training_set: TrainingSetOptions = Field(
        default_factory=TrainingSetOptions,
        description="Training-set options (the demo region file sets its split block size).",
    )
    train: TrainOptions = Field(
        # Measured on the default region (benchmarks/RESULTS.md): L-TAE reaches a hold-out
        # macro-F1 of 0.98 after 3 epochs, about 20 s each on 2 cores; 5 keep the demo short.
        default_factory=lambda: TrainOptions(epochs=5),
        description="Training options.",
    )
    predict: PredictOptions = Field(
        default_factory=PredictOptions, description="Prediction options."
    )


def region_markdown(region: RegionConfig) -> str:
    """The region config a run used, as a markdown report (YAML; credentials redacted)."""
    import yaml

    from cropflow.redact import redact_data

    data = redact_data(region.model_dump(mode="json", exclude_defaults=True))
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return f"# Region {region.name}\n\nAs this run read it:\n\n```yaml\n{text}```\n"
