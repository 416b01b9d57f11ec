"""The demo: generate the bundled region -> retrain on it -> remap it -> print the products.

Runs on the embedded default (Prefect's ephemeral API, MLflow on SQLite, a Dask LocalCluster,
the demo catalog served over HTTP by the search step). It chains the two flows users deploy,
``retrain`` and ``remap_region``, on the demo region, so the demo exercises exactly what the
scheduled and UI-triggered runs do.
"""

from __future__ import annotations

from prefect import flow, task

from cropflow.chain import ChainSummary, DemoParams, demo_config, embedded_demo_region
from cropflow.demo import DemoConfig
from cropflow.regions import RegionConfig
from flows.remap import RemapParams, remap_region
from flows.retrain import RetrainParams, retrain
from tasks.demo import generate_demo_region


@task(name="demo-config")
def demo_config_task(size: str, seed: int | None, radar: bool, weather: str) -> DemoConfig:
    """The demo region's configuration for a preset, seed, sensors and weather."""
    return demo_config(size, seed, radar, weather)


@task(name="embedded-demo")
def embedded_demo_region_task(radar: bool) -> RegionConfig:
    """The demo region, searched through a STAC API the search step serves itself."""
    return embedded_demo_region(radar=radar)


@flow(name="demo", log_prints=True)
def demo(params: DemoParams | None = None) -> ChainSummary:
    """The main job on the embedded default: region -> search -> cube -> labels -> model -> map."""
    p = params or DemoParams()
    generate_demo_region(demo_config_task(p.size, p.seed, p.radar, p.weather))
    region = embedded_demo_region_task(p.radar)
    trained = retrain(
        RetrainParams(region=region, cube=p.cube, training_set=p.training_set, train=p.train)
    )
    mapped = remap_region(RemapParams(region=region, cube=p.cube, predict=p.predict))
    return mapped.model_copy(
        update={
            "training_set_uri": trained.summary.training_set_uri,
            "model_alias": trained.summary.model_alias,
        }
    )
