"""Run options refuse keys they do not have: a misplaced option (``bands`` at the top of the
training-set options instead of under ``samples``) is an error naming it, never silently
ignored (a benchmark once trained three "different" input sets that were the same)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from cropflow.labels.options import TrainingSetOptions
from cropflow.predict.params import PredictOptions
from cropflow.train.params import TrainOptions


@pytest.mark.parametrize(
    ("model", "data", "where"),
    [
        (TrainingSetOptions, {"bands": ["red"]}, "bands"),
        (TrainingSetOptions, {"samples": {"band": ["red"]}}, "samples.band"),
        (TrainingSetOptions, {"splits": {"block_size": 16}}, "splits.block_size"),
        (TrainOptions, {"average_epoch": 2}, "average_epoch"),
        (TrainOptions, {"augment": {"dropout": 0.2}}, "augment.dropout"),
        (PredictOptions, {"tile": 64}, "tile"),
    ],
)
def test_an_unknown_option_is_refused_by_name(
    model: type[BaseModel], data: dict[str, Any], where: str
) -> None:
    with pytest.raises(ValidationError) as err:
        model.model_validate(data)
    locs = [".".join(str(p) for p in e["loc"]) for e in err.value.errors()]
    assert where in locs and err.value.errors()[0]["type"] == "extra_forbidden"


def test_the_same_options_in_their_place_are_taken() -> None:
    options = TrainingSetOptions.model_validate({"samples": {"bands": ["red", "s1_vv"]}})
    assert options.samples.bands == ["red", "s1_vv"]
    assert TrainOptions.model_validate({"average_epochs": 2}).average_epochs == 2
