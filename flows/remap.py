"""The remap flow: search -> cube -> predict with the region's model -> publish the map.

Deployed once per region on the region's cron schedule (``cropflow deploy``). Two remaps of
one region never run at once (a concurrency limit keyed by region); finished stages are reused
by a re-run (stage caching), and products are published atomically.
"""

from __future__ import annotations

from prefect import flow
from pydantic import Field

from cropflow.chain import AsOf, ChainSummary, RegionRunParams, in_season_predict_options
from cropflow.orchestration.caching import refreshed
from cropflow.orchestration.locks import region_lock
from cropflow.predict import PredictOptions, PredictParams
from flows.cube import with_sources
from tasks.chain import (
    in_season_cut,
    publish_region,
    region_cube_params,
    region_search_params,
    resolve_region,
)
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
    as_of: AsOf = Field(
        None,
        title="As of (in-season map)",
        description="Map the season as it could be mapped on this day: only composite "
        "periods complete by then are read, and the region's in_season strategy maps the "
        "partial season; products go to products/<region>-as-of-<day>/. 'today': the run's "
        "day (the in-season schedule's runs). Unset, or a day after the season: the whole "
        "season, products/<region>/.",
    )


@flow(name="remap-region", log_prints=True)
def remap_region(params: RemapParams | None = None) -> ChainSummary:
    """Map the region's season with its registered model and publish the products."""
    p = params or RemapParams()
    region = resolve_region(p.region)
    publish_region(region)
    cut = in_season_cut(region, p.cube, p.as_of)
    if cut.too_early:
        print(cut.too_early_message(region.name))
        return ChainSummary(region=region.name)
    with region_lock(region.name):
        search = refreshed(search_items, p.refresh)(region_search_params(region))
        publish_search_summary(search)
        cube_params = region_cube_params(region, p.cube, cut.as_of)
        plan = plan_cube_task(search.uri, search.provider, cube_params)
        main = refreshed(write_cube_task, p.refresh)(plan, None, p.refresh)
        cube = with_sources(region, cube_params, main, p.refresh)
        publish_cube_summary(cube)
        predict_params = PredictParams.of(
            in_season_predict_options(region, p.predict),
            cube.uri,
            cut.folder(region.name),
            region.model_alias,
            region.model_name(),
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
