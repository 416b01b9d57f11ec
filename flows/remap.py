"""The remap flow: search -> cube -> predict with the region's model -> publish the map.

Deployed once per region on the region's cron schedule (``cropflow deploy``). Two remaps of
one region never run at once (a concurrency limit keyed by region); finished stages are reused
by a re-run (stage caching), and products are published atomically.
"""

from __future__ import annotations

from prefect import flow
from pydantic import Field

from cropflow.chain import ChainSummary, RegionRunParams
from cropflow.orchestration.caching import refreshed
from cropflow.orchestration.locks import region_lock
from cropflow.predict import PredictOptions, PredictParams
from tasks.chain import publish_region, region_cube_params, region_search_params, resolve_region
from tasks.cube import plan_cube_task, publish_cube_summary, write_cube_task
from tasks.predict import build_map_products, pin_model_task, predict_tiles, publish_report
from tasks.search import publish_search_summary, search_items


class RemapParams(RegionRunParams):
    """What the remap of a region is built from."""

    predict: PredictOptions = Field(
        default_factory=PredictOptions,
        title="Prediction",
        description="Prediction options (the region's model alias overrides `model`).",
    )


@flow(name="remap-region", log_prints=True)
def remap_region(params: RemapParams | None = None) -> ChainSummary:
    """Map the region's season with its registered model and publish the products."""
    p = params or RemapParams()
    region = resolve_region(p.region)
    publish_region(region)
    with region_lock(region.name):
        search = refreshed(search_items, p.refresh)(region_search_params(region))
        publish_search_summary(search)
        plan = plan_cube_task(search.uri, search.provider, region_cube_params(region, p.cube))
        cube = refreshed(write_cube_task, p.refresh)(plan, None, p.refresh)
        publish_cube_summary(cube)
        predict_params = PredictParams.of(
            p.predict, cube.uri, region.name, region.model_alias, region.model_name()
        )
        prediction = refreshed(predict_tiles, p.refresh)(pin_model_task(predict_params))
        products = refreshed(build_map_products, p.refresh)(prediction, region.reference())
        publish_report(prediction, products)
    return ChainSummary(
        region=region.name,
        search_uri=search.uri,
        cube_uri=cube.uri,
        mlflow_run_id=prediction.model.run_id,
        model_version=prediction.model.version,
        model_alias=prediction.model.alias,
        products_dir=products.directory,
        products=products.files(),
    )
