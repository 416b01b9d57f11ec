"""What each family promises beyond the shared interface: padding invariance, use of dates,
field masking, the crop-mask combined loss, the boundary class, and learning real series."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import ContractError
from models import (
    Batch,
    CropflowModel,
    ModelOutput,
    build_model,
    ids_to_indices,
    parse_model_config,
)
from models.contract import BandStats, InputContract
from models.crop_mask import combined_loss, window_means
from models.layers import GaussianNoise, TemporalAttentionEncoder

BANDS = ["blue", "green", "red", "nir"]
CLASSES = ["crop", "grassland", "water"]
TINY: dict[str, dict[str, Any]] = {
    "crop_mask_lstm": {"hidden_size": 16},
    "tempcnn": {"conv_widths": [8, 8], "hidden_size": 16},
    "ltae": {"n_head": 4, "d_k": 4, "d_model": 16, "mlp_widths": [16], "decoder_widths": [16]},
    "unet": {"depth": 2, "base_width": 8},
    "utae": {
        "encoder_widths": [8, 8, 16],
        "decoder_widths": [8, 8, 16],
        "out_conv": [8],
        "norm_groups": 2,
        "n_head": 4,
        "d_model": 16,
        "d_k": 4,
    },
    "field_bigru": {"conv_widths": [8, 8, 16], "norm_groups": 2, "hidden_size": 8},
    "segformer": {
        "hidden_sizes": [8, 16],
        "depths": [1, 1],
        "n_heads": [1, 2],
        "sr_ratios": [2, 1],
        "patch_sizes": [3, 3],
        "strides": [1, 2],
        "decoder_dim": 8,
        "dropout": 0.0,
    },
}
KIND = {
    "crop_mask_lstm": "pixel",
    "tempcnn": "pixel",
    "ltae": "pixel",
    "unet": "patch",
    "utae": "patch",
    "field_bigru": "field",
    "segformer": "patch",
}
HW = 10


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, above all on a busy shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_contract(
    kind: str, classes: list[str] = CLASSES, bands: list[str] = BANDS, n_time: int | None = 6
) -> InputContract:
    return InputContract(
        bands=bands,
        input_kind=kind,
        time_kind="composite" if n_time else "acquisition",
        n_time=n_time,
        normalisation={b: BandStats(mean=0.0, std=1.0) for b in bands},
        class_map=ClassMap(classes=[ClassDef(id=i + 1, name=n) for i, n in enumerate(classes)]),
    )


def make_model(name: str, n_time: int | None = 6, **extra: Any) -> CropflowModel:
    torch.manual_seed(0)
    config = parse_model_config({"name": name, **TINY[name], **extra})
    return build_model(config, make_contract(KIND[name], n_time=n_time)).eval()


def sample_x(name: str, t: int, g: torch.Generator) -> torch.Tensor:
    if KIND[name] == "pixel":
        return torch.randn(t, len(BANDS), generator=g)
    return torch.randn(t, len(BANDS), HW, HW, generator=g)


def field_mask_for(n: int) -> torch.Tensor:
    mask = torch.zeros(n, HW, HW, dtype=torch.bool)
    mask[:, 2:8, 1:6] = True
    mask[:, 5:9, 6:9] = True
    return mask


# --------------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("ltae", {}),
        ("ltae", {"input_widths": [8, 8]}),
        ("ltae", {"input_widths": [8], "input_norm": "layer"}),
        ("utae", {}),
        ("crop_mask_lstm", {}),
        ("crop_mask_lstm", {"bidirectional": True}),
        ("crop_mask_lstm", {"bidirectional": True, "pooling": "last"}),
        ("crop_mask_lstm", {"pooling": "windows", "windows": 3}),
        ("crop_mask_lstm", {"pooling": "mean_max"}),
        ("crop_mask_lstm", {"conv_kernel": 3}),
        ("crop_mask_lstm", {"conv_kernel": 5, "bidirectional": True, "pooling": "last"}),
        ("field_bigru", {}),
    ],
)
def test_padded_dates_do_not_change_the_output(name: str, extra: dict[str, Any]) -> None:
    """A padded batch of unequal series gives each series the output it gets alone (a
    backward LSTM too: it must start from each series' last valid date)."""
    model = make_model(name, n_time=None, **extra)
    g = torch.Generator().manual_seed(3)
    lengths, t_max = [5, 3, 1], 8
    singles, xs, dates, pads = [], [], [], []
    for n_valid in lengths:
        x_valid = sample_x(name, n_valid, g)
        d_valid = torch.sort(torch.randperm(365, generator=g)[:n_valid] + 1).values
        fm = field_mask_for(1) if KIND[name] == "field" else None
        with torch.no_grad():
            singles.append(model(Batch.dense(x_valid[None], d_valid[None], fm)).logits[0])
        # scatter the valid dates, in order, among padded ones that hold garbage
        slots = torch.sort(torch.randperm(t_max, generator=g)[:n_valid]).values
        x = 50 * sample_x(name, t_max, g)
        d = torch.randint(-1000, 1000, (t_max,), generator=g)
        pad = torch.ones(t_max, dtype=torch.bool)
        x[slots], d[slots], pad[slots] = x_valid, d_valid, False
        xs.append(x)
        dates.append(d)
        pads.append(pad)
    fm = field_mask_for(len(lengths)) if KIND[name] == "field" else None
    batch = Batch(
        x=torch.stack(xs), dates=torch.stack(dates), pad_mask=torch.stack(pads), field_mask=fm
    )
    with torch.no_grad():
        padded = model(batch).logits
    for i, single in enumerate(singles):
        assert torch.allclose(padded[i], single, atol=1e-5), (name, i)


@pytest.mark.parametrize("name", ["tempcnn", "unet", "segformer"])
def test_fixed_length_models_ignore_what_padded_steps_hold(name: str) -> None:
    model = make_model(name)
    g = torch.Generator().manual_seed(4)
    x = torch.stack([sample_x(name, 6, g) for _ in range(2)])
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[0, 1] = pad[1, 4:] = True
    noisy = x.clone()
    noisy[pad] = 100 * torch.randn_like(noisy[pad])
    dates = torch.arange(6).expand(2, 6)
    with torch.no_grad():
        a = model(Batch(x=x, dates=dates, pad_mask=pad)).logits
        b = model(Batch(x=noisy, dates=dates, pad_mask=pad)).logits
        unpadded = model(Batch(x=noisy, dates=dates, pad_mask=torch.zeros_like(pad))).logits
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, unpadded, atol=1e-3)  # the mask is what made them equal


@pytest.mark.parametrize("name", ["ltae", "utae", "crop_mask_lstm", "field_bigru"])
def test_all_padded_samples_stay_finite_and_leave_the_others_alone(name: str) -> None:
    model = make_model(name, n_time=None)
    g = torch.Generator().manual_seed(5)
    x = torch.stack([sample_x(name, 4, g) for _ in range(2)])
    dates = torch.tensor([[10, 40, 70, 100], [10, 40, 70, 100]])
    pad = torch.tensor([[False] * 4, [True] * 4])
    fm = field_mask_for(2) if KIND[name] == "field" else None
    with torch.no_grad():
        both = model(Batch(x=x, dates=dates, pad_mask=pad, field_mask=fm)).logits
        first = model(Batch.dense(x[:1], dates[:1], None if fm is None else fm[:1])).logits
    assert torch.isfinite(both).all()
    assert torch.allclose(both[0], first[0], atol=1e-5)
    nothing = Batch(x=x, dates=dates, pad_mask=torch.ones_like(pad), field_mask=fm)
    with torch.no_grad():
        assert torch.isfinite(model(nothing).logits).all()  # a tile without any valid date


def test_ltae_per_date_encoder_learns_its_statistics_from_valid_dates_only() -> None:
    """In training, what padded dates hold never reaches the per-date encoder's BatchNorm,
    and a batch without any valid date trains without error."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 8, len(BANDS), generator=g)
    pad = torch.rand(3, 8, generator=g) < 0.4
    dates = torch.arange(8).expand(3, 8) * 30
    stats = []
    for garbage in (0.0, 1000.0):
        model = make_model("ltae", n_time=None, input_widths=[8]).train()
        noisy = x.clone()
        noisy[pad] = garbage
        model(Batch(x=noisy, dates=dates, pad_mask=pad))
        norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
        stats.append(norm.running_mean.clone())
    assert torch.allclose(stats[0], stats[1])
    assert not torch.allclose(stats[0], torch.zeros_like(stats[0]))  # they did update
    empty = model(Batch(x=x, dates=dates, pad_mask=torch.ones_like(pad)))
    assert torch.isfinite(empty.logits).all()


def test_ltae_attention_is_a_distribution_over_valid_dates_only() -> None:
    torch.manual_seed(0)
    enc = TemporalAttentionEncoder(
        in_channels=3,
        n_head=4,
        d_k=4,
        d_model=16,
        mlp_widths=[8],
        dropout=0.0,
        attention_dropout=0.0,
        max_period=1000.0,
        input_norm="layer",
        input_widths=[],
    ).eval()
    pad = torch.tensor([[False, True, False, False, True], [True, True, True, True, True]])
    _, attn = enc(torch.randn(2, 5, 3), torch.randint(0, 365, (2, 5)), pad)
    assert tuple(attn.shape) == (2, 4, 5)
    assert torch.allclose(attn[0].sum(dim=-1), torch.ones(4), atol=1e-6)
    assert (attn[0][:, pad[0]] == 0).all() and (attn[0][:, ~pad[0]] > 0).all()
    assert (attn[1] == 0).all()  # nothing to attend to: no NaN, no weight


# --------------------------------------------------------------------------------------------
# Dates
# --------------------------------------------------------------------------------------------


def test_input_noise_acts_in_training_only_and_has_the_stated_spread() -> None:
    noise = GaussianNoise(0.1)
    x = torch.zeros(20_000, 4)
    torch.manual_seed(0)
    noisy = noise.train()(x)
    assert abs(float(noisy.std()) - 0.1) < 0.005 and abs(float(noisy.mean())) < 0.005
    assert torch.equal(noise.eval()(x), x)
    assert not list(noise.parameters())  # nothing to save: old and new weights load alike


def test_tempcnn_input_noise_leaves_prediction_unchanged_and_varies_training() -> None:
    quiet = make_model("tempcnn", input_noise=0.0)
    noisy = make_model("tempcnn", input_noise=0.5)  # same seed: the same weights
    assert quiet.state_dict().keys() == noisy.state_dict().keys()
    g = torch.Generator().manual_seed(1)
    batch = Batch.dense(torch.stack([sample_x("tempcnn", 6, g) for _ in range(5)]))
    with torch.no_grad():
        assert torch.equal(quiet(batch).logits, noisy(batch).logits)  # eval: no noise
        noisy.train()
        assert not torch.allclose(noisy(batch).logits, noisy(batch).logits)


@pytest.mark.parametrize("name", ["ltae", "utae"])
def test_date_spacing_changes_the_output(name: str) -> None:
    model = make_model(name, n_time=None)
    g = torch.Generator().manual_seed(6)
    x = torch.stack([sample_x(name, 5, g) for _ in range(2)])
    regular = torch.tensor([[30, 60, 90, 120, 150]] * 2)
    bunched = torch.tensor([[30, 35, 40, 45, 150]] * 2)
    with torch.no_grad():
        a = model(Batch.dense(x, regular)).logits
        b = model(Batch.dense(x, bunched)).logits
        again = model(Batch.dense(x, regular.clone())).logits
    assert torch.equal(a, again)
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["crop_mask_lstm", "tempcnn", "field_bigru"])
def test_order_only_families_do_not_read_dates(name: str) -> None:
    model = make_model(name)
    g = torch.Generator().manual_seed(7)
    x = torch.stack([sample_x(name, 6, g) for _ in range(2)])
    fm = field_mask_for(2) if KIND[name] == "field" else None
    with torch.no_grad():
        a = model(Batch.dense(x, torch.arange(6).expand(2, 6), fm)).logits
        b = model(Batch.dense(x, torch.tensor([[1, 2, 3, 200, 300, 365]] * 2), fm)).logits
    assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# Field masking
# --------------------------------------------------------------------------------------------


def test_pixels_outside_the_field_do_not_change_the_output() -> None:
    model = make_model("field_bigru")
    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, 5, len(BANDS), HW, HW, generator=g)
    mask = field_mask_for(3)
    outside = ~mask[:, None, None].expand_as(x)
    other = x.clone()
    other[outside] = 100 * torch.randn(int(outside.sum()), generator=g)
    inside_changed = x.clone()
    inside_changed[~outside] += 1.0
    with torch.no_grad():
        a = model(Batch.dense(x, field_mask=mask)).logits
        b = model(Batch.dense(other, field_mask=mask)).logits
        c = model(Batch.dense(inside_changed, field_mask=mask)).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert (a - c).abs().max() > 1e-3


def test_field_output_does_not_depend_on_the_chip_around_the_field() -> None:
    model = make_model("field_bigru")
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 5, len(BANDS), HW, HW, generator=g)
    mask = field_mask_for(1)
    big_x = torch.randn(1, 5, len(BANDS), 2 * HW + 3, 2 * HW + 1, generator=g)
    big_mask = torch.zeros(1, 2 * HW + 3, 2 * HW + 1, dtype=torch.bool)
    big_x[..., 7 : 7 + HW, 4 : 4 + HW] = x
    big_mask[:, 7 : 7 + HW, 4 : 4 + HW] = mask
    with torch.no_grad():
        small = model(Batch.dense(x, field_mask=mask)).logits
        big = model(Batch.dense(big_x, field_mask=big_mask)).logits
    assert torch.allclose(small, big, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Crop-mask heads and loss
# --------------------------------------------------------------------------------------------


def _loss_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10)
    global_logits = torch.randn(8, 3, generator=g)
    local_logits = torch.randn(8, generator=g)
    target = torch.tensor([0, 1, 2, 0, 255, 1, 0, 2])
    return global_logits, local_logits, target


@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=5),
    windows=st.integers(1, 12),
    width=st.integers(1, 3),
)
@settings(max_examples=60, deadline=None)
def test_window_means_split_each_series_into_equal_parts(
    lengths: list[int], windows: int, width: int
) -> None:
    """Each part holds ceil or floor of length / windows steps, in order; steps past a
    series' length are never read."""
    n = max(lengths)
    steps = torch.randn(len(lengths), n, width, dtype=torch.float64)
    for i, length in enumerate(lengths):
        steps[i, length:] = float("nan")  # padding: must not leak into any part
    means = window_means(steps, torch.tensor(lengths), windows)
    assert means.shape == (len(lengths), windows, width)
    for i, length in enumerate(lengths):
        bounds = [-(-k * length // windows) for k in range(windows + 1)]  # ceil(k L / W)
        for k in range(windows):
            part = steps[i, bounds[k] : bounds[k + 1]]
            want = part.mean(dim=0) if len(part) else torch.zeros(width, dtype=torch.float64)
            assert torch.allclose(means[i, k], want), (length, windows, k)


def test_combined_loss_weighs_a_global_sample_one_alpha_th_of_a_local_one() -> None:
    gl, ll, target = _loss_inputs()
    local = torch.tensor([True, True, False, False, True, False, True, False])
    positive = torch.tensor([0])  # "crop"
    got = combined_loss(
        gl, ll, target, positive_indices=positive, alpha=4.0, ignore_index=255, local_mask=local
    )
    labelled = target != 255
    loc, glo = local & labelled, ~local & labelled
    bce = F.binary_cross_entropy_with_logits(ll[loc], (target[loc] == 0).float(), reduction="mean")
    ce = F.cross_entropy(gl[glo], target[glo], reduction="mean")
    n_loc, n_glo = int(loc.sum()), int(glo.sum())
    want = bce + (n_glo / n_loc) / 4.0 * ce  # the reference's formula
    assert torch.allclose(got, want, atol=1e-6)


def test_without_a_local_mask_both_heads_learn_from_every_labelled_sample() -> None:
    gl, ll, target = _loss_inputs()
    positive = torch.tensor([0, 2])
    got = combined_loss(gl, ll, target, positive_indices=positive, alpha=10.0, ignore_index=255)
    ok = target != 255
    bce = F.binary_cross_entropy_with_logits(
        ll[ok], ((target[ok] == 0) | (target[ok] == 2)).float()
    )
    ce = F.cross_entropy(gl[ok], target[ok])
    assert torch.allclose(got, bce + ce / 10.0, atol=1e-6)


def test_explicit_local_labels_and_global_only_batches() -> None:
    gl, ll, target = _loss_inputs()
    positive = torch.tensor([0])
    local_target = torch.tensor([1, 0, 255, 1, 0, 0, 255, 1])
    got = combined_loss(
        gl,
        ll,
        target,
        positive_indices=positive,
        alpha=1.0,
        ignore_index=255,
        local_target=local_target,
    )
    ok_local, ok_global = local_target != 255, target != 255
    bce_sum = F.binary_cross_entropy_with_logits(
        ll[ok_local], local_target[ok_local].float(), reduction="sum"
    )
    ce_sum = F.cross_entropy(gl[ok_global], target[ok_global], reduction="sum")
    assert torch.allclose(got, (bce_sum + ce_sum) / int(ok_local.sum()), atol=1e-6)
    # no local sample at all: the plain global mean (the reference's alpha = 1 case)
    nobody = torch.zeros(8, dtype=torch.bool)
    got = combined_loss(
        gl, ll, target, positive_indices=positive, alpha=3.0, ignore_index=255, local_mask=nobody
    )
    assert torch.allclose(got, F.cross_entropy(gl, target, ignore_index=255), atol=1e-6)


def test_crop_mask_refuses_a_positive_class_outside_the_class_map() -> None:
    config = parse_model_config({"name": "crop_mask_lstm", "local_positive_classes": ["maize"]})
    with pytest.raises(ContractError, match="maize"):
        build_model(config, make_contract("pixel"))


# --------------------------------------------------------------------------------------------
# Boundary class
# --------------------------------------------------------------------------------------------


def test_utae_boundary_class_is_one_more_class_of_the_class_map() -> None:
    classes = [*CLASSES, "boundary"]
    config = parse_model_config({"name": "utae", **TINY["utae"], "boundary_class": "boundary"})
    model = build_model(config, make_contract("patch", classes=classes))
    assert model.boundary_index == classes.index("boundary")
    out = model.eval()(Batch.dense(torch.randn(1, 3, len(BANDS), HW, HW)))
    assert out.logits.shape[1] == len(classes)
    with pytest.raises(ContractError, match="boundary"):
        build_model(config, make_contract("patch"))


# --------------------------------------------------------------------------------------------
# Real data: Formosat-2 pixel series (../shared/fixtures/real/temporalcnn)
# --------------------------------------------------------------------------------------------

CROPS = ["wheat", "barley", "rapeseed", "corn", "soy", "sunflower", "sorghum", "pea"]


def _formosat(fixtures_dir: Path) -> tuple[InputContract, torch.Tensor, torch.Tensor]:
    folder = fixtures_dir / "real" / "temporalcnn"
    with (folder / "class_map.txt").open() as f:
        legend = [(int(r["value"]), r["class"], r["colour"]) for r in csv.DictReader(f)]
    class_map = ClassMap(classes=[ClassDef(id=v, name=n, color=c) for v, n, c in legend])
    rows: dict[int, list[list[float]]] = {}
    with (folder / "train_dataset.csv").open() as f:
        for row in csv.reader(f):
            rows.setdefault(int(row[0]), []).append([float(v) for v in row[2:]])
    keep = [0, 3, 8, 11]  # wheat, corn, grassland, water (file classes are value - 1)
    series = torch.tensor([r for c in keep for r in rows[c][:3]])  # 3 fields each
    ids = torch.tensor([c + 1 for c in keep for _ in range(3)])
    x = series.view(len(series), -1, 3)[:, ::3]  # 149 dates x (nir, red, green) -> every 3rd
    x = (x - x.mean(dim=(0, 1))) / x.std(dim=(0, 1))
    contract = InputContract(
        bands=["nir", "red", "green"],
        input_kind="pixel",
        time_kind="composite",
        n_time=x.shape[1],
        normalisation={b: BandStats(mean=0.0, std=1.0) for b in ["nir", "red", "green"]},
        class_map=class_map,
    )
    return contract, x.float(), ids_to_indices(ids, class_map)


@pytest.mark.parametrize("name", ["crop_mask_lstm", "tempcnn", "ltae"])
def test_pixel_families_learn_real_formosat_series(name: str, fixtures_dir: Path) -> None:
    contract, x, y = _formosat(fixtures_dir)
    extra = {"local_positive_classes": CROPS} if name == "crop_mask_lstm" else {}
    torch.manual_seed(0)
    model = build_model(parse_model_config({"name": name, **TINY[name], **extra}), contract)
    dates = (torch.arange(x.shape[1]) * 7 + 30).expand(len(x), -1)  # weekly-ish day numbers
    batch = Batch.dense(x, dates)
    is_crop = torch.isin(y, torch.tensor([contract.class_map.index_of(c) for c in CROPS]))

    def fitted(out: ModelOutput) -> bool:
        ok = bool((out.logits.argmax(dim=1) == y).all())
        if out.aux_logits is not None:  # the local head answers crop / non-crop alongside
            ok = ok and bool(((out.aux_logits > 0) == is_crop).all())
        return ok

    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimiser.zero_grad()
        out = model(batch)
        if fitted(out):
            break
        model.loss(out, y).backward()
        optimiser.step()
    assert fitted(out)
    assert (out.aux_logits is not None) == (name == "crop_mask_lstm")
