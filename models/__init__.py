"""Torch models, each built from a typed config and carrying an input contract.

Families (config ``name``): ``crop_mask_lstm``, ``tempcnn``, ``ltae`` (pixel series);
``unet``, ``utae`` (patches); ``field_bigru`` (fields). See :mod:`models.base` for the
interface and conventions, and each family's module for its architecture.
"""

from models.base import (
    FAMILY_NAMES,
    Batch,
    CropflowModel,
    CropMaskLSTMConfig,
    FieldBiGRUConfig,
    LTAEConfig,
    ModelConfig,
    ModelOutput,
    TempCNNConfig,
    UNetConfig,
    UTAEConfig,
    build_model,
    ids_to_indices,
    model_config_json_schema,
    parse_model_config,
)
from models.serialization import load_model, save_model

__all__ = [
    "FAMILY_NAMES",
    "Batch",
    "CropMaskLSTMConfig",
    "CropflowModel",
    "FieldBiGRUConfig",
    "LTAEConfig",
    "ModelConfig",
    "ModelOutput",
    "TempCNNConfig",
    "UNetConfig",
    "UTAEConfig",
    "build_model",
    "ids_to_indices",
    "load_model",
    "model_config_json_schema",
    "parse_model_config",
    "save_model",
]
