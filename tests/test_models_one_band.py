"""Every pixel family on a single band (an NDVI series, the most common real input): the
inputs reach the model, series of different classes give different embeddings, and the
family learns a one-band task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import ConfigError, ContractError
from cropflow.train import TrainParams, train
from cropflow.train.synthetic import synthetic_training_data
from models import build_model, load_model, parse_model_config, save_model
from models.base import Batch, CropflowModel
from models.configs import CropMaskLSTMConfig
from models.contract import BandStats, InputContract
from models.crop_mask import CropMaskNet
from models.layers import TemporalAttentionEncoder
from models.ltae import LTAENet
from models.serialization import CONFIG_FILE

CLASSES = ["wheat", "maize", "forest", "water"]
BANDS = ["red", "nir", "swir16"]


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


@pytest.mark.parametrize("input_widths", [None, []])
def test_one_band_series_of_different_classes_give_different_embeddings(
    input_widths: list[int] | None,
) -> None:
    """With the default per-date encoder and without one."""
    model = _ltae() if input_widths is None else _ltae(input_widths=input_widths)
    t = torch.linspace(0, 6.28, 8)
    low = (0.2 + 0.1 * torch.sin(t))[None, :, None]  # e.g. water: flat, low NDVI
    high = (0.5 + 0.3 * torch.sin(t))[None, :, None]  # e.g. a crop with a season
    dates = torch.arange(8)[None] * 30
    pad = torch.zeros(1, 8, dtype=torch.bool)
    x = torch.cat([low, high])
    net = model.net
    assert isinstance(net, LTAENet)
    encoder = net.encoder
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
        input_widths=[],
    )
    assert isinstance(norm.in_norm, torch.nn.Identity)
    with pytest.raises((ConfigError, ContractError), match="input_norm"):
        _ltae(input_norm="layer", input_widths=[])
    # after a per-date encoder the norm sees learnt features, as in the reference: allowed,
    # and two different one-band series still differ
    encoded = _ltae(input_norm="layer", input_widths=[8, 16])
    x = torch.stack([torch.linspace(0, 1, 8), torch.linspace(1, 0, 8)])[..., None]
    batch = Batch.dense(x, torch.arange(8).expand(2, 8) * 30)
    with torch.no_grad():
        logits = encoded(batch).logits
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)


@pytest.mark.parametrize(
    ("family", "extra"),
    [
        ("ltae", {}),
        ("tempcnn", {}),
        ("crop_mask_lstm", {}),
        ("crop_mask_lstm", {"conv_kernel": 5}),
    ],
)
def test_each_pixel_family_learns_a_one_band_task(
    family: str, extra: dict[str, object], tmp_path: Path
) -> None:
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
    model: dict[str, object] = {"name": family, **extra}
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


def _batch(n: int, bands: int, t: int = 8, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        x=torch.randn(n, t, bands, generator=g),
        dates=(torch.arange(t) * 30)[None].expand(n, -1),
        pad_mask=torch.zeros(n, t, dtype=torch.bool),
    )


def test_crop_mask_without_positive_classes_trains_the_global_head_only() -> None:
    """The default names no local class (a legend need not have 'crop'): the loss is the
    global head's cross-entropy alone, not a binary head learning 'never'."""
    torch.manual_seed(0)
    model = build_model(parse_model_config({"name": "crop_mask_lstm"}), _contract(["ndvi"]))
    out = model(_batch(6, 1))
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    expected = F.cross_entropy(out.logits, target)
    assert torch.allclose(model.loss(out, target), expected)
    # with positives named, the local head's loss enters
    named = build_model(
        parse_model_config({"name": "crop_mask_lstm", "local_positive_classes": ["wheat"]}),
        _contract(["ndvi"]),
    )
    named_out = named(_batch(6, 1))
    assert not torch.allclose(
        named.loss(named_out, target), F.cross_entropy(named_out.logits, target)
    )


@pytest.mark.parametrize(
    ("config", "option", "old"),
    [
        ({"name": "ltae", "n_head": 4, "d_model": 16, "d_k": 4}, "input_norm", "layer"),
        (
            {"name": "ltae", "n_head": 4, "d_model": 16, "d_k": 4, "input_norm": "none"},
            "input_widths",
            [],
        ),
        ({"name": "crop_mask_lstm", "hidden_size": 8}, "pooling", "last"),
        ({"name": "tempcnn", "conv_widths": [8], "hidden_size": 8}, "input_noise", 0.0),
    ],
)
def test_a_model_saved_before_an_option_loads_as_it_was_built(
    config: dict[str, object], option: str, old: object, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = build_model(parse_model_config({**config, option: old}), _contract(BANDS)).eval()
    folder = save_model(model, tmp_path / "model")
    saved = json.loads((folder / CONFIG_FILE).read_text())
    del saved[option]  # as written before the option existed
    (folder / CONFIG_FILE).write_text(json.dumps(saved))
    loaded = load_model(folder)
    assert getattr(loaded.config, option) == old
    batch = _batch(3, len(BANDS))
    with torch.no_grad():
        assert torch.equal(loaded(batch).logits, model(batch).logits)


def test_the_lstm_convolves_long_series_only_and_older_models_load_without_it(
    tmp_path: Path,
) -> None:
    """conv_kernel None: a convolution over 5 dates for series of 24 steps or more, the
    reference's input (each date's bands) for shorter ones; a model saved before the option
    existed loads as the network it was trained in, on long series too."""

    def stem(config: dict[str, object], n_time: int) -> torch.nn.Module | None:
        model = build_model(parse_model_config(config), _contract(["ndvi"], n_time=n_time))
        net = model.net
        assert isinstance(net, CropMaskNet)
        return net.stem

    base: dict[str, object] = {"name": "crop_mask_lstm", "hidden_size": 8}
    assert stem(base, 8) is None and stem(base, 23) is None
    for n_time in (24, 149):
        long_stem = stem(base, n_time)
        assert isinstance(long_stem, torch.nn.Conv1d) and long_stem.kernel_size == (5,)
    assert stem({**base, "conv_kernel": 0}, 149) is None
    short = stem({**base, "conv_kernel": 3}, 8)
    assert isinstance(short, torch.nn.Conv1d) and short.kernel_size == (3,)

    torch.manual_seed(0)
    contract = _contract(["ndvi"], n_time=149)
    old = build_model(parse_model_config({**base, "conv_kernel": 0}), contract).eval()
    folder = save_model(old, tmp_path / "model")
    saved = json.loads((folder / CONFIG_FILE).read_text())
    del saved["conv_kernel"]  # as written before the option existed
    (folder / CONFIG_FILE).write_text(json.dumps(saved))
    loaded = load_model(folder)
    assert isinstance(loaded.config, CropMaskLSTMConfig) and loaded.config.conv_kernel == 0
    batch = _batch(3, 1, t=149)
    with torch.no_grad():
        assert torch.equal(loaded(batch).logits, old(batch).logits)
