"""In-season maps: cubes cut at a date, truncated training, the forecaster that completes a
partial season, and remaps as of dates in the season."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio

from cropflow.chain import demo_config, embedded_demo_region, resolve_as_of
from cropflow.cube import CubeParams, GridParams, open_cube, plan_cube, write_cube
from cropflow.demo import DemoConfig, DemoManifest, generate_demo
from cropflow.errors import ConfigError, ContractError, EmptySearchError
from cropflow.regions import InSeasonSpec, RegionConfig
from cropflow.settings import get_settings
from cropflow.stac.profiles import get_profile
from cropflow.stac.search import dedupe_items

BANDS = ["red", "nir"]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    return generate_demo(tmp_path_factory.mktemp("demo") / "region", DemoConfig.tiny())


def _items(region: DemoManifest) -> list[pystac.Item]:
    items, _ = dedupe_items(list(pystac.ItemCollection.from_file(str(region.path("items")))))
    return items


def _params(region: DemoManifest, **kw: object) -> CubeParams:
    a, _, c, _, e, f = region.grid.transform[:6]
    h, w = region.grid.shape
    bounds = (c, f + e * h, c + a * w, f)
    grid = GridParams(crs=region.grid.crs, resolution=10, bounds=bounds)
    return CubeParams.model_validate(
        {"bands": BANDS, "period": "1MS", "chunk_size": 32, "grid": grid, **kw}
    )


def test_a_cube_as_of_a_day_keeps_the_season_axis_and_leaves_the_future_empty(
    region: DemoManifest, tmp_path: Path
) -> None:
    items = _items(region)
    days = sorted(i.datetime.date() for i in items if i.datetime is not None)
    start, end = date(days[0].year, days[0].month, 1), days[-1]
    profile = get_profile("local-demo")
    full_plan = plan_cube(items, profile, _params(region, start=start, end=end))
    n = len(full_plan.axis)
    assert n >= 4, "the tiny demo spans several months"
    # as of the day before the 4th period ends: 3 periods are complete, the 4th is not
    as_of = full_plan.axis.ends[3].date().replace(day=1)  # first day of month 5
    as_of = date.fromordinal(as_of.toordinal() - 2)  # two days before: month 4 incomplete
    cut_plan = plan_cube(items, profile, _params(region, start=start, end=end, as_of=as_of))
    assert len(cut_plan.axis) == n, "the time axis is the season's, whatever as_of"
    k = cut_plan.observed_steps
    assert k == 3
    assert all(i.step < k and i.day <= as_of for i in cut_plan.items)
    assert cut_plan.key != full_plan.key

    full = open_cube(write_cube(full_plan, tmp_path / "full.zarr", executor="local").uri)
    cut = open_cube(write_cube(cut_plan, tmp_path / "cut.zarr", executor="local").uri)
    for band in BANDS:
        future = cut[band].values[k:]
        assert np.isnan(future).all(), f"{band}: steps after as_of must stay empty"
        # a complete period holds the same acquisitions in both cubes: the same composite
        seen = full["valid_count"].values[:k] > 0
        np.testing.assert_array_equal(cut[band].values[:k][seen], full[band].values[:k][seen])
        # the full cube's later steps are there (the cut is not an artefact of the data)
        assert np.isfinite(full[band].values[k:]).mean() > 0.9
    assert not cut["interpolated"].values[k:].any(), "no gap filling into the future"
    assert int(cut["valid_count"].values[k:].sum()) == 0
    info = cut.attrs["cropflow:time"]
    assert info["as_of"] == as_of.isoformat() and info["observed_steps"] == k


def test_as_of_refuses_what_cannot_be_cut(region: DemoManifest) -> None:
    items = _items(region)
    days = sorted(i.datetime.date() for i in items if i.datetime is not None)
    start = date(days[0].year, days[0].month, 1)
    with pytest.raises(ConfigError, match=r"as_of .* needs end"):
        from cropflow.cube.params import parse_params

        parse_params({"as_of": "2024-06-15"})
    with pytest.raises(ConfigError, match="before start"):
        from cropflow.cube.params import parse_params

        parse_params({"start": "2024-03-01", "end": "2024-10-31", "as_of": "2024-02-01"})
    # as of a day inside the first period: nothing is complete yet, said with the first end
    early = date(start.year, start.month, 10)
    with pytest.raises(EmptySearchError, match="complete by as_of") as err:
        params = _params(region, start=start, end=days[-1], as_of=early)
        plan_cube(items, get_profile("local-demo"), params)
    assert "later as_of" in str(err.value.hint)


# ---------------------------------------------------------------------------------------------
# The chained flows: retrain for in-season maps, remap as of dates in the season
# ---------------------------------------------------------------------------------------------


@dataclass
class InSeason:
    region: RegionConfig  # strategy forecast, min_steps 2
    retrain: Any  # the RetrainResult of the forecast retrain
    work: Path


@pytest.fixture(scope="module")
def in_season(
    prefect_harness: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InSeason]:
    """The tiny demo region retrained for in-season maps with the forecast strategy."""
    from flows.retrain import RetrainParams, retrain

    root = tmp_path_factory.mktemp("in-season")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CROPFLOW_WORKDIR", str(root / "work"))
        generate_demo(get_settings().demo_dir, demo_config("tiny", None))
        region = embedded_demo_region().model_copy(
            update={"in_season": InSeasonSpec(strategy="forecast", min_steps=2)}
        )
        result = retrain(
            RetrainParams.model_validate(
                {
                    "region": region,
                    "training_set": {"splits": {"block_size_px": 16}},
                    "train": {"epochs": 2},
                    "forecast": {"epochs": 3},
                }
            )
        )
        yield InSeason(region=region, retrain=result, work=root / "work")


@pytest.mark.slow
def test_a_forecast_retrain_logs_and_registers_the_forecaster_with_its_model(
    in_season: InSeason,
) -> None:
    from cropflow.train.registry import mlflow_target

    run_id = in_season.retrain.summary.mlflow_run_id
    name = f"{in_season.region.model_name()}-forecaster"
    client = mlflow_target(name).client
    versions = client.search_model_versions(f"name='{name}'")
    assert [v.tags.get("classifier_run_id") for v in versions] == [run_id]
    metrics = client.get_run(run_id).data.metrics
    bands = in_season.retrain.outcome.training.val  # scored: the run exists
    assert bands
    contract = json.loads(Path(client.download_artifacts(run_id, "contract.json")).read_text())
    for band in contract["bands"]:
        assert metrics[f"forecast_val_rmse_{band}"] > 0
        assert f"forecast_val_persistence_rmse_{band}" in metrics
    assert contract["min_steps"] is None, "the classifier itself is a whole-season model"


@pytest.mark.slow
def test_three_dates_in_season_give_three_maps(in_season: InSeason) -> None:
    from flows.remap import RemapParams, remap_region

    days = [date(2024, 5, 15), date(2024, 7, 10), date(2024, 9, 5)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CROPFLOW_WORKDIR", str(in_season.work))
        summaries = [remap_region(RemapParams(region=in_season.region, as_of=day)) for day in days]
    observed, coverage = [], []
    for day, summary in zip(days, summaries, strict=True):
        folder = Path(str(summary.products_dir))
        assert folder.name == f"demo-as-of-{day.isoformat()}"
        cube = open_cube(str(summary.cube_uri))
        with rasterio.open(summary.products["class_map"]) as src:
            tags = src.tags()
            mapped = src.read(1) != 255
        seen = np.isfinite(cube["red"].values).any(axis=0)
        assert not (mapped & ~seen).any(), "a pixel never observed has no class"
        assert mapped.mean() > 0.5
        coverage.append(mapped)
        assert tags["CROPFLOW_AS_OF"].startswith(day.isoformat())
        assert "strategy forecast" in tags["CROPFLOW_AS_OF"]
        catalog = pystac.Catalog.from_file(summary.products["catalog"])
        item = next(iter(catalog.get_items(recursive=True)))
        info = item.properties["cropflow:in_season"]
        assert info["as_of"] == day.isoformat() and info["strategy"] == "forecast"
        observed.append(info["observed_steps"])
        k = info["observed_steps"]
        assert np.isnan(cube["red"].values[k:]).all()
    assert observed == [2, 4, 6], "monthly composites complete by each day (season from March)"
    assert len({s.cube_uri for s in summaries}) == 3
    for earlier, later in itertools.pairwise(coverage):
        assert not (earlier & ~later).any(), "a pixel mapped early stays mapped later"


@pytest.mark.slow
def test_a_whole_season_model_refuses_to_map_a_partial_season_by_truncation(
    in_season: InSeason,
) -> None:
    from flows.remap import RemapParams, remap_region

    region = in_season.region.model_copy(
        update={"in_season": InSeasonSpec(strategy="truncation", min_steps=2)}
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CROPFLOW_WORKDIR", str(in_season.work))
        with pytest.raises(ContractError, match="needs the first 8 of its 8 time steps") as err:
            remap_region(RemapParams(region=region, as_of=date(2024, 6, 15)))
        assert "augment.truncation" in str(err.value.hint)
        with pytest.raises(ConfigError, match="too early") as early:
            remap_region(RemapParams(region=in_season.region, as_of=date(2024, 4, 20)))
        assert "2024-04-30" in str(early.value.hint)
    assert not (in_season.work / "products" / "demo-as-of-2024-06-15").exists()


@pytest.mark.slow
def test_a_truncation_retrain_maps_the_partial_season_itself(in_season: InSeason) -> None:
    from flows.remap import RemapParams, remap_region
    from flows.retrain import RetrainParams, retrain

    region = in_season.region.model_copy(
        update={
            "in_season": InSeasonSpec(strategy="truncation", min_steps=3),
            "registered_model": "cropflow-demo-truncation",
        }
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CROPFLOW_WORKDIR", str(in_season.work))
        result = retrain(
            RetrainParams.model_validate(
                {
                    "region": region,
                    "training_set": {"splits": {"block_size_px": 16}},
                    "train": {"epochs": 2},
                }
            )
        )
        from cropflow.train.registry import mlflow_target

        client = mlflow_target().client
        run = client.get_run(str(result.summary.mlflow_run_id))
        assert run.data.params["augment.truncation"] == "0.5"
        assert run.data.params["augment.truncation_min_steps"] == "3"
        summary = remap_region(RemapParams(region=region, as_of=date(2024, 6, 10)))
    with rasterio.open(summary.products["class_map"]) as src:
        assert "strategy truncation" in src.tags()["CROPFLOW_AS_OF"]
        assert "3 of 8 steps" in src.tags()["CROPFLOW_AS_OF"]


def test_as_of_is_resolved_against_the_season_and_the_earliest_map() -> None:
    region = RegionConfig.model_validate(
        {
            "name": "r",
            "aoi": [13.0, 52.0, 13.1, 52.1],
            "season": {"start": "2024-03-01", "end": "2024-10-31"},
            "in_season": {"strategy": "forecast", "min_steps": 3},
        }
    )
    base = CubeParams()
    assert resolve_as_of(region, base, None).as_of is None
    cut = resolve_as_of(region, base, date(2024, 7, 1))
    assert cut.as_of == date(2024, 7, 1) and cut.earliest == date(2024, 5, 31)
    assert cut.folder("r") == "r-as-of-2024-07-01"
    assert resolve_as_of(region, base, date(2024, 11, 2)).as_of is None, "after: whole season"
    assert resolve_as_of(region, base, date(2024, 10, 31)).as_of is None
    today = resolve_as_of(region, base, "today", today=date(2024, 4, 2))
    assert today.too_early and today.earliest == date(2024, 5, 31)
    assert "2024-05-31" in today.too_early_message("r")
    with pytest.raises(ConfigError, match="too early"):
        resolve_as_of(region, base, date(2024, 5, 30))
    ten_day = region.model_copy(update={"cube_period": "10D"})
    assert resolve_as_of(ten_day, base, date(2024, 4, 1)).earliest == date(2024, 3, 30)


def test_the_in_season_schedule_is_its_own_deployment() -> None:
    from cropflow.orchestration.deploy import plan_deployments
    from cropflow.orchestration.project import FlowEntry

    region = RegionConfig.model_validate(
        {
            "name": "r",
            "aoi": [13.0, 52.0, 13.1, 52.1],
            "season": {"start": "2024-03-01", "end": "2024-10-31"},
            "schedule": {"cron": "0 3 1 * *"},
            "in_season": {"strategy": "forecast", "schedule": {"cron": "0 4 * * 1"}},
        }
    )
    flows = {
        "remap-region": FlowEntry(name="remap-region", entrypoint="flows/remap.py:remap_region")
    }
    specs = {s.full_name: s for s in plan_deployments([region], flows)}
    weekly = specs["remap-region/r-in-season"]
    assert weekly.schedule is not None and weekly.schedule.cron == "0 4 * * 1"
    assert weekly.extra_parameters == {"as_of": "today"}
    assert specs["remap-region/r"].extra_parameters == {}
    no_schedule = region.model_copy(update={"in_season": InSeasonSpec()})
    assert "remap-region/r-in-season" not in {
        s.full_name for s in plan_deployments([no_schedule], flows)
    }


# ---------------------------------------------------------------------------------------------
# Truncation, the forecaster, the completed-season model (unit level)
# ---------------------------------------------------------------------------------------------


def _contract(n_time: int = 6, bands: tuple[str, ...] = ("red", "nir")) -> Any:
    from cropflow.train.synthetic import synthetic_training_data

    return synthetic_training_data("pixel", n_time=n_time, bands=bands).contract()


def test_truncation_cuts_series_at_random_steps_keeping_min_steps() -> None:
    import torch

    from cropflow.train.augment import Tensors, augment
    from cropflow.train.params import AugmentParams

    b, t, c = 4000, 8, 3
    x = torch.randn(b, t, c)
    tensors = Tensors(
        x=x, y=torch.zeros(b, dtype=torch.long), dates=torch.zeros(b, t, dtype=torch.long),
        pad_mask=torch.zeros(b, t, dtype=torch.bool),
    )  # fmt: skip
    params = AugmentParams(truncation=0.5, truncation_min_steps=3)
    out = augment(tensors, params, torch.Generator().manual_seed(0), spatial=False)
    kept = (~out.pad_mask).sum(dim=1)
    cut = kept < t
    assert 0.45 < cut.float().mean() < 0.55, "about half the series are cut"
    assert int(kept.min()) == 3 and set(kept[cut].tolist()) == {3, 4, 5, 6, 7}
    # a cut is a tail: once missing, every later step is missing, and zeroed
    pad = out.pad_mask
    assert not (pad[:, :-1] & ~pad[:, 1:]).any()
    assert (out.x[pad] == 0).all() and torch.equal(out.x[~pad], x[~pad])


def test_the_forecaster_keeps_what_was_observed_and_looks_only_backwards() -> None:
    import torch

    from models.configs import ForecasterConfig
    from models.forecaster import SeasonForecaster

    torch.manual_seed(0)
    model = SeasonForecaster(ForecasterConfig(hidden_size=8), _contract()).eval()
    x = torch.randn(5, 6, 2)
    seen = torch.ones(5, 6, dtype=torch.bool)
    seen[:, 3:] = False
    out = model(x, seen)
    assert out.completed.shape == out.forecast.shape == (5, 6, 2)
    assert torch.equal(out.completed[:, :3], x[:, :3])
    assert torch.equal(out.completed[:, 3:], out.forecast[:, 3:])
    # what the unobserved steps held changes nothing; what was observed does
    other = x.clone()
    other[:, 3:] = 99.0
    assert torch.equal(model(other, seen).completed, out.completed)
    moved = x.clone()
    moved[:, 2] += 1.0
    assert not torch.allclose(model(moved, seen).completed[:, 3:], out.completed[:, 3:])
    # the forecast of a step depends only on the steps before it
    later = x.clone()
    later[:, 4:] += 5.0
    full = torch.ones(5, 6, dtype=torch.bool)
    assert torch.equal(model(later, full).forecast[:, :5], model(x, full).forecast[:, :5])


def test_the_forecaster_refuses_other_shapes_and_acquisition_dates() -> None:
    import torch

    from models.configs import ForecasterConfig
    from models.forecaster import SeasonForecaster

    model = SeasonForecaster(ForecasterConfig(hidden_size=8), _contract())
    with pytest.raises(ContractError, match=r"x \[B, 6, 2\]"):
        model(torch.zeros(2, 5, 2), torch.ones(2, 5, dtype=torch.bool))
    irregular = _contract().model_copy(update={"time_kind": "acquisition", "n_time": None})
    with pytest.raises(ContractError, match="composite"):
        SeasonForecaster(ForecasterConfig(), irregular)


def test_a_trained_forecaster_beats_persistence_and_round_trips(tmp_path: Path) -> None:
    import torch

    from cropflow.train.forecast import score_forecaster, train_forecaster
    from cropflow.train.params import ForecastParams
    from cropflow.train.synthetic import synthetic_training_data
    from models.serialization import load_forecaster, load_model, save_model

    data = synthetic_training_data("pixel", sizes=(160, 48, 48), noise=0.2)
    model, report = train_forecaster(data, data.contract(), ForecastParams(epochs=25, seed=0))
    assert report.best_epoch > 1 and len(report.by_cut) == 5
    test = score_forecaster(model, data, "test")
    for band in test.mean_by_band():
        assert band.rmse < 0.8 * band.persistence_rmse, band
    folder = save_model(model, tmp_path / "forecaster")
    again = load_forecaster(folder)
    x = torch.randn(3, 6, 2)
    seen = torch.rand(3, 6) < 0.5
    assert torch.equal(again(x, seen).completed, model(x, seen).completed)
    with pytest.raises(ContractError, match="not a season forecaster"):
        load_forecaster(save_model(_classifier(), tmp_path / "classifier"))
    with pytest.raises(ConfigError, match="'season_forecaster' found"):
        load_model(folder)  # a forecaster is no classifier


def _classifier() -> Any:
    from models.base import build_model
    from models.configs import parse_model_config

    return build_model(parse_model_config({"name": "tempcnn"}), _contract())


def test_the_completed_season_model_classifies_a_partial_season_as_a_whole_one() -> None:
    import torch

    from cropflow.predict.executors import ModelPayload
    from models.base import Batch
    from models.configs import ForecasterConfig
    from models.forecaster import CompletedSeasonModel, SeasonForecaster

    torch.manual_seed(0)
    classifier = _classifier().eval()
    forecaster = SeasonForecaster(
        ForecasterConfig(hidden_size=8), _contract().model_copy(update={"min_steps": 2})
    ).eval()
    model = CompletedSeasonModel(classifier, forecaster).eval()
    assert model.contract.min_steps == 2 and model.contract.bands == ["red", "nir"]
    x = torch.randn(4, 6, 2)
    pad = torch.zeros(4, 6, dtype=torch.bool)
    pad[:, 4:] = True
    batch = Batch(x=x, dates=torch.arange(6).expand(4, 6), pad_mask=pad)
    with torch.no_grad():
        got = model(batch).logits
        completed = forecaster(x, ~pad).completed
        want = classifier(Batch.dense(completed)).logits
    assert torch.allclose(got, want)
    # the Dask payload rebuilds the same model on a worker
    rebuilt, contract = ModelPayload.of(model, model.contract).build()
    with torch.no_grad():
        assert torch.allclose(rebuilt(batch).logits, got)
    assert contract.min_steps == 2
    other = _contract(bands=("red", "swir16"))
    with pytest.raises(ContractError, match="not trained for the classifier"):
        CompletedSeasonModel(classifier, SeasonForecaster(ForecasterConfig(), other))


def test_the_contract_names_the_steps_a_model_needs() -> None:
    contract = _contract()
    contract.check_observed(6)
    with pytest.raises(ContractError, match="needs the first 6 of its 6 time steps") as err:
        contract.check_observed(3, "2024-06-30")
    assert "as of 2024-06-30 has 3" in str(err.value)
    contract.model_copy(update={"min_steps": 3}).check_observed(3)
