"""Prefect tasks of the predict flow; each wraps one library call."""

from __future__ import annotations

import re

from prefect import task
from prefect.artifacts import create_markdown_artifact

from cropflow.orchestration.caching import stage_task_options
from cropflow.orchestration.retries import crash_retry_options
from cropflow.predict import PredictionResult, PredictParams, predict
from cropflow.predict.progress import report_progress
from cropflow.products import ProductsResult, build_products
from cropflow.products.area_params import ReferenceSample
from cropflow.products.report import report_markdown
from tasks.progress import progress_artifact


def _artifact_key(prefix: str, name: str) -> str:
    """Prefect artifact keys: lowercase letters, digits and dashes."""
    return f"{prefix}-{re.sub(r'[^a-z0-9-]+', '-', name.lower()).strip('-')}"[:100]


@task(name="pin-model")
def pin_model_task(params: PredictParams) -> PredictParams:
    """The parameters with the model alias pinned to the version holding it now."""
    return params.pinned()


@task(name="predict-tiles", **crash_retry_options(), **stage_task_options())
def predict_tiles(params: PredictParams) -> PredictionResult:
    """Run the missing tiles of a prediction (a retry resumes where the crash left off)."""
    update = progress_artifact(f"tiles of prediction {params.prediction_key()}")

    def on_progress(done: int, total: int) -> None:
        report_progress(done, total)
        update(done, total)

    return predict(params, on_progress=on_progress)


@task(name="build-products", **crash_retry_options(), **stage_task_options())
def build_map_products(
    prediction: PredictionResult, reference: ReferenceSample | None = None
) -> ProductsResult:
    """Build and atomically publish the map products of a prediction (with the class area
    estimate when a labelled reference sample is given)."""
    return build_products(prediction, reference=reference)


@task(name="predict-report")
def publish_report(prediction: PredictionResult, products: ProductsResult | None) -> str:
    """The run report as a Prefect markdown artifact; returns the markdown."""
    markdown = report_markdown(prediction, products)
    create_markdown_artifact(
        markdown=markdown,
        key=_artifact_key("predict-report", prediction.region),
        description=f"prediction {prediction.key}",
    )
    return markdown
