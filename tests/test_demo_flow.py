"""The README's demo, end to end at the tiny size, on the embedded default.

generate region -> STAC API over HTTP -> search -> cube -> training set -> train -> register
(champion) -> tiled prediction -> products; then a second run that must not replace the
champion unless its model is better.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from mlflow import MlflowClient

from cropflow.chain import DemoParams
from cropflow.demo import load_demo
from cropflow.settings import get_settings
from cropflow.train.registry import current_alias
from flows.demo import demo


@pytest.mark.slow
def test_demo_runs_the_whole_chain_and_keeps_a_better_champion(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path / "work"))
    params = DemoParams.model_validate({"size": "tiny", "train": {"epochs": 4}})

    first = demo(params)

    # A registered champion of the demo region's own registered model, the model that mapped
    # the region.
    assert first.model_alias == "champion"
    champion = current_alias("champion", "cropflow-demo")
    assert champion is not None and champion[1] == first.mlflow_run_id

    # The class map COG is georeferenced like the cube's grid and carries the legend.
    region = load_demo(get_settings().demo_dir)
    legend = region.class_map()
    with rasterio.open(first.products["class_map"]) as cog:
        assert cog.crs.to_epsg() == 32633
        assert cog.res == (10.0, 10.0)
        assert cog.dtypes[0] == "uint8"
        cmap = cog.colormap(1)
        classes = cog.read(1)
        names = " ".join(cog.tags().values())
    for c in legend.classes:
        assert c.name in names
        assert cmap[c.id][:3] == tuple(int(c.color[i : i + 2], 16) for i in (1, 3, 5))
    # The map agrees with the generator's truth well beyond chance (13 classes).
    with rasterio.open(region.path("truth_classes")) as truth_src:
        # The cube's grid covers the region's AOI (the items' footprints, projected and
        # snapped), which may differ from the generator's world grid by a few pixels: compare
        # where the truth exists.
        window = rasterio.windows.from_bounds(*cog.bounds, transform=truth_src.transform)
        assert window.col_off == round(window.col_off), "grids are not aligned"
        truth = truth_src.read(
            1, window=window.round_offsets(), out_shape=classes.shape, boundless=True, fill_value=0
        )
    labelled = truth > 0
    assert labelled.sum() > 0.7 * truth.size
    accuracy = float(np.mean(classes[labelled] == truth[labelled]))
    assert accuracy > 0.5, accuracy

    # Second run, another training seed: every stage before training comes from the cache;
    # the new model becomes champion only if it is better.
    second = demo(params.model_copy(update={"train": params.train.model_copy(update={"seed": 1})}))
    assert second.cube_uri == first.cube_uri
    assert second.training_set_uri == first.training_set_uri
    client = MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)
    versions = client.search_model_versions("name='cropflow-demo'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"], "a second model registered"
    # the map is made by the champion: the new model if promoted, else still the first
    after = current_alias("champion", "cropflow-demo")
    assert after is not None
    if second.model_alias == "champion":
        assert after[1] == second.mlflow_run_id and after[0] != champion[0]
    else:
        assert second.model_alias == "challenger"
        assert after == champion and second.mlflow_run_id == first.mlflow_run_id
        reason = client.get_model_version("cropflow-demo", "2").tags["cropflow.alias_reason"]
        assert "paired resamples" in reason
