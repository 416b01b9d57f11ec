"""Torch models, each built from a typed config and carrying an input contract.

Families (config ``name``): ``crop_mask_lstm``, ``tempcnn``, ``ltae`` (pixel series);
``unet``, ``utae`` (patches); ``field_bigru`` (fields). See :mod:`models.base` for the
interface and conventions, and each family's module for its architecture.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cropflow.lazy import lazy_exports

if TYPE_CHECKING:
    from models.base import (
        Batch as Batch,
    )
    from models.base import (
        CropflowModel as CropflowModel,
    )
    from models.base import (
        ModelOutput as ModelOutput,
    )
    from models.base import (
        build_model as build_model,
    )
    from models.base import (
        ids_to_indices as ids_to_indices,
    )
    from models.configs import FAMILY_NAMES as FAMILY_NAMES
    from models.configs import CropMaskLSTMConfig as CropMaskLSTMConfig
    from models.configs import FieldBiGRUConfig as FieldBiGRUConfig
    from models.configs import LTAEConfig as LTAEConfig
    from models.configs import ModelConfig as ModelConfig
    from models.configs import SegFormerConfig as SegFormerConfig
    from models.configs import TempCNNConfig as TempCNNConfig
    from models.configs import UNetConfig as UNetConfig
    from models.configs import UTAEConfig as UTAEConfig
    from models.configs import model_config_json_schema as model_config_json_schema
    from models.configs import parse_model_config as parse_model_config
    from models.serialization import (
        load_model as load_model,
    )
    from models.serialization import (
        save_model as save_model,
    )

#: Exported name -> the module defining it (imported on first use).
_EXPORTS = {
    "FAMILY_NAMES": "models.base",
    "Batch": "models.base",
    "CropflowModel": "models.base",
    "CropMaskLSTMConfig": "models.base",
    "FieldBiGRUConfig": "models.base",
    "LTAEConfig": "models.base",
    "ModelConfig": "models.base",
    "ModelOutput": "models.base",
    "SegFormerConfig": "models.base",
    "TempCNNConfig": "models.base",
    "UNetConfig": "models.base",
    "UTAEConfig": "models.base",
    "build_model": "models.base",
    "ids_to_indices": "models.base",
    "model_config_json_schema": "models.base",
    "parse_model_config": "models.base",
    "load_model": "models.serialization",
    "save_model": "models.serialization",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
