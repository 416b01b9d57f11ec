"""The model interface, checked on every family: configs, contracts, shapes, training,
autocast, save/load. Family-specific behaviour is in test_models_behaviour.py."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cropflow.classes import ClassDef, ClassMap
from cropflow.errors import ConfigError, ContractError, DataError
from models import (
    FAMILY_NAMES,
    Batch,
    CropflowModel,
    build_model,
    ids_to_indices,
    load_model,
    model_config_json_schema,
    parse_model_config,
    save_model,
)
from models.contract import BandStats, InputContract
from models.layers import padded_size
from models.serialization import WEIGHTS_FILE

BANDS = ["blue", "green", "red", "nir"]
CLASSES = ["crop", "grassland", "water"]

#: Tiny configs (fast on 2 CPU cores); dropout off so that training is deterministic.
TINY: dict[str, dict[str, Any]] = {
    "crop_mask_lstm": {"hidden_size": 16, "dropout": 0.0},
    "tempcnn": {"conv_widths": [8, 8, 8], "hidden_size": 16, "dropout": 0.0},
    "ltae": {
        "n_head": 4,
        "d_k": 4,
        "d_model": 16,
        "mlp_widths": [16],
        "decoder_widths": [16],
        "dropout": 0.0,
        "attention_dropout": 0.0,
    },
    "unet": {"depth": 3, "base_width": 8},
    "utae": {
        "encoder_widths": [8, 8, 16],
        "decoder_widths": [8, 8, 16],
        "out_conv": [8],
        "norm_groups": 2,
        "n_head": 4,
        "d_model": 16,
        "d_k": 4,
        "dropout": 0.0,
        "attention_dropout": 0.0,
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
FIXED_T = {"tempcnn", "unet", "segformer"}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, above all on a busy shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_contract(
    kind: str, bands: list[str] = BANDS, n_time: int | None = 6, classes: list[str] = CLASSES
) -> InputContract:
    class_map = ClassMap(classes=[ClassDef(id=10 + 3 * i, name=n) for i, n in enumerate(classes)])
    return InputContract(
        bands=bands,
        input_kind=kind,
        time_kind="composite" if n_time is not None else "acquisition",
        n_time=n_time,
        period="1MS" if n_time is not None else None,
        normalisation={b: BandStats(mean=0.0, std=1.0) for b in bands},
        class_map=class_map,
    )


def make_model(name: str, **contract_kw: Any) -> CropflowModel:
    return build_model(
        parse_model_config({"name": name, **TINY[name]}), make_contract(KIND[name], **contract_kw)
    )


def random_batch(name: str, b: int, t: int, c: int = len(BANDS), h: int = 12, w: int = 12) -> Batch:
    kind = KIND[name]
    x = torch.randn(b, t, c) if kind == "pixel" else torch.randn(b, t, c, h, w)
    dates = torch.sort(torch.randint(1, 366, (b, t)), dim=1).values
    field_mask = None
    if kind == "field":
        field_mask = torch.zeros(b, h, w, dtype=torch.bool)
        field_mask[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
    return Batch(
        x=x, dates=dates, pad_mask=torch.zeros(b, t, dtype=torch.bool), field_mask=field_mask
    )


def expected_logits_shape(name: str, b: int, h: int, w: int) -> tuple[int, ...]:
    k = len(CLASSES)
    return (b, k, h, w) if KIND[name] == "patch" else (b, k)


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_config_json_round_trip_keeps_family_and_values(name: str) -> None:
    config = parse_model_config({"name": name, **TINY[name]})
    assert config.name == name
    again = parse_model_config(config.model_dump_json())
    assert again == config
    assert type(again) is type(config)


def test_default_configs_build_for_every_family() -> None:
    for name in FAMILY_NAMES:
        model = build_model(parse_model_config({"name": name}), make_contract(KIND[name]))
        assert model.config.name == name
        assert model.n_parameters > 0


def test_unknown_family_and_unknown_field_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="name"):
        parse_model_config({"name": "resnet"})
    with pytest.raises(ConfigError, match="hidden_sise"):
        parse_model_config({"name": "crop_mask_lstm", "hidden_sise": 3})


def test_inconsistent_hyper_parameters_are_refused_with_a_hint() -> None:
    with pytest.raises(ConfigError) as err:
        parse_model_config({"name": "ltae", "d_model": 30, "n_head": 4})
    assert "d_model=30" in str(err.value) and err.value.hint
    with pytest.raises(ConfigError, match="decoder widths"):
        parse_model_config({"name": "utae", "encoder_widths": [8, 16], "decoder_widths": [16]})
    with pytest.raises(ConfigError, match="even"):
        parse_model_config({"name": "tempcnn", "kernel_size": 4})
    with pytest.raises(ConfigError, match="conv_kernel=4 is even"):
        parse_model_config({"name": "crop_mask_lstm", "conv_kernel": 4})


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("ltae", "input_widths"),
        ("ltae", "mlp_widths"),
        ("tempcnn", "conv_widths"),
        ("utae", "encoder_widths"),
        ("segformer", "hidden_sizes"),
        ("field_bigru", "conv_widths"),
    ],
)
def test_a_zero_width_layer_is_refused_by_name(name: str, field: str) -> None:
    default = getattr(parse_model_config({"name": name}), field)
    widths = [*default[:-1], 0] if default else [0]
    with pytest.raises(
        ConfigError, match=rf"{field}\.\d+: Input should be greater than or equal to 1"
    ):
        parse_model_config({"name": name, field: widths})


def test_json_schema_lists_every_family() -> None:
    schema = model_config_json_schema()
    text = str(schema)
    for name in FAMILY_NAMES:
        assert name in text


# --------------------------------------------------------------------------------------------
# Contracts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_build_model_refuses_another_input_kind(name: str) -> None:
    config = parse_model_config({"name": name, **TINY[name]})
    for other in {"pixel", "patch", "field"} - {KIND[name]}:
        with pytest.raises(ContractError) as err:
            build_model(config, make_contract(other))
        assert KIND[name] in err.value.message and other in err.value.message
        assert name in err.value.message


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("bands", [["red"], ["blue", "green", "red", "nir", "swir16"]])
def test_channels_follow_the_contract(name: str, bands: list[str]) -> None:
    model = make_model(name, bands=bands).eval()
    assert model.n_channels == len(bands)
    out = model(random_batch(name, 2, 6, c=len(bands)))
    assert tuple(out.logits.shape) == expected_logits_shape(name, 2, 12, 12)
    with pytest.raises(ContractError, match=f"expects {len(bands)} channels"):
        model(random_batch(name, 2, 6, c=len(bands) + 1))


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_classes_follow_the_contract(name: str) -> None:
    classes = ["a", "b", "c", "d", "e", "crop", "g"]
    model = make_model(name, classes=classes).eval()
    out = model(random_batch(name, 2, 6))
    assert out.logits.shape[1] == len(classes)


@pytest.mark.parametrize("name", sorted(FIXED_T))
def test_fixed_length_families_need_n_time(name: str) -> None:
    config = parse_model_config({"name": name, **TINY[name]})
    with pytest.raises(ContractError, match="n_time=None"):
        build_model(config, make_contract(KIND[name], n_time=None))
    model = make_model(name, n_time=6)
    with pytest.raises(ContractError, match="expects 6 time steps"):
        model(random_batch(name, 2, 5))


@pytest.mark.parametrize("name", sorted(set(FAMILY_NAMES) - FIXED_T))
def test_variable_length_families_take_any_t_without_n_time(name: str) -> None:
    model = make_model(name, n_time=None).eval()
    for t in (1, 4, 9):
        out = model(random_batch(name, 2, t))
        assert tuple(out.logits.shape) == expected_logits_shape(name, 2, 12, 12)


def test_malformed_batches_are_refused() -> None:
    model = make_model("ltae")
    good = random_batch("ltae", 2, 6)
    with pytest.raises(ContractError, match=r"\[B, T, C\]"):
        model(Batch(x=good.x[0], dates=good.dates, pad_mask=good.pad_mask))
    with pytest.raises(ContractError, match="bool"):
        model(Batch(x=good.x, dates=good.dates, pad_mask=good.pad_mask.float()))
    with pytest.raises(ContractError, match="dates"):
        model(Batch(x=good.x, dates=good.dates[:, :3], pad_mask=good.pad_mask))
    field = make_model("field_bigru")
    fb = random_batch("field_bigru", 2, 6)
    with pytest.raises(ContractError, match="field_mask"):
        field(Batch(x=fb.x, dates=fb.dates, pad_mask=fb.pad_mask))


def test_ids_to_indices_maps_ids_by_class_map_and_ignores_the_rest() -> None:
    class_map = make_contract("pixel").class_map  # ids 10, 13, 16
    ids = torch.tensor([[16, 10, 255], [13, 7, -1]])
    got = ids_to_indices(ids, class_map)
    ignore = class_map.ignore_index
    want = torch.tensor([[2, 0, ignore], [1, ignore, ignore]])
    assert torch.equal(got, want)


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_output_shapes_over_batch_sizes_and_time_steps(name: str) -> None:
    times = [6] if name in FIXED_T else [1, 3, 11]
    for t in times:
        model = make_model(name, n_time=t).eval()
        for b in (1, 2, 5):
            out = model(random_batch(name, b, t))
            assert tuple(out.logits.shape) == expected_logits_shape(name, b, 12, 12)
            assert out.logits.dtype == torch.float32
            if name == "crop_mask_lstm":
                assert out.aux_logits is not None and tuple(out.aux_logits.shape) == (b,)
            else:
                assert out.aux_logits is None


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_a_training_step_works_on_a_single_sample(name: str) -> None:
    """An epoch's last batch may hold one sample (BatchNorm alone would refuse it)."""
    model = make_model(name).train()
    batch = (
        random_batch(name, 1, 6, h=1, w=1) if KIND[name] == "patch" else random_batch(name, 1, 6)
    )
    out = model(batch)
    loss = model.loss(out, torch.zeros(out.logits.argmax(dim=1).shape, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ["unet", "utae", "field_bigru", "segformer"])
@pytest.mark.parametrize(("h", "w"), [(1, 1), (7, 13), (16, 16), (33, 20)])
def test_spatial_models_take_any_height_and_width(name: str, h: int, w: int) -> None:
    model = make_model(name).eval()
    out = model(random_batch(name, 2, 6, h=h, w=w))
    assert tuple(out.logits.shape) == expected_logits_shape(name, 2, h, w)
    assert torch.isfinite(out.logits).all()


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 10_000),
    multiple=st.sampled_from([1, 2, 4, 8, 16, 32]),
    min_factor=st.integers(1, 2),
)
def test_padded_size_is_the_smallest_fitting_multiple(
    size: int, multiple: int, min_factor: int
) -> None:
    minimum = min_factor * multiple
    got = padded_size(size, multiple, minimum)
    assert got % multiple == 0
    assert got >= size and got >= minimum
    assert got - multiple < max(size, minimum)


_UTAE = make_model("utae").eval()
_UNET = make_model("unet").eval()


@settings(max_examples=12, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), t=st.integers(1, 5))
def test_utae_and_unet_logits_match_any_input_size(h: int, w: int, t: int) -> None:
    x = torch.randn(1, t, len(BANDS), h, w)
    with torch.no_grad():
        out = _UTAE(Batch.dense(x))
    assert tuple(out.logits.shape) == (1, len(CLASSES), h, w)
    x6 = torch.randn(1, 6, len(BANDS), h, w)
    with torch.no_grad():
        out = _UNET(Batch.dense(x6))
    assert tuple(out.logits.shape) == (1, len(CLASSES), h, w)


# --------------------------------------------------------------------------------------------
# Training: every family overfits a tiny batch
# --------------------------------------------------------------------------------------------


def learnable_batch(name: str, b: int = 6, t: int = 6, hw: int = 12) -> tuple[Batch, torch.Tensor]:
    """Inputs whose class is a simple function of the values (so a tiny model can fit them)."""
    g = torch.Generator().manual_seed(1)
    kind = KIND[name]
    k = len(CLASSES)
    if kind == "pixel":
        y = torch.arange(b) % k
        x = torch.randn(b, t, len(BANDS), generator=g) * 0.3
        x[torch.arange(b), :, y] += 1.5
        return Batch.dense(x), y
    if kind == "field":
        y = torch.arange(b) % k
        x = torch.randn(b, t, len(BANDS), hw, hw, generator=g) * 0.3
        field_mask = torch.zeros(b, hw, hw, dtype=torch.bool)
        field_mask[:, 2:9, 3:10] = True
        for i in range(b):
            x[i, :, int(y[i])][:, field_mask[i]] += 1.5
        return Batch.dense(x, field_mask=field_mask), y
    coarse = torch.randn(b, 1, len(BANDS), 3, 3, generator=g)
    x = torch.nn.functional.interpolate(
        coarse.view(b, len(BANDS), 3, 3), size=(hw, hw), mode="bilinear"
    ).view(b, 1, len(BANDS), hw, hw)
    x = x.expand(b, t, len(BANDS), hw, hw) + 0.1 * torch.randn(
        b, t, len(BANDS), hw, hw, generator=g
    )
    y = x.mean(dim=1)[:, :k].argmax(dim=1)
    return Batch.dense(x.contiguous()), y


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_every_family_overfits_a_tiny_batch(name: str) -> None:
    torch.manual_seed(0)
    model = make_model(name)
    batch, y = learnable_batch(name)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses: list[float] = []
    accuracy = 0.0
    for step in range(200):
        optimiser.zero_grad()
        out = model(batch)
        loss = model.loss(out, y)
        losses.append(loss.item())
        accuracy = (out.logits.argmax(dim=1) == y).float().mean().item()
        # at least 20 steps: BatchNorm's running statistics (momentum 0.1) follow the batch's
        if losses[-1] < 0.05 and accuracy == 1.0 and step >= 20:
            break
        loss.backward()
        optimiser.step()
    assert losses[-1] < 0.05 < losses[0]
    assert accuracy == 1.0
    model.eval()  # running statistics still lag a little behind: close answers
    with torch.no_grad():
        pred = model(batch).logits.argmax(dim=1)
    assert (pred == y).float().mean().item() >= 0.9


def test_default_loss_ignores_unlabelled_targets() -> None:
    model = make_model("utae").eval()
    batch = random_batch("utae", 2, 4, h=8, w=8)
    out = model(batch)
    target = torch.randint(0, len(CLASSES), (2, 8, 8))
    loss = model.loss(out, target)
    # changing only ignored pixels keeps the loss; ignoring all of them gives 0, not NaN
    masked = target.clone()
    masked[:, :4] = model.ignore_index
    want = torch.nn.functional.cross_entropy(
        out.logits[:, :, 4:].permute(0, 2, 3, 1).reshape(-1, 3), target[:, 4:].reshape(-1)
    )
    assert torch.allclose(model.loss(out, masked), want, atol=1e-6)
    assert not torch.allclose(model.loss(out, masked), loss)
    everything_ignored = torch.full_like(target, model.ignore_index)
    zero = model.loss(out, everything_ignored)
    assert zero.item() == 0.0
    zero.backward()


def test_aux_targets_are_refused_by_single_head_models() -> None:
    model = make_model("tempcnn").eval()
    out = model(random_batch("tempcnn", 2, 6))
    with pytest.raises(ConfigError, match="no auxiliary head"):
        model.loss(out, torch.tensor([0, 1]), aux_mask=torch.tensor([True, False]))


# --------------------------------------------------------------------------------------------
# Devices and precision
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_bf16_autocast_forward_and_backward_on_cpu(name: str) -> None:
    torch.manual_seed(0)
    model = make_model(name)
    batch = random_batch(name, 3, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        target = torch.randint(0, len(CLASSES), out.logits.argmax(dim=1).shape)
        loss = model.loss(out, target)
    assert out.logits.dtype == torch.bfloat16
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_cuda_forward_backward_with_bf16_autocast(name: str) -> None:
    model = make_model(name).cuda()
    batch = random_batch(name, 3, 6).to("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(batch)
        loss = model.loss(
            out, torch.zeros(out.logits.argmax(dim=1).shape, dtype=torch.long, device="cuda")
        )
    loss.backward()
    assert out.logits.device.type == "cuda" and torch.isfinite(loss)


# --------------------------------------------------------------------------------------------
# Save and load
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_save_load_round_trip_gives_identical_outputs(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = make_model(name)
    batch, y = learnable_batch(name)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):  # move weights and BatchNorm statistics away from their initial values
        optimiser.zero_grad()
        model.loss(model(batch), y).backward()
        optimiser.step()
    model.eval()
    path = save_model(model, tmp_path / "model")
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.config == model.config and loaded.contract == model.contract
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
    assert torch.equal(a.logits, b.logits)
    if a.aux_logits is not None:
        assert b.aux_logits is not None and torch.equal(a.aux_logits, b.aux_logits)
    # the weights file is plain tensors
    state = torch.load(path / WEIGHTS_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


class _Payload:
    """Something that only a full unpickler would rebuild."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_load_refuses_weights_that_need_unpickling_code(tmp_path: Path) -> None:
    path = save_model(make_model("ltae"), tmp_path / "m")
    with (path / WEIGHTS_FILE).open("wb") as f:
        pickle.dump({"payload": _Payload()}, f)
    with pytest.raises(DataError, match="cannot read weights"):
        load_model(path)


def test_load_names_missing_files_and_mismatched_weights(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lacks"):
        load_model(tmp_path / "nothing")
    a = save_model(make_model("ltae"), tmp_path / "a")
    b = save_model(make_model("tempcnn"), tmp_path / "b")
    (a / WEIGHTS_FILE).write_bytes((b / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ContractError, match="do not fit"):
        load_model(a)


def test_save_replaces_an_existing_model_and_leaves_no_temporaries(tmp_path: Path) -> None:
    first = make_model("tempcnn").eval()
    second = make_model("ltae").eval()
    save_model(first, tmp_path / "m")
    save_model(second, tmp_path / "m")
    assert load_model(tmp_path / "m").config.name == "ltae"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
