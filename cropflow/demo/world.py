"""The truth of a demo region, recomputed from its config: surface, sky, classes, fields.

:class:`DemoWorld` is what the generator renders the COGs from, and what tests compare the
pipeline against. All arrays are on the 10 m *world grid* (``world.grid``; each tile is the
window ``tile.window`` of it).

What the COGs contain, exactly, for band ``b`` at acquisition ``d``::

    observed = sky(d).observe(surface_10m(d))          # shadow, cirrus, cloud (10 m)
    observed_20m = 2 x 2 block mean of observed          # 20 m bands only
    reflectance = observed(_20m) + N(0, noise_sd)       # independent per pixel, band, date
    DN = clip(rint(reflectance * 10000) + 1000, 1, 65535)   # uint16, nodata 0

so on every pixel that SCL marks clear (4, 5, 6) the COG's reflectance ``DN * 1e-4 - 0.1``
equals :meth:`DemoWorld.surface_reflectance` plus Gaussian noise of ``config.noise_sd`` and
rounding of at most 5e-5. For 20 m bands the truth is the 20 m block mean repeated over its four
10 m pixels (what a nearest-neighbour load at 10 m gives).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
from pyproj import Transformer

from cropflow.bands import S2_SPECTRAL, S2_TEN_BANDS
from cropflow.demo.config import DemoConfig
from cropflow.demo.grid import TileGeometry, WorldGrid, block_mean, layout, upsample
from cropflow.demo.landscape import Landscape, build_landscape
from cropflow.demo.noise import SmoothField, stream
from cropflow.demo.phenology import FRACTIONS, algal_bloom, unit_fractions
from cropflow.demo.sky import Acquisition, SkyState, make_sky, plan_acquisitions, scl_20m
from cropflow.demo.spectra import SOIL, SOIL_WET_DARKENING, endmember_matrix
from cropflow.errors import DataError

#: DN = reflectance * 10000 + 1000 (processing baseline >= 04.00); 0 is nodata.
DN_SCALE = 10_000.0
DN_OFFSET = 1_000
_GREEN, _STRUCT, _SOIL = (FRACTIONS.index(n) for n in ("green", "green_structure", "soil"))


@dataclass(frozen=True)
class Observation:
    """What the satellite wrote for one acquisition over the world grid."""

    dn: dict[str, np.ndarray]  # band -> uint16 at its native resolution (10 or 20 m)
    scl: np.ndarray  # uint8 at 20 m
    sky: SkyState


def _as_date(when: date | datetime) -> date:
    return when.date() if isinstance(when, datetime) else when


def native_resolution(band: str) -> int:
    """10 or 20 (m): the resolution a band is written at, as in real L2A products."""
    return S2_SPECTRAL[band][0]


class DemoWorld:
    """A demo region's truth, deterministic in its :class:`DemoConfig`."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.grid: WorldGrid
        self.tiles: list[TileGeometry]
        self.grid, self.tiles = layout(config.tile_size, config.tile_overlap)
        self.landscape: Landscape = build_landscape(config, self.grid)
        self.acquisitions: list[Acquisition] = plan_acquisitions(config)
        self._by_date = {a.date: a for a in self.acquisitions}
        to_wgs84 = Transformer.from_crs(self.grid.crs, "EPSG:4326", always_xy=True)
        xmin, ymin, xmax, ymax = self.grid.bounds
        self.lon, self.lat = to_wgs84.transform(0.5 * (xmin + xmax), 0.5 * (ymin + ymax))
        # static within-field variation: vigour, soil brightness, soil moisture pattern
        rng = stream(config.seed, "surface")
        xs, ys = self.grid.x_centres(), self.grid.y_centres()
        units = self.landscape.unit_raster
        self._vigour = 1.0 + 0.07 * SmoothField.random(rng, 30.0, 400.0).sample(xs, ys)
        self._brightness = self.landscape.units.soil_brightness[units].astype(np.float32) * (
            1.0 + 0.06 * SmoothField.random(rng, 40.0, 800.0).sample(xs, ys)
        )
        self._wetness = 1.0 + 0.35 * SmoothField.random(rng, 100.0, 2000.0).sample(xs, ys)
        self._moisture = _soil_moisture_by_day(config.seed, config.season_start.year)

    @classmethod
    def from_region(cls, out_dir: Path) -> DemoWorld:
        """The world of a generated region (read from its ``region.json``)."""
        from cropflow.demo.area import load_demo

        return cls(load_demo(out_dir).config)

    # -- static truth -------------------------------------------------------------------

    @property
    def dates(self) -> list[date]:
        """Acquisition dates (one per overpass; reprocessed duplicates share them)."""
        return [a.date for a in self.acquisitions]

    def classes(self) -> np.ndarray:
        """Legend class ids (uint8); 0 = roads, hedges, margins and unlisted crops."""
        return self.landscape.class_raster.copy()

    def field_ids(self) -> np.ndarray:
        """Field ids of the parcels (uint32); 0 outside parcels."""
        return self.landscape.field_raster.copy()

    def window(self, tile_id: str) -> tuple[slice, slice]:
        """Slices of a tile (e.g. ``"33UUT"``) in the 10 m world arrays."""
        for tile in self.tiles:
            if tile.mgrs == tile_id:
                return tile.window.slices()
        raise DataError(
            f"no tile {tile_id!r} in this demo region",
            hint=f"use one of {[t.mgrs for t in self.tiles]}",
        )

    def acquisition(self, when: date | datetime) -> Acquisition:
        """The acquisition of a date; :class:`DataError` if there was no overpass."""
        d = _as_date(when)
        if d not in self._by_date:
            raise DataError(
                f"{d} is not an acquisition date of this demo region",
                hint=f"use one of world.dates ({self.dates[0]} .. {self.dates[-1]}, every "
                f"{self.config.revisit_days} days)",
            )
        return self._by_date[d]

    # -- surface ------------------------------------------------------------------------

    def surface_10m(self, when: date | datetime) -> np.ndarray:
        """Cloud-free surface reflectance ``(band, row, col)`` float32 at 10 m, all ten bands
        (in ``S2_TEN_BANDS`` order) before the 20 m bands are averaged to 20 m."""
        doy = _as_date(when).timetuple().tm_yday
        units = self.landscape.unit_raster
        fractions = unit_fractions(self.landscape.units, doy)  # per unit
        mix = endmember_matrix(algal_bloom(doy))
        # per unit: reflectance of everything but the soil, and the spectrum of its green
        # canopy (with the unit's structure term) that the within-field vigour scales
        cover_refl = (fractions[:, :_SOIL] @ mix).T.astype(np.float32)
        green_u = fractions[:, _GREEN]
        struct_per_green = np.divide(
            fractions[:, _STRUCT], green_u, out=np.zeros_like(green_u), where=green_u > 0
        )
        green_spec = (mix[_GREEN][:, None] + mix[_STRUCT][:, None] * struct_per_green).astype(
            np.float32
        )
        green = green_u.astype(np.float32)[units]
        soil = fractions[:, _SOIL].astype(np.float32)[units]
        extra = np.clip(green * (self._vigour - 1.0), -green, soil)
        soil_lit = (soil - extra) * self._brightness
        moisture = np.clip(self._moisture[doy] * self._wetness, 0.0, 1.0)
        out = np.empty((len(S2_TEN_BANDS), *units.shape), dtype=np.float32)
        for b in range(len(S2_TEN_BANDS)):
            wet_soil = np.float32(SOIL[b]) * (1.0 - np.float32(SOIL_WET_DARKENING[b]) * moisture)
            out[b] = cover_refl[b][units] + extra * green_spec[b][units] + soil_lit * wet_soil
        return out

    def surface_reflectance(
        self, when: date | datetime, bands: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Cloud-free surface reflectance of each band, float32 on the 10 m world grid.

        20 m bands are their 20 m value repeated over the four 10 m pixels. Defined for any
        date of the season, not only acquisition dates.
        """
        names = tuple(bands) if bands is not None else S2_TEN_BANDS
        unknown = [b for b in names if b not in S2_TEN_BANDS]
        if unknown:
            raise DataError(f"unknown bands {unknown}", hint=f"use names from {S2_TEN_BANDS}")
        surface = self.surface_10m(when)
        out = {}
        for b in names:
            layer = surface[S2_TEN_BANDS.index(b)]
            out[b] = upsample(block_mean(layer)) if native_resolution(b) == 20 else layer
        return out

    def soil_moisture(self, when: date | datetime) -> np.ndarray:
        """Top-soil wetness 0..1 of a day on the 10 m world grid (rain events drying out)."""
        doy = _as_date(when).timetuple().tm_yday
        wet: np.ndarray = np.clip(self._moisture[doy] * self._wetness, 0.0, 1.0)
        return wet

    @property
    def vigour(self) -> np.ndarray:
        """Within-field canopy vigour (about 1) on the 10 m world grid."""
        return self._vigour

    # -- sky ----------------------------------------------------------------------------

    def sky(self, when: date | datetime) -> SkyState:
        """Cloud opacity, shadow and cirrus of an acquisition on the 10 m world grid."""
        return make_sky(self.config, self.acquisition(when), self.grid, self.lon, self.lat)

    def cloud_mask(self, when: date | datetime) -> np.ndarray:
        """True where cloud, cloud shadow or cirrus alters the acquisition (10 m)."""
        return self.sky(when).cloudy

    # -- what the satellite wrote --------------------------------------------------------

    def observe(self, when: date | datetime) -> Observation:
        """DN of every band at its native resolution and the 20 m SCL, as written to COGs."""
        acq = self.acquisition(when)
        surface = self.surface_10m(acq.date)
        sky = self.sky(acq.date)
        observed = sky.observe(surface)
        dn: dict[str, np.ndarray] = {}
        for i, band in enumerate(S2_TEN_BANDS):
            layer = observed[i] if native_resolution(band) == 10 else block_mean(observed[i])
            rng = stream(self.config.seed, "noise", acq.date.toordinal(), zlib.crc32(band.encode()))
            noisy = layer + self.config.noise_sd * rng.standard_normal(layer.shape, np.float32)
            dn[band] = np.clip(np.rint(noisy * DN_SCALE) + DN_OFFSET, 1, 65535).astype(np.uint16)
        red = block_mean(surface[S2_TEN_BANDS.index("red")])
        nir = block_mean(surface[S2_TEN_BANDS.index("nir")])
        return Observation(dn=dn, scl=scl_20m(sky.flags(), red, nir), sky=sky)


def _soil_moisture_by_day(seed: int, year: int) -> np.ndarray:
    """Top-soil wetness 0..1 for days 0..366 of ``year``: rain events that dry out in days."""
    rng = stream(seed, "weather", year)
    wet = np.empty(367)
    m = 0.6
    for day in range(367):
        if rng.random() < 0.28:
            m = min(1.0, m + rng.exponential(0.25))
        m *= np.exp(-1.0 / 4.0)
        wet[day] = m
    return wet
