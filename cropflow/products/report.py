"""The run report: markdown for a Prefect artifact (model, metrics, areas, product links)."""

from __future__ import annotations

from pathlib import Path

from cropflow.predict.run import PredictionResult
from cropflow.products.build import ProductsResult


def model_run_info(run_id: str | None) -> tuple[dict[str, float], str | None]:
    """Final metrics of the MLflow run that trained the model, and a link to it.

    The link is the tracking server's run page for an HTTP tracking URI, else ``runs:/<id>``.
    Returns no metrics (and no link) when there is no run or the store cannot be reached.
    """
    if not run_id:
        return {}, None
    try:
        from cropflow.train.registry import mlflow_target

        target = mlflow_target()
        run = target.client.get_run(run_id)
    except Exception:  # a missing or unreachable tracking store must not fail the report
        return {}, f"runs:/{run_id}"
    uri = target.tracking_uri
    if uri.startswith(("http://", "https://")):
        link = f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    else:
        link = f"runs:/{run_id}"
    return dict(run.data.metrics), link


def _md_link(path: str) -> str:
    return f"[{Path(path).name}]({Path(path).resolve().as_uri()})"


def render_report(
    prediction: PredictionResult,
    products: ProductsResult | None,
    metrics: dict[str, float] | None = None,
    run_link: str | None = None,
) -> str:
    """The markdown report of one prediction run."""
    m = prediction.model
    model_name = f"{m.name} v{m.version}" if m.name and m.version else m.uri
    lines = [
        f"# Prediction `{prediction.key}`",
        "",
        "| | |",
        "|---|---|",
        f"| model | {model_name} (`{m.uri}`) |",
        f"| MLflow run | {run_link or m.run_id or 'none'} |",
        f"| input kind | {prediction.input_kind} |",
        f"| cube | `{prediction.cube}` |",
        f"| grid | {prediction.shape[0]} x {prediction.shape[1]} px |",
        f"| tiles | {prediction.tiles_total} ({prediction.tiles_predicted} run now, "
        f"{prediction.tiles_skipped} resumed) |",
        f"| time | {prediction.seconds:.1f} s on {', '.join(prediction.devices)} "
        f"({prediction.executor}, batch {prediction.batch_size}) |",
    ]
    if prediction.cube_degraded:
        lines += [
            "",
            f"**DEGRADED input**: the cube was built without {len(prediction.cube_degraded)} "
            f"unreadable item(s) ({', '.join(prediction.cube_degraded[:5])}); the next run "
            "retries them.",
        ]
    if metrics:
        lines += ["", "## Model metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items())]
    if products is not None:
        lines += [
            "",
            "## Area per class",
            "",
            "| class | pixels | area (ha) | share |",
            "|---|---:|---:|---:|",
        ]
        for row in products.areas:
            lines.append(
                f"| {row['class_name']} | {row['pixels']} | {row['area_ha']:.2f} | "
                f"{100 * row['fraction']:.1f} % |"
            )
        lines += ["", "## Products", ""]
        lines += [f"- {name}: {_md_link(path)}" for name, path in products.paths.items()]
        lines.append(f"- STAC catalog: {_md_link(products.catalog)}")
    return "\n".join(lines) + "\n"


def report_markdown(prediction: PredictionResult, products: ProductsResult | None) -> str:
    """The report of a prediction, with its model's MLflow metrics and run link."""
    metrics, link = model_run_info(prediction.model.run_id)
    return render_report(prediction, products, metrics, link)
