"""The predict flow: tiles -> products -> report."""

from __future__ import annotations

from prefect import flow

from cropflow.predict import PredictionResult, PredictParams
from cropflow.products import ProductsResult
from tasks.predict import build_map_products, pin_model_task, predict_tiles, publish_report


@flow(name="predict", log_prints=True)
def predict_flow(params: PredictParams) -> tuple[PredictionResult, ProductsResult | None]:
    """Map a cube with a registered model and publish the map products.

    An alias is pinned to the version holding it now, so a promotion during the run (or
    between a run and its re-run) never mixes models nor serves an old map from the cache.
    """
    prediction = predict_tiles(pin_model_task(params))
    products = build_map_products(prediction) if params.products else None
    publish_report(prediction, products)
    return prediction, products
