"""Acquisitions, the sun, clouds, cloud shadows, thin cirrus and the scene classification (SCL).

Low clouds are a thresholded smooth random field (ragged cumulus-like shapes); their opacity
ramps from 0 at the edge to 1 in thick cores. A cloud's shadow is the same opacity field moved
away from the sun by ``height / tan(sun elevation)`` along the sun's azimuth. Thin cirrus is a
second, smoother field that adds a little bright, blue-heavy reflectance. Every pixel where any
of the three is non-zero is *cloudy* and flagged in SCL (3, 8, 9 or 10); the others get 4, 5 or
6 (vegetation, not vegetated, water) from their reflectance, like Sen2Cor does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

import numpy as np
from scipy.special import ndtri

from cropflow.demo.config import DemoConfig
from cropflow.demo.grid import WorldGrid
from cropflow.demo.noise import SmoothField, stream
from cropflow.demo.spectra import CIRRUS, CLOUD, SHADOW_DIFFUSE

Regime = Literal["clear", "partial", "overcast"]

#: Sensing time of the orbit over the region (Sentinel-2 descending node, ~10:30 local solar).
SENSING_TIME_UTC = time(10, 6, 19)
#: Opacity from which a cloud counts as high-probability (SCL 9) rather than medium (SCL 8).
THICK_OPACITY = 0.5
#: Thin-cirrus optical share at its thickest (cirrus adds at most ~0.04 reflectance).
CIRRUS_MAX = 0.12
#: SCL codes.
SCL_SHADOW, SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER = 3, 4, 5, 6
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS = 8, 9, 10
#: SCL codes of pixels that must not be used (cloud, shadow, cirrus).
SCL_CLOUDY = frozenset({SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS})


@dataclass(frozen=True)
class Acquisition:
    """One overpass of the region: when, by which satellite, and what the sky was like."""

    date: date
    datetime: datetime  # UTC
    platform: str  # sentinel-2a | sentinel-2b
    regime: Regime
    cloud_target: float  # expected share of low cloud
    cloud_height_m: float
    cirrus_cover: float  # expected share of cirrus (0: none)


def acquisition_dates(config: DemoConfig) -> list[date]:
    """Every ``revisit_days`` from ``season_start`` up to ``season_end``."""
    n = (config.season_end - config.season_start).days // config.revisit_days + 1
    return [config.season_start + timedelta(days=i * config.revisit_days) for i in range(n)]


def plan_acquisitions(config: DemoConfig) -> list[Acquisition]:
    """The season's acquisitions; at least one is overcast, ``clear_fraction`` are cloud-free."""
    dates = acquisition_dates(config)
    rng = stream(config.seed, "sky-plan")
    n = len(dates)
    n_overcast = max(1, round(config.overcast_fraction * n))
    n_clear = min(n - n_overcast, round(config.clear_fraction * n))
    order = rng.permutation(n)
    regimes: list[Regime] = ["partial"] * n
    for i in order[:n_overcast]:
        regimes[int(i)] = "overcast"
    for i in order[n_overcast : n_overcast + n_clear]:
        regimes[int(i)] = "clear"
    out = []
    for d, regime in zip(dates, regimes, strict=True):
        r = stream(config.seed, "sky-date", d.toordinal())
        # Sentinel-2A and 2B alternate every 5 days over a tile
        platform = "sentinel-2a" if ((d - date(2024, 1, 1)).days // 5) % 2 == 0 else "sentinel-2b"
        when = datetime.combine(d, SENSING_TIME_UTC, tzinfo=UTC) + timedelta(
            milliseconds=int(r.integers(0, 20_000))
        )
        cloud = {"clear": 0.0, "overcast": 1.0, "partial": float(r.uniform(0.05, 0.65))}[regime]
        cirrus = (
            float(r.uniform(0.3, 0.9))
            if regime != "overcast" and r.random() < config.cirrus_probability
            else 0.0
        )
        out.append(
            Acquisition(d, when, platform, regime, cloud, float(r.uniform(600, 2500)), cirrus)
        )
    return out


def sun_position(when: datetime, lon: float, lat: float) -> tuple[float, float]:
    """Sun azimuth (degrees clockwise from north) and elevation (degrees) at ``when`` (UTC).

    NOAA's low-precision formulas (equation of time and declination from the fractional year),
    good to a fraction of a degree.
    """
    when = when.astimezone(UTC)
    hour = when.hour + when.minute / 60 + (when.second + when.microsecond / 1e6) / 3600
    g = 2 * math.pi / 365 * (when.timetuple().tm_yday - 1 + (hour - 12) / 24)
    # fmt: off
    eqtime = 229.18 * (
        0.000075 + 0.001868 * math.cos(g) - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g) - 0.040849 * math.sin(2 * g)
    )
    decl = (
        0.006918 - 0.399912 * math.cos(g) + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g) + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g) + 0.00148 * math.sin(3 * g)
    )
    # fmt: on
    solar_minutes = hour * 60 + eqtime + 4 * lon
    ha = math.radians(solar_minutes / 4 - 180)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    elevation = 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zen))))
    azimuth = math.degrees(
        math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    )
    return (azimuth + 180) % 360, elevation


def shadow_offset(height_m: float, sun_azimuth: float, sun_elevation: float) -> tuple[float, float]:
    """Where a cloud's shadow falls relative to the cloud: ``(east, north)`` metres."""
    reach = height_m / math.tan(math.radians(sun_elevation))
    az = math.radians(sun_azimuth)
    return -reach * math.sin(az), -reach * math.cos(az)


@dataclass(frozen=True)
class SkyState:
    """The sky of one acquisition on the 10 m world grid (float32 arrays in 0..1)."""

    opacity: np.ndarray  # low cloud
    shadow: np.ndarray  # strength of the cloud shadow
    cirrus: np.ndarray  # thin cirrus
    sun_azimuth: float
    sun_elevation: float
    offset_m: tuple[float, float]  # shadow displacement (east, north)

    @property
    def cloudy(self) -> np.ndarray:
        """True where cloud, shadow or cirrus alters the surface reflectance."""
        return (self.opacity > 0) | (self.shadow > 0) | (self.cirrus > 0)

    def flags(self) -> np.ndarray:
        """SCL cloud codes at 10 m: 9, 8 (cloud), 3 (shadow), 10 (cirrus), else 0."""
        code = np.zeros(self.opacity.shape, dtype=np.uint8)
        code[self.cirrus > 0] = SCL_CIRRUS
        code[self.shadow > 0] = SCL_SHADOW
        code[self.opacity > 0] = SCL_CLOUD_MEDIUM
        code[self.opacity >= THICK_OPACITY] = SCL_CLOUD_HIGH
        return code

    def observe(self, surface: np.ndarray) -> np.ndarray:
        """Apply shadow, cirrus and cloud to surface reflectance ``(bands, rows, cols)``."""
        shade = 1.0 - (1.0 - SHADOW_DIFFUSE) * self.shadow
        out = surface * shade
        ci = self.cirrus[None]
        out = out * (1.0 - ci) + ci * CIRRUS.astype(np.float32)[:, None, None]
        a = self.opacity[None]
        brightness = 0.75 + 0.25 * a  # thin cloud edges are darker than thick cores
        return out * (1.0 - a) + a * brightness * CLOUD.astype(np.float32)[:, None, None]


def _opacity(noise: np.ndarray, threshold: float) -> np.ndarray:
    return np.clip((noise - threshold) / 0.9, 0.0, 1.0) ** 0.7


def make_sky(
    config: DemoConfig, acq: Acquisition, world: WorldGrid, lon: float, lat: float
) -> SkyState:
    """The sky of ``acq`` over the world grid (deterministic in the seed and the date)."""
    xs, ys = world.x_centres(), world.y_centres()
    rng = stream(config.seed, "clouds", acq.date.toordinal())
    azimuth, elevation = sun_position(acq.datetime, lon, lat)
    offset = shadow_offset(acq.cloud_height_m, azimuth, elevation)
    cloud_field = SmoothField.random(rng, 120.0, 6000.0, roughness=0.55)
    cirrus_field = SmoothField.random(rng, 500.0, 12000.0, roughness=0.3)
    zeros = np.zeros(world.shape, dtype=np.float32)
    opacity = shadow = cirrus = zeros
    if acq.regime == "overcast":
        opacity = np.clip(0.8 + 0.2 * cloud_field.sample(xs, ys), 0.45, 1.0).astype(np.float32)
    elif acq.regime == "partial":
        thr = float(ndtri(1.0 - acq.cloud_target))
        opacity = _opacity(cloud_field.sample(xs, ys), thr).astype(np.float32)
        cast = _opacity(cloud_field.sample(xs, ys, shift=offset), thr)
        shadow = np.clip(cast / THICK_OPACITY, 0.0, 1.0).astype(np.float32)
    if acq.cirrus_cover > 0:
        thr = float(ndtri(1.0 - acq.cirrus_cover))
        cirrus = (CIRRUS_MAX * np.clip((cirrus_field.sample(xs, ys) - thr) / 1.2, 0.0, 1.0)).astype(
            np.float32
        )
    return SkyState(opacity, shadow, cirrus, azimuth, elevation, offset)


def scl_20m(flags_10m: np.ndarray, red: np.ndarray, nir: np.ndarray) -> np.ndarray:
    """SCL at 20 m: a 20 m pixel takes the worst cloud flag of its four 10 m pixels.

    Clear 20 m pixels are water (NDVI < 0 and NIR < 0.06), vegetation (NDVI >= 0.4) or not
    vegetated, from their 20 m ``red`` and ``nir`` reflectance.
    """
    rank = np.zeros(256, dtype=np.uint8)
    for r, code in enumerate((SCL_CIRRUS, SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH), start=1):
        rank[code] = r
    h, w = flags_10m.shape
    worst = rank[flags_10m].reshape(h // 2, 2, w // 2, 2).max(axis=(1, 3))
    codes = np.array([0, SCL_CIRRUS, SCL_SHADOW, SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH], np.uint8)
    ndvi = (nir - red) / np.maximum(nir + red, 1e-6)
    clear = np.where(
        (ndvi < 0) & (nir < 0.06),
        SCL_WATER,
        np.where(ndvi >= 0.4, SCL_VEGETATION, SCL_NOT_VEGETATED),
    ).astype(np.uint8)
    return np.where(worst > 0, codes[worst], clear).astype(np.uint8)
