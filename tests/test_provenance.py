"""A published map's pixels are those of the model its metadata names.

The reproduction of the issue: a remap with champion v2, an ad-hoc prediction of the same cube
with v1 (same prediction name), then a remap again that takes its prediction from the stage
cache: the products must still hold v2's pixels, and their tags and STAC items say v2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import zarr
from mlflow import MlflowClient

from cropflow.chain import demo_config, embedded_demo_region
from cropflow.demo import generate_demo
from cropflow.errors import PublishError
from cropflow.predict import PredictParams, predict
from cropflow.predict.store import META_ATTR
from cropflow.products.build import build_products
from cropflow.settings import get_settings
from cropflow.train import TrainOptions


def _class_map(products: dict[str, str]) -> tuple[np.ndarray, dict[str, str]]:
    with rasterio.open(products["class_map"]) as cog:
        return cog.read(1), cog.tags()


def _stac_model(products: dict[str, str]) -> dict[str, object]:
    catalog = Path(products["catalog"])
    data = json.loads(catalog.read_text())
    item_link = next(link for link in data["links"] if link["rel"] == "item")
    item = json.loads((catalog.parent / item_link["href"]).read_text())
    model: dict[str, object] = item["properties"]["cropflow:model"]
    return model


@pytest.mark.slow
@pytest.mark.faults
def test_a_map_never_holds_another_models_pixels_than_it_names(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.remap import RemapParams, remap_region
    from flows.retrain import RetrainParams, retrain

    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path / "work"))
    generate_demo(get_settings().demo_dir, demo_config("tiny", None))
    region = embedded_demo_region()
    name = region.model_name()

    def train(seed: int) -> None:
        retrain(
            RetrainParams.model_validate(
                {
                    "region": region,
                    "training_set": {"splits": {"block_size_px": 16}},
                    "train": TrainOptions(epochs=1, seed=seed).model_dump(),
                }
            )
        )

    train(0)
    train(1)
    client = MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)
    client.set_registered_model_alias(name, "champion", "2")

    first = remap_region(RemapParams(region=region))
    assert first.model_version == "2"
    v2_pixels, tags = _class_map(first.products)
    assert tags["CROPFLOW_MODEL_VERSION"] == f"{name}:2"

    # an ad-hoc prediction of the same cube, same prediction name, with v1
    assert first.cube_uri is not None
    key = Path(first.cube_uri).name.removesuffix(".zarr")
    adhoc = predict(PredictParams(cube=first.cube_uri, model=f"models:/{name}/1", key=key))
    v1 = np.asarray(zarr.open_array(f"{adhoc.store}/class_id", mode="r")[:])
    assert (v1 != v2_pixels).any(), "the two models map differently (else the test is void)"

    # the remap again: its prediction comes from the stage cache; its products are v2's
    second = remap_region(RemapParams(region=region))
    pixels, tags = _class_map(second.products)
    assert second.model_version == "2"
    assert np.array_equal(pixels, v2_pixels), "the map holds the pixels of v2, which it names"
    assert tags["CROPFLOW_MODEL_VERSION"] == f"{name}:2"
    assert _stac_model(second.products)["version"] == "2"


@pytest.mark.faults
def test_products_are_built_only_from_the_store_the_run_asked_for(tmp_path: Path) -> None:
    """A store whose record is not the run's is refused before writing and again right before
    publishing; the previous products stay as they were."""
    from affine import Affine

    from cropflow.classes import ClassDef, ClassMap
    from cropflow.predict.testing import smooth_noise, tiny_bundle, write_cube

    classes = ClassMap(classes=[ClassDef(id=1, name="a"), ClassDef(id=2, name="b")])
    rng = np.random.default_rng(0)
    cube = write_cube(
        tmp_path / "c.zarr",
        {b: smooth_noise((2, 24, 24), rng) for b in ("nir", "red")},
        ["2021-05-01", "2021-06-01"],
        Affine(10, 0, 300000, 0, -10, 4600000),
        "EPSG:32631",
    )
    model = {"name": "tempcnn", "conv_widths": [4], "kernel_size": 3, "hidden_size": 8}
    dest = tmp_path / "products"
    params = PredictParams(cube=str(cube), key="p", executor="local", tile_size=16)
    one = predict(params, tiny_bundle(model, ["nir", "red"], 2, classes, "pixel", seed=1))
    two = predict(params, tiny_bundle(model, ["nir", "red"], 2, classes, "pixel", seed=2))
    assert one.store != two.store
    published = build_products(one, dest)
    before = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}

    # the store of run "one" now records another prediction (as an older cropflow could leave)
    group = zarr.open_group(one.store, mode="r+")
    meta: dict[str, Any] = dict(group.attrs.asdict()[META_ATTR])  # type: ignore[arg-type]
    meta["fingerprint"] = two.fingerprint
    group.attrs[META_ATTR] = meta
    with pytest.raises(PublishError, match="nothing was published") as err:
        build_products(one, dest)
    assert one.fingerprint in str(err.value) and "kept" in (err.value.hint or "")
    after = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    assert after == before and Path(published.catalog).exists()
    group.attrs[META_ATTR] = {**meta, "fingerprint": one.fingerprint}

    # ... and changed while the products were being written: refused at publish time
    import cropflow.products.build as build
    from cropflow.products.quicklook import write_quicklook as real

    def tamper(*args: Any, **kwargs: Any) -> Path:
        g = zarr.open_group(one.store, mode="r+")
        old: dict[str, Any] = dict(g.attrs.asdict()[META_ATTR])  # type: ignore[arg-type]
        g.attrs[META_ATTR] = {**old, "fingerprint": "changed"}
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "write_quicklook", tamper)
        with pytest.raises(PublishError):
            build_products(one, dest)
    assert {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()} == before
    assert not list(tmp_path.glob(".products.staging-*"))
