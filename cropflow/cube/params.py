"""Parameters of a datacube build: the one typed home of every cube default.

Field descriptions become Prefect UI forms. Values are checked here (bad names, impossible
combinations) so that a build refuses bad input before reading any pixel.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cropflow.cube.indices import INDICES, missing_roles
from cropflow.errors import ConfigError

Resampling = Literal["nearest", "bilinear", "cubic", "average"]
Compressor = Literal["blosc-blosclz", "blosc-lz4", "blosc-zstd", "zstd"]

BBox = tuple[float, float, float, float]


def _check_bbox(value: BBox | None, what: str) -> BBox | None:
    if value is None:
        return None
    x0, y0, x1, y1 = value
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"{what} {list(value)} must be (min_x, min_y, max_x, max_y), min < max")
    return value


class GridParams(BaseModel):
    """The target pixel grid: given (CRS, resolution, bounds) or derived from the AOI."""

    model_config = ConfigDict(extra="forbid")

    crs: str | None = Field(
        None,
        description="Grid CRS (e.g. 'EPSG:32633'). Unset: the UTM zone of the AOI's centroid.",
    )
    resolution: float | None = Field(
        None,
        gt=0,
        description="Pixel size in units of the grid CRS. Unset: the finest native resolution "
        "of the cube's bands (10 m for Sentinel-2, 30 m for Landsat).",
    )
    bounds: BBox | None = Field(
        None,
        description="Grid bounds (min_x, min_y, max_x, max_y) in the grid CRS, snapped outward "
        "to the resolution. Needs crs. Unset: the AOI's bounds.",
    )
    bbox: BBox | None = Field(
        None,
        description="AOI as (west, south, east, north) in degrees. Unset: `aoi`, else the union "
        "of the items' footprints.",
    )
    aoi: dict[str, Any] | None = Field(
        None,
        description="AOI as a GeoJSON geometry in degrees (EPSG:4326): the grid covers its "
        "bounds in the grid CRS (a region's AOI reaches the cube this way).",
    )
    like_items: bool = Field(
        False,
        description="Keep the items' own pixel grid (CRS, pixel size, non-square pixels, "
        "origin) when they all share one; refused when they do not. The AOI (if any) is "
        "snapped onto it. crs, resolution and bounds must then be unset.",
    )

    @field_validator("bounds")
    @classmethod
    def _bounds_ok(cls, v: BBox | None) -> BBox | None:
        return _check_bbox(v, "grid bounds")

    @field_validator("bbox")
    @classmethod
    def _bbox_ok(cls, v: BBox | None) -> BBox | None:
        v = _check_bbox(v, "AOI bbox")
        if v is not None and not (-180 <= v[0] <= 180 and -180 <= v[2] <= 180):
            raise ValueError(f"AOI bbox {list(v)} longitudes must lie in [-180, 180]")
        if v is not None and not (-90 <= v[1] <= 90 and -90 <= v[3] <= 90):
            raise ValueError(f"AOI bbox {list(v)} latitudes must lie in [-90, 90]")
        return v

    @model_validator(mode="after")
    def _bounds_need_crs(self) -> GridParams:
        if self.bounds is not None and self.crs is None:
            raise ValueError("grid bounds are given without a grid crs; set crs as well")
        if self.like_items:
            given = [k for k in ("crs", "resolution", "bounds") if getattr(self, k) is not None]
            if given:
                raise ValueError(
                    f"like_items keeps the items' grid, so {', '.join(given)} cannot be set too"
                )
        return self


class CubeParams(BaseModel):
    """How to build an analysis-ready datacube from a STAC search result."""

    model_config = ConfigDict(extra="forbid")

    bands: list[str] | None = Field(
        None,
        min_length=1,
        description="Bands by name, as the collection profile names them (e.g. red, nir, ndvi, "
        "vv). Unset: the profile's default bands (the ten 10/20 m bands for Sentinel-2).",
    )
    period: str | None = Field(
        "1MS",
        description="Composite period as a pandas offset alias: '1MS' monthly, '10D' 10-day, "
        "'SMS' half-monthly... None keeps every acquisition date (one mosaic per solar day).",
    )
    start: date | None = Field(
        None, description="First day of the time axis. Unset: the first acquisition."
    )
    end: date | None = Field(
        None, description="Last day of the time axis (inclusive). Unset: the last acquisition."
    )
    as_of: date | None = Field(
        None,
        description="Build the cube as it could be built on this day, in season: acquisitions "
        "after it are ignored and so are composite periods not complete by it (a part-period "
        "composite is not what a model was trained on). The time axis still runs from start "
        "to end, so the cube has the season's steps a model's contract names; steps after "
        "as_of stay empty (NaN, never gap-filled). Needs end. Unset: the whole season.",
    )
    orbit_state: Literal["any", "ascending", "descending"] = Field(
        "any",
        description="Radar (Sentinel-1): keep the items of one orbit direction only (their "
        "sat:orbit_state), for a cube per direction (their geometry and look angle differ); "
        "any: both directions composited together.",
    )
    indices: list[str] | None = Field(
        None,
        description="Spectral indices by name, computed from the composites: "
        f"{', '.join(INDICES)}. Unset: ndvi where the bands allow it (red and nir or nir08).",
    )
    mask: list[str] | None = Field(
        None,
        description="Mask groups of the collection profile masked before compositing (e.g. "
        "cloud, shadow, cirrus, snow, defective for Sentinel-2 SCL; cloud, dilated_cloud for "
        "Landsat qa_pixel). Unset: the profile's default groups; empty: no mask (none read).",
    )
    dilation: int = Field(
        0, ge=0, le=64, description="Grow the cloud/shadow mask by this many grid pixels."
    )
    fill: Literal["linear", "none"] = Field(
        "linear",
        description="Empty periods (no valid observation): 'linear' interpolates in time "
        "(nearest at the ends; flagged in `interpolated`), 'none' leaves NaN.",
    )
    reader: Literal["auto", "odc"] = Field(
        "auto",
        description="'auto': local COGs already on the grid's pixel lattice are read by one "
        "window read through cached open datasets, everything else by odc-stac's reader; "
        "'odc': odc-stac's reader for every source.",
    )
    resampling: Resampling = Field(
        "nearest", description="Resampling of reflectance onto the grid (the mask: nearest)."
    )
    grid: GridParams = Field(default_factory=GridParams, description="The target grid.")
    chunk_size: int | None = Field(
        None,
        ge=16,
        le=8192,
        description="Spatial chunk (= write block) side in pixels; time is whole in a chunk. "
        "Unset: the largest of 1024/512/256 that fits task_memory_mib.",
    )
    time_chunk: int | None = Field(
        None, ge=1, description="Zarr chunk length along time. Unset: every step in one chunk."
    )
    task_memory_mib: int = Field(
        1024, ge=64, description="Memory budget of one block task (chooses the chunk size)."
    )
    compressor: Compressor = Field(
        "blosc-blosclz",
        description="Zarr compressor of the variables (Blosc with byte shuffle, or zstd).",
    )
    max_bad_fraction: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Fail the build when more than this fraction of items is unreadable.",
    )
    retries: int = Field(2, ge=0, le=10, description="Retries of a failed COG read.")
    retry_backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles per try.")

    @field_validator("period")
    @classmethod
    def _period_ok(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            import pandas as pd  # here: the CLI reads these params without loading pandas

            offset = pd.tseries.frequencies.to_offset(v)
        except ValueError:
            raise ValueError(
                f"period {v!r} is not a pandas offset alias; use e.g. '1MS', '10D', 'SMS'"
            ) from None
        if pd.Timestamp("2001-01-01") + offset <= pd.Timestamp("2001-01-01"):
            raise ValueError(f"period {v!r} must move forward in time")
        return v

    @field_validator("bands")
    @classmethod
    def _bands_unique(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        dupes = sorted({b for b in v if v.count(b) > 1})
        if dupes:
            raise ValueError(f"bands {dupes} are listed twice")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> CubeParams:
        unknown = [i for i in self.indices or [] if i not in INDICES]
        if unknown:
            raise ValueError(f"unknown indices {unknown}; known: {', '.join(INDICES)}")
        if self.bands is not None:
            check_indices(self.indices or [], self.bands)
        if self.start and self.end and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if self.as_of is not None:
            if self.end is None:
                raise ValueError(
                    f"as_of {self.as_of} needs end (the season's last day), so that the cube "
                    "keeps the whole season's time axis; set end"
                )
            if self.start is not None and self.as_of < self.start:
                raise ValueError(f"as_of {self.as_of} is before start {self.start}")
        if self.dilation and self.mask == []:
            raise ValueError("dilation is set but mask is empty; set mask groups or dilation=0")
        return self


def check_indices(indices: list[str], bands: list[str]) -> None:
    """ValueError unless every index can be computed from ``bands`` (by name)."""
    for name in indices:
        missing = missing_roles(name, bands)
        if missing:
            raise ValueError(f"index {name!r} needs bands {missing}; add them to bands")
        if name in bands:
            raise ValueError(f"{name!r} is both a band and an index; drop one")


def parse_params(raw: CubeParams | dict[str, object] | None) -> CubeParams:
    """CubeParams from a model, a dict (e.g. a parameter file) or None (every default).

    Invalid values raise ConfigError naming the field, with the fix.
    """
    if isinstance(raw, CubeParams):
        return raw
    from pydantic import ValidationError

    try:
        return CubeParams.model_validate(raw or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "parameters"
        raise ConfigError(
            f"invalid cube parameter {where}: {first['msg']}",
            hint="fix that value (see CubeParams field descriptions)",
        ) from None
