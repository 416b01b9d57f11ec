"""Per-field results: class, mean probabilities and the majority-vote ("homogenised") class.

For every field polygon, over its pixels (centre inside) on the prediction grid:

* ``class_name``/``class_id``: the class of the highest mean probability;
* ``homogenised_name``/``homogenised_id``: the most frequent pixel class (majority vote,
  as Crop2Seg homogenises a segmentation within each parcel), ``majority_share`` its share;
* ``prob_<class>``: mean probability of each class (0..1); ``n_pixels``.

Counted window by window, so memory depends on the number of fields, not the region size.
Fields without a predicted pixel keep empty values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
from affine import Affine

from cropflow.classes import ClassMap
from cropflow.predict.fields import FIELD_ID, field_index_raster
from cropflow.predict.store import NODATA
from cropflow.products.cog import windows


def field_results(
    fields: gpd.GeoDataFrame,
    class_id: Any,
    probability: Any,
    class_map: ClassMap,
    transform: Affine,
) -> gpd.GeoDataFrame:
    """The per-field table (``fields`` as from :func:`cropflow.predict.fields.load_fields`)."""
    n = len(fields)
    k = len(class_map.classes)
    height, width = int(class_id.shape[0]), int(class_id.shape[1])
    lut = np.full(256, -1, np.int64)
    for i, cid in enumerate(class_map.ids):
        lut[cid] = i
    votes = np.zeros((n, k), np.int64)
    prob_sum = np.zeros((n, k), np.float64)
    for w in windows(height, width):
        idx = field_index_raster(fields, transform, w)
        if not (idx >= 0).any():
            continue
        cls = np.asarray(class_id[w.rows, w.cols], np.uint8)
        keep = (idx >= 0) & (cls != NODATA)
        f = idx[keep].astype(np.int64)
        ci = lut[cls[keep]]
        votes += np.bincount(f * k + ci, minlength=n * k).reshape(n, k)
        p = np.asarray(probability[:, w.rows, w.cols], np.float64)[:, keep]  # [K, m]
        for j in range(k):
            prob_sum[:, j] += np.bincount(f, weights=p[j], minlength=n)
    n_pixels = votes.sum(axis=1)
    has = n_pixels > 0
    mean = np.full((n, k), np.nan)
    mean[has] = prob_sum[has] / n_pixels[has, None] / 255.0
    best = np.where(has, np.nan_to_num(mean, nan=-1).argmax(axis=1), -1)
    major = np.where(has, votes.argmax(axis=1), -1)
    names = np.asarray(class_map.names, dtype=object)
    ids = np.asarray(class_map.ids)

    def pick(arr: np.ndarray, index: np.ndarray) -> list[Any]:
        return [arr[i] if i >= 0 else None for i in index]

    out = gpd.GeoDataFrame(
        {
            FIELD_ID: fields[FIELD_ID].to_numpy(),
            "n_pixels": n_pixels,
            "class_id": pick(ids, best),
            "class_name": pick(names, best),
            "homogenised_id": pick(ids, major),
            "homogenised_name": pick(names, major),
            "majority_share": np.where(has, votes.max(axis=1) / np.maximum(n_pixels, 1), np.nan),
            **{f"prob_{c.name}": mean[:, j] for j, c in enumerate(class_map.classes)},
        },
        geometry=fields.geometry.to_numpy(),
        crs=fields.crs,
    )
    for col in ("class_id", "homogenised_id"):
        out[col] = out[col].astype("Int64")
    return out


def write_field_results(table: gpd.GeoDataFrame, folder: Path, stem: str = "fields") -> list[Path]:
    """The per-field table as GeoParquet and GeoPackage in ``folder``."""
    parquet = folder / f"{stem}.parquet"
    gpkg = folder / f"{stem}.gpkg"
    table.to_parquet(parquet, index=False)
    table.to_file(gpkg, driver="GPKG", layer=stem)
    return [parquet, gpkg]
