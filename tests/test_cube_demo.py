"""Masked monthly composites of the demo region against its cloud-free truth.

Tolerance, from the demo's documented noise model (``cropflow.demo.world``): a COG value on a
pixel that SCL marks clear is the truth plus N(0, noise_sd) plus rounding (<= 5e-5). A median
moves by at most the largest perturbation of its inputs, so |composite - median(truth)| is
within 4 noise_sd + 1e-4 for 99.9 % of values, within 6 noise_sd + 1e-4 for all, and its mean
is below noise_sd. The valid-observation count must match the SCL exactly.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pystac
import pytest
from distributed import Client

from cropflow.cube import CubeParams, GridParams, open_cube, plan_cube, write_cube
from cropflow.demo import DemoConfig, DemoManifest, DemoWorld, generate_demo
from cropflow.stac.profiles import get_profile
from cropflow.stac.search import dedupe_items

BANDS = ["red", "nir", "swir16"]  # 10 m and 20 m bands


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    return generate_demo(tmp_path_factory.mktemp("demo") / "region", DemoConfig.tiny())


@pytest.mark.slow
def test_monthly_composites_match_the_cloud_free_truth(
    region: DemoManifest, client: Client, tmp_path: Path
) -> None:
    items, dropped = dedupe_items(list(pystac.ItemCollection.from_file(str(region.path("items")))))
    assert dropped, "the demo has reprocessed duplicates; the search drops them"
    a, _, c, _, e, f = region.grid.transform[:6]
    h, w = region.grid.shape
    bounds = (c, f + e * h, c + a * w, f)
    params = CubeParams(
        bands=BANDS,
        indices=["ndvi"],
        period="1MS",
        chunk_size=32,
        grid=GridParams(crs=region.grid.crs, resolution=10, bounds=bounds),
    )
    plan = plan_cube(items, get_profile("local-demo"), params)
    ds = open_cube(write_cube(plan, tmp_path / "demo.zarr", client=client).uri)
    assert ds.odc.geobox.shape == (h, w)

    world = DemoWorld(region.config)
    assert plan.mask is not None
    codes = [c for g in plan.mask.groups for c in plan.mask.spec.groups[g] if isinstance(c, int)]
    sd = region.config.noise_sd
    errors, n_checked = [], 0
    for t, start in enumerate(ds.time.values.astype("datetime64[D]").astype(object)):
        end = (np.datetime64(start, "M") + 1).astype("datetime64[D]").astype(object)
        days = [d for d in world.dates if start <= d < end]
        if not days:
            assert (ds.valid_count.values[t] == 0).all()
            continue
        valid = []
        truth: dict[str, list[np.ndarray]] = {b: [] for b in BANDS}
        for d in days:
            scl = np.repeat(np.repeat(world.observe(d).scl, 2, axis=0), 2, axis=1)
            valid.append(~np.isin(scl, codes) & (scl != 0))
            for b, arr in world.surface_reflectance(d, BANDS).items():
                truth[b].append(arr)
        ok = np.stack(valid)
        np.testing.assert_array_equal(ds.valid_count.values[t], ok.sum(axis=0))
        seen = ok.any(axis=0)
        for b in BANDS:
            stack = np.where(ok, np.stack(truth[b]), np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                expected = np.nanmedian(stack, axis=0)
            got = ds[b].values[t]
            errors.append(np.abs(got[seen] - expected[seen]))
            n_checked += int(seen.sum())
            assert not ds.interpolated.values[t][seen].any()
            assert ds.interpolated.values[t][~seen].all()
    err = np.concatenate(errors)
    assert n_checked > 0.5 * len(ds.time) * h * w * len(BANDS)
    assert np.quantile(err, 0.999) <= 4 * sd + 1e-4
    assert err.max() <= 6 * sd + 1e-4
    assert err.mean() < sd
