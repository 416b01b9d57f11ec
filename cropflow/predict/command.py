"""The ``cropflow predict`` command's body: the predict flow with a rich progress bar."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cropflow.predict.params import PredictParams
from cropflow.predict.progress import rich_progress
from cropflow.predict.run import PredictionResult
from cropflow.products.build import ProductsResult


def run_predict(
    params: PredictParams, console: Console | None = None
) -> tuple[PredictionResult, ProductsResult | None]:
    """Run the predict flow in this process, drawing tile progress, then print a summary."""
    from flows.predict import predict_flow

    out = console or Console()
    with rich_progress():
        prediction, products = predict_flow(params)
    out.print(
        f"prediction [bold]{prediction.key}[/]: {prediction.tiles_predicted} tiles run, "
        f"{prediction.tiles_skipped} resumed, {prediction.seconds:.1f} s -> {prediction.store}"
    )
    if products is not None:
        table = Table("class", "area (ha)", "share", title="area per class")
        for row in products.areas:
            table.add_row(
                str(row["class_name"]), f"{row['area_ha']:.2f}", f"{100 * row['fraction']:.1f} %"
            )
        out.print(table)
        out.print(f"products: {products.directory} (STAC: {products.catalog})")
    return prediction, products
