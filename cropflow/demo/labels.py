"""Labels as a user brings them: an LPIS-like parcel file, crowd-labelled points, a mapping file.

- ``parcels.gpkg`` (EPSG:4326): ``field_id``, ``crop_code`` (raw national-style code),
  ``crop_name`` (German name), ``area_ha``; crops and the non-crop parcels (forest, water,
  built-up, grassland) with their own codes; two rare codes are not in the mapping file.
- ``points.csv``: ``lon, lat, labeller, label`` (1 crop, 0 non-crop), several labellers per
  point as in nasaharvest/crop-mask's labelled data: some labellers err (more often on
  grassland and near field edges, so they disagree), some rows were submitted twice.
- ``mapping.yaml``: raw codes -> classes in the format of :mod:`cropflow.labels.mapping`.
"""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio

from cropflow.demo.config import DemoConfig
from cropflow.demo.grid import WorldGrid
from cropflow.demo.landscape import Landscape, Parcel
from cropflow.demo.legend import CLASSES, UNLISTED
from cropflow.demo.noise import stream

#: The GeoPackage's "last change" stamp (GDAL writes the clock otherwise): fixed for
#: byte-identical files.
GPKG_DATE = "2024-11-15T00:00:00.000Z"
PARCEL_LAYER = "parcels"
POINT_COLUMNS = ("lon", "lat", "labeller", "label")


def parcels_frame(parcels: list[Parcel], crs: str) -> gpd.GeoDataFrame:
    """The parcels as an LPIS-like table in EPSG:4326."""
    frame = gpd.GeoDataFrame(
        {
            "field_id": np.array([p.field_id for p in parcels], dtype=np.int64),
            "crop_code": np.array([p.code for p in parcels], dtype=np.int32),
            "crop_name": [p.name for p in parcels],
            "area_ha": np.round([p.geometry.area / 10_000.0 for p in parcels], 4),
        },
        geometry=[p.geometry for p in parcels],
        crs=crs,
    )
    return frame.to_crs("EPSG:4326")


def write_parcels(path: Path, frame: gpd.GeoDataFrame) -> None:
    """Write the parcel GeoPackage with a fixed change stamp (byte-identical reruns)."""
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": GPKG_DATE})
    try:
        pyogrio.write_dataframe(frame, path, layer=PARCEL_LAYER, driver="GPKG")
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})


def label_points(config: DemoConfig, landscape: Landscape, grid: WorldGrid) -> pd.DataFrame:
    """Crop / non-crop labels of random points inside parcels, by several labellers each."""
    rng = stream(config.seed, "points")
    fields = landscape.field_raster
    kind = {p.field_id: p.kind for p in landscape.parcels}
    hard_cover = {p.field_id for p in landscape.parcels if p.cover in ("grassland", "clover_grass")}
    xmin, ymin, xmax, ymax = grid.bounds
    accuracy = rng.uniform(0.86, 0.97, config.n_labellers)
    names = [f"labeller_{i + 1:02d}" for i in range(config.n_labellers)]
    rows: list[tuple[float, float, str, int]] = []
    points: list[list[int]] = []  # row indices of each point
    while len(points) < config.n_points:
        x, y = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
        r, c = int((ymax - y) // 10.0), int((x - xmin) // 10.0)
        fid = int(fields[r, c])
        if fid == 0:
            continue
        truth = 1 if kind[fid] == "crop" else 0
        around = fields[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
        p_ok = 0.85 if fid in hard_cover else 1.0
        p_ok *= 0.9 if np.any(around != fid) else 1.0
        n_lab = int(rng.integers(2, config.labellers_per_point + 1))
        who = rng.choice(config.n_labellers, n_lab, replace=False)
        idx = []
        for w in who:
            label = truth if rng.random() < accuracy[w] * p_ok else 1 - truth
            idx.append(len(rows))
            rows.append((x, y, names[int(w)], label))
        points.append(idx)
    # at least two points on which labellers disagree
    disagree = [p for p in points if len({rows[i][3] for i in p}) > 1]
    for p in points:
        if len(disagree) >= 2:
            break
        if p not in disagree:
            x, y, who_, label = rows[p[0]]
            rows[p[0]] = (x, y, who_, 1 - label)
            disagree.append(p)
    # some rows submitted twice (at least two)
    dup = [i for i in range(len(rows)) if rng.random() < 0.04]
    dup = dup if len(dup) >= 2 else [0, 1]
    rows = rows + [rows[i] for i in dup]
    order = rng.permutation(len(rows))
    to_wgs84 = gpd.GeoSeries(
        gpd.points_from_xy([rows[i][0] for i in order], [rows[i][1] for i in order]), crs=grid.crs
    )
    lonlat = to_wgs84.to_crs("EPSG:4326")
    return pd.DataFrame(
        {
            "lon": np.round(lonlat.x.to_numpy(), 7),
            "lat": np.round(lonlat.y.to_numpy(), 7),
            "labeller": [rows[i][2] for i in order],
            "label": np.array([rows[i][3] for i in order], dtype=np.int64),
        },
        columns=list(POINT_COLUMNS),
    )


def write_points(path: Path, points: pd.DataFrame) -> None:
    """Write the point labels as CSV (7 decimals: 1 cm)."""
    points.to_csv(path, index=False, float_format="%.7f", lineterminator="\n")


def mapping_yaml() -> str:
    """The shipped label mapping (the two rare raw codes of :data:`UNLISTED` are left out)."""
    lines = [
        "# Label mapping of the cropflow demo region: raw parcel codes -> classes.",
        f"# Raw codes {', '.join(str(u.code) for u in UNLISTED)} "
        f"({', '.join(u.name for u in UNLISTED)}) are deliberately not listed.",
        "source_column: crop_code        # column of the raw code in the parcel file",
        "unknown: drop                   # policy for raw codes not listed: error | drop | other",
        "classes:                        # order = model output order; ids are raster values",
    ]
    for cls in CLASSES:
        codes = ", ".join(str(rc.code) for rc in cls.codes)
        names = ", ".join(f"{rc.code} {rc.name}" for rc in cls.codes)
        lines.append(
            f'  - {{name: {cls.name}, id: {cls.id}, color: "{cls.color}", codes: [{codes}]}}'
            f"  # {names}"
        )
    return "\n".join(lines) + "\n"
