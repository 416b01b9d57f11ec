"""The demo's Sentinel-1 and terrain (issue 17): physically plausible and consistent with the
fields the optical simulation draws."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import numpy as np
import pytest

from cropflow.demo import DemoConfig
from cropflow.demo.radar import RadarPass, backscatter, plan_passes
from cropflow.demo.world import DemoWorld


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return DemoWorld(DemoConfig.tiny(radar=True, terrain=True))


def _truth(world: DemoWorld, day: date, orbit: str = "ascending") -> dict[str, np.ndarray]:
    return backscatter(
        seed=world.config.seed,
        units=world.landscape.units,
        unit_raster=world.landscape.unit_raster,
        vigour=world.vigour,
        moisture=world.soil_moisture(day),
        radar_pass=RadarPass(day, orbit, "SENTINEL-1A"),
        looks=None,
    )


def _mean_db(values: np.ndarray, where: np.ndarray) -> float:
    return float(10 * np.log10(values[where].mean()))


def test_both_orbits_every_six_days() -> None:
    passes = plan_passes(date(2024, 3, 1), date(2024, 4, 30))
    for orbit in ("ascending", "descending"):
        days = [p.date for p in passes if p.orbit == orbit]
        assert {(b - a).days for a, b in itertools.pairwise(days)} == {6}
    assert passes[0].orbit != passes[1].orbit


def test_maize_vh_rises_with_its_biomass_and_forest_stays_bright(world: DemoWorld) -> None:
    classes = world.classes()
    maize, forest, water = classes == 5, classes == 11, classes == 12
    spring, summer = _truth(world, date(2024, 5, 1)), _truth(world, date(2024, 8, 10))
    assert maize.any() and forest.any()
    assert _mean_db(summer["vh"], maize) > _mean_db(spring["vh"], maize) + 3
    assert _mean_db(summer["vv"], forest) > -9.5
    assert abs(_mean_db(summer["vv"], forest) - _mean_db(spring["vv"], forest)) < 2.5
    if water.any():
        assert _mean_db(summer["vv"], water) < -12
    assert np.all(summer["vh"] < summer["vv"]), "cross-polarised is weaker"


def test_bare_soil_brightens_after_rain(world: DemoWorld) -> None:
    """On a bare field (maize before emergence) VV follows the top-soil moisture."""
    maize = world.classes() == 5
    days = [date(2024, 3, 1) + timedelta(days=k) for k in range(40)]
    wet = [float(world.soil_moisture(d)[maize].mean()) for d in days]
    vv = [_mean_db(_truth(world, d)["vv"], maize) for d in days]
    assert np.corrcoef(wet, vv)[0, 1] > 0.9


def test_speckle_is_gamma_with_the_looks_of_grd(world: DemoWorld) -> None:
    day = date(2024, 6, 1)
    truth = _truth(world, day)["vv"]
    noisy = backscatter(
        seed=world.config.seed,
        units=world.landscape.units,
        unit_raster=world.landscape.unit_raster,
        vigour=world.vigour,
        moisture=world.soil_moisture(day),
        radar_pass=RadarPass(day, "ascending", "SENTINEL-1A"),
    )["vv"]
    ratio = noisy / truth
    assert ratio.mean() == pytest.approx(1.0, abs=0.03)
    assert 1 / ratio.var() == pytest.approx(4.4, rel=0.15), "equivalent number of looks"


def test_the_cloudy_preset_loses_most_optical_dates() -> None:
    from cropflow.demo.sky import plan_acquisitions

    normal = plan_acquisitions(DemoConfig.tiny())
    cloudy = plan_acquisitions(DemoConfig.cloudy(**{"tile_size": 64, "tile_overlap": 16}))
    share = sum(a.regime == "overcast" for a in cloudy) / len(cloudy)
    assert share >= 0.6 > sum(a.regime == "overcast" for a in normal) / len(normal)


def test_a_demo_without_radar_keeps_its_hash() -> None:
    """Regions generated before radar existed (whose config had no radar/terrain) are not
    regenerated: their hash is the one of the config without those fields."""
    import hashlib
    import json

    from cropflow.demo.config import GENERATOR_VERSION

    plain = DemoConfig.tiny()
    before = plain.model_dump(mode="json")
    del before["radar"], before["terrain"]
    text = json.dumps(
        {"generator_version": GENERATOR_VERSION, "config": before},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert plain.config_hash() == hashlib.sha256(text.encode()).hexdigest()
    assert DemoConfig.tiny(radar=True).config_hash() != plain.config_hash()
