"""More sources beside the main collection: one cube of several collections on one grid.

A region's main collection (e.g. Sentinel-2 L2A) builds the cube as before. Each
:class:`SourceSpec` of ``region.sources`` is searched over the same AOI and season, built into
a cube of its own on **the main cube's grid** (same CRS, pixel size, bounds and time axis), and
the parts are stacked into one cube (:mod:`cropflow.cube.stack`) whose variables are named
``<source>_<band>``: ``s1_vv``, ``s1_vh``, ``dem_elevation``, ``dem_slope``. The main
collection's bands keep their names (``red``, ``nir``...), so a model trained on Sentinel-2
alone still reads a stacked cube, and a model trained on S2 + S1 refuses a cube without S1,
naming the missing variables (its input contract names them).

Each source composites by its profile's rule per band (reflectance by masked median,
backscatter by the mean in linear power written in dB) over the main cube's periods. A
``static`` source (a DEM) is time-invariant: its observations are reduced to one layer with
dims ``(y, x)``, from which ``derive`` adds slope and aspect; models see a static layer as
the same value at every date.

This module is light (pydantic only): region files and the parameter forms import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cropflow.cube.params import CubeParams, Resampling
from cropflow.errors import ConfigError

if TYPE_CHECKING:
    from cropflow.cube.grid import GridSpec

#: Layers derivable from a static source's ``elevation`` band.
Derived = Literal["slope", "aspect"]


class SourceSpec(BaseModel):
    """One more collection of the cube: where to search it and how to composite it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z][a-z0-9]{0,15}$",
        description="Short name that prefixes the source's variables in the cube: "
        "'s1' gives s1_vv, s1_vh; 'dem' gives dem_elevation.",
    )
    provider: str = Field(
        description="Collection profile of the source (e.g. planetary-computer-sentinel-1-rtc, "
        "planetary-computer-cop-dem, or a profile YAML path)."
    )
    collections: list[str] | None = Field(
        None, description="Collections to search. Unset: the profile's first collection."
    )
    api_url: str | None = Field(
        None,
        description="STAC API of the source. Unset: the region's catalog or API (one API "
        "often serves every collection).",
    )
    catalog: str | None = Field(
        None, description="A local STAC source of the source (see the region's catalog)."
    )
    bands: list[str] | None = Field(
        None, min_length=1, description="Bands by profile name. Unset: the profile's defaults."
    )
    static: bool = Field(
        False,
        description="Time-invariant (a DEM): searched at any date, reduced to one (y, x) layer "
        "that models see at every date.",
    )
    derive: list[Derived] = Field(
        default_factory=list,
        description="Layers derived from a static source's elevation band: slope (degrees) "
        "and aspect (degrees clockwise from north, the direction the slope faces).",
    )
    orbit_state: Literal["any", "ascending", "descending"] = Field(
        "any",
        description="Radar: keep one orbit direction (a second source can hold the other).",
    )
    resampling: Resampling | None = Field(
        None,
        description="Resampling onto the main grid. Unset: bilinear for static sources "
        "(a 30 m DEM on a 10 m grid), else the cube's own (nearest).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SourceSpec:
        if self.derive and not self.static:
            raise ValueError(
                f"source {self.name!r}: derive {self.derive} needs a static source (a DEM); "
                "set static: true"
            )
        if self.derive and self.bands is not None and "elevation" not in self.bands:
            raise ValueError(
                f"source {self.name!r}: derive {self.derive} needs its elevation band; add "
                "elevation to bands"
            )
        return self

    def variable(self, band: str) -> str:
        """The cube variable of one of the source's bands (or derived layers)."""
        return f"{self.name}_{band}"

    def search_update(self) -> dict[str, Any]:
        """What changes in the main search's parameters to search this source."""
        update: dict[str, Any] = {
            "provider": self.provider,
            "collections": self.collections,
            "max_cloud_cover": None,
            "filter": None,
        }
        if self.api_url is not None or self.catalog is not None:
            update |= {"api_url": self.api_url, "catalog": self.catalog}
        if self.static:
            update["datetime"] = None
        return update


def check_sources(sources: list[SourceSpec]) -> list[SourceSpec]:
    """ValueError for two sources of one name (their variables would collide)."""
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"sources {dupes} are named twice; give each source its own name")
    return sources


def source_cube_params(base: CubeParams, spec: SourceSpec, grid: GridSpec) -> CubeParams:
    """The cube parameters of ``spec`` on the main cube's ``grid`` and time axis.

    ``base`` is the main cube's parameters (period, season, as_of, chunking): a time-varying
    source keeps them, so its time axis is the main cube's; a static one keeps every date
    (its observations are reduced to one layer when stacked). Bands, masks and indices are
    the source's own (no index: ndvi of a radar is meaningless).
    """
    if grid.resolution_y is not None and grid.resolution_y != grid.resolution:
        raise ConfigError(
            f"source {spec.name!r}: the main cube's grid has non-square pixels "
            f"({grid.resolution} x {grid.resolution_y}); more sources need square ones",
            hint="set the region's grid resolution (e.g. grid: {resolution: 10}) instead of "
            "keeping the items' own grid",
        )
    data = base.model_dump()
    data |= {
        "bands": spec.bands,
        "indices": [],
        "mask": None,
        "dilation": 0,
        "orbit_state": spec.orbit_state,
        "resampling": spec.resampling or ("bilinear" if spec.static else base.resampling),
        "grid": {"crs": grid.crs, "resolution": grid.resolution, "bounds": grid.bounds},
    }
    if spec.static:
        data |= {"period": None, "start": None, "end": None, "as_of": None, "fill": "none"}
    return CubeParams.model_validate(data)
