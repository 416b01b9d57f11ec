"""Model family configs: typed, validated, torch-free (the CLI and forms read them).

One pydantic model per family, a discriminated union on ``name`` (:data:`ModelConfig`);
:func:`parse_model_config` reads one from a mapping or JSON. The torch modules that these
configs build are in :mod:`models.base` and the family modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from cropflow.errors import ConfigError

InputKind = Literal["pixel", "patch", "field"]
DateKind = Literal["day_of_year", "days_since_reference"]
#: A layer width, kernel size, stride, head count...: one or more.
PositiveInt = Annotated[int, Field(ge=1)]


class _FamilyConfig(BaseModel):
    """Fields and checks shared by every family config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The input kind the family takes (checked against the contract by build_model).
    input_kind: ClassVar[InputKind]
    #: Whether the family needs the contract's fixed number of time steps.
    needs_n_time: ClassVar[bool] = False


def _check_divisible(what: str, value: int, by_what: str, by: int) -> None:
    if value % by:
        raise ConfigError(
            f"{what}={value} is not a multiple of {by_what}={by}",
            hint=f"choose {what} as a multiple of {by_what}",
        )


#: The crop-mask LSTM's convolution over dates with ``conv_kernel=None``: this kernel, for
#: series of at least this many steps.
AUTO_CONV_KERNEL = 5
AUTO_CONV_MIN_STEPS = 24


class CropMaskLSTMConfig(_FamilyConfig):
    """nasaharvest/crop-mask classifier: shared LSTM encoder, a global and a local head."""

    input_kind: ClassVar[InputKind] = "pixel"
    name: Literal["crop_mask_lstm"] = "crop_mask_lstm"
    hidden_size: int = Field(128, ge=1, description="LSTM hidden size (and head width).")
    num_layers: int = Field(1, ge=1, description="Stacked LSTM layers.")
    dropout: float = Field(
        0.2, ge=0, lt=1, description="Dropout between LSTM layers and on the encoding."
    )
    num_global_layers: int = Field(
        1, ge=1, description="Linear layers of the global head (all classes)."
    )
    num_local_layers: int = Field(2, ge=1, description="Linear layers of the local head.")
    local_positive_classes: list[str] = Field(
        default_factory=list,
        description="Class names the local (binary) head calls positive, e.g. every crop "
        "class for a crop mask. Empty: the local head is not trained (global head only).",
    )
    pooling: Literal["last", "mean_max", "windows"] = Field(
        "windows",
        description="Encoding of the series: last (the LSTM's final hidden state, as the "
        "reference, which reads 12 monthly steps; forgets the early season of long series), "
        "mean_max (mean + max of the outputs of every valid date) or windows (the mean output "
        "of each of `windows` equal parts of the valid dates, side by side: keeps when in the "
        "season a feature occurs). Temporalcnn fixture, 149 dates, macro-F1: last 0.27, "
        "mean_max 0.650, windows 0.676 (benchmarks/RESULTS.md).",
    )
    windows: int = Field(
        12, ge=1, description="Parts of the season of pooling='windows' (encoding width x this)."
    )
    bidirectional: bool = Field(
        False,
        description="Also read each series backwards (twice the encoder's cost); the "
        "reference reads forwards only.",
    )
    conv_kernel: int | None = Field(
        None,
        ge=0,
        description="An odd k: the LSTM reads hidden_size features of a 1-D convolution "
        "(kernel k, layer norm, ReLU) over k neighbouring valid dates; 0: each date's bands "
        f"(the reference). None: {AUTO_CONV_KERNEL} for series of at least "
        f"{AUTO_CONV_MIN_STEPS} steps (the kernel then spans at most a fifth of the series), "
        "else 0. Measured (benchmarks/RESULTS.md): 149 dates of 1-3 bands, macro-F1 0.680 -> "
        "0.718 and 0.651 -> 0.661; 25 dates of 3 bands 0.679 -> 0.699, level with or above a "
        "random forest; 12 MODIS NDVI dates 0.683 -> 0.523 and 8 monthly composites of 11 "
        "bands (the demo) 0.983 -> 0.938, hence not for short series.",
    )
    alpha: float = Field(
        10.0,
        gt=0,
        description="Loss weighting: a sample of the global head weighs 1/alpha of a sample "
        "of the local head (see models.crop_mask.combined_loss).",
    )

    def resolved_conv_kernel(self, n_time: int | None) -> int:
        """``conv_kernel``, with None resolved for series of ``n_time`` steps."""
        if self.conv_kernel is not None:
            return self.conv_kernel
        return AUTO_CONV_KERNEL if (n_time or 0) >= AUTO_CONV_MIN_STEPS else 0

    @model_validator(mode="after")
    def _odd_conv_kernel(self) -> CropMaskLSTMConfig:
        if self.conv_kernel is not None and self.conv_kernel % 2 == 0 and self.conv_kernel != 0:
            raise ConfigError(
                f"crop_mask_lstm conv_kernel={self.conv_kernel} is even",
                hint="use 0 (the LSTM reads the bands) or an odd kernel such as 5, so that "
                "every date keeps its place",
            )
        return self


class TempCNNConfig(_FamilyConfig):
    """TempCNN (Pelletier et al. 2019): 1D convolutions over time, flatten, dense."""

    input_kind: ClassVar[InputKind] = "pixel"
    needs_n_time: ClassVar[bool] = True
    name: Literal["tempcnn"] = "tempcnn"
    conv_widths: list[PositiveInt] = Field(
        default_factory=lambda: [64, 64, 64],
        min_length=1,
        description="Filters of each 1D convolution (conv + BN + ReLU + dropout).",
    )
    kernel_size: int = Field(5, ge=1, description="Temporal kernel size (odd keeps T).")
    hidden_size: int = Field(256, ge=1, description="Width of the dense layer after flatten.")
    dropout: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Dropout after every layer (the reference: 0.2). With input_noise, the "
        "regularisation a small training set needs (benchmarks/RESULTS.md).",
    )
    input_noise: float = Field(
        0.1,
        ge=0,
        description="Std of Gaussian noise added to the normalised input in training (a "
        "regulariser; none in prediction). 0: none (the reference). Measured with dropout "
        "0.5 against the reference's 0.2 and no noise (benchmarks/RESULTS.md): MODIS NDVI set "
        "(12 dates, about 100 training series, 6 folds) macro-F1 0.625 -> 0.651; temporalCNN "
        "fixture (216 series) 0.736 -> 0.729 on 3 bands and 0.691 -> 0.701 on NDVI, within "
        "the seed spread.",
    )

    @model_validator(mode="after")
    def _odd_kernel(self) -> TempCNNConfig:
        if self.kernel_size % 2 == 0:
            raise ConfigError(
                f"tempcnn kernel_size={self.kernel_size} is even",
                hint="use an odd kernel size (5 in the paper) so that T is kept",
            )
        return self


class _DateAttentionConfig(_FamilyConfig):
    """Settings shared by the families with L-TAE date attention (L-TAE, U-TAE)."""

    attention_dropout: float = Field(
        0.1, ge=0, lt=1, description="Dropout on the attention weights (training only)."
    )
    max_period: float = Field(
        1000.0, gt=0, description="Longest period of the sinusoidal date encoding, in days."
    )
    dates: DateKind = Field(
        "day_of_year", description="What Batch.dates holds for this model (see models.base)."
    )


class LTAEConfig(_DateAttentionConfig):
    """L-TAE (Garnot & Landrieu 2020) on pixel time series, with an MLP classifier."""

    input_kind: ClassVar[InputKind] = "pixel"
    name: Literal["ltae"] = "ltae"
    n_head: int = Field(16, ge=1, description="Attention heads, each with a learnt query.")
    d_k: int = Field(8, ge=1, description="Key/query dimension per head.")
    d_model: int = Field(256, ge=1, description="Width the inputs are projected to.")
    mlp_widths: list[PositiveInt] = Field(
        default_factory=lambda: [128],
        min_length=1,
        description="MLP after the concatenated heads (input d_model); its last width is "
        "the embedding size.",
    )
    decoder_widths: list[PositiveInt] = Field(
        default_factory=lambda: [64, 32],
        description="Hidden widths of the classifier MLP (a last layer to the classes follows).",
    )
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout after the attention MLP.")
    input_norm: Literal["none", "layer"] = Field(
        "none",
        description="Per-date input normalisation: none (the bands are standardised per band "
        "already), or layer (LayerNorm over each date's channels, as the reference does for "
        "its learnt inputs; it erases each date's brightness and, with one band, the whole "
        "input, so it needs 2 or more bands).",
    )
    input_widths: list[PositiveInt] = Field(
        default_factory=lambda: [32, 64, 128],
        description="Per-date encoder before the attention (Linear + BatchNorm + ReLU per "
        "width, each date alone): the single-pixel case of the reference's pixel-set encoder. "
        "[] projects the bands linearly (each head then pools a linear function of the bands).",
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> LTAEConfig:
        _check_divisible("d_model", self.d_model, "n_head", self.n_head)
        return self


class UNetConfig(_FamilyConfig):
    """U-Net on stacked composites (agri_strat): the T x C inputs become T*C channels."""

    input_kind: ClassVar[InputKind] = "patch"
    needs_n_time: ClassVar[bool] = True
    name: Literal["unet"] = "unet"
    depth: int = Field(3, ge=1, description="Resolution levels (depth-1 down-samplings).")
    base_width: int = Field(64, ge=1, description="Channels at full resolution, doubled per level.")
    bilinear: bool = Field(
        False, description="Up-sample bilinearly (+1x1 conv) instead of transposed convolutions."
    )


class SegFormerConfig(_FamilyConfig):
    """SegFormer (Xie et al. 2021; lulc-utility): hierarchical transformer encoder (MiT) and an
    all-MLP decoder on stacked composites (T x C channels). Defaults: MiT-b0, from scratch."""

    input_kind: ClassVar[InputKind] = "patch"
    needs_n_time: ClassVar[bool] = True
    name: Literal["segformer"] = "segformer"
    hidden_sizes: list[PositiveInt] = Field(
        default_factory=lambda: [32, 64, 160, 256],
        min_length=1,
        description="Channels of each encoder stage, finest first (MiT-b0).",
    )
    depths: list[PositiveInt] = Field(
        default_factory=lambda: [2, 2, 2, 2], description="Transformer blocks per stage."
    )
    n_heads: list[PositiveInt] = Field(
        default_factory=lambda: [1, 2, 5, 8],
        description="Attention heads per stage; each divides the stage's hidden size.",
    )
    sr_ratios: list[PositiveInt] = Field(
        default_factory=lambda: [8, 4, 2, 1],
        description="Spatial reduction of the attention's keys and values per stage.",
    )
    patch_sizes: list[PositiveInt] = Field(
        default_factory=lambda: [7, 3, 3, 3],
        description="Kernel of each stage's overlapping patch embedding (odd).",
    )
    strides: list[PositiveInt] = Field(
        default_factory=lambda: [4, 2, 2, 2],
        description="Stride of each stage's patch embedding: the first stage works at "
        "1/strides[0] of the input (use 2 for patches of a few tens of pixels).",
    )
    mlp_ratio: int = Field(4, ge=1, description="Mix-FFN width as a multiple of the stage's.")
    decoder_dim: int = Field(256, ge=1, description="Channels of the all-MLP decoder.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Mix-FFN and classifier dropout.")
    attention_dropout: float = Field(0.0, ge=0, lt=1, description="Attention-weight dropout.")

    @model_validator(mode="after")
    def _stages_agree(self) -> SegFormerConfig:
        lists = {
            "depths": self.depths,
            "n_heads": self.n_heads,
            "sr_ratios": self.sr_ratios,
            "patch_sizes": self.patch_sizes,
            "strides": self.strides,
        }
        n = len(self.hidden_sizes)
        for key, values in lists.items():
            if len(values) != n:
                raise ConfigError(
                    f"segformer {key} has {len(values)} entries but hidden_sizes has {n}",
                    hint="give every per-stage list one entry per stage",
                )
        for width, heads in zip(self.hidden_sizes, self.n_heads, strict=True):
            _check_divisible("each segformer hidden size", width, "its n_heads", heads)
        if any(k % 2 == 0 for k in self.patch_sizes):
            raise ConfigError(
                f"segformer patch_sizes {self.patch_sizes} include an even size",
                hint="use odd kernels (7, 3, ...), so that each stage divides its input exactly",
            )
        return self


class UTAEConfig(_DateAttentionConfig):
    """U-TAE (Garnot & Landrieu 2021): shared conv encoder, L-TAE at the lowest level."""

    input_kind: ClassVar[InputKind] = "patch"
    name: Literal["utae"] = "utae"
    encoder_widths: list[PositiveInt] = Field(
        default_factory=lambda: [64, 64, 64, 128],
        min_length=1,
        description="Encoder channels per level, highest resolution first; one level per "
        "entry (len-1 down-samplings by 2).",
    )
    decoder_widths: list[PositiveInt] = Field(
        default_factory=lambda: [32, 32, 64, 128],
        min_length=1,
        description="Decoder channels per level, highest resolution first; the last must "
        "equal the last encoder width.",
    )
    out_conv: list[PositiveInt] = Field(
        default_factory=lambda: [32],
        description="Hidden widths of the output convolutions (a last conv to the classes "
        "follows).",
    )
    encoder_norm: Literal["group", "batch", "none"] = Field(
        "group", description="Normalisation in the encoder."
    )
    norm_groups: int = Field(4, ge=1, description="Groups of the encoder's GroupNorm.")
    padding_mode: Literal["reflect", "zeros", "replicate"] = Field(
        "reflect", description="Spatial padding of the 3x3 convolutions."
    )
    agg_mode: Literal["att_group", "att_mean", "mean"] = Field(
        "att_group",
        description="How skip connections collapse time: att_group = per channel group with "
        "its head's attention; att_mean = head-averaged attention; mean = plain mean.",
    )
    n_head: int = Field(16, ge=1, description="L-TAE heads.")
    d_model: int = Field(256, ge=1, description="L-TAE projection width.")
    d_k: int = Field(4, ge=1, description="L-TAE key/query dimension per head.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout after the L-TAE MLP.")
    boundary_class: str | None = Field(
        None,
        description="Name of a class of the class map that labels field boundaries (Crop2Seg's "
        "boundary class). It is an ordinary output class; naming it lets build_model check "
        "that it exists and exposes its index as model.boundary_index.",
    )

    @model_validator(mode="after")
    def _shapes(self) -> UTAEConfig:
        if len(self.encoder_widths) != len(self.decoder_widths):
            raise ConfigError(
                f"utae has {len(self.encoder_widths)} encoder widths but "
                f"{len(self.decoder_widths)} decoder widths",
                hint="give one encoder and one decoder width per level",
            )
        if self.encoder_widths[-1] != self.decoder_widths[-1]:
            raise ConfigError(
                f"utae lowest encoder width {self.encoder_widths[-1]} differs from the lowest "
                f"decoder width {self.decoder_widths[-1]}",
                hint="make the last encoder and decoder widths equal",
            )
        _check_divisible("d_model", self.d_model, "n_head", self.n_head)
        if self.agg_mode == "att_group":
            for w in self.encoder_widths[:-1]:
                _check_divisible("each skip encoder width", w, "n_head", self.n_head)
        if self.encoder_norm == "group":
            for w in self.encoder_widths:
                _check_divisible("each encoder width", w, "norm_groups", self.norm_groups)
        return self


class FieldBiGRUConfig(_FamilyConfig):
    """CropDetectionDL (CV4A 2020): per-date convs, masked field mean, 3-layer BiGRU, linear."""

    input_kind: ClassVar[InputKind] = "field"
    name: Literal["field_bigru"] = "field_bigru"
    conv_widths: list[PositiveInt] = Field(
        default_factory=lambda: [64, 64, 128],
        min_length=1,
        description="Channels of the per-date convolutions.",
    )
    kernel_sizes: list[PositiveInt] = Field(
        default_factory=lambda: [3, 3, 1],
        min_length=1,
        description="Kernel size of each convolution (odd; same length as conv_widths).",
    )
    norm_groups: int = Field(2, ge=1, description="Groups of the (field-masked) GroupNorm.")
    hidden_size: int = Field(128, ge=1, description="GRU hidden size per direction.")
    num_layers: int = Field(3, ge=1, description="Stacked bidirectional GRU layers.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout between GRU layers.")

    @model_validator(mode="after")
    def _convs(self) -> FieldBiGRUConfig:
        if len(self.kernel_sizes) != len(self.conv_widths):
            raise ConfigError(
                f"field_bigru has {len(self.conv_widths)} conv widths but "
                f"{len(self.kernel_sizes)} kernel sizes",
                hint="give one kernel size per convolution",
            )
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ConfigError(
                f"field_bigru kernel sizes {self.kernel_sizes} include an even size",
                hint="use odd kernel sizes so that H and W are kept",
            )
        for w in self.conv_widths:
            _check_divisible("each conv width", w, "norm_groups", self.norm_groups)
        return self


ModelConfig = Annotated[
    CropMaskLSTMConfig
    | TempCNNConfig
    | LTAEConfig
    | UNetConfig
    | UTAEConfig
    | FieldBiGRUConfig
    | SegFormerConfig,
    Field(discriminator="name"),
]

_CONFIG_ADAPTER: TypeAdapter[ModelConfig] = TypeAdapter(ModelConfig)

#: Family names, as used in configs.
FAMILY_NAMES: tuple[str, ...] = (
    "crop_mask_lstm",
    "tempcnn",
    "ltae",
    "unet",
    "utae",
    "field_bigru",
    "segformer",
)


def parse_model_config(data: Mapping[str, Any] | str | bytes) -> ModelConfig:
    """A model config from a mapping or JSON text; ``name`` picks the family."""
    try:
        if isinstance(data, str | bytes):
            return _CONFIG_ADAPTER.validate_json(data)
        return _CONFIG_ADAPTER.validate_python(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors(include_url=False)
        )
        raise ConfigError(
            f"invalid model config: {problems}",
            hint=f"'name' must be one of {list(FAMILY_NAMES)}; see models.base for each "
            "family's fields",
        ) from exc


def model_config_json_schema() -> dict[str, Any]:
    """JSON schema of :data:`ModelConfig` (for forms and docs)."""
    return _CONFIG_ADAPTER.json_schema()


class ForecasterConfig(BaseModel):
    """Hyper-parameters of the season forecaster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["season_forecaster"] = "season_forecaster"
    hidden_size: int = Field(64, ge=4, description="LSTM hidden size.")
    num_layers: int = Field(1, ge=1, le=4, description="Stacked LSTM layers.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout between LSTM layers.")
