"""Saving and loading models without pickled code.

A saved model is a directory of three files:

* ``config.json`` -- the family config (:data:`models.base.ModelConfig`, with its ``name``);
* ``contract.json`` -- the :class:`~models.contract.InputContract`;
* ``weights.pt`` -- the ``state_dict`` (tensors only), read back with
  ``torch.load(..., weights_only=True)`` so that loading never runs code from the file.

The directory is written aside and renamed into place, so a reader never sees half a model
and an earlier model at the same path stays whole until the new one is complete.
"""

from __future__ import annotations

import json
import pickle
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch

from cropflow.errors import ContractError, DataError
from models.base import CropflowModel, build_model
from models.configs import ForecasterConfig, parse_model_config
from models.contract import InputContract
from models.forecaster import SeasonForecaster

CONFIG_FILE = "config.json"
CONTRACT_FILE = "contract.json"
WEIGHTS_FILE = "weights.pt"
MODEL_FILES: tuple[str, ...] = (CONFIG_FILE, CONTRACT_FILE, WEIGHTS_FILE)


def save_model(model: CropflowModel | SeasonForecaster, directory: str | Path) -> Path:
    """Write ``model`` (a classifier or a season forecaster) to ``directory`` (created or
    replaced atomically); return its path."""
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        (staging / CONFIG_FILE).write_text(model.config.model_dump_json(indent=2))
        (staging / CONTRACT_FILE).write_text(model.contract.model_dump_json(indent=2))
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, staging / WEIGHTS_FILE)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old)
        else:
            staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


#: Options added after models were saved, with the value such models were built with.
OLD_DEFAULTS: dict[str, dict[str, Any]] = {
    "ltae": {"input_norm": "layer", "input_widths": []},
    "crop_mask_lstm": {"pooling": "last", "conv_kernel": 0},
    "tempcnn": {"input_noise": 0.0},
}


def _with_old_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config completed with the values of options it predates (not today's
    defaults), so that its weights load into the network they were trained in."""
    return {**OLD_DEFAULTS.get(str(config.get("name")), {}), **config}


def _read_weights(weights: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        state: dict[str, Any] = torch.load(weights, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise DataError(
            f"cannot read weights {weights}: {exc}",
            hint="the file must hold a plain state_dict of tensors (written by save_model)",
        ) from exc
    return state


def _check_files(source: Path) -> None:
    missing = [name for name in MODEL_FILES if not (source / name).is_file()]
    if missing:
        raise DataError(
            f"model directory {source} lacks {missing}",
            hint=f"point to a directory written by models.save_model (files {list(MODEL_FILES)})",
        )


def load_forecaster(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> SeasonForecaster:
    """The season forecaster saved in ``directory`` by :func:`save_model`, in eval mode."""
    source = Path(directory)
    _check_files(source)
    raw = json.loads((source / CONFIG_FILE).read_text())
    if raw.get("name") != "season_forecaster":
        raise ContractError(
            f"{source} holds a {raw.get('name')!r} model, not a season forecaster",
            hint="point to the forecaster's model directory",
        )
    config = ForecasterConfig.model_validate(raw)
    contract = InputContract.model_validate_json((source / CONTRACT_FILE).read_text())
    model = SeasonForecaster(config, contract)
    weights = source / WEIGHTS_FILE
    try:
        model.load_state_dict(_read_weights(weights, map_location))
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ContractError(
            f"weights {weights} do not fit the forecaster of {CONFIG_FILE}: {exc}",
            hint="save config, contract and weights together with models.save_model",
        ) from exc
    return model.to(map_location).eval()


def load_model(directory: str | Path, map_location: str | torch.device = "cpu") -> CropflowModel:
    """The model saved in ``directory`` by :func:`save_model`, in eval mode.

    Raises:
        DataError: a file is missing, unreadable, or the weights do not fit the config.
    """
    source = Path(directory)
    _check_files(source)
    config = parse_model_config(_with_old_defaults(json.loads((source / CONFIG_FILE).read_text())))
    contract = InputContract.model_validate_json((source / CONTRACT_FILE).read_text())
    model = build_model(config, contract)
    weights = source / WEIGHTS_FILE
    state = _read_weights(weights, map_location)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ContractError(
            f"weights {weights} do not fit the {config.name!r} model of {CONFIG_FILE}: {exc}",
            hint="save config, contract and weights together with models.save_model",
        ) from exc
    return model.to(map_location).eval()
