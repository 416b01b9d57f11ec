"""Small cubes in the datacube format, for tests and benchmarks of prediction.

:func:`write_cube` writes what the cube flow writes (Zarr v3, one float32 ``(time, y, x)``
variable per band name, pixel-centre coordinates, a ``spatial_ref`` coordinate), from arrays
held in memory. It is not a cube builder: real cubes come from :mod:`cropflow.cube`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import xarray as xr
from affine import Affine

from cropflow.classes import ClassMap
from cropflow.predict.model import ModelBundle


def write_cube(
    path: str | Path,
    bands: Mapping[str, npt.NDArray[np.floating]],
    times: Sequence[str] | npt.NDArray[np.datetime64],
    transform: Affine,
    crs: str,
    chunk: int = 256,
    attrs: Mapping[str, object] | None = None,
) -> Path:
    """Write ``bands`` (name -> ``[T, H, W]``) as a complete cube Zarr at ``path``.

    The group attributes mark it complete (``cropflow:complete``) with a monthly period
    (``cropflow:time``) and a key; ``attrs`` adds to or overrides them.
    """
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    first = next(iter(bands.values()))
    _, h, w = first.shape
    geobox = GeoBox((h, w), transform, crs)
    coords: dict[str, object] = {
        str(k): v for k, v in xr_coords(geobox, crs_coord_name="spatial_ref").items()
    }
    coords["time"] = np.asarray(times, dtype="datetime64[ns]")
    ds = xr.Dataset(
        {name: (("time", "y", "x"), np.asarray(a, np.float32)) for name, a in bands.items()},
        coords=coords,
        attrs={
            "cropflow:format": "cropflow-cube/1",
            "cropflow:complete": True,
            "cropflow:key": Path(path).stem,
            "cropflow:time": {"period": "1MS"},
            **dict(attrs or {}),
        },
    )
    t = ds.sizes["time"]
    encoding = {name: {"chunks": (t, min(chunk, h), min(chunk, w))} for name in bands}
    out = Path(path)
    ds.to_zarr(out, mode="w", zarr_format=3, consolidated=False, encoding=encoding)
    return out


def smooth_noise(
    shape: tuple[int, ...], rng: np.random.Generator, sigma: float = 3.0
) -> npt.NDArray[np.float32]:
    """Spatially smooth random values (mean 0, std about 1) over the last two axes."""
    from scipy.ndimage import gaussian_filter

    raw = rng.normal(size=shape)
    sig = (0.0,) * (len(shape) - 2) + (sigma, sigma)
    out = gaussian_filter(raw, sigma=sig)
    return (out / max(float(out.std()), 1e-12)).astype(np.float32)


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
    from models.base import build_model, parse_model_config
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
