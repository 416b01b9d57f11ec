"""MLflow: one run per training, the registered model, champion/challenger, loading by alias.

The tracking URI is ``get_settings().mlflow_tracking_uri`` (a SQLite store under the workdir
by default, a server by URL); the registered model is the caller's (a region's own, see
``RegionConfig.model_name``), else ``get_settings().mlflow.registered_model``. Aliases
(champion, challenger) belong to one registered model, so regions never touch each other's.
A model is logged as a pyfunc "model from code" (:mod:`cropflow.train.pyfunc_model`) whose
one artifact is the folder of :func:`models.serialization.save_model` (config JSON, contract
JSON, state_dict): any batch and tile size loads, and nothing is unpickled. Prediction gets
models with :func:`load_model`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec
from pydantic import BaseModel, Field

from cropflow.classes import ClassMap
from cropflow.errors import ConfigError
from cropflow.redact import redact, redact_data
from cropflow.settings import get_settings
from cropflow.train.selection import Comparison
from models.base import CropflowModel
from models.contract import InputContract
from models.serialization import load_model as load_model_dir
from models.serialization import save_model

#: Registry aliases.
CHAMPION = "champion"
CHALLENGER = "challenger"
#: Artifact path of the logged model inside its run.
MODEL_NAME = "model"
#: Name of the logged model's one artifact (a folder written by models.serialization).
MODEL_ARTIFACT = "cropflow_model"
#: Run tag naming the artifact folder of the model selected on val, when the logged model is
#: its refit on train + val (``TrainOptions.refit``).
SELECTION_TAG = "cropflow.selection_model"
SELECTION_ARTIFACT = "selection_model"
_PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")


@dataclass(frozen=True)
class MlflowTarget:
    """Where runs and models go."""

    tracking_uri: str
    """The tracking URI with any credential masked (``http://***@host``): for messages,
    results and reports. Connect with ``connect_uri``."""
    experiment_id: str
    registered_model: str
    client: MlflowClient
    connect_uri: str = field(default="", repr=False)
    """The tracking URI as configured, credentials included; never shown or stored."""


def _artifact_location(tracking_uri: str) -> str | None:
    """Artifacts of a SQLite store live beside its database; servers choose their own."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        return (db.parent / "artifacts").resolve().as_uri()
    return None


def mlflow_target(registered_model: str | None = None) -> MlflowTarget:
    """Point MLflow at the configured store and make sure the experiment exists.

    ``registered_model``: the registered model aliases refer to (None: the settings')."""
    settings = get_settings()
    uri = settings.mlflow_tracking_uri
    shown = redact(uri)
    if shown != uri:
        # MLflow prints "View run ... at: <tracking URI>/#/..." to stdout, credentials included.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    location = _artifact_location(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = settings.mlflow.experiment
    try:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            try:
                exp_id = client.create_experiment(name, artifact_location=location)
            except MlflowException:  # created meanwhile by a concurrent run
                exp = client.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
    except MlflowException as exc:
        raise ConfigError(
            f"MLflow tracking store {shown} is not usable: {redact(str(exc.message))}",
            hint="set CROPFLOW_MLFLOW__TRACKING_URI to a reachable server or a writable "
            "sqlite:/// path",
        ) from None  # MLflow's own message repeats the URI, credentials included
    return MlflowTarget(
        tracking_uri=shown,
        experiment_id=exp_id,
        registered_model=registered_model or settings.mlflow.registered_model,
        client=client,
        connect_uri=uri,
    )


def model_signature(contract: InputContract) -> ModelSignature:
    """The pyfunc's inputs (dict of arrays; any batch, time and tile size) and output."""
    c = len(contract.bands)
    k = len(contract.class_map.classes)
    spatial = contract.input_kind in ("patch", "field")
    x_shape = (-1, -1, c, -1, -1) if spatial else (-1, -1, c)
    inputs: list[ColSpec | TensorSpec] = [
        TensorSpec(np.dtype(np.float32), x_shape, "x"),
        TensorSpec(np.dtype(np.int64), (-1, -1), "dates"),
        TensorSpec(np.dtype(np.bool_), (-1, -1), "pad_mask"),
    ]
    if contract.input_kind == "field":
        inputs.append(TensorSpec(np.dtype(np.bool_), (-1, -1, -1), "field_mask"))
    out_shape = (-1, k, -1, -1) if contract.input_kind == "patch" else (-1, k)
    outputs: list[ColSpec | TensorSpec] = [
        TensorSpec(np.dtype(np.float32), out_shape, "probabilities")
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example(contract: InputContract) -> dict[str, np.ndarray]:
    """A one-sample input of the signature's form (band means, no padding)."""
    t = contract.n_time or 1
    side = contract.patch_size or 8
    spatial = (side, side) if contract.input_kind in ("patch", "field") else ()
    mean = np.array([contract.normalisation[b].mean for b in contract.bands], np.float32)
    x = np.broadcast_to(mean.reshape((1, 1, -1) + (1,) * len(spatial)), (1, t, len(mean), *spatial))
    example: dict[str, np.ndarray] = {
        "x": np.ascontiguousarray(x, dtype=np.float32),
        "dates": np.arange(1, t + 1, dtype=np.int64)[None],
        "pad_mask": np.zeros((1, t), dtype=np.bool_),
    }
    if contract.input_kind == "field":
        example["field_mask"] = np.ones((1, side, side), dtype=np.bool_)
    return example


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested parameters as ``a.b.c`` -> string (MLflow params)."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | bool) else str(value)
    return out


class RunLogger:
    """Logs one training into one MLflow run (created, or continued after a resume)."""

    def __init__(self, target: MlflowTarget, run_id: str) -> None:
        self.target = target
        self.run_id = run_id

    @classmethod
    def start(
        cls, target: MlflowTarget, run_id: str | None, run_name: str | None, tags: dict[str, str]
    ) -> RunLogger:
        """Continue ``run_id`` when it still exists, else create a new run."""
        client = target.client
        if run_id is not None:
            try:
                client.get_run(run_id)
                client.update_run(run_id, status="RUNNING")
                return cls(target, run_id)
            except MlflowException:
                pass
        clean = {k: redact(v) for k, v in tags.items()}
        run = client.create_run(target.experiment_id, run_name=run_name, tags=clean)
        return cls(target, run.info.run_id)

    def log_params(self, params: Mapping[str, str]) -> None:
        items = [Param(k, redact(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.target.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self.target.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.target.client.set_tag(self.run_id, k, redact(v))

    def log_dict(self, d: Mapping[str, Any], path: str) -> None:
        self.target.client.log_dict(self.run_id, redact_data(dict(d)), path)

    def log_dir(self, local_dir: Path, artifact_path: str | None = None) -> None:
        self.target.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_model(self, model: CropflowModel) -> str:
        """Log ``model`` as a pyfunc from code; returns its ``models:/m-...`` URI."""
        with tempfile.TemporaryDirectory(prefix="cropflow-model-") as tmp:
            folder = save_model(model, Path(tmp) / MODEL_ARTIFACT)
            with mlflow.start_run(run_id=self.run_id):
                info = mlflow.pyfunc.log_model(
                    name=MODEL_NAME,
                    python_model=str(_PYFUNC_FILE),
                    artifacts={MODEL_ARTIFACT: str(folder)},
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "cropflow"],
                    signature=model_signature(model.contract),
                    input_example=input_example(model.contract),
                )
        uri: str = info.model_uri
        self.target.client.set_tag(self.run_id, "cropflow.model_uri", uri)
        return uri

    def log_selection_model(self, model: CropflowModel) -> None:
        """Save the model selected on val beside a refit logged model (:data:`SELECTION_TAG`)."""
        with tempfile.TemporaryDirectory(prefix="cropflow-selection-") as tmp:
            save_model(model, Path(tmp) / SELECTION_ARTIFACT)
            self.log_dir(Path(tmp))
        self.set_tags({SELECTION_TAG: SELECTION_ARTIFACT})

    def finish(self, status: str = "FINISHED") -> None:
        self.target.client.set_terminated(self.run_id, status)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A registered model ready to predict (eval mode)."""

    model: CropflowModel
    contract: InputContract
    class_map: ClassMap
    run_id: str | None
    version: str | None
    uri: str
    name: str | None


def resolve_uri(alias_or_uri: str, registered_model: str) -> str:
    """``champion`` -> ``models:/<registered>@champion``; URIs pass unchanged."""
    if ":/" in alias_or_uri:
        return alias_or_uri
    return f"models:/{registered_model}@{alias_or_uri}"


def _version_info(client: MlflowClient, uri: str) -> tuple[str | None, str | None, str | None]:
    """(registered name, version, run id) of a model URI, as far as it tells."""
    if uri.startswith("runs:/"):
        return None, None, uri.removeprefix("runs:/").split("/", 1)[0]
    if not uri.startswith("models:/"):
        return None, None, None
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
        return name, str(mv.version), mv.run_id
    if "/" in ref:
        name, version = ref.split("/", 1)
        mv = client.get_model_version(name, version)
        return name, str(mv.version), mv.run_id
    logged = client.get_logged_model(ref)
    return None, None, logged.source_run_id


def load_model(
    alias_or_uri: str = CHAMPION,
    device: torch.device | str = "cpu",
    registered_model: str | None = None,
) -> LoadedModel:
    """Load a model by alias of the registered model (``champion``, ``challenger``) or by
    MLflow URI (``models:/name/3``, ``models:/name@alias``, ``models:/m-<id>``,
    ``runs:/<run>/model``). Weights load with ``weights_only=True``."""
    target = mlflow_target(registered_model)
    uri = resolve_uri(alias_or_uri, target.registered_model)
    try:
        name, version, run_id = _version_info(target.client, uri)
        with tempfile.TemporaryDirectory(prefix="cropflow-load-") as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri,
                    dst_path=tmp,
                    tracking_uri=target.connect_uri or target.tracking_uri,
                )
            )
            model = load_model_dir(local / "artifacts" / MODEL_ARTIFACT, device)
    except MlflowException as exc:
        raise ConfigError(
            f"cannot load model {alias_or_uri!r} ({uri}) from {target.tracking_uri}: "
            f"{redact(str(exc.message))}",
            hint=f"train and register a model first (it becomes {CHAMPION!r} or "
            f"{CHALLENGER!r} of {target.registered_model!r}), or give an existing URI",
        ) from None
    return LoadedModel(
        model=model,
        contract=model.contract,
        class_map=model.contract.class_map,
        run_id=run_id,
        version=version,
        uri=uri,
        name=name,
    )


def model_for_comparison(
    model: CropflowModel, run_id: str | None, registered_model: str | None = None
) -> CropflowModel:
    """The model whose val predictions speak for a registered ``model`` in a champion
    comparison: the model selected on val when its run refit on train + val (a refit has
    seen the val split), else ``model`` itself."""
    if run_id is None:
        return model
    target = mlflow_target(registered_model)
    folder = target.client.get_run(run_id).data.tags.get(SELECTION_TAG)
    if not folder:
        return model
    with tempfile.TemporaryDirectory(prefix="cropflow-selection-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=folder,
            dst_path=tmp,
            tracking_uri=target.connect_uri or target.tracking_uri,
        )
        return load_model_dir(Path(local), "cpu")


class PinnedModel(BaseModel):
    """A model reference fixed to one registry version for the length of a run."""

    uri: str = Field(description="Immutable URI: models:/<name>/<version>, or the URI given.")
    alias: str | None = Field(None, description="The alias it was pinned from, if any.")
    version: str | None = None
    run_id: str | None = None


def pin_model(alias_or_uri: str | None = None, registered_model: str | None = None) -> PinnedModel:
    """Resolve an alias (``champion``; None: the champion) to the version holding it now.

    A run that pins its model first predicts with one version from start to end, caches its
    prediction under that version, and records it, even if a retrain promotes another model
    meanwhile. URIs other than ``models:/<name>@<alias>`` pass unchanged.
    """
    target = mlflow_target(registered_model)
    uri = resolve_uri(alias_or_uri or CHAMPION, target.registered_model)
    if not (uri.startswith("models:/") and "@" in uri):
        return PinnedModel(uri=uri)
    name, alias = uri.removeprefix("models:/").split("@", 1)
    try:
        mv = target.client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ConfigError(
            f"no version of model {name!r} has alias {alias!r} in {target.tracking_uri} "
            f"({redact(str(exc.message))})",
            hint="train and register a model first (`cropflow train`, or the retrain flow), "
            "or name an existing version (models:/<name>/<version>)",
        ) from None
    return PinnedModel(
        uri=f"models:/{name}/{mv.version}", alias=alias, version=str(mv.version), run_id=mv.run_id
    )


def current_alias(alias: str, registered_model: str | None = None) -> tuple[str, str | None] | None:
    """(version, run id) holding ``alias`` in the registered model, or None."""
    target = mlflow_target(registered_model)
    try:
        mv = target.client.get_model_version_by_alias(target.registered_model, alias)
    except MlflowException:
        return None
    return str(mv.version), mv.run_id


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


class Registration(BaseModel):
    """Outcome of registering one run's model."""

    registered_model: str
    version: str
    alias: str = Field(description="champion or challenger.")
    metric: str = Field(description="Validation metric compared (higher is better).")
    score: float = Field(description="The new model's score on its run's validation split.")
    champion_version: str | None = Field(None, description="Champion before this one.")
    champion_score: float | None = Field(
        None, description="The earlier champion's score on the same validation split."
    )
    reason: str
    comparison: Comparison | None = Field(
        None, description="The paired bootstrap behind the decision (None: no champion)."
    )


def register_version(
    target: MlflowTarget, model_uri: str, run_id: str, region: str | None = None
) -> str:
    """A new version of the registered model for ``model_uri``; returns its number.

    The registered model gets its description (what it maps, how versions are chosen) and,
    with ``region``, a ``cropflow.region`` tag on the model and the version."""
    mv = mlflow.register_model(model_uri, target.registered_model)
    client, name = target.client, target.registered_model
    client.set_model_version_tag(name, mv.version, "run_id", run_id)
    client.update_registered_model(name, description=registered_model_description(name, region))
    if region is not None:
        client.set_registered_model_tag(name, "cropflow.region", region)
        client.set_model_version_tag(name, mv.version, "cropflow.region", region)
    return str(mv.version)


def registered_model_description(name: str, region: str | None) -> str:
    """What a registered model is (the MLflow UI shows it as markdown)."""
    where = f"region **{region}** (`deployments/regions/{region}.yaml`)" if region else name
    return (
        f"Crop-type / land-cover model of {where}, trained by cropflow from the region's "
        "labels on its analysis-ready datacube.\n\n"
        f"- `@{CHAMPION}`: the version the region's maps use (`remap-region`). A new version "
        "takes it only when it beats the champion on the same validation split (a paired "
        "bootstrap over validation fields or blocks; see each version's description).\n"
        f"- `@{CHALLENGER}`: the latest version that did not.\n\n"
        "Each version's description names its data, metrics and why it got its alias."
    )


def _fmt(value: str | None, default: str = "?") -> str:
    return value if value not in (None, "") else default


def version_description(
    run: Any, alias: str, reason: str, metric: str, score: float, region: str | None = None
) -> str:
    """A model version's description: decision, model, data, metrics (markdown).

    ``run`` is the MLflow run that trained it (its params, metrics and tags as logged by
    :func:`cropflow.train.training.train`)."""
    params: dict[str, str] = dict(run.data.params)
    metrics: dict[str, float] = dict(run.data.metrics)
    tags: dict[str, str] = dict(run.data.tags)
    try:
        bands = ", ".join(json.loads(params.get("data.bands", "[]")))
        classes = ", ".join(json.loads(params.get("data.classes", "[]")))
    except ValueError:
        bands, classes = params.get("data.bands", "?"), params.get("data.classes", "?")
    sizes = " / ".join(
        f"{params[f'data.n_{s}']} {s}" for s in ("train", "val", "test") if f"data.n_{s}" in params
    )
    lines = [
        f"**{alias}**: {reason}.",
        "",
        f"- Region: {_fmt(region, 'not given')}",
        f"- Model: {_fmt(params.get('model.name') or tags.get('cropflow.family'))}, "
        f"{_fmt(params.get('model.n_parameters'))} parameters, "
        f"{_fmt(params.get('data.input_kind'))} input, {_fmt(params.get('data.n_time'))} dates",
        f"- Bands: {bands or '?'}",
        f"- Classes: {classes or '?'}",
        f"- Training set: `{redact(_fmt(params.get('data.training_set')))}` ({sizes} samples)",
        f"- Validation {metric} {score:.4f} (scored at registration)",
    ]
    shown = [
        f"{k.removeprefix('test_')} {v:.4f}"
        for k, v in sorted(metrics.items())
        if k in ("test_macro_f1", "test_overall_accuracy", "test_kappa")
    ]
    if shown:
        lines.append(f"- Test split: {', '.join(shown)}")
    if tags.get("cropflow.warning"):
        lines.append(f"- Warning: {tags['cropflow.warning']}")
    lines.append(f"- MLflow run: `{run.info.run_id}`")
    return "\n".join(lines)


def decide(
    target: MlflowTarget,
    run_id: str,
    version: str,
    metric: str,
    score: float,
    champion: tuple[str, float | None, str] | None,
    comparison: Comparison | None = None,
    region: str | None = None,
) -> Registration:
    """Give ``version`` the champion alias when it beats ``champion`` (version, score or None
    when not comparable, why), else challenger; record both scores on run and version.

    With a ``comparison`` (a paired bootstrap on the val split), it beats the champion only
    when the comparison says so with its confidence; without one, a higher score suffices."""
    client, name = target.client, target.registered_model
    if champion is None:
        alias, reason, champ_v, champ_s = CHAMPION, "no champion yet", None, None
    else:
        champ_v, champ_s, why = champion
        if champ_s is None:
            alias, reason = CHALLENGER, f"champion v{champ_v} not comparable: {why}"
        elif comparison is not None:
            alias = CHAMPION if comparison.promote else CHALLENGER
            reason = comparison.reason(champ_v)
        elif score > champ_s:
            alias, reason = CHAMPION, f"beats champion v{champ_v} ({score:.4f} > {champ_s:.4f})"
        else:
            alias = CHALLENGER
            reason = f"does not beat champion v{champ_v} ({score:.4f} <= {champ_s:.4f})"
    client.set_registered_model_alias(name, alias, version)
    tags = {
        "cropflow.alias_decision": alias,
        "cropflow.alias_reason": reason,
        f"cropflow.val_{metric}": f"{score:.6f}",
    }
    if champ_s is not None:
        tags[f"cropflow.champion_val_{metric}"] = f"{champ_s:.6f}"
        tags["cropflow.champion_version"] = str(champ_v)
    if comparison is not None and champ_s is not None:
        tags["cropflow.promotion_p_better"] = f"{comparison.p_better:.4f}"
        tags["cropflow.promotion_interval"] = (
            f"[{comparison.ci_low:+.4f}, {comparison.ci_high:+.4f}] at "
            f"{comparison.confidence:.2f} over {comparison.n_units} val {comparison.unit}s"
        )
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
        client.set_tag(run_id, k, v)
    description = version_description(client.get_run(run_id), alias, reason, metric, score, region)
    client.update_model_version(name, version, description=description)
    metrics = {f"registry_val_{metric}": score}
    if champ_s is not None:
        metrics[f"registry_champion_val_{metric}"] = champ_s
    RunLogger(target, run_id).log_metrics(metrics, step=0)
    return Registration(
        registered_model=name,
        version=version,
        alias=alias,
        metric=metric,
        score=score,
        champion_version=champ_v,
        champion_score=champ_s,
        reason=reason,
        comparison=comparison if champ_s is not None else None,
    )
