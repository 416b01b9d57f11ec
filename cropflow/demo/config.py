"""The demo region's parameters: every default of the generator lives here."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cropflow.errors import ConfigError

#: Bumped whenever the generator's output changes for the same config (part of the config hash).
GENERATOR_VERSION = "1.0.0"


#: What :meth:`DemoConfig.tiny` changes from the defaults.
TINY_PRESET: dict[str, Any] = {
    "tile_size": 64,
    "tile_overlap": 16,
    "revisit_days": 15,
    "field_size_ha": 1.2,
    "n_points": 80,
    "n_reprocessed": 2,
}


#: What :meth:`DemoConfig.cloudy` changes: a wet year, most optical acquisitions lost.
CLOUDY_PRESET: dict[str, Any] = {"clear_fraction": 0.03, "overcast_fraction": 0.85}


class DemoConfig(BaseModel):
    """What demo region to generate. ``DemoConfig()`` is the default demo, ``tiny()`` the test one.

    The same config (seed included) always gives byte-identical files on the same platform.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(
        2024, ge=0, description="Seed of every random choice (layout, crops, clouds, noise)."
    )
    tile_size: int = Field(
        256,
        ge=32,
        le=4096,
        description="Side of each of the two square tiles, in 10 m pixels (even, so that the "
        "20 m grid aligns).",
    )
    tile_overlap: int = Field(
        64,
        ge=2,
        le=984,
        description="Columns of 10 m pixels shared by the two neighbouring tiles (even; at "
        "most 984, the real overlap of neighbouring MGRS tiles).",
    )
    season_start: date = Field(date(2024, 3, 1), description="First acquisition date.")
    season_end: date = Field(
        date(2024, 10, 31), description="Last possible acquisition date (same calendar year)."
    )
    revisit_days: int = Field(
        5,
        ge=1,
        le=60,
        description="Days between acquisitions (5 = Sentinel-2A and 2B together, 10 = one).",
    )
    field_size_ha: float = Field(
        4.0, gt=0.2, le=100.0, description="Typical size of an agricultural field, in hectares."
    )
    forest_fraction: float = Field(
        0.12, ge=0.0, le=0.4, description="Share of the region covered by forest."
    )
    water_fraction: float = Field(
        0.025, ge=0.0, le=0.2, description="Share of the region covered by a lake."
    )
    built_up_fraction: float = Field(
        0.035, ge=0.0, le=0.2, description="Share of the region covered by a village."
    )
    hedge_probability: float = Field(
        0.15, ge=0.0, le=1.0, description="Chance that a boundary between two fields is a hedge."
    )
    clear_fraction: float = Field(
        0.35,
        ge=0.0,
        le=1.0,
        description="Share of acquisitions without low clouds (thin cirrus may still occur).",
    )
    overcast_fraction: float = Field(
        0.12,
        ge=0.0,
        le=1.0,
        description="Share of fully cloudy acquisitions (at least one is always made).",
    )
    cirrus_probability: float = Field(
        0.25, ge=0.0, le=1.0, description="Chance that an acquisition has thin cirrus."
    )
    noise_sd: float = Field(
        0.003,
        ge=0.0,
        le=0.05,
        description="Standard deviation of the sensor noise added to every band, in "
        "reflectance units (absent from the truth API).",
    )
    n_points: int = Field(
        300, ge=10, le=100_000, description="Crop / non-crop label points to place."
    )
    n_labellers: int = Field(6, ge=2, le=100, description="People in the labelling team.")
    labellers_per_point: int = Field(
        3, ge=2, le=10, description="Most labellers that label one point (at least two do)."
    )
    n_reprocessed: int = Field(
        3,
        ge=0,
        le=50,
        description="Acquisitions published twice, the second time with a newer processing "
        "baseline and a new item id, as real catalogs have them.",
    )
    collection_id: str = Field(
        "sentinel-2-l2a", min_length=1, description="STAC collection id of the items."
    )
    radar: bool = Field(
        False,
        description="Also write Sentinel-1 RTC (VV/VH gamma0, both orbit directions every 6 "
        "days, Planetary Computer-shaped items in collection sentinel-1-rtc).",
    )
    terrain: bool = Field(
        False,
        description="Also write a Copernicus DEM GLO-30-shaped elevation tile (collection "
        "cop-dem-glo-30): a plain, a wooded hill, a lake in a hollow.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DemoConfig:
        if self.tile_size % 2:
            raise ConfigError(
                f"tile_size={self.tile_size} is odd",
                hint="use an even tile_size so that 20 m pixels align with 10 m pixels",
            )
        if self.tile_overlap % 2 or self.tile_overlap >= self.tile_size // 2:
            raise ConfigError(
                f"tile_overlap={self.tile_overlap} must be even and less than half of "
                f"tile_size={self.tile_size}",
                hint=f"use an even tile_overlap between 2 and {self.tile_size // 2 - 2}",
            )
        if self.season_end.year != self.season_start.year or (self.season_end <= self.season_start):
            raise ConfigError(
                f"season {self.season_start}..{self.season_end} is not a span within one year",
                hint="set season_start before season_end, both in the same calendar year",
            )
        if self.labellers_per_point > self.n_labellers:
            raise ConfigError(
                f"labellers_per_point={self.labellers_per_point} exceeds "
                f"n_labellers={self.n_labellers}",
                hint="raise n_labellers or lower labellers_per_point",
            )
        if self.clear_fraction + self.overcast_fraction > 1.0:
            raise ConfigError(
                f"clear_fraction + overcast_fraction = "
                f"{self.clear_fraction + self.overcast_fraction} exceeds 1",
                hint="lower one of them",
            )
        return self

    @classmethod
    def tiny(cls, **overrides: Any) -> DemoConfig:
        """Two 64 x 64 px tiles, an acquisition every 15 days: generates in a few seconds."""
        return cls(**(TINY_PRESET | overrides))

    @classmethod
    def cloudy(cls, **overrides: Any) -> DemoConfig:
        """A cloudy year: 3 % clear acquisitions, 85 % overcast (radar still sees the fields)."""
        return cls(**(CLOUDY_PRESET | overrides))

    def config_hash(self) -> str:
        """Hash of the config and the generator version: equal hashes give equal regions."""
        config = self.model_dump(mode="json")
        for key in ("radar", "terrain"):  # regions without them keep their hash
            if not config[key]:
                del config[key]
        payload = {"generator_version": GENERATOR_VERSION, "config": config}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
