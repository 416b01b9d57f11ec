"""A registered model per region: retrains of two regions never touch each other's aliases."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from cropflow.chain import demo_config, embedded_demo_region
from cropflow.demo import generate_demo
from cropflow.settings import get_settings
from cropflow.train import TrainOptions
from cropflow.train.registry import CHAMPION, current_alias


@pytest.mark.slow
def test_two_regions_retrained_in_turn_have_separate_champions(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.remap import RemapParams, remap_region
    from flows.retrain import RetrainParams, retrain

    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path / "work"))
    generate_demo(get_settings().demo_dir, demo_config("tiny", None))
    demo = embedded_demo_region()
    north = demo.model_copy(update={"name": "north"})
    south = demo.model_copy(update={"name": "south", "registered_model": "south-crops"})
    assert (north.model_name(), south.model_name()) == ("cropflow-north", "south-crops")
    options = TrainOptions.model_validate({"epochs": 1})

    def retrain_region(region: object, seed: int) -> str | None:
        result = retrain(
            RetrainParams.model_validate(
                {
                    "region": region,
                    "training_set": {"splits": {"block_size_px": 16}},
                    "train": options.model_copy(update={"seed": seed}).model_dump(),
                }
            )
        )
        return result.summary.model_version

    assert retrain_region(north, 0) == "1"
    north_champion = current_alias(CHAMPION, "cropflow-north")
    assert north_champion is not None and north_champion[0] == "1"

    # the second region gets its own v1 champion: no comparison with the first's
    assert retrain_region(south, 0) == "1"
    assert current_alias(CHAMPION, "south-crops") is not None
    assert current_alias(CHAMPION, "cropflow-north") == north_champion, "untouched"
    client = MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)
    reason = client.get_model_version("south-crops", "1").tags["cropflow.alias_reason"]
    assert reason == "no champion yet"

    # a second retrain of the first region competes with its own champion only
    assert retrain_region(north, 1) == "2"
    assert current_alias(CHAMPION, "south-crops") is not None
    versions = client.search_model_versions("name='south-crops'")
    assert [str(v.version) for v in versions] == ["1"]
    decision = client.get_model_version("cropflow-north", "2").tags["cropflow.alias_reason"]
    assert "champion v1" in decision

    # each region's remap maps with its own champion
    mapped = remap_region(RemapParams(region=south))
    south_champion = current_alias(CHAMPION, "south-crops")
    assert south_champion is not None
    assert mapped.model_version == "1" and mapped.mlflow_run_id == south_champion[1]
