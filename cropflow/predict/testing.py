"""Small cubes for tests and benchmarks of prediction, built by the real cube builder.

:func:`write_cube` writes the arrays as float32 COGs (one per band and date, NaN nodata) with a
STAC item per date and a collection profile naming the bands, then plans and writes the cube
with :mod:`cropflow.cube` (the items' own grid kept, no mask, one observation per step, so the
cube holds exactly the arrays): what a test predicts from is a cube as the flows make one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pystac
import rasterio
import torch
from affine import Affine

from cropflow.classes import ClassMap
from cropflow.predict.model import ModelBundle


def _items(
    folder: Path,
    bands: Mapping[str, npt.NDArray[np.floating]],
    times: Sequence[datetime],
    transform: Affine,
    crs: str,
) -> list[pystac.Item]:
    from rasterio.warp import transform_bounds

    first = next(iter(bands.values()))
    _, h, w = first.shape
    x0, y1 = transform.c, transform.f
    x1, y0 = x0 + transform.a * w, y1 + transform.e * h
    west, south, east, north = transform_bounds(crs, "EPSG:4326", x0, y0, x1, y1)
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    items = []
    for t, when in enumerate(times):
        item = pystac.Item(
            id=f"t{t:03d}",
            geometry={"type": "Polygon", "coordinates": [ring]},
            bbox=[west, south, east, north],
            datetime=when,
            properties={"proj:wkt2": rasterio.crs.CRS.from_user_input(crs).to_wkt()},
            collection="test-cube",
        )
        for name, array in bands.items():
            path = folder / f"t{t:03d}_{name}.tif"
            with rasterio.open(
                path, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
                crs=crs, transform=transform, nodata=float("nan"), tiled=True,
                blockxsize=256, blockysize=256,
            ) as dst:  # fmt: skip
                dst.write(np.asarray(array[t], np.float32), 1)
            extra = {
                "proj:transform": list(transform)[:6],
                "proj:shape": [h, w],
                "raster:bands": [{"nodata": "nan", "data_type": "float32"}],
            }
            item.add_asset(
                name, pystac.Asset(href=path.as_uri(), roles=["data"], extra_fields=extra)
            )
        items.append(item)
    return items


def write_cube(
    path: str | Path,
    bands: Mapping[str, npt.NDArray[np.floating]],
    times: Sequence[str] | npt.NDArray[np.datetime64],
    transform: Affine,
    crs: str,
    chunk: int = 256,
    period: str | None = "1MS",
) -> Path:
    """Build a complete cube at ``path`` from ``bands`` (name -> ``[T, H, W]``) dated
    ``times`` (one per step: period starts for ``period="1MS"``, acquisition times for
    ``period=None``), on the grid ``transform``/``crs``; the COGs and items go beside it."""
    from cropflow.cube import CubeParams, GridParams, plan_cube
    from cropflow.cube import write_cube as build
    from cropflow.stac.profiles import profile_from_mapping

    out = Path(path)
    sources = out.with_name(f"{out.name}.sources")
    sources.mkdir(parents=True, exist_ok=True)
    stamps = pd.DatetimeIndex(np.asarray(times, dtype="datetime64[ns]"))
    when = [t.to_pydatetime().replace(tzinfo=UTC) for t in stamps]
    items = _items(sources, bands, when, transform, crs)
    profile = profile_from_mapping(
        {
            "name": "test-cube",
            "collections": ["test-cube"],
            "defaults": {"kind": "reflectance", "dtype": "float32", "scale": 1.0, "offset": 0.0},
            "bands": {name: {"asset": name} for name in bands},
        },
        "the test cube's profile",
    )
    params = CubeParams(
        bands=list(bands),
        indices=[],
        mask=[],
        period=period,
        fill="none",
        chunk_size=chunk,
        grid=GridParams(like_items=True),
    )
    build(plan_cube(items, profile, params), out, executor="local")
    return out


def smooth_noise(
    shape: tuple[int, ...], rng: np.random.Generator, sigma: float = 3.0
) -> npt.NDArray[np.float32]:
    """Spatially smooth random values (mean 0, std about 1) over the last two axes."""
    from scipy.ndimage import gaussian_filter

    raw = rng.normal(size=shape)
    sig = (0.0,) * (len(shape) - 2) + (sigma, sigma)
    out = gaussian_filter(raw, sigma=sig)
    result: npt.NDArray[np.float32] = (out / max(float(out.std()), 1e-12)).astype(np.float32)
    return result


def tiny_bundle(
    config: Mapping[str, object],
    bands: Sequence[str],
    n_time: int,
    class_map: ClassMap,
    input_kind: str,
    patch_size: int | None = None,
    stats: Mapping[str, tuple[float, float]] | None = None,
    seed: int = 0,
    gain: float = 1.0,
) -> ModelBundle:
    """An untrained model of a real family (``models.base``) with a composite contract.

    The same arguments give the same weights (seeded), so separate processes build the
    same model. ``stats``: band -> (mean, std); default (0, 1). ``gain`` scales every
    weight, so that an untrained model's output varies more with its input.
    """
    from models.base import build_model
    from models.configs import parse_model_config
    from models.contract import BandStats, InputContract

    contract = InputContract(
        bands=list(bands),
        input_kind=input_kind,
        time_kind="composite",
        n_time=n_time,
        period="1MS",
        normalisation={
            b: BandStats(
                mean=(stats or {}).get(b, (0.0, 1.0))[0], std=(stats or {}).get(b, (0.0, 1.0))[1]
            )
            for b in bands
        },
        class_map=class_map,
        patch_size=patch_size,
    )
    torch.manual_seed(seed)
    model = build_model(parse_model_config(dict(config)), contract).eval()
    if gain != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(gain)
    return ModelBundle(model=model, contract=contract, uri=f"test:{config.get('name')}")
