"""The predict flow: tiles -> products -> report."""

from __future__ import annotations

from prefect import flow

from cropflow.predict import PredictionResult, PredictParams
from cropflow.products import ProductsResult
from tasks.predict import build_map_products, predict_tiles, publish_report


@flow(name="predict", log_prints=True)
def predict_flow(params: PredictParams) -> tuple[PredictionResult, ProductsResult | None]:
    """Map a cube with a registered model and publish the map products."""
    prediction = predict_tiles(params)
    products = build_map_products(prediction) if params.products else None
    publish_report(prediction, products)
    return prediction, products
