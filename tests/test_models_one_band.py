"""Every pixel family on a single band (an NDVI series, the most common real input): the
inputs reach the model, series of different classes give different embeddings, and the
family learns a one-band task."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import ConfigError, ContractError
from cropflow.train import TrainParams, train
from cropflow.train.synthetic import synthetic_training_data
from models import build_model, parse_model_config
from models.base import CropflowModel
from models.contract import BandStats, InputContract
from models.layers import TemporalAttentionEncoder

CLASSES = ["wheat", "maize", "forest", "water"]


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _contract(bands: list[str], n_time: int = 8) -> InputContract:
    return InputContract(
        bands=bands,
        input_kind="pixel",
        time_kind="composite",
        n_time=n_time,
        normalisation={b: BandStats(mean=0.0, std=1.0) for b in bands},
        class_map=ClassMap(classes=[ClassDef(id=i + 1, name=n) for i, n in enumerate(CLASSES)]),
    )


def _ltae(**extra: object) -> CropflowModel:
    torch.manual_seed(0)
    config = parse_model_config({"name": "ltae", "n_head": 4, "d_model": 32, "d_k": 4, **extra})
    return build_model(config, _contract(["ndvi"])).eval()


def test_one_band_series_of_different_classes_give_different_embeddings() -> None:
    model = _ltae()
    t = torch.linspace(0, 6.28, 8)
    low = (0.2 + 0.1 * torch.sin(t))[None, :, None]  # e.g. water: flat, low NDVI
    high = (0.5 + 0.3 * torch.sin(t))[None, :, None]  # e.g. a crop with a season
    dates = torch.arange(8)[None] * 30
    pad = torch.zeros(1, 8, dtype=torch.bool)
    x = torch.cat([low, high])
    encoder = model.net.encoder  # type: ignore[union-attr]
    with torch.no_grad():
        embedding, _ = encoder(x, dates.expand(2, -1), pad.expand(2, -1))
    assert not torch.allclose(embedding[0], embedding[1], atol=1e-3)
    # and a date's brightness is kept: the same curve, brighter, gives another embedding
    with torch.no_grad():
        brighter, _ = encoder(torch.cat([low, low + 0.3]), dates.expand(2, -1), pad.expand(2, -1))
    assert not torch.allclose(brighter[0], brighter[1], atol=1e-3)


def test_the_per_date_layer_norm_that_erases_one_band_is_refused() -> None:
    """LayerNorm over the channels of one date maps a one-band input to 0 whatever it is."""
    norm = TemporalAttentionEncoder(
        in_channels=1,
        n_head=2,
        d_k=4,
        d_model=8,
        mlp_widths=[8],
        dropout=0.0,
        attention_dropout=0.0,
        max_period=1000.0,
        input_norm="none",
    )
    assert isinstance(norm.in_norm, torch.nn.Identity)
    with pytest.raises((ConfigError, ContractError), match="input_norm"):
        _ltae(input_norm="layer")


@pytest.mark.parametrize("family", ["ltae", "tempcnn", "crop_mask_lstm"])
def test_each_pixel_family_learns_a_one_band_task(family: str, tmp_path: Path) -> None:
    data = synthetic_training_data(
        "pixel",
        sizes=(240, 60, 120),
        n_time=12,
        bands=("ndvi",),
        classes=tuple(CLASSES),
        separation=1.0,
        noise=0.3,
        seed=1,
    )
    model: dict[str, object] = {"name": family}
    if family == "crop_mask_lstm":
        model |= {"local_positive_classes": ["wheat", "maize"], "hidden_size": 32}
    result = train(
        TrainParams.model_validate(
            {
                "training_set": "memory://synthetic",
                "model": model,
                "epochs": 25,
                "batch_size": 32,
                "lr": 3e-3,
                "checkpoint_dir": tmp_path / "ckpt",
                "register_model": False,
            }
        ),
        data=data,
    )
    # chance is 0.25; the classes differ only by the phase and level of one band
    assert result.test["macro_f1"] >= 0.85, result.test
