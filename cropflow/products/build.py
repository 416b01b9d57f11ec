"""Build every product of a prediction in a staging folder and publish it atomically.

``products/<region>/`` after a successful run::

    class_map.tif (+ .aux.xml)   probability.tif   confidence.tif   quicklook.png
    [truecolor.tif]   (the season's median red/green/blue, when the cube has them)
    class_area.csv   class_area.parquet   [fields.parquet   fields.gpkg]
    [class_area_estimate.csv .parquet .md .png .json]   (with a labelled reference sample)
    catalog.json   <item id>/<item id>.json        (STAC, self-contained, relative hrefs)

Nothing in ``products/<region>/`` changes until all of it is written; a failure leaves the
previous products as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zarr
from affine import Affine
from pydantic import BaseModel, Field

from cropflow.errors import DataError, PublishError
from cropflow.predict.fields import load_fields
from cropflow.predict.run import ModelInfo, PredictionResult
from cropflow.predict.store import read_meta
from cropflow.products.area_params import ReferenceSample
from cropflow.products.areas import class_areas, write_area_table
from cropflow.products.cog import (
    write_class_cog,
    write_confidence_cog,
    write_probability_cog,
    write_truecolor_cog,
)
from cropflow.products.estimate import AreaEstimate, estimate_areas, write_area_estimate
from cropflow.products.fields import field_results, write_field_results
from cropflow.products.publish import staged
from cropflow.products.quicklook import write_quicklook
from cropflow.products.stac import (
    COG,
    CSV,
    GPKG,
    PARQUET,
    PNG,
    ProductAsset,
    ProductItem,
    write_catalog,
)
from cropflow.settings import get_settings
from cropflow.storage import storage_errors


class ProductsResult(BaseModel):
    """Published products, by reference."""

    region: str
    directory: str = Field(description="The published product folder.")
    catalog: str = Field(description="Path of the STAC catalog.json.")
    paths: dict[str, str] = Field(description="Product name -> published path.")
    areas: list[dict[str, Any]] = Field(description="The area table, one row per class.")
    n_fields: int | None = Field(None, description="Fields in the per-field results.")

    def files(self) -> dict[str, str]:
        """Product name -> published path (a copy), the STAC catalog included."""
        return {**self.paths, "catalog": self.catalog}


def products_dir(region: str) -> Path:
    """Where the products of ``region`` are published."""
    return get_settings().workdir / "products" / region


def verified_meta(prediction: PredictionResult) -> dict[str, Any]:
    """The store's own record of what it holds, checked against what the run asked for.

    PublishError when the store is missing, incomplete, or holds another prediction (another
    model, cube or parameters): products must never show one model's pixels under another's
    name."""
    store = Path(prediction.store)
    meta = read_meta(store)
    if meta is None or not meta.get("complete"):
        raise DataError(
            f"prediction {store} is missing or incomplete",
            hint="run the prediction to the end (resume=True finishes an interrupted one)",
        )
    if prediction.fingerprint and meta.get("fingerprint") != prediction.fingerprint:
        found = meta.get("model")
        model: dict[str, Any] = found if isinstance(found, dict) else {}
        raise PublishError(
            f"prediction store {store} holds prediction {meta.get('fingerprint')} (model "
            f"{model.get('name')} v{model.get('version')}), not {prediction.fingerprint} "
            f"(model {prediction.model.name} v{prediction.model.version}) that the run asked "
            "for: nothing was published",
            hint="predict again (refresh=true, or delete the store); the published products "
            "were kept",
        )
    return meta


def build_products(
    prediction: PredictionResult,
    dest: Path | None = None,
    reference: ReferenceSample | None = None,
) -> ProductsResult:
    """Write COGs, quicklook, area table, per-field results and STAC; publish atomically.

    Model, cube and provenance in tags and STAC come from the store's own record, checked
    against the run's (:func:`verified_meta`) before the products are written and again right
    before they are published. With a labelled ``reference`` sample, the class areas are also
    estimated from it (``class_area_estimate.*``, Olofsson et al. 2014); a sample that cannot
    be used fails the run and leaves the published products as they were."""
    store = Path(prediction.store)
    meta = verified_meta(prediction)
    model = ModelInfo.model_validate(meta["model"])
    degraded = [str(i) for i in meta.get("cube_degraded") or []]
    group = zarr.open_group(str(store), mode="r")
    class_id, probability, confidence = (
        group["class_id"],
        group["probability"],
        group["confidence"],
    )
    cm = prediction.class_map
    crs, transform = prediction.crs_wkt, Affine(*prediction.transform)
    target = Path(dest) if dest is not None else products_dir(prediction.region)
    tags = {
        "CROPFLOW_MODEL": model.uri,
        "CROPFLOW_MODEL_VERSION": f"{model.name}:{model.version}",
        "CROPFLOW_MODEL_IDENTITY": model.identity,
        "CROPFLOW_PREDICTION": f"{prediction.key}:{meta['fingerprint']}",
        "CROPFLOW_INPUT_BANDS": ",".join(model.bands),
        "CROPFLOW_CUBE": str(meta.get("cube_identity") or meta.get("cube")),
    }
    in_season = meta.get("in_season")
    if isinstance(in_season, dict):
        tags["CROPFLOW_AS_OF"] = (
            f"{in_season.get('as_of')} ({in_season.get('observed_steps')} of "
            f"{in_season.get('n_time')} steps observed, strategy {in_season.get('strategy')})"
        )
    if degraded:
        tags["CROPFLOW_DEGRADED_CUBE"] = f"built without items: {', '.join(degraded)}"

    def still_the_same() -> None:  # the store may have changed while products were written
        verified_meta(prediction)

    with (
        storage_errors(target.parent, f"publishing the products of {prediction.region}"),
        staged(target, check=still_the_same) as stage,
    ):
        files: dict[str, Path] = {}
        files["class_map"] = write_class_cog(
            class_id, cm, crs, transform, stage / "class_map.tif", tags
        )
        files["probability"] = write_probability_cog(
            probability, class_id, cm, crs, transform, stage / "probability.tif"
        )
        files["confidence"] = write_confidence_cog(
            confidence, crs, transform, stage / "confidence.tif"
        )
        truecolor = write_truecolor_cog(
            prediction.cube, crs, transform, prediction.shape, stage / "truecolor.tif"
        )
        if truecolor is not None:
            files["truecolor"] = truecolor
        areas = class_areas(class_id, cm, crs, transform)
        files["class_area_csv"], files["class_area_parquet"] = write_area_table(areas, stage)
        files["quicklook"] = write_quicklook(
            files["class_map"], cm, areas, stage / "quicklook.png", title=prediction.region
        )
        estimate = None
        if reference is not None:
            estimate = estimate_areas(files["class_map"], reference.sample, reference)
            written = write_area_estimate(
                estimate, stage, title=f"{prediction.region}: class areas from the reference sample"
            )
            files.update({f"class_area_estimate_{kind}": path for kind, path in written.items()})
        n_fields = None
        if prediction.fields:
            fields = load_fields(prediction.fields, prediction.field_id_column, crs)
            table = field_results(fields, class_id, probability, cm, transform)
            files["fields_parquet"], files["fields_gpkg"] = write_field_results(table, stage)
            n_fields = len(table)

        items = _items(prediction, files)
        if estimate is not None:
            items.append(_estimate_item(prediction.region, files, estimate))
        catalog = write_catalog(
            stage,
            prediction.region,
            items,
            cm,
            areas,
            crs,
            transform,
            prediction.shape,
            prediction.start,
            prediction.end,
            properties={
                "cropflow:model": model.model_dump(),
                "cropflow:prediction": prediction.key,
                "cropflow:prediction_fingerprint": meta["fingerprint"],
                "cropflow:cube": meta.get("cube_identity"),
                "cropflow:degraded_inputs": degraded,
                "cropflow:in_season": meta.get("in_season"),
            },
            description=f"Map products of prediction {prediction.key} "
            f"({prediction.input_kind} model {model.uri})"
            + (f"; DEGRADED cube, built without {len(degraded)} item(s)." if degraded else "."),
        )

    def published(p: Path) -> str:
        return str(target / p.relative_to(stage))

    return ProductsResult(
        region=prediction.region,
        directory=str(target),
        catalog=published(catalog),
        paths={k: published(v) for k, v in files.items()},
        areas=areas.to_dict(orient="records"),
        n_fields=n_fields,
    )


def _items(prediction: PredictionResult, files: dict[str, Path]) -> list[ProductItem]:
    """One STAC item per product."""
    region = prediction.region
    names = prediction.class_map.names
    items = [
        ProductItem(
            id=f"{region}-class-map",
            title="Class map",
            assets=[
                ProductAsset("data", files["class_map"], COG, ["data"], "Class ids", classes=True),
                ProductAsset(
                    "category-names",
                    files["class_map"].with_name("class_map.tif.aux.xml"),
                    "application/xml",
                    ["metadata"],
                    "GDAL category names",
                ),
                ProductAsset(
                    "thumbnail",
                    files["quicklook"],
                    PNG,
                    ["thumbnail", "overview"],
                    "Quicklook with legend",
                ),
            ],
        ),
        ProductItem(
            id=f"{region}-probability",
            title="Class probabilities",
            assets=[
                ProductAsset(
                    "data",
                    files["probability"],
                    COG,
                    ["data"],
                    "Probability per class (value / 255)",
                    extra={
                        "bands": [{"name": n, "description": f"probability of {n}"} for n in names]
                    },
                )
            ],
        ),
        ProductItem(
            id=f"{region}-confidence",
            title="Confidence",
            assets=[
                ProductAsset(
                    "data",
                    files["confidence"],
                    COG,
                    ["data"],
                    "Largest class probability (value / 255)",
                )
            ],
        ),
        ProductItem(
            id=f"{region}-class-area",
            title="Area per class (ha)",
            raster=False,
            assets=[
                ProductAsset("csv", files["class_area_csv"], CSV, ["data"], classes=True),
                ProductAsset(
                    "parquet", files["class_area_parquet"], PARQUET, ["data"], classes=True
                ),
            ],
        ),
    ]
    if "truecolor" in files:
        items.append(
            ProductItem(
                id=f"{region}-truecolor",
                title="True colour (season median)",
                assets=[
                    ProductAsset(
                        "data",
                        files["truecolor"],
                        COG,
                        ["data", "visual"],
                        "Median red, green, blue of the season (reflectance 0-0.3), alpha",
                    )
                ],
            )
        )
    if "fields_parquet" in files:
        items.append(
            ProductItem(
                id=f"{region}-fields",
                title="Per-field results",
                raster=False,
                assets=[
                    ProductAsset(
                        "geoparquet", files["fields_parquet"], PARQUET, ["data"], classes=True
                    ),
                    ProductAsset("geopackage", files["fields_gpkg"], GPKG, ["data"], classes=True),
                ],
            )
        )
    return items


def _estimate_item(region: str, files: dict[str, Path], estimate: AreaEstimate) -> ProductItem:
    """The STAC item of the area estimate: its files, and per class the estimated area with
    its interval and the accuracies (``cropflow:area_estimate``)."""
    figures = [
        {
            "class": c.class_name,
            "value": c.class_id,
            "mapped_area_ha": c.mapped_area_ha,
            "area_ha": c.area_ha,
            "area_se_ha": c.area_se_ha,
            "area_ci_low_ha": c.area_ci_low_ha,
            "area_ci_high_ha": c.area_ci_high_ha,
            "users_accuracy": c.users_accuracy,
            "producers_accuracy": c.producers_accuracy,
        }
        for c in estimate.classes
    ]
    return ProductItem(
        id=f"{region}-class-area-estimate",
        title="Class areas estimated from the reference sample (ha, with confidence intervals)",
        raster=False,
        properties={
            "cropflow:area_estimate": {
                "method": "stratified estimator, Olofsson et al. 2014",
                "z": estimate.z,
                "n_points": estimate.n_points,
                "overall_accuracy": estimate.overall_accuracy,
                "overall_accuracy_se": estimate.overall_accuracy_se,
                "classes": figures,
            }
        },
        assets=[
            ProductAsset("csv", files["class_area_estimate_csv"], CSV, ["data"], classes=True),
            ProductAsset(
                "parquet", files["class_area_estimate_parquet"], PARQUET, ["data"], classes=True
            ),
            ProductAsset(
                "report", files["class_area_estimate_report"], "text/markdown", ["metadata"]
            ),
            ProductAsset("chart", files["class_area_estimate_chart"], PNG, ["overview"]),
            ProductAsset(
                "json", files["class_area_estimate_json"], "application/json", ["metadata"]
            ),
        ],
    )
