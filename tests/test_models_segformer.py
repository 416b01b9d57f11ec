"""SegFormer (issue 17): its config checks, the padding arithmetic, the paper's stage
resolutions, and the family trained, registered and mapping the demo through remap-region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cropflow.errors import ConfigError
from models.base import Batch, build_model
from models.configs import parse_model_config
from models.contract import BandStats, InputContract
from models.segformer import SegFormer, input_multiple

BANDS = ["red", "nir"]


def _contract(n_time: int = 3) -> InputContract:
    from cropflow.classes import ClassDef, ClassMap

    return InputContract(
        bands=BANDS,
        input_kind="patch",
        time_kind="composite",
        n_time=n_time,
        normalisation={b: BandStats(mean=0.0, std=1.0) for b in BANDS},
        class_map=ClassMap(classes=[ClassDef(id=i + 1, name=f"c{i}") for i in range(4)]),
        patch_size=32,
    )


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"depths": [2, 2]}, "depths has 2 entries but hidden_sizes has 4"),
        ({"n_heads": [1, 2, 3, 8]}, "not a multiple of its n_heads"),
        ({"patch_sizes": [7, 4, 3, 3]}, "even size"),
        ({"sr_ratios": [8, 4, 0, 1]}, r"sr_ratios\.2: Input should be greater than or equal to 1"),
    ],
)
def test_a_config_whose_stages_disagree_is_refused_by_name(
    update: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_model_config({"name": "segformer", **update})


@settings(max_examples=200, deadline=None)
@given(
    stages=st.lists(
        st.tuples(st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4, 8])), min_size=1, max_size=4
    ),
    size=st.integers(1, 300),
)
def test_the_input_multiple_lets_every_stage_and_reduction_divide_exactly(
    stages: list[tuple[int, int]], size: int
) -> None:
    strides = [s for s, _ in stages]
    srs = [r for _, r in stages]
    m = input_multiple(strides, srs)
    padded = -(-size // m) * m
    scale = 1
    for stride, sr in stages:
        assert padded % (scale * stride) == 0
        scale *= stride
        assert (padded // scale) % sr == 0, "the key/value reduction covers the map exactly"
    assert input_multiple([4, 2, 2, 2], [8, 4, 2, 1]) == 32  # MiT-b0: 32 px patches unpadded


def test_the_default_config_is_mit_b0_with_stages_at_a_quarter_to_a_32nd() -> None:
    config = parse_model_config({"name": "segformer"})
    torch.manual_seed(0)
    model = build_model(config, _contract())
    assert isinstance(model, SegFormer)
    x = torch.randn(2, 3, len(BANDS), 64, 64)
    shapes: list[tuple[int, ...]] = []

    def record(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        shapes.append(tuple(output.shape))

    hooks = [stage.register_forward_hook(record) for stage in model.net.stages]
    model.eval()
    with torch.no_grad():
        out = model(Batch.dense(x)).logits
    for h in hooks:
        h.remove()
    assert shapes == [(2, 32, 16, 16), (2, 64, 8, 8), (2, 160, 4, 4), (2, 256, 2, 2)]
    assert tuple(out.shape) == (2, 4, 64, 64)
    # about 3.7 M parameters in MiT-b0 + its 256-channel decoder at ImageNet input; here the
    # first embedding sees T*C = 6 channels instead of 3
    assert 3.0e6 < model.n_parameters < 4.5e6
    # an odd patch is padded to the multiple and cropped back
    with torch.no_grad():
        odd = model(Batch.dense(torch.randn(1, 3, len(BANDS), 21, 37))).logits
    assert tuple(odd.shape) == (1, 4, 21, 37) and bool(torch.isfinite(odd).all())


def test_the_stacked_dates_are_all_read() -> None:
    """Changing one date of the stack changes the logits: T*C channels reach the encoder."""
    torch.manual_seed(0)
    model = build_model(parse_model_config({"name": "segformer"}), _contract()).eval()
    x = torch.randn(1, 3, len(BANDS), 32, 32)
    with torch.no_grad():
        base = model(Batch.dense(x)).logits
        for t in range(3):
            y = x.clone()
            y[:, t] += 1.0
            assert not torch.allclose(model(Batch.dense(y)).logits, base, atol=1e-4), t


# ---------------------------------------------------------------------------------------------
# Trains, registers and maps the demo through the chained flows
# ---------------------------------------------------------------------------------------------

SMALL_SEGFORMER = {
    "name": "segformer",
    "hidden_sizes": [16, 32],
    "depths": [1, 1],
    "n_heads": [1, 2],
    "sr_ratios": [2, 1],
    "strides": [2, 2],
    "patch_sizes": [3, 3],
    "decoder_dim": 32,
}


@pytest.mark.slow
def test_a_segformer_trains_registers_and_maps_the_demo_through_remap_region(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cropflow.chain import demo_config, embedded_demo_region
    from cropflow.cube import open_cube
    from cropflow.demo import generate_demo
    from cropflow.demo.legend import CLASSES
    from cropflow.settings import get_settings
    from cropflow.train.registry import CHAMPION, current_alias
    from flows.remap import RemapParams, remap_region
    from flows.retrain import RetrainParams, retrain

    monkeypatch.setenv("CROPFLOW_WORKDIR", str(tmp_path / "work"))
    generate_demo(get_settings().demo_dir, demo_config("tiny", None))
    region = embedded_demo_region().model_copy(update={"name": "segdemo"})
    result = retrain(
        RetrainParams.model_validate(
            {
                "region": region,
                "training_set": {
                    "samples": {"kind": "patch", "patch_size": 8, "patch_stride": 4},
                    "splits": {"block_size_px": 16},
                },
                "train": {"model": SMALL_SEGFORMER, "epochs": 2, "batch_size": 8},
            }
        )
    )
    assert result.summary.model_version == "1"
    champion = current_alias(CHAMPION, region.model_name())
    assert champion is not None and champion[1] == result.summary.mlflow_run_id
    assert result.outcome.training.family == "segformer"

    mapped = remap_region(RemapParams(region=region))
    assert mapped.mlflow_run_id == result.summary.mlflow_run_id
    cube = open_cube(str(mapped.cube_uri))
    with rasterio.open(mapped.products["class_map"]) as src:
        classes = src.read(1)
        assert (src.height, src.width) == (cube.sizes["y"], cube.sizes["x"])
    labelled = classes[classes != 255]
    assert labelled.size > 0.9 * classes.size, "the whole demo grid is mapped"
    assert len(np.unique(labelled)) >= 2, "a trained model maps more than one class"
    assert set(np.unique(labelled).tolist()) <= {c.id for c in CLASSES}
