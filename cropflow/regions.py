"""Regions as configuration: one YAML file per mapped region, validated by :class:`RegionConfig`.

A region file says *what* to map (AOI, season, imagery source, grid, compositing period, model
alias) and *when* (cron schedule and timezone), and, for retrains, where the labels are.
Adding a region to the scheduled remapping is adding a file to ``deployments/regions/`` and
running ``cropflow deploy``. The file name (without ``.yaml``) is the region's name.

Example (``deployments/regions/demo.yaml`` is the bundled one)::

    aoi: [13.10, 52.05, 13.25, 52.10]          # bbox lon/lat, or a GeoJSON file path
    season: {start: "03-01", end: "10-31", year: current}
    provider: earth-search-v1
    collections: [sentinel-2-l2a]
    grid: {crs: "EPSG:32633", resolution: 10}
    cube_period: 1MS
    model_alias: champion
    schedule: {cron: "0 3 * * 1", timezone: Europe/Berlin}

Relative paths are relative to the region file. Paths and URLs may use the placeholders
``{workdir}``, ``{demo_dir}``, ``{stack_stac_url}`` (the STAC API of ``cropflow stack up``) and
``{stac_api_url}`` (``CROPFLOW_STAC__API_URL`` when set, else the stack's), filled from the
settings of the process that runs the flow (so the demo region follows the stack's ports, or
the compose stack's STAC API).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cropflow.cube.sources import SourceSpec, check_sources
from cropflow.errors import AOIError, ConfigError, ProviderError
from cropflow.products.area_params import AreaEstimateOptions, ReferenceSample
from cropflow.settings import Settings, get_settings

if TYPE_CHECKING:
    from cropflow.stac.params import SearchParams

#: Where the scheduled regions live (one YAML file per region).
REGIONS_DIR = Path(__file__).resolve().parents[1] / "deployments" / "regions"
#: Suffixes of region files.
REGION_SUFFIXES = (".yaml", ".yml")
#: Placeholders allowed in paths and URLs, filled by :func:`placeholders`.
PLACEHOLDERS = ("workdir", "demo_dir", "stack_stac_url", "stac_api_url")

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$")
_MONTH_DAY = re.compile(r"^(\d{2})-(\d{2})$")
_BBOX_TEXT = re.compile(r"^\s*\[?\s*[-+0-9.eE]+(\s*,\s*[-+0-9.eE]+){3}\s*\]?\s*$")


def placeholders(settings: Settings) -> dict[str, str]:
    """Values of the placeholders a region file may use, from ``settings``."""
    st = settings.stack
    return {
        "workdir": str(settings.workdir.resolve()),
        "demo_dir": str(settings.demo_dir.resolve()),
        "stack_stac_url": f"http://{st.host}:{st.stac_port}",
        "stac_api_url": settings.stac.api_url or f"http://{st.host}:{st.stac_port}",
    }


def _check_placeholders(text: str) -> str:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ValueError(f"{text!r} has a malformed placeholder ({exc})") from None
    unknown = [n for n in names if n not in PLACEHOLDERS]
    if unknown:
        raise ValueError(
            f"{text!r} uses unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
            f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
        )
    return text


def _has_placeholder(text: str) -> bool:
    return any(f is not None for _, f, _, _ in string.Formatter().parse(text))


def expand(text: str, settings: Settings | None = None) -> str:
    """``text`` with its placeholders filled from ``settings`` (default: the environment's)."""
    if not _has_placeholder(text):
        return text
    return text.format_map(placeholders(settings or get_settings()))


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Make a relative path absolute against the region file's folder; check it exists."""
    _check_placeholders(value)
    if _has_placeholder(value):
        return value  # resolved (and checked) where the flow runs
    base = (info.context or {}).get("base_dir")
    path = Path(value).expanduser()
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    if base is not None and not path.exists():
        raise ValueError(f"file {str(path)!r} does not exist")
    return str(path.resolve()) if base is not None else str(path)


# --- The parts of a region ------------------------------------------------------------------


def _month_day(text: str) -> tuple[int, int]:
    m = _MONTH_DAY.match(text)
    if not m:
        raise ValueError(f"{text!r} is neither a date (YYYY-MM-DD) nor a month-day (MM-DD)")
    month, day = int(m.group(1)), int(m.group(2))
    if (month, day) == (2, 29):
        raise ValueError("02-29 does not exist every year; use 02-28 or 03-01")
    try:
        date(2001, month, day)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid month-day (MM-DD)") from None
    return month, day


class SeasonWindow(BaseModel):
    """The season to map: fixed dates, or month-days placed in a year chosen at run time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: date | str = Field(
        ...,
        description="First day: a date (2024-03-01) or a month-day ('03-01') placed in `year`.",
    )
    end: date | str = Field(
        ...,
        description="Last day, same form as `start`. A month-day before `start` means the "
        "season ends in the following year (winter crops: start '10-01', end '07-31').",
    )
    year: int | Literal["current", "previous", "latest"] | None = Field(
        None,
        description="For month-days: the year the season starts in. 'current' (also when "
        "unset) = the run's year, 'previous' = the year before, 'latest' = the latest season "
        "that has started by the run's date, or a number. Not allowed with dates.",
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date_or_month_day(cls, value: Any) -> Any:
        if isinstance(value, str) and not _MONTH_DAY.match(value.strip()):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(
                    f"{value!r} is neither a date (YYYY-MM-DD) nor a month-day (MM-DD)"
                ) from None
        return value.strip() if isinstance(value, str) else value

    @field_validator("start", "end")
    @classmethod
    def _valid_month_day(cls, value: date | str) -> date | str:
        if isinstance(value, str):
            _month_day(value)
        return value

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: date | str, info: ValidationInfo) -> date | str:
        start = info.data.get("start")
        if start is None:
            return end  # start itself is invalid; that is reported
        if isinstance(start, str) != isinstance(end, str):
            raise ValueError("start and end must both be dates or both be month-days (MM-DD)")
        if isinstance(start, date) and isinstance(end, date) and end <= start:
            raise ValueError(f"season ends ({end}) before it starts ({start})")
        if start == end:
            raise ValueError(f"season starts and ends on the same month-day {start!r}")
        return end

    @field_validator("year")
    @classmethod
    def _only_for_month_days(
        cls, year: int | Literal["current", "previous", "latest"] | None, info: ValidationInfo
    ) -> int | Literal["current", "previous", "latest"] | None:
        if year is not None and isinstance(info.data.get("start"), date):
            raise ValueError("`year` applies only to month-days (MM-DD); remove it")
        return year

    @property
    def is_relative(self) -> bool:
        """True when the season is given as month-days (placed in a year at run time)."""
        return isinstance(self.start, str)

    def interval(self, today: date | None = None) -> tuple[date, date]:
        """First and last day of the season, for a run on ``today`` (default: today)."""
        if isinstance(self.start, date) and isinstance(self.end, date):
            return self.start, self.end
        today = today or date.today()
        sm, sd = _month_day(str(self.start))
        em, ed = _month_day(str(self.end))
        wraps = (em, ed) <= (sm, sd)
        if isinstance(self.year, int):
            year = self.year
        elif self.year in (None, "current"):
            year = today.year
        elif self.year == "previous":
            year = today.year - 1
        else:  # latest: the latest season that has started by today
            year = today.year if date(today.year, sm, sd) <= today else today.year - 1
        return date(year, sm, sd), date(year + int(wraps), em, ed)

    def datetime_range(self, today: date | None = None) -> str:
        """The season as a STAC datetime interval ``start/end`` (whole days)."""
        start, end = self.interval(today)
        return f"{start.isoformat()}/{end.isoformat()}"


class GridSpec(BaseModel):
    """The output grid; what is unset is derived by the datacube step (the AOI's UTM zone, the
    bands' native resolution). ``grid: like-items`` in a region file keeps the items' own grid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    like_items: bool = Field(
        False,
        description="Keep the items' own grid (CRS, pixel size, origin; non-square pixels "
        "too) when they share one (refused when they do not). Shorthand: `grid: like-items`.",
    )

    crs: str | None = Field(
        None, description="CRS of the cube and maps, e.g. 'EPSG:32633'. Unset: the AOI's UTM."
    )
    resolution: float | None = Field(
        None, gt=0, le=10_000, description="Pixel size in CRS units (metres for UTM)."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.strip().lower().replace("_", "-") == "like-items":
                return {"like_items": True}
            raise ValueError(f"{value!r}: write `like-items` or a mapping {{crs, resolution}}")
        return value

    @model_validator(mode="after")
    def _like_items_alone(self) -> GridSpec:
        if self.like_items and (self.crs is not None or self.resolution is not None):
            raise ValueError("like-items keeps the items' grid: remove crs and resolution")
        return self

    @field_validator("crs")
    @classmethod
    def _known_crs(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            CRS.from_user_input(value)
        except CRSError:
            raise ValueError(f"{value!r} is not a CRS pyproj knows (e.g. 'EPSG:32633')") from None
        return value


class ScheduleSpec(BaseModel):
    """When the region is remapped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str = Field(
        ...,
        description="Cron expression (minute hour day-of-month month day-of-week), "
        "e.g. '0 3 * * 1' = Mondays 03:00.",
    )
    timezone: str = Field(
        "UTC", description="IANA timezone the cron is read in, e.g. 'Europe/Berlin'."
    )
    active: bool = Field(
        True, description="False: the deployment exists but its schedule is switched off."
    )

    @model_validator(mode="after")
    def _valid_cron_and_zone(self) -> ScheduleSpec:
        # What Prefect's schedule model refuses (the server would refuse it), checked with
        # croniter as Prefect does, without importing Prefect: a cron croniter reads, with no
        # random/hashed fields (R, H), and an IANA timezone.
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from croniter import croniter

        if not croniter.is_valid(self.cron):
            raise ValueError(f'Invalid cron string: "{self.cron}"')
        if any(part.casefold() in ("r", "h") for part in self.cron.split()):
            raise ValueError(
                f'Random and Hashed expressions are unsupported, received: "{self.cron}"'
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f'Invalid timezone: "{self.timezone}"') from None
        return self


class InSeasonSpec(BaseModel):
    """In-season maps of the region: how a partial season is mapped, and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["truncation", "forecast"] = Field(
        "truncation",
        description="'truncation': the region's model is trained on seasons cut at random "
        "steps (augment.truncation) and maps a partial season itself; 'forecast': the model "
        "is trained on whole seasons and a season forecaster, trained beside it on the same "
        "training set, completes the partial season before it classifies (nasaharvest/"
        "crop-mask). Benchmarks: benchmarks/RESULTS.md, in-season maps.",
    )
    min_steps: int = Field(
        2,
        ge=1,
        description="The earliest map: after this many composite periods of the season are "
        "complete (a retrain trains the model or the forecaster for it; an earlier remap is "
        "refused, naming the first day it can run).",
    )
    truncation: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Strategy truncation: the fraction of training series cut (the rest "
        "train on whole seasons, which the full-season map needs).",
    )
    schedule: ScheduleSpec | None = Field(
        None,
        description="When to remap in season, as of the run's day (e.g. weekly: cron "
        "'0 4 * * 1'), as deployment remap-region/<region>-in-season; runs after the season "
        "map the whole season. Unset: in-season remaps run on demand only.",
    )


class RegionConfig(BaseModel):
    """One mapped region: what to map, from which imagery, on which grid, and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        ...,
        description="Region name: lowercase letters, digits and '-'; the region file's name "
        "(names the deployment and the region's concurrency lock).",
    )
    description: str = Field("", description="What and why, shown in the Prefect UI.")
    aoi: list[float] | str = Field(
        ...,
        description="Area of interest: a bbox [min_lon, min_lat, max_lon, max_lat] in "
        "degrees, or a GeoJSON file (path relative to the region file).",
    )
    season: SeasonWindow = Field(..., description="The season (acquisition window) to map.")
    provider: str | None = Field(
        None,
        description="Collection profile: a built-in name (local-demo, earth-search-v1, "
        "planetary-computer, planetary-computer-landsat, ...) or your own profile YAML (path "
        "relative to the region file; docs/DATA.md). Unset: settings.stac.provider.",
    )
    api_url: str | None = Field(
        None,
        description="STAC API root URL, or '{stack_stac_url}' for the stack's STAC API. "
        "Unset: settings.stac.api_url, else the profile's public API.",
    )
    catalog: str | None = Field(
        None,
        description="Instead of an API: a local STAC catalog, ItemCollection or "
        "newline-delimited items file (path relative to the region file), served on "
        "127.0.0.1 for the search.",
    )
    collections: list[str] | None = Field(
        None,
        min_length=1,
        description="STAC collections to search. Unset: the profile's first collection.",
    )
    bands: list[str] | None = Field(
        None,
        min_length=1,
        description="Bands of the cube, as the profile names them. Unset: the profile's "
        "default bands.",
    )
    max_cloud_cover: float | None = Field(
        None, ge=0, le=100, description="Keep scenes whose eo:cloud_cover (%) is at most this."
    )
    grid: GridSpec | None = Field(None, description="Output grid. Unset: derived from the AOI.")
    cube_period: str | None = Field(
        None,
        description="Compositing period of the datacube (e.g. '1MS' monthly). Unset: the "
        "datacube step's default.",
    )
    registered_model: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Registered model (MLflow) of the region: retrains register into it and "
        "its champion/challenger aliases are the region's own. Unset: 'cropflow-<name>'. "
        "Regions of one project may share one by naming it.",
    )
    model_alias: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Registry alias of the model that maps the region (e.g. 'champion'). "
        "Unset: the prediction step's default.",
    )
    schedule: ScheduleSpec | None = Field(
        None, description="Cron schedule of the remap. Unset: the remap runs only on demand."
    )
    labels: str | None = Field(
        None, description="Label file for retrains (path relative to the region file)."
    )
    mapping: str | None = Field(
        None,
        validate_default=True,
        description="Label mapping YAML (raw codes -> classes) for retrains; needed with `labels`.",
    )
    split_layer: str | None = Field(
        None,
        description="Split file for retrains: polygons (any CRS) with a `split` column "
        "(train/val/test); each pixel takes the split of the polygon holding its centre, pixels "
        "in none are left out (docs/DATA.md). Unset: spatial blocks split by fractions.",
    )
    split_block_px: int | None = Field(
        None,
        ge=1,
        description="Side of the spatial blocks that split a retrain's samples into train/val/"
        "test, in pixels: a small region needs small blocks for every split to get fields "
        "(a run's own training_set.splits.block_size_px wins). For patch samples it is "
        "widened to a multiple of the patch size at least two patches wide (16 -> 64 for 32 px "
        "patches). Unset: 64 px.",
    )

    reference_sample: str | None = Field(
        None,
        description="Labelled reference sample of the region's map (path relative to the region "
        "file; e.g. the labelling file of `cropflow sample-design`, labels filled in): each remap "
        "then also publishes class_area_estimate.* (areas with confidence intervals, accuracies; "
        "Olofsson et al. 2014). Unset: pixel-count areas only.",
    )
    area_estimate: AreaEstimateOptions = Field(
        default_factory=AreaEstimateOptions,
        description="How the reference sample is read (label column, confidence level, "
        "points outside the map or unlabelled).",
    )
    in_season: InSeasonSpec | None = Field(
        None,
        description="In-season maps (remap with as_of): the strategy a retrain trains for, "
        "the earliest map, and a weekly schedule. Unset: whole-season maps only (an "
        "in-season remap then needs a model trained with augment.truncation).",
    )
    sources: list[SourceSpec] = Field(
        default_factory=list,
        description="More collections beside the main one, stacked into the same cube on its "
        "grid and time axis (e.g. Sentinel-1 RTC, a DEM): variables <name>_<band> such as "
        "s1_vv, dem_elevation, dem_slope (cropflow/cube/sources.py). Unset: the main "
        "collection alone.",
    )

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a region name: use 1-48 lowercase letters, digits and "
                "inner '-' (e.g. 'brandenburg-north')"
            )
        return value

    @field_validator("aoi")
    @classmethod
    def _aoi(cls, value: list[float] | str, info: ValidationInfo) -> list[float] | str:
        from cropflow.stac.aoi import parse_bbox

        if isinstance(value, list) or _BBOX_TEXT.match(value):
            try:
                return list(parse_bbox(value))
            except AOIError as exc:
                raise ValueError(str(exc)) from None
        return _resolve_path(value, info)

    @field_validator("labels", "mapping", "split_layer", "reference_sample")
    @classmethod
    def _paths(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _resolve_path(value, info)

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _check_placeholders(value)
        if not _has_placeholder(value) and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        from cropflow.stac.profiles import get_profile, looks_like_path

        if looks_like_path(value):
            value = _resolve_path(value, info)
            if _has_placeholder(value):
                return value
        try:
            get_profile(value)
        except (ProviderError, ConfigError) as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("catalog")
    @classmethod
    def _catalog(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.data.get("api_url") is not None:
            raise ValueError("give either api_url or catalog, not both")
        return _resolve_path(value, info)

    @field_validator("collections")
    @classmethod
    def _mapped_collections(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None or "provider" not in info.data:
            return value  # an invalid provider is reported on its own
        from cropflow.stac.profiles import get_profile

        ref = info.data["provider"] or get_settings().stac.provider
        if _has_placeholder(ref):
            return value
        profile = get_profile(ref)
        unknown = [c for c in value if not profile.matches(c)]
        if unknown:
            raise ValueError(
                f"{unknown} not mapped by collection profile {profile.name!r} "
                f"(it maps {', '.join(profile.collections)})"
            )
        return value

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: list[SourceSpec]) -> list[SourceSpec]:
        from cropflow.stac.profiles import get_profile, looks_like_path

        for spec in value:
            if looks_like_path(spec.provider) or _has_placeholder(spec.provider):
                continue
            try:
                get_profile(spec.provider)
            except (ProviderError, ConfigError) as exc:
                raise ValueError(f"source {spec.name!r}: {exc}") from None
        return check_sources(value)

    @field_validator("mapping")
    @classmethod
    def _with_labels(cls, value: str | None, info: ValidationInfo) -> str | None:
        labels = info.data.get("labels")
        if (labels is None) != (value is None) and "labels" in info.data:
            raise ValueError("`labels` and `mapping` go together: give both or neither")
        return value

    # --- Values for a run (placeholders filled from the settings of the running process) ---

    def model_name(self) -> str:
        """The region's registered model: ``registered_model``, else ``cropflow-<name>``."""
        return self.registered_model or f"cropflow-{self.name}"

    def provider_ref(self, settings: Settings | None = None) -> str | None:
        """The collection profile (name or path), placeholders filled."""
        return None if self.provider is None else expand(self.provider, settings)

    def catalog_path(self, settings: Settings | None = None) -> str | None:
        """The local catalog file, placeholders filled (None: an API is searched)."""
        return None if self.catalog is None else expand(self.catalog, settings)

    def stac_api_url(self, settings: Settings | None = None) -> str | None:
        """The STAC API URL with placeholders filled (None: settings/provider decide)."""
        return None if self.api_url is None else expand(self.api_url, settings)

    def aoi_value(self, settings: Settings | None = None) -> list[float] | str:
        """The AOI as a bbox or an existing GeoJSON path, placeholders filled."""
        if isinstance(self.aoi, list):
            return list(self.aoi)
        path = expand(self.aoi, settings)
        if not Path(path).is_file():
            raise AOIError(
                f"AOI file {path!r} of region {self.name!r} does not exist",
                hint="generate the demo region first (`cropflow demo`) or fix `aoi` in the "
                "region file",
            )
        return path

    def labels_path(self, settings: Settings | None = None) -> Path | None:
        """The label file, placeholders filled (None: the region has no labels)."""
        return None if self.labels is None else Path(expand(self.labels, settings))

    def mapping_path(self, settings: Settings | None = None) -> Path | None:
        """The label mapping file, placeholders filled."""
        return None if self.mapping is None else Path(expand(self.mapping, settings))

    def split_layer_path(self, settings: Settings | None = None) -> Path | None:
        """The split file, placeholders filled (None: splits by blocks and fractions)."""
        return None if self.split_layer is None else Path(expand(self.split_layer, settings))

    def reference(self, settings: Settings | None = None) -> ReferenceSample | None:
        """The labelled reference sample with its reading options (None: the region has none)."""
        if self.reference_sample is None:
            return None
        return ReferenceSample(
            sample=expand(self.reference_sample, settings), **self.area_estimate.model_dump()
        )

    def datetime_range(self, today: date | None = None) -> str:
        """The season as a STAC datetime interval for a run on ``today``."""
        return self.season.datetime_range(today)

    def search_params(
        self, settings: Settings | None = None, today: date | None = None
    ) -> SearchParams:
        """The :class:`~cropflow.stac.search.SearchParams` of this region for a run today."""
        from cropflow.stac.params import SearchParams

        return SearchParams(
            api_url=self.stac_api_url(settings),
            catalog=self.catalog_path(settings),
            provider=self.provider_ref(settings),
            collections=self.collections,
            aoi=self.aoi_value(settings),
            datetime=self.datetime_range(today),
            max_cloud_cover=self.max_cloud_cover,
        )

    def source_search_params(
        self, spec: SourceSpec, settings: Settings | None = None, today: date | None = None
    ) -> SearchParams:
        """The search of one of the region's more ``sources``: the region's AOI and season
        (any date for a static source) in the source's collections and API."""
        update = spec.search_update()
        for key in ("api_url", "catalog", "provider"):
            if isinstance(update.get(key), str):
                update[key] = expand(update[key], settings)
        return self.search_params(settings, today).model_copy(update=update)


# --- Loading region files -------------------------------------------------------------------


def _clean(msg: str) -> str:
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _field_description(model: type[BaseModel], loc: Iterable[int | str]) -> str | None:
    """The description of the field at a pydantic error location, if there is one."""
    current: Any = model
    description = None
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            continue
        info = fields[part]
        description = info.description
        current = info.annotation
        args = getattr(current, "__args__", ())
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            current = models[0]
    return description


def format_errors(exc: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """(what is wrong, how to fix it) for a validation error, one clause per field."""
    problems, fixes = [], []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(file)"
        problems.append(f"{loc}: {_clean(err['msg'])}")
        desc = _field_description(model, err["loc"])
        if err["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields)
            fixes.append(f"remove or rename {loc} (known fields: {known})")
        elif desc:
            fixes.append(f"{loc} = {desc}")
    return "; ".join(problems), "; ".join(dict.fromkeys(fixes)) or "see deployments/README.md"


def region_from_mapping(
    data: Mapping[str, Any], source: str, base_dir: Path | None = None
) -> RegionConfig:
    """Validate a region given as a mapping; errors name ``source`` and each bad field."""
    try:
        return RegionConfig.model_validate(dict(data), context={"base_dir": base_dir})
    except ValidationError as exc:
        problems, fixes = format_errors(exc, RegionConfig)
        raise ConfigError(f"region {source} is invalid: {problems}", hint=fixes) from None


def load_region_file(path: Path) -> RegionConfig:
    """Read and validate one region file. Its name is the file name unless the file says it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read region file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"region file {path} is not valid YAML: {exc}", hint="fix the YAML syntax"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"region file {path} does not hold a mapping of fields",
            hint="write `field: value` lines; see deployments/regions/demo.yaml",
        )
    data.setdefault("name", path.stem)
    if data["name"] != path.stem:
        raise ConfigError(
            f"region file {path}: name: {data['name']!r} differs from the file name {path.stem!r}",
            hint=f"rename the file to {data['name']}.yaml or remove `name`",
        )
    return region_from_mapping(data, f"file {path}", base_dir=path.parent.resolve())


def region_files(regions_dir: Path = REGIONS_DIR) -> list[Path]:
    """The region files in ``regions_dir``, sorted."""
    regions_dir = Path(regions_dir)
    if not regions_dir.is_dir():
        raise ConfigError(
            f"regions folder {regions_dir} does not exist",
            hint="create it and add one YAML file per region (see deployments/regions/demo.yaml)",
        )
    return sorted(p for p in regions_dir.iterdir() if p.suffix in REGION_SUFFIXES)


def load_regions(regions_dir: Path = REGIONS_DIR) -> list[RegionConfig]:
    """Every region of ``regions_dir``; one ConfigError naming every bad file if any is bad."""
    regions: list[RegionConfig] = []
    errors: list[ConfigError] = []
    seen: dict[str, Path] = {}
    for path in region_files(regions_dir):
        try:
            region = load_region_file(path)
        except ConfigError as exc:
            errors.append(exc)
            continue
        if region.name in seen:
            errors.append(
                ConfigError(
                    f"region {region.name!r} is defined twice: {seen[region.name]} and {path}",
                    hint="keep one of the two files",
                )
            )
            continue
        seen[region.name] = path
        regions.append(region)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigError(
            f"{len(errors)} region files are invalid: " + " | ".join(e.message for e in errors),
            hint=" | ".join(e.hint or "" for e in errors),
        )
    return regions


def get_region(name: str, regions_dir: Path = REGIONS_DIR) -> RegionConfig:
    """The region called ``name`` (its file ``<regions_dir>/<name>.yaml``)."""
    for suffix in REGION_SUFFIXES:
        path = Path(regions_dir) / f"{name}{suffix}"
        if path.is_file():
            return load_region_file(path)
    known = [p.stem for p in region_files(regions_dir)] if Path(regions_dir).is_dir() else []
    raise ConfigError(
        f"unknown region {name!r} (no {name}.yaml in {regions_dir})",
        hint=f"use one of: {', '.join(known) or 'none defined yet'}, or add {name}.yaml",
    )


def as_region(
    value: str | RegionConfig | Mapping[str, Any], regions_dir: Path = REGIONS_DIR
) -> RegionConfig:
    """A region from a flow parameter: a region name (a file of ``regions_dir``), the path of a
    region file anywhere, a mapping of fields, or a config."""
    if isinstance(value, RegionConfig):
        return value
    if isinstance(value, str):
        if value.endswith(REGION_SUFFIXES) or "/" in value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"region file {value!r} does not exist",
                    hint=f"give the path of a region YAML file, or a region name of {regions_dir}",
                )
            return load_region_file(path)
        return get_region(value, regions_dir)
    return region_from_mapping(value, f"{value.get('name', '(unnamed)')!r}")
